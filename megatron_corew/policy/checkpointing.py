"""Atomic RL checkpoints: megatron dist-checkpoint (model, optimizer, anchor) plus the loop state.

Layout: ``SAVE/iter_0000010/`` holds ``model/`` (torch_dist, reloadable at any TP/PP) and
``state.pt`` (step, scheduler, data cursor, RNG, weight version). It is written in a hidden temp
directory beside it and renamed into place only when complete; ``SAVE/latest`` is then replaced
atomically (:mod:`checkpoints_conversion.atomic`), so a crash mid-write leaves the previous checkpoint
and pointer intact, and the next save removes the killed writer's temp directory.
"""

from __future__ import annotations

import os
import random
import shutil

import torch
from torch.distributed.checkpoint.api import CheckpointException

from checkpoints_conversion.atomic import commit_dir, publish_pointer, temp_dir
from checkpoints_conversion.hf_io import CheckpointError
from megatron_corew import flags
from megatron_corew.policy import parallel
from megatron_corew.policy.parallel import broadcast_object
from megatron_corew.utils import faults, lifecycle

_OPT_META = {"distrib_optim_sharding_type": "dp_reshardable"}


def _sharded_state(trainer, is_loading: bool = False):
    """Call inside ``trainer.anchor_resident()``: the anchor's tensors must be on their devices."""
    model_sd = trainer.model.module.sharded_state_dict()
    sd = {
        "model": model_sd,
        "optimizer": trainer.optimizer.sharded_state_dict(model_sd, is_loading=is_loading, metadata=_OPT_META),
    }
    if trainer.anchor is not None:
        sd["anchor"] = trainer.anchor.sharded_state_dict(prefix="anchor.")
    return sd


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def publish_latest(root: str, name: str, prefix: str, keep_last: int | None) -> None:
    """Point ``root/latest`` at the finished ``name`` (fsynced temp file + rename: the pointer is never torn), then
    drop all but the newest ``keep_last`` entries starting with ``prefix`` (names sort by step)."""
    publish_pointer(root, name)
    if keep_last:
        done = sorted(d for d in os.listdir(root) if d.startswith(prefix))
        for old in done[:-keep_last]:
            shutil.rmtree(os.path.join(root, old), ignore_errors=True)


_MANAGERS: list = []


def _signal_proof_writer_queue() -> None:
    """megatron's torch_dist save collects its writer processes' results through a multiprocessing manager that it
    spawns on first use; a SIGTERM to the whole process group (SLURM preemption) killed that manager mid-save and
    the save died (EOFError / BrokenPipeError). Start the manager here instead, ignoring SIGINT/SIGTERM."""
    import multiprocessing as mp
    from multiprocessing.managers import SyncManager

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if _MANAGERS or getattr(filesystem_async, "_results_queue", "absent") is not None:
        return  # ours already, megatron's already, or a megatron without this queue
    manager = SyncManager(ctx=mp.get_context("spawn"))
    manager.start(initializer=lifecycle.ignore_stop_signals)
    _MANAGERS.append(manager)
    filesystem_async._results_queue = manager.Queue()


def save_checkpoint(save_dir: str, step: int, trainer, loop_state: dict, keep_last: int | None = None) -> str:
    from megatron.core import dist_checkpointing

    _signal_proof_writer_queue()

    name = f"iter_{step:07d}"
    final = os.path.join(save_dir, name)
    tmp = None
    if parallel.is_rank0():
        os.makedirs(save_dir, exist_ok=True)
        tmp = temp_dir(final)  # also removes the temp directory of a writer killed mid-save
        os.makedirs(os.path.join(tmp, "model"))
    tmp = broadcast_object(tmp)  # every rank writes its shards into rank 0's temp directory
    parallel.barrier()
    with trainer.anchor_resident():
        dist_checkpointing.save(_sharded_state(trainer), os.path.join(tmp, "model"))
    parallel.barrier()
    faults.maybe_kill("during_save", step)
    if parallel.is_rank0():
        state = {"step": step, "scheduler": trainer.scheduler.state_dict(), "rng": rng_state(), **loop_state}
        torch.save(state, os.path.join(tmp, "state.pt"))
        commit_dir(tmp, final)
        publish_latest(save_dir, name, "iter_", keep_last)
    parallel.barrier()
    return final


