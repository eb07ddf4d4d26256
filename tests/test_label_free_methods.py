"""Co-rewarding-III and the label-free baselines on hand-built groups: every expected reward, label and metric
below was worked out by hand (comments), not by the code under test."""

import random

import pytest

from megatron_corew.rewards import Group, compute_rewards
from megatron_corew.rewards.baselines import harmonic_label, semantic_clusters


# ---------------------------------------------------------------- Co-rewarding-III
def _pair(policy0, policy1, teacher0, teacher1, gt="5", pair_id=0):
    return [
        Group(answers=policy0, ground_truth=gt, view=0, pair_id=pair_id, teacher_answers=teacher0),
        Group(answers=policy1, ground_truth=gt, view=1, pair_id=pair_id, teacher_answers=teacher1),
    ]


def test_corewarding_3_labels_each_view_with_the_teacher_vote_on_the_other_view():
    # teacher votes: "5" on the original (3 of 4), "7" on the rephrasing (2 of 4; "" never votes)
    groups = _pair(
        policy0=["5", "7", "7", ""],
        policy1=["5", "5", "7", "9"],
        teacher0=["5", "5", "5", "7"],
        teacher1=["7", "7", "", "5"],
    )
    rewards, metrics = compute_rewards("corewarding_3", groups)
    assert [g.label for g in groups] == ["7", "5"]  # crossed: never the teacher's vote on the same view
    assert rewards == [[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
    assert metrics["pseudo/teacher_vote_acc_original"] == 1.0  # its "5" is the ground truth
    assert metrics["pseudo/teacher_vote_acc_rephrased"] == 0.0  # its "7" is not
    assert metrics["pseudo/policy_vote_acc_original"] == 0.0  # the policy's own vote on view 0 is "7"
    assert metrics["pseudo/policy_vote_acc_rephrased"] == 1.0  # "5" (2 of 4)
    assert metrics["pseudo/cross_view_agreement"] == 0.0
    assert metrics["pseudo/label_nonempty_original"] == metrics["pseudo/label_nonempty_rephrased"] == 1.0


def test_corewarding_3_counts_each_sides_labels_separately_and_agreement():
    # pair 0: the teacher is silent on the rephrasing -> the original gets no label; pair 1: both views vote "4"
    groups = _pair(["5", "5"], ["5", "5"], ["5", "5"], ["", ""], pair_id=0) + _pair(
        ["4", "3"], ["4", "4"], ["4", "4"], ["4.0", "4"], gt="4", pair_id=1
    )
    rewards, metrics = compute_rewards("corewarding_3", groups)
    assert [g.label for g in groups] == ["", "5", "4.0", "4"]
    assert rewards[0] == [0.0, 0.0] and rewards[1] == [1.0, 1.0]
    assert metrics["pseudo/label_nonempty_original"] == 0.5  # one of two original groups has a label
    assert metrics["pseudo/label_nonempty_rephrased"] == 1.0  # never overwritten by the other side's count
    assert metrics["pseudo/cross_view_agreement"] == 1.0  # only pair 1 has two votes: "4" and "4.0" agree


def test_corewarding_3_needs_both_views_and_teacher_rollouts():
    with pytest.raises(ValueError, match="lacks one of its two views"):
        compute_rewards("corewarding_3", _pair(["5"], ["5"], ["5"], ["5"])[:1])
    with pytest.raises(ValueError, match="teacher rollouts"):
        compute_rewards("corewarding_3", _pair(["5"], ["5"], None, ["5"]))


# ---------------------------------------------------------------- random reward
def test_random_reward_is_the_seeded_stream_whatever_the_text():
    a = [Group(answers=["5", "5", "5"]), Group(answers=["", "x", "7"])]
    b = [Group(answers=["9", "", "1"]), Group(answers=["2", "2", "2"])]
    ra, _ = compute_rewards("random_reward", a, stream=(3, 10, 0), flags=(("random_reward_p", 0.5),))
    rb, _ = compute_rewards("random_reward", b, stream=(3, 10, 0), flags=(("random_reward_p", 0.5),))
    assert ra == rb  # the text is never read
    # the stream, written out: one Random per (seed, step, round), one uniform draw per rollout in batch order
    rng = random.Random("random-reward:3:10:0")
    assert [x for g in ra for x in g] == [1.0 if rng.random() < 0.5 else 0.0 for _ in range(6)]
    rc, _ = compute_rewards("random_reward", a, stream=(3, 11, 0), flags=(("random_reward_p", 0.5),))
    many = [Group(answers=[""] * 100) for _ in range(50)]
    rates = {
        p: sum(map(sum, compute_rewards("random_reward", many, stream=(1, 0, 0), flags=(("random_reward_p", p),))[0]))
        / 5000
        for p in (0.0, 0.3, 1.0)
    }
    assert rates[0.0] == 0.0 and rates[1.0] == 1.0 and abs(rates[0.3] - 0.3) < 0.02
    assert rc != ra  # a new step draws anew


# ---------------------------------------------------------------- semantic entropy
def test_semantic_entropy_reward_is_the_cluster_mass():
    answers = ["1/2", "3", "0.5", "", "\\frac{1}{2}", "3", "7", "0.5"]
    assert semantic_clusters(answers) == [0, 1, 0, -1, 0, 1, 2, 0]
    groups = [Group(answers=answers, ground_truth="\\frac12")]
    rewards, metrics = compute_rewards("semantic_entropy", groups, gt_grading="equiv")
    # clusters of 8: {1/2, 0.5, \frac{1}{2}, 0.5} = 4/8, {3, 3} = 2/8, {7} = 1/8; the blank scores 0
    assert rewards == [[0.5, 0.25, 0.5, 0.0, 0.5, 0.25, 0.125, 0.5]]
    assert groups[0].label == "1/2" and metrics["pseudo/label_acc"] == 1.0


# ---------------------------------------------------------------- Self-Harmony's label
def test_harmonic_mean_label_prefers_the_answer_stable_across_views():
    original = ["A", "A", "A", "B", "B", "C"]
    paraphrase = ["B", "B", "B", "A", "D", "D"]
    # A: 3/6 and 1/6 -> 2 * (1/2 * 1/6) / (2/3) = 0.25;  B: 2/6 and 3/6 -> 2 * (1/3 * 1/2) / (5/6) = 0.4
    # C: 1/6 and 0 -> 0;  D never appears in the original. Majority vote on the original alone would say A.
    assert harmonic_label(original, paraphrase) == "B"
    assert harmonic_label(["A", "B"], ["B", "A"]) == "A"  # a tie goes to the first answer of the original
    assert harmonic_label(["A", "A"], ["B", ""]) == ""  # no answer in both views: no label
    groups = [
        Group(answers=original, view=0, pair_id=0, ground_truth="B"),
        Group(answers=paraphrase, view=1, pair_id=0, ground_truth="B"),
    ]
    rewards, metrics = compute_rewards("self_harmony", groups)
    assert rewards == [[0, 0, 0, 1, 1, 0], [1, 1, 1, 0, 0, 0]]
    assert metrics["pseudo/label_acc"] == 1.0


# ---------------------------------------------------------------- Self-Harmony's reframer and its gate
QUESTION = "Ana saved 40 dollars in May and 47 dollars in June. How many dollars did she save altogether?"
GOOD = "In May Ana put away 40 dollars, and in June she put away 47 dollars. What is the total number of dollars she saved?"


def _reply(rewrite):
    return f"### RESULT_START\nORIGINAL:\n{QUESTION}\nREWRITE:\n{rewrite}\n### RESULT_END"


def test_reframer_rewrites_pass_the_quality_gate_and_its_counts_are_logged(tok):
    from megatron_corew.data.dataset import Example, render_prompt
    from megatron_corew.data.online_rephrase import reframe_prompt_ids, reframed_examples
    from megatron_corew.data.prompts import chat_messages

    messages = chat_messages(QUESTION)
    text, ids = render_prompt(tok, messages)
    ex = [Example(i, messages, "87", "tiny", {}, ids, text) for i in range(4)]
    replies = [
        _reply(GOOD),  # kept
        _reply(GOOD.replace("40", "41")),  # a number changed: flagged
        "Sure! Here is a rewrite: " + GOOD,  # no markers: unparsed
        _reply(GOOD + " Show all steps." * 40),  # kept by the gate, but longer than the prompt limit
    ]
    out, metrics = reframed_examples(tok, ex, replies, max_prompt_length=len(ids) + 30)
    assert metrics == {
        "reframe/kept": 1.0,
        "reframe/unparsed": 1.0,
        "reframe/flagged": 1.0,
        "reframe/too_long": 1.0,
        "reframe/flagged_number_changed": 1.0,
    }
    assert out[0].messages[-1]["content"] == GOOD and out[0].messages[0] == messages[0]  # system prompt kept
    assert out[0].prompt_ids == render_prompt(tok, out[0].messages)[1] and out[0].ground_truth == "87"
    assert all(o is e for o, e in zip(out[1:], ex[1:]))  # every rejected rewrite falls back to the question
    prompt = tok.decode(reframe_prompt_ids(tok, ex[:1])[0])
    assert "RESULT_START" in prompt and QUESTION in prompt
