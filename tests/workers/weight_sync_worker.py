"""Sharded weight sync under torchrun into real SGLang servers (started by the test, attached here).

Usage: torchrun --nproc_per_node N tests/workers/weight_sync_worker.py --model DIR --samples JSON --out FILE
           --policy-urls URL [URL ...] [--teacher-url URL] --tp T --pp P [--weight-sync tensor|distributed]

Two real megatron steps, each followed by an EMA teacher update (alpha 1e-2) and a sharded teacher push into the
bf16 engine (the second one with delta sync), then a funnel policy push (the old layout, counted the same way) and
a sharded policy push into the two policy engines. Rank 0 saves an HF export of the trained policy and compares
the servers' greedy ids and log-probs with transformers on it; the per-rank rows (names and bytes each rank sent) go
to the json. Without a teacher (the ``distributed`` test) a sharded policy push of step 1 replaces the teacher
pushes.
"""

import argparse
import json
import os

from megatron_corew.policy import parallel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--policy-urls", nargs="+", required=True)
    ap.add_argument("--teacher-url", default=None, help="omitted: no teacher pushes")
    ap.add_argument("--weight-sync", default="tensor", choices=["tensor", "distributed"])
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    a = ap.parse_args()

    from checkpoints_conversion.config import load_model_args
    from checkpoints_conversion.hf_io import write_hf_checkpoint
    from megatron_corew.policy.trainer import PolicyTrainer, TrainerConfig, TrainSample
    from megatron_corew.policy.weights import hf_state_dict
    from megatron_corew.rollout.base import SamplingParams
    from megatron_corew.rollout.sglang.engine import SGLangEngine
    from megatron_corew.rollout.sglang.fleet import AttachedFleet
    from megatron_corew.rollout.sglang.http import HTTPConfig

    parallel.init_distributed(a.tp, a.pp)
    args = load_model_args(a.model)
    cfg = TrainerConfig(
        tp=a.tp, pp=a.pp, micro_batch_size=8, lr=1e-2, train_iters=10, lr_warmup_fraction=0.0, need_anchor=True
    )
    trainer = PolicyTrainer(args, cfg)
    rows = json.load(open(a.samples))
    samples = [TrainSample(r["prompt"], r["response"], advantage=r["adv"]) for r in rows]
    policy = teacher = None
    if parallel.is_rank0():
        http = HTTPConfig()
        policy = SGLangEngine(
            AttachedFleet(a.policy_urls, http), model_path=a.model, eos_token_ids=[2], weight_sync=a.weight_sync
        )
    if parallel.is_rank0() and a.teacher_url:
        teacher = SGLangEngine(
            AttachedFleet([a.teacher_url], http),
            model_path=a.model,
            eos_token_ids=[2],
            role="teacher",
            weight_sync="tensor",
            delta=True,
        )
    res = {}
    trainer.train_step(samples)
    trainer.ema_update_anchor(1e-2)
    if a.teacher_url:
        res["teacher_full"] = trainer.push_weights(teacher, 1, which="anchor")
    else:  # distributed: a sharded push of step 1's weights first (forms the groups; step 2 reuses them)
        res["policy_step1"] = trainer.push_weights(policy, 1)
    trainer.train_step(samples)
    trainer.ema_update_anchor(1e-2)
    if a.teacher_url:
        res["teacher_delta"] = trainer.push_weights(teacher, 2, which="anchor")
    if policy is not None:
        policy.layout = "funnel"
    res["policy_funnel"] = trainer.push_weights(policy, 2)
    if policy is not None:
        policy.layout = "sharded"
    res["policy_sharded"] = trainer.push_weights(policy, 2)  # what the servers hold at the end
    state = hf_state_dict(trainer.model, args)
    teacher_state = hf_state_dict(trainer.anchor, args)
    if parallel.is_rank0():
        export = os.path.join(os.path.dirname(a.out), "trained_policy_hf")
        write_hf_checkpoint(export, state.items(), config_dir=a.model)
        teacher_export = os.path.join(os.path.dirname(a.out), "teacher_hf")
        write_hf_checkpoint(teacher_export, teacher_state.items(), config_dir=a.model)
        res["tensor_bytes_fp32"] = {k: v.numel() * v.element_size() for k, v in state.items()}
        prompts = [r["prompt"] for r in rows[:4]]
        p = SamplingParams(max_new_tokens=12, greedy=True)
        gens = policy.generate(prompts, p)
        res["served"] = [{"ids": g.response_ids, "logprobs": g.logprobs, "tag": g.meta["weight_tag"]} for g in gens]
        if teacher is not None:
            res["teacher_served"] = [
                {"ids": g.response_ids, "logprobs": g.logprobs, "tag": g.meta["weight_tag"]}
                for g in teacher.generate(prompts, p)
            ]
            res["teacher_wire_dtype"] = teacher.wire_dtype
        res["export"], res["teacher_export"], res["policy_wire_dtype"] = export, teacher_export, policy.wire_dtype
        with open(a.out, "w") as f:
            json.dump(res, f)
    parallel.destroy_distributed()


if __name__ == "__main__":
    main()
