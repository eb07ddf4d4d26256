"""Stand-in rollout backends for tests: they reply from a script, not a model, so every expected output is known."""

from __future__ import annotations

from megatron_corew.rollout.base import Generation, RolloutEngine, SamplingParams


class ScriptedEngine(RolloutEngine):
    """A STAND-IN backend (not a model). Subclasses write ``reply``; this class tokenises the replies, builds the
    Generations and records the SamplingParams of every call in ``params``."""

    add_eos = False  # append the tokenizer's EOS to every reply

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.params: list[SamplingParams] = []

    def start_call(self, prompts, params: SamplingParams) -> None:
        """Called once per generate call, before the first reply (for per-call state)."""

    def reply(self, text: str, params: SamplingParams) -> tuple[str, str]:
        """(response text, finish reason) for one decoded prompt."""
        raise NotImplementedError

    def generate(self, prompts, params):
        self.params.append(params)
        self.start_call(prompts, params)
        out = []
        for p in prompts:
            text, finish = self.reply(self.tok.decode(p), params)
            ids = self.tok(text, add_special_tokens=False)["input_ids"]
            if self.add_eos:
                ids = ids + [self.tok.eos_token_id]
            out.append(
                Generation(prompt_ids=list(p), response_ids=ids, logprobs=[0.0] * len(ids), finish_reason=finish)
            )
        return out

    def update_weights(self, named_tensors, version):
        raise NotImplementedError
