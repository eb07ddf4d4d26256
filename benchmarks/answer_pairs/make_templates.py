"""Seeded template pairs whose labels come from exact arithmetic (Fraction), written to templates.jsonl.

Each generator draws random rationals, writes the same value in two notations (label from equality of the
exact values, not from any grader) and a near miss (a changed digit, bracket, sign or element) labelled unequal.

    python benchmarks/answer_pairs/make_templates.py    # rewrites benchmarks/answer_pairs/templates.jsonl
"""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path

SOURCE = "template (seed 0, benchmarks/answer_pairs/make_templates.py)"


def tex(v: Fraction) -> str:
    """LaTeX of a rational: integer or \\frac, minus sign in front."""
    if v.denominator == 1:
        return str(v.numerator)
    sign = "-" if v < 0 else ""
    return f"{sign}\\frac{{{abs(v.numerator)}}}{{{v.denominator}}}"


def rat(rng, lo=-20, hi=20, dens=(1, 2, 3, 4, 5, 6, 7)):
    return Fraction(rng.randint(lo, hi), rng.choice(dens))


def fraction_variant(rng):
    q = rng.randint(2, 30)
    p = rng.randint(1, 50)
    v = Fraction(p, q)
    gold = tex(v)
    yield f"\\cfrac{{{p}}}{{{q}}}", gold, True
    yield f"{{{p} \\over {q}}}", gold, True
    yield f"{p} \\over {q}", gold, True
    yield f"\\dfrac{{{2 * p}}}{{{2 * q}}}", gold, True
    yield f"\\cfrac{{{p}}}{{{q + 1}}}", gold, Fraction(p, q + 1) == v
    yield f"{{{p + 1} \\over {q}}}", gold, False


def relation(rng):
    a = rat(rng)
    t = tex(a)
    yield f"x \\lt {t}", f"x < {t}", True
    yield f"x \\gt {t}", f"{t} < x", True
    yield f"x \\neq {t}", f"x \\ne {t}", True
    yield f"x \\leq {t}", f"{t} \\geq x", True
    yield f"-x > {tex(-a)}", f"x < {t}", True
    yield f"-x \\geq {tex(-a)}", f"x \\leq {t}", True
    yield f"-x < {tex(-a)}", f"x < {t}", False
    yield f"x \\lt {t}", f"x \\leq {t}", False
    yield f"x \\neq {t}", f"x = {t}", False
    b = a + rng.randint(1, 9)
    yield f"{t} \\lt x \\leq {tex(b)}", f"\\left({t}, {tex(b)}\\right]", True
    yield f"{t} \\lt x \\leq {tex(b)}", f"[{t}, {tex(b)}]", False


def word_unit_percent(rng):
    n = rng.randint(1, 999)
    word = rng.choice(["percent", "per cent", "\\text{ percent}", "\\text{percent}", "\\%"])
    yield f"{n} {word}", f"{n}\\%", True
    yield f"{n}{word}", str(n), True
    yield f"{n} {word}", str(n + rng.choice([-1, 1, 10])), False
    unit = rng.choice(["cm", "meters", "square feet", "dollars", "hours", "degrees", "inches", "units", "km", "ways"])
    yield f"{n} {unit}", str(n), True
    yield f"{n}\\text{{ {unit}}}", f"{n} {unit}", True
    yield f"{n} {unit}", str(n * 10), False


def thousands(rng):
    n = rng.randint(1000, 99_999_999)
    groups = f"{n:,}".split(",")
    for sep in (",\\!", ",\\! ", "\\,", "{,}", ",", "\\ "):
        yield sep.join(groups), str(n), True
    m = n + rng.choice([-1, 1, 1000])
    yield ",\\!".join(f"{m:,}".split(",")), str(n), False
    yield "{,}".join(f"{m:,}".split(",")), str(n), False


