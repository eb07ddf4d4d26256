"""Weight sync from the trainer to SGLang servers, and the copy of a role's last weights kept for refills.

``update_weights`` streams (HF name, tensor) pairs to the servers by one of

* ``tensor``: byte-bounded buckets in shared memory, ``/update_weights_from_tensor`` (colocated: same host);
* ``distributed``: a process group between the trainer (rank 0) and the engines' workers,
  ``/update_weights_from_distributed`` + broadcast (NCCL on GPU, gloo on CPU);
* ``disk``: an atomic HF checkpoint + ``/update_weights_from_disk`` (portable fallback).

Generation is paused and the prefix cache flushed around an update, and the server is told a weight version
(``"<role>-<version>"``) that it reports back on every sample. What a role should serve is a ``DiskWeights``
(a checkpoint directory) or ``MemoryWeights`` (a CPU copy, kept only where a role swap needs it or when asked), so
the other role's turn on a shared engine can be refilled without the trainer; without a copy a restarted engine
raises ``RefillNeeded`` and the trainer re-pushes. ``sharded_plan`` / ``finish_sharded`` open and close the
sharded layout's update (``stage_sender.py``, docs/WEIGHT_SYNC.md).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

from megatron_corew.rollout.sglang.http import SGLangError, SGLangHTTPError, expect_success, free_port, http_json
from megatron_corew.rollout.sglang.stage_sender import SyncPlan, buckets
from megatron_corew.rollout.sglang.transport import dtype_name, init_custom_process_group, serialize_named_tensors


class RefillNeeded(SGLangError):
    """An engine came back (restart) without this role's weights and no copy was kept: the trainer must push
    them again (``rollout/generation.py``: all ranks re-push, then rank 0 asks again)."""


class DiskWeights:
    def __init__(self, path: str, tag: str):
        self.path, self.tag = path, tag


class MemoryWeights:
    def __init__(self, tensors: list[tuple[str, torch.Tensor]], tag: str):
        self.tensors, self.tag = tensors, tag


class WeightSync:
    """The push paths of ``SGLangEngine``: it provides ``fleet``, ``state``, ``http``, ``role``, ``weights``,
    ``weight_sync``, ``sync_dir``, ``model_path``, ``bucket_bytes``, ``keep_weights``, ``pause_during_sync``,
    ``dist_backend`` and ``dist_master_addr``."""

    def _load(self, i: int) -> None:
        """Put this role's current weights on engine i (after a restart, or to swap roles)."""
        w = self.weights
        if self.state.loaded[i][1] == w.tag:
            return
        t0 = time.perf_counter()
        if isinstance(w, DiskWeights):
            if not w.path:
                raise RefillNeeded(
                    f"engine {i} needs {self.role} weights {w.tag} again and no copy was kept "
                    f"(--sglang-keep-weights): the trainer re-pushes them"
                )
            self._push_disk([i], w.path, w.tag)
        elif self.weight_sync == "tensor":
            self._push_stream([i], iter(w.tensors), w.tag, keep=False, mode="tensor")
        elif len(self.fleet) == 1:
            self._push_stream([i], iter(w.tensors), w.tag, keep=False, mode="distributed")
        else:
            # a broadcast needs every group member; refill this one engine from disk instead
            from checkpoints_conversion.hf_io import write_hf_checkpoint

            path = os.path.join(self.sync_dir, self.role, "refill-" + w.tag)
            if not os.path.exists(path):
                write_hf_checkpoint(path, iter(w.tensors), config_dir=self.model_path)
            self._push_disk([i], path, w.tag)
        self.state.event(f"engine {i}: loaded {self.role} weights {w.tag} in {time.perf_counter() - t0:.2f} s")

    def _call_all(self, engines: list[int], fn) -> None:
        """fn(i) on every engine concurrently; raise the first error after all finished."""
        if not engines:
            return
        errors = []

        def wrap(i):
            try:
                fn(i)
            except Exception as e:  # noqa: BLE001
                errors.append((i, e))

        with ThreadPoolExecutor(len(engines)) as ex:
            list(ex.map(wrap, engines))
        if errors:
            i, e = errors[0]
            for j, _ in errors:
                self.state.loaded[j] = (self.state.loaded[j][0], None)  # unknown: refill before use
            raise SGLangError(f"weight update of engine {i} ({self.fleet.url(i)}) failed: {e}") from e

    def _post(self, i: int, path: str, payload=None, timeout: float | None = None, what: str = ""):
        return expect_success(
            http_json(
                "POST",
                self.fleet.url(i) + path,
                payload or {},
                timeout=timeout or self.http.control_timeout,
                connect_timeout=self.http.connect_timeout,
                retries=self.http.retries,
                backoff=self.http.backoff,
            ),
            what or path,
        )

    @contextmanager
    def _paused(self, engines: list[int]):
        """Pause generation (requests in flight are retracted and resumed later), flush the cache
        after the update, continue. Our loop never updates while generating, so this is a guard."""
        if self.pause_during_sync:
            self._call_all(engines, lambda i: self._post(i, "/pause_generation", {"mode": "retract"}))
        try:
            yield
        finally:
            if self.pause_during_sync:
                self._call_all(engines, lambda i: self._post(i, "/continue_generation", {}))

    def _mark_loaded(self, engines: list[int], tag: str) -> None:
        for i in engines:
            self.state.loaded[i] = (self.fleet.instance_id(i), tag)
            self.state.stats[i].weight_loads += 1

    def _push_disk(self, engines: list[int], path: str, tag: str) -> None:
        if not engines:
            return
        for i in engines:
            self.state.loaded[i] = (self.state.loaded[i][0], None)
        with self._paused(engines):
            self._call_all(
                engines,
                lambda i: self._post(
                    i,
                    "/update_weights_from_disk",
                    {
                        "model_path": os.path.abspath(path),
                        "weight_version": tag,
                        "flush_cache": True,
                        "keep_pause": self.pause_during_sync,
                    },
                    timeout=self.http.sync_timeout,
                    what=f"update_weights_from_disk({path})",
                ),
            )
        self._mark_loaded(engines, tag)

    def _push_stream(self, engines: list[int], it, tag: str, keep: bool | None = None, mode: str | None = None):
        """Tensor or distributed push of a (name, tensor) stream, bucket by bucket. Returns a CPU
        copy of everything pushed when weights are kept (restart refill / role swap)."""
        mode = mode or self.weight_sync
        keep = self.keep_weights if keep is None else keep
        kept: list | None = [] if keep else None
        if not engines:
            # nothing resident: just keep the weights for later
            for name, t in it:
                if kept is not None:
                    kept.append((name, t.detach().to("cpu", copy=True)))
            return kept
        for i in engines:
            self.state.loaded[i] = (self.state.loaded[i][0], None)
        if mode == "distributed":
            self._ensure_dist_group()
        with self._paused(engines):
            self._call_all(engines, lambda i: self._begin_update(i))
            try:
                pending = None
                for bucket in buckets(it, self.bucket_bytes):
                    if kept is not None:
                        kept.extend((n, t.detach().to("cpu", copy=True)) for n, t in bucket)
                    if pending is not None:
                        self._send_bucket(engines, pending, None, mode)
                    pending = bucket
                if pending is not None:
                    self._send_bucket(engines, pending, tag, mode)
            finally:
                self._call_all(engines, lambda i: self._post(i, "/end_weight_update", {}))
        self._mark_loaded(engines, tag)
        return kept

    def _begin_update(self, i: int) -> None:
        try:
            self._post(i, "/begin_weight_update", {})
        except SGLangError as e:
            if "already open" not in str(e):
                raise
            self._post(i, "/end_weight_update", {})  # a session left open by a failed update
            self._post(i, "/begin_weight_update", {})

    def _send_bucket(self, engines, bucket, tag: str | None, mode: str) -> None:
        last = tag is not None
        if mode == "tensor":
            data, keep = serialize_named_tensors(bucket)
            try:
                self._call_all(
                    engines,
                    lambda i: self._post(
                        i,
                        "/update_weights_from_tensor",
                        {
                            "serialized_named_tensors": [data] * self.fleet.tp_sizes[i],
                            "flush_cache": last,
                            "weight_version": tag,
                        },
                        timeout=self.http.sync_timeout,
                        what="update_weights_from_tensor",
                    ),
                )
            finally:
                del keep
            return
        import torch.distributed as dist

        payload = {
            "names": [n for n, _ in bucket],
            "dtypes": [dtype_name(t.dtype) for _, t in bucket],
            "shapes": [list(t.shape) for _, t in bucket],
            "group_name": self.state.dist_group_name,
            "flush_cache": last,
            "weight_version": tag,
        }
        errors = []

        def post_all():
            try:
                self._call_all(
                    engines,
                    lambda i: self._post(
                        i,
                        "/update_weights_from_distributed",
                        payload,
                        timeout=self.http.sync_timeout,
                        what="update_weights_from_distributed",
                    ),
                )
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        th = threading.Thread(target=post_all, daemon=True)
        th.start()
        dev = "cuda" if self.dist_backend == "nccl" else "cpu"
        for _, t in bucket:
            dist.broadcast(t.detach().to(dev).contiguous(), src=0, group=self.state.dist_group)
        th.join(self.http.sync_timeout + 30)
        if th.is_alive():
            raise SGLangError("update_weights_from_distributed did not return in time")
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ sharded (one sender per pipeline stage)
    def sharded_plan(self, version: int) -> SyncPlan | None:
        """Open a sharded update on every engine (pause, begin) and say how stage senders reach them; None when
        this push must go through rank 0 instead: ``disk`` sync, or a host copy to keep
        (shared role views, ``--sglang-keep-weights on``). Holds the fleet lock until ``finish_sharded``."""
        if self.layout != "sharded" or self.weight_sync == "disk" or self.keep_weights or self.shared:
            return None
        tag = f"{self.role}-{int(version)}"
        self._refuse_while_partial()
        self.state.lock.acquire()
        try:
            self._restarts_left = self.max_restarts
            engines = list(range(len(self.fleet)))
            self._ensure_alive(engines)
            holds_last = all(self.state.loaded[i] == (self.fleet.instance_id(i), self.weights.tag) for i in engines)
            base = self.weights.tag if (self.delta and holds_last and self._delta_tag == self.weights.tag) else None
            for i in engines:
                self.state.loaded[i] = (self.state.loaded[i][0], None)
            if self.pause_during_sync:
                self._call_all(engines, lambda i: self._post(i, "/pause_generation", {"mode": "retract"}))
            self._call_all(engines, lambda i: self._begin_update(i))
        except BaseException:
            self.state.lock.release()
            raise
        return SyncPlan(
            role=self.role,
            tag=tag,
            urls=[self.fleet.url(i) for i in engines],
            tp_sizes=list(self.fleet.tp_sizes),
            bucket_bytes=self.bucket_bytes,
            wire_dtype=self.wire_dtype,
            http=self.http,
            delta=self.delta,
            delta_base=base,
            mode=self.weight_sync,
            instances=[self.fleet.instance_id(i) for i in engines],
            dist_backend=self.dist_backend,
            dist_master_addr=self.dist_master_addr,
        )

    def finish_sharded(self, plan: SyncPlan, version: int, ok: bool) -> None:
        """After every stage sender reported back: close the update, then (all stages succeeded) flush the
        cache and set the version in one empty bucket, and continue generation."""
        engines = list(range(len(self.fleet)))
        try:
            try:
                if ok:
                    data, _keep = serialize_named_tensors([])
                    self._call_all(
                        engines,
                        lambda i: self._post(
                            i,
                            "/update_weights_from_tensor",
                            {
                                "serialized_named_tensors": [data] * self.fleet.tp_sizes[i],
                                "flush_cache": True,
                                "weight_version": plan.tag,
                            },
                            timeout=self.http.sync_timeout,
                            what="update_weights_from_tensor (version)",
                        ),
                    )
            finally:
                self._call_all(engines, lambda i: self._post(i, "/end_weight_update", {}))
                if self.pause_during_sync:
                    self._call_all(engines, lambda i: self._post(i, "/continue_generation", {}))
            if ok:
                self._mark_loaded(engines, plan.tag)
                self.weights = DiskWeights("", plan.tag)  # no copy: a restarted engine gets a re-push
                self._delta_tag = plan.tag if plan.delta else None
                self.weight_version = int(version)
        finally:
            self.state.lock.release()

    # ------------------------------------------------------------------ distributed group
    def _ensure_dist_group(self) -> None:
        st = self.state
        members = [self.fleet.instance_id(i) for i in range(len(self.fleet))]
        if st.dist_group is not None and st.dist_members == members:
            return
        self._destroy_dist_group()
        st.dist_counter += 1
        name = f"corew_weight_sync_{os.getpid()}_{st.dist_counter}"
        port = free_port()
        world = 1 + sum(self.fleet.tp_sizes)
        offsets, off = [], 1
        for tp in self.fleet.tp_sizes:
            offsets.append(off)
            off += tp
        errors = []

        def join(i):
            try:
                self._post(
                    i,
                    "/init_weights_update_group",
                    {
                        "master_address": self.dist_master_addr,
                        "master_port": port,
                        "rank_offset": offsets[i],
                        "world_size": world,
                        "group_name": name,
                        "backend": self.dist_backend,
                    },
                    timeout=self.http.sync_timeout,
                    what="init_weights_update_group",
                )
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=join, args=(i,), daemon=True) for i in range(len(self.fleet))]
        for th in threads:
            th.start()
        t0 = time.perf_counter()
        group = init_custom_process_group(
            self.dist_backend, f"tcp://{self.dist_master_addr}:{port}", world, 0, name, timeout_s=self.http.sync_timeout
        )
        for th in threads:
            th.join(self.http.sync_timeout)
        if errors:
            raise SGLangError(f"could not form the weight-update group: {errors[0]}")
        st.dist_group, st.dist_group_name, st.dist_members = group, name, members
        st.event(
            f"weight-update group {name} ({self.dist_backend}, world {world}) formed in "
            f"{time.perf_counter() - t0:.2f} s"
        )

    def _destroy_dist_group(self) -> None:
        st = self.state
        if st.dist_group is None:
            return
        import torch.distributed as dist

        for i in range(len(self.fleet)):
            try:
                http_json(
                    "POST",
                    self.fleet.url(i) + "/destroy_weights_update_group",
                    {"group_name": st.dist_group_name},
                    timeout=10,
                    retries=0,
                )
            except SGLangHTTPError:
                pass
        try:
            dist.destroy_process_group(st.dist_group)
        except Exception:  # noqa: BLE001
            pass
        st.dist_group = st.dist_group_name = st.dist_members = None
