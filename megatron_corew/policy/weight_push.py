"""Pushing the trainer's weights (policy or EMA teacher) into the rollout engine, and what a push cost.

Two layouts (docs/WEIGHT_SYNC.md):

* ``sharded``: rank 0 opens the update on its engines and broadcasts a ``SyncPlan``; every pipeline stage's sender
  (data-parallel 0, tensor-parallel 0; TP shards are gathered inside the stage) posts its own stage's tensors
  straight to the engines; one all-reduce of what each sent is the barrier, after which rank 0 sets the version.
* ``funnel``: every tensor through global rank 0 (stages send point to point), for the embedded engine, disk
  sync and engines that keep a host copy.

Sharded pushes travel by ``tensor`` (shared memory / CUDA IPC) or ``distributed`` sync (each sender's own
process group with every engine, ``rollout/sglang/stage_groups.py``).

Either way floating tensors are cast to the engine's dtype before they travel (an fp32 teacher into a bf16 engine
travels as bf16). ``push`` returns seconds and bytes (summed over stage senders) and per-rank rows.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from megatron_corew.policy import parallel
from megatron_corew.policy.weights import export_hf_weights, is_stage_sender, stage_tensors

ROLES = {"policy": "policy", "anchor": "teacher"}


def _dtype(name):
    return getattr(torch, name) if name else None


def _counted(it, box: dict):
    for name, t in it:
        box["bytes"] += t.numel() * t.element_size()
        box["tensors"] += 1
        yield name, t


def push(model, args, engine, version: int, which: str = "policy") -> dict:
    """Push ``model``'s weights into ``engine`` (global rank 0's engine; None elsewhere). Collective: every rank
    calls it. Returns {"seconds", "bytes", "layout", "per_rank": [{"rank", "bytes", "p2p_bytes", "seconds"}]}."""
    t0 = time.perf_counter()
    plan, wire, layout = None, None, "none"
    if engine is not None:
        try:
            opener = getattr(engine, "sharded_plan", None)
            plan = opener(version) if opener is not None else None
            layout = "sharded" if plan is not None else "funnel"
            wire = getattr(engine, "wire_dtype", None)
        except Exception as e:  # noqa: BLE001  (tell the other ranks before raising)
            layout, plan = "error", f"{type(e).__name__}: {e}"
    layout, plan, wire = parallel.broadcast_object((layout, plan, wire))
    if layout == "error":
        raise RuntimeError(f"weight sync of {ROLES.get(which, which)} could not start: {plan}")
    mine = {"bytes": 0, "tensors": 0, "p2p_bytes": 0, "failed": 0}
    if layout == "sharded":
        from megatron_corew.rollout.sglang.stage_groups import make_sender

        sender = make_sender(plan) if is_stage_sender() else None
        tensors = stage_tensors(model, args) if _data_parallel_rank() == 0 else iter(())
        try:
            if sender is not None:
                sender.push(tensors)
                mine["bytes"], mine["tensors"] = sender.bytes, sender.tensors
                mine["skipped_bytes"], mine["names"] = sender.skipped_bytes, sender.names
            else:
                for _ in tensors:  # the TP gathers are collective within the stage
                    pass
        except Exception as e:  # noqa: BLE001  (reported after the barrier, so no rank is left waiting)
            mine["failed"], mine["error"] = 1, f"{type(e).__name__}: {e}"
            for _ in tensors:  # the stage's other TP ranks still gather with this one
                pass
    elif layout == "funnel":
        sent: dict = {}
        it = export_hf_weights(model, args, dtype=_dtype(wire), sent=sent)
        if engine is not None:
            engine.update_weights(_counted(it, mine), version)
        else:
            for _ in it:
                pass
        mine["p2p_bytes"] = sent.get("bytes", 0)
    mine["seconds"] = time.perf_counter() - t0
    rows = _gather(mine)
    failed = [r for r in rows if r["failed"]]
    if layout == "sharded" and engine is not None:
        engine.finish_sharded(plan, version, ok=not failed)
    if failed:
        raise RuntimeError(
            f"sharded weight sync of {ROLES.get(which, which)} failed on rank "
            f"{failed[0]['rank']}: {failed[0].get('error')}"
        )
    return {
        "layout": layout,
        "seconds": time.perf_counter() - t0,
        "bytes": sum(r["bytes"] for r in rows),
        "skipped_bytes": sum(r.get("skipped_bytes", 0) for r in rows),
        "per_rank": rows,
    }


def _data_parallel_rank() -> int:
    from megatron.core import parallel_state as ps

    return ps.get_data_parallel_rank()


def _gather(mine: dict) -> list[dict]:
    """Every rank's row on every rank (also the barrier that ends a sharded push)."""
    mine = dict(mine, rank=parallel.rank())
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [mine]
    rows = [None] * dist.get_world_size()
    dist.all_gather_object(rows, mine)
    return rows


def metrics(stats: dict) -> dict:
    """``perf/weight_sync_{policy,teacher}_{s,bytes}`` of this step's pushes (0 for a role that was not pushed)."""
    out = {}
    for which, role in ROLES.items():
        if which in stats:
            s = stats[which]
            out[f"perf/weight_sync_{role}_s"] = s["seconds"] if s else 0.0
            out[f"perf/weight_sync_{role}_bytes"] = s["bytes"] if s else 0
    return out
