"""Crash safety: SIGKILL after a checkpoint and resume reproduces the uninterrupted run bitwise
(fp32, embedded engine); a kill while a checkpoint is being written leaves the previous one usable."""

import json
import os

import pytest
from helpers import read_metrics, run_train

KEYS = ("train/loss", "train/grad_norm", "train/kl", "reward/mean", "train/entropy")


def _args(bundle, out, method, steps=6, extra=()):
    return [
        "--hf-checkpoint",
        bundle["model"],
        "--train-data",
        bundle["train"],
        "--reward-method",
        method,
        "--global-batch-size",
        "4",
        "--n-samples-per-prompt",
        "4",
        "--max-response-length",
        "12",
        "--max-prompt-length",
        "128",
        "--micro-batch-size",
        "8",
        "--lr",
        "1e-3",
        "--train-iters",
        str(steps),
        "--eval-interval",
        "0",
        "--output-dir",
        out,
        "--no-progress-bar",
        "--save",
        os.path.join(out, "ckpt"),
        "--save-interval",
        "2",
        *extra,
    ]


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.e2e
@pytest.mark.parametrize("method", ["gt", "corewarding_2"])
def test_sigkill_and_resume_is_bitwise_identical(tiny_bundle, tmp_path, method):
    full, crashed = str(tmp_path / "full"), str(tmp_path / "crashed")
    _ok(run_train(_args(tiny_bundle, full, method)))
    proc = run_train(_args(tiny_bundle, crashed, method), env_extra={"COREW_FAULT": "after_step:4"})
    assert proc.returncode == -9  # SIGKILL
    assert open(os.path.join(crashed, "ckpt", "latest")).read().strip() == "iter_0000004"
    _ok(run_train(_args(tiny_bundle, crashed, method, extra=["--load", os.path.join(crashed, "ckpt")])))
    a = {r["step"]: r for r in read_metrics(full) if "train/loss" in r}
    b = {r["step"]: r for r in read_metrics(crashed) if "train/loss" in r}
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        for k in KEYS:
            assert a[step][k] == b[step][k], (method, step, k, a[step][k], b[step][k])
    ra = json.load(open(os.path.join(full, "result.json")))
    rb = json.load(open(os.path.join(crashed, "result.json")))
    assert ra["policy_sha256"] == rb["policy_sha256"]
    assert ra["anchor_sha256"] == rb["anchor_sha256"]  # the reference / EMA teacher too
    if method == "corewarding_2":
        assert a[6]["train/teacher_alpha"] == b[6]["train/teacher_alpha"]


@pytest.mark.e2e
def test_kill_during_checkpoint_write_keeps_previous(tiny_bundle, tmp_path):
    out = str(tmp_path / "run")
    proc = run_train(_args(tiny_bundle, out, "gt"), env_extra={"COREW_FAULT": "during_save:4"})
    assert proc.returncode == -9
    ckpt = os.path.join(out, "ckpt")
    assert open(os.path.join(ckpt, "latest")).read().strip() == "iter_0000002"
    assert not os.path.exists(os.path.join(ckpt, "iter_0000004"))
    _ok(run_train(_args(tiny_bundle, out, "gt", extra=["--load", ckpt])))
    steps = [r["step"] for r in read_metrics(out) if "train/loss" in r]
    assert steps[-4:] == [3, 4, 5, 6]  # resumed after step 2
    assert open(os.path.join(ckpt, "latest")).read().strip() == "iter_0000006"


def test_latest_pointer_publish_prune_and_incomplete_target(tmp_path):
    """The pointer file the resume reads: written whole, old checkpoints pruned, an incomplete target refused."""
    from megatron_corew.policy.checkpointing import latest_checkpoint, publish_latest

    root = str(tmp_path)
    assert latest_checkpoint(root) is None  # nothing saved yet: a fresh start
    for step in (2, 4, 6):
        os.makedirs(os.path.join(root, f"iter_{step:07d}"))
        open(os.path.join(root, f"iter_{step:07d}", "state.pt"), "w").close()
    publish_latest(root, "iter_0000006", "iter_", keep_last=2)
    assert open(os.path.join(root, "latest")).read().strip() == "iter_0000006"
    assert sorted(d for d in os.listdir(root) if d.startswith("iter_")) == ["iter_0000004", "iter_0000006"]
    assert latest_checkpoint(root) == os.path.join(root, "iter_0000006")
    os.remove(os.path.join(root, "iter_0000006", "state.pt"))
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        latest_checkpoint(root)
