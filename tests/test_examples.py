"""The launch scripts under examples/: syntax, the commands they print for every method x model preset
(paper hyper-parameters, flags train_rl.py accepts), their input checks, the SLURM previews, and
two real CPU steps of every method through the CPU_TINY=1 variant."""

from __future__ import annotations

import glob
import json
import math
import os
import shlex
import subprocess

import pytest
from helpers import REPO, RunAhead, run_in_own_session

EXAMPLES = os.path.join(REPO, "examples")
METHODS = ["gt", "majority_vote", "self_certainty", "entropy", "corewarding_1", "corewarding_2", "corewarding_3"]
METHODS += ["random_reward", "semantic_entropy", "self_harmony"]
TEACHER = ("corewarding_2", "corewarding_3")
PRESETS = {
    "qwen2.5-7b": ("Qwen2.5-7B", 2),
    "qwen3-4b-base": ("Qwen3-4B-Base", 2),
    "qwen3-8b-base": ("Qwen3-8B-Base", 2),
    "llama3.2-3b-instruct": ("Llama-3.2-3B-Instruct", 1),
}
# launch.sh knobs: cleared so the caller's environment cannot change what the tests see
KNOBS = [
    "METHOD",
    "MODEL",
    "MODEL_PATH",
    "MODELS_DIR",
    "DATA_DIR",
    "TRAIN_DATA",
    "TRAIN_DATA_REPHRASED",
    "VAL_DATA",
    "NNODES",
    "GPUS_PER_NODE",
    "NPROC",
    "MASTER_ADDR",
    "MASTER_PORT",
    "RDZV_ID",
    "TP",
    "PP",
    "MICRO_BATCH",
    "MAX_TOKENS_PER_MB",
    "GLOBAL_BATCH",
    "N_SAMPLES",
    "PROMPT_LEN",
    "RESPONSE_LEN",
    "LR",
    "EPOCHS",
    "TEMPERATURE",
    "EVAL_INTERVAL",
    "SEED",
    "KL_COEF",
    "SAVE_INTERVAL",
    "OUT",
    "SAVE_DIR",
    "RESUME",
    "EXTRA_ARGS",
    "DRY_RUN",
    "ALLOW_MISSING",
    "CPU_TINY",
    "ASSETS",
    "STEPS",
    "MAX_VAL_SAMPLES",
    "REPO",
    "TRAIN_NODES",
    "SGLANG_TP",
    "ROLLOUT_ARGS",
    "HEAD_IP",
    "DRY_RUN_NODES",
    "TEACHER_ALPHA_START",
    "TEACHER_ALPHA_END",
    "ROLLOUT_BACKEND",
    "ROLLOUT_GPUS",
    "ROLLOUT_NODES",
    "SGLANG_MEM_FRACTION",
    "RAY_ADDRESS",
]


def script_env(**env) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in KNOBS and not k.startswith("SLURM_")}
    base.update({k: str(v) for k, v in env.items()})
    return base


def sh(script: str, *args, cwd=None, timeout=60, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", os.path.join(EXAMPLES, script), *args],
        capture_output=True,
        text=True,
        env=script_env(**env),
        cwd=cwd or REPO,
        timeout=timeout,
    )


def printed_command(stdout: str, marker: str = "[launch] ") -> list[str]:
    """argv of the train_rl.py command a script printed."""
    lines = [ln[len(marker) :] for ln in stdout.splitlines() if ln.startswith(marker) and "train_rl.py" in ln]
    assert lines, f"no printed command in:\n{stdout}"
    return shlex.split(lines[-1])


def trainer_args(argv: list[str]) -> list[str]:
    k = next(i for i, a in enumerate(argv) if a.endswith("train_rl.py"))
    return argv[k + 1 :]


def value(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {' '.join(argv)}"
    return argv[argv.index(flag) + 1]


def parse_trainer(argv: list[str]):
    """The printed flags through train_rl.py's own parser: every flag must exist there."""
    from megatron_corew.arguments import build_parser

    return build_parser().parse_args(trainer_args(argv))


# ---------------------------------------------------------------- syntax
SCRIPTS = sorted(
    glob.glob(os.path.join(EXAMPLES, "**", "*.sh"), recursive=True)
    + glob.glob(os.path.join(EXAMPLES, "**", "*.sbatch"), recursive=True)
)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: os.path.relpath(p, EXAMPLES))
def test_bash_syntax(path):
    proc = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_method_has_a_wrapper_and_strict_mode():
    for m in METHODS:
        assert os.path.exists(os.path.join(EXAMPLES, f"{m}.sh")), m
    own = [p for p in SCRIPTS if not p.endswith("run_tiny.sh")]
    assert os.path.join(EXAMPLES, "launch.sh") in own
    assert len([p for p in own if p.endswith(".sbatch")]) == 2
    for p in own:
        with open(p) as f:
            assert "set -euo pipefail" in f.read(), p


