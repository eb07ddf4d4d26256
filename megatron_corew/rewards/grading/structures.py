"""Shapes of answers: sets, tuples, intervals, relations, matrices, percents and text, each compared by its rules.

A cleaned answer string becomes a small tagged tuple (``parse_value``) and two of them compare by kind
(``same_value``); numbers inside are compared by :mod:`megatron_corew.rewards.grading.values`.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

from megatron_corew.rewards.grading.compound import as_intervals, matrix_expression, same_intervals
from megatron_corew.rewards.grading.latex import RE_COMMAND, ExprParser, ParseError
from megatron_corew.rewards.grading.values import exact_value, free_variables, proportional, same_scalar

__all__ = ["parse_value", "same_value"]

_RE_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_RE_SCIENTIFIC = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))[eE]([+-]?\d+)$")

_OPENERS = "([{"
_CLOSERS = ")]}"
_RELATIONS = "=<>≤≥≠"
_FLIPPED = {">": "<", "≥": "≤", "<": ">", "≤": "≥", "=": "=", "≠": "≠"}
# A left-hand side that names the answer and may be dropped: a variable or a short symbol (``x``, ``a_{37}``,
# ``\\theta``, ``f(x)``, ``AB``, ``ABC``) or a tuple of them (``(p,q)``). A number or an expression never is.
_NAME = r"(?:[a-zA-Z]{1,2}|[A-Z]{3}|\\[a-zA-Z]+)(?:_\{?\w+\}?)?(?:\([a-z]\))?"
_RE_VARIABLE = re.compile(r"^" + _NAME + r"$")
_RE_NAME_TUPLE = re.compile(r"^\(\s*" + _NAME + r"(?:\s*,\s*" + _NAME + r")+\s*\)$")
_RE_WORD = re.compile(r"[a-zA-Z]{3,}")
_RE_PLUS_MINUS = re.compile(r"\\(?:pm|mp)(?![a-zA-Z])")
_RE_MATRIX = re.compile(r"^\\begin\{([pbvB]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.S)


def _split_top_level(s: str, separators: str):
    """Split on single-character separators outside any brackets. Yields (piece, separator)."""
    depth = 0
    start = 0
    pieces = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
        elif depth == 0 and ch in separators:
            pieces.append((s[start:i], ch))
            start = i + 1
        i += 1
    pieces.append((s[start:], None))
    return pieces


def _outer_bracket_spans_all(s: str) -> bool:
    """True when the bracket opening ``s`` is closed by its last character (any bracket kind)."""
    depth = 0
    for i, ch in enumerate(s):
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
            if depth == 0:
                return i == len(s) - 1
    return False


def _split_cup(s: str):
    pieces, depth, start, i = [], 0, 0, 0
    while i < len(s):
        ch = s[i]
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
        elif depth == 0 and s.startswith("\\cup", i):
            pieces.append(s[start:i])
            start = i + 4
        i += 1
    pieces.append(s[start:])
    return pieces


def _text_form(s: str) -> str:
    s = s.lower().replace(" ", "").replace("{", "").replace("}", "").replace("\\", "")
    if len(s) == 3 and s[0] == "(" and s[2] == ")":
        s = s[1]
    return s


@lru_cache(maxsize=1 << 16)
def parse_value(s: str):
    """Structured value of a cleaned answer; see ``same_value`` for how kinds compare."""
    s = s.strip()
    if not s:
        return ("text", "")
    if _RE_THOUSANDS.match(s):
        s = s.replace(",", "")
    scientific = _RE_SCIENTIFIC.match(s)
    if scientific:
        mantissa, power = Fraction(scientific.group(1)), int(scientific.group(2))
        if abs(power) <= 300:
            return ("expr", ("num", mantissa * Fraction(10) ** power))
    if s == "∅":
        return ("set_of", ())
    plus_minus = _RE_PLUS_MINUS.findall(s)
    if len(plus_minus) == 1:  # "3 \pm \sqrt2" is the pair of both signs
        first, second = ("+", "-") if plus_minus[0] == "\\pm" else ("-", "+")
        return ("set_of", (parse_value(_RE_PLUS_MINUS.sub(first, s)), parse_value(_RE_PLUS_MINUS.sub(second, s))))
    matrix = _RE_MATRIX.match(s)
    if matrix and "\\begin" not in matrix.group(2):
        rows = [row for row in re.split(r"\\\\", matrix.group(2)) if row.strip()]
        return ("matrix", tuple(tuple(parse_value(cell) for cell in row.split("&")) for row in rows))
    if "\\begin" in s:
        cells = matrix_expression(s)
        if cells is not None:
            return ("matrix", tuple(tuple(("expr", ("num", c)) for c in row) for row in cells))
    pieces = _split_cup(s)
    if len(pieces) > 1:
        return ("union", tuple(parse_value(p) for p in pieces))
    if s[0] == "{" and s[-1] == "}" and _outer_bracket_spans_all(s):  # a TeX group: "{1, 3}" is "1, 3"
        return parse_value(s[1:-1])
    if s.startswith("\\{") and s.endswith("\\}"):
        inner = s[2:-2]
        items = [p for p, _ in _split_top_level(inner, ",")] if inner.strip() else []
        return ("set_of", tuple(parse_value(p) for p in items))
    if s[0] in "([" and s[-1] in ")]" and _outer_bracket_spans_all(s):
        items = [p for p, _ in _split_top_level(s[1:-1], ",")]
        if len(items) == 1 and ";" in s:  # "(0;-2;6)"
            items = [p for p, _ in _split_top_level(s[1:-1], ";")]
        if len(items) == 1:
            return parse_value(items[0])
        return ("seq", s[0] + s[-1], tuple(parse_value(p) for p in items))
    groups = _split_top_level(s, ";")
    if len(groups) > 1 and "=" in s:  # "p=5,q=2;p=7,q=2": each group is one solution
        return ("set_of", tuple(_assignment_group(p) for p, _ in groups if p.strip()))
    items = _split_top_level(s, ",;")
    if len(items) > 1:
        return ("set_of", tuple(parse_value(p) for p, _ in items if p.strip()))
    member = re.match(r"^\s*(?:[a-zA-Z]|\\[a-zA-Z]+)\s*\\in\s*(.+)$", s)
    if member:
        return parse_value(member.group(1))
    sides = _split_top_level(s, _RELATIONS)
    if len(sides) > 1:
        return _parse_relation(sides)
    return _parse_scalar(s)


def _assignment_group(s: str):
    """``p=5,q=2`` -> the tuple ``(5, 2)`` when every item assigns a name; else the items as a set."""
    items = [parse_value(p) for p, _ in _split_top_level(s, ",") if p.strip()]
    if len(items) > 1 and all(item[0] == "named" for item in items):
        return ("seq", "()", tuple(item[2] for item in items))
    return items[0] if len(items) == 1 else ("set_of", tuple(items))


def _name_node(name: str):
    try:
        node = ExprParser(name).parse()
    except (ParseError, RecursionError, ValueError):
        return None
    return node if node[0] == "var" else None


def _parse_relation(sides):
    values = [piece.strip() for piece, _ in sides]
    ops = [op for _, op in sides[:-1]]
    if len(ops) == 1 and ops[0] == "=" and (_RE_VARIABLE.match(values[0]) or _RE_NAME_TUPLE.match(values[0])):
        # "x = 5" names the answer 5; kept as ("named", name, value) so that "y = 2x+1" is also an equation.
        return ("named", values[0].replace(" ", "").replace("{", "").replace("}", ""), parse_value(values[1]))
    if any(not v for v in values):
        return ("text", _text_form("".join(v + (o or "") for v, o in sides)))
    parsed = [parse_value(v) for v in values]
    if len(ops) == 1 and ops[0] in "<>≤≥":
        parsed, ops = _solve_for_variable(parsed, ops)
    if all(op in (">", "≥") for op in ops):  # write every chain with "<"-type relations
        parsed.reverse()
        ops = [_FLIPPED[op] for op in reversed(ops)]
    interval = _relation_as_interval(ops, parsed)
    return interval if interval is not None else ("rel", tuple(ops), tuple(parsed))


def _coefficient_times_variable(value):
    """``-x`` -> (-1, x), ``3x`` -> (3, x), ``\\frac{x}{2}``... not handled; else None."""
    if value[0] != "expr":
        return None
    node = value[1]
    if node[0] == "neg" and node[1][0] == "var":
        return Fraction(-1), node[1]
    if node[0] == "mul" and node[2][0] == "var":
        k = exact_value(node[1])
        if k is not None and k != 0:
            return k, node[2]
    return None


def _solve_for_variable(parsed, ops):
    """``-x > -1`` -> ``x < 1`` and ``2x <= 6`` -> ``x <= 3``: divide a one-variable side by its exact coefficient,
    flipping the relation when it is negative."""
    for side in (0, 1):
        found = _coefficient_times_variable(parsed[side])
        other = parsed[1 - side]
        if found is None or other[0] != "expr" or free_variables(other[1]):
            continue
        k, var = found
        op = _FLIPPED[ops[0]] if k < 0 else ops[0]
        solved = ("expr", ("div", other[1], ("num", k)))
        return ([("expr", var), solved] if side == 0 else [solved, ("expr", var)]), [op]
    return parsed, ops


_INFINITY = ("expr", ("const", "inf"))
_MINUS_INFINITY = ("expr", ("neg", ("const", "inf")))


def _relation_as_interval(ops, parsed):
    """A one-variable inequality as the interval it describes: ``-2 <= x < 7`` -> ``[-2, 7)``."""
    if not all(op in ("<", "≤") for op in ops):
        return None
    is_variable = lambda value: value[0] == "expr" and value[1][0] == "var"  # noqa: E731
    opening = {"<": "(", "≤": "["}
    closing = {"<": ")", "≤": "]"}
    if len(ops) == 2 and is_variable(parsed[1]):
        return ("seq", opening[ops[0]] + closing[ops[1]], (parsed[0], parsed[2]))
    if len(ops) == 1 and is_variable(parsed[0]):
        return ("seq", "(" + closing[ops[0]], (_MINUS_INFINITY, parsed[1]))
    if len(ops) == 1 and is_variable(parsed[1]):
        return ("seq", opening[ops[0]] + ")", (parsed[0], _INFINITY))
    return None


def _parse_scalar(s: str):
    percent = False
    if s.endswith("%"):
        percent, s = True, s[:-1].rstrip()
    if "%" in s or _RE_WORD.search(RE_COMMAND.sub(" ", s)):
        return ("text", _text_form(s + ("%" if percent else "")))
    try:
        node = ExprParser(s).parse()
    except (ParseError, RecursionError, ValueError, ZeroDivisionError):
        return ("text", _text_form(s + ("%" if percent else "")))
    return ("pct" if percent else "expr", node)


def _same_unordered(xs, ys) -> bool:
    """Equal as sets: every element of each side equals some element of the other (a repeat adds nothing)."""
    if not xs or not ys:
        return not xs and not ys
    return all(any(same_value(x, y) for y in ys) for x in xs) and all(any(same_value(x, y) for x in xs) for y in ys)


def _equation_function(value):
    """``L = R`` as the expression ``L - R`` (``y = 2x+1`` as ``y - (2x+1)``), or None."""
    if value[0] == "named":
        name, rhs = _name_node(value[1]), value[2]
        return ("sub", name, rhs[1]) if name is not None and rhs[0] == "expr" else None
    if value[0] == "rel" and value[1] == ("=",) and all(side[0] == "expr" for side in value[2]):
        return ("sub", value[2][0][1], value[2][1][1])
    return None


def _same_named(x, y) -> bool:
    """``x = 5`` equals ``5`` (the name is dropped), ``a_3 = 2`` equals ``a_3 = 2``; equations compare up to a
    nonzero factor (``y = 2x+1`` equals ``2x - y + 1 = 0``)."""
    if x[0] == "named" and y[0] == "named" and x[1] == y[1] and same_value(x[2], y[2]):
        return True
    f, g = _equation_function(x), _equation_function(y)
    if f is not None and g is not None and proportional(f, g):
        return True
    if x[0] == "named" and y[0] == "named":
        constant = lambda v: v[0] == "expr" and not free_variables(v[1])  # noqa: E731
        return x[1] != y[1] and constant(x[2]) and constant(y[2]) and same_value(x[2], y[2])
    named, other = (x, y) if x[0] == "named" else (y, x)
    return other[0] != "rel" and same_value(named[2], other)


def _same_as_intervals(x, y):
    """Unions (and the intervals or point sets they are compared with) as merged intervals; None if not sets."""
    xs, ys = as_intervals(x), as_intervals(y)
    if xs is None or ys is None:
        return None
    return same_intervals(xs, ys)


def same_value(x, y) -> bool:
    """Compare two parsed answers.

    * ``expr``: numerically / symbolically equal.
    * ``pct`` (a trailing percent sign): ``50%`` equals ``50`` (MATH convention, the reference
      drops ``\\%``) AND ``0.5`` (its value, as math-verify accepts); two percents compare values.
    * ``seq`` (tuples and intervals): same brackets, same length, equal in order, so ``[1,2)`` is
      not ``(1,2)`` and ``(1,2)`` is not ``(2,1)``.
    * ``set_of`` (``\\{..\\}``, unbracketed lists, unions): equal as multisets, in any order.
    * ``rel``: same relation chain (``x > 3`` equals ``3 < x``); one-variable inequalities are
      parsed as intervals, so ``-2 \\le x < 7`` equals ``[-2, 7)`` and ``x > 3`` equals ``(3, \\infty)``.
    * a one-element set equals its element; ``a \\pm b`` is the set of both signs.
    * ``text``: case-insensitive equality after removing spaces and braces.
    """
    kind_x, kind_y = x[0], y[0]
    if kind_x == "named" or kind_y == "named":
        return _same_named(x, y)
    if kind_x == "union" or kind_y == "union":
        merged = _same_as_intervals(x, y)
        if merged is not None:
            return merged
        x = ("set_of", x[1]) if kind_x == "union" else x
        y = ("set_of", y[1]) if kind_y == "union" else y
        kind_x, kind_y = x[0], y[0]
    if kind_x == "pct" or kind_y == "pct":
        if kind_x == kind_y:
            return same_scalar(x[1], y[1])
        pct, other = (x, y) if kind_x == "pct" else (y, x)
        if other[0] != "expr":
            return False
        return same_scalar(pct[1], other[1]) or same_scalar(("div", pct[1], ("num", Fraction(100))), other[1])
    if kind_x != kind_y:
        for single, other in ((x, y), (y, x)):  # "\{-2\}" is the answer "-2"
            if single[0] == "set_of" and len(single[1]) == 1 and other[0] != "set_of":
                return same_value(single[1][0], other)
        return False
    if kind_x == "expr":
        return same_scalar(x[1], y[1])
    if kind_x == "text":
        return x[1] == y[1]
    if kind_x == "seq":
        return x[1] == y[1] and len(x[2]) == len(y[2]) and all(map(same_value, x[2], y[2]))
    if kind_x == "set_of":
        return _same_unordered(x[1], y[1])
    if kind_x == "rel":
        f, g = _equation_function(x), _equation_function(y)
        if f is not None and g is not None and proportional(f, g):
            return True
        if x[1] != y[1] or len(x[2]) != len(y[2]):
            return False
        if all(map(same_value, x[2], y[2])):
            return True
        symmetric = len(x[1]) == 1 and x[1][0] in ("=", "≠")
        return symmetric and all(map(same_value, x[2], reversed(y[2])))
    if kind_x == "matrix":
        return (
            len(x[1]) == len(y[1])
            and all(len(rx) == len(ry) for rx, ry in zip(x[1], y[1]))
            and all(same_value(cx, cy) for rx, ry in zip(x[1], y[1]) for cx, cy in zip(rx, ry))
        )
    return False
