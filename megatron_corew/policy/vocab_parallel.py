"""Per-token log-probs, entropy and self-certainty from vocabulary-parallel logits.

With tensor parallelism each rank holds logits for a slice of the vocabulary. Everything here
reduces over the TP group (max, sum-exp, target logit) instead of gathering full logits, so memory
stays at [batch, seq, vocab / tp]. Columns past the true vocabulary (Megatron's padding) are
masked out so the results equal the HF model's softmax exactly.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist


def _tp_info():
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return None, 0, 1
    return (
        parallel_state.get_tensor_model_parallel_group(),
        parallel_state.get_tensor_model_parallel_rank(),
        parallel_state.get_tensor_model_parallel_world_size(),
    )


def _sum_over_tp(x: torch.Tensor) -> torch.Tensor:
    """All-reduce in forward, identity in backward (every TP rank holds the same loss)."""
    group, _, tp = _tp_info()
    if tp == 1:
        return x
    from megatron.core.tensor_parallel.mappings import reduce_from_tensor_model_parallel_region

    return reduce_from_tensor_model_parallel_region(x)


class VocabParallelStats:
    """Shared pieces of a masked, temperature-scaled log-softmax over a vocab shard."""

    def __init__(self, logits: torch.Tensor, true_vocab_size: int, temperature: float = 1.0):
        group, tp_rank, tp = _tp_info()
        local_vocab = logits.shape[-1]
        self.vocab_start = tp_rank * local_vocab
        self.local_vocab = local_vocab
        self.true_vocab_size = true_vocab_size
        logits = logits.float()
        if temperature != 1.0:
            logits = logits / temperature
        n_valid = max(0, min(local_vocab, true_vocab_size - self.vocab_start))
        self.valid = None
        if n_valid < local_vocab:
            self.valid = torch.arange(local_vocab, device=logits.device) < n_valid
            logits = logits.masked_fill(~self.valid, float("-inf"))
        self.logits = logits
        with torch.no_grad():
            row_max = logits.max(dim=-1).values
            if tp > 1:
                dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
        self.shifted = logits - row_max.unsqueeze(-1)
        self.log_z = torch.log(_sum_over_tp(self.shifted.exp().sum(dim=-1)))  # logsumexp - max

    def token_logprobs(self, labels: torch.Tensor) -> torch.Tensor:
        local = labels - self.vocab_start
        in_shard = (local >= 0) & (local < self.local_vocab)
        picked = self.shifted.gather(-1, local.clamp(0, self.local_vocab - 1).unsqueeze(-1)).squeeze(-1)
        picked = torch.where(in_shard, picked, torch.zeros_like(picked))
        return _sum_over_tp(picked) - self.log_z

    def entropy(self) -> torch.Tensor:
        """H(p) = log Z - sum_j p_j z_j (z shifted by the row max)."""
        probs = torch.exp(self.shifted - self.log_z.unsqueeze(-1))
        finite_shifted = torch.where(torch.isfinite(self.shifted), self.shifted, torch.zeros_like(self.shifted))
        return self.log_z - _sum_over_tp((probs * finite_shifted).sum(dim=-1))

    def self_certainty(self) -> torch.Tensor:
        """KL(U || p) = -(1/V) sum_j log(V p_j) = log Z - mean_j z_j - log V over the true vocabulary."""
        finite_shifted = torch.where(torch.isfinite(self.shifted), self.shifted, torch.zeros_like(self.shifted))
        mean_z = _sum_over_tp(finite_shifted.sum(dim=-1)) / self.true_vocab_size
        return self.log_z - mean_z - math.log(self.true_vocab_size)


STATS = ("logp", "entropy", "self_certainty")


def _chunk_stats(hidden, weight, labels, true_vocab_size, temperature, want):
    logits = torch.matmul(hidden, weight.t())  # what megatron's ColumnParallelLinear computes
    stats = VocabParallelStats(logits, true_vocab_size, temperature)
    out = {"logp": stats.token_logprobs(labels)}
    if "entropy" in want:
        out["entropy"] = stats.entropy()
    if "self_certainty" in want:
        out["self_certainty"] = stats.self_certainty()
    return out


class _ChunkedStats(torch.autograd.Function):
    """Forward: the statistics a chunk of tokens at a time, keeping only [tokens] results. Backward: each chunk's
    logits are recomputed and differentiated on their own, so no more than one chunk of fp32 [chunk, vocab/TP]
    exists at once in either direction."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, true_vocab_size, temperature, chunk, want):
        ctx.save_for_backward(hidden, weight, labels)
        ctx.args = (true_vocab_size, temperature, chunk, want)
        ctx.set_materialize_grads(False)
        n = hidden.shape[0]
        outs = {k: hidden.new_zeros(n, dtype=torch.float32) for k in STATS}
        for a in range(0, n, chunk):
            part = _chunk_stats(
                hidden[a : a + chunk], weight, labels[a : a + chunk], true_vocab_size, temperature, want
            )
            for k, v in part.items():
                outs[k][a : a + chunk] = v
        return tuple(outs[k] for k in STATS)

    @staticmethod
    def backward(ctx, *grads):
        hidden, weight, labels = ctx.saved_tensors
        true_vocab_size, temperature, chunk, want = ctx.args
        w = weight.detach().requires_grad_(True)
        grad_hidden = torch.zeros_like(hidden)
        for a in range(0, hidden.shape[0], chunk):
            with torch.enable_grad():
                h = hidden[a : a + chunk].detach().requires_grad_(True)
                part = _chunk_stats(h, w, labels[a : a + chunk], true_vocab_size, temperature, want)
                pairs = [(part[k], g[a : a + chunk]) for k, g in zip(STATS, grads) if g is not None and k in part]
                if pairs:
                    torch.autograd.backward([p for p, _ in pairs], [g for _, g in pairs])
            if h.grad is not None:
                grad_hidden[a : a + chunk] = h.grad
        return grad_hidden, w.grad, None, None, None, None, None


