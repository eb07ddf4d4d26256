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


@pytest.mark.parametrize("drop", [False, True], ids=["keep_finished", "drop_finished"])
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


def _grouped(prompts, n):
    """GRPO's layout: each prompt n times in a row, plus one prompt repeated out of order."""
    return [p for p in prompts for _ in range(n)] + [prompts[0]]


@pytest.mark.parametrize("drop", [False, True], ids=["keep_finished", "drop_finished"])
def test_shared_prefill_logprobs_equal_transformers_and_prefill_once(model, drop):
    """Repeated prompts are prefilled once (the first forward sees each distinct prompt once) and every sample's
    log-probs still equal transformers' full forward: a cache row copied to the wrong sample would miss by far."""
    prompts = _grouped(_prompts(n=6, seed=2), 4)
    engine = EmbeddedEngine(model, EOS, pad_token_id=0, drop_finished=drop)
    seen = []
    hook = engine.model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"].shape), with_kwargs=True)
    gens = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=MAX_NEW, seed=5))
    hook.remove()
    assert seen[0][0] == 6 and all(s[1] == 1 and s[0] <= len(prompts) for s in seen[1:]), seen[:3]
    assert len({tuple(g.response_ids) for g in gens}) > 6  # the samples of a prompt differ
    ref = hf_reference_logprobs(model, [{"prompt": p, "response": g.response_ids} for p, g in zip(prompts, gens)])
    for p, g, r in zip(prompts, gens, ref):
        assert g.prompt_ids == p
        assert max(abs(a - b) for a, b in zip(g.logprobs, r["logp"])) < 1e-5


def test_shared_prefill_same_samples_as_per_sample_prefill(model):
    """Same seed, same samples with and without the shared prefill (the prefill batch differs, the values not)."""
    prompts = _grouped(_prompts(n=5, seed=3), 4)
    params = SamplingParams(temperature=1.0, max_new_tokens=MAX_NEW, seed=9)
    shared = EmbeddedEngine(model, EOS, pad_token_id=0).generate(prompts, params)
    alone = EmbeddedEngine(model, EOS, pad_token_id=0, shared_prefill=False).generate(prompts, params)
    assert [g.response_ids for g in shared] == [g.response_ids for g in alone]
    for a, b in zip(shared, alone):
        assert max((abs(x - y) for x, y in zip(a.logprobs, b.logprobs)), default=0.0) < 1e-5


def test_step_and_cumulative_token_rates_count_the_same_tokens(model):
    """After one generate call the step's rollout rate (the step's rollouts over the generate stage) equals the
    engine's own cumulative rate: both count response tokens, never the prompt (hand-counted here)."""
    from types import SimpleNamespace

    from megatron_corew.utils.perf import rate_metrics

    engine = EmbeddedEngine(model, EOS, pad_token_id=0)
    prompts = _prompts(n=6, seed=4)
    gens = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=MAX_NEW, seed=1))
    response_tokens = sum(len(g.response_ids) for g in gens)
    assert response_tokens < sum(len(p) for p in prompts) + response_tokens  # the prompt tokens would change it
    batch = SimpleNamespace(rollouts=[SimpleNamespace(response_ids=g.response_ids) for g in gens], teacher_rollouts=[])
    seconds = {"perf/time_generate": engine.stats["seconds"]}
    m = rate_metrics(batch, seconds, step_seconds=2.0, engine=engine)
    assert m["perf/rollout_tokens_per_s"] == pytest.approx(m["perf/rollout_tokens_per_s_cumulative"], rel=1e-12)
    assert m["perf/tokens_per_s"] == pytest.approx(response_tokens / 2.0)


def _by_request(engine, prompts, params, order):
    """The prompts answered through ``submit`` / ``collect``, submitted in ``order``, row ``i`` seeded as row
    ``i`` of a ``generate`` call (``request_seed``); returned in row order."""
    from megatron_corew.rollout.base import Request
    from megatron_corew.rollout.streaming import request_seed

    engine.submit([Request(i, list(prompts[i]), params, seed=request_seed(params.seed, i)) for i in order])
    done = {}
    while len(done) < len(prompts):
        done.update((r.rid, r.generation()) for r in engine.collect(None))
    return [done[i] for i in range(len(prompts))]


def test_seeded_samples_do_not_depend_on_the_decode_batch_layout(model):
    """One seeded call, decoded in one batch, one row at a time, in batches of 5, without dropping finished rows,
    and as requests submitted in a shuffled order: every prompt gets the same tokens (log-probs equal up to the
    last-bit rounding of other batch shapes). Submitted in row order, the request path is ``generate`` bit for
    bit (the fully-async run with --max-staleness 0 relies on it)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of one-row forwards: thread hand-offs would cost more than the work
    try:
        _check_layouts(model)
    finally:
        torch.set_num_threads(threads)


def _check_layouts(model):
    prompts = _grouped(_prompts(n=6, seed=6), 3)
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=MAX_NEW, seed=21)
    base = EmbeddedEngine(model, EOS, pad_token_id=0).generate(prompts, params)
    lengths = [len(g.response_ids) for g in base]
    assert len(set(lengths)) >= 5 and min(lengths) < MAX_NEW // 2, lengths  # rows leave the batch at many steps
    assert len({tuple(g.response_ids) for g in base}) == len(prompts)  # a group's samples differ
    order = list(range(len(prompts)))
    random.Random(0).shuffle(order)
    layouts = {
        "one_row_batches": EmbeddedEngine(model, EOS, pad_token_id=0, max_batch_size=1).generate(prompts, params),
        "batches_of_5": EmbeddedEngine(model, EOS, pad_token_id=0, max_batch_size=5).generate(prompts, params),
        "keep_finished": EmbeddedEngine(model, EOS, pad_token_id=0, drop_finished=False).generate(prompts, params),
        "shuffled_requests": _by_request(
            EmbeddedEngine(model, EOS, pad_token_id=0, max_batch_size=7), prompts, params, order
        ),  # fmt: skip
    }
    for name, gens in layouts.items():
        assert [g.response_ids for g in gens] == [g.response_ids for g in base], name
        assert [g.finish_reason for g in gens] == [g.finish_reason for g in base], name
        for a, b in zip(base, gens):
            assert max((abs(x - y) for x, y in zip(a.logprobs, b.logprobs)), default=0.0) < 1e-5, name
    same = _by_request(EmbeddedEngine(model, EOS, pad_token_id=0), prompts, params, range(len(prompts)))
    assert [(g.response_ids, g.logprobs, g.finish_reason) for g in same] == [
        (g.response_ids, g.logprobs, g.finish_reason) for g in base
    ]
