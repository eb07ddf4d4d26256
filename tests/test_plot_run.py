"""tools/plot_run.py renders a PNG from a real CPU run's tensorboard directory."""
import os
import subprocess
import sys

from helpers import REPO, make_tiny_bundle, run_train


def test_plot_run_from_real_tensorboard(tmp_path):
    b = make_tiny_bundle(str(tmp_path / "b"))
    out = str(tmp_path / "run")
    proc = run_train(["--hf-checkpoint", b["model"], "--train-data", b["train"], "--val-data", b["val"],
                      "--reward-method", "corewarding_2", "--global-batch-size", "4", "--n-samples-per-prompt", "4",
                      "--max-response-length", "8", "--lr", "1e-3", "--train-iters", "3", "--eval-interval", "1",
                      "--no-progress-bar", "--output-dir", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    os.remove(os.path.join(out, "metrics.jsonl"))  # the tensorboard files alone must be enough
    png = str(tmp_path / "run.png")
    p = subprocess.run([sys.executable, "tools/plot_run.py", out, "--out", png], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 400 and im.size[1] > 300
