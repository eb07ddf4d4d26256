"""Fully asynchronous rollouts (``--async-mode fully-async``): the policy engine decodes continuously through the
partial-rollout contract (``submit`` / ``collect`` / ``interrupt``, rollout/base.py) and the trainer takes whole
groups from the stream.

A *unit* is what is never split: the G samples of one prompt (a GRPO group), or for Co-rewarding-I the two views'
groups of one question (a pair). Every unit of a step is submitted together, up to ``--max-staleness`` steps ahead
of the step that trains it; at a weight sync the requests in flight are interrupted, the weights pushed and the
requests resubmitted, their kept prefix resuming on the new weights. A step takes its own units, whole, in sampler
order (not completion order: completion order favours short responses, a length bias, and makes a run depend on
timing), each exactly once. A unit whose oldest token lags the trainer by more than the bound is dropped or
regenerated (``--stale-samples``). See docs/ASYNC.md.
"""

from __future__ import annotations

import dataclasses

from megatron_corew.rollout.base import Request, SamplingParams
from megatron_corew.rollout.sampler import request_seed

__all__ = ["GroupStream", "StreamStats", "keep_units", "label_versions", "request_seed"]


@dataclasses.dataclass
class StreamStats:
    """One step's count of units (groups, or pairs) and the age of its trained tokens."""

    trained: int = 0
    stale_dropped: int = 0
    stale_regenerated: int = 0
    token_age_sum: int = 0
    token_count: int = 0
    token_age_max: int = 0
    interrupted: int = 0  # trained samples that a weight sync interrupted at least once

    def metrics(self) -> dict:
        return {
            "rollout/stream_units_trained": self.trained,
            "rollout/stale_dropped": self.stale_dropped,
            "rollout/stale_regenerated": self.stale_regenerated,
            "rollout/token_age_mean": self.token_age_sum / max(self.token_count, 1),
            "rollout/token_age_max": self.token_age_max,
            "rollout/interrupted_samples": self.interrupted,
        }


@dataclasses.dataclass
class _Unit:
    rows: list[int]  # rows of the step's batch (group by group) whose samples make this unit
    rids: list[int]


