"""The built-in reward methods (docs/ALGORITHMS.md section 3), each one ``MethodSpec`` registration: the six
original ones, Co-rewarding-III, and the label-free baselines of ``rewards/baselines.py``.

Ground truth is read by ``gt`` only; every other method gets it solely so that the pseudo-label metrics can
say how good its labels were (never trained on).
"""

from __future__ import annotations

from megatron_corew.rewards import baselines
from megatron_corew.rewards.grading import answers_equivalent, grade_answer
from megatron_corew.rewards.spec import Group, MethodSpec, ScoreOptions, register
from megatron_corew.rewards.voting import crossed_labels, majority_vote, match_rewards


def equivalence_of(options: ScoreOptions):
    """The answer-matching function for votes: None (raw strings, the reference) or the equivalence checker."""
    return answers_equivalent if options.label_matching == "equiv" else None


def grade_groups(groups: list[Group], mode: str, grader=None) -> list[list[float]]:
    """Ground-truth scores per group and rollout. ``grader.grade(answers, ground_truths, mode)`` grades elsewhere
    (a process pool, the Ray reward workers); blank answers and unlabelled groups score 0 without being sent."""
    if grader is None:
        return [[grade_answer(a, g.ground_truth, mode) for a in g.answers] for g in groups]
    flat = [(a, g.ground_truth) for g in groups for a in g.answers]
    send = [i for i, (a, gt) in enumerate(flat) if a and gt is not None]
    scores = [0.0] * len(flat)
    graded = list(grader.grade([flat[i][0] for i in send], [flat[i][1] for i in send], mode))
    if len(graded) != len(send):
        raise RuntimeError(f"the reward graders returned {len(graded)} scores for {len(send)} answers")
    for i, score in zip(send, graded):
        scores[i] = float(score)
    out, k = [], 0
    for g in groups:
        out.append(scores[k : k + len(g.answers)])
        k += len(g.answers)
    return out


def _ground_truth(groups: list[Group], options: ScoreOptions) -> list[list[float]]:
    return grade_groups(groups, options.gt_grading, options.grader)


def _match_labels(groups: list[Group], options: ScoreOptions) -> list[list[float]]:
    equiv = equivalence_of(options)
    return [match_rewards(g.answers, g.label, equiv) for g in groups]


def _own_vote(groups: list[Group], options: ScoreOptions) -> list[list[float]]:
    equiv = equivalence_of(options)
    for g in groups:
        g.label = majority_vote(g.answers, equiv)
    return _match_labels(groups, options)


def _crossed_votes(groups: list[Group], options: ScoreOptions) -> list[list[float]]:
    """Co-rewarding-I: each view is rewarded for agreeing with the majority answer of the OTHER view."""
    by_pair: dict[int, dict[int, Group]] = {}
    for g in groups:
        by_pair.setdefault(g.pair_id, {})[g.view] = g
    for pair_id, views in by_pair.items():
        if set(views) != {0, 1}:
            raise ValueError(f"Co-rewarding-I pair {pair_id} lacks one of its two views")
    pairs = list(by_pair.values())
    original, rephrased = crossed_labels(
        [p[0].answers for p in pairs], [p[1].answers for p in pairs], equivalence_of(options)
    )
    for p, label_0, label_1 in zip(pairs, original, rephrased):
        p[0].label, p[1].label = label_0, label_1
    return _match_labels(groups, options)


def _teacher_vote(groups: list[Group], options: ScoreOptions) -> list[list[float]]:
    """Co-rewarding-II: the label is the majority answer of the EMA teacher's rollouts on the same question."""
    equiv = equivalence_of(options)
    for g in groups:
        if g.teacher_answers is None:
            raise ValueError("Co-rewarding-II needs teacher rollouts for every group")
        g.label = majority_vote(g.teacher_answers, equiv)
    return _match_labels(groups, options)


def _pairs(groups: list[Group], who: str) -> list[dict[int, Group]]:
    by_pair: dict[int, dict[int, Group]] = {}
    for g in groups:
        by_pair.setdefault(g.pair_id, {})[g.view] = g
    for pair_id, views in by_pair.items():
        if set(views) != {0, 1}:
            raise ValueError(f"{who} pair {pair_id} lacks one of its two views")
    return list(by_pair.values())


