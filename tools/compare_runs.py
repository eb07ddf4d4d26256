"""Are two training runs the same run? Every non-timing metric of ``metrics.jsonl`` and every ``--rollout-dump``
file must be identical (exact equality, no tolerance); timings and memory (``perf/*``, ``mem/*``, ``time*``)
are left out. Also reports whether the compared steps carried signal (non-zero reward variance inside a group
and a non-zero policy-gradient norm), without which equality proves little.

    python tools/compare_runs.py RUN_A RUN_B [RUN_A2 RUN_B2 ...]     # exit 0: all pairs identical
    python tools/compare_runs.py ROOT_A ROOT_B        # every run ROOT_A holds against ROOT_B's of that name

``tools/seeded_runs.sh`` makes such roots (every method and generation mode, 3 seeded steps each).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

SKIP_PREFIXES = ("perf/", "mem/", "time")


def _metrics(run: str) -> list[dict]:
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.exists(path):
        raise SystemExit(f"error: {path} does not exist")
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in r.items() if not k.startswith(SKIP_PREFIXES)} for r in rows]


def _dumps(run: str) -> dict[str, list[dict]]:
    folder = os.path.join(run, "rollouts")
    if not os.path.isdir(folder):
        return {}
    out = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            out[name] = [json.loads(line) for line in f if line.strip()]
    return out


def signal(run: str) -> dict:
    """Steps with a non-zero grad norm, and dump files with a group whose rewards differ."""
    grads = [r.get("train/grad_norm", 0.0) for r in _metrics(run) if "train/loss" in r]
    varied = 0
    for rows in _dumps(run).values():
        groups: dict = {}
        for r in rows:
            groups.setdefault((r["view"], r["pair_id"]), set()).add(r["reward"])
        varied += any(len(v) > 1 for v in groups.values())
    return {"steps": len(grads), "nonzero_grad_steps": sum(g > 0 for g in grads), "dumps_with_reward_variance": varied}


def differences(a: str, b: str) -> list[str]:
    out = []
    ma, mb = _metrics(a), _metrics(b)
    if len(ma) != len(mb):
        out.append(f"metrics.jsonl: {len(ma)} rows vs {len(mb)}")
    for i, (ra, rb) in enumerate(zip(ma, mb)):
        for k in sorted(set(ra) | set(rb)):
            if ra.get(k, "<absent>") != rb.get(k, "<absent>"):
                out.append(f"metrics row {i + 1} {k}: {ra.get(k, '<absent>')!r} vs {rb.get(k, '<absent>')!r}")
    da, db = _dumps(a), _dumps(b)
    if sorted(da) != sorted(db):
        out.append(f"rollout dumps: files {sorted(da)} vs {sorted(db)}")
    for name in sorted(set(da) & set(db)):
        if da[name] != db[name]:
            n = next(
                (i for i, (x, y) in enumerate(zip(da[name], db[name])) if x != y), min(len(da[name]), len(db[name]))
            )
            out.append(f"rollouts/{name}: first difference at line {n + 1}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="output directories, in pairs: A B [A2 B2 ...]")
    args = p.parse_args(argv)
    if len(args.runs) % 2:
        p.error("runs come in pairs")
    pairs = []
    for a, b in zip(args.runs[::2], args.runs[1::2]):
        if os.path.exists(os.path.join(a, "metrics.jsonl")) or not os.path.isdir(a):
            pairs.append((a, b))
            continue
        names = sorted(n for n in os.listdir(a) if os.path.exists(os.path.join(a, n, "metrics.jsonl")))
        if not names:
            raise SystemExit(f"error: {a} holds no run (no metrics.jsonl in it or its folders)")
        pairs += [(os.path.join(a, n), os.path.join(b, n)) for n in names]
    failed = 0
    for a, b in pairs:
        diffs = differences(a, b)
        s = signal(a)
        state = "IDENTICAL" if not diffs else f"DIFFERENT ({len(diffs)})"
        print(
            f"{state}: {a} vs {b} | {s['steps']} steps, non-zero grad norm in {s['nonzero_grad_steps']}, "
            f"reward variance in {s['dumps_with_reward_variance']} dump file(s)"
        )
        for d in diffs[:10]:
            print("   " + d)
        failed += bool(diffs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
