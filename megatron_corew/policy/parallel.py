"""Process-group start-up: torchrun / srun / a plain single process, gloo on CPU and NCCL on GPU."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist

from megatron_corew.policy import cpu_compat


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(tp: int = 1, pp: int = 1, seed: int = 1234) -> None:
    """Initialise torch.distributed and megatron's parallel state (idempotent).

    Works under torchrun (env:// rendezvous), under SLURM srun (SLURM_PROCID/NTASKS) and as a
    plain ``python`` process (world size 1 on a free local port)."""
    cpu_compat.apply()  # before megatron's first import; a no-op where CUDA exists
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    if not dist.is_initialized():
        if "RANK" not in os.environ and "SLURM_PROCID" in os.environ and "MASTER_ADDR" in os.environ:
            os.environ["RANK"] = os.environ["SLURM_PROCID"]
            os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
            os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
        if "RANK" not in os.environ:
            os.environ.update(
                RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port())
            )
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    world = dist.get_world_size()
    if world % (tp * pp):
        raise ValueError(
            f"world size {world} is not divisible by --tensor-model-parallel-size {tp} "
            f"x --pipeline-model-parallel-size {pp}"
        )
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    model_parallel_cuda_manual_seed(seed)


def destroy_distributed() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_rank0() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def all_reduce_host(tensor: torch.Tensor, op=None, group=None) -> torch.Tensor:
    """All-reduce a small host tensor in place on every backend: NCCL reduces only device tensors, so the values
    travel through the device and back (a no-op copy on CPU). One process: unchanged."""
    if dist.is_initialized() and dist.get_world_size(group) > 1:
        on_device = tensor.to(device())
        dist.all_reduce(on_device, op=op if op is not None else dist.ReduceOp.SUM, group=group)
        tensor.copy_(on_device)
    return tensor


def broadcast_object(obj, src: int = 0):
    """Broadcast a picklable object from global rank src to every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
