"""The score stage: a step's rollouts in, one reward per rollout and the reward/pseudo-label metrics out."""

from __future__ import annotations

from megatron_corew.rewards.grading import answers_equivalent, extract_boxed_answer, grade_answer
from megatron_corew.rewards.spec import Group, MethodSpec, ScoreOptions, checked_rewards, get_method
from megatron_corew.rewards.voting import majority_vote, match_rewards


def compute_rewards(
    method: str | MethodSpec,
    groups: list[Group],
    *,
    label_matching: str = "exact",
    gt_grading: str = "reference",
    grader=None,
    stream: tuple = (),
    flags: tuple = (),
) -> tuple[list[list[float]], dict]:
    """Rewards per group and rollout, plus pseudo-label metrics.

    label_matching: "exact" (reference: raw string equality for votes) or "equiv" (cluster equivalent answers
    before voting and when matching the label). gt_grading: "reference" (MATH normalisation) or "equiv".
    grader: grades extracted (answer, ground truth) pairs elsewhere for ground-truth rewards (a ``Grader``)."""
    spec = method if isinstance(method, MethodSpec) else get_method(method)
    options = ScoreOptions(label_matching, gt_grading, grader, stream, flags)
    rewards = checked_rewards(spec, groups, options)
    metrics = (
        {}
        if spec.needs_ground_truth
        else label_metrics(groups, gt_grading, with_label=spec.pseudo_labels, label_matching=label_matching)
    )
    if spec.extra_metrics is not None:
        metrics.update(spec.extra_metrics(groups, gt_grading))
    return rewards, metrics


def label_metrics(groups: list[Group], gt_grading: str, with_label: bool, label_matching: str = "exact") -> dict:
    """How good are the pseudo-labels? Accuracies only where ground truth exists (never trained on); the
    label-free rates (non-empty labels, rollouts matching their label as the rewards match them) always."""
    out: dict = {}
    if with_label and groups:
        out["pseudo/label_nonempty"] = sum(1.0 for g in groups if g.label) / len(groups)
        total = sum(len(g.answers) for g in groups)
        equiv = answers_equivalent if label_matching == "equiv" else None
        hits = sum(sum(match_rewards(g.answers, g.label or "", equiv)) for g in groups)
        out["pseudo/match_label_rate"] = hits / max(total, 1)
    graded = [g for g in groups if g.ground_truth is not None]
    if not graded:
        return out
    own_votes = [majority_vote(g.answers) for g in graded]
    out["pseudo/policy_vote_acc"] = sum(
        grade_answer(v, g.ground_truth, gt_grading) for v, g in zip(own_votes, graded)
    ) / len(graded)
    if with_label:
        out["pseudo/label_acc"] = sum(grade_answer(g.label, g.ground_truth, gt_grading) for g in graded) / len(graded)
        out.update(reference_label_metrics(graded))
    # single rollouts against ground truth: reward/gt_accuracy (rollout_metrics), computed once per step
    return out


def reference_label_metrics(groups: list[Group]) -> dict:
    """The Co-rewarding reference code's pseudo-label accuracy (the paper's curves), next to ours: the label
    equals the ground truth as stripped strings (no MATH normalisation), counted per rollout and divided by the
    rollouts whose label is non-empty (ours: per group, normalised, over all groups). 0 when no label is."""
    with_label = [g for g in groups if g.label and g.label.strip()]
    rollouts = sum(len(g.answers) for g in with_label)
    hits = sum(len(g.answers) for g in with_label if g.label.strip() == str(g.ground_truth).strip())
    return {"pseudo/ref_label_acc": hits / rollouts if rollouts else 0.0}


def decode(rollouts, tokenizer, extract=extract_boxed_answer) -> None:
    """Fill each rollout's response text and its answer (``extract``: rewards/extract.py, the last boxed by
    default); votes and rewards compare these answers."""
    for r in rollouts:
        r.text = tokenizer.decode(r.generation.response_ids, skip_special_tokens=True)
        r.answer = extract(r.text)


def score_batch(batch, spec: MethodSpec, options: ScoreOptions) -> dict:
    """Set ``reward`` on every rollout of ``batch`` (and the group labels); return the step's reward metrics."""
    groups = [
        Group(
            answers=[r.answer for r in rollouts],
            ground_truth=prompt.example.ground_truth,
            view=prompt.view,
            pair_id=prompt.pair_id,
            teacher_answers=[t.answer for t in batch.teacher_group(k)] if batch.teacher_rollouts else None,
            seq_stats=[r.seq_stats for r in rollouts] if spec.sequence_stats else [],
        )
        for k, (prompt, rollouts) in enumerate(zip(batch.prompts, batch.groups()))
    ]
    rewards, metrics = compute_rewards(
        spec,
        groups,
        label_matching=options.label_matching,
        gt_grading=options.gt_grading,
        grader=options.grader,
        stream=(options.stream[0] if options.stream else 0, batch.step, batch.round),
        flags=options.flags,
    )
    for k, (group, rollouts) in enumerate(zip(groups, batch.groups())):
        batch.labels.append(group.label)
        for r, reward in zip(rollouts, rewards[k]):
            r.reward = reward
    return {**metrics, **rollout_metrics(batch, spec, options.gt_grading)}


def rollout_metrics(batch, spec: MethodSpec, gt_grading: str) -> dict:
    """Reward, length, truncation and format rates of the step, and how often ground truth would have agreed
    (logged only, never trained on, for label-free methods)."""
    rs = batch.rollouts
    lengths = [len(r.generation.response_ids) for r in rs]
    out = {
        "reward/mean": sum(r.reward for r in rs) / len(rs),
        "rollout/response_length_mean": sum(lengths) / len(lengths),
        "rollout/response_length_max": max(lengths),
        "rollout/clip_ratio": sum(r.generation.finish_reason == "length" for r in rs) / len(rs),
        "rollout/boxed_rate": sum(bool(r.answer) for r in rs) / len(rs),
    }
    labelled = [r for r in rs if r.example.ground_truth is not None]
    if spec.needs_ground_truth:
        out["reward/gt_accuracy"] = out["reward/mean"]
    elif labelled:
        out["reward/gt_accuracy"] = sum(
            grade_answer(r.answer, r.example.ground_truth, gt_grading) for r in labelled
        ) / len(labelled)
    if batch.teacher_rollouts:
        out["rollout/teacher_response_length_mean"] = sum(
            len(t.generation.response_ids) for t in batch.teacher_rollouts
        ) / len(batch.teacher_rollouts)
    return out


class _CountingGrader:
    """A grader that also counts the answers it was sent (logged as ``reward/graded_by_workers``)."""

    def __init__(self, grader):
        self.grader = grader
        self.count = 0

    def grade(self, answers, ground_truths, mode="reference"):
        self.count += len(answers)
        return self.grader.grade(answers, ground_truths, mode)

    def take_count(self) -> int:
        """Answers graded since the last call (one step's worth)."""
        count, self.count = self.count, 0
        return count


def remote_grader(engine):
    """The rollout fleet's reward grader (Ray reward workers: math grading is CPU-bound, so off the training
    process) as a counting ``Grader``, or None when the engine has none (rewards are graded inline)."""
    grader = getattr(engine, "grader", None)
    return _CountingGrader(grader) if grader is not None else None