class GroupStream:
    """Rank 0's stream of units on one engine with the partial-rollout contract. Keys are (step, unit id)."""

    def __init__(self, engine):
        self.engine = engine
        self.units: dict[tuple[int, int], _Unit] = {}
        self.requests: dict[int, Request] = {}  # every request of a unit not yet taken
        self.collected: set[int] = set()  # handed back finished by the engine's collect
        self.taken: set[tuple[int, int]] = set()
        self.next_rid = 0

    def has_step(self, step: int) -> bool:
        return any(s == step for s, _ in self.units) or any(s == step for s, _ in self.taken)

    def submit_step(
        self, step: int, prompt_ids: list[list[int]], unit_of_row: list[int], params: SamplingParams
    ) -> None:
        """Submit every sample of ``step`` in one call (the engine batches them), tracked per unit:
        ``unit_of_row[i]`` names the unit of row ``i`` (its prompt's pair id). Row ``i`` samples with
        ``request_seed(params.seed, i)``, as row ``i`` of a synchronous ``generate`` of the step does."""
        if self.has_step(step):
            raise RuntimeError(f"step {step + 1}: its groups were already submitted")
        new = []
        for row, (ids, unit) in enumerate(zip(prompt_ids, unit_of_row)):
            r = Request(self.next_rid, list(ids), params, seed=request_seed(params.seed, row))
            self.next_rid += 1
            self.requests[r.rid] = r
            u = self.units.setdefault((step, unit), _Unit([], []))
            u.rows.append(row)
            u.rids.append(r.rid)
            new.append(r)
        self.engine.submit(new)

    def add_finished(self, requests: list[Request]) -> None:
        """Requests the engine handed back finished (the engine keeps them as the same objects)."""
        for r in requests:
            if r.rid not in self.requests or r.rid in self.collected:
                raise RuntimeError(f"request {r.rid} finished but belongs to no open group (trained twice?)")
            self.requests[r.rid] = r
            self.collected.add(r.rid)

    def complete(self, key: tuple[int, int]) -> bool:
        """Every request of the unit came back through ``collect`` (the engine sets ``finish_reason`` on its own
        thread before it hands a request back; only ``collect`` says the engine is done with it)."""
        return all(rid in self.collected for rid in self.units[key].rids)

    def take(self, step: int, trainer_version: int, max_staleness: int, stale: str) -> tuple[dict, StreamStats]:
        """Wait until every unit of ``step`` is complete; return {row: Generation} of the units trained (all of
        them unless ``stale`` is "drop") and the step's counts. A taken unit leaves the stream for good."""
        keys = sorted(k for k in self.units if k[0] == step)
        if not keys:
            raise RuntimeError(f"step {step + 1}: no groups in the stream (taken already, or never submitted)")
        stats = StreamStats()
        while True:
            self._wait(keys)
            old = [k for k in keys if trainer_version - self._oldest(k) > max_staleness]
            if not old:
                break
            if stale == "drop" and len(old) < len(keys):
                stats.stale_dropped += len(old)
                for k in old:
                    self._forget(k)
                keys = [k for k in keys if k not in old]
                continue
            stats.stale_regenerated += len(old)  # also when dropping would leave the step nothing to train
            fresh = []
            for k in old:
                for rid in self.units[k].rids:
                    r = self.requests[rid]
                    self.requests[rid] = r = Request(rid, r.prompt_ids, r.params, seed=r.seed)
                    self.collected.discard(rid)
                    fresh.append(r)
            self.engine.submit(fresh)
        out = {}
        for k in keys:
            unit = self.units[k]
            for row, rid in zip(unit.rows, unit.rids):
                r = self.requests[rid]
                out[row] = r.generation()
                ages = [trainer_version - v for v in r.token_versions]
                stats.token_age_sum += sum(ages)
                stats.token_count += len(ages)
                stats.token_age_max = max([stats.token_age_max, *ages])
                stats.interrupted += int(r.interruptions > 0)
            self._forget(k)
            self.taken.add(k)
            stats.trained += 1
        return out, stats

    def _oldest(self, key) -> int:
        versions = [v for rid in self.units[key].rids for v in self.requests[rid].token_versions]
        return min(versions) if versions else 1 << 62

    def _forget(self, key) -> None:
        for rid in self.units.pop(key).rids:
            del self.requests[rid]
            self.collected.discard(rid)

    def _wait(self, keys) -> None:
        while not all(self.complete(k) for k in keys):
            done = self.engine.collect(None)
            if not done:
                missing = [k for k in keys if not self.complete(k)]
                raise RuntimeError(f"step {missing[0][0] + 1}: group {missing[0][1]} unfinished, nothing in flight")
            self.add_finished(done)

    # ------------------------------------------------------------------ weight sync and checkpoint
    def interrupt(self) -> list[Request]:
        """Stop decoding before a weight update; the unfinished requests, to ``resume`` after it."""
        return self.engine.interrupt()

    def resume(self, requests: list[Request]) -> None:
        if requests:
            self.engine.submit(requests)

    def state_dict(self) -> dict:
        """Every untaken unit with its requests as they stand (kept tokens, log-probs, per-token versions, seeds);
        decoding stops for the copy and resumes after it."""
        stopped = self.interrupt()
        self.add_finished(self.engine.collect(0))
        state = {
            "next_rid": self.next_rid,
            "units": [[s, u, dataclasses.asdict(unit)] for (s, u), unit in sorted(self.units.items())],
            "requests": [dataclasses.asdict(r) for _, r in sorted(self.requests.items())],
        }
        self.resume(stopped)
        return state

    def load_state_dict(self, state: dict) -> None:
        """A checkpoint's units: finished requests wait to be taken, the others are submitted again."""
        self.next_rid = int(state["next_rid"])
        self.units = {(int(s), int(u)): _Unit(**unit) for s, u, unit in state["units"]}
        todo = []
        for d in state["requests"]:
            r = Request(**{**d, "params": SamplingParams(**d["params"])})
            self.requests[r.rid] = r
            if r.finish_reason is None:
                todo.append(r)
            else:
                self.collected.add(r.rid)
        self.resume(todo)


def label_versions(batch) -> list[int]:
    """The teacher version that labelled each group of ``batch`` (Co-rewarding-II/III): every group has its G
    teacher answers, all from one teacher version; anything else is refused (a label without its teacher)."""
    G, out = batch.samples_per_prompt, []
    if len(batch.teacher_rollouts) != G * len(batch.prompts):
        raise RuntimeError(
            f"step {batch.step + 1}: {len(batch.teacher_rollouts)} teacher answers for {len(batch.prompts)} groups "
            f"of {G}: a pseudo-label without its teacher"
        )
    for k in range(len(batch.prompts)):
        versions = {t.generation.weight_version for t in batch.teacher_group(k)}
        if len(versions) != 1 or None in versions:
            raise RuntimeError(f"step {batch.step + 1}: group {k}'s teacher answers carry versions {versions}")
        out.append(int(versions.pop()))
    return out


def keep_units(batch, kept: list[int]) -> None:
    """Shrink ``batch`` to the units (pair ids) ``kept``, in their order: prompts renumbered, dataset rows
    (``indices``) kept alongside, so that every per-prompt lookup (teacher prompts, pairs) stays aligned."""
    new_id = {old: new for new, old in enumerate(kept)}
    batch.prompts = [dataclasses.replace(p, pair_id=new_id[p.pair_id]) for p in batch.prompts if p.pair_id in new_id]
    if batch.indices:
        batch.indices = [batch.indices[old] for old in kept]
