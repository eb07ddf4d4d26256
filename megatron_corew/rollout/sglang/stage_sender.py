"""Sharded weight sync: each pipeline stage's sender pushes its own stage's tensors straight to the engines.

Global rank 0 owns the engines (``SGLangEngine``); the other stage senders only need where the engines are and how
to reach them. Rank 0 opens the update (pause, ``/begin_weight_update``) and broadcasts a ``SyncPlan``; every
stage's sender (its data-parallel-0, tensor-parallel-0 rank) builds a ``StageSender`` from it and posts its stage's
HF-named tensors in byte-bounded buckets (``/update_weights_from_tensor``: shared memory on one host, CUDA IPC
colocated); rank 0 closes it (flush, version, continue) after every stage reported back. docs/WEIGHT_SYNC.md.

Delta sync (``SyncPlan.delta``): a sender remembers a digest of every tensor it pushed for a role; when the engines
still hold exactly that push (``SyncPlan.delta_base``), only tensors whose bytes changed travel.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from megatron_corew.rollout.sglang.http import HTTPConfig, SGLangError, expect_success, http_json
from megatron_corew.rollout.sglang.transport import serialize_named_tensors


@dataclass
class SyncPlan:
    """What a stage sender needs from rank 0 (picklable: it is broadcast)."""

    role: str
    tag: str
    urls: list[str]
    tp_sizes: list[int]
    bucket_bytes: int
    wire_dtype: str | None = None  # "bfloat16", ...: cast before travelling; None: as exported
    http: HTTPConfig = field(default_factory=HTTPConfig)
    delta: bool = False
    delta_base: str | None = None  # the tag the engines hold now, if it is this role's last push
    mode: str = "tensor"  # "distributed": buckets travel on each sender's own process groups (stage_groups.py)
    instances: list[str] | None = None  # engine instance ids: a changed one (restart) needs a new group
    dist_backend: str = "gloo"
    dist_master_addr: str = "127.0.0.1"  # where engines reach global rank 0 (other senders find their own)


def buckets(it, bucket_bytes: int):
    """Group (name, tensor) pairs into lists of at most ``bucket_bytes`` (a larger tensor travels alone)."""
    bucket, size = [], 0
    for name, t in it:
        nbytes = t.numel() * t.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, t))
        size += nbytes
    if bucket:
        yield bucket


def tensor_digest(t: torch.Tensor) -> bytes:
    """blake2b of the tensor's bytes (dtype and shape included): equal digests = equal wire images."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


# per process: role -> (tag, {name: digest}) of the last push, for delta sync
_LAST_PUSH: dict[str, tuple[str, dict[str, bytes]]] = {}


class StageSender:
    """Posts one stage's tensors to every engine of a ``SyncPlan``; counts what travelled."""

    def __init__(self, plan: SyncPlan):
        self.plan = plan
        self.dtype = getattr(torch, plan.wire_dtype) if plan.wire_dtype else None
        self.bytes = self.tensors = self.skipped = self.skipped_bytes = 0
        self.names: list[str] = []
        self.seconds = 0.0

    def _post(self, url: str, payload: dict) -> None:
        h = self.plan.http
        expect_success(
            http_json(
                "POST",
                url + "/update_weights_from_tensor",
                payload,
                timeout=h.sync_timeout,
                connect_timeout=h.connect_timeout,
                retries=h.retries,
                backoff=h.backoff,
            ),
            "update_weights_from_tensor",
        )

    def _send(self, bucket) -> None:
        data, keep = serialize_named_tensors(bucket)
        try:
            payload = lambda tp: {"serialized_named_tensors": [data] * tp, "flush_cache": False}  # noqa: E731
            urls = self.plan.urls
            with ThreadPoolExecutor(len(urls)) as ex:
                list(ex.map(lambda i: self._post(urls[i], payload(self.plan.tp_sizes[i])), range(len(urls))))
        finally:
            del keep

    def _wire(self, it):
        """Cast to the wire dtype, drop tensors unchanged since the engines' last push (delta), count."""
        plan = self.plan
        previous = _LAST_PUSH.get(plan.role)
        base = previous[1] if (plan.delta and previous and previous[0] == plan.delta_base) else None
        digests: dict[str, bytes] = {}
        for name, t in it:
            if self.dtype is not None and t.is_floating_point() and t.dtype != self.dtype:
                t = t.to(self.dtype)
            nbytes = t.numel() * t.element_size()
            if plan.delta:
                digests[name] = tensor_digest(t)
                if base is not None and base.get(name) == digests[name]:
                    self.skipped += 1
                    self.skipped_bytes += nbytes
                    continue
            self.tensors += 1
            self.bytes += nbytes
            self.names.append(name)
            yield name, t
        if plan.delta:
            self._digests = digests

    def push(self, named_tensors) -> "StageSender":
        """Send every bucket; on success remember the digests (delta) under the plan's tag."""
        t0 = time.perf_counter()
        self._digests = None
        for bucket in buckets(self._wire(iter(named_tensors)), self.plan.bucket_bytes):
            self._send(bucket)
        if self._digests is not None:
            _LAST_PUSH[self.plan.role] = (self.plan.tag, self._digests)
        self.seconds = time.perf_counter() - t0
        return self


def forget(role: str) -> None:
    """Drop the delta base of a role (its engines no longer hold the last push)."""
    _LAST_PUSH.pop(role, None)


def check_plan(plan: SyncPlan) -> None:
    if not plan.urls or len(plan.urls) != len(plan.tp_sizes):
        raise SGLangError(f"weight-sync plan for {plan.role} names no engines ({plan.urls})")
