"""The embedded engine's sampler (rollout/sampler.py) against independent references: its uniforms against a
pure-Python splitmix64 (and the generator's published first outputs), its draws against the softmax of a
hand-written distribution (chi-square), top-p against a hand-computed nucleus, greedy against the argmax."""

from __future__ import annotations

import math
import random

import pytest
import torch

from megatron_corew.rollout.base import SamplingParams
from megatron_corew.rollout.sampler import request_seed, sample, seed_hash, token_uniforms

_M = (1 << 64) - 1
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46}  # chi-square 0.999 quantiles by dof


def _splitmix64(seed: int, j: int) -> int:
    """Output ``j`` of splitmix64 seeded ``seed`` (Steele, Lea & Flood 2014), on Python's unbounded ints."""
    z = (seed + (j + 1) * 0x9E3779B97F4A7C15) & _M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M
    return z ^ (z >> 31)


def test_uniforms_are_splitmix64_bit_for_bit():
    assert [_splitmix64(0, j) for j in range(2)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]  # published outputs
    rng = random.Random(0)
    seeds = [rng.getrandbits(63) for _ in range(2000)] + [0, 1, (1 << 63) - 1]
    index = [rng.randint(0, 1 << 20) for _ in range(len(seeds) - 3)] + [0, 5, 7]
    got = token_uniforms(torch.tensor(seeds), torch.tensor(index))
    assert got.dtype == torch.float64
    assert got.tolist() == [(_splitmix64(s, j) >> 11) * 2.0**-53 for s, j in zip(seeds, index)]


def test_seed_hashes_are_blake2b_of_the_joined_parts():
    import hashlib

    def ref(key: str) -> int:
        return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 1

    assert seed_hash(3, "policy", 2, 0) == ref("3/policy/2/0")
    assert request_seed(12345, 7) == ref("12345/7") < 2**63


LOGITS = [2.0, 1.0, 0.5, 0.0, -1.0, -3.0]


def _draws(params: SamplingParams, n: int = 30000) -> torch.Tensor:
    """``n`` draws of the hand-written distribution: rows of several request seeds at several token indices."""
    logits = torch.tensor([LOGITS] * n)
    seeds = torch.tensor([request_seed(1, i // 10) for i in range(n)])
    index = torch.tensor([i % 10 for i in range(n)])
    token, logp = sample(logits, params, seeds, index)
    return token, logp


def _chi2(counts: list[int], probs: list[float]) -> float:
    n = sum(counts)
    return sum((c - n * p) ** 2 / (n * p) for c, p in zip(counts, probs))


def test_draws_follow_the_softmax_chi_square():
    T = 0.7
    e = [math.exp(x / T) for x in LOGITS]
    probs = [x / sum(e) for x in e]
    token, logp = _draws(SamplingParams(temperature=T, max_new_tokens=1))
    counts = torch.bincount(token, minlength=len(LOGITS)).tolist()
    assert _chi2(counts, probs) < CHI2_999[len(LOGITS) - 1], (counts, probs)
    assert torch.allclose(logp.double(), torch.tensor(probs, dtype=torch.float64).log()[token], atol=1e-6)


@pytest.mark.parametrize("top_p", [0.5, 0.8, 0.95])
def test_top_p_draws_follow_the_renormalised_nucleus(top_p):
    e = [math.exp(x) for x in LOGITS]
    probs = [x / sum(e) for x in e]
    order = sorted(range(len(LOGITS)), key=lambda i: -probs[i])
    nucleus, mass = [], 0.0
    for i in order:  # the smallest prefix whose mass reaches top_p (the crossing token kept)
        nucleus.append(i)
        mass += probs[i]
        if mass >= top_p:
            break
    token, logp = _draws(SamplingParams(temperature=1.0, top_p=top_p, max_new_tokens=1))
    counts = torch.bincount(token, minlength=len(LOGITS)).tolist()
    assert all(counts[i] == 0 for i in range(len(LOGITS)) if i not in nucleus), (counts, nucleus)
    if len(nucleus) > 1:
        inside = [probs[i] / mass for i in nucleus]
        assert _chi2([counts[i] for i in nucleus], inside) < CHI2_999[len(nucleus) - 1], (counts, nucleus)
    # the reported log-prob is of the whole tempered distribution (Generation.logprobs), not of the nucleus
    assert torch.allclose(logp.double(), torch.tensor(probs, dtype=torch.float64).log()[token], atol=1e-6)


def test_greedy_is_the_argmax_and_ignores_the_seed():
    logits = torch.randn(50, 30, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(greedy=True, max_new_tokens=1)
    a, la = sample(logits, params, torch.arange(50), torch.zeros(50, dtype=torch.long))
    b, _ = sample(logits, params, torch.arange(50) + 99, torch.ones(50, dtype=torch.long))
    assert a.tolist() == b.tolist() == logits.argmax(-1).tolist()
    assert torch.allclose(la, logits.log_softmax(-1).max(-1).values)


def test_a_row_draws_the_same_token_in_any_batch():
    """A row's token depends on its own (seed, index) only: alone, or among other rows in any order."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 50, generator=g)
    seeds = torch.tensor([request_seed(9, i) for i in range(40)])
    index = torch.randint(0, 30, (40,), generator=g)
    params = SamplingParams(temperature=1.3, top_p=0.9, max_new_tokens=1)
    together, _ = sample(logits, params, seeds, index)
    perm = torch.randperm(40, generator=g)
    permuted, _ = sample(logits[perm], params, seeds[perm], index[perm])
    alone = [int(sample(logits[i : i + 1], params, seeds[i : i + 1], index[i : i + 1])[0]) for i in range(40)]
    assert permuted.tolist() == together[perm].tolist() and alone == together.tolist()
    assert len(set(together.tolist())) > 10  # the rows' draws differ
