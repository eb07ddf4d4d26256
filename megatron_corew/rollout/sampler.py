"""The embedded engine's token sampler, shared by its synchronous ``generate`` and its interruptible decoder.

Token ``j`` of a request is drawn by inverse CDF from a uniform that depends only on (request seed, j): the
``j``-th output of a splitmix64 stream seeded with the request seed. No batch-wide random stream is involved,
so a seeded request samples the same tokens whatever batch it is decoded in, wherever it sits in that batch,
and wherever a weight sync interrupted and resumed it. A request's seed is ``request_seed(call seed, row)``:
the row is the prompt's index in the call (``generate``) or in the step (``GroupStream``), the same number on
both paths. Decode batches of other shapes may still round the logits differently in the last bit, which moves
a log-prob by ~1e-7 and flips a token only when its uniform falls that close to a CDF boundary.
"""

from __future__ import annotations

import hashlib

import torch

from megatron_corew.rollout.base import SamplingParams

__all__ = ["request_seed", "sample", "seed_hash", "step_distribution", "token_uniforms"]

_U64 = (1 << 64) - 1
_GAMMA, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def seed_hash(*parts) -> int:
    """A 63-bit seed from the ``/``-joined parts (blake2b): the one derivation of every sampling seed."""
    key = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def request_seed(batch_seed: int, row: int) -> int:
    """The sampling seed of row ``row`` of a call or step whose generation seed is ``batch_seed`` (63 bits)."""
    return seed_hash(batch_seed, row)


def _signed(c: int) -> int:
    """A uint64 constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    return c - (1 << 64) if c >> 63 else c


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic: it would copy the sign bit)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def token_uniforms(seeds: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """float64 uniforms in [0, 1), one per row: output ``index`` (0-based) of splitmix64 seeded with ``seeds``
    (int64 tensors, broadcast; int64 sums and products wrap like uint64, so the bits match the reference)."""
    z = seeds.long() + (index.long() + 1) * _signed(_GAMMA)
    z = (z ^ _shr(z, 30)) * _signed(_MIX1)
    z = (z ^ _shr(z, 27)) * _signed(_MIX2)
    z = z ^ _shr(z, 31)
    return _shr(z, 11).double() * (2.0**-53)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    drop_sorted = cum - sorted_logits.softmax(-1) > top_p  # keep the token that crosses top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def step_distribution(logits: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One decode step's log-probs over the vocabulary (of ``logits / T``, as ``Generation.logprobs`` defines;
    greedy: of the logits) and the top-p filtered, renormalised probabilities to draw from (None for greedy)."""
    if params.greedy:
        return torch.log_softmax(logits, dim=-1), None
    scaled = logits / params.temperature
    return torch.log_softmax(scaled, dim=-1), torch.softmax(_top_p_filter(scaled, params.top_p), dim=-1)


def sample(
    logits: torch.Tensor, params: SamplingParams, seeds: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's next token and its log-prob: the argmax (greedy), else the inverse CDF of the row's
    distribution at its uniform for (seed, index)."""
    logp_all, probs = step_distribution(logits, params)
    if probs is None:
        token = logits.argmax(dim=-1)
    else:
        cdf = probs.double().cumsum(-1)
        total = cdf[:, -1:].contiguous()
        u = token_uniforms(seeds, index).to(cdf.device).unsqueeze(-1)
        token = torch.searchsorted(cdf, u * total, right=True)
        # u * total may round up to total: the last token of non-zero probability, never a filtered one
        token = torch.minimum(token, torch.searchsorted(cdf, total, right=False)).squeeze(-1)
    return token, logp_all.gather(-1, token.unsqueeze(-1)).squeeze(-1)