def named_tuple(rng):
    p, q, r = rat(rng), rat(rng), rat(rng)
    names = rng.choice([("x", "y"), ("a", "b"), ("p", "q"), ("m", "n")])
    pair = f"({tex(p)}, {tex(q)})"
    yield f"({names[0]},{names[1]})=({tex(p)},{tex(q)})", pair, True
    yield f"({names[0]}, {names[1]}) = {pair}", pair, True
    yield f"{names[0]}={tex(p)}, {names[1]}={tex(q)}", f"{tex(p)}, {tex(q)}", True
    yield f"(x,y,z)=({tex(p)},{tex(q)},{tex(r)})", f"({tex(p)},{tex(q)},{tex(r)})", True
    yield f"({names[0]},{names[1]})=({tex(p)},{tex(q)})", f"({tex(q)}, {tex(p)})", p == q
    yield f"({names[0]},{names[1]})=({tex(p)},{tex(q)})", f"({tex(p)}, {tex(q + 1)})", False


def boxed(rng):
    v = rat(rng)
    yield f"\\boxed{{{tex(v)}}}", tex(v), True
    yield f"\\boxed{{x = {tex(v)}}}", tex(v), True
    yield f"\\boxed{{{tex(v + 1)}}}", tex(v), False
    yield f"\\boxed{{\\boxed{{{tex(v)}}}}}", tex(v), True


def repeating_decimal(rng):
    whole = rng.randint(0, 9)
    fixed = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 2)))
    period = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 3)))
    if set(period) <= {"0"} or set(period) == {"9"}:
        period = "3"
    # exact value: whole + 0.fixed + period repeating
    k, m = len(fixed), len(period)
    value = Fraction(whole) + Fraction(int(fixed or "0"), 10**k) + Fraction(int(period), 10**k * (10**m - 1))
    written = f"{whole}.{fixed}\\overline{{{period}}}"
    yield written, tex(value), True
    yield f"{whole}.{fixed}{period}", tex(value), False
    yield f"{whole}.{fixed}{period}{period}", written, False
    yield written, tex(value + Fraction(1, 10 ** (k + m + 1))), False
    yield f"{whole}.{fixed}\\overline{{{period}}}", f"{whole}.{fixed}{period}\\overline{{{period}}}", True


def text_unit(rng):
    n = rat(rng, 1, 500, (1, 1, 1, 2, 4))
    dec = f"{float(n):g}" if (n * 100).denominator == 1 else tex(n)
    unit = rng.choice(["cm", "meters", "dollars", "square units", "km/h", "mph", "kg", "cubic inches"])
    yield f"\\text{{{dec} {unit}}}", tex(n), True
    yield f"\\text{{{dec}}}\\text{{ {unit}}}", dec, True
    yield f"{dec}\\ \\mathrm{{{unit}}}", tex(n), True
    yield f"\\text{{{dec} {unit}}}", tex(n + 1), False


def named_set(rng):
    a = rat(rng)
    yield "\\mathbb{R}", "(-\\infty, \\infty)", True
    yield "\\mathbb{R}", "(-\\infty,+\\infty)", True
    yield "x \\in \\mathbb{R}", "(-\\infty, \\infty)", True
    yield "\\varnothing", "\\emptyset", True
    yield "\\emptyset", "\\{\\}", True
    yield "\\varnothing", "\\text{no solution}", False
    yield "\\mathbb{R}", f"(-\\infty, {tex(a)}) \\cup ({tex(a)}, \\infty)", False
    yield "\\mathbb{R}", f"(-\\infty, {tex(a)}] \\cup ({tex(a)}, \\infty)", True
    yield "\\emptyset", f"\\{{{tex(a)}\\}}", False
    yield "\\mathbb{R}", f"({tex(a)}, \\infty)", False


