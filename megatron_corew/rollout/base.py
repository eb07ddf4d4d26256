"""The one interface every rollout backend (embedded HF, SGLang) implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterable

import torch


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    greedy: bool = False
    seed: int | None = None


@dataclass
class Generation:
    """One sampled response. ``logprobs[i]`` is log p(response_ids[i]) under the engine's
    temperature-scaled (not top-p-truncated) distribution, the quantity the trainer recomputes."""

    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS) or "length"
    weight_version: int = 0
    meta: dict = field(default_factory=dict)


class RolloutEngine(ABC):
    """generate token ids from token ids; receive new weights by HF parameter name."""

    weight_version: int = 0

    @abstractmethod
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]: ...

    @abstractmethod
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None: ...

    def health(self) -> bool:
        return True

    def shutdown(self) -> None:  # noqa: B027  (optional hook: engines without processes have nothing to stop)
        return None
