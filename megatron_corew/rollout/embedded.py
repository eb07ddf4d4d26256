"""In-process rollout engine on HF transformers with a KV cache.

The default backend on a CPU machine and in tests: same interface and weight-sync path (HF names)
as the SGLang backend, deterministic for a given seed, and it reports the log-prob of every sampled
token so the trainer can check that its recomputation agrees. ``generate`` and the interruptible decoder
(rollout/embedded_partial.py) share one decode loop (``decode_rows``) and one sampler (rollout/sampler.py):
row ``i`` of a call seeded ``s`` samples as a request seeded ``request_seed(s, i)``, whatever the decode batch.
"""

from __future__ import annotations

import inspect
import time
from typing import Iterable

import torch

from megatron_corew.rollout.base import Generation, RolloutEngine, SamplingParams
from megatron_corew.rollout.sampler import request_seed, sample
from megatron_corew.utils import faults


def left_padded(prompts: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[rows, width] token ids and attention mask of the prompts left-padded (every row's last token aligned, so
    one decode step serves all rows), and their position ids. Shared by both decoders of this engine."""
    n, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


class EmbeddedEngine(RolloutEngine):
    def __init__(
        self,
        model_dir: str,
        eos_token_ids: list[int],
        pad_token_id: int | None = None,
        max_batch_size: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | None = None,
        drop_finished: bool = True,
        role: str = "policy",
        shared_prefill: bool = True,
    ):
        from transformers import AutoModelForCausalLM

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.model_dir, self.role, self.calls = model_dir, role, 0
        self.eos = set(int(e) for e in eos_token_ids)
        if not self.eos:
            raise ValueError(f"{model_dir}: no eos_token_id in config; cannot stop generation")
        self.pad = pad_token_id if pad_token_id is not None else min(self.eos)
        self.max_batch_size = max_batch_size  # None: all of a call's prompts in one decode batch
        self.drop_finished = drop_finished  # faster on long-tailed lengths; the same samples either way
        self.shared_prefill = shared_prefill  # a prompt repeated n times (GRPO groups) is prefilled once
        self.weight_version = 0
        self.stats = {"tokens": 0, "seconds": 0.0}
        self._param_names = set(self.model.state_dict().keys())
        # transformers 5 renamed the KV-cache argument and output to ``cache``; 4.x knows only ``past_key_values``
        self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    @torch.no_grad()
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        if getattr(self, "_partial", None) is not None and self._partial.busy():
            raise RuntimeError("update_weights while partial requests decode: interrupt() them first")
        state = self.model.state_dict()
        for name, tensor in named_tensors:
            if name not in self._param_names:
                raise KeyError(f"engine has no parameter {name}")
            state[name].copy_(tensor.to(state[name].device, state[name].dtype))
        self.weight_version = version

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        self.calls += 1
        if faults.active(f"lose_weights_{self.role}", self.calls):
            self._restart()
        # no seed: draw one from the global generator (never torch.seed(), which reseeds it from the OS
        # and would make a resumed run diverge)
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
        seeds = [request_seed(seed, i) for i in range(len(prompts))]  # by the row of the call, never of a batch
        out: list[Generation] = []
        t0 = time.perf_counter()
        size = self.max_batch_size or max(len(prompts), 1)
        for i in range(0, len(prompts), size):
            chunk = prompts[i : i + size]
            zeros = [0] * len(chunk)
            tokens, logps, lengths, reasons = self.decode_rows(
                chunk, params, seeds[i : i + size], zeros, [params.max_new_tokens] * len(chunk)
            )
            for r, p in enumerate(chunk):
                response = tokens[r, : lengths[r]].tolist()
                out.append(
                    Generation(
                        prompt_ids=list(p),
                        response_ids=response,
                        logprobs=logps[r, : lengths[r]].tolist(),
                        finish_reason=reasons[r],
                        weight_version=self.weight_version,
                    )
                )
        self.stats["seconds"] += time.perf_counter() - t0
        self.stats["tokens"] += sum(len(g.response_ids) for g in out)
        return out

    @torch.no_grad()
    def _restart(self):
        """The ``lose_weights_<role>`` fault: come back like a restarted server, with the checkpoint's weights
        from disk, and ask for this role's weights (``RefillNeeded``) as SGLang's fleet does."""
        from transformers import AutoModelForCausalLM

        from megatron_corew.rollout.sglang.weight_sync import RefillNeeded

        fresh = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=self.model.dtype).state_dict()
        self.model.load_state_dict(fresh)
        self.weight_version = 0
        raise RefillNeeded(f"embedded {self.role} engine restarted with the weights of {self.model_dir}")

    def decode_rows(self, inputs, params: SamplingParams, seeds, offsets, budgets, stop=None, on_finish=None):
        """Decode the left-padded ``inputs`` together: row ``r`` draws its token ``j`` (counted from
        ``offsets[r]``, the tokens it already holds) from (``seeds[r]``, j) and stops at an EOS or after
        ``budgets[r]`` new tokens. The sampled tokens and log-probs are kept in [rows, steps] tensors (one vector
        update per step, no per-row Python work); with ``drop_finished`` the stopped rows leave the decode batch
        (KV cache, mask and positions shrink with it) once a quarter of it stopped. ``stop()`` is asked before
        each forward pass (an interrupt keeps what was decoded); ``on_finish(r, ids, logps, reason)`` is told of
        each row as it finishes. Returns the tokens, log-probs, lengths and finish reasons (None: interrupted)."""
        from transformers import DynamicCache

        n, dev = len(inputs), self.device
        steps = max(budgets, default=0)
        ids, mask, positions = left_padded(inputs, self.pad, dev)
        seeds = torch.tensor(seeds, dtype=torch.long, device=dev)
        offsets = torch.tensor(offsets, dtype=torch.long, device=dev)
        budgets = torch.tensor(budgets, dtype=torch.long, device=dev)
        cache = DynamicCache()
        tokens = torch.full((n, steps), self.pad, dtype=torch.long, device=dev)
        token_logps = torch.zeros((n, steps), dtype=torch.float32, device=dev)
        lengths = torch.zeros(n, dtype=torch.long, device=dev)
        eos = torch.tensor(sorted(self.eos), dtype=torch.long, device=dev)
        rows = torch.arange(n, device=dev)  # decode-batch row -> input index
        finished = torch.zeros(n, dtype=torch.bool, device=dev)  # per decode-batch row
        if steps == 0 or (stop is not None and stop()):
            return self._decoded(tokens, token_logps, lengths, budgets)
        logits = self._prefill(inputs, ids, mask, positions, cache)
        step_pos = positions[:, -1:]
        for t in range(steps):
            token, token_logp = sample(logits, params, seeds[rows], offsets[rows] + t)
            token = torch.where(finished, torch.full_like(token, self.pad), token)
            live = ~finished
            tokens[rows, t] = token  # a finished row writes pad past its length: never read
            token_logps[rows, t] = token_logp.float()
            lengths[rows] += live.long()
            at_eos = live & torch.isin(token, eos)
            done = at_eos | (live & (lengths[rows] >= budgets[rows]))
            finished = finished | done
            if on_finish is not None and bool(done.any()):
                for b in torch.nonzero(done).flatten().tolist():
                    r, k = int(rows[b]), int(lengths[rows[b]])
                    on_finish(r, tokens[r, :k].tolist(), token_logps[r, :k].tolist(), "stop" if at_eos[b] else "length")
            if bool(finished.all()) or t == steps - 1 or (stop is not None and stop()):
                break
            step_ids = token.unsqueeze(-1)
            step_pos = step_pos + 1
            mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=mask.device)], dim=-1)
            if self.drop_finished and int(finished.sum()) * 4 >= len(rows):  # a quarter stopped: shrink the batch
                keep = torch.nonzero(~finished).flatten()
                cache.batch_select_indices(keep)
                rows, finished, mask = rows[keep], finished[keep], mask[keep]
                step_ids, step_pos = step_ids[keep], step_pos[keep]
            logits = self._forward(step_ids, mask, step_pos, cache)
        return self._decoded(tokens, token_logps, lengths, budgets)

    def _decoded(self, tokens, token_logps, lengths, budgets):
        """``decode_rows``' result on the CPU, with each row's finish reason (None: interrupted)."""
        tokens, token_logps, lengths, budgets = (
            tokens.cpu(),
            token_logps.cpu(),
            lengths.cpu().tolist(),
            budgets.tolist(),
        )
        reasons = [
            "stop" if k and int(tokens[r, k - 1]) in self.eos else "length" if k >= budgets[r] else None
            for r, k in enumerate(lengths)
        ]
        return tokens, token_logps, lengths, reasons

    def _forward(self, ids, mask, positions, cache) -> torch.Tensor:
        """fp32 logits of the last position of each row; ``cache`` grows in place."""
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_arg: cache},
        )
        return out.logits[:, -1, :].float()

    def _prefill(self, prompts, ids, mask, positions, cache) -> torch.Tensor:
        """The prompts' forward pass. With ``shared_prefill`` each distinct prompt is run once and its KV cache
        rows and logits are copied to its repeats (GRPO's n samples of a prompt): the same values, 1/n the
        prefill work. The copies are exact; a smaller prefill batch may round differently in the last bit."""
        first: dict[tuple, int] = {}
        source = [first.setdefault(tuple(p), r) for r, p in enumerate(prompts)]  # row -> its first occurrence
        if not self.shared_prefill or len(first) == len(prompts):
            return self._forward(ids, mask, positions, cache)
        unique = torch.tensor(sorted(first.values()), device=self.device)
        slot = {r: i for i, r in enumerate(unique.tolist())}
        expand = torch.tensor([slot[r] for r in source], device=self.device)  # row -> its unique slot
        logits = self._forward(ids[unique], mask[unique], positions[unique], cache)
        cache.batch_select_indices(expand)
        return logits[expand]

    def throughput(self) -> float:
        return self.stats["tokens"] / max(self.stats["seconds"], 1e-9)

    # ------------------------------------------------------------------ interruptible generation (rollout/base.py)
    def submit(self, requests):
        self._partial_decoder().submit(requests)

    def collect(self, timeout: float | None = None):
        return self._partial_decoder().collect(timeout)

    def interrupt(self):
        return self._partial_decoder().interrupt()

    def _partial_decoder(self):
        from megatron_corew.rollout.embedded_partial import PartialDecoder

        if getattr(self, "_partial", None) is None:
            self._partial = PartialDecoder(self)
        return self._partial
