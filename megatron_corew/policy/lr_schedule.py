"""The learning-rate schedule of the RL run (docs/ALGORITHMS.md section 1), on megatron's own scheduler so that a
checkpoint saves and restores it with the optimizer."""

from __future__ import annotations

from megatron_corew.policy.config import TrainerConfig


def lr_scheduler(optimizer, cfg: TrainerConfig):
    """Megatron's scheduler for the reference's schedule: linear warm-up from lr 0 at the first step over
    int(fraction * steps) steps, then half-cosine to --min-lr at the last step (docs/ALGORITHMS.md section 1)."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    warmup = int(cfg.lr_warmup_fraction * cfg.train_iters)
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if warmup else cfg.lr,
        max_lr=cfg.lr,
        min_lr=cfg.min_lr,
        lr_warmup_steps=warmup,
        lr_decay_steps=max(cfg.train_iters, warmup + 1),
        lr_decay_style="cosine",
        start_wd=cfg.weight_decay,
        end_wd=cfg.weight_decay,
        wd_incr_steps=1,
        wd_incr_style="constant",
    )
