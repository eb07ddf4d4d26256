"""Accuracy and speed of our answer equivalence against math-verify and the reference normalisation.

Scores the labelled pairs in ``benchmarks/answer_pairs/*.jsonl`` (public test-suite cases plus seeded templates with
exact labels, see that folder's README) with ``answers_equivalent`` (caches cleared first, so the time is cold work),
math-verify (in the main thread, as it uses signals for its own time limits) and ``is_equiv_reference`` (the
Hendrycks MATH normalisation and string equality), all in this process, and prints accuracy, false positives,
false negatives and pairs/s side by side, per category, and every pair we get wrong.

    python benchmarks/bench_grader.py                       # all pairs; table to stdout
    python benchmarks/bench_grader.py --save benchmarks/results/grader.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from megatron_corew.rewards.grading import answers_equivalent, clear_caches, is_equiv_reference

PAIRS_DIR = Path(__file__).with_name("answer_pairs")


def load_pairs(directory: Path = PAIRS_DIR) -> list[dict]:
    """Every labelled pair of the ``*.jsonl`` files in ``directory``; a malformed row is one clear error."""
    rows = []
    for path in sorted(directory.glob("*.jsonl")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                assert isinstance(row["a"], str) and isinstance(row["b"], str) and isinstance(row["label"], bool)
                row.setdefault("category", "other")
                row["file"] = path.name
            except (ValueError, KeyError, TypeError, AssertionError):
                raise ValueError(f"{path}:{lineno}: expected a JSON object with str a, str b, bool label") from None
            rows.append(row)
    return rows


def _math_verify():
    """math-verify's ``verify(gold, prediction)`` with ``b`` as the gold answer (it is not symmetric)."""
    from math_verify import parse, verify

    for name in ("math_verify", "math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    def judge(a: str, b: str) -> bool:
        try:
            return bool(verify(parse(f"${b}$"), parse(f"${a}$")))
        except Exception:
            return False

    return judge


def _score(got, rows):
    fp = sum(g and not r["label"] for g, r in zip(got, rows))
    fn = sum(r["label"] and not g for g, r in zip(got, rows))
    return (len(rows) - fp - fn) / max(len(rows), 1), fp, fn


def run(rows, graders):
    results = {}
    for name, judge, before in graders:
        if before:
            before()
        start = time.perf_counter()
        got = [judge(r["a"], r["b"]) for r in rows]
        results[name] = (got, time.perf_counter() - start)
    return results


def table(rows, results) -> str:
    names = list(results)
    lines = [f"pairs: {len(rows)} ({sum(r['label'] for r in rows)} equal)", ""]
    lines.append("| grader | accuracy | FP | FN | pairs/s |")
    lines.append("|---|---:|---:|---:|---:|")
    for name in names:
        got, seconds = results[name]
        acc, fp, fn = _score(got, rows)
        lines.append(f"| {name} | {acc:.4f} | {fp} | {fn} | {len(rows) / seconds:,.0f} |")
    ours_s, theirs_s = results[names[0]][1], results.get("math-verify", (None, None))[1]
    if theirs_s:
        lines += ["", f"speed ours / math-verify: {theirs_s / ours_s:,.1f}x (same process)"]
    for key in ("file", "category"):
        groups = defaultdict(list)
        for i, r in enumerate(rows):
            groups[r[key]].append(i)
        lines += ["", f"| {key} | pairs | " + " | ".join(f"{n} acc (FP/FN)" for n in names) + " |"]
        lines.append("|---|---:|" + "---:|" * len(names))
        for group in sorted(groups):
            idx = groups[group]
            sub = [rows[i] for i in idx]
            cells = []
            for name in names:
                acc, fp, fn = _score([results[name][0][i] for i in idx], sub)
                cells.append(f"{acc:.3f} ({fp}/{fn})")
            lines.append(f"| {group} | {len(idx)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=PAIRS_DIR, help="folder of labelled *.jsonl pairs")
    parser.add_argument("--save", type=Path, help="also write the table (markdown) to this file")
    parser.add_argument("--no-math-verify", action="store_true", help="skip math-verify (ours and reference only)")
    args = parser.parse_args(argv)
    try:
        rows = load_pairs(args.pairs)
        if not rows:
            raise ValueError(f"{args.pairs}: no labelled pairs (*.jsonl)")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    graders = [("answers_equivalent (ours)", answers_equivalent, clear_caches)]
    if not args.no_math_verify:
        graders.append(("math-verify", _math_verify(), None))
    graders.append(("is_equiv_reference (MATH strip_string)", is_equiv_reference, None))
    results = run(rows, graders)
    header = (
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    text = header + "\n\n" + table(rows, results)
    print(text)
    ours = results["answers_equivalent (ours)"][0]
    wrong = [(r, g) for r, g in zip(rows, ours) if g != r["label"]]
    print(f"\nours wrong: {len(wrong)}")
    for r, g in wrong:
        print(f"  [{r['category']}] a={r['a']!r} b={r['b']!r} label={r['label']} ours={g}", file=sys.stdout)
    if args.save:
        args.save.write_text(text + "\n")


if __name__ == "__main__":
    main()
