"""The megatron policy against independent references: transformers log-probs (float64) and the
single-process step, for TP=1, TP=2, PP=2, DP=2 and different micro-batch sizes."""

import pytest
from helpers import hf_reference_grad_norm, hf_reference_logprobs, make_tiny_hf_model, random_samples, run_worker

LAYOUTS = [(1, []), (2, ["--tp", "2"]), (2, ["--pp", "2"])]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "qwen3": make_tiny_hf_model(str(root / "qwen3"), "qwen3"),
        "llama": make_tiny_hf_model(str(root / "llama"), "llama", tie=True),
        "qwen2": make_tiny_hf_model(str(root / "qwen2"), "qwen2"),
    }


@pytest.mark.dist
@pytest.mark.parametrize("arch", ["qwen3", "llama", "qwen2"])
@pytest.mark.parametrize("nproc,layout", LAYOUTS, ids=["tp1", "tp2", "pp2"])
def test_logprobs_match_transformers(models, tmp_path, arch, nproc, layout):
    samples = random_samples(6)
    ref = hf_reference_logprobs(models[arch], samples)
    got = run_worker("logprobs", models[arch], tmp_path, nproc, samples, layout)
    assert len(got) == len(samples)
    for i, r in enumerate(ref):
        mine = got[str(i)]
        assert len(mine["logp"]) == len(r["logp"])
        for a, b in zip(mine["logp"], r["logp"]):
            assert abs(a - b) <= 1e-5 * abs(b) + 1e-6, (arch, layout, i, a, b)
        assert mine["entropy"] == pytest.approx(r["entropy"], rel=1e-5)
        assert mine["self_certainty"] == pytest.approx(r["self_certainty"], rel=1e-4, abs=1e-6)


TRAIN_LAYOUTS = [
    (1, ["--mbs", "8"]),
    (1, ["--mbs", "2"]),
    (2, ["--tp", "2"]),
    (2, ["--pp", "2", "--mbs", "2"]),
    (2, []),
    (2, ["--distopt"]),
]


@pytest.mark.dist
def test_train_step_is_layout_invariant(models, tmp_path):
    samples = random_samples(7, seed=3)
    results = [
        run_worker("train_step", models["qwen3"], tmp_path, n, samples, ["--kl-coef", "0.01", *lay])
        for n, lay in TRAIN_LAYOUTS
    ]
    base = results[0]
    assert base["step1"]["kl"] == 0.0  # step-0 KL to the reference copy
    # mean |advantage| over the trained tokens, by hand: every response token carries its sample's advantage
    n_tokens = sum(len(s["response"]) for s in samples)
    adv_abs = sum(abs(s["adv"]) * len(s["response"]) for s in samples) / n_tokens
    for r in results:
        assert r["step1"]["adv_abs_mean"] == pytest.approx(adv_abs, rel=1e-6)
    for (_, lay), r in zip(TRAIN_LAYOUTS[1:], results[1:]):
        for step in ("step1", "step2"):
            for key in ("loss", "grad_norm", "kl", "pg_loss"):
                assert r[step][key] == pytest.approx(base[step][key], rel=1e-5, abs=1e-9), (lay, step, key)
    assert abs(results[0]["step2"]["kl"]) > 0  # the update moved the policy away from the reference


@pytest.mark.dist
@pytest.mark.parametrize(
    "nproc,layout,temperature", [(1, [], 1.0), (1, [], 0.7), (2, ["--tp", "2"], 1.0)], ids=["tp1", "tp1-temp0.7", "tp2"]
)
def test_engine_logprobs_match_trainer_and_step0_kl_is_zero(models, tmp_path, nproc, layout, temperature):
    r = run_worker(
        "rollout_vs_trainer",
        models["qwen3"],
        tmp_path,
        nproc,
        extra=["--kl-coef", "0.005", "--temperature", str(temperature), *layout],
    )
    assert r["num_tokens"] > 20
    assert r["mean_abs_diff"] < 1e-4
    assert r["step"]["rollout_logprob_abs_diff"] < 1e-4
    assert abs(r["step"]["kl"]) < 1e-8
    # the megatron gradient of the on-policy loss equals transformers autograd on the same rollouts
    ref = hf_reference_grad_norm(models["qwen3"], r["samples"], temperature)
    assert r["step"]["grad_norm"] == pytest.approx(ref, rel=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_vocab_parallel_stats_single_shard_match_float64_softmax(temperature):
    """TP=1 (no model parallel group): the statistics over a shard with padding columns equal a float64
    log-softmax over the true vocabulary; the padding never counts."""
    import math

    import torch

    from megatron_corew.policy import cpu_compat

    cpu_compat.apply()
    from megatron_corew.policy.vocab_parallel import VocabParallelStats

    g = torch.Generator().manual_seed(0)
    true_vocab, padded = 13, 16
    logits = torch.randn(2, 5, padded, generator=g) * 3
    logits[..., true_vocab:] = 50.0  # padding that would dominate a softmax that did not mask it
    labels = torch.randint(0, true_vocab, (2, 5), generator=g)
    stats = VocabParallelStats(logits, true_vocab, temperature)
    ref = torch.log_softmax(logits[..., :true_vocab].double() / temperature, dim=-1)
    want_logp = ref.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(stats.token_logprobs(labels).double(), want_logp, atol=1e-5)
    assert torch.allclose(stats.entropy().double(), -(ref.exp() * ref).sum(-1), atol=1e-5)
    assert torch.allclose(stats.self_certainty().double(), -(ref + math.log(true_vocab)).mean(-1), atol=1e-5)
