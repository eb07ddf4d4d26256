"""The one grading contract (megatron_corew/rewards/grading/workers.py) on every grader: same scores on
hand-labelled answers, the per-item timeout rule, blank answers and missing ground truths, and extracted
answers graded as they are (never wrapped in a box again).

RayGrader is exercised here with a fake fleet that runs ``grade_answers`` in this process; the real Ray
reward workers are tested by tests/test_sglang.py."""

import os
import time

import pytest

from megatron_corew.rewards.grading import (
    DEFAULT_ITEM_TIMEOUT_S,
    InlineGrader,
    ProcessPoolGrader,
    RayGrader,
    extract_boxed_answer,
    grade,
    grade_answer,
    grade_answers,
    workers,
)
from megatron_corew.rewards.grading.workers import TEST_SLEEP_ENV, TEST_SLEEP_PREFIX

# (extracted answer, ground truth, reference score, equiv score), labelled by hand.
CASES = [
    ("3", "3", 1.0, 1.0),
    ("4", "3", 0.0, 0.0),
    ("\\dfrac12", "\\frac{1}{2}", 1.0, 1.0),
    ("0.5", "\\frac{1}{2}", 1.0, 1.0),
    ("0.50", "\\frac{1}{2}", 0.0, 1.0),  # reference maps only the literal "0.5"
    ("\\sqrt{12}", "2\\sqrt{3}", 0.0, 1.0),
    ("10\\%", "10", 1.0, 1.0),
    ("x = 5", "5", 1.0, 1.0),
    ("(1,2)", "(2, 1)", 0.0, 0.0),
    ("\\{1, 2\\}", "\\{2, 1\\}", 0.0, 1.0),
    ("x^2-1", "(x-1)(x+1)", 0.0, 1.0),
    ("", "3", 0.0, 0.0),  # blank answer
    ("   ", "3", 0.0, 0.0),
    ("3", None, 0.0, 0.0),  # missing ground truth
]
ANSWERS = [c[0] for c in CASES]
TRUTHS = [c[1] for c in CASES]
EXPECTED = {"reference": [c[2] for c in CASES], "equiv": [c[3] for c in CASES]}


class FakeFleet:
    """Stands in for the Ray fleet: its reward workers run ``grade_answers`` with the caller's arguments."""

    def __init__(self):
        self.calls = []

    def grade_answers(self, answers, ground_truths, mode, timeout_s):
        self.calls.append((list(answers), list(ground_truths), mode, timeout_s))
        return grade_answers(answers, ground_truths, mode, timeout_s)


@pytest.fixture(scope="module")
def pool():
    """One worker process for the module; the sleep hook is armed for answers carrying its marker only."""
    previous = os.environ.get(TEST_SLEEP_ENV)
    os.environ[TEST_SLEEP_ENV] = "3.0"  # read by the spawned worker at each marked item
    try:
        with ProcessPoolGrader(workers=1, timeout_s=0.5) as grader:
            yield grader
    finally:
        if previous is None:
            os.environ.pop(TEST_SLEEP_ENV, None)
        else:
            os.environ[TEST_SLEEP_ENV] = previous


@pytest.mark.parametrize("mode", ["reference", "equiv"])
def test_three_graders_agree_with_the_labels_and_grade_answer(pool, mode):
    fleet = FakeFleet()
    graders = {"inline": InlineGrader(), "pool": pool, "ray": RayGrader(fleet)}
    for name, grader in graders.items():
        assert grader.grade(ANSWERS, TRUTHS, mode) == EXPECTED[mode], name
    assert grade_answers(ANSWERS, TRUTHS, mode) == [grade_answer(a, t, mode) for a, t in zip(ANSWERS, TRUTHS)]
    assert fleet.calls == [(ANSWERS, TRUTHS, mode, DEFAULT_ITEM_TIMEOUT_S)]


def test_unknown_mode_and_mismatched_lengths_raise(pool):
    for grader in (InlineGrader(), pool, RayGrader(FakeFleet())):
        with pytest.raises(ValueError, match="grading mode"):
            grader.grade(["1"], ["1"], "sympy")
        with pytest.raises(ValueError, match="ground truths"):
            grader.grade(["1", "2"], ["1"])


def test_inline_item_over_the_limit_or_raising_scores_zero_and_the_rest_are_graded(monkeypatch):
    real = workers.grade_answer

    def slow_or_broken(answer, ground_truth, mode):
        if answer == "slow":
            time.sleep(5.0)
        if answer == "broken":
            raise RuntimeError("grader bug")
        return real(answer, ground_truth, mode)

    monkeypatch.setattr(workers, "grade_answer", slow_or_broken)
    grader = InlineGrader(timeout_s=0.3)
    start = time.perf_counter()
    scores = grader.grade(["1", "slow", "2", "broken", "0.5"], ["1", "slow", "3", "broken", "\\frac12"])
    assert time.perf_counter() - start < 3.0
    assert scores == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert grader.last_num_timeouts == 1
    assert grade_answers(["slow", "1"], ["slow", "1"], timeout_s=0.3) == [0.0, 1.0]


def test_pool_item_over_the_limit_scores_zero_and_the_rest_are_graded(pool):
    answers = ["1", TEST_SLEEP_PREFIX + "1", "2", "0.5"]
    truths = ["1", "1", "3", "\\frac12"]
    pool.grade(["1"], ["1"])  # the worker is started: the time below is grading only
    start = time.perf_counter()
    assert pool.grade(answers, truths) == [1.0, 0.0, 0.0, 1.0]
    assert time.perf_counter() - start < 2.5
    assert pool.last_num_timeouts == 1


def test_blank_answers_and_missing_truths_score_zero_without_grading(monkeypatch):
    graded = []
    monkeypatch.setattr(workers, "grade_answer", lambda *args: graded.append(args) or 1.0)
    answers, truths = ["", "  \n", "5", None], ["5", "5", None, "5"]
    assert grade_answers(answers, truths, "equiv") == [0.0, 0.0, 0.0, 0.0]
    assert InlineGrader().grade(answers, truths) == [0.0, 0.0, 0.0, 0.0]
    assert RayGrader(FakeFleet()).grade(answers, truths) == [0.0, 0.0, 0.0, 0.0]
    assert graded == []


def test_extracted_answer_is_graded_as_it_is_never_rewrapped(pool):
    # "\boxed " (space form) runs to the next "$": the answer is "5}", which is not 5. Wrapping it in a box
    # again and re-extracting would read "5" and score 1.
    text = "$\\boxed 5}$"
    answer = extract_boxed_answer(text)
    assert answer == "5}"
    assert grade("\\boxed{" + answer + "}", "5") == 1.0
    for mode in ("reference", "equiv"):
        assert grade(text, "5", mode) == 0.0
        for grader in (InlineGrader(), pool, RayGrader(FakeFleet())):
            assert grader.grade([answer], ["5"], mode) == [0.0]