def interval_union(rng):
    a = rng.randint(-20, 5)
    b = a + rng.randint(1, 8)
    c = b + rng.randint(1, 8)
    d = c + rng.randint(1, 8)
    yield f"({a},{b}] \\cup ({b},{c})", f"({a},{c})", True
    yield f"[{a},{b}] \\cup [{b},{c}]", f"[{a},{c}]", True
    yield f"[{a},{b}) \\cup [{b},{c}]", f"[{a},{c}]", True
    yield f"({a},{c}) \\cup ({b},{d})", f"({a},{d})", True
    yield f"(-\\infty,{b}] \\cup ({b},\\infty)", "(-\\infty,\\infty)", True
    yield f"({a},{b}) \\cup ({b},{c})", f"({a},{c})", False
    yield f"({a},{b}) \\cup ({c},{d})", f"({a},{d})", False
    yield f"({a},{b}] \\cup ({b},{c})", f"({a},{c}]", False
    yield f"({c},{d}) \\cup ({a},{b})", f"({a},{b}) \\cup ({c},{d})", True


def equation(rng):
    a, b, c = rng.randint(1, 9) * rng.choice([-1, 1]), rng.randint(1, 9), rng.randint(-20, 20)
    k = rng.choice([-3, -2, 2, 3, 5])
    yield f"{a}x + {b}y = {c}", f"{k * a}x + {k * b}y = {k * c}", True
    yield f"{a}x + {b}y - {c} = 0", f"{b}y = {c} - {a}x".replace("- -", "+ "), True
    yield f"y = {tex(Fraction(-a, b))}x + {tex(Fraction(c, b))}", f"{a}x + {b}y = {c}", True
    yield f"{a}x + {b}y = {c}", f"{a}x + {b}y = {c + 1}", False
    yield f"{a}x + {b}y = {c}", f"{a}x - {b}y = {c}", False
    r = rng.randint(1, 9)
    yield f"x^2 + y^2 = {r * r}", f"{k}x^2 + {k}y^2 - {k * r * r} = 0", True
    yield (
        f"\\frac{{x^2}}{{{r * r}}} + \\frac{{y^2}}{{{(r + 1) ** 2}}} = 1",
        f"{(r + 1) ** 2}x^2 + {r * r}y^2 = {r * r * (r + 1) ** 2}",
        True,
    )
    yield f"x^2 + y^2 = {r * r}", f"x^2 + y^2 = {r}", r == 1
    p = rng.randint(1, 9)
    yield f"{a}x + {b}y + {p}z = {c}", f"{-a}x - {b}y - {p}z + {c} = 0", True
    yield f"{a}x + {b}y + {p}z = {c}", f"{a}x + {b}y + {p + 1}z = {c}", False


def matrix(rng):
    m = [[rng.randint(-9, 9) for _ in range(2)] for _ in range(2)]
    n = [[rng.randint(-9, 9) for _ in range(2)] for _ in range(2)]
    k = rng.randint(2, 5)

    def pm(rows):
        return "\\begin{pmatrix}" + " \\\\ ".join(" & ".join(map(str, r)) for r in rows) + "\\end{pmatrix}"

    yield f"{k}{pm(m)}", pm([[k * x for x in r] for r in m]), True
    yield f"{pm(m)} + {pm(n)}", pm([[x + y for x, y in zip(r, s)] for r, s in zip(m, n)]), True
    yield f"{pm(m)} - {pm(n)}", pm([[x - y for x, y in zip(r, s)] for r, s in zip(m, n)]), True
    yield (
        f"{k}{pm(m)}",
        pm([[k * x + (1 if i == j == 0 else 0) for j, x in enumerate(r)] for i, r in enumerate(m)]),
        False,
    )
    prod = [[sum(m[i][t] * n[t][j] for t in range(2)) for j in range(2)] for i in range(2)]
    yield f"{pm(m)}{pm(n)}", pm(prod), True
    yield (
        f"{pm(m)} {pm(n)}",
        pm([[prod[j][i] for j in range(2)] for i in range(2)]),
        prod == [list(r) for r in zip(*prod)],
    )
    yield pm(m).replace("pmatrix", "bmatrix"), pm(m), True


