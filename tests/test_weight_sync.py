"""Sharded weight sync (docs/WEIGHT_SYNC.md).

Always run: buckets, the wire cast (fp32 -> bf16 halves the bytes, values equal torch's own rounding), delta
digests, the flags.

With REAL SGLang CPU servers (``@pytest.mark.sglang``): two fp32 policy servers and one bf16 teacher server; a
torchrun job at TP=2 x PP=2 trains two real megatron steps and pushes through the sharded layout. Checked: rank 0
sent only stage 0's tensors (names and bytes, from the HF export), the stage-1 sender the rest, the other TP ranks
nothing; the funnel layout sent everything from rank 0; the servers' greedy ids and log-probs equal transformers on
the saved HF export of the trained weights; the teacher travelled as bf16 (exactly half the fp32 bytes) and its
server matches transformers in bf16; the delta push sent fewer or equal bytes. The same at TP=2 x PP=2 with
``--sglang-weight-sync distributed`` (gloo groups per stage sender and engine) into two fp32 servers.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from megatron_corew.rollout.sglang.stage_sender import StageSender, SyncPlan, buckets, tensor_digest

HERE = os.path.dirname(os.path.abspath(__file__))


def test_buckets_are_byte_bounded_and_keep_order():
    ts = [(f"t{i}", torch.zeros(n)) for i, n in enumerate([10, 10, 30, 5, 5])]  # fp32: 40, 40, 120, 20, 20 bytes
    got = [[n for n, _ in b] for b in buckets(iter(ts), 80)]
    assert got == [["t0", "t1"], ["t2"], ["t3", "t4"]]


def test_wire_cast_halves_bytes_and_rounds_like_torch():
    plan = SyncPlan(role="teacher", tag="teacher-1", urls=["http://x"], tp_sizes=[1], bucket_bytes=1 << 20)
    plan.wire_dtype = "bfloat16"
    s = StageSender(plan)
    g = torch.Generator().manual_seed(0)
    src = [("a", torch.randn(7, 5, generator=g)), ("b", torch.randn(3, generator=g)), ("ids", torch.arange(4))]
    out = dict(s._wire(iter(src)))
    assert out["a"].dtype == torch.bfloat16 and torch.equal(out["a"].float(), src[0][1].bfloat16().float())
    assert out["ids"].dtype == torch.int64  # integers never cast
    assert s.bytes == (35 + 3) * 2 + 4 * 8


def test_delta_skips_only_unchanged_tensors():
    from megatron_corew.rollout.sglang import stage_sender

    stage_sender.forget("teacher")
    plan = SyncPlan(role="teacher", tag="teacher-1", urls=["http://x"], tp_sizes=[1], bucket_bytes=1 << 20, delta=True)
    a, b = torch.ones(4), torch.zeros(4)
    first = StageSender(plan)
    list(first._wire(iter([("a", a), ("b", b)])))
    stage_sender._LAST_PUSH["teacher"] = ("teacher-1", first._digests)
    plan2 = SyncPlan(
        role="teacher",
        tag="teacher-2",
        urls=["x"],
        tp_sizes=[1],
        bucket_bytes=1 << 20,
        delta=True,
        delta_base="teacher-1",
    )
    second = StageSender(plan2)
    sent = [n for n, _ in second._wire(iter([("a", a + 1e-9), ("b", b + 1)]))]  # 1 + 1e-9 == 1 in fp32
    assert sent == ["b"] and second.skipped == 1 and second.skipped_bytes == 16
    # the engines no longer hold teacher-1 (delta_base None): everything travels
    plan2.delta_base = None
    assert [n for n, _ in StageSender(plan2)._wire(iter([("a", a), ("b", b)]))] == ["a", "b"]
    assert tensor_digest(torch.ones(2)) != tensor_digest(torch.ones(2, dtype=torch.float64))
    stage_sender.forget("teacher")


def test_sync_flags_parse_with_defaults():
    from megatron_corew.rollout.config import RolloutConfig, build_rollout_parser

    cfg = RolloutConfig.from_args(build_rollout_parser().parse_args([]))
    assert (cfg.sync_layout, cfg.sync_delta, cfg.keep_weights) == ("sharded", "off", "auto")
    argv = ["--weight-sync-layout", "funnel", "--weight-sync-delta", "teacher"]
    cfg = RolloutConfig.from_args(build_rollout_parser().parse_args(argv))
    assert (cfg.sync_layout, cfg.sync_delta) == ("funnel", "teacher")


# ============================================================================ real servers
def _reference(model_dir, prompts, n, eos, dtype=torch.float32):
    """transformers greedy ids and their log-probs, one full forward per token (independent of our code)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    out = []
    for p in prompts:
        ids, lps = list(p), []
        for _ in range(n):
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, -1].double()
            lp = torch.log_softmax(logits, -1)
            t = int(lp.argmax())
            ids.append(t)
            lps.append(float(lp[t]))
            if t in eos:
                break
        out.append((ids[len(p) :], lps))
    return out


