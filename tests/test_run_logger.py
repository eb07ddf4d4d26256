"""RunLogger writes real tensorboard scalars and jsonl; wandb is optional (absent -> warning, no crash)."""

import json
import os
import sys

from megatron_corew.utils.run_logger import RunLogger


def test_tensorboard_and_jsonl_without_wandb(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    log = RunLogger(str(tmp_path), wandb_project="corew-test")
    log.log(1, {"train/loss": 0.5, "val/accuracy": 0.25, "note": "x"})
    log.log(2, {"train/loss": 0.25})
    log.close()
    assert "wandb is not installed" in capsys.readouterr().out
    rows = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["val/accuracy"] == 0.25
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(tmp_path, "tensorboard"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == [0.5, 0.25]


def test_resume_truncates_jsonl_and_purges_tensorboard(tmp_path, capsys):
    """A resume at step 4 of a run that logged up to step 6 (and died mid-line): every step appears once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = RunLogger(str(tmp_path))
    for step in range(1, 7):
        log.log(step, {"train/loss": float(step)})
    log.close()
    with open(os.path.join(tmp_path, "metrics.jsonl"), "a") as f:
        f.write('{"step": 7, "train/lo')  # torn by a kill
    log = RunLogger(str(tmp_path), resume_step=4)
    assert "metrics.jsonl: dropped 3 row(s) logged after step 4 (resuming there)" in capsys.readouterr().out
    log.log(5, {"train/loss": 50.0})
    log.close()
    rows = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
    assert [(r["step"], r["train/loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0)]
    acc = EventAccumulator(os.path.join(tmp_path, "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0)]