def chunked_stats(hidden, weight, labels, true_vocab_size, temperature=1.0, chunk=1024, want=STATS) -> dict:
    """{"logp", "entropy", "self_certainty"} per token ([tokens] fp32) from the output layer's input ``hidden``
    [tokens, hidden] and its vocab-parallel ``weight`` [vocab/TP, hidden], ``chunk`` tokens at a time, forward
    and backward (statistics not in ``want`` come back as zeros)."""
    logp, ent, sc = _ChunkedStats.apply(
        hidden, weight, labels, true_vocab_size, temperature, max(1, chunk), tuple(want)
    )
    return {"logp": logp, "entropy": ent, "self_certainty": sc}


def chunk_for_budget(budget_bytes: int, local_vocab: int) -> int:
    """Tokens per chunk so that a chunk's fp32 logits and their two same-sized temporaries fit ``budget_bytes``."""
    return max(1, budget_bytes // (3 * 4 * max(local_vocab, 1)))


LARGE_VOCAB = 32768  # from here on the whole [tokens, vocab] fp32 logits dominate a step's memory
DEFAULT_CHUNK_BUDGET = 256 << 20  # bytes of fp32 logits (and two temporaries) per chunk


def default_chunk_tokens(vocab_size: int, tp: int = 1) -> int:
    """``--logits-chunk-tokens`` when not given: chunks within :data:`DEFAULT_CHUNK_BUDGET` for a vocabulary of
    :data:`LARGE_VOCAB` or more (SmolLM2: 49152, Qwen: 151936), whole logits (0) below."""
    if vocab_size < LARGE_VOCAB:
        return 0
    return chunk_for_budget(DEFAULT_CHUNK_BUDGET, -(-vocab_size // max(tp, 1)))
