"""The selectable answer extractor (rewards/extract.py): hand-checked responses for every format, the fallback
chain, the default that stays the reference's, and bad specs refused in one line."""

from __future__ import annotations

import pytest

from megatron_corew.rewards.extract import get_extractor, parse_format
from megatron_corew.rewards.grading import extract_boxed_answer

CASES = {
    "boxed": [
        ("so \\boxed{12} and then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("The answer is 7.", ""),
    ],
    "gsm8k": [
        ("She has 3 + 4 = 7 apples.\n#### 1,207\n", "1207"),
        ("#### 5\nwait\n#### 6.", "6"),
        ("The answer is 7.", ""),
    ],
    "answer-is": [
        ("3 + 4 = 7. So the answer is 7.", "7"),
        ("The final answer is: 1,234. Done.", "1234"),
        ("Thus the answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
        ("The answer is 2. Wait, no: the answer is -3.5", "-3.5"),
        ("It equals 7.", ""),
    ],
    "last-number": [
        ("12 apples and 3 pears make 15.", "15"),
        ("a loss of -4.25, or 1,000 in total", "1000"),
        ("a ratio of 3/4", "3/4"),
        ("none here", ""),
    ],
    "regex:Result: (\\w+)": [("Result: 4 ... Result: x9", "x9"), ("nothing", "")],
    "regex:\\d+%": [("40% then 55%", "55%")],
}


@pytest.mark.parametrize("spec", sorted(CASES))
def test_each_format_on_hand_checked_responses(spec):
    extract = get_extractor(spec)
    for text, answer in CASES[spec]:
        assert extract(text) == answer, (spec, text)


def test_chain_takes_the_first_non_empty_answer():
    extract = get_extractor("boxed,answer-is,last-number")
    assert extract("\\boxed{3}, though the answer is 4") == "3"
    assert extract("the answer is 4. Or 5") == "4"
    assert extract("we get 9 apples") == "9"
    assert extract("no idea") == ""
    assert get_extractor("answer-is, regex:=(\\d+)")("x=1, y=2") == "2"  # regex takes the rest, commas included


def test_default_is_the_reference_extraction():
    extract = get_extractor()
    for text in ["\\boxed 5$ and \\boxed{6}", "\\fbox{x}", "\\boxed{a", "\\boxed{{1}{2}}", "plain 3"]:
        assert extract(text) == extract_boxed_answer(text)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("boxd", "unknown answer format 'boxd'"),
        ("boxed,,", "unknown answer format ''"),
        ("regex:(", "bad regex '('"),
        ("", "empty answer format"),
    ],
)
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", "\\(")):
        parse_format(spec)
