"""The label-free claim, checked the strict way: Co-rewarding-I, -II and -III raise the tiny model's held-out
(greedy, ground-truth graded) accuracy when the TRAINING files carry no ground truth at all.

The training parquet files are copied with every ``reward_model.ground_truth`` set to null, so no label can reach
a reward, an advantage or a metric; only the validation file keeps its labels (it is what grades the result).
Settings are the README main job's (examples/run_tiny.sh). Where the gain comes from on this task: the warm start
answers some question styles without ``\\boxed{}`` under greedy decoding (tiny_task.TERSE_OPENINGS); the vote over
the gradeable samples teaches the model to finish with a boxed answer, and keeps its arithmetic while doing so.
"""

import json
import os
import subprocess

import pyarrow.parquet as pq
import pytest
from helpers import REPO

ASSETS = os.path.join(REPO, "assets", "tiny")
pytestmark = pytest.mark.slow

MIN_GAIN = 0.05  # mean over SEEDS; 200 held-out questions, so 0.05 = 10 questions
# One seed is one draw: Co-rewarding-I gained +0.015 at seed 1234 and +0.15 at seed 7 (same code, same machine),
# so the claim is checked on the mean of two seeds, whose runs go side by side.
SEEDS = (1234, 7)


@pytest.fixture(scope="module")
def label_free_assets(tmp_path_factory):
    from megatron_corew.demo.tiny_bundle import is_complete, make_tiny_task

    if not is_complete(ASSETS):
        make_tiny_task(ASSETS)
    root = tmp_path_factory.mktemp("label_free")
    os.makedirs(root / "data")
    os.symlink(os.path.join(ASSETS, "model"), root / "model")
    for name in ("val.parquet", "val_rephrased.parquet"):
        os.symlink(os.path.join(ASSETS, "data", name), root / "data" / name)
    for name in ("train.parquet", "train_rephrased.parquet"):
        rows = pq.read_table(os.path.join(ASSETS, "data", name)).to_pylist()
        for r in rows:
            r["reward_model"]["ground_truth"] = None
        table = pq.read_table(os.path.join(ASSETS, "data", name))
        import pyarrow as pa

        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), str(root / "data" / name))
        assert all(
            r["reward_model"]["ground_truth"] is None for r in pq.read_table(str(root / "data" / name)).to_pylist()
        )
    return str(root)


@pytest.mark.parametrize("method", ["corewarding_1", "corewarding_2", "corewarding_3"])
def test_corewarding_raises_heldout_accuracy_without_labels(method, label_free_assets, tmp_path):
    runs = {}
    for seed in SEEDS:
        out = str(tmp_path / f"{method}-s{seed}")
        env = dict(os.environ, METHOD=method, ASSETS=label_free_assets, OUT=out, VAL_SAMPLES="0", SEED=str(seed))
        log = open(out + ".log", "w")
        proc = subprocess.Popen(["bash", "examples/run_tiny.sh"], cwd=REPO, env=env, stdout=log, stderr=log)
        runs[seed] = (out, proc, log)
    gains = {}
    for seed, (out, proc, log) in runs.items():
        rc = proc.wait(timeout=1500)
        log.close()
        assert rc == 0, open(out + ".log").read()[-6000:]
        rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
        train = [r for r in rows if "train/loss" in r]
        assert len(train) == 40
        # nothing label-derived was computed during training: there was nothing to compute it from
        label_derived = {"pseudo/label_acc", "pseudo/policy_vote_acc", "pseudo/rollout_gt_acc", "reward/gt_accuracy"}
        assert not any(k in label_derived for r in train for k in r)
        assert all("pseudo/label_nonempty" in r for r in train)  # the label-free statistics are still logged
        assert all(r["reward/mean"] > 0 for r in train[:5])  # the votes did produce rewards
        val = [r["val/accuracy"] for r in rows if "val/accuracy" in r]
        gains[seed] = (val[-1] - val[0], val)
    mean_gain = sum(g for g, _ in gains.values()) / len(gains)
    assert mean_gain >= MIN_GAIN, gains
    assert all(g > -MIN_GAIN for g, _ in gains.values()), gains  # and no seed collapsed
