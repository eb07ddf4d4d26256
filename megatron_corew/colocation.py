"""Time-sharing of the GPUs between the trainer and the rollout engines (``--colocate``, ``--offload-train``).

Each stage of a step needs one of three placements; ``enter(phase)`` frees what the phase does not need before
it allocates what it does (so the peak is never trainer + engines in full):

| phase     | trainer state (policy/train_offload.py) | SGLang engines (rollout/sglang/memory.py) | stages                       |
|-----------|------------------------------------------|-------------------------------------------|------------------------------|
| `rollout` | offloaded to host                        | weights + KV cache                        | generate, teacher_generate, validation |
| `train`   | on the device                            | released                                  | EMA update, logprob, train, checkpoints |
| `sync`    | on the device                            | weights only (pushed by CUDA IPC)         | weight_sync, teacher push    |

``--offload-train`` alone moves only the trainer (any backend, CPU too). ``--colocate`` adds the engines: with the
SGLang backend on CUDA they are launched with ``--enable-memory-saver`` and release / resume by tag; elsewhere
(embedded engine, CPU servers) there is no engine memory to hand over and only the trainer moves (said once at
start-up). ``PhaseTimer`` enters each stage's phase and logs device memory before / after it as ``mem/*``.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from megatron_corew.utils.timing import StageTimer

STAGE_PHASE = {
    "generate": "rollout",
    "teacher_generate": "rollout",
    "logprob": "train",
    "train": "train",
    "weight_sync": "sync",
}
ENGINE_TAGS = {"rollout": ("weights", "kv_cache"), "train": (), "sync": ("weights",)}


class Colocation:
    def __init__(self, trainer, *, offload_train: bool, colocate: bool, rollout_cfg=None, log=print):
        from megatron_corew.policy.train_offload import TrainStateOffload

        self.active = offload_train or colocate
        # trainer None: the engines alone follow the phases (tests of the engine side)
        self.offload = TrainStateOffload(trainer.model, trainer.optimizer) if self.active and trainer else None
        backend = getattr(rollout_cfg, "backend", "embedded")
        device = getattr(rollout_cfg, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
        self.engine_memory = colocate and backend == "sglang" and device == "cuda"
        if self.engine_memory and "--enable-memory-saver" not in rollout_cfg.server_args:
            rollout_cfg.server_args.append("--enable-memory-saver")  # release/resume free memory only with it
        if colocate and not self.engine_memory and parallel_rank() == 0:
            why = (
                "the embedded engine has no memory of its own to hand over"
                if backend != "sglang"
                else f"SGLang on {device}: release/resume needs CUDA and torch_memory_saver"
            )
            log(f"[colocate] {why}; only the trainer state is offloaded between phases")
        self.engines: list = []
        self.engine_tags: set[str] = {"weights", "kv_cache"}  # engines start with everything allocated
        self.phase: str | None = None  # as built: trainer on the device, engines with everything

    def attach(self, *engines) -> None:
        """The engines whose memory follows the phases (one per fleet: a shared teacher view is its policy's)."""
        fleets = set()
        for e in engines:
            if e is not None and self.engine_memory and id(e.fleet) not in fleets:
                fleets.add(id(e.fleet))
                self.engines.append(e)

    def enter(self, phase: str) -> None:
        if not self.active or phase == self.phase:
            return
        from megatron_corew.rollout.sglang import memory

        want = set(ENGINE_TAGS[phase])
        drop, add = sorted(self.engine_tags - want), sorted(want - self.engine_tags)
        if drop:
            for e in self.engines:
                memory.release(e, drop)
        if self.offload is not None:
            self.offload.offload() if phase == "rollout" else self.offload.onload()
        if add:
            for e in self.engines:
                memory.resume(e, add)
        self.engine_tags = want
        self.phase = phase

    @contextmanager
    def hold(self, phase: str):
        """``phase`` for this block (a checkpoint between steps), then back to where the loop was."""
        before = self.phase
        self.enter(phase)
        try:
            yield
        finally:
            if before is not None:
                self.enter(before)

    def end_step(self, timer: StageTimer) -> None:
        """After train + sync: the trainer leaves the device and the engines get it back for the next step."""
        if self.active:
            with timer.stage("switch_to_rollout"):
                self.enter("rollout")

    def device_bytes(self) -> int | None:
        """Device memory now: the CUDA allocator's count, else (CPU) the offload module's count of the trainer's
        state; None on CPU without offload (no metric, so default CPU runs log what they always logged)."""
        if torch.cuda.is_available():
            return torch.cuda.memory_allocated()
        return sum(self.offload.device_bytes().values()) if self.offload is not None else None

    def step_metrics(self) -> dict:
        if self.offload is None:
            return {}
        host = self.offload.host_bytes()
        return {
            "mem/train_state_host_bytes": sum(host[c] for c in ("params", "main_params", "optimizer_state")),
            "mem/train_state_device_bytes": sum(self.offload.device_bytes().values()),
        }

    def timer(self) -> "PhaseTimer":
        return PhaseTimer(self)


def parallel_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


class PhaseTimer(StageTimer):
    """A ``StageTimer`` whose stages first enter their phase (timed as ``perf/time_switch_to_<phase>``) and log
    ``mem/<stage>_before_bytes`` / ``mem/<stage>_after_bytes`` around the stage itself."""

    def __init__(self, colocation: Colocation):
        super().__init__()
        self.colocation = colocation
        self.memory: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        c = self.colocation
        phase = STAGE_PHASE.get(name)
        if phase is not None and c.active and phase != c.phase:
            with super().stage(f"switch_to_{phase}"):
                c.enter(phase)
        before = c.device_bytes()
        with super().stage(name):
            yield
        if before is not None:
            self.memory[f"mem/{name}_before_bytes"] = before
            self.memory[f"mem/{name}_after_bytes"] = c.device_bytes()
