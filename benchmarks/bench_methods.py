"""All six reward methods on the tiny task, same seeds, side by side.

  python benchmarks/bench_methods.py [--steps 40] [--seeds 1234,7] [--methods gt,corewarding_2] [--skip-existing]

Each (method, seed) runs ``examples/run_tiny.sh`` (the README main job's model, data, batch, lr) into
``runs/bench-methods/<method>-s<seed>``. The table shows, per method and seed, the held-out greedy accuracy curve
(ground-truth graded, validation every 10 steps), its change, the final sampled avg@4 and maj@4 (T=1), the mean
pseudo-label accuracy against ground truth (logged only: no method but ``gt`` sees a label in training), the
final training reward and the mean KL. Written to ``benchmarks/results/methods_tiny.md`` too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ["gt", "majority_vote", "self_certainty", "entropy", "corewarding_1", "corewarding_2"]


def run_method(method: str, steps: int, seed: int, out: str, lr: str, val_samples: int) -> float:
    env = dict(
        os.environ, METHOD=method, STEPS=str(steps), OUT=out, LR=lr, SEED=str(seed), VAL_SAMPLES=str(val_samples)
    )
    t0 = time.time()
    proc = subprocess.run(["bash", "examples/run_tiny.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.time() - t0


def summarise(out: str, val_samples: int) -> dict:
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    val = [r for r in rows if "val/accuracy" in r]
    train = [r for r in rows if "train/loss" in r]

    def mean(key):
        xs = [r[key] for r in train if key in r]
        return sum(xs) / len(xs) if xs else None

    last = val[-1] if val else {}
    return {
        "curve": [(r["step"], r["val/accuracy"]) for r in val],
        "delta": val[-1]["val/accuracy"] - val[0]["val/accuracy"] if val else None,
        "avg": last.get(f"val/accuracy_avg@{val_samples}"),
        "maj": last.get(f"val/maj@{val_samples}"),
        "pseudo": mean("pseudo/label_acc"),
        "reward": train[-1].get("reward/mean") if train else None,
        "kl": mean("train/kl"),
    }


def fmt(x, signed=False):
    if x is None:
        return "-"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="1234,7")
    ap.add_argument("--lr", default="1e-4")
    ap.add_argument("--val-samples", type=int, default=4)
    ap.add_argument("--out-root", default=os.path.join(REPO, "runs", "bench-methods"))
    ap.add_argument("--skip-existing", action="store_true")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    for method in args.methods.split(","):
        for seed in seeds:
            out = os.path.join(args.out_root, f"{method}-s{seed}")
            if not (args.skip_existing and os.path.isfile(os.path.join(out, "result.json"))):
                if os.path.isdir(out):
                    shutil.rmtree(out)
                secs = run_method(method, args.steps, seed, out, args.lr, args.val_samples)
                print(f"{method} seed {seed}: {secs:.0f} s", flush=True)
            results[(method, seed)] = summarise(out, args.val_samples)
    k = args.val_samples
    lines = [
        f"Tiny task, {args.steps} steps, lr {args.lr}, seeds {args.seeds} (examples/run_tiny.sh settings); "
        f"held-out = 200 questions, greedy, ground-truth graded",
        "",
        f"| method | seed | held-out greedy accuracy (step: acc) | change | avg@{k} | maj@{k} | "
        "mean pseudo-label acc | final reward | mean KL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (m, seed), r in results.items():
        curve = " ".join(f"{s}:{a:.3f}" for s, a in r["curve"])
        lines.append(
            f"| {m} | {seed} | {curve} | {fmt(r['delta'], True)} | {fmt(r['avg'])} | {fmt(r['maj'])} | "
            f"{fmt(r['pseudo'])} | {fmt(r['reward'])} | {fmt(r['kl'])} |"
        )
    lines += ["", "| method | mean change over seeds |", "|---|---|"]
    for m in dict.fromkeys(m for m, _ in results):
        ds = [results[(m, s)]["delta"] for s in seeds if results[(m, s)]["delta"] is not None]
        lines.append(f"| {m} | {fmt(sum(ds) / len(ds) if ds else None, True)} |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.join(REPO, "benchmarks", "results"), exist_ok=True)
    with open(os.path.join(REPO, "benchmarks", "results", "methods_tiny.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    sys.exit(main())
