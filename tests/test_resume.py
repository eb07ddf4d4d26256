"""Crash safety: SIGKILL after a checkpoint and resume reproduces the uninterrupted run bitwise
(fp32, embedded engine, on the warm tiny model so every compared step trains a non-zero policy gradient); a kill while a checkpoint is being written leaves the previous one usable; a resume
logs every step once; the fault classes we track: a double launch, ranks orphaned by their launcher, a kill
during an HF export, a resume that changes the method, SIGTERM, consecutive non-finite updates."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import REPO, WORKERS, assert_real_signal, launch_command, read_metrics, run_in_own_session, run_train

KEYS = ("train/loss", "train/grad_norm", "train/kl", "reward/mean", "train/entropy")


def _args(bundle, out, method, steps=6, extra=()):
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
        "--save",
        os.path.join(out, "ckpt"),
        "--save-interval",
        "2",
        *extra,
    ]


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.e2e
@pytest.mark.parametrize("method", ["gt", "corewarding_1", "corewarding_2"])
def test_sigkill_and_resume_is_bitwise_identical(warm_bundle, tmp_path, method):
    full, crashed = str(tmp_path / "full"), str(tmp_path / "crashed")
    views = ["--train-data-rephrased", warm_bundle["train_rephrased"]] if method == "corewarding_1" else []
    _ok(run_train(_args(warm_bundle, full, method, extra=views)))
    proc = run_train(_args(warm_bundle, crashed, method, extra=views), env_extra={"COREW_FAULT": "after_step:4"})
    assert proc.returncode == -9  # SIGKILL
    assert open(os.path.join(crashed, "ckpt", "latest")).read().strip() == "iter_0000004"
    _ok(run_train(_args(warm_bundle, crashed, method, extra=[*views, "--load", os.path.join(crashed, "ckpt")])))
    assert_real_signal(read_metrics(full), range(1, 7))
    a = {r["step"]: r for r in read_metrics(full) if "train/loss" in r}
    b = {r["step"]: r for r in read_metrics(crashed) if "train/loss" in r}
    assert [r["step"] for r in read_metrics(crashed) if "train/loss" in r] == [1, 2, 3, 4, 5, 6]  # each once
    for step in range(1, 7):
        for k in KEYS:
            assert a[step][k] == b[step][k], (method, step, k, a[step][k], b[step][k])
    ra = json.load(open(os.path.join(full, "result.json")))
    rb = json.load(open(os.path.join(crashed, "result.json")))
    assert ra["policy_sha256"] == rb["policy_sha256"]
    assert ra["anchor_sha256"] == rb["anchor_sha256"]  # the reference / EMA teacher too
    if method == "corewarding_2":
        assert a[6]["train/teacher_alpha"] == b[6]["train/teacher_alpha"]


def _recorded(args, out: str) -> list[dict]:
    """Run the loop under tests/workers/step_order_worker.py: its engine calls (prompts and replies) in order."""
    cmd = [sys.executable, os.path.join(WORKERS, "step_order_worker.py"), out, "--", *args]
    proc = run_in_own_session(cmd, dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.load(open(out))["events"]


def _dump(run: str, step: int) -> list[dict]:
    with open(os.path.join(run, "rollouts", f"step_{step:06d}.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.e2e
@pytest.mark.parametrize("method", ["random_reward", "self_harmony"])
def test_stop_and_resume_continues_the_methods_own_draws(warm_bundle, tmp_path, method):
    """A run stopped after step 2 (the uninterrupted run's step-2 checkpoint as its only one) and resumed trains
    step 3 exactly as the uninterrupted run: random_reward's seeded stream continues at step 3 (a stream restarted
    at the resume would repeat step 1's coin flips) and Self-Harmony's reframer writes the same rewrites (its
    replies, token by token) before the solver answers them."""
    full, stopped = str(tmp_path / "full"), str(tmp_path / "stopped")
    events = _recorded(_args(warm_bundle, full, method, steps=3, extra=["--rollout-dump"]), full + ".json")
    shutil.copytree(os.path.join(full, "ckpt", "iter_0000002"), os.path.join(stopped, "ckpt", "iter_0000002"))
    with open(os.path.join(stopped, "ckpt", "latest"), "w") as f:
        f.write("iter_0000002\n")
    extra = ["--rollout-dump", "--load", os.path.join(stopped, "ckpt")]
    resumed = _recorded(_args(warm_bundle, stopped, method, steps=3, extra=extra), stopped + ".json")
    assert_real_signal(read_metrics(full), [3])
    a = {r["step"]: r for r in read_metrics(full) if "train/loss" in r}
    b = {r["step"]: r for r in read_metrics(stopped) if "train/loss" in r}
    assert sorted(b) == [3]
    for k in (*KEYS, *(k for k in a[3] if k.startswith("reframe/"))):
        assert a[3][k] == b[3][k], (method, k)
    keep = ("index", "view", "response", "reward", "label")
    assert [{k: r[k] for k in keep} for r in _dump(stopped, 3)] == [{k: r[k] for k in keep} for r in _dump(full, 3)]
    if method == "random_reward":
        assert [r["reward"] for r in _dump(full, 3)] != [r["reward"] for r in _dump(full, 1)]
    calls = lambda evs: [e for e in evs if e["event"] == "policy_generate"]  # noqa: E731
    if method == "self_harmony":  # per step: the reframer's call (one rewrite per question), then the solver's
        reframer = calls(events)[4]
        assert len(reframer["prompts"]) == 4 and calls(resumed)[0]["prompts"] == reframer["prompts"]
        assert calls(resumed)[0]["responses"] == reframer["responses"]
    assert calls(resumed)[-1] == calls(events)[-1]  # the solver's rollouts of step 3
    import torch

    trained = [[e for e in evs if e["event"] == "train"][-1]["policy_after"] for evs in (events, resumed)]
    after = [torch.load(d + ".json.pt")[t] for d, t in zip((full, stopped), trained)]
    assert all(after[0][k].equal(after[1][k]) for k in after[0])  # the weights after step 3, bitwise


@pytest.mark.e2e
def test_kill_during_checkpoint_write_keeps_previous(tiny_bundle, tmp_path):
    out = str(tmp_path / "run")
    proc = run_train(_args(tiny_bundle, out, "gt"), env_extra={"COREW_FAULT": "during_save:4"})
    assert proc.returncode == -9
    ckpt = os.path.join(out, "ckpt")
    assert open(os.path.join(ckpt, "latest")).read().strip() == "iter_0000002"
    assert not os.path.exists(os.path.join(ckpt, "iter_0000004"))
    proc = run_train(_args(tiny_bundle, out, "gt", extra=["--load", ckpt]))
    _ok(proc)
    assert "metrics.jsonl: dropped 2 row(s) logged after step 2 (resuming there)" in proc.stdout
    steps = [r["step"] for r in read_metrics(out) if "train/loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # resumed after step 2; the killed run's rows 3 and 4 are gone
    assert open(os.path.join(ckpt, "latest")).read().strip() == "iter_0000006"


def test_latest_pointer_publish_prune_and_incomplete_target(tmp_path):
    """The pointer file the resume reads: written whole, old checkpoints pruned, an incomplete target refused."""
    from megatron_corew.policy.checkpointing import latest_checkpoint, publish_latest

    root = str(tmp_path)
    assert latest_checkpoint(root) is None  # nothing saved yet: a fresh start
    for step in (2, 4, 6):
        os.makedirs(os.path.join(root, f"iter_{step:07d}"))
        open(os.path.join(root, f"iter_{step:07d}", "state.pt"), "w").close()
    publish_latest(root, "iter_0000006", "iter_", keep_last=2)
    assert open(os.path.join(root, "latest")).read().strip() == "iter_0000006"
    assert sorted(d for d in os.listdir(root) if d.startswith("iter_")) == ["iter_0000004", "iter_0000006"]
    assert latest_checkpoint(root) == os.path.join(root, "iter_0000006")
    os.remove(os.path.join(root, "iter_0000006", "state.pt"))
    from checkpoints_conversion.hf_io import CheckpointError

    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        latest_checkpoint(root)


def test_hf_latest_is_a_symlink_transformers_loads(tmp_path):
    """``hf/latest`` replaces an old pointer file by a link; from_pretrained opens it; stale temps are swept."""
    from helpers import make_tiny_hf_model
    from transformers import AutoModelForCausalLM

    from checkpoints_conversion.atomic import clean_stale_temps_in, publish_link

    root = str(tmp_path)
    make_tiny_hf_model(os.path.join(root, "step_0000002"), "qwen3", seed=1)
    make_tiny_hf_model(os.path.join(root, "step_0000004"), "qwen3", seed=2)
    with open(os.path.join(root, "latest"), "w") as f:
        f.write("step_0000002\n")  # what older versions wrote
    publish_link(root, "step_0000004")
    assert os.readlink(os.path.join(root, "latest")) == "step_0000004"
    loaded = AutoModelForCausalLM.from_pretrained(os.path.join(root, "latest"))
    reference = AutoModelForCausalLM.from_pretrained(os.path.join(root, "step_0000004"))
    for (name, p), (_, q) in zip(loaded.named_parameters(), reference.named_parameters()):
        assert p.equal(q), name
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    os.makedirs(os.path.join(root, f".step_0000006.tmp-{dead.pid}-abcd"))  # an export killed mid-write
    os.makedirs(os.path.join(root, f".step_0000008.tmp-{os.getppid()}-abcd"))  # a live writer's: kept
    assert clean_stale_temps_in(root) == [os.path.join(root, f".step_0000006.tmp-{dead.pid}-abcd")]


def _wait_for(cond, timeout=240, what="condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie nobody reaped is gone too
    except FileNotFoundError:
        return True


def _start(args, nproc=1, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO, **(env_extra or {}))
    return subprocess.Popen(
        launch_command("train_rl.py", args, nproc),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _lock(out):
    try:
        with open(os.path.join(out, ".corew.lock")) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@pytest.mark.e2e
def test_double_launch_refused_then_sigterm_stops_with_last_checkpoint(tiny_bundle, tmp_path):
    out = str(tmp_path / "run")
    ckpt = os.path.join(out, "ckpt")
    first = _start(_args(tiny_bundle, out, "gt", steps=400))
    try:
        _wait_for(lambda: os.path.exists(os.path.join(ckpt, "latest")), what="the first checkpoint")
        holder = _lock(out)
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        second = run_train(_args(tiny_bundle, out, "gt", steps=400))
        assert second.returncode == 2
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
        assert second.stderr.strip().splitlines()[-1] == (
            f"error: --output-dir {out} is in use by another run (pid {first.pid} on host {socket.gethostname()}, "
            f"since {since}); stop it first, or delete {out}/.corew.lock if that run is gone"
        )
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    step = int(lines[-1].split("after step ")[1].split(";")[0])
    latest = open(os.path.join(ckpt, "latest")).read().strip()
    assert lines[-1] == (
        f"stopped by SIGTERM after step {step}; last good checkpoint: {os.path.join(ckpt, latest)}; resume with "
        f"--load {ckpt}"
    )
    assert any(line.startswith(f"SIGTERM: finishing step {step}, then stopping") for line in lines)
    assert max(r["step"] for r in read_metrics(out)) == step  # the step it was in was finished and logged
    assert _lock(out) is None and not os.path.exists(os.path.join(ckpt, ".corew.lock"))
    fresh = run_train(_args(tiny_bundle, out, "gt"))  # a new run into the used directory
    assert fresh.returncode == 2 and fresh.stderr.strip().splitlines()[-1] == (
        f"error: --output-dir {out} already holds a run (metrics.jsonl); resume it with --load, choose another "
        "--output-dir, or pass --overwrite to replace it"
    )


@pytest.mark.e2e
def test_orphaned_rank_exits_when_its_launcher_dies(tiny_bundle, tmp_path):
    """torchrun SIGKILLed: its rank notices within seconds, releases the run's lock and exits."""
    from helpers import free_port

    out = str(tmp_path / "run")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(free_port())]
    log = open(tmp_path / "ranks.log", "w")
    launcher = subprocess.Popen(
        [*cmd, "train_rl.py", *_args(tiny_bundle, out, "gt", steps=400)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: _lock(out) is not None, what="the rank's lock")
        rank = _lock(out)["pid"]
        assert rank != launcher.pid
        os.kill(launcher.pid, signal.SIGKILL)  # the launcher only, as when its job step is killed
        launcher.wait()
        _wait_for(lambda: _gone(rank), timeout=30, what=f"rank {rank} to exit")
        assert _lock(out) is None  # released: a relaunch is not refused by a dead run
        log.close()
        said = (tmp_path / "ranks.log").read_text()
        assert f"error: rank 0 (pid {rank}): its launcher (pid {launcher.pid}) is gone; exiting" in said, said[-3000:]
    finally:
        try:
            os.killpg(launcher.pid, signal.SIGKILL)
        except ProcessLookupError:  # every process of the group is gone: what the test wants
            pass


@pytest.mark.e2e
def test_kill_during_hf_export_is_redone_on_resume(tiny_bundle, tmp_path):
    out = str(tmp_path / "run")
    ckpt, hf = os.path.join(out, "ckpt"), os.path.join(out, "hf")
    extra = ["--save-hf-interval", "2", "--keep-last-checkpoints", "2"]
    proc = run_train(_args(tiny_bundle, out, "gt", extra=extra), env_extra={"COREW_FAULT": "during_hf_export:4"})
    assert proc.returncode == -9
    assert open(os.path.join(ckpt, "latest")).read().strip() == "iter_0000004"  # saved before the export
    assert os.readlink(os.path.join(hf, "latest")) == "step_0000002"
    assert [d for d in os.listdir(hf) if d.startswith(".step_0000004.tmp-")]  # the killed export's temp
    proc = run_train(_args(tiny_bundle, out, "gt", extra=[*extra, "--load", ckpt]))
    _ok(proc)
    assert "the HF export of step 4 is missing (killed while exporting?): exporting it again" in proc.stdout
    assert sorted(os.listdir(hf)) == ["latest", "step_0000004", "step_0000006"]  # keep-last 2, no temps left
    assert os.readlink(os.path.join(hf, "latest")) == "step_0000006"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(os.path.join(hf, "latest"))


@pytest.mark.e2e
def test_resume_with_a_changed_method_is_refused(tiny_bundle, tmp_path):
    out = str(tmp_path / "run")
    ckpt = os.path.join(out, "ckpt")
    _ok(run_train(_args(tiny_bundle, out, "gt", steps=2)))
    proc = run_train(_args(tiny_bundle, out, "majority_vote", steps=4, extra=["--load", ckpt]))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: checkpoint {ckpt} (step 2) was written with reward_method=gt but this run has "
        "reward_method=majority_vote; resuming would continue another experiment (start a new run without --load)"
    )
    proc = run_train(_args(tiny_bundle, out, "gt", steps=4, extra=["--load", ckpt, "--global-batch-size", "8"]))
    _ok(proc)  # a changed batch is a warning, not a refusal
    assert (
        f"warning: resuming checkpoint {ckpt} (step 2) with global_batch_size=8 (the checkpoint has 4)" in proc.stdout
    )


