"""Rollout pipelining (docs/ASYNC.md): --async-rollout with --max-staleness 0 is the synchronous run
bitwise; with staleness 1 step 1 trains on version-0 rollouts, every dumped sample is within the bound, and a
SIGKILL + resume equals the uninterrupted async run; --teacher-prefetch runs and logs its label staleness (and
changes nothing when the teacher does not move, --no-ema). Embedded engine on CPU (same interface as SGLang); the
runs compared for equality use the warm tiny model, so every compared step trains a non-zero policy gradient."""

import json
import os

import pytest
from helpers import assert_real_signal, read_metrics, run_train

from megatron_corew.data import EpochSampler


def test_sampler_peek_is_what_next_batch_returns_and_does_not_move():
    """Peeked batches across an epoch boundary equal a second sampler's plain next_batch() sequence."""
    ref = EpochSampler(10, 3, seed=5)
    expected = [ref.next_batch() for _ in range(7)]  # 3 batches per epoch: crosses two boundaries
    s = EpochSampler(10, 3, seed=5)
    s.next_batch()
    state = s.state_dict()
    assert [s.peek(i) for i in range(6)] == expected[1:7]
    assert s.state_dict() == state  # the checkpointed cursor counts consumed batches only
    assert [s.next_batch() for _ in range(6)] == expected[1:7]


def _args(bundle, out, method="corewarding_2", steps=4, extra=()):
    return [
        "--hf-checkpoint",
        bundle["model"],
        "--train-data",
        bundle["train"],
        "--reward-method",
        method,
        "--global-batch-size",
        "4",
        "--n-samples-per-prompt",
        "4",
        "--max-response-length",
        "12",
        "--max-prompt-length",
        "128",
        "--micro-batch-size",
        "8",
        "--lr",
        "1e-3",
        "--train-iters",
        str(steps),
        "--eval-interval",
        "0",
        "--output-dir",
        out,
        "--no-progress-bar",
        "--rollout-dump",
        *extra,
    ]


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _dump(out, step):
    with open(os.path.join(out, "rollouts", f"step_{step:06d}.jsonl")) as f:
        return [json.loads(line) for line in f]


def _same_run(a, b, steps):
    """Every metric of run a (perf/* are wall-clock) in run b, dumps byte-equal, final weights equal; every step
    had varying rewards and a non-zero policy gradient."""
    ra, rb = read_metrics(a), read_metrics(b)
    assert_real_signal(ra, range(1, steps + 1))
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        for k, v in x.items():
            if not k.startswith("perf/") and k not in ("time", "wall_time", "timestamp"):
                assert y.get(k) == v, (x["step"], k, v, y.get(k))
    for s in range(1, steps + 1):
        assert open(os.path.join(a, "rollouts", f"step_{s:06d}.jsonl")).read() == (
            open(os.path.join(b, "rollouts", f"step_{s:06d}.jsonl")).read()
        )
    da, db = (json.load(open(os.path.join(d, "result.json"))) for d in (a, b))
    assert (da["policy_sha256"], da["anchor_sha256"]) == (db["policy_sha256"], db["anchor_sha256"])


@pytest.mark.e2e
@pytest.mark.parametrize("method", ["gt", "corewarding_2"])
def test_staleness_zero_is_the_synchronous_run_bitwise(warm_bundle, tmp_path, method):
    sync, k0 = str(tmp_path / "sync"), str(tmp_path / "k0")
    _ok(run_train(_args(warm_bundle, sync, method, steps=3)))
    _ok(run_train(_args(warm_bundle, k0, method, steps=3, extra=["--async-rollout", "--max-staleness", "0"])))
    _same_run(sync, k0, 3)
    assert all(r["rollout/staleness_max"] == 0 for r in read_metrics(k0) if "train/loss" in r)


@pytest.mark.e2e
def test_staleness_one_versions_and_sigkill_resume_is_exact(warm_bundle, tmp_path):
    full, crashed, sync = str(tmp_path / "full"), str(tmp_path / "crashed"), str(tmp_path / "sync")
    save = lambda out: ["--save", os.path.join(out, "ckpt"), "--save-interval", "2"]  # noqa: E731
    extra = ["--async-rollout", "--max-staleness", "1"]
    _ok(run_train(_args(warm_bundle, full, steps=6, extra=extra + save(full))))
    # the versions each step trains on, read from the dumps: step 1 from version 0, then one behind the trainer
    # (step s is trained by the weights of s-1 updates and samples from those of s-2)
    versions = {s: sorted({r["weight_version"] for r in _dump(full, s)}) for s in range(1, 7)}
    assert versions == {1: [0], 2: [0], 3: [1], 4: [2], 5: [3], 6: [4]}
    for s, vs in versions.items():
        assert all(0 <= (s - 1) - v <= 1 for v in vs)  # within --max-staleness 1
    rows = {r["step"]: r for r in read_metrics(full) if "train/loss" in r}
    assert [rows[s]["rollout/staleness_max"] for s in range(1, 7)] == [0, 1, 1, 1, 1, 1]
    # stale samples are corrected by default (--rollout-is tis): the weight pi_old / pi_behaviour departs from 1
    # where the engine's weights are one version behind
    lag = [abs(rows[s]["train/is_weight_mean"] - 1.0) for s in range(1, 7)]
    assert max(lag[2:]) > 1e-3 and all(rows[s]["train/is_weight_max"] <= 2.0 for s in range(1, 7)), lag
    # synchronous: step 2 samples from version 1, so the async schedule really trains off-policy
    _ok(run_train(_args(warm_bundle, sync, steps=2)))
    assert {r["weight_version"] for r in _dump(sync, 2)} == {1}
    assert not any("train/is_weight_mean" in r for r in read_metrics(sync))  # on-policy: no correction

    proc = run_train(_args(warm_bundle, crashed, steps=6, extra=extra + save(crashed)), {"COREW_FAULT": "after_step:4"})
    assert proc.returncode == -9  # SIGKILL, with step 5's rollouts in flight
    _ok(run_train(_args(warm_bundle, crashed, steps=6, extra=extra + save(crashed) + ["--load", crashed + "/ckpt"])))
    assert [r["step"] for r in read_metrics(crashed) if "train/loss" in r] == [1, 2, 3, 4, 5, 6]
    _same_run(full, crashed, 6)


