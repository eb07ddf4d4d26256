"""The six reward methods on one interface: groups of rollouts in, one scalar per rollout out.

A ``Group`` is the G rollouts sampled for one question (one view of a pair for Co-rewarding-I).
Ground truth is only read by ``gt``; every other method gets it solely to *log* how good its
pseudo-labels are.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from megatron_corew.rewards.grading.core import answers_equivalent, grade_answer
from megatron_corew.rewards.voting import crossed_labels, majority_vote, match_rewards

METHODS = ("gt", "majority_vote", "self_certainty", "entropy", "corewarding_1", "corewarding_2")

# Reference defaults: the KL anchor and its coefficient per method (ALGORITHMS.md section 3).
METHOD_DEFAULTS = {
    "gt": {"kl_coef": 0.005, "anchor": "initial"},
    "majority_vote": {"kl_coef": 0.005, "anchor": "initial"},
    "self_certainty": {"kl_coef": 0.005, "anchor": "initial"},
    "entropy": {"kl_coef": 0.005, "anchor": "initial"},
    "corewarding_1": {"kl_coef": 0.005, "anchor": "initial"},
    "corewarding_2": {"kl_coef": 0.001, "anchor": "teacher"},
}


@dataclass
class Group:
    answers: list[str]                      # extracted answers of the policy rollouts ("" = none)
    ground_truth: str | None = None
    view: int = 0                           # 0 original question, 1 rephrased (Co-rewarding-I)
    pair_id: int = 0                        # ties the two views of one Co-rewarding-I pair
    teacher_answers: list[str] | None = None  # Co-rewarding-II
    seq_stats: list[dict] = field(default_factory=list)  # per rollout: self_certainty / entropy means
    label: str = ""                         # filled in: the pseudo-label used (voting methods)


def _equiv_fn(equivalence: str):
    return answers_equivalent if equivalence == "equiv" else None


def _grade_groups(groups: list[Group], mode: str, grader=None) -> list[list[float]]:
    """Ground-truth scores per group and rollout; ``grader(pairs, mode)`` grades the (answer, ground truth) pairs
    elsewhere (the Ray reward workers) -- empty answers and unlabelled groups score 0 without being sent."""
    if grader is None:
        return [[grade_answer(a, g.ground_truth, mode) for a in g.answers] for g in groups]
    flat = [(a, g.ground_truth) for g in groups for a in g.answers]
    send = [i for i, (a, gt) in enumerate(flat) if a and gt is not None]
    scores = [0.0] * len(flat)
    graded = list(grader([flat[i] for i in send], mode))
    if len(graded) != len(send):
        raise RuntimeError(f"the reward graders returned {len(graded)} scores for {len(send)} answers")
    for i, score in zip(send, graded):
        scores[i] = float(score)
    out, k = [], 0
    for g in groups:
        out.append(scores[k:k + len(g.answers)])
        k += len(g.answers)
    return out


def compute_rewards(method: str, groups: list[Group], *, label_matching: str = "exact",
                    gt_grading: str = "reference", grader=None) -> tuple[list[list[float]], dict]:
    """Rewards per group and rollout, plus pseudo-label metrics.

    label_matching: "exact" (reference: raw string equality for votes) or "equiv" (cluster
    equivalent answers before voting and when matching the label).
    gt_grading: "reference" (MATH normalisation) or "equiv" (our equivalence checker).
    grader: optional parallel grader of (answer, ground truth) pairs for the ``gt`` rewards."""
    if method not in METHODS:
        raise ValueError(f"--reward-method {method!r} is not one of {', '.join(METHODS)}")
    equiv = _equiv_fn(label_matching)
    if method == "gt":
        return _grade_groups(groups, gt_grading, grader), {}
    if method in ("self_certainty", "entropy"):
        key = "self_certainty" if method == "self_certainty" else "entropy"
        sign = 1.0 if method == "self_certainty" else -1.0
        rewards = [[sign * s[key] for s in g.seq_stats] for g in groups]
        return rewards, _label_metrics(groups, gt_grading, with_label=False)
    if method == "majority_vote":
        for g in groups:
            g.label = majority_vote(g.answers, equiv)
    elif method == "corewarding_1":
        by_pair: dict[int, dict[int, Group]] = {}
        for g in groups:
            by_pair.setdefault(g.pair_id, {})[g.view] = g
        for pair_id, views in by_pair.items():
            if set(views) != {0, 1}:
                raise ValueError(f"Co-rewarding-I pair {pair_id} lacks one of its two views")
        pairs = list(by_pair.values())
        orig_labels, reph_labels = crossed_labels([p[0].answers for p in pairs], [p[1].answers for p in pairs], equiv)
        for p, lo, lr in zip(pairs, orig_labels, reph_labels):
            p[0].label, p[1].label = lo, lr
    elif method == "corewarding_2":
        for g in groups:
            if g.teacher_answers is None:
                raise ValueError("Co-rewarding-II needs teacher rollouts for every group")
            g.label = majority_vote(g.teacher_answers, equiv)
    rewards = [match_rewards(g.answers, g.label, equiv) for g in groups]
    return rewards, _label_metrics(groups, gt_grading, with_label=True)


def _label_metrics(groups: list[Group], gt_grading: str, with_label: bool) -> dict:
    """How good are the pseudo-labels? Accuracies only where ground truth exists (never trained on); the
    label-free rates (non-empty labels, rollouts matching their label) always."""
    out: dict = {}
    if with_label and groups:
        out["pseudo/label_nonempty"] = sum(1.0 for g in groups if g.label) / len(groups)
        total = sum(len(g.answers) for g in groups)
        out["pseudo/match_label_rate"] = sum(a == g.label and bool(a) for g in groups for a in g.answers) / max(total, 1)
    graded = [g for g in groups if g.ground_truth is not None]
    if not graded:
        return out
    own_votes = [majority_vote(g.answers) for g in graded]
    out["pseudo/policy_vote_acc"] = sum(grade_answer(v, g.ground_truth, gt_grading) for v, g in zip(own_votes, graded)) / len(graded)
    if with_label:
        out["pseudo/label_acc"] = sum(grade_answer(g.label, g.ground_truth, gt_grading) for g in graded) / len(graded)
        out["pseudo/label_nonempty"] = sum(1.0 for g in groups if g.label) / len(groups)
        total = sum(len(g.answers) for g in groups)
        out["pseudo/match_label_rate"] = sum(a == g.label and bool(a) for g in groups for a in g.answers) / max(total, 1)
    out["pseudo/rollout_gt_acc"] = (sum(grade_answer(a, g.ground_truth, gt_grading) for g in graded for a in g.answers)
                                    / max(sum(len(g.answers) for g in graded), 1))
    return out
