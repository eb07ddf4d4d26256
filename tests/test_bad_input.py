"""Bad input fails at start-up with one clear line naming the problem (no traceback dump).

The classes of bad input and faults we track, each with its exact message: (1) work lost or overwritten (unusable --save/--output-dir,
a --load that is not a checkpoint directory, a used output directory, a held lock), (2) nonsense flag values and
flags that do not apply to the method, (3) bad data rows and model directories, (4) a resume that changes the
experiment, (5) broken config / checkpoint / pointer files and layouts without a launcher. Flags are checked
in-process through ``parse_args`` (exit code 2, one stderr line); a few cases run train_rl.py end to end.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import REPO


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_bundle):
    from megatron_corew.demo.tiny_task import generate_problems, verl_rows, write_parquet

    bundle = make_bundle(num_train=40, num_val=8)
    model, good = bundle["model"], bundle["train"]
    root = tmp_path_factory.mktemp("bad")
    train, _ = generate_problems(num_train=40, num_val=8, seed=0)  # the rows of bundle["train"]
    no_prompt = str(root / "no_prompt.parquet")
    pq.write_table(pa.table({"question": ["1+1?"] * 20, "answer": ["2"] * 20}), no_prompt)
    unsupported = str(root / "gemma")
    os.makedirs(unsupported)
    with open(os.path.join(model, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(model_type="gemma2", architectures=["Gemma2ForCausalLM"])
    with open(os.path.join(unsupported, "config.json"), "w") as f:
        json.dump(cfg, f)
    unlabelled = str(root / "unlabelled.parquet")
    rows = verl_rows(train, "train", "original")
    rows[5]["reward_model"]["ground_truth"] = None
    write_parquet(rows, unlabelled)
    return {
        "model": model,
        "good": good,
        "unlabelled": unlabelled,
        "no_prompt": no_prompt,
        "unsupported": unsupported,
        "root": root,
    }


def _run(args):
    proc = subprocess.run(
        [
            sys.executable,
            "train_rl.py",
            "--global-batch-size",
            "4",
            "--train-iters",
            "1",
            "--output-dir",
            tempfile.mkdtemp(prefix="corew-bad-input-"),
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return last


def test_missing_model_directory(setup):
    """End to end through train_rl.py: exit code 2 and one line, no traceback."""
    line = _run(["--hf-checkpoint", "/nonexistent/model", "--train-data", setup["good"]])
    assert line == "error: model directory not found: /nonexistent/model"


def test_unsupported_architecture(setup, capsys):
    line = _flags_error(setup, capsys, "--hf-checkpoint", setup["unsupported"])
    assert line.startswith("error:") and "gemma2" in line and "unsupported" in line


@pytest.mark.e2e
def test_dataset_without_prompt_column(setup):
    line = _run(["--hf-checkpoint", setup["model"], "--train-data", setup["no_prompt"]])
    assert line.startswith("error:") and "no_prompt.parquet" in line and "prompt" in line


def test_tp_not_dividing_heads(setup, capsys):
    line = _flags_error(setup, capsys, "--tensor-model-parallel-size", "3")
    assert line.startswith("error:") and "--tensor-model-parallel-size 3" in line and "num_attention_heads" in line


def test_fp8_without_transformer_engine_fails_clearly(setup, capsys):
    line = _flags_error(setup, capsys, "--fp8-format", "e4m3")
    assert "Transformer Engine" in line and "no silent fallback" in line


@pytest.mark.e2e
def test_gt_training_or_validation_on_unlabelled_rows(setup):
    for flags in (
        ["--train-data", setup["unlabelled"], "--reward-method", "gt"],
        ["--train-data", setup["good"], "--val-data", setup["unlabelled"], "--reward-method", "majority_vote"],
    ):
        line = _run(["--hf-checkpoint", setup["model"], *flags])
        assert line.startswith("error:") and "unlabelled.parquet" in line and "row 5" in line, line


# ---------------------------------------------------------------------- flags, in-process (fast)
def _flags_error(setup, capsys, *flags, out=None):
    """parse_args on a valid base command plus ``flags``: the one stderr line of its exit-2 refusal."""
    from megatron_corew.arguments import parse_args

    out = out or str(setup["root"] / "out")
    base = ["--hf-checkpoint", setup["model"], "--train-data", setup["good"], "--output-dir", out]
    with pytest.raises(SystemExit) as e:
        parse_args(base + list(flags))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_every_numeric_flag_has_a_range():
    from megatron_corew.arguments import build_parser
    from megatron_corew.validation import RANGES

    numeric = {a.dest for a in build_parser()._actions if a.type in (int, float)}
    assert numeric - set(RANGES) == set()


RANGE_CASES = [
    (["--rollout-temperature", "0"], "--rollout-temperature 0 is out of range; valid: (0, inf)"),
    (["--rollout-top-p", "1.5"], "--rollout-top-p 1.5 is out of range; valid: (0, 1]"),
    (["--max-response-length", "0"], "--max-response-length 0 is out of range; valid: [1, inf)"),
    (["--max-prompt-length", "-4"], "--max-prompt-length -4 is out of range; valid: [1, inf)"),
    (["--micro-batch-size", "0"], "--micro-batch-size 0 is out of range; valid: [1, inf)"),
    (["--max-tokens-per-micro-batch", "0"], "--max-tokens-per-micro-batch 0 is out of range; valid: [1, inf)"),
    (["--clip-ratio-low", "1.2"], "--clip-ratio-low 1.2 is out of range; valid: [0, 1)"),
    (["--clip-ratio-high", "-0.1"], "--clip-ratio-high -0.1 is out of range; valid: [0, inf)"),
    (["--dual-clip-c", "1"], "--dual-clip-c 1 is out of range; valid: (1, inf)"),
    (["--kl-loss-coef", "-0.1"], "--kl-loss-coef -0.1 is out of range; valid: [0, inf)"),
    (["--teacher-alpha-start", "1.5"], "--teacher-alpha-start 1.5 is out of range; valid: [0, 1]"),
    (["--teacher-update-interval", "0"], "--teacher-update-interval 0 is out of range; valid: [1, inf)"),
    (["--train-iters", "-1"], "--train-iters -1 is out of range; valid: [0, inf)"),
    (["--global-batch-size", "0"], "--global-batch-size 0 is out of range; valid: [1, inf)"),
    (["--n-samples-per-prompt", "1"], "--n-samples-per-prompt 1 is out of range; valid: [2, inf)"),
    (["--max-val-samples", "0"], "--max-val-samples 0 is out of range; valid: [1, inf)"),
    (["--val-n-samples", "-1"], "--val-n-samples -1 is out of range; valid: [0, inf)"),
    (["--lr", "1e6"], "--lr 1e+06 is out of range; valid: (0, 1]"),
    (["--lr", "nan"], "--lr nan is out of range; valid: (0, 1]"),
    (["--lr", "1e-4", "--min-lr", "1e-3"], "--min-lr 0.001 is larger than --lr 0.0001; valid: 0 <= --min-lr <= --lr"),
]


@pytest.mark.parametrize("flags,message", RANGE_CASES, ids=[" ".join(c[0]) for c in RANGE_CASES])
def test_out_of_range_flag(setup, capsys, flags, message):
    assert _flags_error(setup, capsys, *flags) == "error: " + message


def test_flags_that_do_not_apply_to_the_method(setup, capsys):
    rephrased = setup["good"]  # any existing file: the refusal comes before it is read
    cases = [
        (
            ["--reward-method", "corewarding_2", "--train-data-rephrased", rephrased],
            "--train-data-rephrased does not apply to --reward-method corewarding_2 (it never reads the rephrased "
            "file); with an EMA teacher add --teacher-on-rephrased",
        ),
        (
            ["--reward-method", "gt", "--teacher-alpha-start", "0.1"],
            "--teacher-alpha-start does not apply to --reward-method gt (it has no EMA teacher)",
        ),
        (
            ["--reward-method", "entropy", "--view-loss-agg", "mean"],
            "--view-loss-agg does not apply to --reward-method entropy (it trains on one view)",
        ),
        (
            ["--reward-method", "gt", "--label-matching", "equiv"],
            "--label-matching does not apply to --reward-method gt (it votes no pseudo-labels)",
        ),
        (["--val-n-samples", "4"], "--val-n-samples does not apply without --val-data"),
        (["--save-interval", "2"], "--save-interval does not apply without --save"),
        (
            ["--micro-batch-layout", "padded", "--max-tokens-per-gpu", "4096"],
            "--max-tokens-per-gpu does not apply to --micro-batch-layout padded (its budget is "
            "--max-tokens-per-micro-batch)",
        ),
        (
            ["--max-tokens-per-micro-batch", "4096"],
            "--max-tokens-per-micro-batch does not apply to --micro-batch-layout packed (the default; its budget is "
            "--max-tokens-per-gpu)",
        ),
        (
            ["--rollout-backend", "sglang", "--no-rollout-drop-finished"],
            "--rollout-drop-finished off (--no-rollout-drop-finished) does not apply to --rollout-backend sglang "
            "(it batches continuously)",
        ),
        (
            ["--rollout-backend", "sglang", "--rollout-no-shared-prefill"],
            "--rollout-no-shared-prefill does not apply to --rollout-backend sglang (it caches prefixes)",
        ),
        (
            ["--answer-format", "boxed,answer"],
            "--answer-format: unknown answer format 'answer'; choose from ['answer-is', 'boxed', 'gsm8k', "
            "'last-number'] or regex:PATTERN",
        ),
        (
            ["--answer-format", "regex:(["],
            "--answer-format: bad regex '([': unterminated character set at position 1",
        ),
        (
            ["--loss-agg-micro-batch", "4"],
            "--loss-agg-micro-batch does not apply without --loss-agg-mode microbatch-token-mean",
        ),
        (["--logits-chunk-tokens", "-1"], "--logits-chunk-tokens -1 is out of range; valid: [0, inf)"),
        (
            ["--reward-method", "corewarding_1"],
            "--reward-method corewarding_1 needs --train-data-rephrased (it trains on both views of each question)",
        ),
    ]
    for flags, message in cases:
        assert _flags_error(setup, capsys, *flags) == "error: " + message, flags


def test_flags_that_do_not_apply_to_the_new_methods(setup, capsys):
    rephrased = setup["good"]
    cases = [
        (
            ["--reward-method", "gt", "--random-reward-p", "0.3"],
            "--random-reward-p does not apply to --reward-method gt (it reads no such setting)",
        ),
        (
            ["--reward-method", "random_reward", "--random-reward-p", "1.5"],
            "--random-reward-p 1.5 is out of range; valid: [0, 1]",
        ),  # fmt: skip
        (
            ["--reward-method", "semantic_entropy", "--label-matching", "exact"],
            "--label-matching does not apply to --reward-method semantic_entropy (it always clusters by equivalence)",
        ),
        (
            ["--reward-method", "self_harmony", "--train-data-rephrased", rephrased],
            "--train-data-rephrased does not apply to --reward-method self_harmony (the policy writes the second "
            "view itself)",
        ),
        (
            ["--reward-method", "self_harmony", "--async-rollout"],
            "--async-rollout does not apply to --reward-method self_harmony (its second view is written at the "
            "step's start)",
        ),
        (
            ["--reward-method", "corewarding_3", "--train-data-rephrased", rephrased, "--teacher-on-rephrased"],
            "--teacher-on-rephrased does not apply to --reward-method corewarding_3 (its teacher answers both views)",
        ),
        (
            ["--reward-method", "corewarding_3"],
            "--reward-method corewarding_3 needs --train-data-rephrased (it trains on both views of each question)",
        ),
    ]
    for flags, message in cases:
        assert _flags_error(setup, capsys, *flags) == "error: " + message, flags


def test_unusable_output_paths(setup, capsys):
    afile = str(setup["root"] / "a_file")
    open(afile, "w").close()
    assert _flags_error(setup, capsys, "--save", afile) == f"error: --save {afile} exists and is not a directory"
    under = os.path.join(afile, "ckpt")
    assert _flags_error(setup, capsys, "--save", under) == (
        f"error: --save {under} cannot be created: {afile} is not a directory"
    )
    line = _flags_error(setup, capsys, out=os.path.join(afile, "run"))
    assert line == f"error: --output-dir {afile}/run cannot be created: {afile} is not a directory"
    hf = os.path.join(afile, "hf")
    assert _flags_error(setup, capsys, "--save-hf-interval", "2", "--save-hf", hf) == (
        f"error: --save-hf {hf} cannot be created: {afile} is not a directory"
    )


def test_load_that_is_not_a_checkpoint_directory(setup, capsys):
    missing = str(setup["root"] / "no_such_ckpt")
    assert _flags_error(setup, capsys, "--load", missing) == (
        f"error: --load {missing}: directory not found (to start a new run, leave out --load)"
    )
    assert _flags_error(setup, capsys, "--load", setup["good"]) == (
        f"error: --load {setup['good']} is a file; it must be a checkpoint directory written by --save"
    )
    model = setup["model"]
    assert _flags_error(setup, capsys, "--load", model) == (
        f"error: --load {model} is an HF model directory; start from it with --hf-checkpoint {model} "
        "(--load resumes a checkpoint directory written by --save)"
    )
    empty = str(setup["root"] / "empty_ckpt")
    os.makedirs(empty, exist_ok=True)
    assert _flags_error(setup, capsys, "--load", empty) == (
        f"error: --load {empty} holds no checkpoint (no 'latest' pointer); to start a new run, leave out --load"
    )


def test_model_directory_problems(setup, capsys, tmp_path):
    import shutil

    broken = str(tmp_path / "broken")
    shutil.copytree(setup["model"], broken)
    with open(os.path.join(broken, "config.json"), "w") as f:
        f.write('{"model_type": "qwen3",\n  "hidden_size": }')
    line = _flags_error(setup, capsys, "--hf-checkpoint", broken)
    assert line == f"error: {broken}/config.json is not valid JSON (line 2, column 18: Expecting value)"
    notok = str(tmp_path / "no_tokenizer")
    shutil.copytree(setup["model"], notok)
    for name in os.listdir(notok):
        if name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template")):
            os.remove(os.path.join(notok, name))
    assert _flags_error(setup, capsys, "--hf-checkpoint", notok) == (
        f"error: --hf-checkpoint {notok} has no tokenizer files (none of tokenizer.json, tokenizer.model, "
        "vocab.json, tokenizer_config.json); copy them from the model's release"
    )


def test_model_parallel_without_a_launcher(setup, capsys, monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    assert _flags_error(setup, capsys, "--tensor-model-parallel-size", "2") == (
        "error: --tensor-model-parallel-size 2 x --pipeline-model-parallel-size 1 needs a multiple of 2 processes; "
        "launch with torchrun --nproc_per_node N (or srun)"
    )


def test_unreachable_sglang_url(setup, capsys):
    from helpers import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert _flags_error(setup, capsys, "--rollout-backend", "sglang", "--sglang-urls", url) == (
        f"error: --sglang-urls {url} is not reachable ([Errno 111] Connection refused); start the server or fix the URL"
    )


# ---------------------------------------------------------------------- run directories and locks
def test_used_output_directory_refused_unless_resumed_or_overwritten(tmp_path):
    from megatron_corew.utils.run_dir import UsedDirectory, claim

    out = str(tmp_path / "run")
    assert claim(out, resuming=False, overwrite=False) is None  # new directory
    os.makedirs(os.path.join(out, "tensorboard"))
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        f.write('{"step": 1}\n')
    with pytest.raises(UsedDirectory) as e:
        claim(out, resuming=False, overwrite=False)
    assert str(e.value) == (
        f"--output-dir {out} already holds a run (metrics.jsonl); resume it with --load, choose another "
        "--output-dir, or pass --overwrite to replace it"
    )
    assert claim(out, resuming=True, overwrite=False) is None
    assert claim(out, resuming=False, overwrite=True) == (
        f"--overwrite: removed the previous run's metrics.jsonl, tensorboard from {out}"
    )
    assert sorted(os.listdir(out)) == []


def test_save_directory_of_another_run_refused_unless_resumed_or_overwritten(tmp_path):
    """A new run (new --output-dir, no --load) with --save pointing at another run's checkpoints would overwrite
    them step by step: refused in one line through train_rl.py's directory claim."""
    import argparse

    from megatron_corew.utils import run_lock
    from megatron_corew.utils.run_dir import UsedDirectory
    from train_rl import _claim_dirs

    old = str(tmp_path / "old_ckpt")
    os.makedirs(os.path.join(old, "iter_0000002"))
    with open(os.path.join(old, "latest"), "w") as f:
        f.write("iter_0000002\n")

    def args(out, load=None, overwrite=False):
        keys = dict(save_hf_interval=None, save_hf=None, tensorboard_dir=None)
        return argparse.Namespace(output_dir=str(tmp_path / out), save=old, load=load, overwrite=overwrite, **keys)

    try:
        with pytest.raises(UsedDirectory) as e:
            _claim_dirs(args("new_run"))
        assert str(e.value) == (
            f"--save {old} already holds checkpoints (iter_0000002); resume them with --load {old}, choose "
            "another --save, or pass --overwrite to replace them"
        )
        run_lock.release_all()
        assert _claim_dirs(args("resumed", load=old + "/")) == []  # resuming the same directory
        run_lock.release_all()
        assert os.path.isdir(os.path.join(old, "iter_0000002"))
        notes = _claim_dirs(args("over", overwrite=True))
        assert notes == [f"--overwrite: removed the previous run's checkpoints iter_0000002, latest from {old}"]
        assert [n for n in os.listdir(old) if not n.startswith(".")] == []
    finally:
        run_lock.release_all()


