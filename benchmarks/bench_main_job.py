"""The README's main job, measured: held-out accuracy before and after, per seed and per CPU kernel set.

    python benchmarks/bench_main_job.py                       # seeds 1234 7 42 x (native kernels, 2 and 1 threads)
    python benchmarks/bench_main_job.py --seeds 1234 --variants native/2 default/2

Why the spread: the tiny task's warm start and the RL run are bit-reproducible for a fixed seed and thread
count on one machine, but another CPU picks other vector kernels (AVX-512, AVX2, generic) or splits sums over
another number of threads, and those round differently; over a warm start and 40 RL steps of sampling that
moves the accuracies a little. This script emulates other machines by variants KERNELS/THREADS (kernels: torch's
``ATEN_CPU_CAPABILITY``, ``native`` = what this CPU picks, ``default`` = generic and slow), builds the tiny task
once per variant (``tools/make_tiny_task.py --threads``), runs ``examples/run_tiny.sh`` for every seed, prints a
table and writes it to ``benchmarks/results/main_job.md`` with the machine and date. The README quotes that file.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACC = re.compile(r"validation accuracy (before|after) training:\s+([0-9.]+)")


def machine() -> str:
    import torch

    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, native kernels {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}"


def env_for(variant: str) -> dict:
    kernel, threads = variant.split("/")
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS=threads)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if kernel != "native":
        env["ATEN_CPU_CAPABILITY"] = kernel
    return env


def build_assets(variant: str, root: str) -> tuple[str, float]:
    out = os.path.join(root, "tiny-" + variant.replace("/", "-"))
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "tools/make_tiny_task.py", "--out", out, "--threads", variant.split("/")[1]],
        cwd=REPO,
        env=env_for(variant),
        check=True,
        capture_output=True,
        text=True,
    )
    return out, time.perf_counter() - t0


def run_main_job(kernel: str, assets: str, seed: int, steps: int, root: str) -> dict:
    out = os.path.join(root, f"run-{kernel.replace('/', '-')}-{seed}")
    env = dict(env_for(kernel), ASSETS=assets, SEED=str(seed), STEPS=str(steps), OUT=out)
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", "examples/run_tiny.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: main job failed (kernel {kernel}, seed {seed}):\n{proc.stderr[-2000:]}")
    acc = dict(ACC.findall(proc.stdout + proc.stderr))
    return {"kernel": kernel, "seed": seed, "before": float(acc["before"]), "after": float(acc["after"]), "s": seconds}


def table(rows: list[dict]) -> list[str]:
    lines = ["| CPU kernels / threads | seed | before | after | change | seconds |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['kernel']} | {r['seed']} | {r['before']:.3f} | {r['after']:.3f} | {r['after'] - r['before']:+.3f} "
            f"| {r['s']:.0f} |"
        )
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1234, 7, 42])
    p.add_argument(
        "--variants",
        nargs="+",
        default=["native/2", "native/1"],
        help="KERNELS/THREADS: ATEN_CPU_CAPABILITY (native = what this CPU picks; default = generic, no vector "
        "kernels, slow) and the thread count of the build and the run",
    )
    p.add_argument("--steps", type=int, default=40)
    p.add_argument(
        "--assets",
        default=None,
        help="a tiny task already built by tools/make_tiny_task.py with the one variant's thread count (skips the "
        "build; one variant only)",
    )
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "main_job.md"))
    a = p.parse_args(argv)

    if a.assets and len(a.variants) != 1:
        raise SystemExit("error: --assets: give exactly one --variants entry (the build's kernels and threads)")
    rows, builds = [], []
    with tempfile.TemporaryDirectory(prefix="bench_main_job_") as root:
        for kernel in a.variants:
            if a.assets:
                assets = os.path.abspath(a.assets)
                builds.append(f"{kernel}: tiny task from {a.assets}")
            else:
                assets, seconds = build_assets(kernel, root)
                builds.append(f"{kernel}: tiny task built in {seconds:.0f} s")
            for seed in a.seeds:
                rows.append(run_main_job(kernel, assets, seed, a.steps, root))
                print("\n".join(table(rows[-1:])[2:]), flush=True)
    befores, afters = [r["before"] for r in rows], [r["after"] for r in rows]
    default_seed = [r for r in rows if r["seed"] == 1234 and r["kernel"] == "native/2"]
    summary = (
        f"before {min(befores):.3f}-{max(befores):.3f}, after {min(afters):.3f}-{max(afters):.3f} "
        f"(mean change {sum(afters) / len(afters) - sum(befores) / len(befores):+.3f}) over {len(rows)} runs"
    )
    text = [
        f"# Main job (`examples/run_tiny.sh`, Co-rewarding-II, {a.steps} steps): `python benchmarks/bench_main_job.py`",
        "",
        f"{datetime.date.today().isoformat()}, {machine()}; {'; '.join(builds)}.",
        "",
        *table(rows),
        "",
        f"Spread: {summary}.",
    ]
    if default_seed:
        text.append(
            "The README's command (seed 1234, 2 threads): "
            + ", ".join(f"{r['kernel']} {r['before']:.3f} -> {r['after']:.3f}" for r in default_seed)
            + "."
        )
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out + ".tmp", "w") as f:
        f.write("\n".join(text) + "\n")
    os.replace(a.out + ".tmp", a.out)
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
