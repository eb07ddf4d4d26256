"""Rollout pipelining (issue 13): one-step off-policy rollouts and Co-rewarding-II teacher prefetch.

``--async-rollout``: while step k scores and trains, a background thread on rank 0 already generates the rollouts
of steps k+1..k+K (K = ``--max-staleness``) from the weights the engine holds, those of step k-K+1 at the latest.
Sync policy: *wait*. Before new weights are pushed, the in-flight generations finish on the old weights; nothing
is paused or mixed, so every sample of a batch carries one weight version (``Generation.weight_version``), and a
batch whose samples lag the trainer by more than K versions stops the run. K=0 is the synchronous schedule.

``--teacher-prefetch`` (also without ``--async-rollout``): the EMA teacher answers step k+1's questions while step
k trains, so its labels come from the teacher before step k+1's EMA update (one EMA step older than the
synchronous loop's; logged as ``rollout/teacher_label_staleness``).

Resume: a checkpoint at step k holds the sampler cursor of consumed batches only, plus the finished, not yet
trained policy rollouts of steps >= k (made from weights older than the checkpoint's, so they could not be
regenerated). Teacher rollouts are not saved: they are regenerated with the same seed from the checkpoint's
teacher, which is the one they were made from. See docs/ASYNC.md.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future, ThreadPoolExecutor

from megatron_corew.policy import parallel
from megatron_corew.rollout.base import Generation

__all__ = ["RolloutPipeline"]


def _staleness_error(step: int, lag: int, trainer: int, k: int) -> str:
    return (
        f"step {step + 1}: rollouts made from weight version {trainer - lag} lag the trainer (version {trainer}) "
        f"by {lag} > --max-staleness {k}; refusing to train on them"
    )


class RolloutPipeline:
    """Futures of rollouts started ahead of their step, on rank 0; every rank calls every method in step order."""

    def __init__(self, run):
        a = run.args
        self.run = run
        self.max_staleness = a.max_staleness if a.async_rollout else 0
        self.teacher_prefetch = bool(a.teacher_prefetch and run.method.teacher)
        self.rank0 = parallel.is_rank0()
        self.policy: dict[int, Future] = {}  # step -> Future[(list[Generation], seconds)], rank 0 only
        self.teacher: dict[int, Future] = {}
        self._policy_pool = self._teacher_pool = None
        if self.rank0:  # one thread per engine: each engine generates its batches in step order
            self._policy_pool = ThreadPoolExecutor(1, thread_name_prefix="corew-rollout")
            if self.teacher_prefetch:
                self._teacher_pool = ThreadPoolExecutor(1, thread_name_prefix="corew-teacher")

    # ------------------------------------------------------------------ policy rollouts
    @staticmethod
    def _timed(engine, prompts, params):
        t0 = time.perf_counter()
        gens = engine.generate(prompts, params)
        return gens, time.perf_counter() - t0

    def _submit_policy(self, step: int, ahead: int) -> None:
        """Start step ``step``'s rollouts; its prompts are the sampler's batch ``ahead`` after the next one."""
        run = self.run
        batch = run.new_batch(step, indices=run.sampler.peek(ahead))
        params = run.rollout_sampling(step, "policy")
        self.policy[step] = self._policy_pool.submit(self._timed, run.engine, batch.prompt_ids(), params)

    def rollouts(self, batch) -> dict:
        """This step's rollouts into ``batch`` (started earlier, or now), then start the next steps'."""
        run, step, k = self.run, batch.step, self.max_staleness
        gens = seconds = None
        if self.rank0:
            fut = self.policy.pop(step, None)
            if fut is None:  # first step, K=0, or a resume without saved rollouts: generate now
                fut = self._policy_pool.submit(
                    self._timed, run.engine, batch.prompt_ids(), run.rollout_sampling(step, "policy")
                )
            gens, seconds = fut.result()
            if [g.prompt_ids for g in gens] != batch.prompt_ids():
                raise RuntimeError(f"step {step + 1}: prefetched rollouts answer other prompts than the sampler's")
            for s in range(step + 1, min(step + k, run.train_iters - 1) + 1):
                if s not in self.policy:
                    self._submit_policy(s, s - step - 1)
        gens = parallel.broadcast_object(gens)
        batch.add_rollouts(gens)
        lags = [run.weight_version - g.weight_version for g in gens]
        if max(lags) > k:
            raise RuntimeError(_staleness_error(step, max(lags), run.weight_version, k))
        out = {"rollout/staleness_mean": sum(lags) / len(lags), "rollout/staleness_max": max(lags)}
        if self.rank0 and k:
            out["perf/rollout_generation_s"] = seconds  # background time; perf/time_generate is the wait
        return out

    def drain(self) -> None:
        """The sync policy: in-flight generations finish on the weights they started with (rank 0 waits)."""
        for fut in self.policy.values():
            fut.result()

    # ------------------------------------------------------------------ teacher rollouts
    def _submit_teacher(self, step: int, batch) -> None:
        run = self.run
        params = run.rollout_sampling(step, "teacher")
        self.teacher[step] = self._teacher_pool.submit(
            self._timed, run.teacher_engine, run.teacher_prompt_ids(batch), params
        )

    def teacher_rollouts(self, batch) -> list[Generation] | None:
        """With --teacher-prefetch, this step's teacher generations (rank 0): started one step earlier, or now,
        before this step's EMA update either way. None otherwise (the loop generates after the update)."""
        if not self.teacher_prefetch or not self.rank0 or self.run.teacher_engine is None:
            return None
        fut = self.teacher.pop(batch.step, None)
        if fut is None:  # first step or resume: same seed, same (pre-update) teacher as the uninterrupted run
            self._submit_teacher(batch.step, batch)
            fut = self.teacher.pop(batch.step)
        return fut.result()[0]

    def after_teacher(self, batch, ema_updated: bool) -> dict:
        """Start the next step's teacher generation on the teacher just synced; log how old this step's labels are."""
        if not self.teacher_prefetch:
            return {}
        run, nxt = self.run, batch.step + 1
        if self.rank0 and run.teacher_engine is not None and nxt < run.train_iters:
            self._submit_teacher(nxt, run.new_batch(nxt, indices=run.sampler.peek(0)))
        return {"rollout/teacher_label_staleness": int(ema_updated)}  # EMA steps behind the synchronous loop

    def drain_teacher(self) -> None:
        """Before the teacher's weights change: its in-flight generation finishes on the old ones."""
        for fut in self.teacher.values():
            fut.result()

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """The finished, untrained policy rollouts (rank 0); teacher rollouts are regenerated on resume."""
        if not self.rank0:
            return {}
        self.drain()
        return {"policy": {s: [dataclasses.asdict(g) for g in f.result()[0]] for s, f in sorted(self.policy.items())}}

    def load_state_dict(self, state: dict | None, start_step: int) -> None:
        if not self.rank0 or not state:
            return
        saved = {int(s): [Generation(**g) for g in gens] for s, gens in state.get("policy", {}).items()}
        trainer = self.run.weight_version  # at start_step; step s trains with version trainer + (s - start_step)
        keep = {
            s: gens
            for s, gens in saved.items()
            if s >= start_step and all(trainer + s - start_step - g.weight_version <= self.max_staleness for g in gens)
        }
        if len(keep) != len(saved):  # e.g. resumed with a smaller --max-staleness: regenerated from these weights
            print(f"rollout pipeline: {len(saved) - len(keep)} saved rollout batch(es) not reused", flush=True)
        for s, gens in keep.items():
            fut: Future = Future()
            fut.set_result((gens, 0.0))
            self.policy[s] = fut

    def close(self) -> None:
        for pool in (self._policy_pool, self._teacher_pool):
            if pool is not None:
                pool.shutdown(wait=True)
