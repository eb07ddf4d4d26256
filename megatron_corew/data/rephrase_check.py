"""Quality gate for Co-rewarding-I rephrasings: does row i of the rephrased file still ask row i's question?

Co-rewarding-I crosses labels between the two views, so a rewrite that changes a number, drops a condition or a
unit, asks for something else, copies the question, or says something unrelated corrupts the signal silently.
:func:`check_pair` returns a verdict (``kept`` / ``flagged``) with one reason per failed check:

``number_changed``    the multiset of numbers differs (after normalisation: ``1/2`` = ``\\frac{1}{2}`` = ``0.5``,
                      ``1,000`` = ``1{,}000`` = ``1000``, ``three`` = ``3``; ``one``/``half``/``twice``/ordinals only
                      excuse a difference, they are never required)
``math_changed``      a LaTeX or plain-text formula (``$x^2+1$``, ``x^2+y^2=z^2``) of one side is absent from the other
``request_changed``   a term of the answer-bearing request (the last question sentence and what follows: the target
                      quantity such as *sum*, *probability*, *remainder*, or an answer-format instruction) is missing
``condition_dropped`` a mathematical qualifier elsewhere (*distinct*, *positive*, *without replacement*, ...) is missing
``unit_changed``      the set of measurement units differs (*meters* -> *feet*, *hours* -> *minutes*, ``$`` dropped)
``near_copy``         the lexical distance is below ``min_distance`` (no second view)
``unrelated``         the lexical distance is above ``max_distance``

Lexical distance: the token-level edit distance (``nltk.edit_distance``) over the content words and numbers of
``nltk.wordpunct_tokenize`` (a regular expression: no nltk data files are needed at run time), divided by the
longer count; 0 = the same words, 1 = no word in common. Function words are left out because any two English
texts share them (with them, an unrelated text scored 0.95 and a faithful story of a short question 0.96 on the
sample). BLEU-4 (``nltk.translate.bleu_score``, smoothed) is reported alongside.
The default bounds come from the hand-written sample in ``benchmarks/rephrase_sample.py``
(``benchmarks/bench_rephrase_check.py`` prints the measurement).

Output files (one JSON record per pair row, aligned with the parquet pair): ``{"row", "verdict", "reasons",
"details", "distance", "bleu", "sha"}``; ``sha`` fingerprints the two questions so the paired loader
(:func:`megatron_corew.data.load_paired_examples`, ``rephrase_check=``) can refuse a file of another pair.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

__all__ = [
    "REASONS",
    "CHECKS",
    "CheckConfig",
    "PairCheck",
    "check_pair",
    "check_pairs",
    "numbers_of",
    "formulas_of",
    "lexical_distance",
    "content_tokens",
    "pair_sha",
    "summarize",
    "summary_table",
    "write_check_file",
    "read_check_file",
    "add_check_args",
    "check_config_from_args",
]

REASONS = (
    "number_changed",
    "math_changed",
    "request_changed",
    "condition_dropped",
    "unit_changed",
    "near_copy",
    "unrelated",
)
# the checks that can be switched off, and the reasons each one gives
CHECKS = {
    "numbers": ("number_changed",),
    "math": ("math_changed",),
    "request": ("request_changed",),
    "conditions": ("condition_dropped",),
    "units": ("unit_changed",),
    "distance": ("near_copy", "unrelated"),
}


@dataclass
class CheckConfig:
    min_distance: float = 0.15  # below: a near copy (see benchmarks/bench_rephrase_check.py)
    max_distance: float = 0.95  # above: shares (almost) no word with the question
    checks: tuple[str, ...] = tuple(CHECKS)

    def __post_init__(self):
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise ValueError(f"unknown rephrase check(s) {unknown} (known: {', '.join(CHECKS)})")
        if not 0.0 <= self.min_distance <= self.max_distance <= 1.0:
            raise ValueError(
                f"need 0 <= min_distance <= max_distance <= 1, got {self.min_distance} and {self.max_distance}"
            )


@dataclass
class PairCheck:
    verdict: str  # kept | flagged
    reasons: list[str]
    details: dict = field(default_factory=dict)  # per reason: what is missing / extra
    distance: float = 0.0
    bleu: float = 0.0

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "details": self.details,
            "distance": round(self.distance, 4),
            "bleu": round(self.bleu, 4),
        }


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


def _normalise(text: str) -> str:
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
    t = _normalise(text)
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


def _number_diff(a: str, b: str) -> dict | None:
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


def _is_formula(body: str) -> bool:
    """A formula has an operator or relation and a variable or command (arithmetic on numbers alone is the number
    check's business: a story may spell ``1/2+1/3`` or ``\\sqrt{50}+\\sqrt{18}`` out); hyphenated words are not
    formulas."""
    variables = re.sub(r"\\[a-zA-Z]+", "", body)
    if not body or _NUMBER_ONLY.match(body) or not _OPERATOR.search(body) or not re.search(r"[a-zA-Z]", variables):
        return False
    return not re.fullmatch(r"[a-zA-Z]+(?:-[a-zA-Z]+)+", body)


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


def _formula_diff(a: str, b: str) -> dict | None:
    fa, fb = formulas_of(a), formulas_of(b)
    sa = re.sub(r"\s+|\$", "", _normalise(a))
    sb = re.sub(r"\s+|\$", "", _normalise(b))
    missing = sorted(f for f in (fa - fb).elements() if f not in sb)  # written without $...$ is still there
    extra = sorted(f for f in (fb - fa).elements() if f not in sa)
    return {"missing": missing, "extra": extra} if missing or extra else None


# ----------------------------------------------------------------------------------------------------------------
# Terms: the request, the conditions, the units
# ----------------------------------------------------------------------------------------------------------------
# classes of interchangeable wordings; a class of the question must appear (in any of its wordings) in the rewrite
TERMS: dict[str, tuple[str, ...]] = {
    "maximum": ("greatest", "largest", "biggest", "maximum", "maximal", "maximize", "highest", "max"),
    "minimum": ("least", "smallest", "minimum", "minimal", "minimize", "lowest", "fewest", "min"),
    "at least": ("at least", "no fewer than", "no less than", "or more", "minimum of"),
    "at most": ("at most", "no more than", "not more than", "or fewer", "or less", "maximum of", "not exceed"),
    "sum": ("sum", "total", "altogether", "combined", "in all", "add up"),
    "product": ("product",),
    "difference": ("difference",),
    "quotient": ("quotient", "ratio"),
    "remainder": ("remainder", "modulo", "mod"),
    "probability": ("probability", "chance", "likelihood", "probable"),
    "expected value": ("expected", "expectation"),
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
    "with replacement": ("with replacement", "put back", "returned", "replaced"),
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
    "nearest": ("nearest", "round"),
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
    "inch": ("inch", "inches", "in."),
    "foot": ("foot", "feet", "ft"),
    "yard": ("yard", "yd"),
    "mile": ("mile", "mi", "mph"),
    "gram": ("gram", "grams", "g"),
    "kg": ("kg", "kilogram"),
    "pound": ("pound", "lb", "lbs"),
    "ounce": ("ounce", "oz"),
    "liter": ("liter", "litre", "l"),
    "ml": ("ml", "milliliter", "millilitre", "cc", "ccs"),
    "gallon": ("gallon",),
    "second": ("seconds", "sec"),
    "minute": ("minute", "min"),
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


def _stem(w: str) -> str:
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith(("sses", "xes", "ches", "shes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def _word_seq(text: str) -> str:
    """Lower-case, stemmed words joined by single spaces, with a space on each side (for phrase lookups)."""
    words = re.findall(r"[a-z]+(?:-[a-z]+)?|[%€£¢°]", _normalise(text).lower())
    return " " + " ".join(_stem(w) for w in words) + " "


def _classes(text: str, lexicon: dict[str, tuple[str, ...]]) -> set[str]:
    seq = _word_seq(text)
    neg = bool(_NEGATED.search(text.lower()))
    found = set()
    for name, forms in lexicon.items():
        for f in forms:
            key = " " + " ".join(_stem(w) for w in f.split()) + " " if f not in _SYMBOL_UNITS else f" {f} "
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
    """The answer-bearing request: from the last sentence that asks (a '?' or a question / imperative opening) to the
    end (answer-format instructions follow it); the whole text when no sentence asks."""
    sents = _sentences(text)
    for i in range(len(sents) - 1, -1, -1):
        if "?" in sents[i] or _QUESTION_START.match(sents[i]):
            return " ".join(sents[i:])
    return text


# ----------------------------------------------------------------------------------------------------------------
# Lexical distance (nltk)
# ----------------------------------------------------------------------------------------------------------------
# function words: shared by any two English texts, so they would pull an unrelated text's distance below 1
_FUNCTION_WORDS = frozenset(
    "a an the of to in on at for with and or but is are was were be been by as that this these those it its he she "
    "they them his her their him what how many much does do did has have had if each from then there than which who "
    "so such any all some can will would not no".split()
)


def _tokens(text: str) -> list[str]:
    from nltk.tokenize import wordpunct_tokenize  # a regular expression: no punkt data needed

    return [t.lower() for t in wordpunct_tokenize(text)]


def content_tokens(text: str) -> list[str]:
    """The words and numbers of ``text`` (nltk tokens, lower case) without punctuation and function words."""
    return [t for t in _tokens(text) if t.isalnum() and t not in _FUNCTION_WORDS]


def lexical_distance(a: str, b: str) -> tuple[float, float]:
    """(distance, BLEU): the token edit distance (``nltk.edit_distance``) between the content tokens of ``a`` and
    ``b`` divided by the longer count (0 = same words, 1 = no word in common, in order), and the smoothed sentence
    BLEU-4 of ``b`` against ``a`` over all tokens (reported, not gated)."""
    from nltk.metrics.distance import edit_distance
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    ca, cb = content_tokens(a), content_tokens(b)
    dist = edit_distance(ca, cb) / max(len(ca), len(cb)) if ca or cb else 0.0
    ta, tb = _tokens(a), _tokens(b)
    bleu = sentence_bleu([ta], tb, smoothing_function=SmoothingFunction().method1) if ta and tb else 0.0
    return float(dist), float(bleu)


# ----------------------------------------------------------------------------------------------------------------
# The check
# ----------------------------------------------------------------------------------------------------------------
def check_pair(original: str, rewritten: str, cfg: CheckConfig | None = None) -> PairCheck:
    """The verdict on one (original question, rewritten question) pair."""
    cfg = cfg or CheckConfig()
    reasons: list[str] = []
    details: dict = {}

    def flag(reason, detail):
        if detail is not None:
            reasons.append(reason)
            details[reason] = detail

    if "numbers" in cfg.checks:
        flag("number_changed", _number_diff(original, rewritten))
    if "math" in cfg.checks:
        flag("math_changed", _formula_diff(original, rewritten))
    if "request" in cfg.checks or "conditions" in cfg.checks:
        req = _classes(request_of(original), TERMS)
        have = _classes(rewritten, TERMS)
        rest = _classes(original, TERMS) - req
        if "request" in cfg.checks:
            miss = sorted(req - have)
            flag("request_changed", {"missing": miss} if miss else None)
        if "conditions" in cfg.checks:
            miss = sorted(rest - have)
            flag("condition_dropped", {"missing": miss} if miss else None)
    if "units" in cfg.checks:
        # a unit of the question must stay; the request's units (the answer's unit) must stay in the request; a
        # story may add units elsewhere ("47 + 38" -> "47 apples and 38 more")
        ua, ub = _classes(original, UNITS), _classes(rewritten, UNITS)
        qa, qb = _classes(request_of(original), UNITS), _classes(request_of(rewritten), UNITS)
        miss, req_miss = sorted(ua - ub), sorted(qa - qb)
        detail = {
            "missing": miss,
            "extra": sorted(ub - ua),
            "request_missing": req_miss,
            "request_extra": sorted(qb - qa),
        }
        flag("unit_changed", detail if miss or req_miss else None)
    dist, bleu = lexical_distance(original, rewritten)
    if "distance" in cfg.checks:
        flag("near_copy", {"distance": round(dist, 4), "min": cfg.min_distance} if dist < cfg.min_distance else None)
        flag("unrelated", {"distance": round(dist, 4), "max": cfg.max_distance} if dist > cfg.max_distance else None)
    return PairCheck("flagged" if reasons else "kept", reasons, details, dist, bleu)


def pair_sha(original: str, rewritten: str) -> str:
    """Fingerprint of a pair's two questions (the check file's link to its parquet rows)."""
    return hashlib.sha256((original + "\x00" + rewritten).encode()).hexdigest()[:16]


def check_pairs(pairs, cfg: CheckConfig | None = None) -> list[PairCheck]:
    cfg = cfg or CheckConfig()
    return [check_pair(o, r, cfg) for o, r in pairs]


# ----------------------------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------------------------
def _quantiles(xs: list[float]) -> dict:
    if not xs:
        return {}
    s = sorted(xs)

    def q(p):
        return round(s[min(len(s) - 1, int(p * (len(s) - 1) + 0.5))], 3)

    return {"min": q(0), "p10": q(0.1), "p50": q(0.5), "p90": q(0.9), "max": q(1)}


def summarize(checks: list[PairCheck], fallbacks: int = 0) -> dict:
    """Counts by verdict and reason, and the distance / BLEU distributions (quantiles and a 10-bin histogram)."""
    by_reason = Counter(r for c in checks for r in c.reasons)
    dists = [c.distance for c in checks]
    hist = [0] * 10
    for d in dists:
        hist[min(int(d * 10), 9)] += 1
    return {
        "pairs": len(checks),
        "kept": sum(c.verdict == "kept" for c in checks),
        "flagged": sum(c.verdict == "flagged" for c in checks),
        "fallback_to_original": fallbacks,
        "by_reason": {r: by_reason[r] for r in REASONS if by_reason[r]},
        "distance": _quantiles(dists),
        "distance_histogram": hist,
        "bleu": _quantiles([c.bleu for c in checks]),
    }


def summary_table(summary: dict) -> str:
    """A markdown table of a :func:`summarize` result."""
    n = max(summary["pairs"], 1)
    lines = ["| verdict / reason | pairs | share |", "|---|---|---|"]
    lines.append(f"| kept | {summary['kept']} | {summary['kept'] / n:.1%} |")
    lines.append(f"| flagged | {summary['flagged']} | {summary['flagged'] / n:.1%} |")
    for r, k in summary["by_reason"].items():
        lines.append(f"| - {r} | {k} | {k / n:.1%} |")
    if summary.get("fallback_to_original"):
        lines.append(f"| flagged, original question used | {summary['fallback_to_original']} | |")
    d, b = summary["distance"], summary["bleu"]
    if d:
        lines.append("")
        lines.append("| | min | p10 | p50 | p90 | max |")
        lines.append("|---|---|---|---|---|---|")
        lines.append("| edit distance | " + " | ".join(str(d[k]) for k in ("min", "p10", "p50", "p90", "max")) + " |")
        lines.append("| BLEU-4 | " + " | ".join(str(b[k]) for k in ("min", "p10", "p50", "p90", "max")) + " |")
        h = summary["distance_histogram"]
        lines.append("")
        lines.append("distance histogram (0.0-0.1 ... 0.9-1.0): " + " ".join(map(str, h)))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Check files
# ----------------------------------------------------------------------------------------------------------------
def write_check_file(path: str, records: list[dict]) -> None:
    """One JSON record per pair row (``row``, ``verdict``, ``reasons``, ``details``, ``distance``, ``bleu``,
    ``sha``), written atomically."""
    from checkpoints_conversion import atomic

    atomic.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_check_file(path: str) -> list[dict]:
    """The records of a check file, in row order; a bad line raises ValueError naming the file and line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno}: not valid JSON ({e.msg})") from None
            if (
                not isinstance(rec, dict)
                or rec.get("row") != len(out)
                or rec.get("verdict") not in ("kept", "flagged", "fallback")
                or not isinstance(rec.get("reasons"), list)
            ):
                raise ValueError(
                    f"{path}: line {lineno}: expected a record with row={len(out)}, a verdict (kept / flagged / "
                    f"fallback) and a reasons list"
                )
            out.append(rec)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Command-line flags (tools/rewrite_questions.py, tools/check_rephrasings.py)
