"""How weight tensors travel from the trainer to SGLang servers: shared memory (CPU) or CUDA IPC handles in the
payload of ``/update_weights_from_tensor``, and a process group of its own for ``/update_weights_from_distributed``.
"""

from __future__ import annotations

import base64
import io
import os
import sys
from contextlib import contextmanager

import torch


def dtype_name(dt: torch.dtype) -> str:
    """The dtype as SGLang's update endpoints name it ("bfloat16", not "torch.bfloat16")."""
    return str(dt).replace("torch.", "")


@contextmanager
def _file_system_sharing():
    """CPU tensors cross to the server by file name in /dev/shm (the default fd-passing strategy
    needs a shared multiprocessing authkey, which unrelated processes do not have)."""
    import torch.multiprocessing as mp

    old = mp.get_sharing_strategy()
    mp.set_sharing_strategy("file_system")
    try:
        yield
    finally:
        mp.set_sharing_strategy(old)


_SHM_MANAGER_STARTED = False


def _start_shm_manager_detached() -> None:
    """torch starts one ``torch_shm_manager`` per process on the first file_system share; it
    lives as long as any process (here: the SGLang scheduler) still maps its segments, and it
    inherits stdout/stderr. Start it with those pointing at /dev/null, so a wrapper reading the
    trainer's output pipes is not kept waiting by it after the trainer exited."""
    global _SHM_MANAGER_STARTED
    if _SHM_MANAGER_STARTED:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        with _file_system_sharing():
            torch.empty(1).share_memory_()
        _SHM_MANAGER_STARTED = True
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [null]:
            os.close(fd)


def serialize_named_tensors(named: list[tuple[str, torch.Tensor]]) -> tuple[str, list[torch.Tensor]]:
    """What SGLang's MultiprocessingSerializer produces (ForkingPickler, base64), without importing
    sglang. CPU tensors are copied once into fresh shared memory (never the trainer's own
    parameter storage); the returned buffers must stay alive until the server has loaded them."""
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing.reductions  # noqa: F401  (registers the tensor reducers)

    _start_shm_manager_detached()
    keep, items = [], []
    with _file_system_sharing():
        for name, t in named:
            t = t.detach()
            if t.device.type == "cpu":
                buf = torch.empty(t.shape, dtype=t.dtype).share_memory_()
                buf.copy_(t)
            else:
                buf = t.contiguous()  # CUDA IPC handle (colocated GPU)
            keep.append(buf)
            items.append((name, buf))
        out = io.BytesIO()
        ForkingPickler(out).dump(items)
    return base64.b64encode(out.getvalue()).decode(), keep


def init_custom_process_group(
    backend: str, init_method: str, world_size: int, rank: int, group_name: str, timeout_s: float = 600.0
):
    """A process group between this trainer process and the engines that is independent of the
    trainer's own default group (same construction as SGLang/verl use on the engine side)."""
    from datetime import timedelta
    from urllib.parse import urlparse

    from torch.distributed import TCPStore
    from torch.distributed.distributed_c10d import Backend, PrefixStore, _new_process_group_helper, _world

    timeout = timedelta(seconds=timeout_s)
    # the store is built here, not by torch's rendezvous(init_method): under torchrun that makes every rank a
    # client of the launcher's agent store (TORCHELASTIC_USE_AGENT_STORE), so rank 0 hosts nothing and the
    # engines and the trainer wait for each other until the timeout
    addr = urlparse(init_method)
    store = TCPStore(addr.hostname, addr.port, world_size, rank == 0, timeout, multi_tenant=True)
    store = PrefixStore(group_name, store)
    # works with or without the trainer's own default group (checked with gloo on torch 2.13)
    pg, _ = _new_process_group_helper(
        world_size, rank, [], Backend(backend), store, group_name=group_name, timeout=timeout, backend_options=None
    )
    _world.pg_group_ranks[pg] = {i: i for i in range(world_size)}
    return pg
