"""collapse_signals on hand-made metric series: each collapse signature of docs/ALGORITHMS.md section 5
fires on its own pattern and stays quiet on a healthy run."""

import math

from megatron_corew.algo.collapse import CollapseMonitor, collapse_signals


def kinds(signals):
    return sorted(s.split(":", 1)[0] for s in signals)


def run(n=20, **series):
    """Rows 1..n; each keyword is a tag (with '/' as '__') and a function step -> value or None."""
    rows = []
    for step in range(1, n + 1):
        row = {"step": step}
        for key, fn in series.items():
            v = fn(step)
            if v is not None:
                row[key.replace("__", "/")] = v
        rows.append(row)
    return rows


def every(k, fn):
    return lambda s: fn(s) if s % k == 0 else None


def healthy():
    return run(
        val__accuracy=every(5, lambda s: 0.40 + 0.01 * s),
        reward__mean=lambda s: 0.3 + 0.02 * s,
        pseudo__label_acc=lambda s: 0.5 + 0.01 * s,
        rollout__response_length_mean=lambda s: 500 - 5 * s,
        rollout__clip_ratio=lambda s: 0.05,
        train__entropy=lambda s: 0.8 - 0.01 * s,
    )


def test_healthy_run_has_no_signal():
    assert collapse_signals(healthy()) == []
    assert collapse_signals([]) == []
    assert collapse_signals([{"step": 1, "val/accuracy": 0.5}]) == []


def test_val_accuracy_rising_then_falling():
    rows = run(val__accuracy=every(5, lambda s: {5: 0.40, 10: 0.55, 15: 0.52, 20: 0.41}[s]))
    sig = collapse_signals(rows)
    assert kinds(sig) == ["val_drop"]
    assert "0.550" in sig[0] and "step 10" in sig[0] and "0.410" in sig[0]
    # a drop within the tolerance is noise
    rows = run(val__accuracy=every(5, lambda s: {5: 0.40, 10: 0.55, 15: 0.53, 20: 0.52}[s]))
    assert collapse_signals(rows) == []
    assert kinds(collapse_signals(rows, acc_drop=0.02)) == ["val_drop"]
    # monotone decrease from the first point is a fall from the (initial) peak as well
    rows = run(val__accuracy=every(5, lambda s: 0.6 - 0.01 * s))
    assert kinds(collapse_signals(rows)) == ["val_drop"]


def test_reward_hacking_needs_high_reward_and_falling_accuracy():
    label_falls = lambda s: 0.7 if s <= 8 else 0.7 - 0.04 * (s - 8)  # noqa: E731
    rows = run(reward__mean=lambda s: min(1.0, 0.3 + 0.1 * s), pseudo__label_acc=label_falls)
    sig = collapse_signals(rows)
    assert kinds(sig) == ["reward_hacking"]
    assert "pseudo/label_acc" in sig[0] and "1.000" in sig[0]
    # policy vote accuracy is accepted in place of the label accuracy (e.g. Co-rewarding-II logs both)
    rows = run(reward__mean=lambda s: 0.97, pseudo__policy_vote_acc=label_falls)
    assert kinds(collapse_signals(rows)) == ["reward_hacking"]
    # high reward with accuracy holding up is a good run, not hacking
    rows = run(reward__mean=lambda s: 0.97, pseudo__label_acc=lambda s: 0.9)
    assert collapse_signals(rows) == []
    # falling label accuracy with a moderate reward is not hacking either
    rows = run(reward__mean=lambda s: 0.6, pseudo__label_acc=label_falls)
    assert collapse_signals(rows) == []
    # val accuracy falling while the reward is maxed: both signatures
    rows = run(reward__mean=lambda s: 0.99, val__accuracy=every(5, lambda s: {5: 0.5, 10: 0.6, 15: 0.45, 20: 0.3}[s]))
    sig = collapse_signals(rows)
    assert kinds(sig) == ["reward_hacking", "val_drop"]
    assert "val/accuracy" in [s for s in sig if s.startswith("reward_hacking")][0]


def test_response_length_collapse_and_length_limit():
    rows = run(rollout__response_length_mean=lambda s: 600 if s <= 5 else max(40, 600 - 60 * s))
    sig = collapse_signals(rows)
    assert kinds(sig) == ["length_collapse"]
    assert "600.0" in sig[0]
    # shrinking to 40 % of the start is within the default 30 % threshold
    rows = run(rollout__response_length_mean=lambda s: 600 if s <= 10 else 240)
    assert collapse_signals(rows) == []
    rows = run(rollout__clip_ratio=lambda s: 0.02 if s < 15 else 0.9)
    assert kinds(collapse_signals(rows)) == ["length_limit"]
    # one clipped-heavy step is smoothed away by the window
    rows = run(rollout__clip_ratio=lambda s: 0.9 if s == 20 else 0.02)
    assert collapse_signals(rows) == []
    assert kinds(collapse_signals(rows, window=1)) == ["length_limit"]


def test_entropy_collapse():
    rows = run(train__entropy=lambda s: 1.0 * 0.7**s)
    sig = collapse_signals(rows)
    assert kinds(sig) == ["entropy_collapse"]
    rows = run(train__entropy=lambda s: 1.0 - 0.02 * s)
    assert collapse_signals(rows) == []


def test_robust_to_missing_nan_and_unordered_rows():
    rows = run(train__entropy=lambda s: 1.0 * 0.7**s)
    rows[3]["train/entropy"] = math.nan
    rows[4]["train/entropy"] = "n/a"
    rows[5]["train/entropy"] = None
    rows.reverse()  # step order, not row order, defines first/last
    assert kinds(collapse_signals(rows)) == ["entropy_collapse"]
    # the run logger writes the final validation as an extra row with the last step: keep row order
    rows = [
        {"step": 0, "val/accuracy": 0.4},
        {"step": 10, "val/accuracy": 0.6},
        {"step": 20, "reward/mean": 0.5},
        {"step": 20, "val/accuracy": 0.3},
    ]
    assert kinds(collapse_signals(rows)) == ["val_drop"]


def test_monitor_reports_each_signature_once():
    mon = CollapseMonitor()
    reported = []
    for step in range(1, 21):
        reported.append(
            mon.update(step, {"train/entropy": 0.7**step, "rollout/clip_ratio": 0.9 if step >= 15 else 0.0})
        )
    flat = [s for r in reported for s in r]
    assert kinds(flat) == ["entropy_collapse", "length_limit"]
    first = {s.split(":")[0]: i + 1 for i, r in enumerate(reported) for s in r}
    assert first["entropy_collapse"] < first["length_limit"]


def test_no_learning_signal_after_n_flat_steps():
    """Every group with equal rewards (all advantages 0) for 5 steps in a row: the no-learning-signal warning."""
    flat = [{"step": s, "reward/zero_variance_groups": 1.0, "rollout/boxed_rate": 0.0} for s in range(1, 6)]
    signals = collapse_signals(flat)
    assert signals == [
        "no_learning_signal: every group had zero reward variance for the last 5 steps, so every advantage is 0 "
        "and nothing is learned; answers found in 0% of responses"
    ]
    assert collapse_signals(flat[:4]) == []  # not yet N steps
    mixed = flat[:2] + [{"step": 3, "reward/zero_variance_groups": 0.75}] + flat[3:]
    assert collapse_signals(mixed) == []  # one step with signal resets it
    monitor = CollapseMonitor()
    fired = [monitor.update(r["step"], r) for r in flat]
    assert [bool(f) for f in fired] == [False, False, False, False, True]
