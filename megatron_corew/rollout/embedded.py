"""In-process rollout engine on HF transformers with a KV cache.

The default backend on a CPU machine and in tests: same interface and weight-sync path (HF names)
as the SGLang backend, deterministic for a given seed, and it reports the log-prob of every sampled
token so the trainer can check that its recomputation agrees.
"""

from __future__ import annotations

import inspect
import time
from typing import Iterable

import torch

from megatron_corew.rollout.base import Generation, RolloutEngine, SamplingParams


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    drop_sorted = cum - sorted_logits.softmax(-1) > top_p  # keep the token that crosses top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


class EmbeddedEngine(RolloutEngine):
    def __init__(
        self,
        model_dir: str,
        eos_token_ids: list[int],
        pad_token_id: int | None = None,
        max_batch_size: int = 64,
        dtype: torch.dtype = torch.float32,
        device: str | None = None,
    ):
        from transformers import AutoModelForCausalLM

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.eos = set(int(e) for e in eos_token_ids)
        if not self.eos:
            raise ValueError(f"{model_dir}: no eos_token_id in config; cannot stop generation")
        self.pad = pad_token_id if pad_token_id is not None else min(self.eos)
        self.max_batch_size = max_batch_size
        self.weight_version = 0
        self.stats = {"tokens": 0, "seconds": 0.0}
        self._param_names = set(self.model.state_dict().keys())
        # transformers 5 renamed the KV-cache argument and output to ``cache``; 4.x knows only ``past_key_values``
        self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    @torch.no_grad()
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        state = self.model.state_dict()
        for name, tensor in named_tensors:
            if name not in self._param_names:
                raise KeyError(f"engine has no parameter {name}")
            state[name].copy_(tensor.to(state[name].device, state[name].dtype))
        self.weight_version = version

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        gen = torch.Generator(device=self.device)
        # no seed: draw one from the global generator (never torch.seed(), which reseeds it from the OS
        # and would make a resumed run diverge)
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
        gen.manual_seed(seed)
        out: list[Generation] = []
        t0 = time.perf_counter()
        for i in range(0, len(prompts), self.max_batch_size):
            out.extend(self._generate_batch(prompts[i : i + self.max_batch_size], params, gen))
        self.stats["seconds"] += time.perf_counter() - t0
        self.stats["tokens"] += sum(len(g.response_ids) for g in out)
        return out

    def _generate_batch(self, prompts, params: SamplingParams, gen: torch.Generator) -> list[Generation]:
        from transformers import DynamicCache

        n = len(prompts)
        width = max(len(p) for p in prompts)
        ids = torch.full((n, width), self.pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for r, p in enumerate(prompts):  # left padding keeps every sequence's last token aligned
            ids[r, width - len(p) :] = torch.tensor(p)
            mask[r, width - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        responses = [[] for _ in range(n)]
        logprobs = [[] for _ in range(n)]
        finished = torch.zeros(n, dtype=torch.bool, device=self.device)
        step_ids, step_pos = ids, positions
        for _ in range(params.max_new_tokens):
            out = self.model(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=step_pos,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_arg: cache},
            )
            cache = getattr(out, self._cache_arg)
            logits = out.logits[:, -1, :].float()
            if params.greedy:
                logp_all = torch.log_softmax(logits, dim=-1)
                token = logits.argmax(dim=-1)
            else:
                scaled = logits / params.temperature
                logp_all = torch.log_softmax(scaled, dim=-1)
                probs = torch.softmax(_top_p_filter(scaled, params.top_p), dim=-1)
                token = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
            token_logp = logp_all.gather(-1, token.unsqueeze(-1)).squeeze(-1)
            token = torch.where(finished, torch.full_like(token, self.pad), token)
            for r in torch.nonzero(~finished).flatten().tolist():
                responses[r].append(int(token[r]))
                logprobs[r].append(float(token_logp[r]))
                if int(token[r]) in self.eos:
                    finished[r] = True
            if bool(finished.all()):
                break
            step_ids = token.unsqueeze(-1)
            step_pos = step_pos[:, -1:] + 1
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=mask.device)], dim=-1)
        return [
            Generation(
                prompt_ids=list(p),
                response_ids=responses[r],
                logprobs=logprobs[r],
                finish_reason="stop" if responses[r] and responses[r][-1] in self.eos else "length",
                weight_version=self.weight_version,
            )
            for r, p in enumerate(prompts)
        ]

    def throughput(self) -> float:
        return self.stats["tokens"] / max(self.stats["seconds"], 1e-9)
