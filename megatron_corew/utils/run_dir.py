"""An output directory belongs to one run: a new run into a used one is refused unless it resumes (``--load``)
or is told ``--overwrite``, so old metrics are never silently appended to (or mixed with) a new run's. The same
holds for a ``--save`` directory that holds checkpoints: a new run would overwrite them step by step."""

from __future__ import annotations

import os
import shutil

RUN_FILES = ("metrics.jsonl", "result.json")
RUN_DIRS = ("tensorboard", "rollouts")  # hf/ exports are models: --overwrite leaves them to be replaced


class UsedDirectory(ValueError):
    """The one-line diagnosis of a refused output directory."""


def used(out_dir: str) -> str | None:
    """The file that shows a run has written here, or None."""
    for name in RUN_FILES:
        p = os.path.join(out_dir, name)
        if os.path.isfile(p) and os.path.getsize(p) > 0:
            return p
    return None


def claim(out_dir: str, *, resuming: bool, overwrite: bool) -> str | None:
    """Refuse a used ``out_dir`` for a new run; with ``overwrite`` clear the old run's logs. Returns a note."""
    found = used(out_dir)
    if found is None or resuming:
        return None
    if not overwrite:
        raise UsedDirectory(
            f"--output-dir {out_dir} already holds a run ({os.path.basename(found)}); resume it with --load, "
            "choose another --output-dir, or pass --overwrite to replace it"
        )
    removed = []
    for name in RUN_FILES + RUN_DIRS:
        p = os.path.join(out_dir, name)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)
        else:
            continue
        removed.append(name)
    return f"--overwrite: removed the previous run's {', '.join(removed)} from {out_dir}"


def checkpoints_in(save_dir: str) -> list[str]:
    """The RL checkpoints (``iter_*``) and ``latest`` pointer in ``save_dir``."""
    if not os.path.isdir(save_dir):
        return []
    return sorted(d for d in os.listdir(save_dir) if d.startswith("iter_") or d == "latest")


def claim_save(save_dir: str, *, load: str | None, overwrite: bool) -> str | None:
    """Refuse a ``--save`` directory holding checkpoints unless this run resumes from it (``--load`` the same
    directory); with ``overwrite`` remove them (and ``latest``). Returns a note."""
    found = checkpoints_in(save_dir)
    if not found or (load and os.path.realpath(load) == os.path.realpath(save_dir)):
        return None
    iters = [d for d in found if d != "latest"]
    what = iters[-1] if iters else "latest"
    if not overwrite:
        raise UsedDirectory(
            f"--save {save_dir} already holds checkpoints ({what}); resume them with --load {save_dir}, choose "
            "another --save, or pass --overwrite to replace them"
        )
    for name in found:
        p = os.path.join(save_dir, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.remove(p)
    return f"--overwrite: removed the previous run's checkpoints {', '.join(found)} from {save_dir}"
