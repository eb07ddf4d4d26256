"""Packed micro-batches, the token-balanced split and chunked vocab-parallel statistics.

The split and layout are checked on hand-worked cases; chunked statistics against the unchunked computation and
a float64 softmax; packed training against padded training of the same samples (worker processes)."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch
from helpers import WORKERS, make_tiny_hf_model, run_python_worker

from megatron_corew.policy import packing
from megatron_corew.policy.vocab_parallel import VocabParallelStats, chunk_for_budget, chunked_stats


# ---------------------------------------------------------------- split and layout (hand-checked)
def test_lpt_partition_hand_checked():
    # 5 -> part 0; 4 -> part 1; 3 -> part 1 (4 < 5); 3 -> part 0 (5 < 7); 3 -> part 1 (7 < 8)
    assert packing.lpt_partition([5, 4, 3, 3, 3], 2) == [[0, 3], [1, 2, 4]]
    # ties go to the lower part index; parts list their items in index order
    assert packing.lpt_partition([2, 2, 2, 2], 2) == [[0, 2], [1, 3]]
    assert packing.lpt_partition([7], 3) == [[0], [], []]


def test_balanced_microbatches_same_count_and_budget():
    lengths = [100, 90, 80, 30, 20, 10, 10, 5]
    # ranks by LPT: 100 -> r0; 90 -> r1; 80 -> r1 (90 < 100); 30, 20, 10, 10 -> r0 (each time lighter: 130, 150,
    # 160, 170); 5 -> r0 (tie at 170: lower rank) = 175 vs 170. r0 into 2 micro-batches of <= 100: [100], [30..5]
    split = packing.balanced_microbatches(lengths, dp=2, budget=100)
    assert split == [[[0], [3, 4, 5, 6, 7]], [[1], [2]]]
    # a rank with fewer sequences than the other rank's micro-batches gets empty ones (same schedule length)
    assert packing.balanced_microbatches([50, 50, 50, 150], dp=2, budget=60) == [[[3], [], []], [[0], [1], [2]]]
    assert packing.imbalance([175, 170]) == 175 / 172.5


def test_balance_on_long_tailed_lengths():
    rng = random.Random(0)
    lengths = [min(2048, max(16, int(rng.lognormvariate(5.5, 0.9)))) for _ in range(256)]
    for dp in (2, 4, 8):
        split = packing.balanced_microbatches(lengths, dp, budget=4096)
        loads = [sum(lengths[i] for mb in r for i in mb) for r in split]
        assert packing.imbalance(loads) <= 1.01
        assert len({len(r) for r in split}) == 1


def test_pack_layout_hand_checked():
    lay = packing.pack_layout([3, 2])
    assert lay["cu_seqlens"] == [0, 3, 5] and lay["positions"] == [0, 1, 2, 0, 1]
    assert lay["offsets"] == [0, 3] and lay["total"] == 5
    lay = packing.pack_layout([3, 2], multiple=4)  # sequence parallelism: one pad segment up to 8 tokens
    assert lay["cu_seqlens"] == [0, 3, 5, 8] and lay["positions"] == [0, 1, 2, 0, 1, 0, 1, 2]
    assert packing.pack_layout([])["total"] == 1  # an empty micro-batch runs as one pad token


class _Seq:
    def __init__(self, n_prompt, n_response):
        self.prompt_ids, self.response_ids = [5] * n_prompt, [6] * n_response
        self.advantage, self.view, self.rollout_logprobs = 1.0, 0, None

    @property
    def length(self):
        return len(self.prompt_ids) + len(self.response_ids)


def test_padded_rows_are_a_multiple_of_tp_under_sequence_parallelism():
    # megatron's sequence-parallel scatter splits each row over the TP ranks: longest 7 tokens -> width 8 at TP 4
    mb = packing.padded_microbatch([_Seq(3, 4), _Seq(2, 3)], [0, 1], [0.1, 0.1], multiple=4)
    assert mb["tokens"].shape == (2, 8) and mb["positions"].shape == (2, 8)
    assert mb["mask"].sum() == 7 and mb["mask"][:, 7].sum() == 0  # the added column is padding
    assert packing.padded_microbatch([_Seq(3, 4)], [0], [0.1])["tokens"].shape == (1, 7)  # no SP: as long as needed
    empty = packing.padded_microbatch([], [], [], multiple=2)  # a rank with no sequence: one row of pad tokens
    assert empty["tokens"].shape == (1, 2) and empty["mask"].sum() == 0 and empty["indices"] == []


# ---------------------------------------------------------------- chunked statistics
def _float64_stats(hidden, weight, labels, vocab, temperature):
    logits = (hidden.double() @ weight.double().t())[:, :vocab] / temperature
    logp = torch.log_softmax(logits, -1)
    p = logp.exp()
    return {
        "logp": logp.gather(-1, labels[:, None]).squeeze(-1),
        "entropy": -(p * logp).sum(-1),
        "self_certainty": -logp.mean(-1) - torch.log(torch.tensor(float(vocab), dtype=torch.float64)),
    }


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_stats_match_unchunked_and_float64(chunk):
    torch.manual_seed(0)
    tokens, hid, padded_vocab, vocab, temp = 50, 16, 304, 300, 0.7
    hidden = torch.randn(tokens, hid, requires_grad=True)
    weight = (0.25 * torch.randn(padded_vocab, hid)).requires_grad_()
    labels = torch.randint(0, vocab, (tokens,))
    g = {k: torch.randn(tokens) for k in ("logp", "entropy", "self_certainty")}

    def grads(out):
        hidden.grad = weight.grad = None
        sum((out[k] * g[k]).sum() for k in g).backward()
        return hidden.grad.clone(), weight.grad.clone()

    full = VocabParallelStats(hidden @ weight.t(), vocab, temp)
    plain = {"logp": full.token_logprobs(labels), "entropy": full.entropy(), "self_certainty": full.self_certainty()}
    plain_grads = grads(plain)
    got = chunked_stats(hidden, weight, labels, vocab, temp, chunk)
    got_grads = grads(got)
    ref = _float64_stats(hidden.detach(), weight.detach(), labels, vocab, temp)
    for k in g:
        assert torch.allclose(got[k], plain[k], atol=1e-6, rtol=0), k
        assert torch.allclose(got[k].double(), ref[k], atol=2e-5, rtol=0), k
    for a, b in zip(got_grads, plain_grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)  # the weight gradient sums chunks in another order
    # float64 gradients of the same objective
    h64, w64 = hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    r64 = _float64_stats(h64, w64, labels, vocab, temp)
    sum((r64[k] * g[k].double()).sum() for k in g).backward()
    assert torch.allclose(got_grads[0].double(), h64.grad, atol=1e-4, rtol=1e-4)
    assert torch.allclose(got_grads[1].double(), w64.grad, atol=1e-4, rtol=1e-4)


def test_chunked_stats_only_wanted_and_budget():
    hidden, weight = torch.randn(5, 4), torch.randn(10, 4)
    out = chunked_stats(hidden, weight, torch.zeros(5, dtype=torch.long), 10, 1.0, 2, want=("logp",))
    assert torch.equal(out["entropy"], torch.zeros(5))
    assert chunk_for_budget(12 * 1000 * 64, 1000) == 64


def test_default_chunking_for_large_vocabularies():
    """Unset --logits-chunk-tokens: whole logits below 32768 entries; above, chunks whose fp32 logits and two
    temporaries fit 256 MiB (SmolLM2's 49152: 455 tokens, hand-computed; TP=2 halves the shard, doubling it)."""
    from megatron_corew.policy.vocab_parallel import default_chunk_tokens

    assert default_chunk_tokens(32000) == 0 and default_chunk_tokens(151) == 0
    assert default_chunk_tokens(49152) == (256 << 20) // (12 * 49152) == 455
    assert default_chunk_tokens(49152, tp=2) == (256 << 20) // (12 * 24576)
    assert default_chunk_tokens(151936) * 12 * 151936 <= 256 << 20


# ---------------------------------------------------------------- packed vs padded training (worker processes)
LENGTHS = [3, 500, 17, 120, 40, 8, 260, 64, 5, 33, 40, 8, 40]  # repeats: equal lengths attend as one batch


def _samples(path, seed=0, views=2):
    rng = random.Random(seed)
    rows = []
    for n in LENGTHS:
        p = max(2, min(n - 1, rng.randint(2, 10)))
        rows.append(
            {
                "prompt": [rng.randint(3, 99) for _ in range(p)],
                "response": [rng.randint(3, 99) for _ in range(n - p)],
                "adv": rng.gauss(0, 1),
                "view": rng.randint(0, views - 1),
            }
        )
    with open(path, "w") as f:
        json.dump(rows, f)
    return rows


def _run(tmp_path, model, nproc=1, extra=(), variants="padded:0,packed:0,packed:64", views=2):
    out = os.path.join(str(tmp_path), f"out-{nproc}-{'_'.join(extra)}.json")
    spath = os.path.join(str(tmp_path), "samples.json")
    rows = _samples(spath, views=views)
    args = ["--model", model, "--samples", spath, "--out", out, "--variants", variants, *extra]
    run_python_worker(os.path.join(WORKERS, "packing_worker.py"), args, nproc, timeout=600)
    with open(out) as f:
        return rows, json.load(f)


def _assert_same_as_padded(results):
    base = results["padded:0"]
    assert len(base["stats"]) == len(LENGTHS)
    for name, res in results.items():
        for i, s in base["stats"].items():
            t = res["stats"][i]
            assert len(t["logp"]) == len(s["logp"])
            assert max(abs(a - b) for a, b in zip(s["logp"], t["logp"])) <= 1e-6, (name, i)
            assert abs(s["entropy"] - t["entropy"]) <= 1e-6, (name, i)
            assert abs(s["self_certainty"] - t["self_certainty"]) <= 1e-6, (name, i)
        for a, b in zip(base["steps"], res["steps"]):
            assert abs(a["loss"] - b["loss"]) <= 1e-6 and abs(a["grad_norm"] - b["grad_norm"]) <= 1e-6, name
            assert a["response_tokens"] == b["response_tokens"]


@pytest.fixture(scope="module")
def archs(tmp_path_factory):
    root = tmp_path_factory.mktemp("packing_models")
    return {
        name: make_tiny_hf_model(str(root / name), arch, tie=tie, max_position_embeddings=1024)
        for name, arch, tie in (("qwen3", "qwen3", False), ("qwen2", "qwen2", False), ("llama", "llama", True))
    }


@pytest.mark.dist
@pytest.mark.parametrize("arch", ["qwen3", "qwen2", "llama"])
def test_packed_equals_padded(archs, tmp_path, arch):
    """Qwen3 (qk-norm), Qwen2 (QKV bias), Llama (tied): lengths 3..500 in one batch, fp32, TP=PP=DP=1."""
    _, results = _run(tmp_path, archs[arch])
    assert results["packed:0"]["microbatches"] < results["padded:0"]["microbatches"]
    _assert_same_as_padded(results)


@pytest.mark.dist
@pytest.mark.parametrize("layout", [["--tp", "2"], ["--pp", "2"], []], ids=["tp2", "pp2", "dp2"])
def test_packed_equals_padded_parallel(archs, tmp_path, layout):
    _, results = _run(tmp_path, archs["qwen3"], nproc=2, extra=layout)
    _assert_same_as_padded(results)


@pytest.mark.dist
def test_microbatch_token_mean_against_float64(archs, tmp_path):
    """--loss-agg-mode microbatch-token-mean: the step-1 loss (ratio 1: per-token loss -A) equals the reference's
    formula in float64, the mean over groups of 8 sequences (step order) of each group's token mean, whatever
    our micro-batches (3 sequences padded, or packed) are."""
    rows, results = _run(
        tmp_path,
        archs["qwen3"],
        extra=["--loss-agg-mode", "microbatch-token-mean", "--mbs", "3", "--entropy-coef", "0"],
        variants="padded:0,packed:0",
        views=1,  # 13 sequences: reference groups of 8 and 5
    )
    ref = 0.0
    for view in (0,):
        mine = [r for r in rows if r["view"] == view]
        groups = [mine[a : a + 8] for a in range(0, len(mine), 8)]
        means = []
        for grp in groups:
            toks = [torch.tensor([-r["adv"]] * len(r["response"]), dtype=torch.float64) for r in grp]
            means.append(torch.cat(toks).mean())
        ref += float(torch.stack(means).mean())
    for name in ("padded:0", "packed:0"):
        assert abs(results[name]["steps"][0]["loss"] - ref) <= 1e-6, (name, results[name]["steps"][0]["loss"], ref)
    global_ref = sum(
        float(torch.tensor([-r["adv"] for r in rows if r["view"] == v for _ in r["response"]]).double().mean())
        for v in (0,)
    )
    assert abs(global_ref - ref) > 1e-3  # the two modes differ on this batch, so the test can fail


# ---------------------------------------------------------------- ranks left with nothing to train on
@pytest.fixture(scope="module")
def long_model(tmp_path_factory):
    return make_tiny_hf_model(str(tmp_path_factory.mktemp("long") / "m"), "qwen3", max_position_embeddings=2048)


def _rows(lengths, seed):
    """Samples of the given total lengths with non-zero, unequal advantages and behaviour log-probs that differ
    from the trainer's (so IS weights are not 1)."""
    rng = random.Random(seed)
    rows = []
    for n in lengths:
        p = 4
        rows.append(
            {
                "prompt": [rng.randint(3, 99) for _ in range(p)],
                "response": [rng.randint(3, 99) for _ in range(n - p)],
                "adv": rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5),
                "rollout_logp": [-rng.uniform(3.0, 6.0) for _ in range(n - p)],
            }
        )
    return rows


