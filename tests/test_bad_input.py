"""Bad input fails at start-up with one clear line naming the problem (no traceback dump)."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import REPO


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_bundle):
    from megatron_corew.demo.tiny_task import generate_problems, verl_rows, write_parquet

    bundle = make_bundle(num_train=40, num_val=8)
    model, good = bundle["model"], bundle["train"]
    root = tmp_path_factory.mktemp("bad")
    train, _ = generate_problems(num_train=40, num_val=8, seed=0)  # the rows of bundle["train"]
    no_prompt = str(root / "no_prompt.parquet")
    pq.write_table(pa.table({"question": ["1+1?"] * 20, "answer": ["2"] * 20}), no_prompt)
    unsupported = str(root / "gemma")
    os.makedirs(unsupported)
    with open(os.path.join(model, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(model_type="gemma2", architectures=["Gemma2ForCausalLM"])
    with open(os.path.join(unsupported, "config.json"), "w") as f:
        json.dump(cfg, f)
    unlabelled = str(root / "unlabelled.parquet")
    rows = verl_rows(train, "train", "original")
    rows[5]["reward_model"]["ground_truth"] = None
    write_parquet(rows, unlabelled)
    return {
        "model": model,
        "good": good,
        "unlabelled": unlabelled,
        "no_prompt": no_prompt,
        "unsupported": unsupported,
        "root": root,
    }


def _run(args):
    proc = subprocess.run(
        [
            sys.executable,
            "train_rl.py",
            "--global-batch-size",
            "4",
            "--train-iters",
            "1",
            "--output-dir",
            "/tmp/corew-bad-input",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return last


def test_missing_model_directory(setup):
    line = _run(["--hf-checkpoint", "/nonexistent/model", "--train-data", setup["good"]])
    assert line.startswith("error:") and "/nonexistent/model" in line and "not found" in line


def test_unsupported_architecture(setup):
    line = _run(["--hf-checkpoint", setup["unsupported"], "--train-data", setup["good"]])
    assert line.startswith("error:") and "gemma2" in line and "unsupported" in line


@pytest.mark.e2e
def test_dataset_without_prompt_column(setup):
    line = _run(["--hf-checkpoint", setup["model"], "--train-data", setup["no_prompt"]])
    assert line.startswith("error:") and "no_prompt.parquet" in line and "prompt" in line


def test_tp_not_dividing_heads(setup):
    line = _run(["--hf-checkpoint", setup["model"], "--train-data", setup["good"], "--tensor-model-parallel-size", "3"])
    assert line.startswith("error:") and "--tensor-model-parallel-size 3" in line and "num_attention_heads" in line


def test_fp8_without_transformer_engine_fails_clearly(setup):
    line = _run(["--hf-checkpoint", setup["model"], "--train-data", setup["good"], "--fp8-format", "e4m3"])
    assert "Transformer Engine" in line and "no silent fallback" in line


@pytest.mark.e2e
def test_gt_training_or_validation_on_unlabelled_rows(setup):
    for flags in (
        ["--train-data", setup["unlabelled"], "--reward-method", "gt"],
        ["--train-data", setup["good"], "--val-data", setup["unlabelled"], "--reward-method", "majority_vote"],
    ):
        line = _run(["--hf-checkpoint", setup["model"], *flags])
        assert line.startswith("error:") and "unlabelled.parquet" in line and "row 5" in line, line
