"""benchmarks/bench_vs_trl.py: its smoke mode runs both systems for one alternating round (when TRL is installed),
and without TRL it says so in one line and exits 0."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from helpers import REPO

BENCH = os.path.join(REPO, "benchmarks", "bench_vs_trl.py")


def test_without_trl_one_line_and_exit_0(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("bench_vs_trl", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    assert bench.main(["--smoke"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "TRL is not installed" in out[0]


@pytest.mark.e2e
@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason='TRL not installed (pip install -e ".[bench]")')
def test_smoke_runs_both_systems(tmp_path, tiny_bundle):
    proc = subprocess.run(
        [sys.executable, BENCH, "--smoke", "--work-dir", str(tmp_path), "--ours-variant", "defaults="]
        + ["--model", tiny_bundle["model"], "--train-data", tiny_bundle["train"]]
        + ["--ours-variant", "fast=--rollout-drop-finished --micro-batch-layout packed"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "samples/s" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["TRL GRPOTrainer (defaults)", "ours (defaults)", "ours (fast)"]
    for r in rows:  # every system trained: B 2 x G 4 samples of at most 16 tokens, a positive rate
        cells = [c.strip() for c in r.split("|")[2:-1]]
        assert float(cells[0]) > 0 and float(cells[1]) > 0