def _teacher_forced(model_dir, prompt, response, dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([prompt + response])).logits[0].double(), -1)
    return [float(lp[len(prompt) - 1 + j, t]) for j, t in enumerate(response)]


def _run_sync_worker(tmp_path, servers, worker_flags):
    """Start real SGLang servers (``servers``: (name, server args)), run the 4-rank TP=2 x PP=2 weight_sync_worker
    against them (``worker_flags(urls)``: its URL / mode flags), and split the HF names by pipeline stage.
    Returns (bundle, samples path, result, fp32 bytes per name, stage-0 names, stage-1 names)."""
    from helpers import make_tiny_bundle, random_samples, run_python_worker
    from sglang_stubs import write_stubs
    from test_sglang import sglang_status

    from megatron_corew.rollout.sglang import fleet as sf
    from megatron_corew.rollout.sglang import http as sh
    from megatron_corew.rollout.sglang import server as ss

    ok, reason = sglang_status()
    if not ok:
        pytest.skip(reason)
    bundle = make_tiny_bundle(str(tmp_path / "bundle"))
    stubs = write_stubs(str(tmp_path / "stubs"))
    specs = [
        ss.ServerSpec(
            model_path=bundle["model"],
            extra_pythonpath=[stubs],
            log_path=str(tmp_path / f"{name}.log"),
            name=name,
            server_args=args,
        )
        for name, args in servers
    ]
    fleet = sf.LocalFleet(specs, sh.HTTPConfig(), startup_timeout=600).start()
    try:
        spath, out = str(tmp_path / "samples.json"), str(tmp_path / "res.json")
        with open(spath, "w") as f:
            json.dump(random_samples(8, vocab=512, seed=3), f)
        worker = os.path.join(HERE, "workers", "weight_sync_worker.py")
        argv = ["--model", bundle["model"], "--samples", spath, "--out", out, "--tp", "2", "--pp", "2"]
        argv += worker_flags([fleet.url(i) for i in range(len(specs))])
        run_python_worker(worker, argv, nproc=4, timeout=1500)
    finally:
        fleet.shutdown()
    res = json.load(open(out))
    sizes = res["tensor_bytes_fp32"]
    # megatron's rank order is TP fastest, then DP, then PP: ranks 0,1 = stage 0, ranks 2,3 = stage 1
    stage0 = {n for n in sizes if n.startswith("model.embed_tokens") or n.startswith("model.layers.0.")}
    stage1 = set(sizes) - stage0
    assert stage1 and all(n.startswith(("model.layers.1.", "model.norm", "lm_head")) for n in stage1)
    return bundle, spath, res, sizes, stage0, stage1


def _check_served(res, spath, bundle) -> tuple[list[str], float]:
    """What the servers generated equals transformers on the saved export of the trained weights (greedy ids,
    log-probs within 1e-4), and differs from the initial model's (the step really changed the served weights).
    Returns the prompts and the worst log-prob difference."""
    samples = json.load(open(spath))
    prompts = [r["prompt"] for r in samples[:4]]
    ref = _reference(res["export"], prompts, 12, [2])
    worst = 0.0
    for g, (ids, lps) in zip(res["served"], ref):
        assert g["tag"] == "policy-2" and g["ids"] == ids, (g["ids"], ids)
        worst = max([worst] + [abs(x - y) for x, y in zip(g["logprobs"], lps)])
    assert worst < 1e-4, worst
    moved = max(
        abs(x - y)
        for g, p in zip(res["served"], prompts)
        for x, y in zip(g["logprobs"], _teacher_forced(bundle["model"], p, g["ids"], torch.float32))
    )
    assert moved > 1e-3, moved
    return prompts, worst


