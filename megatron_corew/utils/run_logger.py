"""Metrics to tensorboard (stable tag names: train/, rollout/, reward/, pseudo/, perf/, val/) and to a
jsonl file, written by global rank 0 only."""
from __future__ import annotations

import json
import math
import os
import time


class RunLogger:
    def __init__(self, out_dir: str, tensorboard_dir: str | None = None, enabled: bool = True,
                 wandb_project: str | None = None, run_name: str | None = None, config: dict | None = None):
        self.enabled = enabled
        self.writer = None
        self.jsonl = None
        self.wandb = None
        if not enabled:
            return
        if wandb_project:  # optional: only when asked for and installed
            try:
                import wandb
            except ImportError:
                print("warning: --wandb-project given but wandb is not installed; logging to tensorboard/jsonl only")
            else:
                self.wandb = wandb.init(project=wandb_project, name=run_name, config=config or {}, dir=out_dir)
        os.makedirs(out_dir, exist_ok=True)
        self.jsonl_path = os.path.join(out_dir, "metrics.jsonl")
        self.jsonl = open(self.jsonl_path, "a", buffering=1)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=tensorboard_dir or os.path.join(out_dir, "tensorboard"))
        except ImportError:  # tensorboard is an install requirement; keep jsonl logging regardless
            self.writer = None

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, (int, float, bool)) else v) for k, v in metrics.items()}
        if self.writer is not None:
            for k, v in clean.items():
                if isinstance(v, float) and not math.isnan(v):
                    self.writer.add_scalar(k, v, step)
            self.writer.flush()
        self.jsonl.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in clean.items() if isinstance(v, float)}, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.jsonl is not None:
            self.jsonl.close()
        if self.wandb is not None:
            self.wandb.finish()
