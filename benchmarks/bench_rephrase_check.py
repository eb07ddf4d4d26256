"""The rephrasing check on the hand-written realistic sample (benchmarks/rephrase_sample.py) and on the tiny task's
rephrasings: the measurement behind the default distance bounds, side by side in one run.

    python benchmarks/bench_rephrase_check.py

Prints (1) the check's summary table on the sample, (2) per label how many pairs the check got right, (3) the
lexical distance of each kind of pair (faithful rewrites, near copies, unrelated texts, the tiny task's stories),
and the margin the default bounds leave, (4) throughput. Needs champ-dataset and reasoning-gym.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    from rephrase_sample import resolve

    from megatron_corew.data.rephrase_check import CheckConfig, check_pair, summarize, summary_table
    from megatron_corew.demo.tiny_task import generate_problems

    cfg = CheckConfig()
    items = resolve()
    checks = [check_pair(it["original"], it["rewrite"], cfg) for it in items]
    print(f"# rephrase check, {len(items)} hand-written pairs ({platform.node()}, {time.strftime('%Y-%m-%d')})\n")
    print(summary_table(summarize(checks)))

    print("\n| label | pairs | right | what right means |\n|---|---|---|---|")
    rows = defaultdict(lambda: [0, 0])
    for it, c in zip(items, checks):
        label = it["label"]
        right = c.verdict == "kept" if label.startswith("faithful") else it["reason"] in c.reasons
        rows[label][0] += 1
        rows[label][1] += right
    meaning = {
        "faithful": "kept",
        "faithful_hard": "kept (flagged = false positive)",
        "broken": "flagged with the expected reason",
        "broken_hard": "flagged (kept = miss)",
    }
    for label in ("faithful", "faithful_hard", "broken", "broken_hard"):
        n, ok = rows[label]
        print(f"| {label} | {n} | {ok} | {meaning[label]} |")
    misses = [(it, c) for it, c in zip(items, checks) if it["label"].endswith("_hard")]
    for it, c in misses:
        print(f"  {it['label']} {it['source']}: {c.verdict} {c.reasons} {c.details}")

    # the distance of each kind of pair
    kinds = defaultdict(list)
    for it, c in zip(items, checks):
        if it["label"].startswith("faithful"):
            kinds["faithful rewrites (sample)"].append(c.distance)
        elif it["reason"] in ("near_copy", "unrelated"):
            kinds[f"{it['reason']} (sample)"].append(c.distance)
    t0 = time.perf_counter()
    train, val = generate_problems()
    tiny = [check_pair(p.original, p.rephrased, cfg) for p in train + val]
    dt = time.perf_counter() - t0
    kinds["tiny task stories (2200)"] = [c.distance for c in tiny]
    print(
        f"\n| pairs | n | min | median | max |  (bounds: near copy < {cfg.min_distance}, unrelated > {cfg.max_distance})"
    )
    print("|---|---|---|---|---|")
    for name, ds in kinds.items():
        ds = sorted(ds)
        print(f"| {name} | {len(ds)} | {ds[0]:.3f} | {ds[len(ds) // 2]:.3f} | {ds[-1]:.3f} |")
    print(f"\ntiny task stories kept: {sum(c.verdict == 'kept' for c in tiny)} of {len(tiny)}")
    print(f"throughput: {len(tiny) / dt:.0f} pairs/s on one core (tiny task pairs, {dt:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
