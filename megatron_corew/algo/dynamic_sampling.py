"""DAPO dynamic sampling (``--dynamic-sampling``, docs/OFF_POLICY.md section 3): groups whose rewards all agree
have zero advantage and carry no gradient signal; drop them and refill the batch from more prompts.

The criterion is the reward the advantages are computed from, so it serves every method: for ground truth a
group all right or all wrong, for the voting methods a group where every sample matches its pseudo-label or none
does, for Co-rewarding-I each view's group on its own (both views of a pair are separate groups). A refill round
draws the next ``--global-batch-size`` prompts from the sampler (its cursor moves on and is checkpointed as usual,
so a resumed run draws the same prompts), generates, and scores them; kept groups fill the batch in draw order and
the surplus of the last round is discarded. After ``--dynamic-sampling-max-rounds`` extra rounds the step trains on
what it kept (a smaller batch, token means over its own tokens); if no group at all had signal it trains on the
first round unfiltered (all advantages 0: only the KL / entropy terms act), so the step and the LR schedule go on.
"""

from __future__ import annotations

from dataclasses import replace

from megatron_corew.records import StepBatch


def signal_groups(group_rewards: list[list[float]]) -> list[bool]:
    """True for a group whose rewards are not all equal (non-zero variance)."""
    return [bool(g) and max(g) != min(g) for g in group_rewards]


def merge(rounds: list[tuple[StepBatch, list[bool]]], target: int) -> StepBatch:
    """The first ``target`` kept groups of the rounds as one batch: groups renumbered, pair ids made unique per
    round (the second round's pair k is not the first round's), labels and teacher rollouts carried along."""
    first = rounds[0][0]
    out = StepBatch(first.step, [], first.samples_per_prompt, round=0)
    for rnd, (b, keep) in enumerate(rounds):
        out.indices.extend(b.indices)
        offset = rnd * max(len(b.indices), 1)
        for k, (prompt, group) in enumerate(zip(b.prompts, b.groups())):
            if not keep[k] or len(out.prompts) >= target:
                continue
            g = len(out.prompts)
            p = replace(prompt, pair_id=prompt.pair_id + offset)
            out.prompts.append(p)
            for r in group:
                r.group, r.prompt = g, p
                out.rollouts.append(r)
            if b.teacher_rollouts:
                for t in b.teacher_group(k):
                    t.group, t.prompt = g, p
                    out.teacher_rollouts.append(t)
            if b.labels:
                out.labels.append(b.labels[k])
    return out


def fill(run, first: StepBatch, timer, metrics: dict) -> StepBatch:
    """Refill ``first`` (generated and scored) up to its group count; adds the counts to ``metrics``."""
    from megatron_corew.policy import parallel

    target, rounds, dropped = len(first.prompts), [], 0
    batch = first
    for rnd in range(run.args.dynamic_sampling_max_rounds + 1):
        if rnd:
            batch = run.new_batch(first.step, round=rnd)
            run.rollout_round(batch, timer)  # its reward metrics are not logged: the step's are the first round's
        keep = None
        if parallel.is_rank0():  # rewards live on rank 0; every rank keeps the same groups
            keep = signal_groups([[r.reward for r in g] for g in batch.groups()])
        keep = parallel.broadcast_object(keep)
        dropped += keep.count(False)
        rounds.append((batch, keep))
        if sum(sum(k) for _, k in rounds) >= target:
            break
    kept = sum(sum(k) for _, k in rounds)
    metrics.update(
        {
            "rollout/dynamic_generation_rounds": len(rounds),
            "rollout/dynamic_dropped_groups": dropped,
            "rollout/dynamic_kept_groups": min(kept, target),
            "rollout/dynamic_cap_hit": float(kept < target),
        }
    )
    return merge(rounds, target) if kept else first
