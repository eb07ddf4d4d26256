"""A NaN loss never reaches the weights: skipped and counted, or the run stops with the last
checkpoint intact (--on-nonfinite)."""

import json
import math
import os

import pytest
from helpers import read_metrics, run_train, tiny_run_args


def _args(bundle, out, extra=()):
    return tiny_run_args(bundle, out, method="gt", steps=3, extra=extra)


@pytest.mark.e2e
def test_nan_loss_is_skipped_and_counted(tiny_bundle, tmp_path):
    out = str(tmp_path / "skip")
    proc = run_train(_args(tiny_bundle, out, ["--rollout-dump"]), env_extra={"COREW_FAULT": "nan_loss:2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the weights that sampled step 3 are those of step 1's update: the refused step 2 made no new version
    with open(os.path.join(out, "rollouts", "step_000003.jsonl")) as f:
        assert {json.loads(line)["weight_version"] for line in f} == {1}
    assert "step 2: non-finite loss" in proc.stdout
    rows = {r["step"]: r for r in read_metrics(out) if "train/loss" in r}
    assert rows[1]["train/skipped_updates"] == 0 and rows[2]["train/skipped_updates"] == 1
    assert math.isfinite(rows[3]["train/loss"]) and math.isfinite(rows[3]["train/grad_norm"])
    assert json.load(open(os.path.join(out, "result.json")))["policy_sha256"]


@pytest.mark.e2e
def test_nan_loss_stops_with_checkpoint_intact(tiny_bundle, tmp_path):
    out = str(tmp_path / "stop")
    ckpt = os.path.join(out, "ckpt")
    proc = run_train(
        _args(tiny_bundle, out, ["--on-nonfinite", "stop", "--save", ckpt, "--save-interval", "1"]),
        env_extra={"COREW_FAULT": "nan_loss:2"},
    )
    assert proc.returncode == 3
    assert "non-finite" in proc.stderr.strip().splitlines()[-1]
    assert open(os.path.join(ckpt, "latest")).read().strip() == "iter_0000001"
    proc = run_train(_args(tiny_bundle, out, ["--load", ckpt, "--save", ckpt]))  # resumes past the bad step
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_fault_spec_names_one_point_and_step(monkeypatch):
    """COREW_FAULT=<point>:<step> arms exactly that point at that step (the runs above inject their NaN this way)."""
    from megatron_corew.utils import faults

    monkeypatch.delenv("COREW_FAULT", raising=False)
    assert not faults.active("nan_loss", 2)
    monkeypatch.setenv("COREW_FAULT", "nan_loss:2")
    assert faults.active("nan_loss", 2)
    assert not faults.active("nan_loss", 1) and not faults.active("nan_loss", 20) and not faults.active("after_step", 2)
