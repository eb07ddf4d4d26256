"""The RL algorithm: GRPO advantages and losses, the EMA teacher schedule, collapse signatures."""

from megatron_corew.algo.collapse import CollapseMonitor
from megatron_corew.algo.ema import ema_alpha
from megatron_corew.algo.grpo import group_advantages, kl_penalty, ppo_clip_losses, view_loss_scale

__all__ = ["CollapseMonitor", "ema_alpha", "group_advantages", "kl_penalty", "ppo_clip_losses", "view_loss_scale"]
