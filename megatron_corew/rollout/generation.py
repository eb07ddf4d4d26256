"""The one owner of generation: engines, sampling seeds, weight versions and every way a round's rollouts are made.

``RolloutGenerator`` serves the synchronous loop, ``--async-rollout`` (policy rollouts of steps k+1..k+K made by a
background thread on rank 0 while step k trains), ``--teacher-prefetch`` (the Co-rewarding-II teacher answers
step k+1's questions while step k trains) and ``--dynamic-sampling`` refill rounds through the same path: each
role is a ``_Lane`` (one engine, generations started ahead of their step), and ``_collect`` hands a step its
generations, started ahead or made now. The trainer's weights reach the engines through ``push_policy`` /
``push_teacher`` (in-flight generations finish on the old weights first: the *wait* sync policy), and an engine
that came back from a restart without its weights (``RefillNeeded``) is refilled by every rank, then asked again.

Every sample carries the weight version of the engine that made it; the trainer's version is counted here
(``advance``), a batch lagging it by more than ``--max-staleness`` stops the run, and a checkpoint keeps the
finished, untrained rollouts (made from weights it does not hold) so that a resumed run samples what the
uninterrupted one does. With ``--async-mode fully-async`` the policy lane is a ``GroupStream``
(rollout/streaming.py): the engine decodes continuously, a weight sync interrupts, pushes and resumes, and each
step takes its whole groups. See docs/ASYNC.md.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from megatron_corew.algo import dynamic_sampling
from megatron_corew.policy import parallel
from megatron_corew.records import StepBatch
from megatron_corew.rollout import streaming
from megatron_corew.rollout.base import Generation, SamplingParams
from megatron_corew.rollout.sampler import seed_hash

__all__ = ["PromptSource", "RolloutGenerator", "sampling_seed"]


@dataclasses.dataclass
class PromptSource:
    """Where a round's prompts come from (the run's sampler and data), as the generator sees them."""

    next_batch: Callable[..., StepBatch]  # (step, round=0) -> the sampler's next batch (its cursor moves)
    peek_batch: Callable[[int, int], StepBatch]  # step, ahead -> a later batch, the cursor unmoved
    teacher_prompt_ids: Callable[[StepBatch], list[list[int]]]  # what the teacher answers for a batch


def sampling_seed(seed: int, role: str, step: int = 0, round: int = 0) -> int:
    """The sampling seed of one generation call: a 63-bit hash of (run seed, role, step, dynamic-sampling round),
    so that no two roles (policy, teacher, validation, any other), steps or rounds draw the same samples, for
    every run seed."""
    return seed_hash(seed, role, step, round)


def _timed(engine, prompts, params):
    t0 = time.perf_counter()
    gens = engine.generate(prompts, params)
    return gens, time.perf_counter() - t0


class _Lane:
    """One role's engine (rank 0; None elsewhere) and its generations started ahead of their step, by a thread of
    its own so that each engine generates its batches in step order."""

    def __init__(self, role: str, which: str, engine, threaded: bool):
        self.role, self.which, self.engine = role, which, engine  # which: the trainer's name of the weights
        self.ahead: dict[int, tuple[Future, list[list[int]], SamplingParams]] = {}
        self.pool = None
        if threaded and engine is not None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix=f"corew-{role}")

    def start(self, step: int, prompts: list[list[int]], params: SamplingParams) -> None:
        self.ahead[step] = (self.pool.submit(_timed, self.engine, prompts, params), prompts, params)

    def started(self, step: int, gens: list[Generation]) -> None:
        """Generations made before this process (a checkpoint's) stand in for a started request."""
        fut: Future = Future()
        fut.set_result((gens, 0.0))
        self.ahead[step] = (fut, [g.prompt_ids for g in gens], None)

    def drain(self) -> None:
        """Before this engine's weights change: its in-flight generations finish on the old ones (a failed one
        raises when its step collects it, where every rank can take part in a refill)."""
        wait([fut for fut, _, _ in self.ahead.values()])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _staleness_error(step: int, lag: int, trainer: int, k: int) -> str:
    return (
        f"step {step + 1}: rollouts made from weight version {trainer - lag} lag the trainer (version {trainer}) "
        f"by {lag} > --max-staleness {k}; refusing to train on them"
    )


class RolloutGenerator:
    """Every rank calls every method in step order; engines, threads and futures exist on rank 0 only."""

    def __init__(
        self, args, trainer, prompts: PromptSource, train_iters: int, teacher: bool, engine=None, teacher_engine=None
    ):
        self.args, self.trainer, self.prompts, self.train_iters = args, trainer, prompts, train_iters
        self.rank0 = parallel.is_rank0()
        self.async_rollout = bool(getattr(args, "async_rollout", False))
        self.max_staleness = args.max_staleness if self.async_rollout else 0
        self.teacher_prefetch = bool(getattr(args, "teacher_prefetch", False) and teacher)
        self.fully_async = self.async_rollout and getattr(args, "async_mode", "pipeline") == "fully-async"
        self.pipelined = self.async_rollout or self.teacher_prefetch
        self.threaded = self.pipelined and not self.fully_async  # the policy's requests run in its thread
        self.policy = _Lane("policy", "policy", engine, self.threaded)
        self.stream = streaming.GroupStream(engine) if self.fully_async and engine is not None else None
        self.teacher = _Lane("teacher", "anchor", teacher_engine, self.teacher_prefetch)
        self.weight_version = 0  # the trainer's: pushed with its weights, compared with every sample's

    @property
    def engine(self):
        return self.policy.engine

    @property
    def teacher_engine(self):
        return self.teacher.engine

    # ------------------------------------------------------------------ seeds
    def sampling(self, step: int, role: str = "policy", round: int = 0) -> SamplingParams:
        """Seeds per step, role and dynamic-sampling round (``sampling_seed``): a resumed or pipelined run samples
        what the synchronous one does."""
        a = self.args
        return SamplingParams(
            temperature=a.rollout_temperature,
            top_p=a.rollout_top_p,
            max_new_tokens=a.max_response_length,
            seed=sampling_seed(a.seed, role, step, round),
        )

    # ------------------------------------------------------------------ the one path
    def _collect(self, lane: _Lane, step: int, prompts: list[list[int]], params: SamplingParams, ahead: bool = True):
        """Rank 0: ``lane``'s generations for ``step`` and their seconds, started ahead (``ahead``) or made now; None
        elsewhere. Collective: when the engine came back from a restart without its weights and no host copy was
        kept (``RefillNeeded``), every rank re-pushes the trainer's weights and rank 0 asks again."""
        from megatron_corew.rollout.sglang.weight_sync import RefillNeeded

        started = lane.ahead.pop(step, None) if ahead else None  # rank 0 only: the other ranks start nothing
        for _ in range(3):
            result, refill = None, None
            if lane.engine is not None:
                try:  # a request started ahead raised in its thread: the refill is done here, by every rank
                    result = started[0].result() if started is not None else _timed(lane.engine, prompts, params)
                except RefillNeeded as e:
                    refill = str(e)
                started = None  # asked again now, on the weights just pushed
            refill = parallel.broadcast_object(refill)
            if refill is None:
                return result
            version = self.weight_version  # the trainer's weights, whatever the engine held before
            self.trainer.push_weights(lane.engine, version, which=lane.which)
            if lane.engine is not None:
                note = f"{lane.role} weights {version} re-pushed by the trainer ({refill})"
                print(f"{lane.role} engine: {note}", flush=True)
                if hasattr(lane.engine, "state"):
                    lane.engine.state.event(note)
        raise RuntimeError(f"{lane.which} engine still lacks its weights after 3 re-pushes: {refill}")

    def rollouts(self, batch: StepBatch) -> dict:
        """This round's policy rollouts into ``batch`` (every rank); with --async-rollout also start the next steps'
        and check how far the samples lag the trainer."""
        if self.fully_async:
            return self._stream_rollouts(batch)
        step, k = batch.step, self.max_staleness
        params = self.sampling(step, "policy", batch.round)
        if self.pipelined and self.rank0 and step not in self.policy.ahead:  # first step, K=0, or a resume
            self.policy.start(step, batch.prompt_ids(), params)  # without saved rollouts: generate now
        got = self._collect(self.policy, step, batch.prompt_ids(), params)
        gens, seconds = got if got is not None else (None, None)
        if self.rank0 and self.pipelined:
            if [g.prompt_ids for g in gens] != batch.prompt_ids():
                raise RuntimeError(f"step {step + 1}: prefetched rollouts answer other prompts than the sampler's")
            for s in range(step + 1, min(step + k, self.train_iters - 1) + 1):
                if s not in self.policy.ahead:
                    ahead = self.prompts.peek_batch(s, s - step - 1)
                    self.policy.start(s, ahead.prompt_ids(), self.sampling(s, "policy"))
        gens = parallel.broadcast_object(gens)
        batch.add_rollouts(gens)
        if not self.pipelined:
            return {}
        lags = [self.weight_version - g.weight_version for g in gens]
        if max(lags) > k:
            raise RuntimeError(_staleness_error(step, max(lags), self.weight_version, k))
        out = {"rollout/staleness_mean": sum(lags) / len(lags), "rollout/staleness_max": max(lags)}
        if self.rank0 and k:
            out["perf/rollout_generation_s"] = seconds  # background time; perf/time_generate is the wait
        return out

    def _submit(self, batch: StepBatch) -> None:
        G = batch.samples_per_prompt
        units = [p.pair_id for p in batch.prompts for _ in range(G)]  # a group, or both views of a pair
        self.stream.submit_step(batch.step, batch.prompt_ids(), units, self.sampling(batch.step, "policy"))

    def _stream_rollouts(self, batch: StepBatch) -> dict:
        """--async-mode fully-async: submit the groups of the steps up to --max-staleness ahead (this step's too
        when nothing started them), then take this step's whole groups from the stream (every rank)."""
        step, k, got = batch.step, self.max_staleness, None
        if self.rank0:
            if not self.stream.has_step(step):
                self._submit(batch)
            for s in range(step + 1, min(step + k, self.train_iters - 1) + 1):
                if not self.stream.has_step(s):
                    self._submit(self.prompts.peek_batch(s, s - step - 1))
            by_row, stats = self.stream.take(step, self.weight_version, k, self.args.stale_samples)
            asked = batch.prompt_ids()
            if any(g.prompt_ids != asked[row] for row, g in by_row.items()):
                raise RuntimeError(f"step {step + 1}: streamed rollouts answer other prompts than the sampler's")
            got = ([by_row[row] for row in sorted(by_row)], sorted(by_row), stats)
        gens, rows, stats = parallel.broadcast_object(got)
        G = batch.samples_per_prompt
        if len(rows) < len(batch.prompts) * G:  # stale groups dropped: the step trains the others
            kept = sorted({batch.prompts[row // G].pair_id for row in rows})
            streaming.keep_units(batch, kept)
        batch.add_rollouts(gens)
        lags = [self.weight_version - g.weight_version for g in gens]
        if max(lags) > k:  # the stream's own rule; kept here as the last word before training
            raise RuntimeError(_staleness_error(step, max(lags), self.weight_version, k))
        out = {"rollout/staleness_mean": sum(lags) / len(lags), "rollout/staleness_max": max(lags)}
        return {**out, **stats.metrics()}

    def generate_now(self, role: str, step: int, round: int, prompts: list[list[int]], max_new_tokens: int):
        """A synchronous request to the policy engine outside the rollouts (Self-Harmony's online rewrites), seeded
        by its own ``role``; collective (re-push after a restart). Rank 0 gets the generations, the others None."""
        params = dataclasses.replace(self.sampling(step, role, round), max_new_tokens=max_new_tokens)
        got = self._collect(self.policy, step, prompts, params, ahead=False)
        return got[0] if got is not None else None

    def start_teacher(self, batch: StepBatch) -> None:
        """With --teacher-prefetch: make sure this step's teacher answers were started before its EMA update (they
        were one step earlier; on the first step or a resume, now, with the same seed and teacher)."""
        if self.teacher_prefetch and self.teacher.engine is not None and batch.step not in self.teacher.ahead:
            params = self.sampling(batch.step, "teacher")
            self.teacher.start(batch.step, self.prompts.teacher_prompt_ids(batch), params)

    def teacher_rollouts(self, batch: StepBatch, ema_updated: bool) -> dict:
        """This round's teacher rollouts into ``batch`` (rank 0 keeps them; labels only), then start the next
        step's on the teacher just synced (--teacher-prefetch)."""
        prompts = self.prompts.teacher_prompt_ids(batch)
        got = self._collect(self.teacher, batch.step, prompts, self.sampling(batch.step, "teacher", batch.round))
        out = {}
        if self.teacher.engine is not None:
            batch.add_teacher_rollouts(got[0])
            if self.fully_async:  # each group's label is recorded with the teacher version that voted it
                batch.teacher_versions = streaming.label_versions(batch)
                out["rollout/teacher_version_lag"] = self.weight_version - min(batch.teacher_versions)
        if not self.teacher_prefetch:
            return out
        nxt = batch.step + 1
        if self.teacher.engine is not None and nxt < self.train_iters:
            ahead = self.prompts.peek_batch(nxt, 0)
            self.teacher.start(nxt, self.prompts.teacher_prompt_ids(ahead), self.sampling(nxt, "teacher"))
        return {**out, "rollout/teacher_label_staleness": int(ema_updated)}  # EMA steps behind the synchronous loop

    def dynamic_rounds(self, first: StepBatch, play_round: Callable[[StepBatch], object], metrics: dict) -> StepBatch:
        """``--dynamic-sampling``: refill ``first`` (generated and scored) up to its group count with rounds of
        the sampler's next prompts (``play_round``: generate, teacher, statistics, score); groups without reward
        variance are dropped (``algo/dynamic_sampling.py``). Adds the round counts to ``metrics``."""
        target, rounds, dropped = len(first.prompts), [], 0
        batch = first
        for rnd in range(self.args.dynamic_sampling_max_rounds + 1):
            if rnd:
                batch = self.prompts.next_batch(first.step, round=rnd)
                play_round(batch)  # its reward metrics are not logged: the step's are the first round's
            keep = None
            if self.rank0:  # rewards live on rank 0; every rank keeps the same groups
                keep = dynamic_sampling.signal_groups([[r.reward for r in g] for g in batch.groups()])
            keep = parallel.broadcast_object(keep)
            dropped += keep.count(False)
            rounds.append((batch, keep))
            if sum(sum(k) for _, k in rounds) >= target:
                break
        kept = sum(sum(k) for _, k in rounds)
        metrics.update(
            {
                "rollout/dynamic_generation_rounds": len(rounds),
                "rollout/dynamic_dropped_groups": dropped,
                "rollout/dynamic_kept_groups": min(kept, target),
                "rollout/dynamic_cap_hit": float(kept < target),
            }
        )
        return dynamic_sampling.merge(rounds, target) if kept else first

    # ------------------------------------------------------------------ weights
    def advance(self) -> None:
        """The trainer made a new version of the policy (one optimizer pass over a batch)."""
        self.weight_version += 1

    def push_policy(self) -> dict:
        """The trainer's policy into the policy engine (collective); in-flight generations finish first, or with
        --async-mode fully-async are interrupted and resumed on the new weights. Returns the push's seconds and
        bytes."""
        self.policy.drain()
        stopped = self.stream.interrupt() if self.stream is not None else []
        out = self.trainer.push_weights(self.policy.engine, self.weight_version)
        if self.stream is not None:
            self.stream.resume(stopped)  # their kept prefix continues on the new weights
        return out

    def push_teacher(self) -> dict:
        """The trainer's EMA teacher into the teacher engine (collective); in-flight generations finish first."""
        self.teacher.drain()
        return self.trainer.push_weights(self.teacher.engine, self.weight_version, which="anchor")

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """The trainer's weight version and, pipelined, the finished untrained policy rollouts (rank 0); teacher
        rollouts are regenerated on resume from the checkpoint's teacher, which made them."""
        out = {"weight_version": self.weight_version}
        if self.fully_async:
            return {**out, "rollout_stream": self.stream.state_dict() if self.stream is not None else {}}
        if not self.pipelined:
            return out
        if not self.rank0:
            return {**out, "rollout_pipeline": {}}
        self.policy.drain()
        done = sorted((s, f) for s, (f, _, _) in self.policy.ahead.items() if f.exception() is None)
        saved = {s: [dataclasses.asdict(g) for g in f.result()[0]] for s, f in done}  # a failed one: made again
        return {**out, "rollout_pipeline": {"policy": saved}}

    def load_state_dict(self, state: dict, start_step: int) -> None:
        self.weight_version = state.get("weight_version", start_step)
        stream = state.get("rollout_stream")
        if self.stream is not None and stream:  # stale groups meet --stale-samples when their step takes them
            self.stream.load_state_dict(stream)
        elif self.rank0 and stream:
            print("rollout stream: the checkpoint's in-flight groups are not reused (not fully-async)", flush=True)
        saved = state.get("rollout_pipeline")
        if not self.rank0 or not saved or not self.threaded:
            return
        saved = {int(s): [Generation(**g) for g in gens] for s, gens in saved.get("policy", {}).items()}
        trainer = self.weight_version  # at start_step; step s trains with version trainer + (s - start_step)
        keep = {
            s: gens
            for s, gens in saved.items()
            if s >= start_step and all(trainer + s - start_step - g.weight_version <= self.max_staleness for g in gens)
        }
        if len(keep) != len(saved):  # e.g. resumed with a smaller --max-staleness: regenerated from these weights
            print(f"rollout pipeline: {len(saved) - len(keep)} saved rollout batch(es) not reused", flush=True)
        for s, gens in keep.items():
            self.policy.started(s, gens)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.interrupt()  # nothing is left to train on: stop the decoding thread
        self.policy.close()
        self.teacher.close()
