"""The warm tiny bundle (tests/helpers.py make_warm_bundle) and the check the equality tests lean on
(assert_real_signal): a run on the random tiny bundle trains no policy gradient (its reward is identically 0) and
is refused; a label-free run on the warm one earns varying rewards and a non-zero policy gradient."""

import pytest
from helpers import assert_real_signal, read_metrics, run_train, tiny_run_args


def _row(step, zero_var=0.25, adv=0.5, grad=1.0):
    return {"step": step, "reward/zero_variance_groups": zero_var, "train/adv_abs_mean": adv, "train/grad_norm": grad}


def test_assert_real_signal_by_hand():
    assert_real_signal([_row(1), _row(2), {"step": 2, "val/accuracy": 0.5}], (1, 2))  # validation rows merge in
    for bad in (_row(2, zero_var=1.0), _row(2, adv=0.0), _row(2, grad=0.0)):
        with pytest.raises(AssertionError):
            assert_real_signal([_row(1), bad], (1, 2))
    with pytest.raises(AssertionError, match="step 3 not in the metrics"):
        assert_real_signal([_row(1), _row(2)], (1, 2, 3))


@pytest.mark.e2e
def test_random_bundle_is_refused_and_warm_bundle_carries_a_gradient(tiny_bundle, warm_bundle, tmp_path):
    cold, warm = str(tmp_path / "cold"), str(tmp_path / "warm")
    proc = run_train(tiny_run_args(tiny_bundle, cold, "gt", steps=1))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = [r for r in read_metrics(cold) if "train/loss" in r]
    assert row["reward/mean"] == 0.0 and row["reward/zero_variance_groups"] == 1.0 and row["train/adv_abs_mean"] == 0
    with pytest.raises(AssertionError, match="every group's reward was constant"):
        assert_real_signal(read_metrics(cold), (1,))
    proc = run_train(tiny_run_args(warm_bundle, warm, "majority_vote", steps=2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_real_signal(read_metrics(warm), (1, 2))