@pytest.mark.e2e
def test_teacher_prefetch_synchronous_logs_label_staleness(warm_bundle, tmp_path):
    """Every step's labels come from the teacher before that step's EMA update: staleness 1 with an update each
    step, 0 on the steps without one (--teacher-update-interval 2); with --no-ema the run is the plain one."""
    out = str(tmp_path / "prefetch")
    _ok(run_train(_args(warm_bundle, out, extra=["--teacher-prefetch", "--teacher-update-interval", "2"])))
    rows = [r for r in read_metrics(out) if "train/loss" in r]
    assert [r["rollout/teacher_label_staleness"] for r in rows] == [0, 1, 0, 1]
    assert all(r["rollout/staleness_max"] == 0 for r in rows)  # policy rollouts stay synchronous
    plain, pre = str(tmp_path / "plain"), str(tmp_path / "pre")
    _ok(run_train(_args(warm_bundle, plain, steps=3, extra=["--no-ema"])))
    _ok(run_train(_args(warm_bundle, pre, steps=3, extra=["--no-ema", "--teacher-prefetch"])))
    _same_run(plain, pre, 3)


def test_pipeline_flags_refused_where_they_do_not_apply(tiny_bundle, tmp_path):
    from megatron_corew.arguments import parse_args

    base = ["--hf-checkpoint", tiny_bundle["model"], "--train-data", tiny_bundle["train"]]
    base += ["--output-dir", str(tmp_path / "o")]
    cases = [
        (["--max-staleness", "2"], "--max-staleness does not apply without --async-rollout"),
        (["--async-rollout", "--max-staleness", "-1"], "--max-staleness"),
        (["--teacher-prefetch"], "--teacher-prefetch does not apply to --reward-method gt"),
        (["--async-rollout", "--dynamic-sampling"], "--async-rollout and --dynamic-sampling do not combine"),
        (["--async-rollout", "--colocate"], "--async-rollout and --colocate do not combine"),
    ]
    for extra, _msg in cases:
        with pytest.raises(SystemExit):
            parse_args(base + extra)
    from megatron_corew.validation import FlagError, check_applicable

    for extra, msg in [c for i, c in enumerate(cases) if i != 1]:  # case 1 is a range error, not applicability
        args = _parsed(base + extra)
        with pytest.raises(FlagError, match=msg):
            check_applicable(args, _defaults())


def _parsed(argv):
    from megatron_corew.arguments import build_parser

    return build_parser().parse_args(argv)


def _defaults():
    from megatron_corew.arguments import _defaults

    return _defaults()


@pytest.mark.dist
def test_two_ranks_receive_the_pipelined_batch_by_broadcast(warm_bundle, tmp_path):
    """TP 2 (torchrun, 2 ranks): rank 0 generates ahead, rank 1 gets each batch when its step needs it; staleness
    0 is the synchronous 2-rank run bitwise, staleness 1 trains step 2 on version-0 rollouts on both ranks."""
    tp = ["--tensor-model-parallel-size", "2"]
    sync, k0, k1 = (str(tmp_path / n) for n in ("sync", "k0", "k1"))
    _ok(run_train(_args(warm_bundle, sync, "gt", steps=2, extra=tp), nproc=2))
    _ok(
        run_train(
            _args(warm_bundle, k0, "gt", steps=2, extra=tp + ["--async-rollout", "--max-staleness", "0"]), nproc=2
        )
    )
    _same_run(sync, k0, 2)
    _ok(run_train(_args(warm_bundle, k1, "gt", steps=2, extra=tp + ["--async-rollout"]), nproc=2))
    assert {r["weight_version"] for r in _dump(k1, 2)} == {0}
    assert [r["rollout/staleness_max"] for r in read_metrics(k1) if "train/loss" in r] == [0, 1]