def _crossed_teacher_votes(groups: list[Group], options: ScoreOptions) -> list[list[float]]:
    """Co-rewarding-III: the EMA teacher answers both views; each view is labelled by the teacher's majority
    answer on the OTHER view (never its own)."""
    equiv = equivalence_of(options)
    for p in _pairs(groups, "Co-rewarding-III"):
        for g in p.values():
            if g.teacher_answers is None:
                raise ValueError("Co-rewarding-III needs teacher rollouts on both views of every pair")
            g.teacher_label = majority_vote(g.teacher_answers, equiv)
        p[0].label, p[1].label = p[1].teacher_label, p[0].teacher_label
    return _match_labels(groups, options)


def crossed_teacher_metrics(groups: list[Group], gt_grading: str) -> dict:
    """Per view: how many labels exist and (where ground truth exists, logged only) how often the teacher's and
    the policy's own votes are right; across views: how often the teacher's two votes agree."""
    pairs = _pairs(groups, "Co-rewarding-III")
    out = {}
    for view, name in ((0, "original"), (1, "rephrased")):
        side = [p[view] for p in pairs]
        out[f"pseudo/label_nonempty_{name}"] = sum(bool(g.label) for g in side) / len(side)
        graded = [g for g in side if g.ground_truth is not None]
        if graded:
            out[f"pseudo/teacher_vote_acc_{name}"] = sum(
                grade_answer(g.teacher_label, g.ground_truth, gt_grading) for g in graded
            ) / len(graded)
            out[f"pseudo/policy_vote_acc_{name}"] = sum(
                grade_answer(majority_vote(g.answers), g.ground_truth, gt_grading) for g in graded
            ) / len(graded)
    voted = [p for p in pairs if p[0].teacher_label and p[1].teacher_label]
    out["pseudo/cross_view_agreement"] = (
        sum(answers_equivalent(p[0].teacher_label, p[1].teacher_label) for p in voted) / len(voted) if voted else 0.0
    )
    return out


def _statistic(key: str, sign: float):
    def rewards(groups: list[Group], options: ScoreOptions) -> list[list[float]]:
        return [[sign * s[key] for s in g.seq_stats] for g in groups]

    return rewards


register(
    MethodSpec(
        "gt", _ground_truth, needs_ground_truth=True, summary="GT-GRPO: 1 when the answer matches the ground truth"
    )
)
register(
    MethodSpec("majority_vote", _own_vote, pseudo_labels=True, summary="the policy's own majority answer is the label")
)
register(
    MethodSpec(
        "self_certainty",
        _statistic("self_certainty", 1.0),
        sequence_stats=("self_certainty",),
        summary="mean KL(uniform || policy) over the response (confidence)",
    )
)
register(
    MethodSpec(
        "entropy", _statistic("entropy", -1.0), sequence_stats=("entropy",), summary="negative mean token entropy"
    )
)
register(
    MethodSpec(
        "corewarding_1",
        _crossed_votes,
        paired_views=True,
        pseudo_labels=True,
        summary="Co-rewarding-I: crossed majority votes between a question and its rephrasing",
    )
)
register(
    MethodSpec(
        "corewarding_2",
        _teacher_vote,
        kl_coef=0.001,
        anchor="teacher",
        teacher=True,
        pseudo_labels=True,
        summary="Co-rewarding-II: an EMA teacher's majority vote labels the student",
    )
)
register(
    MethodSpec(
        "corewarding_3",
        _crossed_teacher_votes,
        kl_coef=0.001,
        anchor="teacher",
        paired_views=True,
        teacher=True,
        pseudo_labels=True,
        extra_metrics=crossed_teacher_metrics,
        label_matching="equiv",  # the reference's III matches raw strings: "0.5" and "1/2" disagree there
        summary="Co-rewarding-III: the EMA teacher's vote on each view labels the other view",
    )
)
register(
    MethodSpec(
        "random_reward",
        baselines.random_rewards,
        reads_flags=("random_reward_p",),
        summary="control: a seeded Bernoulli(--random-reward-p) reward, independent of the text",
    )
)
register(
    MethodSpec(
        "semantic_entropy",
        baselines.semantic_entropy_rewards,
        pseudo_labels=True,
        fixed_label_matching=True,
        summary="EMPO: the probability mass of the rollout's answer cluster (equivalence clusters)",
    )
)
register(
    MethodSpec(
        "self_harmony",
        baselines.harmonic_rewards,
        paired_views=True,
        reframes=True,
        pseudo_labels=True,
        summary="Self-Harmony: the policy rephrases each question; the label maximises the harmonic mean of "
        "its frequencies over both views",
    )
)
