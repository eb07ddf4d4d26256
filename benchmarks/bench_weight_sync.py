"""Weight sync: the funnel through global rank 0 (the old path) vs the sharded path, side by side in one run.

A random-init model of a real shape (Qwen2.5-0.5B by default; no download) at PP=2 (torchrun, gloo on CPU, NCCL on
GPU) pushes its policy and its EMA teacher into real SGLang servers started here (``--dtype bfloat16``: the engine
dtype of a GPU run). Rows:

* ``funnel (old)``: every tensor through rank 0, sent as the trainer holds it (fp32) (the old path);
* ``funnel + cast``: the same, cast to the engine dtype first;
* ``sharded``: each stage's sender pushes its own stage, cast to the engine dtype;
* ``sharded + delta`` (teacher only): after one emulated optimizer step (every element moved by lr, as Adam's
  first step does) and an EMA update at ``--alpha``, only tensors whose bf16 bytes changed travel.

Seconds and bytes per role and per rank; ``benchmarks/results/weight_sync_<cpu|gpu>.md``. docs/WEIGHT_SYNC.md.

    python benchmarks/bench_weight_sync.py                       # CPU: 0.5B shape, PP=2, one server
    python benchmarks/bench_weight_sync.py --shape qwen2.5-1.5b  # GPU (tools/gpu_session.sh)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHAPES = {  # the models' config.json shapes (random weights)
    "qwen2.5-0.5b": dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2
    ),
    "qwen2.5-1.5b": dict(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2
    ),
}


def make_model(path: str, shape: str, layers: int | None) -> str:
    """Config plus random bf16 weights (the servers load them at start; the trainer starts from its own init)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    if os.path.exists(os.path.join(path, "config.json")):
        return path
    dims = dict(SHAPES[shape])
    if layers:
        dims["num_hidden_layers"] = layers
    cfg = Qwen2Config(vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=4096, eos_token_id=2, **dims)
    cfg.architectures = ["Qwen2ForCausalLM"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(path)
    return path


def worker(a) -> None:
    """One torchrun rank: build the trainer, push each row's layout/role, write rank 0's rows."""
    import torch

    from checkpoints_conversion.config import load_model_args
    from megatron_corew.policy import parallel
    from megatron_corew.policy.trainer import PolicyTrainer, TrainerConfig
    from megatron_corew.rollout.sglang.engine import SGLangEngine
    from megatron_corew.rollout.sglang.fleet import AttachedFleet
    from megatron_corew.rollout.sglang.http import HTTPConfig

    parallel.init_distributed(1, a.pp)
    args = load_model_args(a.model)
    cfg = TrainerConfig(tp=1, pp=a.pp, micro_batch_size=1, lr=1e-6, train_iters=1, need_anchor=True)
    cfg.bf16 = parallel.device().type == "cuda"
    trainer = PolicyTrainer(args, cfg, hf_source=False)
    engines = {}
    if parallel.is_rank0():
        http = HTTPConfig(sync_timeout=1800)
        for role in ("policy", "teacher"):
            engines[role] = SGLangEngine(
                AttachedFleet(a.urls, http),
                model_path=a.model,
                eos_token_ids=[2],
                role=role,
                weight_sync="tensor",
                bucket_bytes=int(a.bucket_mb * (1 << 20)),
                delta=role == "teacher",
            )
    rows = []

    def run(label, which, layout, cast=True):
        eng = engines.get("policy" if which == "policy" else "teacher")
        if eng is not None:
            eng.layout = layout
            eng._engine_dtype = a.engine_dtype if cast else "auto"  # auto: sent as the trainer holds it (old path)
        res = trainer.push_weights(eng, len(rows) + 1, which=which)
        rows.append({"label": label, "role": "policy" if which == "policy" else "teacher", **res})

    for which in ("policy", "anchor"):  # warm-up (not recorded): first-push costs of the server and shared memory
        trainer.push_weights(engines.get("policy" if which == "policy" else "teacher"), 0, which=which)
    for _ in range(a.repeats):
        for which in ("policy", "anchor"):
            run("funnel (old)", which, "funnel", cast=False)
            run("funnel + cast", which, "funnel")
            run("sharded", which, "sharded")
    # delta: the last sharded teacher push is the base; one emulated Adam first step (|update| = lr everywhere), EMA at alpha, delta push
    from megatron_corew.policy.weights import stage_tensors

    before = {n: t.clone() for n, t in stage_tensors(trainer.anchor, args, torch.bfloat16)}
    g = torch.Generator(device=parallel.device()).manual_seed(1 + parallel.rank())
    with torch.no_grad():
        for p in trainer.model.module.parameters():
            p.add_(torch.randn(p.shape, generator=g, device=p.device).sign() * cfg.lr)
    trainer.ema_update_anchor(a.alpha)
    changed = [0, 0, 0, 0]  # bf16 elements changed, elements, tensors changed, tensors
    for n, t in stage_tensors(trainer.anchor, args, torch.bfloat16):
        diff = int((t.view(torch.int16) != before[n].view(torch.int16)).sum())
        changed = [changed[0] + diff, changed[1] + t.numel(), changed[2] + (diff > 0), changed[3] + 1]
    run(f"sharded + delta (alpha {a.alpha:g})", "anchor", "sharded")
    parts = [None] * parallel.world_size()
    torch.distributed.all_gather_object(parts, changed)
    rows[-1]["changed"] = [sum(p[i] for p in parts) for i in range(4)]
    if parallel.is_rank0():
        with open(a.out, "w") as f:
            json.dump({"rows": rows, "world": parallel.world_size()}, f)
    parallel.destroy_distributed()


def table(rows: list[dict]) -> str:
    """Median seconds per (label, role) over repeats; bytes; per-rank bytes (to engines / p2p to rank 0)."""
    import statistics

    out = [
        "| layout | role | seconds | bytes to engines | per rank: bytes to engines (p2p to rank 0) |",
        "|---" * 5 + "|",
    ]
    seen: dict = {}
    for r in rows:
        seen.setdefault((r["label"], r["role"]), []).append(r)
    for (label, role), rs in seen.items():
        secs = statistics.median(r["seconds"] for r in rs)
        per = ", ".join(
            f"r{p['rank']} {p['bytes'] / 2**20:.0f} MiB"
            + (f" ({p['p2p_bytes'] / 2**20:.0f})" if p["p2p_bytes"] else "")
            for p in rs[-1]["per_rank"]
        )
        skipped, changed = rs[-1].get("skipped_bytes", 0), rs[-1].get("changed")
        note = f" (skipped {skipped / 2**10:.1f} KiB of unchanged tensors)" if "delta" in label else ""
        if changed:
            note += (
                f"; bf16 elements changed by the EMA step: {100 * changed[0] / changed[1]:.2f}%, tensors with any "
                f"change: {changed[2]}/{changed[3]}"
            )
        out.append(f"| {label} | {role} | {secs:.2f} | {rs[-1]['bytes'] / 2**20:.0f} MiB{note} | {per} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    ap.add_argument("--layers", type=int, default=None, help="override the shape's layer count (smaller runs)")
    ap.add_argument("--pp", type=int, default=2)
    ap.add_argument("--engines", type=int, default=1, help="SGLang servers to start (each receives every push)")
    ap.add_argument("--bucket-mb", type=float, default=512)
    ap.add_argument("--alpha", type=float, default=1e-2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--engine",
        choices=["auto", "sglang", "fake"],
        default="auto",
        help="receiving servers: real SGLang (auto: when the SGLang interpreter imports it) or the fake HTTP "
        "endpoint of tests/sglang_stubs.py (same API, transformers behind it)",
    )
    ap.add_argument("--engine-dtype", default="bfloat16", help=argparse.SUPPRESS)
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--results", default=None, help="markdown output (default benchmarks/results/weight_sync_DEV.md)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--render", default=None, help="only re-render the table of a previous run's --json rows")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--urls", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    import torch

    sys.path.insert(0, REPO)
    from megatron_corew.rollout.sglang import fleet as sf
    from megatron_corew.rollout.sglang import http as sh
    from megatron_corew.rollout.sglang import server as ss
    from megatron_corew.rollout.sglang.http import free_port

    gpu = torch.cuda.is_available()
    if a.render:
        return write_results(a, json.load(open(a.render))["rows"], gpu, "sglang", "(re-rendered from a saved run)")
    work = a.work_dir or tempfile.mkdtemp(prefix="bench_wsync_")
    model = make_model(os.path.join(work, f"{a.shape}-{a.layers or 'full'}"), a.shape, a.layers)
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from sglang_stubs import write_fake_sglang, write_stubs

    engine, python, stubs = a.engine, ss.default_sglang_python(), []
    if engine == "auto":
        probe = subprocess.run([python, "-c", "import sglang.srt"], capture_output=True)
        engine = "sglang" if probe.returncode == 0 else "fake"
    if engine == "fake":
        python, stubs = sys.executable, [write_fake_sglang(os.path.join(work, "fake"))]
    elif not gpu:
        stubs = [write_stubs(os.path.join(work, "stubs"))]
    specs = [
        ss.ServerSpec(
            model_path=model,
            python=python,
            device="cuda" if gpu else "cpu",
            extra_pythonpath=stubs,
            log_path=os.path.join(work, f"engine{i}.log"),
            name=f"bench-engine{i}",
            server_args=["--dtype", "bfloat16", "--max-total-tokens", "4096"]
            + (["--base-gpu-id", "0", "--mem-fraction-static", "0.3"] if gpu else []),
        )
        for i in range(a.engines)
    ]
    fleet = sf.LocalFleet(specs, sh.HTTPConfig(), startup_timeout=900).start()
    out = a.json or os.path.join(work, "rows.json")
    try:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(a.pp),
            "--master_port",
            str(free_port()),
        ]
        cmd += [os.path.abspath(__file__), "--worker", "--model", model, "--out", out, "--pp", str(a.pp)]
        cmd += ["--urls", *[fleet.url(i) for i in range(a.engines)], "--alpha", str(a.alpha)]
        cmd += ["--bucket-mb", str(a.bucket_mb), "--repeats", str(a.repeats), "--engine-dtype", a.engine_dtype]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
        subprocess.run(cmd, check=True, env=env, cwd=REPO)
    finally:
        fleet.shutdown()
    rows = json.load(open(out))["rows"]
    write_results(a, rows, gpu, engine, f"load average {os.getloadavg()[0]:.1f} at the end")


def summary(rows: list[dict]) -> str:
    """Sharded vs the old funnel, per role: time and bytes ratios (first repeat's bytes, median seconds)."""
    import statistics

    def pick(label, role):
        rs = [r for r in rows if r["label"] == label and r["role"] == role]
        return (statistics.median(r["seconds"] for r in rs), rs[-1]["bytes"]) if rs else None

    lines = []
    for role in ("policy", "teacher"):
        old, new = pick("funnel (old)", role), pick("sharded", role)
        if old and new:
            lines.append(
                f"- {role}: sharded {new[0]:.2f} s vs funnel (old) {old[0]:.2f} s ({old[0] / max(new[0], 1e-9):.1f}x), "
                f"{new[1] / old[1]:.2f}x the bytes; rank 0 sends "
                f"{[p for p in rows if p['label'] == 'sharded' and p['role'] == role][-1]['per_rank'][0]['bytes'] / new[1]:.0%}"
                f" of the image instead of all of it"
            )
    return "\n".join(lines)


def write_results(a, rows, gpu, engine, when: str) -> None:
    import torch

    device = torch.cuda.get_device_name(0) if gpu else f"CPU ({platform.processor() or platform.machine()})"
    head = (
        f"# Weight sync: funnel vs sharded ({a.shape}{f', {a.layers} layers' if a.layers else ''}, PP={a.pp}, "
        f"{'NCCL' if gpu else 'gloo'}, {a.engines} "
        f"{'real SGLang server(s)' if engine == 'sglang' else 'FAKE receiving endpoint(s) (no SGLang here)'}"
        f", bf16 engine)\n\n"
        f"{device}, {os.cpu_count()} cores (shared with other jobs: {when}), {datetime.date.today()}; "
        f"`python benchmarks/bench_weight_sync.py {' '.join(sys.argv[1:])}`. Trainer weights are fp32"
        f"{' (bf16 params on GPU)' if gpu else ''}; bucket {a.bucket_mb:g} MiB; seconds are one push as rank 0 "
        f"sees it (median of {a.repeats}).\n\n"
    )
    text = head + table(rows) + "\n\n" + summary(rows) + "\n\n" + NOTES
    print(text)
    path = a.results or os.path.join(HERE, "results", f"weight_sync_{'gpu' if gpu else 'cpu'}.md")
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")


NOTES = """Reading the rows:
- the bytes halve because the fp32 copies are cast to the engine's bf16 before they travel (both layouts now);
  the sharded layout also takes the stage-1 tensors off rank 0 (no point-to-point hop, no serial turn-taking);
- seconds on this CPU are dominated by the server's load into its parameters and by other jobs on the two cores,
  so single pushes are noisy; bytes are exact;
- delta sync is tensor-granular (SGLang loads whole parameters by name): an EMA step at alpha 1e-2 changes a
  small fraction of the bf16 elements, but almost every tensor has at least one changed element, so the delta push
  sends nearly everything. Only a sub-tensor patch on the engine side would turn the element fraction into bytes.
"""


if __name__ == "__main__":
    main()
