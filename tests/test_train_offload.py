"""--offload-train: an offload/onload cycle of the trainer's state (weights, DDP gradient buffers, optimizer state)
between every step leaves training bitwise identical, and the state really leaves the device's accounting.

The reference is the same steps without offload (the state simply stays put) in the same worker process; the
expected host sizes are computed here from the HF config's shapes, not from the offload module's walk. Real
megatron-core on gloo (tests/workers/offload_worker.py), at TP=1, TP=2, PP=2, DP=2 with the distributed optimizer,
and bf16 (fp32 main params) with and without it. The loop's wiring is checked end to end in
tests/test_colocate.py."""

import json
import os

import pytest
import torch
from helpers import WORKERS, make_tiny_hf_model, random_samples, run_python_worker

from megatron_corew.policy.train_offload import TrainStateOffload


def expected_counts(model_dir: str, tp: int, pp: int) -> list[int]:
    """Parameters on each rank (TP-major within a stage), from config.json: megatron pads the vocabulary to a
    multiple of 128 x TP, splits matrices over TP, replicates norms, and gives each stage its layers."""
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    h, hd, nh, nkv, ffn = (
        c[k] for k in ("hidden_size", "head_dim", "num_attention_heads", "num_key_value_heads", "intermediate_size")
    )
    vp = -(-c["vocab_size"] // (128 * tp)) * 128 * tp
    layer_split = h * (nh * hd + 2 * nkv * hd) + nh * hd * h + 3 * h * ffn  # qkv, proj, gate+up, down
    layer_rep = 2 * h + 2 * hd  # input / pre-mlp norms, q / k norms (qwen3)
    layers = c["num_hidden_layers"] // pp
    out = []
    for stage in range(pp):
        split = layers * layer_split + (vp * h if stage == 0 else 0) + (vp * h if stage == pp - 1 else 0)
        rep = layers * layer_rep + (h if stage == pp - 1 else 0)
        out += [split // tp + rep] * tp
    return out


@pytest.fixture(scope="module")
def model_and_samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("offload")
    model = make_tiny_hf_model(str(root / "model"), "qwen3")
    samples = str(root / "samples.json")
    with open(samples, "w") as f:
        json.dump(random_samples(6), f)
    return model, samples


LAYOUTS = {
    "tp1": (1, []),
    "tp2": (2, ["--tp", "2"]),
    "pp2": (2, ["--pp", "2"]),
    "dp2_distopt": (2, ["--distopt"]),
    "bf16": (1, ["--bf16"]),
    "bf16_dp2_distopt": (2, ["--bf16", "--distopt"]),
}


@pytest.mark.dist
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_offload_cycle_is_bitwise_invisible_and_frees_the_device(model_and_samples, tmp_path, layout):
    model, samples = model_and_samples
    nproc, extra = LAYOUTS[layout]
    out = str(tmp_path / "r.json")
    run_python_worker(
        os.path.join(WORKERS, "offload_worker.py"),
        ["--model", model, "--samples", samples, "--out", out, *extra],
        nproc,
        timeout=600,
    )
    with open(out) as f:
        r = json.load(f)
    plain, off = r["plain"], r["offload"]
    # bitwise: every metric of every step, the statistics, the weights after every step and at the end
    assert off["metrics"] == plain["metrics"]
    assert off["stats"] == plain["stats"]
    assert off["digests"] == plain["digests"] and off["final"] == plain["final"]
    assert plain["metrics"][0]["loss"] != plain["metrics"][-1]["loss"]  # the steps did move the policy
    tp = 2 if "--tp" in extra else 1
    pp = 2 if "--pp" in extra else 1
    dp = nproc // (tp * pp)
    per_rank = expected_counts(model, tp, pp)
    bf16, distopt = "--bf16" in extra, "--distopt" in extra
    for k, rank in enumerate(r["ranks"]):
        n = per_rank[k // dp]  # ranks are DP-fastest within a (TP, PP) position
        assert rank["n_local"] == n, (k, rank["n_local"], n)
        for acc in rank["acc"]:
            # before: the state was on the device; after: not one byte of it (walked without the module)
            assert all(v > 0 for c, v in acc["before"].items() if c != "main_params" or bf16), acc["before"]
            assert acc["after"] == dict.fromkeys(acc["after"], 0)
            assert acc["module_device_bytes"] == dict.fromkeys(acc["module_device_bytes"], 0)
            assert acc["failed_loudly"]
            host, sharded = acc["host"], acc["sharded_host"]
            # parameter bytes from their counts and dtypes (bf16 runs keep the norms in fp32)
            assert acc["expected_params"] >= n * (2 if bf16 else 4) and (bf16 or acc["expected_params"] == n * 4)
            if distopt:  # the params live in megatron's padded contiguous buffers
                assert host["params"] == acc["padded_param_buffer_bytes"] >= acc["expected_params"]
            else:
                assert host["params"] == acc["expected_params"]
            assert host["grads"] == 0  # released, not copied: every step zeroes them first
            assert sharded["optimizer_state.exp_avg"] == sharded["optimizer_state.exp_avg_sq"] == n * 4
            # fp32 copies of the low-precision params only (an fp32 param is its own main copy)
            assert sharded["main_params"] == acc["expected_main_params"] and (acc["expected_main_params"] > 0) == bf16


def test_offload_unit_releases_restores_and_guards():
    """One process, no megatron: a stand-in DDP / optimizer pair with views into one flat buffer."""

    class Buffer:
        def __init__(self, params):
            self.param_data = None
            self.grad_data = torch.zeros(sum(p.numel() for p in params))
            k = 0
            for p in params:
                p.main_grad = self.grad_data[k : k + p.numel()].view_as(p)
                k += p.numel()

    class DDP:
        def __init__(self, module):
            self.module = module
            self.buffers = [Buffer(list(module.parameters()))]

    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3)
    ddp = DDP(module)
    opt = torch.optim.Adam(module.parameters(), lr=0.1)
    module(torch.ones(2, 4)).sum().backward()
    opt.step()
    w = module.weight.detach().clone()
    m = opt.state[module.weight]["exp_avg"].clone()
    ddp.buffers[0].grad_data.fill_(7.0)
    off = TrainStateOffload(ddp, opt)
    off.offload()
    assert off.device_bytes() == dict.fromkeys(off.device_bytes(), 0)
    assert off.host_bytes()["params"] == 15 * 4 and off.host_bytes()["optimizer_state.exp_avg"] == 15 * 4
    assert module.weight.untyped_storage().nbytes() == 0 and ddp.buffers[0].grad_data.untyped_storage().nbytes() == 0
    with pytest.raises(RuntimeError, match="offloaded"):
        module(torch.ones(1, 4))
    with off.resident():
        assert torch.equal(module.weight, w) and torch.equal(opt.state[module.weight]["exp_avg"], m)
        assert torch.equal(module.weight.main_grad, torch.zeros(3, 4))  # grads come back zeroed, views intact
    assert off.offloaded and off.device_bytes()["params"] == 0
    off.onload()
    assert not off.offloaded and off.device_bytes()["params"] == 15 * 4 and off.cycles == 2
