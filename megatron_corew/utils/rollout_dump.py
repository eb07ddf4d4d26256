"""``--rollout-dump``: every rollout of a step as one JSON line, for reading a run back (what was asked, answered,
labelled and rewarded, and from which weight version: ``weight_version`` is the oldest token's, ``token_versions`` the
version of every response token, which changes along a response that a weight sync interrupted and resumed). One file per step (and per dynamic-sampling round),
numbered like the metrics (step 1 is the first trained step), written atomically."""

from __future__ import annotations

import json
import os

from checkpoints_conversion.atomic import atomic_file


def write(output_dir: str, batch, token_counts: bool = False) -> str:
    """Write ``batch``'s rollouts to ``output_dir/rollouts/step_NNNNNN[_roundR].jsonl``; ``token_counts`` adds each
    response's token count (the overlong penalty's input)."""
    name = f"step_{batch.step + 1:06d}" + (f"_round{batch.round}" if batch.round else "")
    path = os.path.join(output_dir, "rollouts", name + ".jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        for r in batch.rollouts:
            row = {
                "step": batch.step + 1,
                "index": r.example.index,
                "view": r.view,
                "pair_id": r.prompt.pair_id,
                "label": batch.labels[r.group],
                "ground_truth": r.example.ground_truth,
                "response": r.text,
                "reward": r.reward,
                "finish_reason": r.generation.finish_reason,
                "weight_version": r.weight_version,
                "token_versions": list(r.generation.token_versions),
            }
            if batch.teacher_versions:
                row["teacher_version"] = batch.teacher_versions[r.group]
            if token_counts:
                row["response_tokens"] = r.length - len(r.prompt_ids)
            f.write(json.dumps(row) + "\n")
    return path
