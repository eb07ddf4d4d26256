"""Collapse signatures of self-rewarding RL (docs/ALGORITHMS.md section 5), detected from logged metrics.

``collapse_signals(rows)`` takes metric dicts as the run logger writes them (``metrics.jsonl`` rows:
``step`` plus tags such as ``val/accuracy``, ``reward/mean``; a tag may be missing from a row) and
returns one human-readable line per signature found, each starting with its kind:

* ``val_drop``: validation accuracy rose to a peak and has since fallen by more than ``acc_drop``;
* ``reward_hacking``: the training reward sits at >= ``reward_max`` while the pseudo-label accuracy
  (or the policy's own vote accuracy) or the validation accuracy falls by more than ``acc_drop``;
* ``length_collapse``: the mean response length fell below ``length_frac`` of its initial mean
  (the majority-vote collapse: short, agreeing answers);
* ``length_limit``: the clip ratio (responses cut at the length limit) is above ``clip_max``
  (the entropy / self-certainty collapse: repetition until the limit);
* ``entropy_collapse``: the token entropy fell below ``entropy_frac`` of its initial mean;
* ``no_learning_signal``: in each of the last ``no_signal_steps`` steps every group's rewards were equal
  (``reward/zero_variance_groups`` = 1): every advantage is 0 and nothing is learned (what a small model that
  never writes ``\\boxed{}`` produces).

Per-step series (reward, length, clip ratio, entropy) are compared as means over ``window`` points
(first vs last) so one noisy step does not fire; validation accuracy is sparse and used as logged.
``CollapseMonitor`` wraps this for a training loop: feed it each step's metrics, it returns only the
signatures that newly appeared.
"""

from __future__ import annotations

import math

VAL = "val/accuracy"
REWARD = "reward/mean"
LABEL_ACC = ("pseudo/label_acc", "pseudo/policy_vote_acc")
LENGTH = "rollout/response_length_mean"
CLIP = "rollout/clip_ratio"
ENTROPY = "train/entropy"
ZERO_VAR = "reward/zero_variance_groups"


def _series(rows: list[dict], key: str) -> list[tuple[float, float]]:
    """(step, value) pairs of one tag, ordered by step (row order among equal steps); non-finite and
    non-numeric values are dropped."""
    out = []
    for i, row in enumerate(rows):
        v = row.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        step = row.get("step", i)
        out.append((float(step) if isinstance(step, (int, float)) else float(i), i, float(v)))
    out.sort(key=lambda t: (t[0], t[1]))
    return [(s, v) for s, _, v in out]


def _ends(values: list[float], window: int) -> tuple[float, float] | None:
    """Mean of the first and of the last w values (w <= half the series), or None if < 2 values."""
    if len(values) < 2:
        return None
    w = max(1, min(window, len(values) // 2))
    return sum(values[:w]) / w, sum(values[-w:]) / w


def _fall_from_peak(series: list[tuple[float, float]], drop: float) -> str | None:
    """'peak P (step s) -> last L (step t)' if the last value is more than ``drop`` below an earlier peak."""
    if len(series) < 2:
        return None
    k = max(range(len(series)), key=lambda j: (series[j][1], -j))  # first occurrence of the maximum
    (peak_step, peak), (last_step, last) = series[k], series[-1]
    if k == len(series) - 1 or peak - last <= drop:
        return None
    return f"peak {peak:.3f} (step {peak_step:g}) -> {last:.3f} (step {last_step:g})"


def collapse_signals(
    rows: list[dict],
    *,
    acc_drop: float = 0.05,
    reward_max: float = 0.95,
    length_frac: float = 0.3,
    clip_max: float = 0.5,
    entropy_frac: float = 0.1,
    window: int = 3,
    no_signal_steps: int = 5,
) -> list[str]:
    """Collapse signatures present in ``rows`` (metric dicts); [] when none. See the module doc."""
    signals = []
    val = _series(rows, VAL)
    val_fall = _fall_from_peak(val, acc_drop)
    if val_fall:
        signals.append(f"val_drop: validation accuracy fell by more than {acc_drop:g} from its peak: {val_fall}")

    reward = [v for _, v in _series(rows, REWARD)]
    if reward:
        w = max(1, min(window, len(reward)))
        recent = sum(reward[-w:]) / w
        if recent >= reward_max:
            falling = []
            for key in LABEL_ACC:
                fall = _fall_from_peak(_series(rows, key), acc_drop)
                if fall:
                    falling.append(f"{key} {fall}")
            if val_fall:
                falling.append(f"{VAL} {val_fall}")
            if falling:
                signals.append(
                    f"reward_hacking: training reward at {recent:.3f} (>= {reward_max:g}, started at "
                    f"{reward[0]:.3f}) while " + "; ".join(falling)
                )

    ends = _ends([v for _, v in _series(rows, LENGTH)], window)
    if ends and ends[0] > 0 and ends[1] < length_frac * ends[0]:
        signals.append(
            f"length_collapse: mean response length {ends[1]:.1f} is below {length_frac:.0%} of its "
            f"initial {ends[0]:.1f}"
        )

    clip = [v for _, v in _series(rows, CLIP)]
    if clip:
        w = max(1, min(window, len(clip)))
        recent = sum(clip[-w:]) / w
        if recent > clip_max:
            signals.append(
                f"length_limit: {recent:.0%} of responses hit the length limit (clip ratio > {clip_max:g}; "
                f"repetition collapse)"
            )

    ends = _ends([v for _, v in _series(rows, ENTROPY)], window)
    if ends and ends[0] > 0 and ends[1] < entropy_frac * ends[0]:
        signals.append(
            f"entropy_collapse: token entropy {ends[1]:.4g} is below {entropy_frac:.0%} of its initial {ends[0]:.4g}"
        )

    flat = [v for _, v in _series(rows, ZERO_VAR)][-no_signal_steps:]
    if no_signal_steps and len(flat) == no_signal_steps and all(v >= 1.0 for v in flat):
        boxed = [v for _, v in _series(rows, "rollout/boxed_rate")][-no_signal_steps:]
        hint = f"; answers found in {sum(boxed) / len(boxed):.0%} of responses" if boxed else ""
        signals.append(
            f"no_learning_signal: every group had zero reward variance for the last {no_signal_steps} steps, so "
            f"every advantage is 0 and nothing is learned{hint}"
        )
    return signals


class CollapseMonitor:
    """Accumulates per-step metrics and reports each collapse signature once, when it first appears
    (again only after it has gone away and come back)."""

    def __init__(self, **thresholds):
        self.thresholds = thresholds
        self.rows: list[dict] = []
        self.active: set[str] = set()

    def update(self, step: int, metrics: dict) -> list[str]:
        self.rows.append({"step": step, **metrics})
        signals = collapse_signals(self.rows, **self.thresholds)
        kinds = {s.split(":", 1)[0] for s in signals}
        new = [s for s in signals if s.split(":", 1)[0] not in self.active]
        self.active = kinds
        return new
