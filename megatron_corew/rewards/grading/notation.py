"""Answer notations rewritten to the plain forms the parser reads, before any LaTeX cleaning.

Each rewrite is one bounded regular-expression pass (no backtracking over the whole answer): a leftover
``\\boxed{}``, ``{a \\over b}``, repeating decimals (``0.1\\overline{6}``), thousands separators written with
LaTeX spacing (``12,\\!345``, ``12\\,345``, ``12{,}345``), percent and unit words, and sets named by a symbol.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["rewrite_notation", "strip_unit_words", "names_a_value"]

_BOX_OPENERS = ("\\boxed{", "\\fbox{")


def _strip_boxes(s: str) -> str:
    """``\\boxed{\\boxed{3}}`` -> ``3``: only a box spanning the whole answer is removed."""
    while True:
        opener = next((o for o in _BOX_OPENERS if s.startswith(o)), None)
        if opener is None or not s.endswith("}"):
            return s
        depth = 0
        for i in range(len(opener) - 1, len(s)):
            depth += {"{": 1, "}": -1}.get(s[i], 0)
            if depth == 0:
                break
        if i != len(s) - 1:
            return s
        s = s[len(opener) : -1].strip()


def _brace_group_bounds(s: str, pos: int) -> tuple[int, int]:
    """Bounds of the innermost ``{...}`` around ``pos``, or the whole string when there is none."""
    depth, start = 0, 0
    for i in range(pos - 1, -1, -1):
        if s[i] == "}":
            depth += 1
        elif s[i] == "{":
            if depth == 0:
                start = i + 1
                break
            depth -= 1
    depth, end = 0, len(s)
    for i in range(pos, len(s)):
        if s[i] == "{":
            depth += 1
        elif s[i] == "}":
            if depth == 0:
                end = i
                break
            depth -= 1
    return start, end


_RE_OVER = re.compile(r"\\over(?![a-zA-Z])")


def _rewrite_over(s: str) -> str:
    """``{a \\over b}`` (TeX's infix fraction) -> ``{\\frac{a}{b}}``; at most 8 per answer."""
    for _ in range(8):
        match = _RE_OVER.search(s)
        if not match:
            return s
        start, end = _brace_group_bounds(s, match.start())
        num, den = s[start : match.start()].strip(), s[match.end() : end].strip()
        s = s[:start] + "\\frac{" + num + "}{" + den + "}" + s[end:]
    return s


_RE_REPEATING = re.compile(r"(\d*)\.(\d*)\\overline\{?(\d{1,12})\}?")


def _repeating_value(match: re.Match) -> str:
    whole, fixed, period = match.group(1), match.group(2), match.group(3)
    k, m = len(fixed), len(period)
    value = Fraction(int(whole or "0")) + Fraction(int(fixed or "0"), 10**k)
    value += Fraction(int(period), 10**k * (10**m - 1))
    return "(" + str(value.numerator) + "/" + str(value.denominator) + ")"


# Digit groups of three after a leading group of one to three, joined by a LaTeX-spaced comma or a thin space.
_RE_GROUPED = re.compile(r"(?<![\d.])\d{1,3}(?:(?:,\\!\s?|\{,\}|\\,|\\ )\d{3})+(?![\d])")
_RE_GROUP_SEPARATOR = re.compile(r",\\!\s?|\{,\}|\\,|\\ ")

_RE_PERCENT_WORD = re.compile(r"\s*(?:\\text\{\s*)?(?:percentage|percent|per\s?cent|pct)(?:\s*\})?(?![a-zA-Z])")
_RE_WORD_AND = re.compile(r"(?<=[\d)}\]])\s*,?\s*(?:and|or)\s*(?=[-\d(\[\\])")

_NAMED_SETS = (
    ("\\mathbb{R}", "(-\\infty,\\infty)"),
    ("\\mathbb R", "(-\\infty,\\infty)"),
    ("\\R", "(-\\infty,\\infty)"),
    ("\\varnothing", "\\emptyset"),
    ("\\O", "\\emptyset"),
)


def rewrite_notation(s: str) -> str:
    """The rewrites above, in an order where none undoes another."""
    s = _strip_boxes(s.strip())
    if "\\over" in s:
        s = _rewrite_over(s)
    if "\\overline" in s:
        s = _RE_REPEATING.sub(_repeating_value, s)
    if "\\" in s or "{,}" in s:
        s = _RE_GROUPED.sub(lambda m: _RE_GROUP_SEPARATOR.sub("", m.group(0)), s)
    if "\\" in s:
        for name, plain in _NAMED_SETS:
            if name in s and not re.search(re.escape(name) + r"[a-zA-Z]", s):
                s = s.replace(name, plain)
    if "per" in s or "pct" in s:
        s = _RE_PERCENT_WORD.sub("\\%", s)
    if "and" in s or "or" in s:
        s = _RE_WORD_AND.sub(",", s)
    return s


# Words that change a number's value: never dropped as units.
_VALUE_WORDS = frozenset(
    "hundred hundreds thousand thousands million millions billion billions trillion dozen dozens half halves "
    "third thirds quarter quarters percent pi sqrt i e inf infinity".split()
)
_SHORT_UNITS = frozenset("cm mm km kg mg ml mL ft yd mi hr lb oz in cc am pm".split())
_FUNCTION_WORDS = frozenset("sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh ln log exp".split())


def names_a_value(text: str) -> bool:
    """Whether ``text`` holds a word that changes a number's value (``million``, ``dozen``)."""
    return any(w.lower() in _VALUE_WORDS for w in re.findall(r"[a-zA-Z]{2,}", text))


_RE_UNIT_TAIL = re.compile(r"^(.*?[\d}).])\s*([a-zA-Z][a-zA-Z\s/^{}23.]*)$")
# Atomic groups: each word is matched once, so a long tail that fails costs linear time, not exponential.
_RE_UNIT_WORDS = re.compile(r"(?>(?>[a-zA-Z]{2,})(?>/[a-zA-Z]+)?\.?(?>\^\{?[23]\}?|[23])?[\s/]*)+")


def strip_unit_words(s: str) -> str:
    """``30 mph`` / ``15 square units`` / ``5 km/h`` -> the number before them; anything else unchanged.

    Only plain words (no LaTeX command) after something ending in a digit, a brace, a bracket or a dot: three or
    more letters, or a known two-letter unit first (``2 ab`` stays a product); never a word that changes the
    value (``5 million``) or names a function.
    """
    if not s or not (s[-1].isalpha() or s[-1] in ".}23"):
        return s
    match = _RE_UNIT_TAIL.match(s)
    if not match or not _RE_UNIT_WORDS.fullmatch(match.group(2)):
        return s
    words = re.findall(r"[a-zA-Z]+", match.group(2))
    if any(w.lower() in _VALUE_WORDS or w in _FUNCTION_WORDS for w in words):
        return s
    if len(words[0]) == 2 and words[0] not in _SHORT_UNITS:  # "2 ab" is a product, "2 cm" a length
        return s
    head = match.group(1)
    if head.endswith("\\"):
        return s
    return head.rstrip()
