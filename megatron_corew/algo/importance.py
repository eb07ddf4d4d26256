"""Correction of the train/rollout mismatch: importance weights pi_old / pi_rollout (docs/OFF_POLICY.md section 1),
and the two forms of the off-policy policy-gradient loss (:func:`policy_gradient_loss`, section 6).

The engine samples with its own kernels (and, under async or several optimizer steps, older weights), so the
trainer's log-prob of a sampled token differs from the engine's. The policy-gradient loss of each token is
multiplied by a detached weight built from the log-ratio ``old_logp - rollout_logp``:

* ``tis`` (truncated IS): ``w = min(ratio, C)``.
* ``mis`` (masked IS): ``w = ratio`` where ``low <= ratio <= high``, else 0 (the token, or the whole sequence, is
  dropped from the policy gradient).

Levels: ``token`` (each token its own ratio), ``sequence`` (the sequence's likelihood ratio exp(sum of token
log-ratios), the unbiased one, clamped at exp(+-20)) and ``geometric`` (exp(mean token log-ratio), a length-
normalised ratio whose thresholds mean the same for 10 and 3000 tokens). Pure tensor functions plus a small
accumulator, so the test can compare them with a float64 reference.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

MODES = ("none", "tis", "mis")
LEVELS = ("token", "sequence", "geometric")
FORMS = ("decoupled", "bypass")


def segment_ids(shape, first: list[int], lengths: list[int], device=None) -> torch.Tensor:
    """Per flat position the row (0..n-1) of the sample whose response token it predicts (0 elsewhere: masked)."""
    ids = torch.zeros(math.prod(shape), dtype=torch.long)
    for k, (a, n) in enumerate(zip(first, lengths)):
        ids[a : a + n] = k
    return ids.view(shape).to(device)


def ratios(old_logp, rollout_logp, mask, seg, n_seq: int, level: str = "token") -> torch.Tensor:
    """The per-token importance ratio (1 where ``mask`` is 0) at ``level``; no gradient."""
    with torch.no_grad():
        log_ratio = (old_logp.detach() - rollout_logp) * mask
        if level == "token":
            lr = log_ratio
        elif level in ("sequence", "geometric"):
            flat_seg = seg.reshape(-1)
            total = log_ratio.new_zeros(n_seq).index_add_(0, flat_seg, log_ratio.reshape(-1))
            if level == "geometric":
                count = mask.new_zeros(n_seq).index_add_(0, flat_seg, mask.reshape(-1))
                total = total / count.clamp(min=1.0)
            lr = total[flat_seg].view(mask.shape) * mask
        else:
            raise ValueError(f"unknown importance-sampling level {level!r}; choose one of {LEVELS}")
        return torch.exp(torch.clamp(lr, -20.0, 20.0))


def weights(ratio, mode: str, high: float, low: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, kept) from the ratios: ``tis`` truncates at ``high``; ``mis`` zeroes ratios outside [low, high]
    (low defaults to 1 / high)."""
    if mode == "tis":
        return torch.clamp(ratio, max=high), torch.ones_like(ratio, dtype=torch.bool)
    if mode == "mis":
        lo = 1.0 / high if low is None else low
        kept = (ratio >= lo) & (ratio <= high)
        return torch.where(kept, ratio, torch.zeros_like(ratio)), kept
    raise ValueError(f"unknown importance-sampling mode {mode!r}; choose one of {MODES}")


class ISCorrection:
    """Applies the weights inside the trainer's loss and sums their statistics over one optimizer step
    (float64, reduced over ranks like the other step sums). Mode ``none`` returns the loss unchanged."""

    def __init__(self, mode: str = "none", level: str = "token", high: float = 2.0, low: float | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown importance-sampling mode {mode!r}; choose one of {MODES}")
        self.mode, self.level, self.high, self.low = mode, level, high, low
        self.sums = torch.zeros(3, dtype=torch.float64)  # weight sum, masked tokens, tokens
        self.max = torch.zeros(1, dtype=torch.float64)

    def correct(self, pg: torch.Tensor, old_logp: torch.Tensor, mb: dict) -> torch.Tensor:
        """``pg`` (per-token PPO loss) times the detached IS weight of each token."""
        if self.mode == "none":
            return pg
        if mb["rollout_logp"] is None:
            raise ValueError("--rollout-is needs the engine's behaviour log-probs, and this engine returned none")
        mask = mb["mask"]
        seg = segment_ids(mask.shape, mb["first"], mb["lengths"], mask.device)
        ratio = ratios(old_logp, mb["rollout_logp"], mask, seg, len(mb["lengths"]), self.level)
        w, kept = weights(ratio, self.mode, self.high, self.low)
        mask = mb.get("live", mask)  # the statistics count only tokens the loss keeps
        with torch.no_grad():
            self.sums += torch.stack([(w * mask).sum(), ((~kept).float() * mask).sum(), mask.sum()]).double().cpu()
            if mask.any():
                self.max[0] = max(self.max[0].item(), float(w[mask > 0].max()))
        return pg * w.detach()

    def metrics(self, contributes: bool) -> dict:
        """``is_weight_mean`` / ``is_weight_max`` over response tokens, ``is_masked_fraction`` (MIS drops);
        empty with mode ``none``, so default runs log exactly what they logged before."""
        if self.mode == "none":
            return {}
        sums, mx = (self.sums, self.max) if contributes else (self.sums.zero_(), self.max.zero_())
        from megatron_corew.policy import parallel  # lazy: the functions above stay pure torch

        parallel.all_reduce_host(sums)
        parallel.all_reduce_host(mx, op=dist.ReduceOp.MAX)
        tokens = max(sums[2].item(), 1.0)
        return {
            "is_weight_mean": sums[0].item() / tokens,
            "is_weight_max": mx[0].item(),
            "is_masked_fraction": sums[1].item() / tokens,
        }


def reference_logp(form: str, logp: torch.Tensor, mb: dict) -> torch.Tensor:
    """pi_old of the PPO ratio pi / pi_old. ``decoupled``: the proximal policy, recorded before the first update of
    several (policy/multistep.py) or else the current policy itself (ratio exactly 1); ``bypass``: the engine's
    behaviour log-probs, so ratio and clip act on the policy that sampled the tokens."""
    if form == "bypass":
        if mb["rollout_logp"] is None:
            raise ValueError(
                "--off-policy-form bypass needs the engine's behaviour log-probs, and this engine returned none"
            )
        return mb["rollout_logp"]
    if form != "decoupled":
        raise ValueError(f"unknown off-policy form {form!r}; choose one of {FORMS}")
    return logp.detach() if mb["old_logp"] is None else mb["old_logp"]


def policy_gradient_loss(logp, mb: dict, form: str, correction: ISCorrection, clip_low, clip_high, dual_clip):
    """(per-token policy-gradient loss, clipped mask): the PPO clip against :func:`reference_logp`, times the
    detached IS weight pi_old / pi_rollout of ``correction`` (identically 1 under ``bypass``, where pi_old is the
    behaviour policy)."""
    from megatron_corew.algo import grpo

    old = reference_logp(form, logp, mb)
    pg, clipped = grpo.ppo_clip_losses(logp, old, mb["adv"], clip_low, clip_high, dual_clip)
    return correction.correct(pg, old, mb), clipped