@pytest.mark.sglang
def test_sharded_sync_tp2_pp2_into_real_servers(tmp_path):
    bundle, spath, res, sizes, stage0, stage1 = _run_sync_worker(
        tmp_path,
        [("policy0", []), ("policy1", []), ("teacher", ["--dtype", "bfloat16"])],
        lambda urls: ["--policy-urls", urls[0], urls[1], "--teacher-url", urls[2]],
    )
    rows = {r["rank"]: r for r in res["policy_sharded"]["per_rank"]}
    assert set(rows[0]["names"]) == stage0 and set(rows[2]["names"]) == stage1, (rows[0]["names"], rows[2]["names"])
    assert rows[0]["bytes"] == sum(sizes[n] for n in stage0) and rows[2]["bytes"] == sum(sizes[n] for n in stage1)
    assert rows[1]["bytes"] == rows[3]["bytes"] == 0
    total = sum(sizes.values())
    assert res["policy_sharded"]["bytes"] == total and res["policy_wire_dtype"] == "float32"
    funnel = {r["rank"]: r for r in res["policy_funnel"]["per_rank"]}
    assert res["policy_funnel"]["layout"] == "funnel" and funnel[0]["bytes"] == total
    assert funnel[2]["p2p_bytes"] == rows[2]["bytes"]  # stage 1 went to rank 0 first
    # the fp32 EMA teacher travelled in the bf16 engine's dtype: half the bytes
    assert res["teacher_wire_dtype"] == "bfloat16" and res["teacher_full"]["layout"] == "sharded"
    assert res["teacher_full"]["bytes"] * 2 == total
    delta = res["teacher_delta"]
    assert delta["bytes"] + delta["skipped_bytes"] == total // 2
    print(f"teacher push at alpha 1e-2 (bf16): full {total // 2} B, delta sent {delta['bytes']} B")

    prompts, _ = _check_served(res, spath, bundle)
    # the bf16 teacher server: teacher-forced log-probs of its own tokens under transformers in bf16
    tworst = max(
        abs(x - y)
        for g, p in zip(res["teacher_served"], prompts)
        for x, y in zip(g["logprobs"], _teacher_forced(res["teacher_export"], p, g["ids"], torch.bfloat16))
    )
    assert all(g["tag"] == "teacher-2" for g in res["teacher_served"]) and tworst < 5e-2, tworst


@pytest.mark.sglang
def test_sharded_distributed_sync_tp2_pp2_into_real_servers(tmp_path):
    """``--sglang-weight-sync distributed`` (gloo): each stage sender broadcasts on its own groups with the two
    servers (which also keep rank 0's funnel group); rank 0 sent only stage 0's tensors; served = transformers."""
    bundle, spath, res, sizes, stage0, stage1 = _run_sync_worker(
        tmp_path,
        [("policy0", []), ("policy1", [])],
        lambda urls: ["--policy-urls", urls[0], urls[1], "--weight-sync", "distributed"],
    )
    total = sum(sizes.values())
    for key in ("policy_step1", "policy_sharded"):  # the second push reuses the groups of the first
        assert res[key]["layout"] == "sharded", res[key]["layout"]
        rows = {r["rank"]: r for r in res[key]["per_rank"]}
        assert set(rows[0]["names"]) == stage0 and set(rows[2]["names"]) == stage1
        assert rows[0]["bytes"] == sum(sizes[n] for n in stage0) and rows[2]["bytes"] == sum(sizes[n] for n in stage1)
        assert rows[1]["bytes"] == rows[3]["bytes"] == 0 and res[key]["bytes"] == total
        assert all(r["p2p_bytes"] == 0 for r in rows.values())  # nothing went through rank 0
    funnel = {r["rank"]: r for r in res["policy_funnel"]["per_rank"]}
    assert res["policy_funnel"]["layout"] == "funnel" and funnel[0]["bytes"] == total
    assert funnel[2]["p2p_bytes"] == sum(sizes[n] for n in stage1)
    # each server formed three groups (stage 0's, stage 1's, rank 0's funnel group) and held them at once: the
    # second sharded push reused the stage groups (SGLang's own log lines)
    for n in ("policy0", "policy1"):
        assert open(tmp_path / f"{n}.log").read().count("init custom process group") == 3, n
    _, worst = _check_served(res, spath, bundle)
    print(f"distributed sharded: rank 0 sent {rows[0]['bytes']} B, stage 1 {rows[2]['bytes']} B, worst |dlogp| {worst}")


def test_step_metrics_name_both_roles_and_zero_when_not_pushed():
    from megatron_corew.policy.weight_push import metrics

    got = metrics({"policy": {"seconds": 1.5, "bytes": 10}, "anchor": None})
    assert got == {
        "perf/weight_sync_policy_s": 1.5,
        "perf/weight_sync_policy_bytes": 10,
        "perf/weight_sync_teacher_s": 0.0,
        "perf/weight_sync_teacher_bytes": 0,
    }
    assert metrics({"policy": None}) == {"perf/weight_sync_policy_s": 0.0, "perf/weight_sync_policy_bytes": 0}