def multiset(rng):
    xs = rng.sample(range(-20, 30), 3)
    dup = xs + [xs[0]]
    rng.shuffle(dup)
    yield "\\{" + ", ".join(map(str, dup)) + "\\}", "\\{" + ", ".join(map(str, xs)) + "\\}", True
    yield "\\{" + ", ".join(map(str, xs[:2])) + "\\}", "\\{" + ", ".join(map(str, xs)) + "\\}", False
    yield "\\{" + ", ".join(map(str, xs[:2] + [xs[2] + 1])) + "\\}", "\\{" + ", ".join(map(str, xs)) + "\\}", False
    yield ", ".join(map(str, reversed(xs))), ", ".join(map(str, xs)), True
    yield ", ".join(map(str, xs[:2])), ", ".join(map(str, xs)), False


def lhs_drop(rng):
    v = rat(rng)
    a, c = rng.randint(2, 19), rng.randint(2, 19)
    yield f"x = {tex(v)}", tex(v), True
    yield f"n = {tex(v)}", tex(v), True
    yield f"\\theta = {tex(v)}\\pi", f"{tex(v)}\\pi", True
    yield f"f(x) = {a}x + {c}", f"{a}x+{c}", True
    yield f"a_{{{c}}} = {tex(v)}", tex(v), True
    yield f"{a + c} = {a}a+c", f"{a}a+c", False
    yield f"{a} = x + {c}", f"x + {c}", False
    yield f"2x = {tex(v)}", tex(v), v == 0
    yield f"x + y = {tex(v)}", tex(v), False
    yield f"x = {tex(v)}", tex(v + 1), False


def number(rng):
    v = rat(rng, -500, 500, (1, 2, 4, 5, 8, 10, 3, 7))
    yield tex(v), tex(v), True
    if (v * 1000).denominator == 1:
        yield f"{float(v):g}", tex(v), True
        yield f"{float(v) + 0.001:g}", tex(v), False
    else:
        yield f"{float(v):.4f}", tex(v), False
        yield f"{v.numerator}/{v.denominator}", tex(v), True
    k = rng.randint(2, 6)
    yield f"\\frac{{{k * v.numerator}}}{{{k * v.denominator}}}", tex(v), True
    yield tex(v + Fraction(1, v.denominator)), tex(v), False


def expression(rng):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    yield f"{a}x^2 + {b}x", f"x({a}x+{b})", True
    yield f"(x+{a})(x-{b})", f"x^2 + {a - b}x - {a * b}".replace("+ -", "- "), True
    yield f"(x+{a})(x-{b})", f"x^2 + {a - b}x + {a * b}".replace("+ -", "- "), False
    yield f"{a}\\sqrt{{{b * b * 2}}}", f"{a * b}\\sqrt{{2}}", True
    yield f"{a}\\sqrt{{{b * b * 2 + 1}}}", f"{a * b}\\sqrt{{2}}", False
    yield f"\\frac{{{a}\\pi}}{{{b + 1}}}", f"\\frac{{{a}}}{{{b + 1}}}\\pi", True
    yield f"{a}\\pi", f"{a * 3.14159:.5f}".rstrip("0"), False


GENERATORS = (
    fraction_variant,
    relation,
    word_unit_percent,
    thousands,
    named_tuple,
    boxed,
    repeating_decimal,
    text_unit,
    named_set,
    interval_union,
    equation,
    matrix,
    multiset,
    lhs_drop,
    number,
    expression,
)


def build(rounds: int = 14, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    for _ in range(rounds):
        for gen in GENERATORS:
            for a, b, label in gen(rng):
                key = (a, b)
                if key in seen or (b, a) in seen:
                    continue
                seen.add(key)
                if rng.random() < 0.5:
                    a, b = b, a
                rows.append({"a": a, "b": b, "label": bool(label), "category": gen.__name__, "source": SOURCE})
    return rows


def main() -> None:
    rows = build()
    out = Path(__file__).with_name("templates.jsonl")
    with out.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} pairs -> {out}")


if __name__ == "__main__":
    main()
