"""--colocate / --offload-train in the loop, and the perf metrics.

The loop run with the trainer offloaded between its phases (embedded engine on CPU: only the trainer moves; the
SGLang release/resume needs CUDA and is exercised by tools/gpu_session.sh) equals the run without, metric for
metric and in the final weights, through a checkpoint and a resume, on the warm tiny model (every compared step
trains a non-zero policy gradient); the FLOP count is checked against a hand
computation."""

import json
import os

import pytest
from helpers import assert_real_signal, read_metrics, run_train

from checkpoints_conversion.config import ModelArgs
from megatron_corew.rollout.sglang import memory
from megatron_corew.utils import perf


def tiny_shape(**over) -> ModelArgs:
    dims = dict(
        model_dir="",
        model_type="qwen3",
        architecture="Qwen3ForCausalLM",
        vocab_size=10,
        hidden_size=4,
        num_layers=2,
        num_attention_heads=2,
        num_query_groups=1,
        head_dim=2,
        ffn_hidden_size=8,
        norm_eps=1e-6,
        rope_theta=1e4,
        rope_type="default",
        max_position_embeddings=64,
        tie_word_embeddings=False,
        qkv_bias=False,
        qk_norm=True,
    )
    dims.update(over)
    return ModelArgs(**dims)


def test_train_flops_by_hand():
    m = tiny_shape()
    # one layer, one token: q 4x4, k 4x2, v 4x2, out 4x4, gate 4x8, up 4x8, down 8x4 -> 16+8+8+16+32+32+32 = 144
    # multiply-adds, 288 FLOPs; attention for L=3: QK^T and AV over 1+2+3 = 6 (query, key) pairs, 2 heads x
    # head_dim 2 = 4 multiply-adds each, twice -> 2 * 2 * 4 * 6 = 96; logits 4x10 = 40 multiply-adds -> 80 / token
    assert perf.layer_token_flops(m) == 288
    assert perf.attention_flops(m, 3) == 96
    lengths = [3, 1]  # attention 96 + 2*2*4*1 = 16 per layer
    fwd = 2 * 288 * 4 + 2 * (96 + 16) + 80 * 4
    assert sum(perf.forward_flops(m, lengths)) == fwd
    assert perf.train_flops(m, lengths) == 3 * fwd
    assert perf.train_flops(m, lengths, recompute="full") == 3 * fwd + (fwd - 80 * 4)
    assert perf.train_flops(m, lengths, recompute="selective") == 3 * fwd + 2 * (96 + 16)
    assert perf.train_flops(m, lengths, anchor_forward=True) == 4 * fwd
    out = perf.step_perf(
        model_args=m,
        train_lengths=lengths,
        generated_tokens=6,
        step_seconds=2.0,
        train_seconds=0.5,
        gpus=2,
        ranks=2,
        peak=1e3,
    )
    assert out["perf/tokens_per_s_per_gpu"] == (6 + 4) / 2.0 / 2
    assert out["perf/train_mfu"] == pytest.approx(3 * fwd / 0.5 / 2 / 1e3)
    assert "perf/train_mfu" not in perf.step_perf(
        model_args=m,
        train_lengths=lengths,
        generated_tokens=0,
        step_seconds=1.0,
        train_seconds=1.0,
        gpus=1,
        ranks=1,
        peak=None,
    )


def test_peak_table():
    assert perf.peak_flops("NVIDIA H200", "bf16") == 989e12
    assert perf.peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert perf.peak_flops("NVIDIA H100 80GB HBM3", "fp32") == 67e12
    assert perf.peak_flops("NVIDIA A100-SXM4-80GB", "bf16") == 312e12
    assert perf.peak_flops("Tesla T4", "bf16") is None and perf.peak_flops(None, "fp32") is None


def test_memory_tags_are_checked_before_any_call():
    with pytest.raises(ValueError, match="unknown SGLang memory tag"):
        memory.release(None, ["kv"])  # no engine is touched (it would fail on None)


def _run(bundle, out, steps, extra=(), nproc=1):
    args = [
        "--hf-checkpoint", bundle["model"], "--train-data", bundle["train"], "--reward-method", "corewarding_2",
        "--global-batch-size", "4", "--n-samples-per-prompt", "4", "--max-response-length", "8", "--lr", "1e-3",
        "--train-iters", str(steps), "--eval-interval", "0", "--no-progress-bar", "--output-dir", out,
        "--peak-flops", "1e12", *extra,
    ]  # fmt: skip
    if nproc > 1:
        args += ["--tensor-model-parallel-size", str(nproc)]
    proc = run_train(args, nproc=nproc)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [r for r in read_metrics(out) if "train/loss" in r]
    return rows, json.load(open(os.path.join(out, "result.json"))), proc.stdout + proc.stderr


def _same(a, b):
    keys = [k for k in a[0] if k.startswith(("train/", "reward/", "pseudo/"))]
    return [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]


