#!/usr/bin/env python
"""Plot a run's collapse signatures (docs/ALGORITHMS.md section 5) on one PNG.

    python tools/plot_run.py runs/qwen3-8b-base-corewarding_2 [--out run.png]

Reads RUN_DIR/tensorboard (tensorboard event files; RUN_DIR itself if it holds them) and falls back to
RUN_DIR/metrics.jsonl. Panels: validation accuracy; training reward (with the GT accuracy of the
rollouts when logged); pseudo-label accuracy and the policy's own vote accuracy; mean response length
and clip ratio; token entropy; KL. A missing series is skipped and noted in its panel. The collapse
signatures found by ``megatron_corew.algo.collapse.collapse_signals`` are printed and written under the plot.
"""

from __future__ import annotations

import argparse
import os
import sys

from megatron_corew.utils.run_logger import load_run, to_rows

# (title, [(tag, label, axis)]); axis "right" draws on a twin y axis
PANELS = [
    ("validation accuracy (greedy)", [("val/accuracy", "val/accuracy", "left")]),
    ("training reward", [("reward/mean", "reward/mean", "left"), ("reward/gt_accuracy", "reward/gt_accuracy", "left")]),
    (
        "pseudo-label accuracy vs ground truth",
        [
            ("pseudo/label_acc", "pseudo/label_acc", "left"),
            ("pseudo/policy_vote_acc", "pseudo/policy_vote_acc", "left"),
        ],
    ),
    (
        "response length / clip ratio",
        [
            ("rollout/response_length_mean", "response_length_mean", "left"),
            ("rollout/clip_ratio", "clip_ratio (right)", "right"),
        ],
    ),
    ("token entropy", [("train/entropy", "train/entropy", "left")]),
    ("KL to the anchor", [("train/kl", "train/kl", "left")]),
]
TAGS = sorted({tag for _, series in PANELS for tag, _, _ in series})


def plot(series: dict[str, list[tuple[float, float]]], out: str, title: str, notes: list[str]) -> list[str]:
    """Render the panels to ``out``; returns the tags that were missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    missing = []
    ncols, nrows = 2, (len(PANELS) + 1) // 2
    fig, axes = plt.subplots(nrows, ncols, figsize=(13, 3.6 * nrows + 0.4 + 0.22 * len(notes)), squeeze=False)
    for ax, (ptitle, specs) in zip(axes.flat, PANELS):
        twin = None
        lines, absent = [], []
        for k, (tag, label, side) in enumerate(specs):
            pts = series.get(tag)
            if not pts:
                absent.append(tag)
                continue
            target = ax
            if side == "right":
                twin = twin or ax.twinx()
                target = twin
                if tag == "rollout/clip_ratio":
                    twin.set_ylim(-0.03, 1.03)
            xs, ys = zip(*pts)
            lines += target.plot(
                xs,
                ys,
                marker="o" if len(xs) <= 30 else None,
                markersize=3,
                color=f"C{k}",
                linestyle="-" if k == 0 else "--",
                label=label,
            )  # dashed: visible on overlap
        missing += absent
        ax.set_title(ptitle, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        if lines:
            ax.ticklabel_format(axis="y", useOffset=False)
        if twin is not None:
            twin.tick_params(labelsize=8)
        if lines:
            ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="best")
        if not lines:
            ax.set_xticks([])
            ax.set_yticks([])
        if absent:
            ax.text(
                0.5,
                0.5 if not lines else 0.04,
                "not logged: " + ", ".join(absent),
                transform=ax.transAxes,
                ha="center",
                va="center" if not lines else "bottom",
                fontsize=8,
                color="gray",
            )
    for ax in list(axes.flat)[len(PANELS) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    if notes:
        fig.text(0.01, 0.005, "\n".join(notes), fontsize=8, color="firebrick", va="bottom", ha="left")
    bottom = (0.3 + 0.22 * len(notes)) / fig.get_figheight()
    fig.tight_layout(rect=(0, min(bottom, 0.4), 1, 0.97))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return missing


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run's --output-dir (holding tensorboard/ and/or metrics.jsonl)")
    p.add_argument("--out", default=None, help="PNG path (default RUN_DIR/run.png)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.run_dir):
        print(f"error: run directory not found: {args.run_dir}", file=sys.stderr)
        return 2
    try:
        series, source = load_run(args.run_dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or os.path.join(args.run_dir, "run.png")
    from megatron_corew.algo.collapse import collapse_signals

    signals = collapse_signals(to_rows(series))
    notes = [f"collapse signature: {s}" for s in signals]
    missing = plot(series, out, f"{os.path.basename(os.path.abspath(args.run_dir))}  ({source})", notes)
    print(f"[plot_run] read {len(series)} series from {source}")
    if missing:
        print(f"[plot_run] not logged (skipped): {', '.join(missing)}")
    for s in signals:
        print(f"[plot_run] collapse signature: {s}")
    print(f"[plot_run] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
