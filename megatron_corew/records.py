"""The records one RL step passes from stage to stage: a ``Rollout`` per sampled response, in a ``StepBatch``.

generate fills ``generation``; score fills ``text``, ``answer``, ``reward`` and the group ``labels``; the GRPO
advantages are written back onto each rollout; train reads the rollouts directly (they carry the token ids, the
behaviour log-probs and the advantage under the names the trainer expects).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prompt:
    """One question view the step asks, G times: ``view`` 0 is the original question, 1 its rephrasing;
    ``pair_id`` ties the two views of one Co-rewarding-I pair."""

    example: object
    view: int = 0
    pair_id: int = 0


@dataclass
class Rollout:
    prompt: Prompt
    group: int  # index of its prompt in StepBatch.prompts
    generation: object  # rollout.base.Generation: ids, behaviour log-probs, weight version
    text: str = ""
    answer: str = ""  # the last boxed answer of ``text`` ("" = none)
    reward: float = 0.0
    advantage: float = 0.0
    seq_stats: dict = field(default_factory=dict)  # per-response policy statistics (entropy, self_certainty)
    loss_mask: float = 1.0  # 0: left out of the loss (--mask-truncated-responses)
    old_logprobs: object = None  # pi_old per response token while several steps train on it (policy/multistep.py)

    @property
    def example(self):
        return self.prompt.example

    @property
    def view(self) -> int:
        return self.prompt.view

    @property
    def prompt_ids(self) -> list[int]:
        return self.generation.prompt_ids

    @property
    def response_ids(self) -> list[int]:
        return self.generation.response_ids

    @property
    def rollout_logprobs(self) -> list[float] | None:
        return self.generation.logprobs

    @property
    def weight_version(self) -> int:
        return self.generation.weight_version

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass
class StepBatch:
    """Everything one step knows. Rollouts are stored group by group, ``samples_per_prompt`` per prompt."""

    step: int
    prompts: list[Prompt]
    samples_per_prompt: int
    rollouts: list[Rollout] = field(default_factory=list)
    teacher_rollouts: list[Rollout] = field(default_factory=list)  # label-only (never trained on)
    labels: list[str] = field(default_factory=list)  # pseudo-label per group (voting methods)
    indices: list[int] = field(default_factory=list)  # dataset rows of the prompts (pairs)
    teacher_versions: list[int] = field(default_factory=list)  # per group: the teacher version that labelled it
    round: int = 0  # dynamic sampling: the generation round of this step (0: the first; seeds differ per round)

    def prompt_ids(self, prompts: list[Prompt] | None = None) -> list[list[int]]:
        """Token ids to generate from: each prompt repeated ``samples_per_prompt`` times, group by group."""
        return [p.example.prompt_ids for p in (prompts or self.prompts) for _ in range(self.samples_per_prompt)]

    def _records(self, generations) -> list[Rollout]:
        G = self.samples_per_prompt
        return [Rollout(self.prompts[k // G], k // G, g) for k, g in enumerate(generations)]

    def add_rollouts(self, generations) -> None:
        self.rollouts = self._records(generations)

    def add_teacher_rollouts(self, generations) -> None:
        self.teacher_rollouts = self._records(generations)

    def groups(self) -> list[list[Rollout]]:
        G = self.samples_per_prompt
        return [self.rollouts[k * G : (k + 1) * G] for k in range(len(self.prompts))]

    def teacher_group(self, k: int) -> list[Rollout]:
        G = self.samples_per_prompt
        return self.teacher_rollouts[k * G : (k + 1) * G]
