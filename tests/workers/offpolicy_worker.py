"""Trainer-level checks of the off-policy options on a tiny model (one process): writes rank 0's results as JSON.

* agree: rollout log-probs = the trainer's own; train_step with each --rollout-is mode vs none (loss, weights).
* mismatch: rollout log-probs = own + noise; each mode/level's loss (the test recomputes it in float64).
* bypass: --off-policy-form bypass on the noisy log-probs (the test recomputes the loss in float64).
* masked: samples with loss_mask 0 vs the same step without them.
* multistep: N=1 vs N=3 optimizer steps per rollout with a large lr: per-step clip fractions.

Usage: tests/workers/offpolicy_worker.py --model DIR --samples FILE --out FILE
"""

import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import torch

    from checkpoints_conversion.config import load_model_args
    from megatron_corew.policy import multistep, parallel
    from megatron_corew.policy.trainer import PolicyTrainer, TrainerConfig, TrainSample

    parallel.init_distributed(1, 1)
    margs = load_model_args(a.model)
    with open(a.samples) as f:
        rows = json.load(f)

    def samples(logps=None):
        return [
            TrainSample(
                prompt_ids=r["prompt"],
                response_ids=r["response"],
                advantage=r["adv"],
                rollout_logprobs=None if logps is None else logps[i],
            )
            for i, r in enumerate(rows)
        ]

    def trainer(lr=1e-3, **kw):
        torch.manual_seed(0)
        cfg = TrainerConfig(micro_batch_size=4, lr=lr, train_iters=10, lr_warmup_fraction=0.0, need_anchor=False, **kw)
        return PolicyTrainer(margs, cfg)

    base = trainer()
    own = [base.sequence_stats(samples())[i]["logp"].tolist() for i in range(len(rows))]
    ref = base.train_step(samples(own))
    out = {"own_logp": own, "agree": {}, "mismatch": {}}
    out["agree"]["none"] = {"loss": ref["loss"], "digest": base.weights_digest()}
    del base
    variants = [(m, lvl) for m in ("tis", "mis") for lvl in ("token", "sequence", "geometric")]
    for mode, level in variants:
        t = trainer(rollout_is=mode, rollout_is_level=level, rollout_is_high=2.0)
        m = t.train_step(samples(own))
        out["agree"][f"{mode}:{level}"] = {"loss": m["loss"], "digest": t.weights_digest(), **m}
        del t
    g = torch.Generator().manual_seed(5)
    noisy = [[x + 0.3 * float(torch.randn((), generator=g)) for x in lp] for lp in own]
    out["noisy_logp"] = noisy
    for mode, level in variants:
        t = trainer(rollout_is=mode, rollout_is_level=level, rollout_is_high=1.5, rollout_is_low=0.7)
        out["mismatch"][f"{mode}:{level}"] = t.train_step(samples(noisy))
        del t
    t = trainer(off_policy_form="bypass")
    out["bypass"] = t.train_step(samples(noisy))
    del t
    masked = samples()
    for i in (1, 4):
        masked[i].loss_mask = 0.0
    t = trainer()
    out["masked"] = t.train_step(masked)
    del t
    t = trainer()
    out["subset"] = t.train_step([s for i, s in enumerate(samples()) if i not in (1, 4)])
    del t
    t = trainer(lr=5e-2)
    out["one_step"] = t.train_step(samples())
    del t
    t = trainer(lr=5e-2)
    steps = []
    orig = t.train_step

    def record(*args, **kw):
        steps.append(orig(*args, **kw))
        return steps[-1]

    t.train_step = record
    lr_before = t.optimizer.param_groups[0]["lr"]
    out["multi"] = multistep.train_rollout(t, samples(), 3)
    out["multi_steps"] = steps
    out["multi_lr"] = [lr_before, t.optimizer.param_groups[0]["lr"]]
    if parallel.is_rank0():
        with open(a.out, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
