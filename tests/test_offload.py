"""--anchor-cpu-offload: the fp32 EMA teacher / KL reference lives in host memory between its uses.

Checked against the same runs without offload (an independent code path: the anchor simply stays put): every
per-step metric and the final policy and teacher weights are bitwise equal, at TP=1 and TP=2, through a
checkpoint save and a resume, on the warm tiny model (every compared step trains a non-zero policy gradient);
between steps the anchor holds no device memory."""

import json
import os

import pytest
import torch
from helpers import assert_real_signal, read_metrics, run_train, tiny_run_args

from megatron_corew.policy.offload import HostOffload


def test_host_offload_releases_restores_and_writes_back():
    m = torch.nn.Linear(4, 3)
    w0 = m.weight.detach().clone()
    off = HostOffload(m)
    assert off.device_bytes == 0 and m.weight.numel() == 0 and off.host_bytes == (12 + 3) * 4
    with off.resident():
        with off.resident():  # nested: still resident inside
            assert torch.equal(m.weight, w0)
        assert torch.equal(m.weight, w0)
        m.weight.data.mul_(2)  # a change in a read-only block is dropped...
    with off.resident():
        assert torch.equal(m.weight, w0)
    with off.resident(modify=True):  # ...and kept in a modify block
        m.weight.data.add_(1)
    assert off.device_bytes == 0
    with off.resident():
        assert torch.equal(m.weight, w0 + 1)
    with pytest.raises(RuntimeError):
        m(torch.ones(1, 4))  # released weights fail loudly


def _run(bundle, out, steps, extra=(), nproc=1):
    args = tiny_run_args(bundle, out, steps=steps, extra=extra)
    if nproc > 1:
        args += ["--tensor-model-parallel-size", str(nproc)]
    proc = run_train(args, nproc=nproc)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [r for r in read_metrics(out) if "train/loss" in r]
    return rows, json.load(open(os.path.join(out, "result.json")))


def _same(rows_a, rows_b):
    keys = [k for k in rows_a[0] if k.startswith(("train/", "reward/", "pseudo/")) and k != "train/teacher_alpha"]
    return [[r[k] for k in keys] for r in rows_a] == [[r[k] for k in keys] for r in rows_b]


@pytest.mark.e2e
@pytest.mark.parametrize("nproc", [1, pytest.param(2, marks=pytest.mark.dist)], ids=["tp1", "tp2"])
def test_offload_is_bitwise_invisible(warm_bundle, tmp_path, nproc):
    ckpt = str(tmp_path / "ckpt")
    off_rows, off = _run(
        warm_bundle, str(tmp_path / "off"), 3, ["--anchor-cpu-offload", "--save", ckpt, "--save-interval", "1"], nproc
    )
    on_rows, on = _run(warm_bundle, str(tmp_path / "on"), 3, [], nproc)
    assert_real_signal(on_rows, (1, 2, 3))
    assert _same(off_rows, on_rows)
    assert (off["policy_sha256"], off["anchor_sha256"]) == (on["policy_sha256"], on["anchor_sha256"])
    assert all(r["mem/anchor_device_bytes"] == 0 for r in off_rows)
    assert all(r["mem/anchor_device_bytes"] > 0 for r in on_rows)
    # resume with offload from the offloaded run's step-2 checkpoint == the plain run's step 3
    os.remove(os.path.join(ckpt, "iter_0000003", "state.pt"))  # make step 2 the newest complete checkpoint
    with open(os.path.join(ckpt, "latest"), "w") as f:
        f.write("iter_0000002\n")
    res_rows, res = _run(warm_bundle, str(tmp_path / "resumed"), 3, ["--anchor-cpu-offload", "--load", ckpt], nproc)
    assert _same(res_rows[-1:], on_rows[-1:])
    assert (res["policy_sha256"], res["anchor_sha256"]) == (on["policy_sha256"], on["anchor_sha256"])
