"""Run plumbing shared by the stages: metrics logging, stage timing, fault injection for crash tests."""

from megatron_corew.utils import faults
from megatron_corew.utils.run_logger import RunLogger
from megatron_corew.utils.timing import StageTimer

__all__ = ["RunLogger", "StageTimer", "faults"]
