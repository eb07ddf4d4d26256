"""tools/plot_run.py on a real short CPU run: it reads the run's tensorboard event files (and falls
back to metrics.jsonl) and writes one PNG with the collapse-signature panels."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from helpers import REPO, read_metrics, run_train

from tools import plot_run

PLOT = os.path.join(REPO, "tools", "plot_run.py")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, make_bundle):
    root = tmp_path_factory.mktemp("plot")
    b = make_bundle(num_train=16, num_val=4)
    out = str(root / "run")
    proc = run_train(
        [
            "--hf-checkpoint",
            b["model"],
            "--train-data",
            b["train"],
            "--val-data",
            b["val"],
            "--reward-method",
            "majority_vote",
            "--global-batch-size",
            "4",
            "--n-samples-per-prompt",
            "4",
            "--max-prompt-length",
            "128",
            "--max-response-length",
            "32",
            "--micro-batch-size",
            "16",
            "--lr",
            "1e-4",
            "--train-iters",
            "3",
            "--eval-interval",
            "1",
            "--output-dir",
            out,
            "--no-progress-bar",
        ],
        timeout=300,
    )
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return out


def plot_cli(*args):
    return subprocess.run(
        [sys.executable, PLOT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
    )


@pytest.mark.e2e
def test_plot_from_tensorboard(run_dir, tmp_path):
    from PIL import Image

    assert os.listdir(os.path.join(run_dir, "tensorboard"))
    series, source = plot_run.load_run(run_dir)
    assert source == os.path.join(run_dir, "tensorboard")
    # validation before training (step 0) and after each of the 3 steps; per-step series at steps 1..3
    assert [s for s, _ in series["val/accuracy"]] == [0, 1, 2, 3]
    for tag in (
        "reward/mean",
        "pseudo/label_acc",
        "pseudo/policy_vote_acc",
        "rollout/response_length_mean",
        "rollout/clip_ratio",
        "train/entropy",
        "train/kl",
    ):
        assert [s for s, _ in series[tag]] == [1, 2, 3], tag
    # the tensorboard values are the logged ones
    rows = {r["step"]: r for r in read_metrics(run_dir) if "train/entropy" in r}
    for step, v in series["train/entropy"]:
        assert v == pytest.approx(rows[step]["train/entropy"], rel=1e-6)

    # the tensorboard files alone are enough (no metrics.jsonl next to them)
    tb_only = tmp_path / "tb_only"
    shutil.copytree(run_dir, tb_only, ignore=shutil.ignore_patterns("metrics.jsonl"))
    png = str(tmp_path / "sub" / "run.png")
    proc = plot_cli(str(tb_only), "--out", png)
    assert proc.returncode == 0, proc.stderr
    assert "tensorboard" in proc.stdout and "wrote" in proc.stdout and os.path.getsize(png) > 10_000
    assert "not logged" not in proc.stdout, proc.stdout  # majority_vote logs every panel's series
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] >= 1000 and im.size[1] >= 800
        # not a blank canvas
        assert len(im.convert("L").getcolors(maxcolors=1 << 16) or [0] * 100) > 10


@pytest.mark.e2e
def test_default_out_and_jsonl_fallback(run_dir, tmp_path):
    from PIL import Image

    copy = tmp_path / "run_jsonl"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("tensorboard"))
    proc = plot_cli(str(copy))
    assert proc.returncode == 0, proc.stderr
    assert "metrics.jsonl" in proc.stdout
    with Image.open(copy / "run.png") as im:
        assert im.size[0] >= 1000


def test_missing_series_are_skipped_with_a_note(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    # a gt-like run: no pseudo-label metrics; a partial last line as a killed run leaves it
    (run / "metrics.jsonl").write_text(
        '{"step": 0, "val/accuracy": 0.5}\n{"step": 1, "reward/mean": 0.2, "train/kl": 0.0}\n{"step": 2, "rew'
    )
    proc = plot_cli(str(run), "--out", str(run / "p.png"))
    assert proc.returncode == 0, proc.stderr
    assert "not logged (skipped): " in proc.stdout and "pseudo/label_acc" in proc.stdout
    assert os.path.getsize(run / "p.png") > 0


def test_collapse_signatures_are_reported(tmp_path):
    import json

    run = tmp_path / "run"
    run.mkdir()
    with open(run / "metrics.jsonl", "w") as f:
        for s in range(1, 21):
            f.write(json.dumps({"step": s, "train/entropy": 0.7**s, "reward/mean": 0.5}) + "\n")
    proc = plot_cli(str(run))
    assert proc.returncode == 0, proc.stderr
    assert "collapse signature: entropy_collapse" in proc.stdout


def test_no_metrics_fails_clearly(tmp_path):
    proc = plot_cli(str(tmp_path))
    assert proc.returncode != 0 and "no tensorboard event files" in proc.stderr
    proc = plot_cli(str(tmp_path / "absent"))
    assert proc.returncode != 0 and "run directory not found" in proc.stderr
