"""Each reward method on hand-computed groups (the trainer-independent part of every method)."""

import pytest

from megatron_corew.rewards import Group, compute_rewards


def test_gt_uses_reference_normalisation_and_empty_scores_zero():
    g = Group(answers=["\\frac12", "0.5", "", "2"], ground_truth="\\frac{1}{2}")
    rewards, _ = compute_rewards("gt", [g])
    assert rewards == [[1.0, 1.0, 0.0, 0.0]]


def test_majority_vote_ties_to_first_and_metrics():
    g = Group(answers=["3", "4", "4", "3", ""], ground_truth="3")
    rewards, m = compute_rewards("majority_vote", [g])
    assert g.label == "3"  # 2 votes each: the first seen wins
    assert rewards == [[1.0, 0.0, 0.0, 1.0, 0.0]]
    assert m["pseudo/label_acc"] == 1.0 and m["pseudo/match_label_rate"] == pytest.approx(2 / 5)


def test_corewarding_1_labels_are_crossed():
    orig = Group(answers=["5", "5", "6", "7"], ground_truth="6", view=0, pair_id=0)
    reph = Group(answers=["6", "6", "5", "6"], ground_truth="6", view=1, pair_id=0)
    rewards, m = compute_rewards("corewarding_1", [orig, reph])
    assert orig.label == "6" and reph.label == "5"  # each view is labelled by the OTHER view's vote
    assert rewards == [[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    assert m["pseudo/label_acc"] == 0.5


def test_corewarding_1_missing_view_is_an_error():
    with pytest.raises(ValueError, match="lacks one of its two views"):
        compute_rewards("corewarding_1", [Group(answers=["1"], view=0, pair_id=3)])


def test_corewarding_2_teacher_vote_labels_policy():
    g = Group(answers=["8", "9", "", "8"], teacher_answers=["9", "", "9", "8"], ground_truth="9")
    rewards, m = compute_rewards("corewarding_2", [g])
    assert g.label == "9"
    assert rewards == [[0.0, 1.0, 0.0, 0.0]]
    assert m["pseudo/label_acc"] == 1.0 and m["pseudo/policy_vote_acc"] == 0.0
    empty = Group(answers=["1", "1"], teacher_answers=["", ""])
    assert compute_rewards("corewarding_2", [empty])[0] == [[0.0, 0.0]]  # empty label never scores


def test_equivalence_aware_voting_is_opt_in():
    g = Group(answers=["0.5", "\\frac{1}{2}", "1/2", "3", "3"], ground_truth="1/2")
    compute_rewards("majority_vote", [g])
    assert g.label == "3"  # reference: exact strings, 3 has two votes
    rewards, _ = compute_rewards("majority_vote", [g], label_matching="equiv")
    assert g.label == "0.5" and rewards == [[1.0, 1.0, 1.0, 0.0, 0.0]]


def test_self_certainty_and_entropy_signs():
    g = Group(
        answers=["", ""], seq_stats=[{"self_certainty": 2.0, "entropy": 0.5}, {"self_certainty": 1.0, "entropy": 1.5}]
    )
    assert compute_rewards("self_certainty", [g])[0] == [[2.0, 1.0]]
    assert compute_rewards("entropy", [g])[0] == [[-0.5, -1.5]]
    with pytest.raises(ValueError, match="--reward-method"):
        compute_rewards("nope", [g])


def test_gt_with_an_outside_grader_sends_only_gradeable_pairs():
    """A Grader elsewhere (process pool, Ray reward workers): same scores as inline; blank answers and unlabelled
    groups are never sent, and the extracted answers travel as they are (never re-wrapped in a box)."""
    from megatron_corew.rewards.grading import grade_answer

    sent = []

    class RecordingGrader:
        def __init__(self, scores=None):
            self.scores = scores

        def grade(self, answers, ground_truths, mode="reference"):
            sent.extend(zip(answers, ground_truths))
            if self.scores is not None:
                return self.scores
            return [grade_answer(a, gt, mode) for a, gt in zip(answers, ground_truths)]

    grader = RecordingGrader()
    groups = [
        Group(answers=["2", "", "\\frac12", "3"], ground_truth="2"),
        Group(answers=["0.5", "1/2"], ground_truth="\\frac{1}{2}"),
        Group(answers=["7", "7"], ground_truth=None),
    ]
    inline, _ = compute_rewards("gt", groups)
    remote, _ = compute_rewards("gt", groups, grader=grader)
    assert (
        remote == inline == [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    )  # MATH normalisation: 0.5, 1/2 = \\frac{1}{2}
    assert sent == [("2", "2"), ("\\frac12", "2"), ("3", "2"), ("0.5", "\\frac{1}{2}"), ("1/2", "\\frac{1}{2}")]
    with pytest.raises(RuntimeError, match="returned 0 scores for 5"):
        compute_rewards("gt", groups, grader=RecordingGrader(scores=[]))


def test_match_label_rate_follows_label_matching_equiv():
    # "0.5" and "\frac12" are one answer under equiv: the label ("0.5", 2 of 4 as written) is matched by 3 rollouts,
    # exactly as the rewards match it; under exact only the 2 identical strings match
    answers = ["0.5", "\\frac12", "0.5", "7"]
    rewards, m = compute_rewards("majority_vote", [Group(answers=answers, ground_truth="1/2")], label_matching="equiv")
    assert rewards == [[1.0, 1.0, 1.0, 0.0]]
    assert m["pseudo/match_label_rate"] == pytest.approx(3 / 4)
    _, m = compute_rewards("majority_vote", [Group(answers=answers, ground_truth="1/2")])
    assert m["pseudo/match_label_rate"] == pytest.approx(2 / 4)
