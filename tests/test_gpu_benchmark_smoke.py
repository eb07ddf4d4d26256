"""The GPU benchmark's CPU smoke mode runs end to end and prints its table (the GPU numbers
themselves come from a GPU, see docs/GPU.md)."""

import subprocess
import sys

import pytest
from helpers import REPO

pytestmark = pytest.mark.e2e


def test_gpu_train_step_cpu_smoke(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_train_step.py", "--cpu-smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| tiny | megatron fp32 |" in proc.stdout and "| tiny | transformers fp32 |" in proc.stdout
    import json

    rows = json.load(open(out))["rows"]
    assert all(r["tokens_per_s"] > 0 and r["step_s"] > 0 for r in rows)


def test_gpu_train_step_bf16_path_on_cpu():
    """The bf16 code path the GPU run takes (megatron bf16 trainer, transformers bf16 step), rehearsed on CPU."""
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_train_step.py", "--cpu-smoke", "--smoke-bf16"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| tiny | megatron bf16 |" in proc.stdout and "| tiny | transformers bf16 |" in proc.stdout