def test_load_whose_latest_is_a_link(setup, capsys, tmp_path):
    """``latest`` as a link (as HF exports write it): to a checkpoint it is followed; to an HF export the start-up
    refuses it (the loader would otherwise find no pointer file and train from step 0 over the checkpoints)."""
    from megatron_corew.policy.checkpointing import latest_checkpoint

    ckpt = str(tmp_path / "ckpt")
    os.makedirs(os.path.join(ckpt, "iter_0000002"))
    open(os.path.join(ckpt, "iter_0000002", "state.pt"), "w").close()
    os.symlink("iter_0000002", os.path.join(ckpt, "latest"))
    assert latest_checkpoint(ckpt) == os.path.join(ckpt, "iter_0000002")
    hf = str(tmp_path / "hf")
    os.makedirs(os.path.join(hf, "step_0000002"))
    open(os.path.join(hf, "step_0000002", "config.json"), "w").close()
    os.symlink("step_0000002", os.path.join(hf, "latest"))
    assert _flags_error(setup, capsys, "--load", hf) == (
        f"error: --load {hf}: {hf}/latest points to the HF export {hf}/step_0000002, not an RL checkpoint; start "
        f"from it with --hf-checkpoint {hf}/step_0000002 (--load resumes a directory written by --save)"
    )
    os.remove(os.path.join(ckpt, "latest"))
    os.symlink("iter_0000009", os.path.join(ckpt, "latest"))  # dangling link
    assert _flags_error(setup, capsys, "--load", ckpt) == (
        f"error: --load {ckpt}: {ckpt}/latest points to {ckpt}/iter_0000009, which is not a complete checkpoint; "
        f"the newest complete one may be iter_0000002: write that name into {ckpt}/latest"
    )


