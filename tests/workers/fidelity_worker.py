"""The EMA teacher's source and the weight export after the optimizer step, under torchrun (tests/test_fidelity.py).

Three trainers on the same model and samples, in one process group: A with the flags under test (--bf16,
--distopt, --overlap), B the same without --overlap, and R with megatron's plain optimizer (its fp32 main
parameters are whole on every rank). Each step trains all three, moves A's teacher one EMA step, and moves
float64 references from R's fp32 main parameters and from R's (possibly bf16) weights. Rank 0 writes, reduced
over all ranks with max: A vs B policy parameters on every rank, A's HF export vs B's, A's teacher vs the
float64 reference of the fp32 source, and that reference vs the one of the bf16 weights.

Usage: torchrun --nproc_per_node N tests/workers/fidelity_worker.py --model DIR --samples FILE --out FILE [--bf16]
       [--distopt] [--overlap]; with --wd-report default|all it only writes each parameter's weight decay.
"""

import argparse
import json

import torch
import torch.distributed as dist

from megatron_corew.policy import parallel


def _samples(path):
    from megatron_corew.policy.trainer import TrainSample

    rows = json.load(open(path))
    return [TrainSample(r["prompt"], r["response"], advantage=r["adv"]) for r in rows]


def _fp32_mains(trainer) -> dict:
    """R's fp32 main parameter per policy parameter name, read straight from megatron's Float16Optimizer."""
    opts = getattr(trainer.optimizer, "chained_optimizers", [trainer.optimizer])
    main_of = {}
    for opt in opts:
        for models, mains in zip(getattr(opt, "float16_groups", []), getattr(opt, "fp32_from_float16_groups", [])):
            main_of.update({id(p): m for p, m in zip(models, mains)})
    return {n: main_of.get(id(p), p).detach().double().clone() for n, p in trainer.module.named_parameters()}


def _max_all(x: float) -> float:
    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--distopt", action="store_true")
    ap.add_argument("--overlap", action="store_true")
    ap.add_argument("--wd-report", choices=("default", "all"), help="only write {param name: its weight decay}")
    a = ap.parse_args()

    from checkpoints_conversion.config import load_model_args
    from megatron_corew.policy.trainer import PolicyTrainer, TrainerConfig
    from megatron_corew.policy.weights import hf_state_dict

    parallel.init_distributed(1, 1)
    args = load_model_args(a.model)

    def trainer(distopt, overlap):
        cfg = TrainerConfig(
            micro_batch_size=2,
            lr=1e-2,  # large steps: a stale shard or a bf16 source is far outside the tolerance
            train_iters=10,
            lr_warmup_fraction=0.0,
            clip_grad=0.0,
            bf16=a.bf16,
            use_distributed_optimizer=distopt,
            overlap_param_gather=overlap,
            need_anchor=True,
        )
        return PolicyTrainer(args, cfg)

    if a.wd_report:
        t = PolicyTrainer(args, TrainerConfig(weight_decay=0.01, weight_decay_all_params=a.wd_report == "all"))
        wd = {id(p): g["weight_decay"] for g in t.optimizer.param_groups for p in g["params"]}
        with open(a.out, "w") as f:
            json.dump({n: [list(p.shape), wd[id(p)]] for n, p in t.module.named_parameters()}, f)
        return

    A, B, R = trainer(a.distopt, a.overlap), trainer(a.distopt, False), trainer(False, False)
    samples = _samples(a.samples)
    ref = {n: p.detach().double().clone() for n, p in R.anchor.named_parameters()}
    ref_bf16 = {n: v.clone() for n, v in ref.items()}
    res = {"policy_diff": 0.0, "export_diff": 0.0, "teacher_diff": 0.0, "bf16_source_gap": 0.0}
    for alpha in (0.5, 0.3, 0.2):
        for t in (A, B, R):
            t.train_step(samples)
        A.ema_update_anchor(alpha)
        mains = _fp32_mains(R)
        for n, p in R.module.named_parameters():
            ref[n] = alpha * mains[n] + (1 - alpha) * ref[n]
            ref_bf16[n] = alpha * p.detach().double() + (1 - alpha) * ref_bf16[n]
        pa, pb = dict(A.module.named_parameters()), dict(B.module.named_parameters())
        res["policy_diff"] = max(res["policy_diff"], max(float((pa[n] - pb[n]).abs().max()) for n in pa))
        ea, eb = hf_state_dict(A.model, args), hf_state_dict(B.model, args)
        if ea is not None:
            res["export_diff"] = max(res["export_diff"], max(float((ea[n] - eb[n]).abs().max()) for n in ea))
        teacher = dict(A.anchor.named_parameters())
        res["teacher_diff"] = max(
            res["teacher_diff"], max(float((teacher[n].double() - ref[n]).abs().max()) for n in ref)
        )
        res["bf16_source_gap"] = max(
            res["bf16_source_gap"], max(float((ref_bf16[n] - ref[n]).abs().max()) for n in ref)
        )
    res["teacher_policy_gap"] = max(float((teacher[n].double() - pa[n].double()).abs().max()) for n in ref)
    res["max_abs_ref"] = max(float(v.abs().max()) for v in ref.values())
    res = {k: _max_all(v) for k, v in res.items()}
    if parallel.is_rank0():
        with open(a.out, "w") as f:
            json.dump(res, f)
    parallel.destroy_distributed()


if __name__ == "__main__":
    main()
