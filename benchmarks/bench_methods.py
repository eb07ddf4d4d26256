"""Every reward method on the tiny task, several seeds, as a table with error bars.

  python benchmarks/bench_methods.py [--steps 40] [--seeds 1234,7,42] [--methods gt,corewarding_3] [--skip-existing]

Each (method, seed) runs ``examples/run_tiny.sh`` (the README main job's model, data, batch, lr) into
``runs/bench-methods/<method>-s<seed>``. Per method, over the seeds, mean +- standard deviation (sample std,
n - 1) of: the held-out greedy accuracy (ground-truth graded, validation every 10 steps) before and after training
and its change; the final sampled avg@k, maj@k and pass@k (T = 1); the mean pseudo-label accuracy against ground
truth (logged only: no method but ``gt`` sees a label in training); the step at which held-out accuracy peaked
and that peak (label-free methods can rise, then fall). A second table lists every seed's curve. Written to
``benchmarks/results/methods_tiny.md`` with the date, the machine and the command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = [
    "gt",
    "majority_vote",
    "self_certainty",
    "entropy",
    "corewarding_1",
    "corewarding_2",
    "corewarding_3",
    "random_reward",
    "semantic_entropy",
    "self_harmony",
]


def run_method(method: str, steps: int, seed: int, out: str, lr: str, val_samples: int, assets: str | None) -> float:
    env = dict(
        os.environ, METHOD=method, STEPS=str(steps), OUT=out, LR=lr, SEED=str(seed), VAL_SAMPLES=str(val_samples)
    )
    if assets:
        env["ASSETS"] = assets
    t0 = time.time()
    proc = subprocess.run(["bash", "examples/run_tiny.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.time() - t0


def summarise(out: str, k: int) -> dict:
    """One run's numbers from its metrics.jsonl."""
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    val = [r for r in rows if "val/accuracy" in r]
    train = [r for r in rows if "train/loss" in r]
    pseudo = [r["pseudo/label_acc"] for r in train if "pseudo/label_acc" in r]
    last = val[-1] if val else {}
    peak = max(val, key=lambda r: (r["val/accuracy"], -r["step"])) if val else {}
    return {
        "curve": [(r["step"], r["val/accuracy"]) for r in val],
        "before": val[0]["val/accuracy"] if val else None,
        "after": last.get("val/accuracy"),
        "change": last["val/accuracy"] - val[0]["val/accuracy"] if val else None,
        "avg": last.get(f"val/accuracy_avg@{k}"),
        "maj": last.get(f"val/maj@{k}"),
        "pass": last.get(f"val/pass@{k}"),
        "pseudo": sum(pseudo) / len(pseudo) if pseudo else None,
        "peak_step": peak.get("step"),
        "peak": peak.get("val/accuracy"),
    }


def mean_std(xs: list, signed: bool = False, digits: int = 3) -> str:
    """``mean +- std`` over the seeds that have the number ("-" when none; no std from a single seed)."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    sign = "+" if signed else ""
    m = f"{statistics.fmean(xs):{sign}.{digits}f}"
    return m if len(xs) < 2 else f"{m} ± {statistics.stdev(xs):.{digits}f}"


def machine() -> str:
    threads = os.environ.get("OMP_NUM_THREADS", "2 (run_tiny.sh default)")
    return f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS {threads}"


def table(results: dict, methods: list[str], seeds: list[int], k: int) -> list[str]:
    keys = ["before", "after", "change", "avg", "maj", "pass", "pseudo", "peak_step", "peak"]
    lines = [
        f"| method | held-out before | after | change | avg@{k} | maj@{k} | pass@{k} | mean pseudo-label acc | "
        "peak step | peak acc |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        col = {key: [results[(m, s)][key] for s in seeds] for key in keys}
        cells = [
            mean_std(col["before"]),
            mean_std(col["after"]),
            mean_std(col["change"], signed=True),
            mean_std(col["avg"]),
            mean_std(col["maj"]),
            mean_std(col["pass"]),
            mean_std(col["pseudo"]),
            mean_std(col["peak_step"], digits=1),
            mean_std(col["peak"]),
        ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="1234,7,42")
    ap.add_argument("--lr", default="1e-4")
    ap.add_argument("--val-samples", type=int, default=4, help="k of avg@k / maj@k / pass@k")
    ap.add_argument("--assets", default=None, help="the tiny task's directory (run_tiny.sh's ASSETS; built if absent)")
    ap.add_argument("--out-root", default=os.path.join(REPO, "runs", "bench-methods"))
    ap.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results", "methods_tiny.md"))
    ap.add_argument("--skip-existing", action="store_true", help="reuse runs that finished (result.json exists)")
    args = ap.parse_args()
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"error: --methods: unknown {', '.join(unknown)} (known: {', '.join(METHODS)})")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"error: --seeds {args.seeds!r} is not a comma-separated list of integers") from None
    results, k = {}, args.val_samples
    for method in methods:
        for seed in seeds:
            out = os.path.join(args.out_root, f"{method}-s{seed}")
            if not (args.skip_existing and os.path.isfile(os.path.join(out, "result.json"))):
                if os.path.isdir(out):
                    shutil.rmtree(out)
                secs = run_method(method, args.steps, seed, out, args.lr, k, args.assets)
                print(f"{method} seed {seed}: {secs:.0f} s", flush=True)
            results[(method, seed)] = summarise(out, k)
    import pyarrow.parquet as pq

    val_file = os.path.join(args.assets or os.path.join(REPO, "assets", "tiny"), "data", "val.parquet")
    n_val = pq.read_metadata(val_file).num_rows
    command = "python benchmarks/bench_methods.py " + " ".join(sys.argv[1:])
    lines = [
        f"Tiny task, {args.steps} steps, lr {args.lr}, seeds {args.seeds} (examples/run_tiny.sh settings); held-out = "
        f"{n_val} questions, greedy, ground-truth graded; mean ± std over {len(seeds)} seed(s).",
        f"Measured {datetime.date.today().isoformat()} on {machine()} with `{command.strip()}`.",
        "",
        *table(results, methods, seeds, k),
        "",
        "| method | seed | held-out greedy accuracy (step: acc) |",
        "|---|---|---|",
    ]
    for (m, seed), r in results.items():
        lines.append(f"| {m} | {seed} | " + " ".join(f"{s}:{a:.3f}" for s, a in r["curve"]) + " |")
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
