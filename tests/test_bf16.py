"""--bf16 end to end on CPU (the GPU's default precision): a bf16 policy next to the fp32 EMA teacher.

Found by the GPU session script's CPU rehearsal: the teacher copy inherited the policy's bf16 flags, so its
attention cast fp32 probabilities to bf16 and crashed, and the weights digest could not hash bf16 tensors.
Runs Co-rewarding-II (teacher forward, EMA, KL on the teacher) at TP=1 and PP=2 (fp32 pipeline buffers)."""

import json
import math
import os

import pytest
from helpers import read_metrics, run_train, tiny_run_args

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "layout", [[], pytest.param(["--pipeline-model-parallel-size", "2"], marks=pytest.mark.dist)], ids=["tp1", "pp2"]
)
def test_bf16_corewarding2_runs_with_fp32_teacher(tiny_bundle, tmp_path, layout):
    out = str(tmp_path / "run")
    args = tiny_run_args(tiny_bundle, out, extra=["--bf16", *layout])
    proc = run_train(args, nproc=2 if layout else 1)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [r for r in read_metrics(out) if "train/loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["train/loss"]) and math.isfinite(r["train/kl"]) for r in rows)
    result = json.load(open(os.path.join(out, "result.json")))
    assert result["policy_sha256"] and result["anchor_sha256"] and result["policy_sha256"] != result["anchor_sha256"]
