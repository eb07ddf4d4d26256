"""Fully asynchronous rollouts (--async-mode fully-async, rollout/streaming.py, docs/ASYNC.md).

Default tier: the group stream on the real embedded engine (tiny model): whole groups only, each taken once, a
Co-rewarding-I pair never trained with one view, stale groups dropped or regenerated with counts that add up, a
teacher label never without its teacher version, and a checkpoint of in-flight requests resumed. e2e tier:
--max-staleness 0 equals the default synchronous run bitwise (warm model, real gradients); a
--max-staleness 1 run whose dumped token ages stay within the bound, saved, and resumed with bound 0 (the saved
groups are regenerated, counted)."""

import json
import os
from types import SimpleNamespace

import pytest
from helpers import assert_real_signal, read_metrics, run_train

from megatron_corew.records import Prompt, StepBatch
from megatron_corew.rollout.base import Generation, Request, SamplingParams
from megatron_corew.rollout.streaming import GroupStream, label_versions

G = 3


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    from megatron_corew.rollout.embedded import EmbeddedEngine

    return EmbeddedEngine(tiny_bundle["model"], [2])


def _params(n=24, seed=11):
    return SamplingParams(temperature=1.0, max_new_tokens=n, seed=seed)


def _prompts(units: int, views: int = 1):
    """Rows group by group; with two views the pair ids repeat (view 0's groups, then view 1's)."""
    ids, unit_of_row = [], []
    for view in range(views):
        for u in range(units):
            ids += [[5 + u, 7, 9 + view]] * G
            unit_of_row += [u] * G
    return ids, unit_of_row


def _push(engine, version, scale=None):
    """The engine's own weights (optionally perturbed) as ``version``, while nothing decodes (the decoding thread
    may still be leaving its last batch after the final collect: a sync always interrupts first)."""
    assert engine.interrupt() == []
    state = engine.model.state_dict()
    named = [(k, v * scale if scale and v.dtype.is_floating_point else v.clone()) for k, v in state.items()]
    engine.update_weights(named, version)


def test_stream_takes_whole_groups_once_across_interrupted_syncs(engine):
    """Two steps in flight, interrupted and resumed on new weights twice: each step gets every row of every group,
    finished, with versions that only grow along a response; a step is taken once; nothing of it is left over."""
    _push(engine, 0)
    stream = GroupStream(engine)
    ids0, units0 = _prompts(3)
    ids1, units1 = _prompts(2)
    stream.submit_step(0, ids0, units0, _params())
    stream.submit_step(1, ids1, units1, _params(seed=12))
    for version in (1, 2):
        stopped = stream.interrupt()
        unfinished = {r.rid for r in stopped}
        for key, unit in stream.units.items():  # a group with an interrupted request is not complete
            if unfinished & set(unit.rids):
                assert not stream.complete(key)
        _push(engine, version, scale=1.0 + 1e-3 * version)
        stream.resume(stopped)
    out0, stats0 = stream.take(0, trainer_version=2, max_staleness=2, stale="drop")
    assert sorted(out0) == list(range(len(ids0)))
    assert all(g.finish_reason in ("stop", "length") and g.prompt_ids == ids0[row] for row, g in out0.items())
    assert all(g.token_versions == sorted(g.token_versions) for g in out0.values())
    assert stats0.trained == 3 and stats0.stale_dropped == stats0.stale_regenerated == 0
    with pytest.raises(RuntimeError, match="no groups in the stream"):
        stream.take(0, 2, 2, "drop")  # trained twice
    out1, _ = stream.take(1, trainer_version=2, max_staleness=2, stale="drop")
    assert sorted(out1) == list(range(len(ids1)))
    assert not stream.units and not stream.requests and stream.taken == {(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)}
    with pytest.raises(RuntimeError, match="already submitted"):
        stream.submit_step(1, ids1, units1, _params())


def _finished(rid, prompt, versions, reason="stop"):
    r = Request(rid, list(prompt), _params(n=8), seed=100 + rid)
    for v in versions:
        r.keep([11], [-0.5], v)
    r.finish_reason = reason
    return r


def _state(requests, unit_of_row, step=0):
    """A checkpoint of one step's stream: request ``rid`` is row ``rid``."""
    units = {}
    for r, u in zip(requests, unit_of_row):
        units.setdefault(u, {"rows": [], "rids": []})
        units[u]["rows"].append(r.rid)
        units[u]["rids"].append(r.rid)
    import dataclasses

    return {
        "next_rid": len(requests),
        "units": [[step, u, unit] for u, unit in sorted(units.items())],
        "requests": [dataclasses.asdict(r) for r in requests],
    }


