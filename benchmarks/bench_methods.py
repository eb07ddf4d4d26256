"""All six reward methods on the tiny task, same seeds, side by side.

  python benchmarks/bench_methods.py [--steps 40] [--methods gt,corewarding_2] [--seed 1234] [--skip-existing]

Each method runs ``examples/run_tiny.sh`` (same model, data, batch, lr, seed) into
``runs/bench-methods/<method>``; the table shows the held-out (greedy) accuracy curve, its change,
the mean pseudo-label accuracy against ground truth (never used in training except by ``gt``),
the final training reward and the mean KL. Written to ``benchmarks/results/methods_tiny.md`` too.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ["gt", "majority_vote", "self_certainty", "entropy", "corewarding_1", "corewarding_2"]


def run_method(method: str, steps: int, seed: int, out: str, lr: str) -> float:
    env = dict(os.environ, METHOD=method, STEPS=str(steps), OUT=out, LR=lr, SEED=str(seed))
    t0 = time.time()
    proc = subprocess.run(["bash", "examples/run_tiny.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.time() - t0


def summarise(out: str) -> dict:
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    val = [(r["step"], r["val/accuracy"]) for r in rows if "val/accuracy" in r]
    train = [r for r in rows if "train/loss" in r]

    def mean(key):
        xs = [r[key] for r in train if key in r]
        return sum(xs) / len(xs) if xs else None

    return {"curve": val, "delta": val[-1][1] - val[0][1] if val else None, "pseudo": mean("pseudo/label_acc"),
            "reward": train[-1].get("reward/mean") if train else None, "kl": mean("train/kl")}


def fmt(x, pct=False):
    if x is None:
        return "-"
    return f"{x:+.3f}" if pct else f"{x:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--lr", default="1e-4")
    ap.add_argument("--out-root", default=os.path.join(REPO, "runs", "bench-methods"))
    ap.add_argument("--skip-existing", action="store_true")
    args = ap.parse_args()
    results = {}
    for method in args.methods.split(","):
        out = os.path.join(args.out_root, method)
        if not (args.skip_existing and os.path.isfile(os.path.join(out, "result.json"))):
            if os.path.isdir(out):
                import shutil

                shutil.rmtree(out)
            secs = run_method(method, args.steps, args.seed, out, args.lr)
            print(f"{method}: {secs:.0f} s", flush=True)
        results[method] = summarise(out)
    lines = [f"Tiny task, {args.steps} steps, seed {args.seed}, lr {args.lr} (examples/run_tiny.sh settings)", "",
             "| method | held-out accuracy curve (step: acc) | change | mean pseudo-label acc | final reward | mean KL |",
             "|---|---|---|---|---|---|"]
    for m, r in results.items():
        curve = " ".join(f"{s}:{a:.3f}" for s, a in r["curve"])
        lines.append(f"| {m} | {curve} | {fmt(r['delta'], True)} | {fmt(r['pseudo'])} | {fmt(r['reward'])} | "
                     f"{fmt(r['kl'])} |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.join(REPO, "benchmarks", "results"), exist_ok=True)
    with open(os.path.join(REPO, "benchmarks", "results", "methods_tiny.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    sys.exit(main())
