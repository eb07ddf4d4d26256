"""benchmarks/bench_vs_trl.py: its smoke mode runs both systems for one alternating round (when TRL is installed),
without TRL it says so in one line and exits 0, and its summary is the median and range of per-round rates."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from helpers import REPO

BENCH = os.path.join(REPO, "benchmarks", "bench_vs_trl.py")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_vs_trl", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_summary_is_median_and_range_of_rounds_and_headline_holds_defaults():
    bench = _bench()
    rounds = [  # 8 samples per step: rates 4, 8 and 2 samples/s (hand-checked)
        {"step_s": s, "generate_s": g, "reward_s": 0.0, "train_s": s - g, "other_s": 0.0, "tokens": 80, "max_len": m}
        | {"reward": r}
        for s, g, m, r in ((2.0, 1.0, 12, 0.5), (1.0, 0.25, 16, 0.0), (4.0, 3.0, 9, 1.0))
    ]
    out = bench.summarize(rounds, 8)
    assert (out["samples_per_s"], out["samples_per_s_min"], out["samples_per_s_max"]) == (4.0, 2.0, 8.0)
    assert (out["step_s"], out["generate_s"], out["train_s"]) == (2.0, 1.0, 1.0)
    assert out["tokens_per_s"] == 40.0 and out["mean_len"] == 10.0 and out["max_len"] == 16 and out["reward"] == 0.5
    rows = [("TRL GRPOTrainer (defaults)", out), ("ours (defaults)", out), ("ours (fast)", out)]
    text = bench.table("fixed", bench.WORKLOADS["fixed"], rows, (1.5, 2.5), 2)
    headline, others = text.split("Other configurations")
    assert "2 threads per system, load average 1.5 -> 2.5" in headline
    assert "| ours (defaults) | 4.0 (2.0-8.0) | 40 | 1.00x |" in headline and "ours (fast)" not in headline
    assert "| ours (fast) |" in others


def test_without_trl_one_line_and_exit_0(monkeypatch, capsys):
    bench = _bench()
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
        + ["--ours-variant", "earlier=--no-rollout-drop-finished --rollout-batch-size 4 --micro-batch-layout packed"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "samples/s" not in line]
    names = ["TRL GRPOTrainer (defaults)", "ours (defaults)", "ours (earlier)"]
    assert [r.split("|")[1].strip() for r in rows] == names
    for r in rows:  # every system trained: B 2 x G 4 samples of at most 16 tokens, a positive rate
        cells = [c.strip() for c in r.split("|")[2:-1]]
        assert float(cells[0].split()[0]) > 0 and float(cells[1]) > 0