# ---------------------------------------------------------------- full-scale commands (dry run)
@pytest.mark.parametrize("model", list(PRESETS))
@pytest.mark.parametrize("method", METHODS)
def test_dry_run_paper_hyperparameters(method, model):
    proc = sh(f"{method}.sh", DRY_RUN=1, ALLOW_MISSING=1, MODEL=model)
    assert proc.returncode == 0, proc.stderr
    argv = printed_command(proc.stdout)
    hf_name, tp = PRESETS[model]
    assert argv[0] == "torchrun" and value(argv, "--nproc_per_node") == "8"
    assert value(argv, "--reward-method") == method
    assert value(argv, "--kl-loss-coef") == ("0.001" if method in TEACHER else "0.005")
    expected = {
        "--global-batch-size": "128",
        "--n-samples-per-prompt": "8",
        "--max-prompt-length": "512",
        "--max-response-length": "3072",
        "--lr": "3e-6",
        "--epochs": "3",
        "--rollout-temperature": "1.0",
        "--eval-interval": "10",
        "--tensor-model-parallel-size": str(tp),
        "--recompute-granularity": "full",
        "--hf-checkpoint": f"models/{hf_name}",
    }
    for flag, v in expected.items():
        assert value(argv, flag) == v, flag
    assert "--bf16" in argv and "--use-distributed-optimizer" in argv
    if method in TEACHER:
        assert value(argv, "--teacher-alpha-start") == "0.01" and value(argv, "--teacher-alpha-end") == "1e-5"
    else:
        assert "--teacher-alpha-start" not in argv
    assert ("--train-data-rephrased" in argv) == (method in ("corewarding_1", "corewarding_3"))
    args = parse_trainer(argv)
    assert args.reward_method == method and args.global_batch_size == 128 and args.lr == 3e-6
    assert args.kl_loss_coef == (0.001 if method in TEACHER else 0.005)


def test_launcher_overrides_and_passthrough(tmp_path):
    proc = sh(
        "launch.sh",
        "--save-interval",
        "5",
        METHOD="gt",
        MODEL="Qwen3-8B-Base",
        DRY_RUN=1,
        ALLOW_MISSING=1,
        NNODES=2,
        MASTER_ADDR="node7",
        TP=4,
        DATA_DIR="/d",
        MODEL_PATH="/m/q",
        EXTRA_ARGS="--entropy-coef 0.001",
        KL_COEF=0.01,
        OUT=str(tmp_path / "o"),
    )
    assert proc.returncode == 0, proc.stderr
    argv = printed_command(proc.stdout)
    assert argv[: argv.index("--rdzv-id")] == [
        "torchrun",
        "--nnodes",
        "2",
        "--nproc_per_node",
        "8",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "node7:29500",
    ]
    assert value(argv, "--tensor-model-parallel-size") == "4" and value(argv, "--kl-loss-coef") == "0.01"
    assert value(argv, "--train-data") == "/d/train.parquet" and value(argv, "--val-data") == "/d/val.parquet"
    assert value(argv, "--hf-checkpoint") == "/m/q" and value(argv, "--entropy-coef") == "0.001"
    assert argv[-2:] == ["--save-interval", "5"]  # positional args come last, so they win
    assert "DP=4" in proc.stdout  # 2 nodes x 8 GPUs / TP 4
    assert parse_trainer(argv).save_interval == 5


def test_auto_resume_from_save_dir(tmp_path):
    save = tmp_path / "ckpt"
    save.mkdir()
    proc = sh("gt.sh", DRY_RUN=1, ALLOW_MISSING=1, SAVE_DIR=str(save))
    assert "--load" not in printed_command(proc.stdout)
    (save / "latest").write_text("iter_0000020")
    argv = printed_command(sh("gt.sh", DRY_RUN=1, ALLOW_MISSING=1, SAVE_DIR=str(save)).stdout)
    assert value(argv, "--load") == str(save)
    argv = printed_command(sh("gt.sh", DRY_RUN=1, ALLOW_MISSING=1, SAVE_DIR=str(save), RESUME=0).stdout)
    assert "--load" not in argv