@pytest.mark.e2e
def test_resume_with_a_smaller_staleness_bound_regenerates_the_saved_rollouts(tiny_bundle, tmp_path):
    """A staleness-1 checkpoint holds step 3's rollouts from version 1; resumed with --max-staleness 0 they
    would lag by 1, so they are dropped (one line) and step 3 samples from the checkpoint's version 2."""
    out = str(tmp_path / "run")
    save = ["--save", os.path.join(out, "ckpt"), "--save-interval", "2", "--async-rollout"]
    proc = run_train(_args(tiny_bundle, out, "gt", steps=3, extra=save), {"COREW_FAULT": "after_step:2"})
    assert proc.returncode == -9
    proc = run_train(
        _args(tiny_bundle, out, "gt", steps=3, extra=save + ["--max-staleness", "0", "--load", out + "/ckpt"])
    )
    _ok(proc)
    assert "rollout pipeline: 1 saved rollout batch(es) not reused" in proc.stdout
    assert {r["weight_version"] for r in _dump(out, 3)} == {2}
    assert [r["rollout/staleness_max"] for r in read_metrics(out) if "train/loss" in r] == [0, 1, 0]


def test_rollouts_beyond_the_bound_stop_the_step(tiny_bundle):
    """A real embedded engine still at version 0 while the trainer is at 2: with --max-staleness 1 the step
    refuses to train (one line naming the step and both versions); at the bound it passes and logs the lag."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from megatron_corew.data import load_examples
    from megatron_corew.records import Prompt, StepBatch
    from megatron_corew.rollout.embedded import EmbeddedEngine
    from megatron_corew.rollout.generation import PromptSource, RolloutGenerator

    tok = AutoTokenizer.from_pretrained(tiny_bundle["model"])
    ds = load_examples(tiny_bundle["train"], tok, 128)
    args = SimpleNamespace(
        async_rollout=True, max_staleness=1, teacher_prefetch=False, seed=0, rollout_temperature=1.0,
        rollout_top_p=1.0, max_response_length=4,
    )  # fmt: skip
    sampler = EpochSampler(len(ds), 2, seed=0)
    prompts = PromptSource(None, None, None)  # train_iters 1: nothing is started ahead
    gen = RolloutGenerator(args, None, prompts, 1, False, EmbeddedEngine(tiny_bundle["model"], eos_token_ids=[2]))
    gen.weight_version = 2
    batch = StepBatch(1, [Prompt(ds[i], 0, k) for k, i in enumerate(sampler.next_batch())], 2)
    with pytest.raises(
        RuntimeError, match=r"step 2: rollouts made from weight version 0 lag the trainer \(version 2\)"
    ):
        gen.rollouts(batch)
    gen.weight_version = 1
    assert gen.rollouts(batch)["rollout/staleness_max"] == 1
    gen.close()


@pytest.mark.e2e
def test_pipelined_engines_that_lost_their_weights_are_refilled(tiny_bundle, tmp_path):
    """Both background threads meet an engine back from a restart without its weights (embedded engine, fault
    hook): the thread hands the refill to the main loop, every rank re-pushes the trainer's current weights, the
    request is made again, and the run goes on. The policy's step-3 request was started during step 2 from
    version 1; made again after the re-push it carries version 2 (an engine left unfilled would be at 0)."""
    out = str(tmp_path / "run")
    fault = {"COREW_FAULT": "lose_weights_policy:3,lose_weights_teacher:2"}
    proc = run_train(_args(tiny_bundle, out, steps=3, extra=["--async-rollout", "--teacher-prefetch"]), fault)
    _ok(proc)
    assert "policy engine: policy weights 2 re-pushed by the trainer (embedded policy engine restarted" in proc.stdout
    assert "teacher engine: teacher weights 1 re-pushed by the trainer (embedded teacher engine restarted" in (
        proc.stdout
    )
    assert [r["step"] for r in read_metrics(out) if "train/loss" in r] == [1, 2, 3]
    assert [sorted({r["weight_version"] for r in _dump(out, s)}) for s in (1, 2, 3)] == [[0], [0], [2]]


@pytest.mark.e2e
def test_refill_in_the_thread_is_the_synchronous_run_bitwise(tiny_bundle, tmp_path):
    """--async-rollout --max-staleness 0 generates each step in the thread; the engine loses its weights at step
    2: after the re-push it must hold exactly the trainer's weights, so the run equals the synchronous one with
    no fault (metrics, dumps, final weights), on steps that carry a gradient."""
    sync, k0 = str(tmp_path / "sync"), str(tmp_path / "k0")
    method = "self_certainty"  # continuous rewards: every group has reward variance, so a gradient
    _ok(run_train(_args(tiny_bundle, sync, method, steps=3)))
    proc = run_train(
        _args(tiny_bundle, k0, method, steps=3, extra=["--async-rollout", "--max-staleness", "0"]),
        {"COREW_FAULT": "lose_weights_policy:2"},
    )
    _ok(proc)
    assert "policy weights 1 re-pushed by the trainer" in proc.stdout
    _same_run(sync, k0, 3)
    assert all(r["train/grad_norm"] > 0 for r in read_metrics(sync) if "train/loss" in r)
