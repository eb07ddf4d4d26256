"""Runs RLRun (Co-rewarding-II or -III, Self-Harmony, any method) in one process with recording wrappers around its engines and trainer, and writes
what happened in each step (what each engine was asked and answered) for tests/test_fidelity.py,
tests/test_corewarding_3.py and tests/test_resume.py to check against their own references.

Usage: python tests/workers/step_order_worker.py OUT.json -- TRAIN_RL_FLAGS...
"""

import json
import sys

import torch


def main():
    out_path, argv = sys.argv[1], sys.argv[sys.argv.index("--") + 1 :]
    from megatron_corew.arguments import parse_args
    from megatron_corew.policy.weights import hf_state_dict
    from megatron_corew.train import RLRun

    run = RLRun(parse_args(argv))
    trainer, events, states = run.trainer, [], {}
    policy_state = lambda: hf_state_dict(trainer.model, run.model_args)  # noqa: E731
    anchor_state = lambda: hf_state_dict(trainer.anchor, run.model_args)  # noqa: E731

    def keep(tag, state):
        """Store a state dict under a tag (float64, rank 0 only) and return the tag."""
        states[tag] = {k: v.double() for k, v in state.items()}
        return tag

    def wrap_engine(engine, role):
        generate, update = engine.generate, engine.update_weights

        def gen(prompts, params):
            event = {"event": f"{role}_generate", "prompts": prompts, "params": vars(params).copy()}
            events.append(event)
            out = generate(prompts, params)
            event["responses"] = [list(g.response_ids) for g in out]
            return out

        def upd(named_tensors, version):
            tensors = [(n, t.clone()) for n, t in named_tensors]
            events.append({"event": f"{role}_push", "state": keep(f"{role}_push{len(events)}", dict(tensors))})
            return update(tensors, version)

        engine.generate, engine.update_weights = gen, upd

    wrap_engine(run.engine, "policy")
    if run.teacher_engine is not None:  # a method without a teacher (self_harmony)
        wrap_engine(run.teacher_engine, "teacher")
    ema, train_step, stats = trainer.ema_update_anchor, trainer.train_step, trainer.sequence_stats

    def ema_update(alpha):
        n = len(events)
        event = {"event": "ema", "alpha": alpha, "policy": keep(f"ema_policy{n}", policy_state())}
        event["before"] = keep(f"ema_before{n}", anchor_state())
        ema(alpha)
        event["after"] = keep(f"ema_after{n}", anchor_state())
        events.append(event)

    def train(samples, **kw):
        n = len(events)
        event = {"event": "train", "anchor": keep(f"train_anchor{n}", anchor_state())}
        event["policy_before"] = keep(f"train_before{n}", policy_state())
        events.append(event)
        metrics = train_step(samples, **kw)
        event["samples"] = [{"adv": x.advantage, "tokens": len(x.response_ids), "view": x.view} for x in samples]
        event["loss"], event["loss_scale"] = metrics["loss"], kw.get("loss_scale", 1.0)
        event["policy_after"] = keep(f"train_after{n}", policy_state())
        event["kl_coef"] = trainer.cfg.kl_coef
        event["lr"] = metrics["lr"]
        return metrics

    def sequence_stats(samples, which="policy", **kw):
        events.append({"event": f"logprobs_{which}"})
        return stats(samples, which, **kw)

    trainer.ema_update_anchor, trainer.train_step, trainer.sequence_stats = ema_update, train, sequence_stats
    run.run()
    torch.save(states, out_path + ".pt")
    with open(out_path, "w") as f:
        json.dump({"events": events, "train_iters": run.train_iters, "n": run.args.n_samples_per_prompt}, f)


if __name__ == "__main__":
    main()