# ----------------------------------------------------------------------------------------------------------------
def add_check_args(parser) -> None:
    d = CheckConfig()
    g = parser.add_argument_group("rephrasing quality check (megatron_corew/data/rephrase_check.py)")
    g.add_argument(
        "--on-bad-rephrase",
        "--on_bad_rephrase",
        dest="on_bad_rephrase",
        choices=["keep", "drop", "original"],
        default="keep",
        help="a flagged pair: keep it, drop it from both files, or use the original question as its rephrasing",
    )
    g.add_argument(
        "--rephrase-checks",
        "--rephrase_checks",
        dest="rephrase_checks",
        default=",".join(CHECKS),
        help=f"comma-separated checks to run ({', '.join(CHECKS)}), or 'none'",
    )
    g.add_argument(
        "--min-distance",
        "--min_distance",
        dest="min_distance",
        type=float,
        default=d.min_distance,
        help="lexical distance below which a rewrite is a near copy (reason near_copy)",
    )
    g.add_argument(
        "--max-distance",
        "--max_distance",
        dest="max_distance",
        type=float,
        default=d.max_distance,
        help="lexical distance above which a rewrite is unrelated to its question (reason unrelated)",
    )


def check_config_from_args(args) -> CheckConfig:
    """The CheckConfig of parsed flags; ValueError names the flag at fault."""
    names = [c.strip() for c in args.rephrase_checks.split(",") if c.strip()]
    if names == ["none"]:
        names = []
    unknown = [c for c in names if c not in CHECKS]
    if unknown:
        raise ValueError(f"--rephrase-checks: unknown check(s) {unknown} (known: {', '.join(CHECKS)}, or none)")
    if not 0.0 <= args.min_distance <= args.max_distance <= 1.0:
        raise ValueError(
            f"--min-distance {args.min_distance} / --max-distance {args.max_distance}: need 0 <= min <= max <= 1"
        )
    return CheckConfig(min_distance=args.min_distance, max_distance=args.max_distance, checks=tuple(names))