def test_lock_refused_while_held_and_reclaimed_when_stale(tmp_path):
    import socket

    from megatron_corew.utils import run_lock

    d = str(tmp_path / "save")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.makedirs(d)
        info = {"pid": holder.pid, "host": socket.gethostname(), "start": run_lock._start_time(holder.pid), "since": 0}
        with open(os.path.join(d, run_lock.LOCK_NAME), "w") as f:
            json.dump(info, f)
        with pytest.raises(run_lock.LockHeld) as e:
            run_lock.RunLock(d, "--save").acquire()
        since = __import__("time").strftime("%Y-%m-%d %H:%M:%S", __import__("time").localtime(0))
        assert str(e.value) == (
            f"--save {d} is in use by another run (pid {holder.pid} on host {socket.gethostname()}, since {since}); "
            f"stop it first, or delete {d}/{run_lock.LOCK_NAME} if that run is gone"
        )
    finally:
        holder.kill()
        holder.wait()
    lock = run_lock.RunLock(d, "--save")
    assert lock.acquire() == (
        f"reclaimed the stale lock {d}/{run_lock.LOCK_NAME} (pid {holder.pid} on {socket.gethostname()} is gone)"
    )
    assert json.load(open(lock.path))["pid"] == os.getpid()
    lock.release()
    assert not os.path.exists(lock.path)