def _same_on_one_and_two_ranks(tmp_path, model, rows, variant, extra):
    spath = os.path.join(str(tmp_path), "samples.json")
    with open(spath, "w") as f:
        json.dump(rows, f)
    results = []
    for nproc in (1, 2):
        out = os.path.join(str(tmp_path), f"out-{nproc}.json")
        args = ["--model", model, "--samples", spath, "--out", out, "--variants", variant, *extra]
        run_python_worker(os.path.join(WORKERS, "packing_worker.py"), args, nproc, timeout=600)
        with open(out) as f:
            results.append(json.load(f)[variant])
    one, two = results
    for i, s in one["stats"].items():
        assert max(abs(a - b) for a, b in zip(s["logp"], two["stats"][i]["logp"])) <= 1e-6, i
    for a, b in zip(one["steps"], two["steps"]):
        assert a["grad_norm"] > 0 and a["update_ok"] and b["update_ok"]  # a real policy-gradient step
        for key, value in a.items():
            if isinstance(value, float) and key != "lr":
                assert abs(value - b[key]) <= 1e-6 * max(1.0, abs(value)), (key, value, b[key])
    return one, two


@pytest.mark.dist
def test_packed_rollout_is_with_an_empty_microbatch_on_one_rank(long_model, tmp_path):
    """Lengths 1100, 600, 600 at DP 2 and a 1000-token budget: rank 0 holds [1100] and an empty micro-batch (rank
    1 needs two), with --rollout-is tis. Every rank finishes, and the metrics equal the one-rank run's."""
    from megatron_corew.policy import packing

    split = packing.balanced_microbatches([1100, 600, 600], dp=2, budget=1000)
    assert split == [[[0], []], [[1], [2]]]  # the case under test
    one, _ = _same_on_one_and_two_ranks(
        tmp_path,
        long_model,
        _rows([1100, 600, 600], seed=3),
        "packed:0",
        ["--rollout-is", "tis", "--max-tokens-per-gpu", "1000"],
    )
    assert one["steps"][0]["is_weight_mean"] != 1.0


