"""Whether two answers mean the same, and the scores built on it.

``answers_equivalent`` adds numeric / structural / light symbolic equality to the reference comparison; it is
memoised because the same answers recur across the samples of a prompt and across the pairs of a vote.
``grade`` (response text) and ``grade_answer`` (an answer already extracted) score 1.0 or 0.0 in either mode:
``reference`` (the paper's grader) or ``equiv``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from megatron_corew.rewards.grading.latex import clean_latex
from megatron_corew.rewards.grading.notation import names_a_value
from megatron_corew.rewards.grading.reference import extract_boxed_answer, is_equiv_reference
from megatron_corew.rewards.grading.structures import parse_value, same_value
from megatron_corew.rewards.grading.values import exact_value, free_variables

__all__ = [
    "answers_equivalent",
    "clear_caches",
    "grade",
    "grade_answer",
    "check_grade_mode",
    "GRADE_MODES",
    "MAX_PARSE_CHARS",
]

# Answers longer than this skip the parser (only the reference comparison runs): bounds the cost
# of one comparison and the parser's recursion depth.
MAX_PARSE_CHARS = 400


@lru_cache(maxsize=1 << 16)
def _parsed_answer(raw: str):
    return parse_value(clean_latex(raw))


_RE_NAME_ONLY = re.compile(r"\s*[a-zA-Z]?\s*")


def _reference_drops_a_value(s: str) -> bool:
    """The reference drops any left-hand side of at most two characters (``7 = 11a+c`` becomes ``11a+c``) and any
    ``\\text{ ...}`` tail; only a name or a unit may be dropped, so a reference match through either is not
    trusted."""
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2 and not _RE_NAME_ONLY.fullmatch(sides[0]):
        return True
    return "\\text{ " in s and names_a_value(s.split("\\text{ ", 1)[1])  # it also drops "\\text{ million}"


@lru_cache(maxsize=1 << 16)
def _answers_equivalent_cached(a: str, b: str) -> bool:
    if is_equiv_reference(a, b) and not (_reference_drops_a_value(a) or _reference_drops_a_value(b)):
        return True
    if len(a) > MAX_PARSE_CHARS or len(b) > MAX_PARSE_CHARS:
        return False
    try:
        return same_value(_parsed_answer(a), _parsed_answer(b))
    except (RecursionError, ArithmeticError, ValueError, TypeError, KeyError, IndexError):
        return False


def answers_equivalent(a: str, b: str) -> bool:
    """Improved equivalence: reference match, else numeric / structural / symbolic equality.

    Fast (microseconds to tens of microseconds per pair, cached) and bounded: inputs longer
    than ``MAX_PARSE_CHARS`` only get the reference comparison, the parser never evaluates code,
    exact arithmetic refuses huge powers. Symmetric. Empty answers are never equivalent.
    """
    if a is None or b is None:
        return False
    a, b = str(a).strip(), str(b).strip()
    if not a or not b:
        return False
    if a == b:
        return True
    if a > b:  # symmetric, so one cache entry serves both orders
        a, b = b, a
    return _answers_equivalent_cached(a, b)


def clear_caches() -> None:
    """Drop memoised parses and comparisons (benchmarks use it to time cold work)."""
    for cached in (_answers_equivalent_cached, _parsed_answer, parse_value, exact_value, free_variables):
        cached.cache_clear()


GRADE_MODES = ("reference", "equiv")


def check_grade_mode(mode: str) -> None:
    """Raise ``ValueError`` for a mode no grader knows, before any item is graded."""
    if mode not in GRADE_MODES:
        raise ValueError(f"unknown grading mode {mode!r}; expected one of {GRADE_MODES}")


def grade(response_text: str, ground_truth: str, mode: str = "reference") -> float:
    """1.0 if the last boxed answer of ``response_text`` matches ``ground_truth``, else 0.0.

    ``mode="reference"`` is the paper's grader (normalised string equality); ``"equiv"`` uses
    ``answers_equivalent``. No boxed answer scores 0.0.
    """
    return grade_answer(extract_boxed_answer(response_text or ""), ground_truth, mode)


def grade_answer(answer: str, ground_truth: str | None, mode: str = "reference") -> float:
    """:func:`grade` for an answer already extracted from its box: 1.0 if it matches ``ground_truth``, else 0.0.
    Empty (or blank) answers and missing ground truths score 0.0."""
    check_grade_mode(mode)
    if not (answer or "").strip() or ground_truth is None:
        return 0.0
    if mode == "reference":
        return 1.0 if is_equiv_reference(answer, ground_truth) else 0.0
    return 1.0 if answers_equivalent(answer, ground_truth) else 0.0
