"""Majority-vote pseudo-labels and the rewards derived from them.

Matches the Co-rewarding reference: answers that are empty (or only whitespace) never vote and
never score, ties go to the answer seen first, and by default answers match by raw string
equality. An optional ``equivalent(a, b)`` callable (e.g. ``math_grader.answers_equivalent``)
clusters answers before counting so that ``0.5``, ``\\frac{1}{2}`` and ``1/2`` vote together.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

Equivalence = Optional[Callable[[str, str], bool]]

__all__ = ["majority_vote", "match_rewards", "crossed_labels"]


def _is_empty(answer) -> bool:
    return answer is None or str(answer).strip() == ""


def majority_vote(answers: Sequence[str], equivalent: Equivalence = None) -> str:
    """Most frequent non-empty answer ("" if none); ties resolve to the first-seen answer.

    With ``equivalent``, each answer joins the first cluster whose representative (its first
    member) it is equivalent to; the winner is reported by that representative.
    """
    representatives: list[str] = []
    counts: list[int] = []
    for answer in answers:
        if _is_empty(answer):
            continue
        for index, representative in enumerate(representatives):
            if answer == representative or (equivalent is not None and equivalent(answer, representative)):
                counts[index] += 1
                break
        else:
            representatives.append(answer)
            counts.append(1)
    if not representatives:
        return ""
    best = max(range(len(counts)), key=lambda i: (counts[i], -i))  # highest count, then earliest
    return representatives[best]


def match_rewards(answers: Sequence[str], label: str, equivalent: Equivalence = None) -> list[float]:
    """1.0 for each answer matching a non-empty ``label`` (raw equality or ``equivalent``)."""
    if _is_empty(label):
        return [0.0] * len(answers)
    rewards = []
    for answer in answers:
        hit = not _is_empty(answer) and (answer == label or (equivalent is not None and equivalent(answer, label)))
        rewards.append(1.0 if hit else 0.0)
    return rewards


def crossed_labels(
    orig_groups: Sequence[Sequence[str]],
    reph_groups: Sequence[Sequence[str]],
    equivalent: Equivalence = None,
) -> tuple[list[str], list[str]]:
    """Co-rewarding-I labels: each view is supervised by the OTHER view's majority answer.

    Returns ``(labels_for_original, labels_for_rephrased)`` where
    ``labels_for_original[i] = majority_vote(reph_groups[i])`` and
    ``labels_for_rephrased[i] = majority_vote(orig_groups[i])``.
    """
    if len(orig_groups) != len(reph_groups):
        raise ValueError(
            f"crossed_labels needs one rephrased group per original group: got "
            f"{len(orig_groups)} original and {len(reph_groups)} rephrased groups"
        )
    labels_for_original = [majority_vote(group, equivalent) for group in reph_groups]
    labels_for_rephrased = [majority_vote(group, equivalent) for group in orig_groups]
    return labels_for_original, labels_for_rephrased
