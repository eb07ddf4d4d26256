"""A run's metrics on disk: written to tensorboard (stable tag names: train/, rollout/, reward/, pseudo/, perf/,
val/) and to metrics.jsonl by global rank 0 only, and read back as series for plots and checks."""

from __future__ import annotations

import glob
import json
import math
import os
import time

__all__ = ["RunLogger", "truncate_jsonl", "load_run", "load_tensorboard", "load_jsonl", "to_rows"]


class RunLogger:
    def __init__(
        self,
        out_dir: str,
        tensorboard_dir: str | None = None,
        enabled: bool = True,
        wandb_project: str | None = None,
        run_name: str | None = None,
        config: dict | None = None,
        resume_step: int | None = None,
    ):
        """``resume_step``: the run resumes after this step; rows logged after it by the interrupted run are
        dropped from metrics.jsonl (and purged from tensorboard), so every step appears once."""
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
        if resume_step is not None:
            dropped = truncate_jsonl(self.jsonl_path, resume_step)
            if dropped:
                print(f"metrics.jsonl: dropped {dropped} row(s) logged after step {resume_step} (resuming there)")
        self.jsonl = open(self.jsonl_path, "a", buffering=1)
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self.writer = SummaryWriter(
                log_dir=tensorboard_dir or os.path.join(out_dir, "tensorboard"), purge_step=purge
            )
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


def truncate_jsonl(path: str, last_step: int) -> int:
    """Keep the rows of ``path`` up to ``last_step`` (and drop a torn last line), atomically; returns rows dropped."""
    from checkpoints_conversion.atomic import write_text

    if not os.path.isfile(path):
        return 0
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if row.get("step", 0) > last_step:
                dropped += 1
            else:
                kept.append(line if line.endswith("\n") else line + "\n")
    if dropped:
        write_text(path, "".join(kept))
    return dropped


def load_tensorboard(logdir: str) -> dict[str, list[tuple[float, float]]]:
    """{tag: [(step, value)]} from every event file under logdir (later files win on equal steps)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    files = sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True))
    merged: dict[str, dict[float, float]] = {}
    for path in files:
        acc = EventAccumulator(path, size_guidance={SCALARS: 0})  # 0: keep every point
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            for ev in acc.Scalars(tag):
                merged.setdefault(tag, {})[float(ev.step)] = float(ev.value)
    return {tag: sorted(points.items()) for tag, points in merged.items()}


def load_jsonl(path: str) -> dict[str, list[tuple[float, float]]]:
    """{tag: [(step, value)]} of the finite numbers in a metrics.jsonl (a torn last line is skipped)."""
    out: dict[str, dict[float, float]] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a run killed mid-write leaves a partial last line
                continue
            step = float(row.get("step", 0))
            for k, v in row.items():
                if k in ("step", "time") or isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                if math.isfinite(v):
                    out.setdefault(k, {})[step] = float(v)
    return {tag: sorted(points.items()) for tag, points in out.items()}


def load_run(run_dir: str) -> tuple[dict[str, list[tuple[float, float]]], str]:
    """The run's scalar series and where they came from: its tensorboard files, else its metrics.jsonl."""
    for logdir in (os.path.join(run_dir, "tensorboard"), run_dir):
        if glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True):
            try:
                series = load_tensorboard(logdir)
            except ImportError:
                break
            if series:
                return series, logdir
    jsonl = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(jsonl):
        return load_jsonl(jsonl), jsonl
    raise FileNotFoundError(f"no tensorboard event files under {run_dir}/tensorboard and no {jsonl}")


def to_rows(series: dict[str, list[tuple[float, float]]]) -> list[dict]:
    """The series as one ``{"step": s, tag: value, ...}`` row per step, in step order (as metrics.jsonl)."""
    rows: dict[float, dict] = {}
    for tag, points in series.items():
        for step, v in points:
            rows.setdefault(step, {"step": step})[tag] = v
    return [rows[s] for s in sorted(rows)]
