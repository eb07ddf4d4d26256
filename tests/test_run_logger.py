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
