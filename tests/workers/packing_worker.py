"""Runs the same samples through trainers that differ only in layout or logits chunking (one process, one
parallel layout) and writes rank 0's per-sample statistics and two steps' loss / grad norm to a file.

Usage: [torchrun --nproc_per_node N] tests/workers/packing_worker.py --model DIR --samples FILE --out FILE
       [--tp --pp] --variants padded:0,packed:0,packed:64   (layout:logits-chunk-tokens)
"""

import argparse
import json

from megatron_corew.policy import parallel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--sp", action="store_true", help="--sequence-parallel (needs --tp > 1)")
    ap.add_argument("--mbs", type=int, default=4)
    ap.add_argument("--max-tokens-per-gpu", type=int, default=700)
    ap.add_argument("--variants", default="padded:0,packed:0")
    ap.add_argument("--loss-agg-mode", default="global-token-mean")
    ap.add_argument("--kl-coef", type=float, default=0.0)
    ap.add_argument("--entropy-coef", type=float, default=0.01)
    ap.add_argument("--rollout-is", default="none", help="tis / mis: samples carry the rows' rollout_logp")
    a = ap.parse_args()

    import torch

    from checkpoints_conversion.config import load_model_args
    from megatron_corew.policy.trainer import PolicyTrainer, TrainerConfig, TrainSample

    parallel.init_distributed(a.tp, a.pp)
    args = load_model_args(a.model)
    with open(a.samples) as f:
        rows = json.load(f)
    samples = [
        TrainSample(
            prompt_ids=r["prompt"],
            response_ids=r["response"],
            advantage=r["adv"],
            view=r.get("view", 0),
            rollout_logprobs=r.get("rollout_logp"),
        )
        for r in rows
    ]
    results = {}
    for variant in a.variants.split(","):
        layout, chunk = variant.split(":")
        torch.manual_seed(0)
        cfg = TrainerConfig(
            tp=a.tp,
            pp=a.pp,
            sequence_parallel=a.sp,
            micro_batch_size=a.mbs,
            micro_batch_layout=layout,
            max_tokens_per_gpu=a.max_tokens_per_gpu,
            logits_chunk_tokens=int(chunk),
            loss_agg_mode=a.loss_agg_mode,
            lr=1e-3,
            train_iters=10,
            lr_warmup_fraction=0.0,
            kl_coef=a.kl_coef,
            entropy_coef=a.entropy_coef,
            need_anchor=a.kl_coef > 0,
            rollout_is=a.rollout_is,
        )
        trainer = PolicyTrainer(args, cfg)
        stats = trainer.sequence_stats(samples, want=("logp", "entropy", "self_certainty"))
        steps = [trainer.train_step(samples) for _ in range(2)]
        results[variant] = {
            "stats": {
                str(i): {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in s.items()} for i, s in stats.items()
            },
            "steps": steps,
            "microbatches": len(trainer._local_microbatches(samples)),
        }
        del trainer
    if parallel.is_rank0():
        with open(a.out, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
