"""Hand-computed cases for answer extraction, reference normalisation, the improved
equivalence, grading and the inline and process-pool graders (the shared contract of all graders:
tests/test_graders.py)."""

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from megatron_corew.rewards.grading import (
    InlineGrader,
    ProcessPoolGrader,
    answers_equivalent,
    clear_caches,
    extract_boxed_answer,
    grade,
    is_equiv_reference,
    normalize_answer,
)
from megatron_corew.rewards.grading.equivalence import MAX_PARSE_CHARS, _answers_equivalent_cached
from megatron_corew.rewards.grading.workers import TEST_SLEEP_ENV, TEST_SLEEP_PREFIX

# ----------------------------------------------------------------------------------------------
# extraction
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a \\boxed{\\frac{1}{2}} b \\boxed{3}", "3"),
        ("answer: \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{\\{1, \\{2\\}\\}}", "\\{1, \\{2\\}\\}"),  # nested braces
        ("\\boxed{a^{b^{c}}} done", "a^{b^{c}}"),
        ("so \\fbox{42} ok", "42"),
        ("\\fbox{1} then \\boxed{2}", "2"),  # \boxed wins over \fbox regardless of position
        ("The answer is $\\boxed 5$.", "5"),  # space form, cut at "$"
        ("\\boxed 7 is it", "7 is it"),  # space form without "$": rest of the text, unstripped
        ("\\boxed 5$ and later \\boxed{6}", "5"),  # reference quirk: any space form wins
        ("no box here, answer 3", ""),
        ("\\boxed{\\frac{1}{2}", ""),  # unbalanced
        ("\\boxed\\frac12", ""),  # box keyword not followed by "{"
        ("\\boxed{}", ""),
        ("", ""),
    ],
)
def test_extract_boxed_answer(text, expected):
    assert extract_boxed_answer(text) == expected


