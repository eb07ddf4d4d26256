"""What a math question states, read from its text, so that two wordings of it can be compared.

Numbers (as a multiset of exact values, whatever the spelling: ``1/2``, ``\\frac{1}{2}``, ``0.5``; ``1,000``,
``1{,}000``; ``three``), formulas (LaTeX spans and plain-text ones such as ``x^2+y^2=z^2``), classes of
mathematically load-bearing terms (*sum*, *probability*, *distinct*, *without replacement*, answer-format
instructions) and measurement units, and the answer-bearing request (the last sentence that asks, and what follows
it). Used by :mod:`megatron_corew.data.rephrase_check`; no nltk here (regular expressions only).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from fractions import Fraction

__all__ = [
    "TERMS",
    "UNITS",
    "normalise",
    "numbers_of",
    "number_diff",
    "formulas_of",
    "formula_diff",
    "term_classes",
    "request_of",
]


# ----------------------------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------------------------
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S)
_LATEX_SUBS = [
    (re.compile(r"\\[dt]frac"), r"\\frac"),
    (re.compile(r"\\left|\\right|\\displaystyle|\\!|\\,|\\;|\\:|\\quad|\\qquad|~"), " "),
    (re.compile(r"\{,\}"), ","),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\^\s*\{?\\circ\}?"), " degrees "),
    (re.compile(r"\\(?:text|mathrm|textbf|mbox|operatorname)\s*\{([^{}]*)\}"), r" \1 "),
    (re.compile(r"\\cdot|\\times"), "*"),
    (re.compile(r"\\le(?:q|qslant)?(?![a-z])"), "≤"),
    (re.compile(r"\\ge(?:q|qslant)?(?![a-z])"), "≥"),
    (re.compile(r"\\ne(?:q)?(?![a-z])"), "≠"),
    (re.compile(r"−|–"), "-"),
]
_FRAC = re.compile(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}|\\frac\s*(\d)\s*(\d)")
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,]|\.\d)|(?<![\d.,])\d{1,3}(?:,\d{3})+(?=\.\d)")


_CURRENCY = re.compile(r"\\\$|\$(?=\d[\d,]*(?:\.\d+)?(?![\d.,]*[$a-zA-Z{^_\\]))")


def _latex_plain(text: str) -> str:
    """LaTeX spellings of the same thing made equal (``\\dfrac``/``\\frac``, ``{,}``, ``\\%``, ``^\\circ``, ...); a
    currency sign (``\\$``, or ``$`` before a number that no ``$`` closes) becomes the word *dollar*."""
    text = _CURRENCY.sub(" dollar ", text)
    for pat, rep in _LATEX_SUBS:
        text = pat.sub(rep, text)

    def frac(m):
        a, b = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
        a, b = a.strip(), b.strip()
        simple = re.compile(r"[\w.]+$")
        return f"{a}/{b}" if simple.match(a) and simple.match(b) else f"({a})/({b})"

    for _ in range(4):  # nested fractions, innermost first
        new = _FRAC.sub(frac, text)
        if new == text:
            break
        text = new
    return text


@functools.lru_cache(maxsize=1024)
def normalise(text: str) -> str:
    text = _latex_plain(text)
    return _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)


# ----------------------------------------------------------------------------------------------------------------
# Numbers
# ----------------------------------------------------------------------------------------------------------------
_UNITS_W = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen \
seventeen eighteen nineteen".split()
_TENS_W = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUE = {w: i for i, w in enumerate(_UNITS_W)} | {w: 20 + 10 * i for i, w in enumerate(_TENS_W)}
# words that may stand for a number, or may not ("one of them", "a second time", "half an hour"): they excuse a
# difference of their value, they are never required
_WEAK = {
    "one": 1,
    "once": 1,
    "single": 1,
    "half": Fraction(1, 2),
    "twice": 2,
    "double": 2,
    "both": 2,
    "pair": 2,
    "triple": 3,
    "thrice": 3,
    "quarter": Fraction(1, 4),
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "hundredth": 100,
    "dozen": 12,
}
_NUM = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?:\s*/\s*(\d+(?:\.\d+)?)(?![\d.]))?|(?<=[a-zA-Z_^])(\d+(?:\.\d+)?)")
_WORDS = re.compile(r"[a-z]+(?:-[a-z]+)?")


def _value(s: str) -> Fraction:
    return Fraction(s)


def numbers_of(text: str) -> tuple[Counter, Counter, Counter]:
    """(digits, words, weak): multisets of the numbers in ``text`` (Fractions). Digits: numerals, fractions, LaTeX
    fractions; words: number words two..ninety-nine (with hundred / thousand); weak: see ``_WEAK``."""
    t = normalise(text)
    digits: Counter = Counter()
    for m in _NUM.finditer(t):
        if m.group(3) is not None:  # digits glued to a letter: x2, a_1, 3x (the 3 is matched above)
            digits[_value(m.group(3))] += 1
        elif m.group(2) is not None:
            den = _value(m.group(2))
            if den != 0:
                digits[_value(m.group(1)) / den] += 1
            else:
                digits[_value(m.group(1))] += 1
                digits[den] += 1
        else:
            digits[_value(m.group(1))] += 1
    words_c: Counter = Counter()
    weak: Counter = Counter()
    words = _WORDS.findall(t.lower())
    i = 0
    while i < len(words):
        w = words[i]
        parts = w.split("-")
        if len(parts) == 2 and parts[0] in _TENS_W and parts[1] in _WORD_VALUE and _WORD_VALUE[parts[1]] < 10:
            val, i = _WORD_VALUE[parts[0]] + _WORD_VALUE[parts[1]], i + 1
        elif w in _WORD_VALUE and w != "one":
            val, i = _WORD_VALUE[w], i + 1
            if w in _TENS_W and i < len(words) and words[i] in _WORD_VALUE and 0 < _WORD_VALUE[words[i]] < 10:
                val, i = val + _WORD_VALUE[words[i]], i + 1
        elif w in _WEAK or w.rstrip("s") in ("dozen", "half") or w == "halves":
            weak[Fraction(_WEAK.get(w, _WEAK.get(w.rstrip("s"), Fraction(1, 2))))] += 1
            i += 1
            continue
        else:
            i += 1
            continue
        while i < len(words) and words[i] in ("hundred", "thousand", "million"):
            val *= {"hundred": 100, "thousand": 1000, "million": 10**6}[words[i]]
            i += 1
        words_c[Fraction(val)] += 1
    return digits, words_c, weak


def number_diff(a: str, b: str) -> dict | None:
    """Every number of the question must be in the rewrite as often (a weak word there may stand for it); the
    rewrite may repeat a number the question has, and may count its story's objects in words ("two boards"),
    but a new numeral is a change."""
    da, na, wa = numbers_of(a)
    db, nb, wb = numbers_of(b)
    sa, sb = da + na, db + nb
    missing = (sa - sb) - wb
    extra = Counter({v: k for v, k in (db - da - wa).items() if v not in sa})
    if not missing and not extra:
        return None
    return {"missing": sorted(map(str, missing.elements())), "extra": sorted(map(str, extra.elements()))}


# ----------------------------------------------------------------------------------------------------------------
# Formulas
# ----------------------------------------------------------------------------------------------------------------
_PLAIN_FORMULA = re.compile(r"[\w^*/+\-=<>≤≥≠()\[\]{}|!.,']+")
_OPERATOR = re.compile(r"[=<>≤≥≠^]|\w[+\-*/]\w|\\[a-z]+")
_GLUE = re.compile(r"\s*([=+*/^<>≤≥≠-])\s*")
_NUMBER_ONLY = re.compile(r"^[\d.,/%]+$")


_WORD_HYPHEN = re.compile(r"(?<=\w)-(?=[a-zA-Z]{2,})|(?<=[a-zA-Z]{2})-(?=\w)")


def _is_formula(body: str) -> bool:
    """A formula has an operator or relation and a variable or command (arithmetic on numbers alone is the number
    check's business: a story may spell ``1/2+1/3`` or ``\\sqrt{50}+\\sqrt{18}`` out); hyphenated words are not
    formulas."""
    variables = re.sub(r"\\[a-zA-Z]+", "", body)
    unhyphenated = _WORD_HYPHEN.sub(" ", body)  # 52-card, fourth-grade, x-axis: words, not subtraction
    return bool(
        body and not _NUMBER_ONLY.match(body) and _OPERATOR.search(unhyphenated) and re.search(r"[a-zA-Z]", variables)
    )


def _squash(s: str) -> str:
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"\{(\w)\}", r"\1", s)  # x^{2} = x^2
    return s.rstrip(".,;:").lstrip("(").rstrip(")") if s.count("(") != s.count(")") else s.rstrip(".,;:")


def formulas_of(text: str) -> Counter:
    """Multiset of the formulas in ``text``: LaTeX math spans, and plain-text runs with a relation, power or an
    operator between operands (``x^2+1``, ``p^2-2*q^2=1``), whitespace removed. Bare numbers and single symbols are
    left to the number check."""
    out: Counter = Counter()
    t = _latex_plain(text)

    def span(m):
        body = _squash(next(g for g in m.groups() if g is not None))
        if _is_formula(body):
            out[_THOUSANDS.sub(lambda x: x.group(0).replace(",", ""), body)] += 1
        return " "

    rest = _GLUE.sub(r"\1", _MATH_SPAN.sub(span, t))
    for m in _PLAIN_FORMULA.finditer(rest):
        body = _squash(m.group(0))
        if len(body) >= 4 and _is_formula(body) and re.search(r"[\d=^<>≤≥≠]", body):
            out[_THOUSANDS.sub(lambda x: x.group(0).replace(",", ""), body)] += 1
    return out


def formula_diff(a: str, b: str) -> dict | None:
    fa, fb = formulas_of(a), formulas_of(b)
    sa = re.sub(r"\s+|\$", "", normalise(a))
    sb = re.sub(r"\s+|\$", "", normalise(b))
    missing = sorted(f for f in (fa - fb).elements() if f not in sb)  # written without $...$ is still there
    extra = sorted(f for f in (fb - fa).elements() if f not in sa)
    return {"missing": missing, "extra": extra} if missing or extra else None


# ----------------------------------------------------------------------------------------------------------------
# Terms: the request, the conditions, the units
# ----------------------------------------------------------------------------------------------------------------
# classes of interchangeable wordings; a class of the question must appear (in any of its wordings) in the rewrite
TERMS: dict[str, tuple[str, ...]] = {
    "maximum": ("greatest", "largest", "biggest", "maximum", "maximal", "maximize", "highest"),
    "minimum": ("least", "smallest", "minimum", "minimal", "minimize", "lowest", "fewest"),
    "at least": ("at least", "no fewer than", "no less than", "or more", "minimum of"),
    "at most": ("at most", "no more than", "not more than", "or fewer", "or less", "maximum of", "not exceed"),
    "sum": ("sum", "total", "altogether", "combined", "in all", "add up"),
    "product": ("product",),
    "difference": ("difference",),
    "quotient": ("quotient", "ratio"),
    "remainder": ("remainder", "modulo", "mod"),
    "probability": ("probability", "chance", "likelihood", "probable"),
    "expected value": ("expected value", "expected number", "expectation"),
    "average": ("average", "mean"),
    "median": ("median",),
    "positive": ("positive",),
    "negative": ("negative",),
    "nonnegative": ("nonnegative", "non-negative"),
    "nonzero": ("nonzero", "non-zero"),
    "integer": ("integer", "whole number"),
    "real": ("real",),
    "rational": ("rational",),
    "irrational": ("irrational",),
    "complex": ("complex",),
    "prime": ("prime",),
    "composite": ("composite",),
    "odd": ("odd",),
    "even": ("even",),
    "distinct": ("distinct", "different", "unique"),
    "consecutive": ("consecutive", "in a row"),
    "digit": ("digit",),
    "divisor": ("divisor", "factor", "divides", "divisible"),
    "multiple": ("multiple",),
    "perfect square": ("perfect square", "square number"),
    "ordered": ("ordered",),
    "unordered": ("unordered",),
    "with replacement": ("with replacement", "put back", "putting back", "puts back", "replacing it", "returning it"),
    "without replacement": (
        "without replacement",
        "not put back",
        "not returned",
        "not replaced",
        "no replacement",
        "without putting",
        "without returning",
    ),
    "increasing": ("increasing", "increase", "ascending"),
    "decreasing": ("decreasing", "decrease", "descending"),
    "area": ("area",),
    "perimeter": ("perimeter",),
    "circumference": ("circumference",),
    "volume": ("volume",),
    "radius": ("radius", "radii"),
    "diameter": ("diameter",),
    "angle": ("angle",),
    "common fraction": ("common fraction",),
    "mixed number": ("mixed number",),
    "radical form": ("radical form",),
    "simplest form": ("simplest form", "lowest terms", "simplest terms"),
    "decimal": ("decimal",),
    "nearest": ("nearest", "rounded"),
    "in terms of": ("in terms of",),
    "interval notation": ("interval notation",),
    "scientific notation": ("scientific notation",),
    "do not include units": ("do not include units", "without units", "no units", "omit the units"),
    "final answer": ("final answer",),
    "all": ("find all", "all possible", "all values", "all solutions", "every possible"),
}
UNITS: dict[str, tuple[str, ...]] = {
    "mm": ("mm", "millimeter", "millimetre"),
    "cm": ("cm", "centimeter", "centimetre"),
    "m": ("meter", "metre"),
    "km": ("km", "kilometer", "kilometre"),
    "inch": ("inch", "inches"),
    "foot": ("foot", "feet", "ft"),
    "yard": ("yard", "yd"),
    "mile": ("mile", "mi", "mph"),
    "gram": ("gram", "grams"),
    "kg": ("kg", "kilogram"),
    "pound": ("pound", "lb", "lbs"),
    "ounce": ("ounce", "oz"),
    "liter": ("liter", "litre"),
    "ml": ("ml", "milliliter", "millilitre", "cc", "ccs"),
    "gallon": ("gallon",),
    "second": ("seconds", "sec"),
    "minute": ("minute", "mins"),
    "hour": ("hour", "hr", "hrs"),
    "day": ("day", "daily"),
    "week": ("week", "weekly"),
    "month": ("month", "monthly"),
    "year": ("year", "yearly", "annually", "annual"),
    "dollar": ("dollar", "usd"),
    "cent": ("cent", "¢"),
    "euro": ("euro", "€"),
    "pound sterling": ("£",),
    "percent": ("percent", "percentage", "%", "per cent"),
    "degree": ("degree", "°"),
    "calorie": ("calorie",),
}
_SYMBOL_UNITS = ("%", "€", "£", "¢", "°")
_NEGATED = re.compile(r"\b(?:not|no|never)\s+(?:be\s+|been\s+)?(?:put back|returned|replaced)\b")


_NO_STEM = frozenset({"seconds"})  # "seconds" is time; "second" is mostly an ordinal ("a second time")


def _stem(w: str) -> str:
    if w in _NO_STEM:
        return w
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith(("sses", "xes", "ches", "shes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


@functools.lru_cache(maxsize=1024)  # each text is looked up several times per pair
def _word_seq(text: str) -> str:
    """Lower-case, stemmed words joined by single spaces, with a space on each side (for phrase lookups)."""
    words = re.findall(r"[a-z]+(?:-[a-z]+)?|[%€£¢°]", normalise(text).lower())
    return " " + " ".join(_stem(w) for w in words) + " "


_KEYS: dict[int, list[tuple[str, list[str]]]] = {}


def _keys(lexicon: dict[str, tuple[str, ...]]) -> list[tuple[str, list[str]]]:
    """The lexicon's forms as stemmed, space-delimited phrases (built once per lexicon)."""
    if id(lexicon) not in _KEYS:
        _KEYS[id(lexicon)] = [
            (
                name,
                [f" {f} " if f in _SYMBOL_UNITS else " " + " ".join(_stem(w) for w in f.split()) + " " for f in forms],
            )
            for name, forms in lexicon.items()
        ]
    return _KEYS[id(lexicon)]


def term_classes(text: str, lexicon: dict[str, tuple[str, ...]]) -> set[str]:
    """The classes of ``lexicon`` (``TERMS`` or ``UNITS``) that one of their wordings names in ``text``."""
    seq = _word_seq(text)
    neg = bool(_NEGATED.search(text.lower()))
    found = set()
    for name, keys in _keys(lexicon):
        for key in keys:
            if key in seq:
                if name == "with replacement" and neg:
                    continue
                found.add(name)
                break
    if "without replacement" in found:
        found.discard("with replacement")
    return found


_QUESTION_START = re.compile(
    r"^(?:find|compute|determine|evaluate|calculate|what|how|which|who|when|where|express|simplify|solve|give|list"
    r"|is|are|does|do|can|show|prove|factor|factorize|write)\b",
    re.I,
)


def _sentences(text: str) -> list[str]:
    masked = _MATH_SPAN.sub(lambda m: "§" * len(m.group(0)), text)
    cuts = [m.end() for m in re.finditer(r"[.?!](?=\s+|$)", masked)]
    out, start = [], 0
    for c in cuts + [len(text)]:
        s = text[start:c].strip()
        if s:
            out.append(s)
        start = c
    return out


def request_of(text: str) -> str:
    """The answer-bearing request: from the last sentence with a '?' (else the last one opening with a question word
    or an imperative such as *Find*) to the end (answer-format instructions follow it); the whole text when no
    sentence asks."""
    sents = _sentences(text)
    for asks in (lambda s: "?" in s, _QUESTION_START.match):  # a question mark first, else an imperative
        for i in range(len(sents) - 1, -1, -1):
            if asks(sents[i]):
                return " ".join(sents[i:])
    return text
