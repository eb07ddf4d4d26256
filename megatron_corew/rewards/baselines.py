"""Label-free baselines a comparison needs next to Co-rewarding (docs/ALGORITHMS.md section 3): the random-reward
control, the semantic-entropy reward and Self-Harmony's harmonic-mean label. Each is a pure function of a step's
groups; the registrations sit in ``rewards/methods.py``.
"""

from __future__ import annotations

import random
from typing import Sequence

from megatron_corew.rewards.grading import answers_equivalent
from megatron_corew.rewards.spec import Group, ScoreOptions
from megatron_corew.rewards.voting import Equivalence, match_rewards

RANDOM_REWARD_P = 0.5  # the default Bernoulli probability of the random-reward control


def random_reward_stream(seed: int, step: int, round: int, p: float, n: int) -> list[float]:
    """``n`` Bernoulli(``p``) rewards drawn from a stream fixed by (seed, step, round) alone: independent of the
    rollouts' text, the same after a resume, different each step."""
    rng = random.Random(f"random-reward:{seed}:{step}:{round}")
    return [1.0 if rng.random() < p else 0.0 for _ in range(n)]


def random_rewards(groups: list[Group], options: ScoreOptions) -> list[list[float]]:
    """Spurious-reward control: every rollout's reward is a coin flip; only the group sizes are read."""
    seed, step, rnd = options.stream or (0, 0, 0)
    flat = random_reward_stream(
        seed, step, rnd, options.flag("random_reward_p", RANDOM_REWARD_P), sum(len(g.answers) for g in groups)
    )
    out, k = [], 0
    for g in groups:
        out.append(flat[k : k + len(g.answers)])
        k += len(g.answers)
    return out


def semantic_clusters(answers: Sequence[str], equivalent: Equivalence = answers_equivalent) -> list[int]:
    """Cluster index per answer (-1: blank, it joins no cluster). An answer joins the first cluster whose first
    member it is equal or equivalent to (the same clustering as ``voting.majority_vote``)."""
    reps: list[str] = []
    out = []
    for a in answers:
        if a is None or not str(a).strip():
            out.append(-1)
            continue
        for i, r in enumerate(reps):
            if a == r or (equivalent is not None and equivalent(a, r)):
                out.append(i)
                break
        else:
            reps.append(a)
            out.append(len(reps) - 1)
    return out


def semantic_entropy_rewards(groups: list[Group], options: ScoreOptions) -> list[list[float]]:
    """EMPO: a rollout's reward is the probability mass of its semantic cluster (its size over the group size);
    a blank answer scores 0. The label is the heaviest cluster's first member (logged only)."""
    out = []
    for g in groups:
        clusters = semantic_clusters(g.answers)
        n = len(g.answers)
        sizes = [clusters.count(c) for c in range(max(clusters, default=-1) + 1)]
        out.append([sizes[c] / n if c >= 0 else 0.0 for c in clusters])
        g.label = g.answers[clusters.index(max(range(len(sizes)), key=lambda c: (sizes[c], -c)))] if sizes else ""
    return out


def harmonic_label(original: Sequence[str], paraphrased: Sequence[str], equivalent: Equivalence = None) -> str:
    """Self-Harmony's pseudo-label: the answer maximising the harmonic mean of its frequencies among the
    original question's and the paraphrase's answers (0 unless it appears in both); ties go to the answer seen
    first in the original view. "" when no answer appears in both views."""

    def same(a, b):
        return a == b or (equivalent is not None and equivalent(a, b))

    def freq(a, answers):
        return sum(1 for b in answers if b and str(b).strip() and same(b, a)) / max(len(answers), 1)

    best, best_score = "", 0.0
    for a in original:
        if not a or not str(a).strip():
            continue
        f0, f1 = freq(a, original), freq(a, paraphrased)
        score = 2 * f0 * f1 / (f0 + f1) if f0 + f1 > 0 else 0.0
        if score > best_score:
            best, best_score = a, score
    return best


def harmonic_rewards(groups: list[Group], options: ScoreOptions) -> list[list[float]]:
    """Self-Harmony: both views of a pair share the harmonic-mean label; each rollout scores 1 when it matches."""
    equiv = answers_equivalent if options.label_matching == "equiv" else None
    by_pair: dict[int, dict[int, Group]] = {}
    for g in groups:
        by_pair.setdefault(g.pair_id, {})[g.view] = g
    for pair_id, views in by_pair.items():
        if set(views) != {0, 1}:
            raise ValueError(f"Self-Harmony pair {pair_id} lacks one of its two views")
        label = harmonic_label(views[0].answers, views[1].answers, equiv)
        views[0].label = views[1].label = label
    return [match_rewards(g.answers, g.label, equiv) for g in groups]
