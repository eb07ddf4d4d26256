"""tools/compare_runs.py on hand-written runs: timings may differ, a metric or a dumped rollout may not."""

import json
import os

from tools import compare_runs


def _run(root, name, loss=0.5, seconds=1.0, reward=1.0):
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "rollouts"))
    rows = [{"step": 1, "train/loss": loss, "train/grad_norm": 0.3, "perf/time_step": seconds, "mem/x": seconds}]
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    dump = [{"view": 0, "pair_id": 0, "reward": r} for r in (reward, 0.0)]
    with open(os.path.join(d, "rollouts", "step_000001.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in dump)
    return d


def test_timings_are_ignored_metrics_and_dumps_are_not(tmp_path, capsys):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _run(a, "same"), _run(b, "same", seconds=9.0)
    _run(a, "loss"), _run(b, "loss", loss=0.5000001)
    _run(a, "dump"), _run(b, "dump", reward=0.5)
    assert compare_runs.main([os.path.join(a, "same"), os.path.join(b, "same")]) == 0
    assert "non-zero grad norm in 1, reward variance in 1" in capsys.readouterr().out
    assert compare_runs.main([os.path.join(a, "loss"), os.path.join(b, "loss")]) == 1
    assert "train/loss: 0.5 vs 0.5000001" in capsys.readouterr().out
    assert compare_runs.main([os.path.join(a, "dump"), os.path.join(b, "dump")]) == 1
    assert "rollouts/step_000001.jsonl: first difference at line 1" in capsys.readouterr().out
    assert compare_runs.main([a, b]) == 1  # roots: every run by name
    assert capsys.readouterr().out.count("IDENTICAL") == 1