# ---------------------------------------------------------------------- data rows
def test_bad_prompt_rows_named_by_file_and_row(tmp_path):
    from megatron_corew.data import DataError, load_examples
    from megatron_corew.demo.tiny_task import build_tokenizer

    tok = build_tokenizer()
    good = [{"role": "user", "content": "1+1?"}]
    cases = [
        ([{"role": "system", "content": "be brief"}], "'prompt' has no user turn with text (roles ['system'])"),
        (
            [{"role": "moderator", "content": "1+1?"}],
            "'prompt' message 0 has unknown role 'moderator' (expected one of system, user, assistant, tool)",
        ),
        (
            [{"role": "user", "content": " "}, {"role": "assistant", "content": "What is 1+1?"}],
            "'prompt' has the question only in an assistant turn (roles ['user', 'assistant']); it must be a user turn",
        ),
    ]
    for k, (bad, message) in enumerate(cases):
        path = str(tmp_path / f"bad{k}.parquet")
        prompts = [good, good, bad]
        pq.write_table(
            pa.table({"prompt": prompts, "reward_model": [{"ground_truth": "2"}] * 3, "data_source": ["t"] * 3}),
            path,
        )
        with pytest.raises(DataError) as e:
            load_examples(path, tok, 128)
        assert str(e.value) == f"{path}: row 2: {message}"
    blank = str(tmp_path / "blank_gt.parquet")
    pq.write_table(
        pa.table({"prompt": [good] * 3, "reward_model": [{"ground_truth": g} for g in ("2", "  ", "2")]}), blank
    )
    assert load_examples(blank, tok, 128).unlabelled_rows() == [1]  # refused by gt training and evaluation


