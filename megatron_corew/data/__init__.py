"""The data stage: verl-schema prompt files -> validated, tokenised examples, drawn in resumable batches.

``dataset`` loads and checks the files the trainer reads, ``sampler`` draws them, ``prompts`` holds the system
prompt and the chat rendering; ``sources`` / ``readers`` (publishers' formats -> verl schema) and ``rephrase``
(Co-rewarding-I question rewriting) prepare those files offline.
"""

from megatron_corew.data.dataset import (
    DataError,
    Example,
    PairedDataset,
    PromptDataset,
    load_examples,
    load_paired_examples,
    render_prompt,
)
from megatron_corew.data.prompts import SYSTEM_PROMPT, chat_messages
from megatron_corew.data.sampler import EpochSampler

__all__ = [
    "DataError",
    "Example",
    "PromptDataset",
    "PairedDataset",
    "EpochSampler",
    "load_examples",
    "load_paired_examples",
    "render_prompt",
    "SYSTEM_PROMPT",
    "chat_messages",
]