# ---------------------------------------------------------------- input checks
@pytest.fixture
def fake_inputs(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train", "train_rephrased", "val"):
        (data / f"{name}.parquet").write_text("")
    return {"MODEL_PATH": str(model), "DATA_DIR": str(data)}


def check_fails(proc, *needles):
    assert proc.returncode != 0, proc.stdout
    assert any(n in proc.stderr for n in needles), proc.stderr
    assert "train_rl.py" not in proc.stdout  # nothing was run or printed as if it would run


def test_unknown_method_or_model_fails(tmp_path):
    check_fails(sh("launch.sh", METHOD="grpo", DRY_RUN=1, ALLOW_MISSING=1), "unknown METHOD 'grpo'")
    check_fails(sh("launch.sh", DRY_RUN=1, ALLOW_MISSING=1), "METHOD is not set")
    check_fails(sh("gt.sh", MODEL="gpt-2", DRY_RUN=1, ALLOW_MISSING=1), "unknown MODEL preset 'gpt-2'")
    check_fails(sh("slurm/train_multinode.sbatch", METHOD="nope", DRY_RUN=1, ALLOW_MISSING=1), "unknown METHOD 'nope'")


def test_missing_model_path_fails(tmp_path, fake_inputs):
    missing = str(tmp_path / "nowhere")
    check_fails(
        sh("gt.sh", DRY_RUN=1, **{**fake_inputs, "MODEL_PATH": missing}),
        f"model directory not found: MODEL_PATH={missing}",
    )
    check_fails(
        sh("gt.sh", **{**fake_inputs, "MODEL_PATH": missing}), "model directory not found"
    )  # without DRY_RUN too
    check_fails(sh("gt.sh", DRY_RUN=1, **{**fake_inputs, "MODEL_PATH": str(tmp_path)}), "has no config.json")
    # ALLOW_MISSING alone (without DRY_RUN) does not skip the checks
    check_fails(sh("gt.sh", ALLOW_MISSING=1, **{**fake_inputs, "MODEL_PATH": missing}), "model directory not found")


def test_missing_data_fails(tmp_path, fake_inputs):
    os.remove(os.path.join(fake_inputs["DATA_DIR"], "train_rephrased.parquet"))
    check_fails(sh("corewarding_1.sh", DRY_RUN=1, **fake_inputs), "rephrased training data for corewarding_1")
    check_fails(sh("gt.sh", DRY_RUN=1, **{**fake_inputs, "DATA_DIR": str(tmp_path)}), "training data")
    os.remove(os.path.join(fake_inputs["DATA_DIR"], "val.parquet"))
    check_fails(sh("gt.sh", DRY_RUN=1, **fake_inputs), "validation data")


def test_gpu_and_layout_checks(fake_inputs):
    # this machine has no 64 GPUs on one node (or no nvidia-smi at all)
    check_fails(sh("gt.sh", DRY_RUN=1, GPUS_PER_NODE=64, **fake_inputs), "nvidia-smi not found", "GPU(s)")
    check_fails(sh("gt.sh", DRY_RUN=1, ALLOW_MISSING=1, TP=3), "not divisible by TP*PP=3")


# ---------------------------------------------------------------- SLURM previews
def test_slurm_multinode_preview():
    proc = sh(
        "slurm/train_multinode.sbatch",
        METHOD="corewarding_2",
        MODEL="qwen3-4b-base",
        DRY_RUN=1,
        ALLOW_MISSING=1,
        DRY_RUN_NODES="gpu-a gpu-b gpu-c",
    )
    assert proc.returncode == 0, proc.stderr
    argv = printed_command(proc.stdout)
    assert value(argv, "--nnodes") == "3" and value(argv, "--rdzv-backend") == "c10d"
    assert value(argv, "--rdzv-endpoint") == "gpu-a:29500"
    assert value(argv, "--reward-method") == "corewarding_2" and value(argv, "--kl-loss-coef") == "0.001"
    assert "srun --nodes 3 --ntasks-per-node 1" in proc.stdout
    check_fails(sh("slurm/train_multinode.sbatch", METHOD="gt", DRY_RUN=1), "not inside a SLURM allocation")


def test_slurm_ray_fleet_preview():
    proc = sh(
        "slurm/ray_rollout_fleet.sbatch",
        METHOD="gt",
        DRY_RUN=1,
        ALLOW_MISSING=1,
        DRY_RUN_NODES="h w1 w2 w3",
        TRAIN_NODES=2,
        SGLANG_TP=2,
        EXTRA_ARGS="--sglang-mem-fraction-static 0.8",
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "ray start --head --node-ip-address h --port 6379 --num-gpus 0" in out
    assert "-w w2,w3" in out and "ray start --address h:6379 --num-gpus 8" in out
    argv = printed_command(out)
    assert value(argv, "--rollout-backend") == "sglang" and value(argv, "--sglang-num-engines") == "8"
    assert value(argv, "--nnodes") == "2" and value(argv, "--rdzv-endpoint") == "h:29500"
    assert value(argv, "--sglang-mem-fraction-static") == "0.8"
    check_fails(
        sh("slurm/ray_rollout_fleet.sbatch", METHOD="gt", DRY_RUN=1, ALLOW_MISSING=1, DRY_RUN_NODES="h"),
        "at least one more node",
    )


# ---------------------------------------------------------------- the tiny CPU variant, for real
def test_cpu_tiny_dry_run():
    proc = sh("corewarding_1.sh", CPU_TINY=1, DRY_RUN=1, ALLOW_MISSING=1, ASSETS="/nonexistent/tiny")
    assert proc.returncode == 0, proc.stderr
    argv = printed_command(proc.stdout)
    assert argv[0] == "python" and "torchrun" not in argv
    for flag, v in {
        "--global-batch-size": "4",
        "--n-samples-per-prompt": "4",
        "--max-response-length": "48",
        "--train-iters": "2",
        "--hf-checkpoint": "/nonexistent/tiny/model",
        "--train-data-rephrased": "/nonexistent/tiny/data/train_rephrased.parquet",
    }.items():
        assert value(argv, flag) == v, flag
    assert "--bf16" not in argv
    parse_trainer(argv)


@pytest.fixture
def small_bundle(make_bundle):
    return make_bundle(num_train=16, num_val=4)


def run_script(script: str, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    """Like helpers.run_train: own session, output through files, the whole group killed at the end."""
    return run_in_own_session(["bash", os.path.join(EXAMPLES, script)], script_env(OMP_NUM_THREADS=1, **env), timeout)


_TINY_RUNS = RunAhead("test_cpu_tiny_runs_two_steps", "method")


@pytest.mark.e2e
@pytest.mark.parametrize("method", METHODS)
def test_cpu_tiny_runs_two_steps(method, small_bundle, tmp_path_factory, request):
    def start(m):
        out = tmp_path_factory.mktemp(m) / "run"
        proc = run_script(
            f"{m}.sh",
            CPU_TINY=1,
            MODEL_PATH=small_bundle["model"],
            TRAIN_DATA=small_bundle["train"],
            TRAIN_DATA_REPHRASED=small_bundle["train_rephrased"],
            VAL_DATA=small_bundle["val"],
            OUT=str(out),
        )
        return proc, out

    proc, out = _TINY_RUNS.result(request, str, start)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    argv = printed_command(proc.stdout)
    assert value(argv, "--reward-method") == method
    with open(out / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    steps = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert math.isfinite(r["train/loss"]) and math.isfinite(r["reward/mean"])
        if method not in ("self_certainty", "entropy"):  # those two rewards are raw log-prob statistics
            assert 0.0 <= r["reward/mean"] <= 1.0
    assert any("val/accuracy" in r for r in rows)
    assert glob.glob(str(out / "tensorboard" / "events.out.tfevents.*"))


# ---------------------------------------------------------------- rollout placement (dry run; GPUS_PER_NODE simulates)
def placement(stdout: str) -> str:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("[launch] placement: ")]
    assert len(lines) == 1, stdout
    return lines[0]


def test_placement_cpu_tiny_is_the_embedded_engine():
    proc = sh("gt.sh", CPU_TINY=1, DRY_RUN=1, ALLOW_MISSING=1, ASSETS="/nonexistent/tiny")
    assert proc.returncode == 0, proc.stderr
    assert "CPU, 1 rank(s) train; rollouts from the embedded HF engine inside rank 0" in placement(proc.stdout)
    args = parse_trainer(printed_command(proc.stdout))
    assert args.rollout_backend == "embedded" and not args.colocate


@pytest.mark.parametrize("sglang_tp,engines,ranges", [(None, 2, "GPUs 0-1, 2-3"), ("1", 4, "GPUs 0, 1, 2, 3")])
def test_placement_one_node_colocated_by_default(sglang_tp, engines, ranges):
    env = dict(METHOD="corewarding_2", DRY_RUN=1, ALLOW_MISSING=1, GPUS_PER_NODE=4, TP=2)
    if sglang_tp:
        env["SGLANG_TP"] = sglang_tp
    proc = sh("launch.sh", **env)
    assert proc.returncode == 0, proc.stderr
    where = placement(proc.stdout)
    assert f"colocated on node 0: GPUs 0-3 train and serve {engines} SGLang engine(s)" in where and ranges in where
    assert "mem fraction 0.7" in where and "--colocate" in where
    argv = printed_command(proc.stdout)
    assert value(argv, "--nproc_per_node") == "4"
    args = parse_trainer(argv)
    assert args.rollout_backend == "sglang" and args.colocate and args.anchor_cpu_offload
    assert args.sglang_num_engines == engines and args.sglang_tp_size == (sglang_tp or "2")
    assert args.sglang_mem_fraction_static == "0.7" and args.sglang_base_gpu_id == 0


def test_placement_disaggregated_on_one_node():
    proc = sh("gt.sh", DRY_RUN=1, ALLOW_MISSING=1, GPUS_PER_NODE=8, TP=2, ROLLOUT_GPUS=2, SGLANG_TP=1)
    assert proc.returncode == 0, proc.stderr
    where = placement(proc.stdout)
    assert "disaggregated on one node: GPUs 0-5 train; GPUs 6-7 serve 2 SGLang engine(s) of TP 1" in where
    assert "DP=3" in proc.stdout
    argv = printed_command(proc.stdout)
    assert value(argv, "--nproc_per_node") == "6"
    args = parse_trainer(argv)
    assert not args.colocate and args.sglang_base_gpu_id == 6 and args.sglang_num_engines == 2
    assert args.sglang_mem_fraction_static == "0.85"


def test_placement_disaggregated_over_nodes():
    proc = sh("gt.sh", DRY_RUN=1, ALLOW_MISSING=1, NNODES=4, ROLLOUT_NODES=1, RAY_ADDRESS="h:6379")
    assert proc.returncode == 0, proc.stderr
    assert "nodes 0-2 train (24 GPUs); the last 1 node(s) serve 4 SGLang engine(s) of TP 2" in placement(proc.stdout)
    argv = printed_command(proc.stdout)
    assert value(argv, "--nnodes") == "3"
    args = parse_trainer(argv)
    assert args.sglang_use_ray and args.sglang_ray_address == "h:6379" and args.sglang_weight_sync == "distributed"
    assert not args.colocate


def test_placement_user_rollout_flags_win_and_bad_splits_fail():
    proc = sh("gt.sh", DRY_RUN=1, ALLOW_MISSING=1, EXTRA_ARGS="--rollout-backend embedded")
    assert "as the given rollout flags say" in placement(proc.stdout)
    args = parse_trainer(printed_command(proc.stdout))
    assert args.rollout_backend == "embedded" and not args.colocate and args.sglang_num_engines == 1
    embedded = sh("gt.sh", DRY_RUN=1, ALLOW_MISSING=1, ROLLOUT_BACKEND="embedded")
    assert not parse_trainer(printed_command(embedded.stdout)).colocate
    check_fails(sh("gt.sh", DRY_RUN=1, ALLOW_MISSING=1, ROLLOUT_GPUS=8), "leaves no training GPU")
    check_fails(sh("gt.sh", DRY_RUN=1, ALLOW_MISSING=1, ROLLOUT_GPUS=3, SGLANG_TP=2), "does not divide ROLLOUT_GPUS=3")
    check_fails(sh("gt.sh", DRY_RUN=1, ALLOW_MISSING=1, ROLLOUT_GPUS=2, TP=4, SGLANG_TP=1), "not divisible by TP*PP=4")
    check_fails(sh("gt.sh", DRY_RUN=1, ALLOW_MISSING=1, ROLLOUT_BACKEND="vllm"), "unknown ROLLOUT_BACKEND 'vllm'")
