"""megatron_corew.records: one Rollout per response, stored group by group in a StepBatch."""

from types import SimpleNamespace

from megatron_corew.records import Prompt, StepBatch
from megatron_corew.rollout.base import Generation


def test_rollouts_are_grouped_by_prompt_and_carry_their_generation():
    prompts = [
        Prompt(SimpleNamespace(prompt_ids=[1, 2]), view=0, pair_id=7),
        Prompt(SimpleNamespace(prompt_ids=[3]), view=1, pair_id=7),
    ]
    batch = StepBatch(step=1, prompts=prompts, samples_per_prompt=3)
    assert batch.prompt_ids() == [[1, 2]] * 3 + [[3]] * 3  # each prompt G times, group by group
    gens = [
        Generation(ids, [10 + k] * (k + 1), [-0.5] * (k + 1), "stop", weight_version=4)
        for k, ids in enumerate(batch.prompt_ids())
    ]
    batch.add_rollouts(gens)
    groups = batch.groups()
    assert [[r.response_ids for r in g] for g in groups] == [
        [[10], [11, 11], [12, 12, 12]],
        [[13] * 4, [14] * 5, [15] * 6],
    ]
    second = groups[1][0]
    assert second.group == 1 and second.view == 1 and second.prompt is prompts[1]
    assert second.prompt_ids == [3] and second.length == 1 + 4 and second.weight_version == 4
    assert second.rollout_logprobs == [-0.5] * 4
    batch.add_teacher_rollouts(gens[::-1])
    assert [r.response_ids[0] for r in batch.teacher_group(0)] == [15, 14, 13]
    assert batch.rollouts[0].reward == 0.0 and batch.rollouts[0].answer == ""  # filled by the score stage