@pytest.mark.e2e
def test_consecutive_nonfinite_updates_stop_the_run(tiny_bundle, tmp_path):
    out = str(tmp_path / "run")
    proc = run_train(
        _args(tiny_bundle, out, "gt", steps=4, extra=["--max-consecutive-skips", "1"]),
        env_extra={"COREW_FAULT": "nan_loss:3"},
    )
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: 1 consecutive updates were non-finite and skipped (--max-consecutive-skips 1); stopping at step 3, "
        f"last good checkpoint: {os.path.join(out, 'ckpt', 'iter_0000002')}"
    )


@pytest.mark.e2e
@pytest.mark.parametrize("nproc", [1, 2])
def test_sigterm_to_the_whole_process_group_while_saving(tiny_bundle, tmp_path, nproc):
    """SLURM preemption signals every process of the job, megatron's dist-checkpoint helper processes included.
    With a checkpoint every step, SIGTERM to the process group at several delays must still stop gracefully: the
    one-line message, a complete ``latest`` that a resume loads, no temp directory left."""
    from checkpoints_conversion.megatron_read import read_checkpoint_metadata
    from megatron_corew.policy.checkpointing import latest_checkpoint, read_state

    delays = (0.0, 0.5, 1.2) if nproc == 1 else (0.3, 1.0)
    for k, delay in enumerate(delays):
        out = str(tmp_path / f"run{k}")
        ckpt = os.path.join(out, "ckpt")
        proc = _start(_args(tiny_bundle, out, "gt", steps=400, extra=["--save-interval", "1"]), nproc)
        try:
            _wait_for(lambda c=ckpt: os.path.exists(os.path.join(c, "latest")), what="the first checkpoint")
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGTERM)  # every process of the run, as the scheduler does
            _, err = proc.communicate(timeout=240)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers (a test failure) do not outlive the test
            except ProcessLookupError:
                pass
        said = [line for line in err.splitlines() if "stopped by SIGTERM" in line]
        assert said and "EOFError" not in err, (delay, err[-4000:])
        assert said[-1].startswith("stopped by SIGTERM ") and f"resume with --load {ckpt}" in said[-1], said
        if nproc == 1:
            assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, (proc.returncode, err[-3000:])
        path = latest_checkpoint(ckpt)  # complete: state.pt and every data file its .metadata lists
        assert f"last good checkpoint: {path};" in said[-1]
        step = read_state(path)["step"]
        assert read_checkpoint_metadata(os.path.join(path, "model"))
        assert [n for n in os.listdir(ckpt) if ".tmp-" in n] == [], os.listdir(ckpt)
    resumed = run_train(_args(tiny_bundle, out, "gt", steps=step + 1, extra=["--load", ckpt]), nproc=nproc)
    _ok(resumed)
    assert f"resumed from {ckpt} at step {step}" in resumed.stdout
