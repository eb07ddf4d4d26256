"""Packed-row attention without Transformer Engine (megatron_corew/policy/packed_attention.py): the bucket split
on hand-worked cases, outputs and gradients against a float64 per-sequence causal attention; the model-level
check (packed logits = padded logits = transformers' per-sequence logits, packed gradient = padded gradient)
runs megatron in a worker process."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import WORKERS, make_tiny_hf_model, run_python_worker

from megatron_corew.policy.packed_attention import buckets, packed_attention


def test_buckets_hand_checked():
    # sorted distinct lengths 1, 2, 3 (x2). One bucket: 4 x 3^2 + C; {1,2},{3,3}: 2 x 2^2 + C + 2 x 3^2 + C.
    # C = 10: 46 vs 8 + 10 + 18 + 10 = 46, a tie: the first found (the single bucket) stays.
    assert buckets([3, 2, 3, 1], call_pairs=10) == [[0, 1, 2, 3]]
    # C = 9: one bucket 45; {1,2},{3,3} 44; {1},{2,3,3} 46; {1},{2},{3,3} 50 -> {1,2},{3,3}
    assert buckets([3, 2, 3, 1], call_pairs=9) == [[1, 3], [0, 2]]
    assert buckets([3, 2, 3, 1], call_pairs=0) == [[3], [1], [0, 2]]  # free calls: one bucket per length
    assert buckets([5, 2, 5], heads=4, call_pairs=10**9) == [[0, 1, 2]]  # expensive calls: one bucket
    assert buckets([7]) == [[0]]
    # equal lengths never split; a length-1 sequence joins short neighbours, never the long one
    assert buckets([1, 2, 2, 400, 400]) == [[0, 1, 2], [3, 4]]


@pytest.fixture
def one_thread():
    """Tensors of a few hundred numbers: a second OpenMP thread only waits (seconds on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _causal(q, k, v):
    """Plain causal attention for the bucketed path: [s, b, heads, dim] -> [s, b, heads * dim] (GQA by repeat)."""
    rep = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    s = q.shape[0]
    scores = torch.einsum("qbhd,kbhd->bhqk", q, k) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
    out = torch.einsum("bhqk,kbhd->qbhd", scores.softmax(-1), v)
    return out.reshape(s, q.shape[1], -1)


def _reference(q, k, v, cu):
    """float64, one sequence at a time (no padding, no buckets), causal by an explicit lower-triangular mask."""
    q, k, v = (x.double() for x in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    rows = []
    for a, b in zip(cu[:-1], cu[1:]):
        keys, vals = k[a:b].repeat_interleave(rep, dim=1), v[a:b].repeat_interleave(rep, dim=1)  # [n, heads, dim]
        w = torch.einsum("qhd,khd->hqk", q[a:b], keys) / q.shape[-1] ** 0.5
        w = w.masked_fill(~torch.ones(b - a, b - a, dtype=torch.bool).tril(), float("-inf"))
        rows.append(torch.einsum("hqk,khd->qhd", w.softmax(-1), vals).reshape(b - a, -1))
    return torch.cat(rows).unsqueeze(1)


@pytest.mark.parametrize(
    "lengths",
    [[1, 7, 7, 3, 12, 1, 30, 2], [9], [1], [5, 5, 5], [40, 1]],
    ids=["mixed", "one-sequence", "length-1", "equal", "long-and-1"],
)
@pytest.mark.parametrize("call_pairs", [0, 64, 10**9], ids=["per-length", "some", "one-bucket"])
def test_packed_attention_matches_float64_per_sequence(lengths, call_pairs, monkeypatch, one_thread):
    from megatron_corew.policy import packed_attention as pa

    monkeypatch.setattr(pa, "CALL_PAIRS", call_pairs)
    pa._plan.cache_clear()
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    g = torch.Generator().manual_seed(len(lengths) * 7 + call_pairs % 97)
    q = torch.randn(cu[-1], 4, 8, generator=g, requires_grad=True)
    k = torch.randn(cu[-1], 2, 8, generator=g, requires_grad=True)
    v = torch.randn(cu[-1], 2, 8, generator=g, requires_grad=True)
    out = packed_attention(_causal, q, k, v, cu)
    pa._plan.cache_clear()
    assert out.shape == (cu[-1], 1, 32)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = _reference(q64, k64, v64, cu)
    assert (out.double() - ref).abs().max() <= 1e-5
    w = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (out.double() * w).sum().backward()
    (ref * w).sum().backward()
    assert v64.grad.abs().max() > 0.01  # a gradient to compare (q and k get none from length-1 sequences alone)
    assert max(lengths) == 1 or (q64.grad.abs().max() > 0.01 and k64.grad.abs().max() > 0.01)
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        assert (got.double() - want).abs().max() <= 1e-5


# ---------------------------------------------------------------- megatron model (worker process)
@pytest.mark.dist
@pytest.mark.parametrize("arch", ["qwen3", "qwen2"])
def test_packed_logits_equal_padded_and_transformers(tmp_path, arch):
    """Lengths 1..37 with repeats, a pack of one sequence, fp32: packed logits = padded logits = transformers'
    logits of each sequence alone (1e-5); the gradient of the same loss is equal in both layouts."""
    model = make_tiny_hf_model(str(tmp_path / arch), arch, max_position_embeddings=128)
    out = str(tmp_path / "out.json")
    run_python_worker(os.path.join(WORKERS, "packed_logits_worker.py"), ["--model", model, "--out", out], timeout=300)
    with open(out) as f:
        res = json.load(f)
    for pack in res["packs"]:
        assert pack["packed_vs_hf"] <= 1e-5 and pack["padded_vs_hf"] <= 1e-5, pack
        assert pack["packed_vs_padded"] <= 1e-5, pack
        assert pack["grad_norm"] > 1e-3  # a gradient that is there to compare
        assert pack["grad_packed_vs_padded"] <= 1e-5 * max(1.0, pack["grad_max"]), pack
    assert [p["lengths"] for p in res["packs"]][-1] == [1]
