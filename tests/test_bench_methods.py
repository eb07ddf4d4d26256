"""benchmarks/bench_methods.py's numbers from a hand-written metrics file: the curve, the change, the peak step
(the first step with the best held-out accuracy), the mean pseudo-label accuracy and mean +- sample std."""

import importlib.util
import json
import os

from helpers import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("bench_methods", os.path.join(REPO, "benchmarks", "bench_methods.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_summary_of_one_run_and_error_bars_over_seeds(tmp_path):
    bench = _bench()
    rows = [
        {"step": 0, "val/accuracy": 0.30},
        {"step": 1, "train/loss": 0.1, "pseudo/label_acc": 0.5},
        {"step": 10, "train/loss": 0.1, "pseudo/label_acc": 0.7},
        {"step": 10, "val/accuracy": 0.45},  # the peak: rises, then falls
        {"step": 20, "val/accuracy": 0.45},  # a tie: the first step keeps the peak
        {"step": 20, "train/loss": 0.1, "pseudo/label_acc": 0.9},
        {"step": 30, "val/accuracy": 0.25, "val/accuracy_avg@4": 0.2, "val/maj@4": 0.3, "val/pass@4": 0.6},
    ]
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    r = bench.summarise(str(tmp_path), 4)
    assert r["curve"] == [(0, 0.30), (10, 0.45), (20, 0.45), (30, 0.25)]
    assert r["before"] == 0.30 and r["after"] == 0.25 and abs(r["change"] + 0.05) < 1e-12
    assert (r["avg"], r["maj"], r["pass"]) == (0.2, 0.3, 0.6)
    assert abs(r["pseudo"] - 0.7) < 1e-12  # (0.5 + 0.7 + 0.9) / 3
    assert (r["peak_step"], r["peak"]) == (10, 0.45)
    # sample std (n - 1): values 0.1, 0.2, 0.3 -> mean 0.2, std 0.1
    assert bench.mean_std([0.1, 0.2, 0.3]) == "0.200 ± 0.100"
    assert bench.mean_std([-0.05, None], signed=True) == "-0.050"  # one seed: no std
    assert bench.mean_std([None]) == "-"
    assert set(bench.METHODS) >= {"corewarding_3", "random_reward", "semantic_entropy", "self_harmony"}
