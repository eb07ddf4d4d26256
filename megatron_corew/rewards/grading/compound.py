"""Answers that are computed from parts: unions of intervals (merged to disjoint intervals) and matrix expressions
(scalar multiples, sums, differences and products of explicit matrices, evaluated with exact rationals).

Both reduce an answer to one canonical value so that ``(1,3] \\cup (3,5)`` equals ``(1,5)`` and
``2\\begin{pmatrix}1&2\\end{pmatrix}`` equals ``\\begin{pmatrix}2&4\\end{pmatrix}``.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from megatron_corew.rewards.grading.latex import ExprParser, ParseError
from megatron_corew.rewards.grading.values import exact_value, real_number

__all__ = ["as_intervals", "same_intervals", "matrix_expression"]

_INTERVAL_BRACKETS = frozenset(("()", "[]", "(]", "[)"))
_MAX_PIECES = 32


def _endpoint(value):
    return real_number(value[1]) if value[0] == "expr" else None


def as_intervals(value):
    """Disjoint sorted ``(lo, lo_closed, hi, hi_closed)`` covering ``value`` (an interval, a point set or a union of
    them), or None when ``value`` is not such a set."""
    kind = value[0]
    if kind == "seq":
        if value[1] not in _INTERVAL_BRACKETS or len(value[2]) != 2:
            return None
        lo, hi = _endpoint(value[2][0]), _endpoint(value[2][1])
        if lo is None or hi is None or lo > hi:
            return None
        return [(lo, value[1][0] == "[", hi, value[1][1] == "]")]
    if kind == "set_of" and len(value[1]) <= _MAX_PIECES:
        points = [_endpoint(item) for item in value[1]]
        if any(p is None or abs(p) == float("inf") for p in points):
            return None
        return _merge([(p, True, p, True) for p in points])
    if kind == "union" and len(value[1]) <= _MAX_PIECES:
        pieces = []
        for item in value[1]:
            part = as_intervals(item)
            if part is None:
                return None
            pieces.extend(part)
        return _merge(pieces)
    return None


def _merge(pieces):
    pieces = sorted(pieces, key=lambda p: (p[0], not p[1]))
    merged = []
    for lo, lo_closed, hi, hi_closed in pieces:
        if merged:
            last = merged[-1]
            touching = lo < last[2] or (lo == last[2] and (last[3] or lo_closed))
            if touching:
                if hi > last[2] or (hi == last[2] and hi_closed):
                    merged[-1] = (last[0], last[1], hi, hi_closed or (hi == last[2] and last[3]))
                continue
        merged.append((lo, lo_closed, hi, hi_closed))
    return merged


def _same_number(x, y) -> bool:
    if isinstance(x, Fraction) and isinstance(y, Fraction):
        return x == y
    if x == y:
        return True
    if math.isinf(x) or math.isinf(y):  # the tolerance below would call -16 and -inf equal
        return False
    return abs(x - y) <= 1e-9 * max(abs(x), abs(y), 1.0)


def same_intervals(xs, ys) -> bool:
    return len(xs) == len(ys) and all(
        _same_number(a[0], b[0]) and a[1] == b[1] and _same_number(a[2], b[2]) and a[3] == b[3] for a, b in zip(xs, ys)
    )


# -- matrix expressions -----------------------------------------------------------------------------------
_RE_MATRIX_BLOCK = re.compile(r"\\begin\{([pbvB]?matrix)\}(.*?)\\end\{\1\}", re.S)
_MAX_CELLS = 64


def _matrix_cells(body: str):
    rows = [row for row in re.split(r"\\\\", body) if row.strip()]
    cells = []
    for row in rows:
        values = []
        for cell in row.split("&"):
            try:
                value = exact_value(ExprParser(cell).parse())
            except (ParseError, RecursionError, ValueError, ZeroDivisionError):
                return None
            if value is None:
                return None
            values.append(value)
        cells.append(values)
    if not cells or any(len(r) != len(cells[0]) for r in cells) or len(cells) * len(cells[0]) > _MAX_CELLS:
        return None
    return cells


def _scalar(text: str):
    text = text.strip()
    if not text:
        return Fraction(1)
    if text == "-":
        return Fraction(-1)
    try:
        return exact_value(ExprParser(text.rstrip("*")).parse())
    except (ParseError, RecursionError, ValueError, ZeroDivisionError):
        return None


def _product(a, b):
    if len(a[0]) != len(b):
        return None
    return [
        [sum((a[i][t] * b[t][j] for t in range(len(b))), Fraction(0)) for j in range(len(b[0]))] for i in range(len(a))
    ]


def matrix_expression(s: str):
    """Exact rational cells of ``s`` when it is a sum / difference of terms ``[scalar] M M ...`` of explicit
    matrices; None otherwise (symbolic cells, mismatched shapes, anything between the matrices but + - and a
    scalar)."""
    blocks = list(_RE_MATRIX_BLOCK.finditer(s))
    if not blocks or len(blocks) > 8:
        return None
    total, term, sign, pos = None, None, Fraction(1), 0
    for block in blocks:
        between = s[pos : block.start()].strip()
        pos = block.end()
        cells = _matrix_cells(block.group(2))
        if cells is None:
            return None
        if term is not None and between == "":
            term = _product(term, cells)
            if term is None:
                return None
            continue
        if term is not None:
            if between[0] not in "+-":
                return None
            total = _add(total, term, sign)
            if total is None:
                return None
            sign, between = Fraction(1 if between[0] == "+" else -1), between[1:]
        factor = _scalar(between)
        if factor is None:
            return None
        term = [[factor * c for c in row] for row in cells]
    if s[pos:].strip():
        return None
    return _add(total, term, sign)


def _add(total, term, sign):
    term = [[sign * c for c in row] for row in term]
    if total is None:
        return term
    if len(total) != len(term) or len(total[0]) != len(term[0]):
        return None
    return [[x + y for x, y in zip(r, q)] for r, q in zip(total, term)]
