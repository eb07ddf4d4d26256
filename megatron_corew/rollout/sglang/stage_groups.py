"""Sharded weight sync over ``--sglang-weight-sync distributed``: each stage sender's own weights-update groups.

A stage sender forms one torch process group **per engine** (itself as rank 0, that engine's TP workers as ranks
1..tp; NCCL on GPU, gloo on CPU) with ``/init_weights_update_group`` and keeps it for later pushes (re-formed when
the engine's instance changed, i.e. it restarted). A bucket is one ``/update_weights_from_distributed`` per engine
naming that group, while the sender broadcasts the bucket's tensors on it. SGLang keeps its groups by name
(``WeightUpdater._model_update_group[group_name]``), so every stage (and rank 0's funnel group) has its own.

Why one group per engine and not one per stage spanning all engines: a server handles one weight request at a
time, in arrival order. With a stage group spanning two servers, server A could serve stage 0's bucket while server
B serves stage 1's, and each broadcast would wait for the other server forever. With per-engine groups, and each
sender sending a bucket to one engine at a time (at most one request of its own in flight, and it is broadcasting
for it), a server's current request waits only for a sender that is already sending: no cycle can form, and the
sender never runs two NCCL communicators at once. docs/WEIGHT_SYNC.md.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

import torch

from megatron_corew.rollout.sglang.http import SGLangError, expect_success, free_port, http_json
from megatron_corew.rollout.sglang.stage_sender import StageSender
from megatron_corew.rollout.sglang.transport import dtype_name, init_custom_process_group

# per process: engine url -> (engine instance id, group name, process group)
_GROUPS: dict[str, tuple[str, str, object]] = {}
_COUNTER = [0]


def own_address(plan, url: str) -> str:
    """Where the engine at ``url`` reaches this process: the configured address on global rank 0, elsewhere the
    local address of the route towards the engine (another node's sender has another address)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        return plan.dist_master_addr
    host = urlparse(url).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, urlparse(url).port or 80))  # UDP connect sends nothing: it only picks the route
        return s.getsockname()[0]


class DistStageSender(StageSender):
    """``StageSender`` whose buckets travel by broadcast on this sender's own group with each engine."""

    def _call(self, url: str, path: str, payload: dict, errors: list) -> None:
        h = self.plan.http
        try:
            expect_success(
                http_json(
                    "POST",
                    url + path,
                    payload,
                    timeout=h.sync_timeout,
                    connect_timeout=h.connect_timeout,
                    retries=0,  # never re-post a request the server may already be waiting in
                ),
                path.strip("/"),
            )
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def _group(self, i: int):
        plan = self.plan
        url, instance = plan.urls[i], plan.instances[i]
        have = _GROUPS.get(url)
        if have is not None and have[0] == instance:
            return have[1], have[2]
        drop(url)
        _COUNTER[0] += 1
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_initialized() else 0
        name = f"corew_stage_r{rank}_{os.getpid()}_{_COUNTER[0]}"
        addr = own_address(plan, url)
        port = free_port("0.0.0.0" if addr not in ("127.0.0.1", "localhost") else addr)
        world = 1 + plan.tp_sizes[i]
        payload = {
            "master_address": addr,
            "master_port": port,
            "rank_offset": 1,
            "world_size": world,
            "group_name": name,
            "backend": plan.dist_backend,
        }
        errors: list = []
        th = threading.Thread(target=self._call, args=(url, "/init_weights_update_group", payload, errors))
        th.start()
        timeout = plan.http.sync_timeout
        pg = init_custom_process_group(plan.dist_backend, f"tcp://{addr}:{port}", world, 0, name, timeout_s=timeout)
        th.join(timeout)
        if errors or th.is_alive():
            raise SGLangError(f"could not form weight-update group {name} with {url}: {errors or 'timeout'}")
        _GROUPS[url] = (instance, name, pg)
        return name, pg

    def push(self, named_tensors) -> StageSender:
        # form (or reuse) the groups one engine at a time before the first bucket: a server blocks in
        # /init_weights_update_group only while this sender waits for exactly that group
        self.groups = [self._group(i) for i in range(len(self.plan.urls))]
        return super().push(named_tensors)

    def _send(self, bucket) -> None:
        import torch.distributed as dist

        dev = "cuda" if self.plan.dist_backend == "nccl" else "cpu"
        tensors = [t.detach().to(dev).contiguous() for _, t in bucket]
        meta = {
            "names": [n for n, _ in bucket],
            "dtypes": [dtype_name(t.dtype) for t in tensors],
            "shapes": [list(t.shape) for t in tensors],
            "flush_cache": False,
        }
        # one engine at a time: this sender then has one request in flight, and it is broadcasting for it
        for url, (name, pg) in zip(self.plan.urls, self.groups):
            errors: list = []
            th = threading.Thread(
                target=self._call, args=(url, "/update_weights_from_distributed", dict(meta, group_name=name), errors)
            )
            th.start()
            try:
                for t in tensors:
                    dist.broadcast(t, src=0, group=pg)
            except Exception:
                drop(url)
                raise
            finally:
                th.join(self.plan.http.sync_timeout + 30)
            if errors or th.is_alive():
                drop(url)
                raise SGLangError(f"update_weights_from_distributed into {url} failed: {errors or 'timeout'}")


def drop(url: str) -> None:
    """Forget (and locally destroy) this process's group with the engine at ``url``."""
    have = _GROUPS.pop(url, None)
    if have is None:
        return
    try:
        torch.distributed.destroy_process_group(have[2])
    except Exception:  # noqa: BLE001
        pass


def make_sender(plan) -> StageSender:
    return DistStageSender(plan) if plan.mode == "distributed" else StageSender(plan)