def latest_checkpoint(load_dir: str) -> str | None:
    """The checkpoint ``load_dir/latest`` names (a pointer file, or a link as HF exports use); None without one;
    CheckpointError when it dangles or names something that is not an RL checkpoint (an HF export)."""
    pointer = os.path.join(load_dir, "latest")
    if not os.path.lexists(pointer):
        return None
    if os.path.islink(pointer) or os.path.isdir(pointer):
        path = os.path.join(load_dir, os.readlink(pointer)) if os.path.islink(pointer) else pointer
        path = os.path.normpath(path)
        if os.path.isfile(os.path.join(path, "config.json")) and not os.path.isfile(os.path.join(path, "state.pt")):
            raise CheckpointError(
                f"{pointer} points to the HF export {path}, not an RL checkpoint; start from it with "
                f"--hf-checkpoint {path} (--load resumes a directory written by --save)"
            )
        name = os.path.relpath(path, load_dir)
    else:
        with open(pointer) as f:
            name = f.read().strip()
        path = os.path.join(load_dir, name)
    if not name or not os.path.isfile(os.path.join(path, "state.pt")):
        done = sorted(d for d in os.listdir(load_dir) if d.startswith("iter_"))
        hint = f"; the newest complete one may be {done[-1]}: write that name into {pointer}" if done else ""
        raise CheckpointError(f"{pointer} points to {path}, which is not a complete checkpoint{hint}")
    return path


def read_state(path: str) -> dict:
    """``path/state.pt``; a truncated or corrupt file is a CheckpointError naming it."""
    f = os.path.join(path, "state.pt")
    try:
        state = torch.load(f, weights_only=False)
    except Exception as e:  # EOFError, UnpicklingError, RuntimeError (zip): one line, not a traceback
        raise CheckpointError(
            f"{f} is corrupt or truncated ({type(e).__name__}: {e}); resume an earlier checkpoint"
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{f} is not an RL checkpoint state (no 'step')")
    return state


def load_checkpoint(load_dir: str, trainer, check=None) -> dict | None:
    """Restore model, optimizer, anchor and scheduler in place; returns the loop state or None.
    ``check(state)`` runs on the loop state before any tensor is loaded (refuse a changed experiment there)."""
    from megatron.core import dist_checkpointing

    path = latest_checkpoint(load_dir)
    if path is None:
        return None
    state = read_state(path)
    if check is not None:
        check(state)
    try:
        with trainer.anchor_resident(modify=True):
            loaded = dist_checkpointing.load(_sharded_state(trainer, is_loading=True), os.path.join(path, "model"))
            trainer.model.module.load_state_dict(loaded["model"])
            with torch.no_grad():
                trainer.optimizer.load_state_dict(loaded["optimizer"])
            if trainer.anchor is not None and "anchor" in loaded:
                prefix = "anchor."
                trainer.anchor.load_state_dict(
                    {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in loaded["anchor"].items()}
                )
    except CheckpointError:
        raise
    except (Exception, CheckpointException) as e:  # megatron's / torch's (a BaseException) errors on torn shards
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise CheckpointError(
            f"{path}/model cannot be loaded ({type(e).__name__}: {msg}); it is corrupt or truncated, or was "
            "written for another model or optimizer"
        ) from None
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.step_count = state["step"]
    set_rng_state(state["rng"])
    return state


# ---------------------------------------------------------------------- the run a checkpoint belongs to
SHAPE = ("model_type", "vocab_size", "hidden_size", "num_layers", "num_attention_heads", "num_query_groups")
DERIVED = {  # settings not given as one flag; resuming with another value is another experiment, or why not
    **dict.fromkeys(SHAPE, flags.REFUSE),
    "num_prompts": flags.REFUSE,
    "kl_anchor": "follows the reward method, which is refused when it changes",
}


def experiment_table() -> dict[str, str]:
    """Every recorded setting -> ``flags.REFUSE`` or the reason a changed value is only warned about: the
    experiment-defining flags of megatron_corew/flags.py plus the model shape and the data size."""
    return {**flags.EXPERIMENT, **DERIVED}


def run_settings(args, method, model_args, train_iters: int, num_prompts: int) -> dict:
    """What defines the experiment, recorded in every checkpoint's state.pt and checked on resume."""
    out = {k: getattr(args, k) for k in flags.EXPERIMENT if hasattr(args, k)}
    out.update({k: getattr(model_args, k) for k in SHAPE})
    out.update(kl_anchor=method.anchor, train_iters=train_iters, num_prompts=num_prompts)
    return out


def compare_settings(saved: dict | None, now: dict, where: str) -> list[str]:
    """Raise CheckpointError (one line) on a changed experiment-defining setting; warnings (with the reason the
    change is allowed) for the others. Settings the checkpoint does not record are not compared."""
    if not saved:
        return [f"{where} records no run settings (written by an older version); they are not checked"]
    table, warnings = experiment_table(), []
    for key, rule in table.items():
        if key not in saved or saved[key] == now.get(key):
            continue
        if rule == flags.REFUSE:
            raise CheckpointError(
                f"{where} was written with {key}={saved[key]} but this run has {key}={now.get(key)}; "
                "resuming would continue another experiment (start a new run without --load)"
            )
        warnings.append(f"resuming {where} with {key}={now.get(key)} (the checkpoint has {saved[key]}): {rule}")
    return warnings