@pytest.mark.parametrize("stale", ["drop", "regenerate"])
def test_a_pair_is_dropped_or_regenerated_whole_and_the_counts_add_up(engine, stale):
    """Co-rewarding-I: pair 0's view-1 group is too old (version 0, trainer 3, bound 1) while its view-0 group and
    pair 1 are fresh: both views of pair 0 leave the step (drop) or are generated again (regenerate); pair 1's
    unfinished view-1 group is decoded to the end before the step takes it."""
    _push(engine, 3)
    ids, units = _prompts(2, views=2)  # rows: view 0 pair 0, view 0 pair 1, view 1 pair 0, view 1 pair 1
    versions = {0: [3, 3], 1: [3], 2: [0, 0], 3: [2]}  # per group of G rows
    reqs = []
    for row, p in enumerate(ids):
        group = row // G
        r = _finished(row, p, versions[group])
        if group == 3:
            r.finish_reason = None  # interrupted at the checkpoint: resumed by load_state_dict
        reqs.append(r)
    stream = GroupStream(engine)
    stream.load_state_dict(_state(reqs, units))
    out, stats = stream.take(0, trainer_version=3, max_staleness=1, stale=stale)
    pair1 = [row for row, u in enumerate(units) if u == 1]
    pair0 = [row for row, u in enumerate(units) if u == 0]
    assert all(out[row].finish_reason is not None for row in pair1)
    assert out[pair1[-1]].token_versions[0] == 2 and out[pair1[-1]].token_versions[-1] in (2, 3)
    if stale == "drop":
        assert sorted(out) == pair1  # both views of pair 0 left out together
        assert (stats.trained, stats.stale_dropped, stats.stale_regenerated) == (1, 1, 0)
    else:
        assert sorted(out) == sorted(pair0 + pair1)
        assert all(set(out[row].token_versions) == {3} for row in pair0)  # both views made again, now
        assert (stats.trained, stats.stale_dropped, stats.stale_regenerated) == (2, 0, 1)
    assert stats.trained + stats.stale_dropped == 2  # every pair of the step: trained or dropped
    assert stats.token_age_max <= 1


def test_drop_never_empties_a_step(engine):
    """Every group too old: dropping would leave nothing to train, so they are regenerated (counted as such)."""
    _push(engine, 5)
    ids, units = _prompts(2)
    reqs = [_finished(row, p, [1]) for row, p in enumerate(ids)]
    stream = GroupStream(engine)
    stream.load_state_dict(_state(reqs, units))
    out, stats = stream.take(0, trainer_version=5, max_staleness=2, stale="drop")
    assert sorted(out) == list(range(len(ids))) and (stats.stale_dropped, stats.stale_regenerated) == (0, 2)
    assert all(set(g.token_versions) == {5} for g in out.values())


def test_checkpoint_keeps_in_flight_requests_with_their_versions(engine):
    """state_dict interrupts, copies every request as it stands and resumes; a new stream from that copy continues
    each request from its kept prefix (tokens and per-token versions unchanged) and finishes it."""
    _push(engine, 0)
    stream = GroupStream(engine)
    ids, units = _prompts(2)
    stream.submit_step(0, ids, units, _params(n=20))
    state = json.loads(json.dumps(stream.state_dict()))  # as it would go through torch.save and back
    out, _ = stream.take(0, 0, 0, "drop")  # the original stream goes on
    kept = {d["rid"]: d for d in state["requests"]}
    _push(engine, 1)
    again = GroupStream(engine)
    again.load_state_dict(state)
    resumed, _ = again.take(0, 1, 1, "drop")
    for row, g in resumed.items():
        d = kept[row]
        assert g.response_ids[: len(d["response_ids"])] == d["response_ids"]
        assert g.token_versions[: len(d["token_versions"])] == d["token_versions"]
        if d["finish_reason"] is None:
            assert set(g.token_versions[len(d["token_versions"]) :]) <= {1}
        else:
            assert g.response_ids == out[row].response_ids


def test_a_label_needs_its_teacher_version():
    ex = SimpleNamespace(prompt_ids=[1], index=0, ground_truth="1")
    batch = StepBatch(0, [Prompt(ex, 0, 0), Prompt(ex, 0, 1)], 2)
    gen = lambda v: Generation([1], [3], [-0.1], "stop", weight_version=v)  # noqa: E731
    batch.add_teacher_rollouts([gen(4), gen(4), gen(3), gen(3)])
    assert label_versions(batch) == [4, 3]
    batch.add_teacher_rollouts([gen(4), gen(4), gen(3)])
    with pytest.raises(RuntimeError, match="without its teacher"):
        label_versions(batch)
    batch.add_teacher_rollouts([gen(4), gen(4), gen(3), gen(2)])
    with pytest.raises(RuntimeError, match="group 1's teacher answers carry versions"):
        label_versions(batch)


# ============================================================================ end to end
def _args(bundle, out, steps=3, extra=()):
    return ["--hf-checkpoint", bundle["model"], "--train-data", bundle["train"], "--reward-method", "corewarding_2",
            "--global-batch-size", "4", "--n-samples-per-prompt", "4", "--max-response-length", "12",
            "--max-prompt-length", "128", "--micro-batch-size", "8", "--lr", "1e-3", "--train-iters", str(steps),
            "--eval-interval", "0", "--output-dir", out, "--no-progress-bar", "--rollout-dump", *extra]  # fmt: skip


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _dump(out, step):
    with open(os.path.join(out, "rollouts", f"step_{step:06d}.jsonl")) as f:
        return [json.loads(line) for line in f]


