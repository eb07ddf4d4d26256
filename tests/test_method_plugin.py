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