# ----------------------------------------------------------------------------------------------
# reference normalisation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("\\dfrac12", "\\frac{1}{2}"),
        ("\\tfrac{3}{4}", "\\frac{3}{4}"),
        ("\\frac1{72}", "\\frac{1}{72}"),
        ("0.5", "\\frac{1}{2}"),
        ("1/2", "\\frac{1}{2}"),
        ("-3/4", "\\frac{-3}{4}"),
        ("1/2/3", "1/2/3"),
        ("10\\%", "10"),
        ("10%", "10%"),  # reference removes only "\%"
        ("5\\text{ cm}", "5"),
        ("x = 5", "5"),
        ("k=3", "3"),
        ("xyz = 5", "xyz=5"),  # lhs longer than 2 characters is kept
        ("\\sqrt3", "\\sqrt{3}"),
        ("2\\sqrt 3", "2\\sqrt{}3"),  # reference quirk: braces the space, then drops it
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("90^\\circ", "90"),
        ("90^{\\circ}", "90"),
        ("\\$5", "5"),
        (".5", "\\frac{1}{2}"),  # leading "0" is added before the 0.5 -> \frac{1}{2} rule
        ("a .5", "a0.5"),
        ("1\\!000", "1000"),
        ("line\nbreak", "linebreak"),
        ("", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_normalize_answer_never_raises_and_keeps_input_on_reference_failure():
    # The reference raises on these (two unit blocks, \sqrt / \frac at the very end).
    for raw in ("1\\text{ m}\\text{ s}", "2\\sqrt", "3\\frac"):
        assert normalize_answer(raw) == raw
    assert normalize_answer(None) == ""


def test_is_equiv_reference():
    assert is_equiv_reference("\\dfrac12", "\\frac{1}{2}")
    assert is_equiv_reference("0.5", "\\frac{1}{2}")
    assert is_equiv_reference("1/2", "\\frac12")
    assert is_equiv_reference("10\\%", "10")
    assert is_equiv_reference("5 \\text{ cm}", "5")
    assert is_equiv_reference("x=5", "5")
    assert is_equiv_reference("\\left(1,2\\right)", "(1, 2)")
    assert not is_equiv_reference("0.50", "\\frac{1}{2}")  # only the literal "0.5" is mapped
    assert not is_equiv_reference("2", "3")
    assert not is_equiv_reference("10%", "10")
    # normalisation failure on one side -> raw equality
    assert is_equiv_reference("1\\text{ m}\\text{ s}", "1\\text{ m}\\text{ s}")
    assert not is_equiv_reference("1\\text{ m}\\text{ s}", "1")
    assert not is_equiv_reference(None, "1")


# ----------------------------------------------------------------------------------------------
# improved equivalence
# ----------------------------------------------------------------------------------------------

EQUIVALENT = [
    ("0.5", "\\frac{1}{2}"),
    ("1/2", "\\frac{1}{2}"),
    ("0.5", "1/2"),
    ("\\frac{2}{4}", "\\dfrac12"),
    ("-0.25", "-\\frac{1}{4}"),
    ("-\\frac{1}{2}", "\\frac{-1}{2}"),
    ("\\frac{1}{-2}", "-0.5"),
    ("3", "3.0"),
    ("3", "3.000"),
    ("1,000", "1000"),
    ("1{,}000", "1000"),
    ("1\\,000", "1000"),
    ("1.5\\times 10^{3}", "1500"),
    ("1.5e3", "1500"),  # plain scientific notation (math-verify reads e as Euler's number)
    ("2\\sqrt{3}", "\\sqrt{12}"),
    ("\\sqrt{8}", "2\\sqrt2"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"),
    ("\\sqrt[3]{27}", "3"),
    ("\\sqrt[3]{-8}", "-2"),
    ("\\pi/2", "\\frac{\\pi}{2}"),
    ("2\\pi", "\\pi\\cdot 2"),
    ("\\frac{3\\pi}{4}", "0.75\\pi"),
    ("2^{10}", "1024"),
    ("4!", "24"),
    ("\\binom{5}{2}", "10"),
    ("2\\frac{1}{2}", "\\frac{5}{2}"),  # mixed number
    ("-2\\frac{1}{2}", "-2.5"),
    ("50\\%", "50"),  # MATH convention: the percent sign is dropped
    ("50\\%", "0.5"),  # ... and its value is accepted too (as math-verify does)
    ("50%", "50\\%"),
    ("90^\\circ", "90"),
    ("10 \\text{ cm}", "10"),
    ("5\\text{ inches}^2", "5"),
    ("\\$12.50", "12.5"),
    ("x = 5", "5"),
    ("y=2x+1", "1+2x"),
    ("x \\in [1, 2]", "[1,2]"),
    ("[1, 2)", "\\left[1,2\\right)"),
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("(-\\infty,0)\\cup(1,\\infty)", "(1,\\infty)\\cup(-\\infty,0)"),
    ("(1, 2)", "(1,2)"),
    ("(\\frac12, 3)", "(0.5, 3)"),
    ("\\{1, 2, 3\\}", "\\{3, 1, 2\\}"),
    ("1, 2, 3", "3, 2, 1"),  # unbracketed lists are unordered, like sets
    ("1 \\text{ and } 2", "2, 1"),
    ("x^2+2x+1", "(x+1)^2"),
    ("x^2-1", "(x-1)(x+1)"),
    ("\\frac{x}{2}", "0.5x"),
    ("a_1 + a_2", "a_2 + a_1"),
    ("\\sin^2 x + \\cos^2 x", "1"),
    ("\\log_2 8", "3"),
    ("\\ln(e^2)", "2"),
    ("x > 3", "3 < x"),
    ("x \\geq 3", "3 \\le x"),
    ("-2 \\le x \\le 7", "[-2, 7]"),
    ("7 > x \\geq -2", "[-2, 7)"),
    ("x > 3", "(3, \\infty)"),
    ("x \\le 0", "(-\\infty, 0]"),
    ("\\pm 2", "2, -2"),
    ("\\frac{1 \\pm \\sqrt{5}}{2}", "\\frac{1-\\sqrt5}{2}, \\frac{1+\\sqrt5}{2}"),
    ("\\{-2\\}", "-2"),
    ("\\text{Monday}", "monday"),
    ("\\text{(A)}", "A"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\begin{pmatrix} 0.5 & 1 \\end{pmatrix}", "\\begin{pmatrix} \\frac12 & 1 \\end{pmatrix}"),
    ("\\begin{pmatrix} 0.5 \\\\ 1 \\end{pmatrix}", "\\begin{pmatrix}\\frac12\\\\1\\end{pmatrix}"),
    ("\\emptyset", "\\varnothing"),
    ("100000000000000000001", "100000000000000000001.0"),
]

NOT_EQUIVALENT = [
    ("1", "2"),
    ("-2", "2"),
    ("0.5", "\\frac{1}{3}"),
    ("\\frac{1}{3}", "0.33"),
    ("\\frac{1}{3}", "0.333333"),  # strict: decimal approximations of 1/3 are not 1/3
    ("3", "3.00001"),
    ("100000000000000000001", "100000000000000000000"),  # exact, not float, comparison
    ("1,000", "100"),
    ("1,000", "1"),
    ("\\sqrt{2}", "1.41"),
    ("\\sqrt{12}", "3\\sqrt{2}"),
    ("\\pi", "3.14"),
    ("2\\pi", "\\pi"),
    ("\\pi/2", "\\frac{\\pi}{3}"),
    ("2\\frac{1}{2}", "1"),  # a mixed number, not a product
    ("50\\%", "5"),
    ("[1, 2]", "(1, 2)"),
    ("[1, 2)", "(1, 2]"),
    ("(1, 2)", "(2, 1)"),  # tuples keep their order
    ("(1, 2, 3)", "(1, 2)"),
    ("\\{1, 2\\}", "\\{1, 3\\}"),
    ("(-\\infty, 3)", "(3, \\infty)"),
    ("(-\\infty, 3)", "(-\\infty, -3)"),
    ("x^2+1", "(x+1)^2"),
    ("2x", "2y"),
    ("a-b", "b-a"),
    ("x > 3", "x \\ge 3"),
    ("x > 3", "x < 3"),
    ("x > 3", "[3, \\infty)"),
    ("-2 < x \\le 7", "[-2, 7]"),
    ("\\pm 2", "2"),
    ("\\{-2, 2\\}", "-2"),
    ("Monday", "Tuesday"),
    ("Monday", "Mondya"),  # words are text, not products of letters
    ("\\text{(A)}", "B"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 & 2 \\end{pmatrix}"),
    ("\\ln 2", "\\log 2"),  # bare \log is base 10
    ("\\begin{pmatrix} 0.5 \\\\ 1 \\end{pmatrix}", "\\begin{pmatrix} 0.5 & 1 \\end{pmatrix}"),
    ("x", "|x|"),
    ("\\sqrt{x^2}", "x"),
    ("x + y", "x + z"),
    ("5\\%", "0.5"),
    ("5", ""),
    ("", ""),
    ("2^{10000}", "2^{10001}"),
]


@pytest.mark.parametrize("a, b", EQUIVALENT)
def test_equivalent_pairs(a, b):
    assert answers_equivalent(a, b)
    assert answers_equivalent(b, a)


@pytest.mark.parametrize("a, b", NOT_EQUIVALENT)
def test_non_equivalent_pairs(a, b):
    assert not answers_equivalent(a, b)
    assert not answers_equivalent(b, a)


def test_equivalence_is_bounded_and_never_raises():
    huge = "9" * (MAX_PARSE_CHARS + 1)
    assert answers_equivalent(huge, huge)  # raw equality still counts
    assert not answers_equivalent(huge, huge[:-1] + "8")
    for depth in (150, 300):
        nested = "(" * depth + "1" + ")" * depth
        assert not answers_equivalent(nested, "2")
    start = time.perf_counter()
    for a, b in [
        ("2^{2^{2^{2^{2^{9}}}}}", "1"),
        ("10^{10^{10}}", "10^{10^{10}}+1"),
        ("(10^{100})!", "1"),
        ("\\frac{1}{0}", "\\frac{2}{0}"),
        ("x^{x^{x^{x}}}", "x"),
        ("\\sqrt{", "}"),
        ("\\frac", "\\frac{"),
        ("$$$", "\\\\"),
        ("((((", "))))"),
        ("\\unknowncommand{3}", "3"),
    ]:
        assert answers_equivalent(a, b) in (True, False)
    assert time.perf_counter() - start < 1.0


def test_equivalence_is_much_faster_than_math_verify():
    math_verify = pytest.importorskip("math_verify")
    pairs = [(f"\\frac{{{i}}}{{{i + 1}}}", f"{i}/{i + 1}") for i in range(1, 41)]
    pairs += [(f"{i}\\sqrt{{2}}", f"\\sqrt{{{2 * i * i}}}") for i in range(1, 41)]
    clear_caches()
    start = time.perf_counter()
    assert all(answers_equivalent(a, b) for a, b in pairs)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    for a, b in pairs[:20]:
        math_verify.verify(math_verify.parse(f"${b}$"), math_verify.parse(f"${a}$"))
    theirs_per_pair = (time.perf_counter() - start) / 20
    assert ours / len(pairs) * 10 < theirs_per_pair


# Pairs on which the intended answer is clear; both graders must agree with the hand label.
# (Deliberate differences, e.g. "1e3" or "0.333333" vs 1/3, are left out and documented above.)
MATH_VERIFY_AGREEMENT = [
    ("3", "3", True),
    ("3", "4", False),
    ("0.5", "\\frac{1}{2}", True),
    ("1/2", "\\frac{1}{2}", True),
    ("\\dfrac{3}{4}", "0.75", True),
    ("-2", "-2.0", True),
    ("-2", "2", False),
    ("\\frac{2}{4}", "\\frac{1}{2}", True),
    ("\\frac{1}{3}", "0.33", False),
    ("2\\sqrt{3}", "\\sqrt{12}", True),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("\\sqrt{2}", "2", False),
    ("\\frac{\\pi}{2}", "\\pi/2", True),
    ("2\\pi", "\\pi", False),
    ("\\pi", "3.14", False),
    ("[1,2]", "[1,2]", True),
    ("[1,2]", "(1,2)", False),
    ("(1,2]", "(1,2)", False),
    ("(-\\infty,3)", "(3,\\infty)", False),
    ("\\{1,2,3\\}", "\\{3,2,1\\}", True),
    ("\\{1,2\\}", "\\{1,3\\}", False),
    ("(1,2)", "(2,1)", False),
    ("(1,2,3)", "(1,2)", False),
    ("x^2+2x+1", "(x+1)^2", True),
    ("x^2-1", "(x-1)(x+1)", True),
    ("x^2+1", "(x+1)^2", False),
    ("2x+3", "3+2x", True),
    ("2x", "2y", False),
    ("1000", "1,000", True),
    ("1,000", "100", False),
    ("10", "10.0", True),
    ("12", "12.5", False),
    ("x=5", "5", True),
    ("y=3", "4", False),
    ("-\\frac{1}{2}", "-0.5", True),
    ("\\frac{1}{2}", "\\frac{1}{3}", False),
    ("5", "-5", False),
    ("2^{10}", "1024", True),
    ("2^{10}", "1000", False),
    ("\\sqrt[3]{27}", "3", True),
    ("4!", "24", True),
    ("\\binom{5}{2}", "10", True),
    ("90^\\circ", "90", True),
    ("10\\%", "10", True),
    ("x>3", "3<x", True),
    ("x\\ge 3", "x>3", False),
    ("\\text{Monday}", "Monday", True),
    ("3\\sqrt{2}", "\\sqrt{18}", True),
    ("a-b", "b-a", False),
    ("\\log 100", "2", True),
]


def test_agrees_with_math_verify_on_unambiguous_pairs():
    math_verify = pytest.importorskip("math_verify")
    disagreements = []
    for pred, gold, expected in MATH_VERIFY_AGREEMENT:
        theirs = bool(math_verify.verify(math_verify.parse(f"${gold}$"), math_verify.parse(f"${pred}$")))
        ours = answers_equivalent(pred, gold)
        if not (ours == theirs == expected):
            disagreements.append((pred, gold, expected, ours, theirs))
    assert disagreements == []


# ----------------------------------------------------------------------------------------------
# the answer forms where a grader most often misses, each with near misses that must stay unequal
# ----------------------------------------------------------------------------------------------

# category -> (a, b, equal?) worked out by hand.
CATEGORY_CASES = {
    "fraction_variant": [
        ("\\cfrac{1}{3}", "\\frac{1}{3}", True),
        ("\\cfrac{2}{\\cfrac{3}{4}}", "\\frac{8}{3}", True),
        ("{3 \\over 4}", "0.75", True),
        ("3 \\over 4", "\\frac34", True),
        ("{1 \\over 2+1}", "\\frac{1}{3}", True),
        ("{x \\over 2}", "\\frac{x}{2}", True),
        ("\\cfrac{1}{3}", "\\frac{1}{4}", False),
        ("{3 \\over 4}", "\\frac{4}{3}", False),
        ("{x \\over 2}", "2x", False),
    ],
    "relation": [
        ("x \\lt 3", "x < 3", True),
        ("x \\gt 3", "3 < x", True),
        ("x \\neq 3", "x \\ne 3", True),
        ("x \\leq 5", "5 \\geq x", True),
        ("-x > -1", "x < 1", True),
        ("-2x \\leq 6", "x \\geq -3", True),
        ("2x < 6", "x < 3", True),
        ("-1 \\lt x \\leq 2", "(-1, 2]", True),
        ("-x < -1", "x < 1", False),  # both sides negated without flipping the relation
        ("-2x \\leq 6", "x \\leq -3", False),
        ("x \\lt 3", "x \\leq 3", False),
        ("x \\neq 3", "x = 3", False),
        ("x \\geq 2", "(2, \\infty)", False),
    ],
    "word_unit_percent": [
        ("28 percent", "28\\%", True),
        ("28 pct", "28", True),
        ("28 \\text{ percent}", "28", True),
        ("30 mph", "30", True),
        ("15 square units", "15", True),
        ("5 km/h", "5", True),
        ("28 percent", "29\\%", False),
        ("5 million", "5", False),  # a value word is no unit
        ("5 \\text{ million}", "5", False),
        ("2 dozen", "2", False),
        ("2 ab", "2", False),  # a product, not a unit
        ("3 \\text{ thousand}", "3000", False),  # words are not evaluated
    ],
    "thousands": [
        ("12,\\!345", "12345", True),
        ("11,\\! 111,\\! 111,\\! 100", "11111111100", True),
        ("1\\,234\\,567", "1234567", True),
        ("14{,}916", "14916", True),
        ("1,\\!000,\\!000", "10^6", True),
        ("32, 349", "32349", False),  # a comma and a space is a list
        ("12,\\!345", "12346", False),
        ("1,\\!234", "1.234", False),
    ],
    "named_tuple": [
        ("(p,q)=(3,2)", "(3,2)", True),
        ("(x, y, z) = (1, -2, \\frac12)", "(1,-2,0.5)", True),
        ("x=1, y=2", "1, 2", True),
        ("a_3 = 2, a_{37} = 19", "a_{37} = 19, \\quad a_3 = 2", True),
        ("p=5,q=2;p=7,q=2", "(5,2),(7,2)", True),
        ("(p,q)=(3,2)", "(2,3)", False),
        ("(a,b,c)=(1,2,3)", "(1,2)", False),
        ("k = 45, n = 2", "n = 2", False),
    ],
    "boxed": [
        ("\\boxed{5}", "5", True),
        ("\\boxed{\\boxed{\\frac{1}{2}}}", "0.5", True),
        ("\\boxed{x = 3}", "3", True),
        ("\\boxed{5}", "\\boxed{6}", False),
        ("\\boxed{(1,2)}", "(2,1)", False),
        ("\\boxed{1}, \\boxed{2}", "1", False),
    ],
    "repeating_decimal": [
        ("0.\\overline{3}", "\\frac{1}{3}", True),
        ("0.1\\overline{6}", "\\frac{1}{6}", True),
        ("0.\\overline{142857}", "\\frac17", True),
        ("0.\\overline{9}", "1", True),
        ("2.\\overline{07}", "2.07\\overline{07}", True),
        ("0.\\overline{3}", "0.33", False),  # exact values only
        ("0.\\overline{3}", "0.333333", False),
        ("0.\\overline{16}", "\\frac{1}{6}", False),
    ],
    "text_unit": [
        ("\\text{5 cm}", "5", True),
        ("\\text{255 km/h}", "255", True),
        ("\\text{12 dollars}", "\\$12", True),
        ("\\text{5 cm}", "50", False),
        ("\\text{3 km}", "3000", False),  # units are ignored, not converted
    ],
    "named_set": [
        ("\\mathbb{R}", "(-\\infty, \\infty)", True),
        ("x \\in \\mathbb{R}", "\\mathbb{R}", True),
        ("\\varnothing", "\\emptyset", True),
        ("\\emptyset", "\\{\\}", True),
        ("\\mathbb{R}", "\\mathbb{Z}", False),
        ("\\mathbb{R}", "[0, \\infty)", False),
        ("\\emptyset", "\\{0\\}", False),
        ("\\emptyset", "0", False),
    ],
    "interval_union": [
        ("(1,3] \\cup (3,5)", "(1,5)", True),
        ("[1,3] \\cup [3,5]", "[1,5]", True),
        ("(1,4) \\cup (2,6)", "(1,6)", True),
        ("(-\\infty, 0) \\cup [0, \\infty)", "\\mathbb{R}", True),
        ("[1,2) \\cup \\{2\\}", "[1,2]", True),
        ("(3,4) \\cup (1,2)", "(1,2) \\cup (3,4)", True),
        ("(1,3) \\cup (3,5)", "(1,5)", False),  # 3 is left out
        ("[1,3] \\cup [4,5]", "[1,5]", False),
        ("(1,3] \\cup (3,5)", "(1,5]", False),
        ("(1,3),(2,4)", "(1,4)", False),  # a list of pairs is no union
        ("(-16, \\infty)", "(-\\infty, -16] \\cup (-16, \\infty)", False),  # an infinite end is no near number
        ("(-15,-8)", "(-\\infty,-9] \\cup (-9,\\infty)", False),
        ("(-\\infty, 2)", "(-\\infty, 2) \\cup (2, 3)", False),
    ],
    "equation": [
        ("2x+4y-3=0", "y=-\\frac{1}{2}x+\\frac{3}{4}", True),
        ("34x+45y-20z+100=0", "-34x-45y+20z-100=0", True),
        ("x^2/4 + y^2/3 = 1", "x^2/16 + y^2/12 = 1/4", True),
        ("x^2 - y^2 = 1", "(x-y)(x+y) = 1", True),
        ("2x = 6", "x = 3", True),
        ("y = 2x + 1", "y = 2x - 1", False),
        ("y = 2x + 1", "x = 2y + 1", False),
        ("x^2 = 4", "x = 2", False),
        ("x^2 + y^2 = 1", "x^2 + y^2 = 2", False),
        ("5x - 7y + 11z + 4 = 0", "x + y - z + 2 = 0", False),
    ],
    "matrix": [
        ("2\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}2\\\\4\\end{pmatrix}", True),
        (
            "\\begin{pmatrix}1&1\\\\0&1\\end{pmatrix}\\begin{pmatrix}1&0\\\\1&1\\end{pmatrix}",
            "\\begin{pmatrix}2&1\\\\1&1\\end{pmatrix}",
            True,
        ),
        (
            "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix} - \\begin{pmatrix}1&1\\\\1&1\\end{pmatrix}",
            "\\begin{bmatrix}0&1\\\\2&3\\end{bmatrix}",
            True,
        ),
        ("2\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}2\\\\3\\end{pmatrix}", False),
        (
            "\\begin{pmatrix}1&0\\\\1&1\\end{pmatrix}\\begin{pmatrix}1&1\\\\0&1\\end{pmatrix}",
            "\\begin{pmatrix}2&1\\\\1&1\\end{pmatrix}",
            False,  # products do not commute
        ),
        ("\\begin{pmatrix}1&2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", False),
    ],
    "multiset": [
        ("\\{1,2,2\\}", "\\{1,2\\}", True),  # a set ignores repeats
        ("10, 4, -2", "4, 10, -2", True),  # a list of solutions is unordered
        ("\\pm 2021", "{-2021, 2021}", True),
        ("\\{1,2\\}", "\\{1,2,3\\}", False),
        ("(1,1,2)", "(1,2)", False),  # a tuple keeps its length
        ("\\{1,2\\}", "(1,2)", False),
        ("(3,1)", "{1,3}", False),
        ("2", "1,2", False),
    ],
    "lhs_drop": [
        ("x = 5", "5", True),
        ("f(x) = 2x+1", "2x+1", True),
        ("\\theta = \\frac{\\pi}{2}", "\\frac{\\pi}{2}", True),
        ("AB = 7", "7", True),
        ("7 = 11a+c", "11a+c", False),  # a number is no name
        ("1 = x + y", "x + y", False),
        ("2x = 6", "6", False),
        ("x+1 = 5", "5", False),
        ("12 = n", "n", False),
    ],
}
CATEGORY_PARAMS = [
    pytest.param(a, b, expected, id=f"{category}-{i}")
    for category, cases in CATEGORY_CASES.items()
    for i, (a, b, expected) in enumerate(cases)
]


@pytest.mark.parametrize("a, b, expected", CATEGORY_PARAMS)
def test_answer_forms_by_category(a, b, expected):
    assert answers_equivalent(a, b) is expected
    assert answers_equivalent(b, a) is expected


def test_equivalence_refuses_huge_new_forms_quickly():
    start = time.perf_counter()
    for a, b in [
        ("0.\\overline{" + "9" * 12 + "}", "1"),
        ("{" * 30 + "1 \\over 2" + "}" * 30, "0.5"),
        ("(1,2]" + " \\cup (1,2]" * 60, "(1,2]"),
        ("\\begin{pmatrix}1\\end{pmatrix}" * 9, "1"),
        ("9,\\!999" * 40, "9"),
        ("x^{10^{9}} = 1", "x = 1"),
    ]:
        assert answers_equivalent(a, b) in (True, False)
    assert time.perf_counter() - start < 1.0


PAIRS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "answer_pairs"


def _labelled_pairs():
    rows = [json.loads(line) for path in sorted(PAIRS_DIR.glob("*.jsonl")) for line in path.read_text().splitlines()]
    assert len(rows) >= 1500 and all(row["source"] for row in rows)
    return rows


def test_labelled_set_zero_false_positives_and_99_percent():
    """The project's labelled answer pairs (benchmarks/answer_pairs/README.md): no wrong answer judged right."""
    rows = _labelled_pairs()
    clear_caches()
    got = [answers_equivalent(row["a"], row["b"]) for row in rows]
    false_positives = [(row["a"], row["b"]) for row, g in zip(rows, got) if g and not row["label"]]
    assert false_positives == []
    assert sum(g == row["label"] for row, g in zip(rows, got)) / len(rows) >= 0.99


def test_equivalence_logic_is_symmetric_on_the_labelled_set():
    """The comparison itself (not only the order-sorting cache in front of it) gives the same verdict both ways."""
    compare = _answers_equivalent_cached.__wrapped__
    asymmetric = [
        (row["a"], row["b"]) for row in _labelled_pairs() if compare(row["a"], row["b"]) != compare(row["b"], row["a"])
    ]
    assert asymmetric == []


def test_grader_bench_names_a_bad_pairs_row_in_one_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"a": "1", "b": "1", "label": true}\n{"a": "1", "label": "yes"}\n')
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_grader.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--pairs", str(tmp_path), "--no-math-verify"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(bench.parents[1])),
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'bad.jsonl'}:2: expected a JSON object with str a, str b, bool label"
    ]


def test_templates_file_is_what_its_generator_writes():
    """The template labels come from the generator's exact arithmetic; the committed file must be its output."""
    spec = importlib.util.spec_from_file_location("make_templates", PAIRS_DIR / "make_templates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = [json.loads(line) for line in (PAIRS_DIR / "templates.jsonl").read_text().splitlines()]
    assert module.build() == committed


# ----------------------------------------------------------------------------------------------
# grade
# ----------------------------------------------------------------------------------------------


def test_grade_modes():
    response = "We find $x = \\dfrac{1}{2}$, so \\boxed{\\dfrac12}."
    assert grade(response, "\\frac{1}{2}") == 1.0
    assert grade(response, "\\frac{1}{2}", mode="equiv") == 1.0
    assert grade("\\boxed{0.50}", "\\frac{1}{2}") == 0.0  # reference: only "0.5" maps
    assert grade("\\boxed{0.50}", "\\frac{1}{2}", mode="equiv") == 1.0
    assert grade("\\boxed{\\sqrt{12}}", "2\\sqrt{3}") == 0.0
    assert grade("\\boxed{\\sqrt{12}}", "2\\sqrt{3}", mode="equiv") == 1.0
    assert grade("\\boxed{3}", "4", mode="equiv") == 0.0
    assert grade("the answer is 5", "5") == 0.0  # no box
    assert grade("\\boxed{}", "") == 0.0  # empty extraction never scores
    assert grade("\\boxed{ }", " ", mode="equiv") == 0.0
    with pytest.raises(ValueError):
        grade("\\boxed{1}", "1", mode="sympy")


# ----------------------------------------------------------------------------------------------
# inline and process-pool graders
# ----------------------------------------------------------------------------------------------

POOL_PAIRS = [
    ("so \\boxed{0.5}", "\\frac{1}{2}"),
    ("\\boxed{\\sqrt{12}}", "2\\sqrt3"),
    ("\\boxed{7}", "8"),
    ("no answer", "1"),
    ("\\boxed{(1,2)}", "(1, 2)"),
]
POOL_ANSWERS = [extract_boxed_answer(response) for response, _ in POOL_PAIRS]
POOL_TRUTHS = [truth for _, truth in POOL_PAIRS]
# An answer the test hook makes sleep inside the grading process; it would score 1.0 in time.
SLOW_ANSWER, SLOW_TRUTH = TEST_SLEEP_PREFIX + "1", "1"


def test_pool_inline_matches_grade():
    pool = InlineGrader()
    assert pool.grade(POOL_ANSWERS, POOL_TRUTHS, "reference") == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert pool.grade(POOL_ANSWERS, POOL_TRUTHS, "equiv") == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert pool.grade([], [], "equiv") == []
    assert pool.num_timeouts == 0
    with pytest.raises(ValueError):
        InlineGrader().grade(POOL_ANSWERS, POOL_TRUTHS, "nope")


def test_pool_from_non_main_thread_with_item_timeout(monkeypatch):
    # The worker process inherits this environment: the hook makes the marked item sleep.
    monkeypatch.setenv(TEST_SLEEP_ENV, "2.0")
    answers = POOL_ANSWERS[:2] + [SLOW_ANSWER] + POOL_ANSWERS[2:]
    truths = POOL_TRUTHS[:2] + [SLOW_TRUTH] + POOL_TRUTHS[2:]
    results = {}

    def worker():
        with ProcessPoolGrader(workers=1, timeout_s=0.3, chunk_size=3) as pool:
            results["equiv"] = pool.grade(answers, truths, "equiv")
            results["timeouts"] = pool.last_num_timeouts
            results["again"] = pool.grade(POOL_ANSWERS * 20, POOL_TRUTHS * 20, "reference")
            results["total_timeouts"] = pool.num_timeouts

    thread = threading.Thread(target=worker)
    start = time.perf_counter()
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert results["equiv"] == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert results["timeouts"] == 1
    assert results["again"] == [1.0, 0.0, 0.0, 0.0, 1.0] * 20
    assert results["total_timeouts"] == 1
    assert time.perf_counter() - start < 15


def test_pool_deadline_kills_a_stuck_worker(monkeypatch):
    # timeout_s=0 disables the in-worker alarm, so only the pool's global deadline can stop it.
    monkeypatch.setenv(TEST_SLEEP_ENV, "20")
    with ProcessPoolGrader(workers=1, timeout_s=0, chunk_size=1, deadline_slack_s=3.0) as pool:
        start = time.perf_counter()
        scores = pool.grade([POOL_ANSWERS[0], SLOW_ANSWER], [POOL_TRUTHS[0], SLOW_TRUTH], "reference")
        assert time.perf_counter() - start < 10
        assert scores == [1.0, 0.0]
        assert pool.last_num_timeouts == 1
        # a fresh pool replaces the killed one
        pool.timeout_s = 1.0
        assert pool.grade(POOL_ANSWERS[:1], POOL_TRUTHS[:1], "reference") == [1.0]
