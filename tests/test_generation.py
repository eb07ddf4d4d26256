"""Sampling seeds of ``rollout/generation.py``: one per (run seed, role, step, dynamic-sampling round), never
shared between roles, steps or rounds, for any run seed (at seed 0 too, where a linear formula in the seed would
hand the policy and the teacher the same seed)."""

from types import SimpleNamespace

from megatron_corew.rollout.generation import PromptSource, RolloutGenerator, sampling_seed

ROLES = ("policy", "teacher", "validation")


def test_every_seed_role_step_and_round_gets_its_own_sampling_seed():
    keys = [(s, role, step, rnd) for s in range(4) for role in ROLES for step in range(200) for rnd in range(4)]
    seeds = [sampling_seed(*k) for k in keys]
    assert len(set(seeds)) == len(keys)
    assert all(0 <= x < 2**63 for x in seeds)  # fits the engines' signed 64-bit seeds
    assert [sampling_seed(*k) for k in keys[:50]] == seeds[:50]  # a pure function: a resume draws the same


def test_the_generator_samples_policy_and_teacher_with_different_seeds_at_seed_0():
    args = SimpleNamespace(seed=0, rollout_temperature=1.0, rollout_top_p=1.0, max_response_length=8)
    gen = RolloutGenerator(args, None, PromptSource(None, None, None), 10, True)
    for step in range(10):
        policy, teacher = gen.sampling(step, "policy").seed, gen.sampling(step, "teacher").seed
        assert policy != teacher, step
        assert policy != gen.sampling(step, "policy", round=1).seed
        assert policy == sampling_seed(0, "policy", step, 0)
