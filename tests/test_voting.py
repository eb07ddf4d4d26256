"""Hand-computed majority votes, match rewards and Co-rewarding-I crossed labels."""

import pytest

from megatron_corew.rewards.grading import answers_equivalent
from megatron_corew.rewards.voting import crossed_labels, majority_vote, match_rewards


def test_majority_vote_counts():
    assert majority_vote(["3", "4", "3", "5", "4", "3"]) == "3"
    assert majority_vote(["1", "2", "2"]) == "2"
    assert majority_vote(["7"]) == "7"


def test_majority_vote_ties_go_to_first_seen():
    assert majority_vote(["a", "b", "b", "a"]) == "a"
    assert majority_vote(["b", "a", "a", "b"]) == "b"
    assert majority_vote(["x", "y", "z"]) == "x"
    # the first answer to reach the top count is not the point: first SEEN wins
    assert majority_vote(["1", "2", "2", "1", "3"]) == "1"


def test_empty_answers_never_vote():
    assert majority_vote(["", "", "", "5"]) == "5"
    assert majority_vote(["", " ", "\n", "2", "3", "3"]) == "3"
    assert majority_vote(["", "", ""]) == ""
    assert majority_vote(["  ", None]) == ""
    assert majority_vote([]) == ""


def test_majority_vote_is_raw_string_equality_by_default():
    # "0.5", "1/2" and "\frac{1}{2}" are three different strings for the reference vote
    answers = ["0.5", "\\frac{1}{2}", "1/2", "7", "7"]
    assert majority_vote(answers) == "7"


def test_majority_vote_with_equivalence_clusters_forms():
    answers = ["0.5", "\\frac{1}{2}", "1/2", "7", "7"]
    assert majority_vote(answers, equivalent=answers_equivalent) == "0.5"  # representative
    answers = ["7", "\\frac{1}{2}", "7", "0.5"]  # 2 vs 2: cluster of "7" was seen first
    assert majority_vote(answers, equivalent=answers_equivalent) == "7"
    answers = ["", "\\frac{2}{4}", "8", "0.5", "", "8", "1/2"]
    assert majority_vote(answers, equivalent=answers_equivalent) == "\\frac{2}{4}"


def test_majority_vote_equivalence_joins_first_matching_cluster():
    # a toy relation: answers are equivalent when their first characters match
    same_first = lambda a, b: a[0] == b[0]  # noqa: E731
    answers = ["ab", "ac", "b1", "b2", "b3", "ad"]
    # clusters: "ab" <- {ab, ac, ad} (3), "b1" <- {b1, b2, b3} (3): tie -> first seen
    assert majority_vote(answers, equivalent=same_first) == "ab"
    assert majority_vote(answers[:-1], equivalent=same_first) == "b1"


def test_match_rewards():
    assert match_rewards(["3", "4", "3", "", "3 "], "3") == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert match_rewards(["3", "", "4"], "") == [0.0, 0.0, 0.0]
    assert match_rewards(["", ""], "  ") == [0.0, 0.0]
    assert match_rewards([], "1") == []
    assert match_rewards(["0.5", "1/2", "\\frac12", "2"], "\\frac{1}{2}") == [0.0, 0.0, 0.0, 0.0]
    assert match_rewards(["0.5", "1/2", "\\frac12", "2", ""], "\\frac{1}{2}", equivalent=answers_equivalent) == [
        1.0,
        1.0,
        1.0,
        0.0,
        0.0,
    ]


def test_crossed_labels_swap_views():
    orig = [
        ["1", "1", "2", ""],  # majority "1"
        ["", "", "", ""],  # no label
        ["5", "6", "6", "5"],  # tie -> "5"
    ]
    reph = [
        ["2", "2", "1", "3"],  # majority "2"
        ["9", "", "8", "8"],  # majority "8"
        ["", "", "", ""],  # no label
    ]
    labels_for_orig, labels_for_reph = crossed_labels(orig, reph)
    assert labels_for_orig == ["2", "8", ""]
    assert labels_for_reph == ["1", "", "5"]
    # the rewards that follow: original rollouts are scored against the rephrased vote
    assert match_rewards(orig[0], labels_for_orig[0]) == [0.0, 0.0, 1.0, 0.0]
    assert match_rewards(reph[0], labels_for_reph[0]) == [0.0, 0.0, 1.0, 0.0]


def test_crossed_labels_with_equivalence():
    orig = [["0.5", "1/2", "3"]]
    reph = [["\\frac{1}{2}", "4", "4"]]
    assert crossed_labels(orig, reph) == (["4"], ["0.5"])
    assert crossed_labels(orig, reph, equivalent=answers_equivalent) == (["4"], ["0.5"])
    reph = [["\\frac{1}{2}", "4", "4", "0.5", "\\dfrac12"]]
    assert crossed_labels(orig, reph, equivalent=answers_equivalent) == (["\\frac{1}{2}"], ["0.5"])
    assert crossed_labels(orig, reph) == (["4"], ["0.5"])


def test_crossed_labels_validates_lengths():
    with pytest.raises(ValueError, match="1 original and 2 rephrased"):
        crossed_labels([["1"]], [["1"], ["2"]])
    assert crossed_labels([], []) == ([], [])
