"""The GRPO core shared by every reward method: group advantages, PPO-clip, KL estimators.

Pure tensor functions (no distributed state) so they can be checked against float64 references.
"""

from __future__ import annotations

from collections import defaultdict

import torch

KL_ESTIMATORS = ("k1", "k2", "k3", "low_var_kl")
LOSS_AGG_MODES = ("global-token-mean", "microbatch-token-mean")


def token_weights(
    response_lengths, views, mode: str = "global-token-mean", unit: int = 8, scale: float = 1.0
) -> list[float]:
    """The weight (times ``scale``) of each of sample i's response tokens in the step loss sum(w * token loss).

    ``global-token-mean``: 1 / (response tokens of the view), every token counts the same.
    ``microbatch-token-mean`` (the reference's): the view's samples, in step order, form groups of ``unit``
    sequences (the reference's micro-batch of 8 per GPU); the loss is the mean over groups of each group's token
    mean, so a token weighs 1 / (groups x tokens of its group). The groups are fixed by the step order, never by
    how the trainer cuts or packs its own micro-batches, so the loss is the same for every layout."""
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss aggregation mode {mode!r}; choose one of {LOSS_AGG_MODES}")
    members = defaultdict(list)
    for i, v in enumerate(views):
        members[v].append(i)
    weights = [0.0] * len(response_lengths)
    for idx in members.values():
        if mode == "global-token-mean":
            total = max(sum(response_lengths[i] for i in idx), 1)
            for i in idx:
                weights[i] = scale / total
            continue
        groups = [idx[a : a + unit] for a in range(0, len(idx), unit)]
        for g in groups:
            total = max(sum(response_lengths[i] for i in g), 1)
            for i in g:
                weights[i] = scale / (len(groups) * total)
    return weights


def view_loss_scale(paired_views: bool, view_loss_agg: str) -> float:
    """The factor on every token weight: Co-rewarding-I's loss is the sum of its two views' token means
    (``sum``) or their average (``mean``: 0.5); one-view methods have one token mean."""
    return 0.5 if paired_views and view_loss_agg == "mean" else 1.0


def group_advantages(rewards, group_ids, norm_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """A_i = (r_i - mean_g) / (std_g + eps) within each group g (std unbiased; a group of one has
    mean 0, std 1, as in the reference). ``norm_by_std=False`` gives the Dr.GRPO variant."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    members = defaultdict(list)
    for i, g in enumerate(group_ids):
        members[g].append(i)
    adv = torch.zeros_like(rewards)
    for idx in members.values():
        r = rewards[idx]
        if len(idx) == 1:
            mean, std = torch.tensor(0.0), torch.tensor(1.0)
        else:
            mean, std = r.mean(), r.std()
        adv[idx] = (r - mean) / (std + eps) if norm_by_std else (r - mean)
    return adv


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "low_var_kl") -> torch.Tensor:
    """Per-token KL(pi || ref) estimate from sampled-token log-probs (Schulman's k1/k2/k3)."""
    if estimator == "k1":
        return logp - ref_logp
    if estimator == "k2":
        return 0.5 * (logp - ref_logp).square()
    if estimator in ("k3", "low_var_kl"):
        log_ratio = torch.clamp(ref_logp - logp, -20.0, 20.0)
        return torch.clamp(torch.exp(log_ratio) - log_ratio - 1.0, -10.0, 10.0)
    raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {KL_ESTIMATORS}")


def ppo_clip_losses(
    logp, old_logp, advantages, clip_low: float = 0.2, clip_high: float = 0.2, dual_clip: float | None = 3.0
):
    """Per-token PPO-clip loss with separate low/high clip and dual-clip for negative advantages.

    Returns (loss, clipped) where ``clipped`` marks tokens whose clipped branch was active."""
    ratio = torch.exp(torch.clamp(logp - old_logp, -20.0, 20.0))
    unclipped = -advantages * ratio
    clipped_loss = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped_loss)
    was_clipped = clipped_loss > unclipped
    if dual_clip is not None:
        lower_bound = -advantages * dual_clip
        loss = torch.where(advantages < 0, torch.minimum(loss, lower_bound), loss)
    return loss, was_clipped
