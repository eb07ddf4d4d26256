"""Co-rewarding-II's EMA teacher schedule."""

from __future__ import annotations

import math


def ema_alpha(step: int, total_steps: int, alpha_start: float = 0.01, alpha_end: float = 1e-5) -> float:
    """Weight on the policy in theta_T <- alpha * theta_policy + (1 - alpha) * theta_T, cosine-annealed
    from alpha_start to alpha_end: alpha(t) = a_end + (a_start - a_end)(1 + cos(pi t / T)) / 2 with
    t = clip(step - 1, 0, T) (reference code; steps count from 1)."""
    total = max(int(total_steps), 1)
    t = min(max(step - 1, 0), total)
    return alpha_end + 0.5 * (alpha_start - alpha_end) * (1.0 + math.cos(math.pi * t / total))
