"""The one interface every rollout backend (embedded HF, SGLang) implements.

Two ways to generate: ``generate`` (a batch in, the finished batch out) and the interruptible API
(``submit`` / ``collect`` / ``interrupt``) that partial rollouts are built on: a weight sync interrupts the
requests in flight, keeps what they generated, and resumes them from that prefix under the new weights
(docs/PARTIAL_ROLLOUTS.md)."""

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
    temperature-scaled (not top-p-truncated) distribution, the quantity the trainer recomputes.

    ``token_versions[i]`` is the weight version that sampled ``response_ids[i]`` (and gave ``logprobs[i]``);
    it differs along a response only when the response was interrupted by a weight sync and resumed. Left
    out, every token gets ``weight_version``. ``weight_version`` is then the oldest token's version (the one
    a staleness bound is about)."""

    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS) or "length"
    weight_version: int = 0
    meta: dict = field(default_factory=dict)
    token_versions: list[int] | None = None

    def __post_init__(self):
        if self.token_versions is None:
            self.token_versions = [int(self.weight_version)] * len(self.response_ids)
        elif len(self.token_versions) != len(self.response_ids):
            raise ValueError(f"{len(self.token_versions)} token versions for {len(self.response_ids)} tokens")


@dataclass
class Request:
    """One response in the making, for the interruptible API: the prompt, its sampling parameters and seed,
    and the tokens kept so far with their behaviour log-probs and the weight version of each.

    ``params.max_new_tokens`` is the budget of the whole response; a resumed request decodes at most
    ``remaining`` more tokens. ``seed`` is fixed at the first submit, so a resumed request samples from the
    same per-request stream (the embedded engine draws token ``j`` from (seed, j): bit-identical resumes)."""

    rid: int
    prompt_ids: list[int]
    params: SamplingParams
    seed: int | None = None
    response_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    token_versions: list[int] = field(default_factory=list)
    interruptions: int = 0  # how many syncs this request was interrupted by
    finish_reason: str | None = None  # set when it finished: "stop" (EOS) or "length"

    @property
    def remaining(self) -> int:
        return max(0, int(self.params.max_new_tokens) - len(self.response_ids))

    def keep(self, ids: list[int], logprobs: list[float], version: int) -> None:
        """Append tokens one engine decoded under weight ``version``."""
        if len(ids) != len(logprobs):
            raise ValueError(f"request {self.rid}: {len(ids)} tokens but {len(logprobs)} log-probs")
        self.response_ids.extend(int(t) for t in ids)
        self.logprobs.extend(float(x) for x in logprobs)
        self.token_versions.extend([int(version)] * len(ids))

    def generation(self, meta: dict | None = None) -> Generation:
        """The finished response as a ``Generation`` (``weight_version``: its oldest token's)."""
        if self.finish_reason is None:
            raise ValueError(f"request {self.rid} has not finished")
        versions = list(self.token_versions)
        return Generation(
            prompt_ids=list(self.prompt_ids),
            response_ids=list(self.response_ids),
            logprobs=list(self.logprobs),
            finish_reason=self.finish_reason,
            weight_version=min(versions) if versions else 0,
            meta=dict(meta or {}, rid=self.rid, interruptions=self.interruptions),
            token_versions=versions,
        )


class RolloutEngine(ABC):
    """generate token ids from token ids; receive new weights by HF parameter name.

    The interruptible API (one contract for every engine that has it; the others raise NotImplementedError):

    * ``submit(requests)`` starts decoding ``Request``s in the background and returns at once. A request that
      already holds tokens (it was interrupted) resumes from exactly ``prompt_ids + response_ids`` with
      ``remaining`` tokens of budget, its new tokens stamped with the engine's current ``weight_version``.
    * ``collect(timeout)`` returns the requests that finished since the last call (``finish_reason`` set),
      waiting up to ``timeout`` seconds for at least one (None: until one finishes or nothing is in flight).
    * ``interrupt()`` stops every request in flight after its current token and returns the unfinished ones,
      each with the tokens, behaviour log-probs and versions decoded so far (``interruptions`` counted).
      Requests that finished meanwhile stay for ``collect``. When it returns nothing decodes, so
      ``update_weights`` may follow; ``submit`` of the returned requests resumes them.
    """

    weight_version: int = 0

    @abstractmethod
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]: ...

    @abstractmethod
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None: ...

    def submit(self, requests: list[Request]) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no interruptible generation (partial rollouts)")

    def collect(self, timeout: float | None = None) -> list[Request]:
        raise NotImplementedError(f"{type(self).__name__} has no interruptible generation (partial rollouts)")

    def interrupt(self) -> list[Request]:
        raise NotImplementedError(f"{type(self).__name__} has no interruptible generation (partial rollouts)")

    def health(self) -> bool:
        return True

    def shutdown(self) -> None:  # noqa: B027  (optional hook: engines without processes have nothing to stop)
        return None
