"""--offload-train check under torchrun: the same steps twice in one process, once with an offload/onload cycle
of the trainer's state between every step and once without, plus the byte accounting while offloaded.

Each step is the loop's order of policy uses: onload -> EMA update (reads the fp32 main params) -> sequence
statistics -> GRPO step (KL on the anchor) -> weight export (digest) -> offload.

Usage: torchrun --nproc_per_node N tests/workers/offload_worker.py --model DIR --samples FILE --out FILE [--tp ...]
"""

import argparse
import json

from megatron_corew.policy import parallel


def _storage_bytes(tensors) -> int:
    """Device bytes of the distinct storages under ``tensors``, counted here without the offload module."""
    seen, total = set(), 0
    for t in tensors:
        s = t.untyped_storage()
        if s.nbytes() and s.data_ptr() not in seen:
            seen.add(s.data_ptr())
            total += s.nbytes()
    return total


def _state_tensors(trainer):
    """What the trainer holds, found by walking megatron's objects directly: params, main grads, DDP buffers,
    the torch optimizers' params (fp32 main copies) and their state tensors."""
    model, opt = trainer.model, trainer.optimizer
    out = {"params": [p for p in model.module.parameters()], "grads": [], "main_params": [], "optimizer_state": []}
    for b in model.buffers:
        out["grads"].append(b.grad_data)
        if b.param_data is not None:
            out["params"].append(b.param_data)
    out["grads"] += [p.main_grad for p in model.module.parameters() if getattr(p, "main_grad", None) is not None]
    for o in getattr(opt, "chained_optimizers", None) or [opt]:
        inner = o.optimizer
        out["main_params"] += [q for g in inner.param_groups for q in g["params"]]
        out["optimizer_state"] += [v for s in inner.state.values() for v in s.values() if hasattr(v, "untyped_storage")]
    return out


def run(a, offload: bool, samples):
    import torch

    from checkpoints_conversion.config import load_model_args
    from megatron_corew.policy.train_offload import TrainStateOffload
    from megatron_corew.policy.trainer import PolicyTrainer, TrainerConfig

    cfg = TrainerConfig(
        tp=a.tp,
        pp=a.pp,
        micro_batch_size=3,
        lr=1e-3,
        train_iters=10,
        lr_warmup_fraction=0.0,
        kl_coef=0.01,
        bf16=a.bf16,
        use_distributed_optimizer=a.distopt,
        need_anchor=True,
    )
    trainer = PolicyTrainer(load_model_args(a.model), cfg)
    n_local = sum(p.numel() for p in trainer.module.parameters())
    params = list(trainer.module.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)  # bf16 runs keep some (norms) in fp32
    low_precision = sum(p.numel() for p in params if p.dtype != torch.float32)  # these have fp32 main copies
    off = TrainStateOffload(trainer.model, trainer.optimizer) if offload else None
    out = {"metrics": [], "stats": [], "digests": [], "accounting": [], "n_local": n_local}
    for _ in range(a.steps):
        if off is not None:
            off.onload()
        trainer.ema_update_anchor(0.3)
        stats = trainer.sequence_stats(samples, want=("logp", "entropy"))
        out["stats"].append({str(k): [v["logp"].tolist(), v["entropy"]] for k, v in sorted(stats.items())})
        out["metrics"].append(trainer.train_step(samples))
        out["digests"].append([trainer.weights_digest("policy"), trainer.weights_digest("anchor")])
        if off is not None:
            before = {k: _storage_bytes(v) for k, v in _state_tensors(trainer).items()}
            off.offload()
            after = {k: _storage_bytes(v) for k, v in _state_tensors(trainer).items()}
            host = off.host_bytes()
            dp = trainer.ps.get_data_parallel_group() if a.distopt else None
            sharded = {}
            for key in ("main_params", "optimizer_state.exp_avg", "optimizer_state.exp_avg_sq"):
                t = torch.tensor([host.get(key, 0)], dtype=torch.float64)
                if dp is not None:
                    torch.distributed.all_reduce(t, group=dp)  # the distributed optimizer's shards, summed
                sharded[key] = int(t.item())
            padded = sum(
                b.param_data.numel() * b.param_data.element_size()
                for b in trainer.model.buffers
                if b.param_data is not None
            )
            failed_loudly = a.pp > 1  # a pipeline schedule that one stage leaves mid-way cannot be resumed
            try:
                if a.pp > 1:
                    raise RuntimeError("offloaded (not tried)")
                trainer.sequence_stats(samples)
            except RuntimeError as err:
                assert "offloaded" in str(err), err
                failed_loudly = True
            out["accounting"].append(
                {
                    "before": before,
                    "after": after,
                    "module_device_bytes": off.device_bytes(),
                    "host": host,
                    "sharded_host": sharded,
                    "expected_params": param_bytes,
                    "padded_param_buffer_bytes": padded,
                    "expected_main_params": low_precision * 4,
                    "failed_loudly": failed_loudly,
                }
            )
    if off is not None:
        off.onload()
    out["final"] = [trainer.weights_digest("policy"), trainer.weights_digest("anchor")]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--distopt", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()

    from megatron_corew.policy.trainer import TrainSample

    with open(a.samples) as f:
        rows = json.load(f)
    samples = [TrainSample(r["prompt"], r["response"], advantage=r["adv"], view=r["view"]) for r in rows]
    parallel.init_distributed(a.tp, a.pp)
    result = {"plain": run(a, False, samples), "offload": run(a, True, samples)}
    import torch.distributed as dist

    gathered = [None] * dist.get_world_size() if dist.is_initialized() else [result]
    if dist.is_initialized():
        dist.all_gather_object(
            gathered, {"n_local": result["plain"]["n_local"], "acc": result["offload"]["accounting"]}
        )
    result["ranks"] = gathered if dist.is_initialized() else [{"n_local": result["plain"]["n_local"]}]
    if parallel.is_rank0():
        with open(a.out, "w") as f:
            json.dump(result, f)
    parallel.destroy_distributed()


if __name__ == "__main__":
    main()
