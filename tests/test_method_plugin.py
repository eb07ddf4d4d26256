"""A new reward method is one module plus one registration: this file is that module.

Imported by ``train_rl.py --reward-plugin tests.test_method_plugin`` it registers ``toy_length``, a method nothing
in the package knows about (no edit to train.py or the flags), and the test trains two steps with it.
"""

import json
import os

import pytest

from megatron_corew.rewards import MethodSpec, register


def shorter_is_better(groups, options):
    """Toy reward: 1 for a boxed answer, minus a small length term (label-free, no ground truth)."""
    return [[(1.0 if a else 0.0) - 0.01 * len(a) for a in g.answers] for g in groups]


TOY = register(MethodSpec("toy_length", shorter_is_better, kl_coef=0.0, summary="test-only toy method"))


def test_registration_adds_the_method_with_its_traits():
    from megatron_corew.rewards.spec import Group, ScoreOptions, get_method, method_names

    assert "toy_length" in method_names() and get_method("toy_length") is TOY
    assert not TOY.needs_ground_truth and not TOY.needs_anchor_model and TOY.kl_coef == 0.0
    rewards = TOY.rewards([Group(answers=["12", "", "7"]), Group(answers=["100"])], ScoreOptions())
    assert rewards == [[pytest.approx(0.98), 0.0, pytest.approx(0.99)], [pytest.approx(0.97)]]  # 1 - 0.01 * len
    with pytest.raises(ValueError, match="toy_lenght"):
        get_method("toy_lenght")


@pytest.mark.e2e
def test_registered_method_trains_two_steps_without_touching_the_loop(tmp_path, tiny_bundle):
    from helpers import read_metrics, run_train  # here: the trainer imports this file as a plugin

    bundle = tiny_bundle
    out = str(tmp_path / "run")
    proc = run_train(
        [
            "--hf-checkpoint",
            bundle["model"],
            "--train-data",
            bundle["train"],
            "--reward-plugin",
            "tests.test_method_plugin",
            "--reward-method",
            "toy_length",
            "--global-batch-size",
            "4",
            "--n-samples-per-prompt",
            "2",
            "--max-prompt-length",
            "128",
            "--max-response-length",
            "8",
            "--train-iters",
            "2",
            "--lr",
            "1e-3",
            "--output-dir",
            out,
            "--rollout-dump",
            "--no-progress-bar",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert "train/kl" in rows[0] and "mem/anchor_device_bytes" not in rows[0]  # kl_coef 0, no teacher: no anchor
    with open(os.path.join(out, "rollouts", "step_000001.jsonl")) as f:
        dumped = [json.loads(line) for line in f]
    assert len(dumped) == 8
    for d in dumped:  # the reward in the dump is the toy's, recomputed here from the dumped response
        from megatron_corew.rewards.grading import extract_boxed_answer

        answer = extract_boxed_answer(d["response"])
        assert abs(d["reward"] - ((1.0 if answer else 0.0) - 0.01 * len(answer))) < 1e-12


def test_unknown_plugin_is_one_clear_error(make_bundle):
    from helpers import run_train

    bundle = make_bundle(num_train=4, num_val=1)
    proc = run_train(
        [
            "--hf-checkpoint",
            bundle["model"],
            "--train-data",
            bundle["train"],
            "--reward-plugin",
            "no_such_module_here",
            "--reward-method",
            "toy_length",
        ]
    )
    assert proc.returncode != 0
    assert "--reward-plugin no_such_module_here" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------- plugins that break the contract
CLASH = "from megatron_corew.rewards import MethodSpec, register\nregister(MethodSpec('gt', lambda g, o: []))\n"
RAISES_ON_IMPORT = "raise KeyError('MODEL_PATH')\n"
SHORT = (
    "from megatron_corew.rewards import MethodSpec, register\n"
    "def first_only(groups, options):\n"
    "    return [[1.0] for g in groups]  # one reward per group, not per rollout\n"
    "def broken(groups, options):\n"
    "    return 1 / 0\n"
    "register(MethodSpec('short_rewards', first_only, kl_coef=0.0))\n"
    "register(MethodSpec('broken_rewards', broken, kl_coef=0.0))\n"
)


def _plugin(tmp_path, monkeypatch, name, code):
    (tmp_path / f"{name}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.mark.parametrize(
    "name,code,line",
    [
        (
            "clash_plugin",
            CLASH,
            "error: --reward-plugin clash_plugin: reward method 'gt' already exists (built in); register the new one "
            "under another name",
        ),
        (
            "raising_plugin",
            RAISES_ON_IMPORT,
            "error: --reward-plugin raising_plugin: importing it raised KeyError: 'MODEL_PATH'",
        ),
    ],
)
def test_plugin_that_cannot_load_is_one_line(tmp_path, monkeypatch, capsys, name, code, line):
    from megatron_corew.rewards import get_method, load_plugins

    _plugin(tmp_path, monkeypatch, name, code)
    with pytest.raises(SystemExit) as e:
        load_plugins([name])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]
    assert get_method("gt").rewards.__module__ == "megatron_corew.rewards.methods"  # the built-in is kept


def test_plugin_rewards_that_break_the_contract_name_the_plugin(tmp_path, monkeypatch):
    from megatron_corew.rewards import compute_rewards, get_method
    from megatron_corew.rewards.spec import Group, RewardMethodError

    _plugin(tmp_path, monkeypatch, "short_plugin", SHORT)
    import short_plugin  # noqa: F401  registers the two methods

    groups = [Group(answers=["1", "2", "3"]), Group(answers=["4", "5", "6"])]
    with pytest.raises(RewardMethodError) as e:
        compute_rewards(get_method("short_rewards"), groups)
    assert str(e.value) == (
        "reward method short_rewards (--reward-plugin short_plugin) returned 1 rewards for group 0, which has 3 "
        "rollouts; it must return one per rollout"
    )
    with pytest.raises(RewardMethodError) as e:
        compute_rewards(get_method("broken_rewards"), groups)
    assert str(e.value) == (
        "reward method broken_rewards (--reward-plugin short_plugin) raised ZeroDivisionError: division by zero"
    )


@pytest.mark.e2e
def test_plugin_returning_too_few_rewards_stops_at_the_first_step(tmp_path, tiny_bundle):
    from helpers import REPO, launch_command, run_in_own_session, tiny_run_args

    (tmp_path / "short_plugin.py").write_text(SHORT)
    args = tiny_run_args(tiny_bundle, str(tmp_path / "run"), "short_rewards", steps=2)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}:{tmp_path}")
    proc = run_in_own_session(launch_command("train_rl.py", args + ["--reward-plugin", "short_plugin"], 1), env, 600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: reward method short_rewards (--reward-plugin short_plugin) returned 1 rewards for group 0, which has "
        "4 rollouts; it must return one per rollout"
    )
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl") or not open(tmp_path / "run" / "metrics.jsonl").read()
