"""The embedded engine's decode loop: per-token log-probs against transformers, and ``drop_finished`` (finished
sequences leave the decode batch) against the same reference, on long-tailed lengths."""

from __future__ import annotations

import random

import pytest
from helpers import hf_reference_logprobs, make_tiny_hf_model

from megatron_corew.rollout.base import SamplingParams
from megatron_corew.rollout.embedded import EmbeddedEngine

EOS = [5, 7, 11, 13, 17]  # five stop tokens of 100: geometric, long-tailed lengths from a random model
MAX_NEW = 24


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_hf_model(str(tmp_path_factory.mktemp("engine") / "m"), "qwen3")


def _prompts(n=24, seed=0):
    rng = random.Random(seed)
    return [[rng.randint(20, 99) for _ in range(rng.randint(2, 9))] for _ in range(n)]


@pytest.mark.parametrize("drop", [False, True], ids=["default", "drop_finished"])
def test_sampled_logprobs_equal_transformers(model, drop):
    """Every sampled token's reported log-prob equals transformers' full-sequence forward (float64) at T=1: a row
    confused when the batch shrinks would be scored against another row's context and miss by far more."""
    engine = EmbeddedEngine(model, EOS, pad_token_id=0, max_batch_size=32, drop_finished=drop)
    prompts = _prompts()
    gens = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=MAX_NEW, seed=3))
    lengths = [len(g.response_ids) for g in gens]
    assert min(lengths) < 10 and max(lengths) == MAX_NEW and len(set(lengths)) >= 8, lengths  # long-tailed
    ref = hf_reference_logprobs(model, [{"prompt": p, "response": g.response_ids} for p, g in zip(prompts, gens)])
    for p, g, r in zip(prompts, gens, ref):
        assert g.prompt_ids == p
        assert max(abs(a - b) for a, b in zip(g.logprobs, r["logp"])) < 1e-5
        stops = [i for i, t in enumerate(g.response_ids) if t in EOS]
        if g.finish_reason == "stop":
            assert stops == [len(g.response_ids) - 1]
        else:
            assert not stops and len(g.response_ids) == MAX_NEW


def test_drop_finished_greedy_same_tokens(model):
    """Greedy decoding does not depend on the batch: the shrinking batch gives the default engine's tokens."""
    prompts = _prompts(seed=1)
    params = SamplingParams(greedy=True, max_new_tokens=MAX_NEW)
    base = EmbeddedEngine(model, EOS, pad_token_id=0).generate(prompts, params)
    drop = EmbeddedEngine(model, EOS, pad_token_id=0, drop_finished=True).generate(prompts, params)
    assert [g.response_ids for g in drop] == [g.response_ids for g in base]
    assert len({len(g.response_ids) for g in base}) > 1
    for a, b in zip(base, drop):
        assert max((abs(x - y) for x, y in zip(a.logprobs, b.logprobs)), default=0.0) < 1e-5