@pytest.mark.dist
def test_padded_with_fewer_sequences_than_ranks(long_model, tmp_path):
    """One sequence at DP 2 (left after dynamic sampling, or a small mini-batch): rank 1 runs an empty
    micro-batch, and the step equals the one-rank step."""
    _same_on_one_and_two_ranks(tmp_path, long_model, _rows([40], seed=4), "padded:0", [])


def _te_gpus() -> int:
    from megatron_corew.policy.model_builder import transformer_engine_available

    return torch.cuda.device_count() if transformer_engine_available() else 0


@pytest.mark.dist
@pytest.mark.skipif(_te_gpus() < 2, reason="--sequence-parallel needs Transformer Engine and 2 CUDA GPUs")
@pytest.mark.parametrize("layout", ["padded:0", "packed:0"])
def test_sequence_parallel_equals_tp1(archs, tmp_path, layout):
    """TP 2 with --sequence-parallel (rows rounded to a multiple of 2: LENGTHS has odd lengths) against TP 1:
    per-sample log-probs, entropies, and two steps' loss and grad norm. Runs where TE and two GPUs exist; on CPU
    the flag is refused at start-up (tests/test_offpolicy.py)."""
    _, tp1 = _run(tmp_path, archs["qwen3"], variants=layout)
    _, sp = _run(tmp_path, archs["qwen3"], nproc=2, extra=["--tp", "2", "--sp"], variants=layout)
    _assert_same_as_padded({"padded:0": tp1[layout], "sp": sp[layout]})
    assert tp1[layout]["steps"][0]["grad_norm"] > 0