def test_evaluate_missing_model(setup, capsys):
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import evaluate

    out = str(setup["root"] / "eval")
    assert evaluate.main(["--model", "/nonexistent/model", "--data", setup["good"], "--output-dir", out]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --model /nonexistent/model: directory not found (a local HF model directory)"
    )
    for flags, message in (
        (["--top-p", "0"], "--top-p 0 is out of range; valid: (0, 1]"),
        (["--k", "0"], "--k 0 is out of range; valid: [1, inf)"),
        (["--max-new-tokens", "-1"], "--max-new-tokens -1 is out of range; valid: [1, inf)"),
    ):
        assert evaluate.main(["--model", setup["model"], "--data", setup["good"], "--output-dir", out, *flags]) == 2
        assert capsys.readouterr().err.strip().splitlines() == ["error: " + message]


# ---------------------------------------------------------------------- checkpoints
def test_corrupt_checkpoint_and_dangling_latest(tmp_path):
    import torch

    from checkpoints_conversion.hf_io import CheckpointError
    from megatron_corew.policy.checkpointing import latest_checkpoint, read_state

    root = str(tmp_path)
    ckpt = os.path.join(root, "iter_0000002")
    os.makedirs(ckpt)
    torch.save({"step": 2, "blob": list(range(1000))}, os.path.join(ckpt, "state.pt"))
    with open(os.path.join(ckpt, "state.pt"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(CheckpointError) as e:
        read_state(ckpt)
    line = str(e.value)
    assert line.startswith(f"{ckpt}/state.pt is corrupt or truncated (") and "\n" not in line
    assert line.endswith("; resume an earlier checkpoint")
    with open(os.path.join(root, "latest"), "w") as f:
        f.write("iter_0000004\n")
    with pytest.raises(CheckpointError) as e:
        latest_checkpoint(root)
    assert str(e.value) == (
        f"{root}/latest points to {root}/iter_0000004, which is not a complete checkpoint; the newest complete "
        f"one may be iter_0000002: write that name into {root}/latest"
    )


def test_resume_refuses_a_changed_experiment():
    from checkpoints_conversion.hf_io import CheckpointError
    from megatron_corew.policy.checkpointing import compare_settings

    saved = {"reward_method": "corewarding_2", "hidden_size": 64, "seed": 1, "global_batch_size": 4, "lr": 1e-3}
    where = "checkpoint ckpt (step 4)"
    for key, value in (("reward_method", "gt"), ("hidden_size", 128), ("seed", 2)):
        with pytest.raises(CheckpointError) as e:
            compare_settings(saved, {**saved, key: value}, where)
        assert str(e.value) == (
            f"{where} was written with {key}={saved[key]} but this run has {key}={value}; resuming would continue "
            "another experiment (start a new run without --load)"
        )
    assert compare_settings(saved, {**saved, "global_batch_size": 8}, where) == [
        f"resuming {where} with global_batch_size=8 (the checkpoint has 4): fitting the run to other hardware; the "
        "sampler keeps its place in the epoch"
    ]
    assert compare_settings({**saved, "rollout_is": "none"}, {**saved, "rollout_is": "tis"}, where) == [
        f"resuming {where} with rollout_is=tis (the checkpoint has none): its default follows the "
        "staleness of the rollouts (--async-rollout, --max-staleness, --num-steps-per-rollout)"
    ]
    assert compare_settings(None, saved, where) == [
        f"{where} records no run settings (written by an older version); they are not checked"
    ]


RESUME_REFUSED = [
    ["--rollout-temperature", "0.7"],
    ["--rollout-top-p", "0.9"],
    ["--max-response-length", "64"],
    ["--loss-agg-mode", "microbatch-token-mean"],
    ["--clip-ratio-high", "0.28"],
    ["--dual-clip-c", "5"],
    ["--rollout-is-threshold", "3"],
    ["--async-rollout"],
    ["--dynamic-sampling"],
    ["--reward-method", "majority_vote", "--label-matching", "equiv"],
    ["--entropy-coef", "0.01"],
]


@pytest.mark.parametrize("changed", RESUME_REFUSED, ids=[c[-2] if len(c) > 1 else c[0] for c in RESUME_REFUSED])
def test_resume_refuses_every_experiment_defining_flag(setup, changed):
    """The settings recorded in a checkpoint come from the flag table: a resume that changes one is refused."""
    from checkpoints_conversion.hf_io import CheckpointError
    from megatron_corew.arguments import build_parser
    from megatron_corew.policy.checkpointing import compare_settings, run_settings
    from megatron_corew.rewards import get_method

    base = ["--hf-checkpoint", setup["model"], "--train-data", setup["good"], "--reward-method", "majority_vote"]
    model = type("Shape", (), dict.fromkeys(("model_type", "vocab_size", "hidden_size", "num_layers",
                                             "num_attention_heads", "num_query_groups"), 1))  # fmt: skip

    def settings(argv):
        a = build_parser().parse_args(argv)
        a.kl_loss_coef = 0.0
        return run_settings(a, get_method(a.reward_method), model, 6, 40)

    saved, now = settings(base), settings(base + changed)
    with pytest.raises(CheckpointError) as e:
        compare_settings(saved, now, "checkpoint c (step 2)")
    dest = next(k for k in now if now[k] != saved[k])
    assert str(e.value) == (
        f"checkpoint c (step 2) was written with {dest}={saved[dest]} but this run has {dest}={now[dest]}; "
        "resuming would continue another experiment (start a new run without --load)"
    )


# ---------------------------------------------------------------------- signals
def test_signal_finishes_the_step_then_stops_and_a_second_abandons():
    from megatron_corew.utils.lifecycle import Interrupted, StopOnSignal

    stop = StopOnSignal().install()
    try:
        stop.check(3)  # no signal: continue
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(Interrupted) as e:
            stop.check(4)
        assert (e.value.step, e.value.abandoned, e.value.exit_code, str(e.value)) == (4, False, 143, "SIGTERM")
        with pytest.raises(Interrupted) as e:
            os.kill(os.getpid(), signal.SIGINT)
        assert (e.value.abandoned, e.value.exit_code) == (True, 130)
    finally:
        stop.uninstall()


def test_signals_during_a_save_never_abandon_it():
    """Inside ``critical()`` (a checkpoint write) even a second signal is only recorded: the save completes and the
    loop stops after the step; outside the loop the save completes and then the stop is raised."""
    from megatron_corew.utils.lifecycle import Interrupted, StopOnSignal

    stop = StopOnSignal().install()
    try:
        with stop.critical():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # would abandon the step outside a save
            saved = True
        assert saved and stop.signum == signal.SIGTERM
        with pytest.raises(Interrupted) as e:
            stop.check(5)
        assert (e.value.step, e.value.abandoned) == (5, False)
    finally:
        stop.uninstall()
    stop = StopOnSignal()  # the final save, after the loop: the handler is there only while it saves
    stop.step = 7
    with pytest.raises(Interrupted) as e:
        with stop.critical():
            os.kill(os.getpid(), signal.SIGINT)
            saved = "final"
    assert saved == "final" and (e.value.step, e.value.abandoned, e.value.exit_code) == (7, False, 130)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------------- dropped rows
@pytest.mark.e2e
def test_dropped_validation_rows_are_said_at_start_up(tiny_bundle, tmp_path):
    """--max-prompt-length drops over-long validation rows: the start-up says how many of which file, so the
    held-out score is never read as one on the whole set."""
    from helpers import run_train, tiny_run_args

    from megatron_corew.demo.tiny_task import generate_problems, verl_rows, write_parquet

    _, val = generate_problems(num_train=8, num_val=8, seed=3)
    rows = verl_rows(val, "test", "original")
    for k in (1, 4, 6):  # three rows far over the limit; the tiny task's prompts are a few dozen tokens
        rows[k]["prompt"][-1]["content"] += " " + "one plus one " * 300
    val_path = str(tmp_path / "val.parquet")
    write_parquet(rows, val_path)
    out = str(tmp_path / "run")
    extra = ["--val-data", val_path, "--max-prompt-length", "256"]
    proc = run_train(tiny_run_args(tiny_bundle, out, "gt", steps=0, extra=extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        f"--val-data {val_path}: 3 of 8 rows dropped (prompt longer than --max-prompt-length 256 tokens); "
        "5 rows are used" in proc.stdout
    ), proc.stdout[-3000:]


# ---------------------------------------------------------------------- tools pointed at a file
def _tool(script, *argv):
    proc = subprocess.run(
        [sys.executable, os.path.join("tools", script), *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO),
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.e2e
def test_tool_outputs_that_are_existing_files(setup, tmp_path):
    """--save / --output-dir / --output naming an existing file (or a path under one): one line, exit 2, before
    any work (a NotADirectoryError / FileExistsError traceback before)."""
    afile = str(tmp_path / "a_file")
    open(afile, "w").close()
    under = os.path.join(afile, "out")
    for save in (afile, under):
        line = _tool("convert_hf_to_megatron.py", "--hf-dir", setup["model"], "--save", save, "--overwrite")
        assert line.startswith(f"error: --save {save} ") and "not a directory" in line, line
    for out in (afile, under):
        line = _tool("evaluate.py", "--model", setup["model"], "--data", setup["good"], "--output-dir", out)
        assert line.startswith(f"error: --output-dir {out} ") and "not a directory" in line, line
    src = str(tmp_path / "gsm8k.jsonl")
    with open(src, "w") as f:
        f.write(json.dumps({"question": "1+1?", "answer": "one and one #### 2"}) + "\n")
    for out in (afile, os.path.join(afile, "test.parquet")):
        line = _tool("preprocess_data.py", "--dataset", "gsm8k", "--input", src, "--output", out)
        assert line.startswith(f"error: --output {afile} ") and "not a directory" in line, line


@pytest.mark.e2e
def test_convert_megatron_to_hf_on_a_truncated_checkpoint(setup, tmp_path):
    """A torn .distcp (a copy cut short): one line naming the checkpoint, not a bare EOFError."""
    ckpt = str(tmp_path / "ckpt")
    proc = subprocess.run(
        [sys.executable, "tools/convert_hf_to_megatron.py", "--hf-dir", setup["model"], "--save", ckpt],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in os.listdir(ckpt):
        if name.endswith(".distcp"):
            path = os.path.join(ckpt, name)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
    out = str(tmp_path / "hf")
    line = _tool("convert_megatron_to_hf.py", "--load", ckpt, "--save", out, "--no-progress-bar")
    assert line.startswith(f"error: {ckpt}: ") and "is truncated or corrupt" in line, line
    assert not os.path.exists(out)
