"""The score stage: reward methods (``MethodSpec`` registry), voting, answer grading."""

from megatron_corew.rewards.score import compute_rewards, decode, remote_grader, score_batch
from megatron_corew.rewards.spec import (
    Group,
    MethodSpec,
    ScoreOptions,
    get_method,
    load_plugins,
    method_names,
    register,
)

__all__ = [
    "Group",
    "MethodSpec",
    "ScoreOptions",
    "compute_rewards",
    "decode",
    "get_method",
    "load_plugins",
    "method_names",
    "register",
    "remote_grader",
    "score_batch",
]
