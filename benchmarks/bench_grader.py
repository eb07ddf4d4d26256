"""Speed and agreement of our answer equivalence against math-verify.

Builds deterministic (prediction, answer) pairs over many answer shapes, each labelled by
construction as equal / equivalent-in-another-form / wrong, grades them with
``answers_equivalent`` (caches cleared first, so the time is cold work) and with math-verify
(in the main thread, as it uses signals for its own time limits), and prints throughput,
agreement and every disagreement.

    python benchmarks/bench_grader.py            # 3000 pairs
    python benchmarks/bench_grader.py --quick    # 300 pairs
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time

from megatron_corew.rewards.grading import answers_equivalent, clear_caches, is_equiv_reference


def _frac(p: int, q: int) -> str:
    return f"\\frac{{{p}}}{{{q}}}"


def _integer(rng: random.Random):
    n = rng.randint(-999, 9999)
    yield str(n), str(n), True
    yield rng.choice([f"{n}.0", f"{n}.00", f"{n}"]), str(n), True
    yield str(n + rng.choice([-2, -1, 1, 2])), str(n), False


def _big_integer(rng: random.Random):
    n = rng.randint(1000, 999999)
    yield f"{n:,}", str(n), True
    yield f"{n + 1:,}", str(n), False


def _fraction(rng: random.Random):
    q = rng.randint(2, 40)
    p = rng.randint(1, 3 * q)
    while math.gcd(p, q) != 1:
        p += 1
    k = rng.randint(2, 5)
    yield _frac(p, q), _frac(p, q), True
    yield rng.choice([f"{p}/{q}", f"\\dfrac{{{p}}}{{{q}}}", _frac(k * p, k * q)]), _frac(p, q), True
    yield rng.choice([_frac(p, q + 1), _frac(q, p) if p != q else _frac(p + 1, q), f"{p}/{q + 1}"]), _frac(p, q), False
    yield f"-{_frac(p, q)}", _frac(-p, q), True


def _decimal(rng: random.Random):
    q = rng.choice([2, 4, 5, 8, 10, 20, 25])
    p = rng.randint(1, 4 * q)
    while math.gcd(p, q) != 1:
        p += 1
    value = p / q
    yield f"{value:g}", _frac(p, q), True
    yield f"{value:g}0", f"{value:g}", True
    yield f"{value + 0.01:g}", _frac(p, q), False


def _sqrt(rng: random.Random):
    k, m = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7, 10, 11])
    yield f"{k}\\sqrt{{{m}}}", f"{k}\\sqrt{{{m}}}", True
    yield f"\\sqrt{{{k * k * m}}}", f"{k}\\sqrt{{{m}}}", True
    yield f"\\sqrt{{{k * k * m + 1}}}", f"{k}\\sqrt{{{m}}}", False
    yield f"\\frac{{\\sqrt{{{m}}}}}{{{k}}}", f"\\frac{{1}}{{{k}}}\\sqrt{{{m}}}", True


def _pi(rng: random.Random):
    p, q = rng.randint(1, 11), rng.choice([2, 3, 4, 6, 12])
    yield f"\\frac{{{p}\\pi}}{{{q}}}", f"\\frac{{{p}}}{{{q}}}\\pi", True
    yield f"{p}\\pi/{q}", f"\\frac{{{p}\\pi}}{{{q}}}", True
    yield f"\\frac{{{p + 1}\\pi}}{{{q}}}", f"\\frac{{{p}\\pi}}{{{q}}}", False


def _interval(rng: random.Random):
    a = rng.randint(-20, 10)
    b = a + rng.randint(1, 20)
    left, right = rng.choice("(["), rng.choice(")]")
    gold = f"{left}{a}, {b}{right}"
    yield f"\\left{left}{a},{b}\\right{right}", gold, True
    other_left = "(" if left == "[" else "["
    yield f"{other_left}{a}, {b}{right}", gold, False
    yield f"(-\\infty, {a}]", f"(-\\infty,{a}]", True
    yield f"(-\\infty, {a})\\cup({b}, \\infty)", f"({b},\\infty)\\cup(-\\infty,{a})", True


def _set_tuple(rng: random.Random):
    items = rng.sample(range(-9, 20), 3)
    shuffled = items[:]
    rng.shuffle(shuffled)
    as_list = lambda xs: ", ".join(map(str, xs))  # noqa: E731
    yield f"\\{{{as_list(shuffled)}\\}}", f"\\{{{as_list(items)}\\}}", True
    yield f"\\{{{as_list(items[:2] + [items[2] + 1])}\\}}", f"\\{{{as_list(items)}\\}}", False
    yield f"({items[0]}, {items[1]})", f"({items[0]},{items[1]})", True
    yield f"({items[1]}, {items[0]})", f"({items[0]},{items[1]})", False
    yield as_list(shuffled), as_list(items), True


def _expression(rng: random.Random):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    yield f"{a}x + {b}", f"{b} + {a}x", True
    yield f"x^2 + {2 * a}x + {a * a}", f"(x+{a})^2", True
    yield f"x^2 + {2 * a}x + {a * a + 1}", f"(x+{a})^2", False
    yield f"\\frac{{x}}{{{a}}}", f"\\frac{{1}}{{{a}}}x", True
    yield f"{a}(x - {b})", f"{a}x - {a * b}", True
    yield f"{a}(x - {b})", f"{a}x - {b}", a == 1


def _percent_degree(rng: random.Random):
    n = rng.randint(1, 99)
    yield f"{n}\\%", str(n), True
    yield f"{n}^\\circ", str(n), True
    yield f"{n}\\text{{ cm}}", str(n), True
    yield f"x = {n}", str(n), True


def _edge(rng: random.Random):
    """Forms where graders legitimately differ; the label is the exact-math answer."""
    k, p, q = rng.randint(1, 9), rng.randint(1, 2), rng.choice([3, 7, 9])
    yield f"{p / q:.6f}", _frac(p, q), False  # rounded decimal of a repeating fraction
    yield f"{k}\\frac{{{p}}}{{{q}}}", _frac(k * q + p, q), True  # mixed number
    m, e = rng.randint(1, 9), rng.randint(2, 6)
    yield f"{m}e{e}", str(m * 10**e), True  # plain scientific notation
    yield f"{m}\\times 10^{{{e}}}", str(m * 10**e), True
    a, b = rng.randint(-5, 5), rng.randint(6, 12)
    yield f"x \\in [{a}, {b}]", f"[{a},{b}]", True
    yield f"\\begin{{pmatrix}} {a} \\\\ {b} \\end{{pmatrix}}", f"\\begin{{pmatrix}}{a}\\\\{b}\\end{{pmatrix}}", True
    yield f"\\log_{{2}} {2**e}", str(e), True


GENERATORS = (
    _integer,
    _big_integer,
    _fraction,
    _decimal,
    _sqrt,
    _pi,
    _interval,
    _set_tuple,
    _expression,
    _percent_degree,
    _edge,
)


def build_pairs(n: int, seed: int = 0) -> list[tuple[str, str, bool]]:
    """``n`` distinct (prediction, answer, equivalent-by-construction) triples, deterministic."""
    rng = random.Random(seed)
    pairs, seen = [], set()
    while len(pairs) < n:
        for generator in GENERATORS:
            for pred, gold, label in generator(rng):
                if (pred, gold) not in seen:
                    seen.add((pred, gold))
                    pairs.append((pred, gold, label))
    return pairs[:n]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="number of pairs")
    parser.add_argument("--quick", action="store_true", help="300 pairs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = 300 if args.quick else args.n

    from math_verify import parse, verify

    for name in ("math_verify", "math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    pairs = build_pairs(n, args.seed)

    clear_caches()
    start = time.perf_counter()
    ours = [answers_equivalent(pred, gold) for pred, gold, _ in pairs]
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    reference = [is_equiv_reference(pred, gold) for pred, gold, _ in pairs]
    reference_s = time.perf_counter() - start

    start = time.perf_counter()
    theirs = []
    for pred, gold, _ in pairs:
        try:
            theirs.append(bool(verify(parse(f"${gold}$"), parse(f"${pred}$"))))
        except Exception:
            theirs.append(False)
    theirs_s = time.perf_counter() - start

    labels = [label for _, _, label in pairs]
    accuracy = lambda got: sum(g == label for g, label in zip(got, labels)) / n  # noqa: E731
    agreement = sum(a == b for a, b in zip(ours, theirs)) / n
    rows = [
        ("grader", "pairs/s", "us/pair", "acc vs construction label"),
        ("answers_equivalent (ours)", f"{n / ours_s:,.0f}", f"{ours_s / n * 1e6:,.1f}", f"{accuracy(ours):.4f}"),
        ("math-verify", f"{n / theirs_s:,.0f}", f"{theirs_s / n * 1e6:,.1f}", f"{accuracy(theirs):.4f}"),
        (
            "is_equiv_reference (verl)",
            f"{n / reference_s:,.0f}",
            f"{reference_s / n * 1e6:,.1f}",
            f"{accuracy(reference):.4f}",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"pairs: {n} (seed {args.seed}; {sum(labels)} equivalent by construction)")
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"speed ratio ours / math-verify: {theirs_s / ours_s:,.1f}x")
    print(f"agreement ours vs math-verify: {agreement:.4f}")
    disagreements = [(p, g, label, o, t) for (p, g, label), o, t in zip(pairs, ours, theirs) if o != t]
    print(f"disagreements: {len(disagreements)}")
    for pred, gold, label, o, t in disagreements:
        print(f"  pred={pred!r:32} answer={gold!r:28} ours={o!s:5} math-verify={t!s:5} label={label}")


if __name__ == "__main__":
    main()
