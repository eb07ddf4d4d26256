"""Co-rewarding-II's EMA teacher: a float64 reference of the schedule at TP=1, TP=2, PP=2, and the
no-EMA ablation leaving the teacher bitwise equal to the initial model while the policy trains a real gradient."""

import json
import os

import pytest
from helpers import (
    assert_real_signal,
    make_tiny_hf_model,
    random_samples,
    read_metrics,
    run_train,
    run_worker,
    tiny_run_args,
)


@pytest.mark.dist
@pytest.mark.parametrize("nproc,layout", [(1, []), (2, ["--tp", "2"]), (2, ["--pp", "2"])], ids=["tp1", "tp2", "pp2"])
def test_ema_teacher_matches_float64_reference(tmp_path, nproc, layout):
    model = make_tiny_hf_model(str(tmp_path / "m"), "qwen3")
    r = run_worker("ema", model, tmp_path, nproc, random_samples(6), ["--kl-coef", "0.001", *layout])
    assert r["max_abs_diff"] < 1e-6 * max(1.0, r["max_abs_ref"])
    assert r["teacher_policy_gap"] > 1e-4  # the teacher really lags the policy


@pytest.mark.e2e
def test_no_ema_keeps_initial_teacher_bitwise(tmp_path, warm_bundle):
    bundle = warm_bundle
    common = tiny_run_args(bundle, steps=None)
    results = {}
    for name, extra in [
        ("initial", ["--train-iters", "0"]),
        ("no_ema", ["--train-iters", "2", "--no-ema"]),
        ("ema", ["--train-iters", "2"]),
    ]:
        out = str(tmp_path / name)
        proc = run_train(common + extra + ["--output-dir", out])
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[name] = json.load(open(os.path.join(out, "result.json")))
        if name != "initial":
            assert_real_signal(read_metrics(out), (1, 2))
    assert results["no_ema"]["anchor_sha256"] == results["initial"]["anchor_sha256"]
    assert results["no_ema"]["policy_sha256"] != results["initial"]["policy_sha256"]
    assert results["ema"]["anchor_sha256"] != results["initial"]["anchor_sha256"]