@pytest.mark.e2e
@pytest.mark.parametrize("nproc", [1, pytest.param(2, marks=pytest.mark.dist)], ids=["tp1", "tp2"])
def test_colocated_loop_is_bitwise_invisible(warm_bundle, tmp_path, nproc):
    ckpt = str(tmp_path / "ckpt")
    co_args = ["--colocate", "--save", ckpt, "--save-interval", "1"]
    co_rows, co, log = _run(warm_bundle, str(tmp_path / "co"), 3, co_args, nproc)
    plain_rows, plain, _ = _run(warm_bundle, str(tmp_path / "plain"), 3, nproc=nproc)
    assert "[colocate] the embedded engine has no memory of its own" in log
    assert_real_signal(plain_rows, (1, 2, 3))
    assert _same(co_rows, plain_rows)
    assert (co["policy_sha256"], co["anchor_sha256"]) == (plain["policy_sha256"], plain["anchor_sha256"])
    for r in co_rows:  # trained on the device, off it at the end of every step
        assert r["mem/train_before_bytes"] > 0 and r["mem/train_state_device_bytes"] == 0
        assert r["mem/generate_before_bytes"] == 0 and r["mem/train_state_host_bytes"] > 0
        assert r["mem/switch_to_rollout_before_bytes"] > 0 and r["mem/switch_to_rollout_after_bytes"] == 0
    for r in co_rows + plain_rows:
        assert r["perf/tokens_per_s_per_gpu"] > 0 and 0 < r["perf/train_mfu"] < 1
    assert not any(k.startswith("mem/train") for k in plain_rows[0])  # CPU default: no new mem/* keys
    # resume with --colocate from the step-2 checkpoint == the plain run's step 3
    os.remove(os.path.join(ckpt, "iter_0000003", "state.pt"))
    with open(os.path.join(ckpt, "latest"), "w") as f:
        f.write("iter_0000002\n")
    res_rows, res, _ = _run(warm_bundle, str(tmp_path / "resumed"), 3, ["--colocate", "--load", ckpt], nproc)
    assert _same(res_rows[-1:], plain_rows[-1:])
    assert (res["policy_sha256"], res["anchor_sha256"]) == (plain["policy_sha256"], plain["anchor_sha256"])


@pytest.mark.sglang
def test_phases_release_resume_and_refill_a_real_cpu_server(tmp_path):
    """The engine side of the phases against a real SGLang server on CPU. A CPU server frees nothing (its memory
    saver is a no-op without CUDA and torch_memory_saver): this checks the calls and their tags, that released
    weights count as gone, and that the push in the sync phase is what the next generation serves (greedy ids
    equal transformers' on the pushed weights)."""
    import torch
    from helpers import make_tiny_bundle
    from sglang_stubs import write_stubs
    from test_sglang import sglang_status
    from transformers import AutoModelForCausalLM

    from megatron_corew.colocation import Colocation
    from megatron_corew.rollout.base import SamplingParams
    from megatron_corew.rollout.embedded import EmbeddedEngine
    from megatron_corew.rollout.sglang import fleet as sf
    from megatron_corew.rollout.sglang import http as sh
    from megatron_corew.rollout.sglang import server as ss
    from megatron_corew.rollout.sglang.engine import SGLangEngine

    ok, reason = sglang_status()
    if not ok:
        pytest.skip(reason)
    b = make_tiny_bundle(str(tmp_path / "bundle"))
    moved = str(tmp_path / "moved")
    hf = AutoModelForCausalLM.from_pretrained(b["model"], dtype=torch.float32)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(moved)
    spec = ss.ServerSpec(
        model_path=b["model"], extra_pythonpath=[write_stubs(str(tmp_path / "stubs"))], log_path=str(tmp_path / "log")
    )
    fleet = sf.LocalFleet([spec], sh.HTTPConfig(), startup_timeout=400).start()
    try:
        eng = SGLangEngine(fleet, model_path=b["model"], eos_token_ids=[2], weight_sync="tensor")
        colo = Colocation(None, offload_train=False, colocate=True, rollout_cfg=None, log=lambda *_: None)
        colo.engine_memory = True  # what CUDA would decide; on CPU the server's release/resume free nothing
        colo.attach(eng, eng)  # one fleet: attached once
        assert colo.engines == [eng]
        prompts, greedy = [[5, 6, 7], [9, 10, 11, 12]], SamplingParams(max_new_tokens=8, greedy=True)
        before = [g.response_ids for g in eng.generate(prompts, greedy)]
        colo.enter("train")  # weights + kv_cache released: the engine's weights count as unknown
        assert colo.engine_tags == set() and [tag for _, tag in eng.state.loaded] == [None]
        colo.enter("sync")  # weights resumed, then the push loads a full set
        assert colo.engine_tags == {"weights"}
        eng.update_weights(list(hf.state_dict().items()), 1)
        colo.enter("rollout")
        assert colo.engine_tags == {"weights", "kv_cache"}
        after = [g.response_ids for g in eng.generate(prompts, greedy)]
        ref = [g.response_ids for g in EmbeddedEngine(moved, [2]).generate(prompts, greedy)]
        assert after == ref and after != before
    finally:
        fleet.shutdown()
