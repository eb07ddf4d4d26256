"""Runs one job of a multi-process test under torchrun and writes its results (rank 0) to a file.

Usage: torchrun --nproc_per_node N tests/workers/dist_worker.py JOB --model DIR --out FILE [--tp --pp ...]
"""

import argparse
import json

from megatron_corew.policy import parallel


def _samples(spec_path):
    from megatron_corew.policy.trainer import TrainSample

    with open(spec_path) as f:
        rows = json.load(f)
    return [
        TrainSample(
            prompt_ids=r["prompt"], response_ids=r["response"], advantage=r.get("adv", 0.0), view=r.get("view", 0)
        )
        for r in rows
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("job", choices=["logprobs", "train_step", "export", "rollout_vs_trainer", "ema"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--samples")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--mbs", type=int, default=8)
    ap.add_argument("--kl-coef", type=float, default=0.0)
    ap.add_argument("--entropy-coef", type=float, default=0.0)
    ap.add_argument("--distopt", action="store_true")
    ap.add_argument("--temperature", type=float, default=1.0)
    a = ap.parse_args()

    import torch

    from checkpoints_conversion.config import load_model_args
    from megatron_corew.policy.trainer import PolicyTrainer, TrainerConfig
    from megatron_corew.policy.weights import hf_state_dict

    parallel.init_distributed(a.tp, a.pp)
    args = load_model_args(a.model)
    cfg = TrainerConfig(
        tp=a.tp,
        pp=a.pp,
        micro_batch_size=a.mbs,
        lr=1e-3,
        train_iters=10,
        lr_warmup_fraction=0.0,
        kl_coef=a.kl_coef,
        entropy_coef=a.entropy_coef,
        use_distributed_optimizer=a.distopt,
        need_anchor=a.kl_coef > 0,
        temperature=a.temperature,
    )
    trainer = PolicyTrainer(args, cfg)
    result = {}
    if a.job == "logprobs":
        stats = trainer.sequence_stats(_samples(a.samples), want=("logp", "entropy", "self_certainty"))
        result = {
            str(i): {"logp": v["logp"].tolist(), "entropy": v["entropy"], "self_certainty": v["self_certainty"]}
            for i, v in stats.items()
        }
    elif a.job == "train_step":
        samples = _samples(a.samples)
        result["step1"] = trainer.train_step(samples)
        result["step2"] = trainer.train_step(samples)
    elif a.job == "rollout_vs_trainer":
        from megatron_corew.policy.trainer import TrainSample
        from megatron_corew.rollout.base import SamplingParams
        from megatron_corew.rollout.embedded import EmbeddedEngine

        gens = None
        if parallel.is_rank0():
            engine = EmbeddedEngine(a.model, eos_token_ids=args.eos_token_id, pad_token_id=0, max_batch_size=4)
            prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [13], [14, 15]] * 2
            gens = engine.generate(prompts, SamplingParams(temperature=a.temperature, max_new_tokens=12, seed=7))
        gens = parallel.broadcast_object(gens)
        samples = [
            TrainSample(g.prompt_ids, g.response_ids, advantage=float(i % 3) - 1.0, rollout_logprobs=g.logprobs)
            for i, g in enumerate(gens)
        ]
        stats = trainer.sequence_stats(samples)
        diffs = [abs(x - y) for i, g in enumerate(gens) for x, y in zip(stats[i]["logp"].tolist(), g.logprobs)]
        result["mean_abs_diff"] = sum(diffs) / len(diffs)
        result["max_abs_diff"] = max(diffs)
        result["num_tokens"] = len(diffs)
        result["samples"] = [{"prompt": x.prompt_ids, "response": x.response_ids, "adv": x.advantage} for x in samples]
        result["step"] = trainer.train_step(samples)
    elif a.job == "ema":
        from megatron_corew.algo.ema import ema_alpha

        samples = _samples(a.samples)
        ref = hf_state_dict(trainer.anchor, args)
        ref = {k: v.double() for k, v in ref.items()} if ref is not None else None
        for k in range(1, 4):
            trainer.train_step(samples)  # move the policy
            policy = hf_state_dict(trainer.model, args)
            alpha = ema_alpha(k, 3, 0.3, 0.05)  # large alphas so the check is sensitive
            trainer.ema_update_anchor(alpha)
            if ref is not None:
                ref = {n: alpha * policy[n].double() + (1 - alpha) * ref[n] for n in ref}
        teacher = hf_state_dict(trainer.anchor, args)
        policy = hf_state_dict(trainer.model, args)  # collective: every rank takes part
        if teacher is not None:
            result["max_abs_diff"] = max(float((teacher[n].double() - ref[n]).abs().max()) for n in ref)
            result["max_abs_ref"] = max(float(ref[n].abs().max()) for n in ref)
            result["teacher_policy_gap"] = max(float((teacher[n] - policy[n]).abs().max()) for n in ref)
    elif a.job == "export":
        sd = hf_state_dict(trainer.model, args)
        if sd is not None:
            torch.save(sd, a.out + ".pt")
    if parallel.is_rank0():
        with open(a.out, "w") as f:
            json.dump(result, f)
    parallel.destroy_distributed()


if __name__ == "__main__":
    main()