def _dump_rewards(out, step):
    return [r["reward"] for r in _dump(out, step)]


FULLY = ["--async-rollout", "--async-mode", "fully-async"]


@pytest.mark.e2e
def test_bound_zero_is_the_default_synchronous_run_bitwise(warm_bundle, tmp_path):
    """--max-staleness 0 through submit / collect / interrupt equals the default synchronous run (``generate``,
    no async flag): metrics, every dumped rollout (teacher versions aside), weights. Row i of a step samples from
    request_seed(step seed, i) on both paths, decoded by the engine's one loop."""
    sync, k0 = str(tmp_path / "sync"), str(tmp_path / "k0")
    _ok(run_train(_args(warm_bundle, sync, steps=2)))
    _ok(run_train(_args(warm_bundle, k0, steps=2, extra=FULLY + ["--max-staleness", "0"])))
    ra, rb = read_metrics(sync), read_metrics(k0)
    assert_real_signal(ra, range(1, 3))
    assert all(len({round(x, 6) for x in _dump_rewards(sync, s)}) > 1 for s in range(1, 3))  # rewards vary
    for x, y in zip(ra, rb, strict=True):
        for k, v in x.items():
            if not k.startswith("perf/") and k not in ("time", "wall_time", "timestamp"):
                assert y.get(k) == v, (x["step"], k, v, y.get(k))
    for s in range(1, 3):
        rows = _dump(k0, s)
        assert [r.pop("teacher_version") for r in rows] == [s - 1] * 16  # the teacher synced at this step's start
        assert rows == _dump(sync, s)
    da, db = (json.load(open(os.path.join(d, "result.json"))) for d in (sync, k0))
    assert (da["policy_sha256"], da["anchor_sha256"]) == (db["policy_sha256"], db["anchor_sha256"])
    assert all(r["rollout/stale_dropped"] == r["rollout/stale_regenerated"] == 0 for r in rb if "train/loss" in r)


@pytest.mark.e2e
def test_token_ages_stay_within_the_bound_and_a_smaller_bound_on_resume_regenerates(warm_bundle, tmp_path):
    """--max-staleness 1: every dumped token is at most one version older than the trainer, versions only grow
    along a response and never exceed the pushed ones; the checkpoint after step 2 (the run killed there) holds
    step 3's groups (started at version 1), so a resume with bound 0 regenerates all four, and the counts add
    up."""
    out = str(tmp_path / "k1")
    save = ["--save", os.path.join(out, "ckpt"), "--save-interval", "2"]
    proc = run_train(
        _args(warm_bundle, out, extra=FULLY + ["--max-staleness", "1"] + save), {"COREW_FAULT": "after_step:2"}
    )
    assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL after the checkpoint of step 2
    rows = {r["step"]: r for r in read_metrics(out) if "train/loss" in r}
    assert_real_signal(list(rows.values()), range(1, 3))
    for s in range(1, 3):
        trainer = s - 1  # updates before step s
        for r in _dump(out, s):
            v = r["token_versions"]
            assert v == sorted(v) and all(0 <= trainer - x <= 1 for x in v), (s, v)
            assert r["weight_version"] == min(v)
        m = rows[s]
        assert m["rollout/token_age_max"] <= 1 and m["rollout/stream_units_trained"] + m["rollout/stale_dropped"] == 4
    assert rows[2]["rollout/token_age_max"] == 1  # step 2 was started before step 1's update
    resumed = str(tmp_path / "resumed")
    _ok(
        run_train(
            _args(warm_bundle, resumed, extra=FULLY + ["--max-staleness", "0", "--load", os.path.join(out, "ckpt")])
        )
    )
    last = [r for r in read_metrics(resumed) if "train/loss" in r]
    assert [r["step"] for r in last] == [3]
    assert last[0]["rollout/stale_regenerated"] == 4 and last[0]["rollout/stream_units_trained"] == 4
    assert last[0]["rollout/token_age_max"] == 0
    assert all(set(r["token_versions"]) == {2} for r in _dump(resumed, 3))


def test_flags_refused_where_they_do_not_apply(tiny_bundle, tmp_path):
    from megatron_corew.arguments import _defaults, build_parser
    from megatron_corew.validation import FlagError, check_applicable

    base = ["--hf-checkpoint", tiny_bundle["model"], "--train-data", tiny_bundle["train"]]
    for extra, msg in (
        (["--async-mode", "fully-async"], "--async-mode does not apply without --async-rollout"),
        (
            ["--async-rollout", "--stale-samples", "drop"],
            "--stale-samples does not apply without --async-mode fully-async",
        ),
        (FULLY + ["--colocate"], "--async-rollout and --colocate do not combine"),
    ):
        with pytest.raises(FlagError, match=msg):
            check_applicable(build_parser().parse_args(base + extra), _defaults())
