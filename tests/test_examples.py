"""Launch scripts: syntax, dry runs with the paper's hyper-parameters, input checks, and a real
2-step CPU run of every method through the same launcher (CPU_TINY=1)."""
import glob
import os
import subprocess

import pytest

from helpers import REPO, make_tiny_bundle

METHODS = ["gt", "majority_vote", "self_certainty", "entropy", "corewarding_1", "corewarding_2"]
PRESETS = ["qwen2.5-7b", "qwen3-4b-base", "qwen3-8b-base", "llama3.2-3b-instruct"]
SCRIPTS = sorted(glob.glob(os.path.join(REPO, "examples", "**", "*.sh"), recursive=True)
                 + glob.glob(os.path.join(REPO, "examples", "**", "*.sbatch"), recursive=True))


def _launch(env_extra, script="launch.sh", timeout=120):
    env = dict(os.environ, **env_extra)
    return subprocess.run(["bash", os.path.join(REPO, "examples", script)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


@pytest.mark.parametrize("path", SCRIPTS, ids=[os.path.relpath(p, REPO) for p in SCRIPTS])
def test_bash_syntax(path):
    assert subprocess.run(["bash", "-n", path], capture_output=True).returncode == 0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("preset", PRESETS)
def test_dry_run_uses_paper_hyperparameters(method, preset):
    proc = _launch({"DRY_RUN": "1", "ALLOW_MISSING": "1", "MODEL": preset}, f"{method}.sh")
    assert proc.returncode == 0, proc.stderr
    cmd = proc.stdout
    for flag in (f"--reward-method {method}", "--global-batch-size 128", "--n-samples-per-prompt 8",
                 "--max-prompt-length 512", "--max-response-length 3072", "--lr 3e-6", "torchrun"):
        assert flag in cmd, (flag, cmd)
    assert ("--kl-loss-coef 0.001" if method == "corewarding_2" else "--kl-loss-coef 0.005") in cmd
    if method == "corewarding_1":
        assert "--train-data-rephrased" in cmd


def test_input_checks_fail_clearly(tmp_path):
    proc = _launch({"METHOD": "nope", "DRY_RUN": "1"})
    assert proc.returncode != 0 and "unknown METHOD" in proc.stderr
    proc = _launch({"METHOD": "gt", "DRY_RUN": "1", "MODEL_PATH": str(tmp_path / "missing")})
    assert proc.returncode != 0 and str(tmp_path / "missing") in proc.stderr


@pytest.fixture(scope="module")
def tiny_assets(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("assets"))
    b = make_tiny_bundle(root)
    return {"MODEL_PATH": b["model"], "TRAIN_DATA": b["train"], "TRAIN_DATA_REPHRASED": b["train_rephrased"],
            "VAL_DATA": b["val"]}


@pytest.mark.parametrize("method", METHODS)
def test_cpu_tiny_variant_runs_two_steps(tiny_assets, tmp_path, method):
    out = str(tmp_path / method)
    proc = _launch({"CPU_TINY": "1", "METHOD": method, "OUT": out, "RESUME": "0", **tiny_assets}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    import json

    steps = [json.loads(line)["step"] for line in open(os.path.join(out, "metrics.jsonl"))
             if "train/loss" in json.loads(line)]
    assert steps == [1, 2]
