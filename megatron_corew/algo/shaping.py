"""DAPO's overlong handling (docs/OFF_POLICY.md section 4): a soft length penalty on the reward and masking of
truncated responses out of the loss. Both off by default.

Soft overlong penalty, with L_max = ``--max-response-length``, L_cache = ``--overlong-buffer-len`` and factor f:
0 for |y| <= L_max - L_cache, ``f * (L_max - L_cache - |y|) / L_cache`` inside the buffer (linear from 0 to -f),
-f at L_max (the engine never returns more). It is added to the method's reward before the group advantages,
so it shapes label-free rewards the same way as ground-truth ones.
"""

from __future__ import annotations


def overlong_penalty(length: int, max_length: int, buffer_len: int, factor: float = 1.0) -> float:
    """The (non-positive) soft penalty of a response of ``length`` tokens; 0 when ``buffer_len`` is 0."""
    if buffer_len <= 0:
        return 0.0
    expected = max_length - buffer_len
    if length <= expected:
        return 0.0
    return factor * max(expected - length, -buffer_len) / buffer_len


def apply_overlong_penalty(rollouts, max_length: int, buffer_len: int, factor: float) -> dict:
    """Add the penalty to each rollout's reward (rank 0, after scoring, before the advantages)."""
    penalties = [overlong_penalty(len(r.response_ids), max_length, buffer_len, factor) for r in rollouts]
    for r, p in zip(rollouts, penalties):
        r.reward = r.reward + p
    n = max(len(penalties), 1)
    return {
        "rollout/overlong_penalty_mean": sum(penalties) / n,
        "rollout/overlong_penalized_fraction": sum(p < 0 for p in penalties) / n,
    }


def mask_truncated(rollouts) -> dict:
    """``loss_mask`` 0 for responses the engine cut at the length limit (finish_reason "length"): they take no part
    in the loss or its token-mean denominator; their rewards still enter the group advantages (as in DAPO)."""
    truncated = [r.generation.finish_reason == "length" for r in rollouts]
    for r, t in zip(rollouts, truncated):
        r.loss_mask = 0.0 if t else 1.0
    return {"rollout/truncated_masked_fraction": sum(truncated) / max(len(truncated), 1)}
