"""Partial rollouts at the engine level: the interruptible API of rollout/base.py on the embedded engine (default
tier) and on a real SGLang CPU server (sglang tier).

A response interrupted by a weight update and resumed keeps exactly the prefix it had; its per-token versions change
at the sync point and only there; the behaviour log-probs of the kept prefix are what the OLD weights give and those
of the resumed part what the NEW weights give, both checked against a float64 forward of the HF model in this file
(transformers, with the perturbed weights the test pushed). With unchanged weights, the embedded engine's
interrupted-and-resumed responses equal the uninterrupted ones token for token.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from megatron_corew.rollout.base import Generation, Request, SamplingParams

T, TOP_P = 0.8, 0.95
PROMPTS = [[5, 6, 7, 8, 9], [40, 41, 300, 17], [120, 7, 7, 450, 3, 99], [11, 210, 33]]


def _requests(max_new: int, greedy: bool = False) -> list[Request]:
    p = SamplingParams(temperature=T, top_p=TOP_P, max_new_tokens=max_new, greedy=greedy)
    return [Request(rid=i, prompt_ids=list(pr), params=p, seed=1000 + i) for i, pr in enumerate(PROMPTS)]


def _perturbed(model_dir: str) -> dict[str, torch.Tensor]:
    """Every weight of the model moved by noise of 30% of its spread: the 'new weights' a sync pushes."""
    from transformers import AutoModelForCausalLM

    state = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    g = torch.Generator().manual_seed(7)
    return {
        n: t + 0.3 * (t.float().std() if t.numel() > 1 else 1.0) * torch.randn(t.shape, generator=g)
        for n, t in state.items()
    }


def _hf_logprobs(model_dir: str, weights: dict | None, prompt: list[int], response: list[int]) -> list[float]:
    """log softmax(logits / T) of each response token: a float64 forward of the HF model (independent of the
    engines), with ``weights`` loaded when given."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if weights is not None:
        model.load_state_dict(weights)
    model = model.double().eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + response])).logits[0].double()
    lp = torch.log_softmax(logits / T, -1)
    return [float(lp[len(prompt) - 1 + j, t]) for j, t in enumerate(response)]


def _interrupt_mid_response(engine, make_requests, wait_s: float):
    """Submit fresh requests, let them decode for a while, interrupt. Retried until some request kept tokens, so
    neither a loaded machine (nothing decoded yet: wait longer, same requests) nor an idle one (everything finished
    before the interrupt: fresh requests, shorter wait) can make the test vacuous."""
    finished: list[Request] = []
    reqs = make_requests()
    for _ in range(8):
        engine.submit(reqs)
        time.sleep(wait_s)
        reqs = engine.interrupt()
        finished += engine.collect(0)
        if any(r.response_ids for r in reqs):
            break
        if not reqs:  # all finished before the interrupt
            finished, reqs, wait_s = [], make_requests(), wait_s / 4
        else:
            wait_s *= 2
    return reqs, finished


def _drain(engine, n: int, timeout: float = 600) -> list[Request]:
    done: list[Request] = []
    t0 = time.monotonic()
    while len(done) < n:
        assert time.monotonic() - t0 < timeout, "requests did not finish"
        done += engine.collect(timeout=5)
    return sorted(done, key=lambda r: r.rid)


def _check_sync_point(model_dir, new_weights, stopped, kept, done, old_version, new_version):
    """The checks of an interrupted-by-a-sync response (see the module docstring); returns how many requests were
    interrupted mid-response (kept tokens and then decoded more)."""
    by_rid = {r.rid: r for r in done}
    mid = 0
    for r in stopped:
        ids, lps, versions = kept[r.rid]
        k = len(ids)
        final = by_rid[r.rid]
        n = len(final.response_ids)
        assert final.response_ids[:k] == ids and final.logprobs[:k] == lps, "the kept prefix changed"
        assert versions == [old_version] * k
        assert final.token_versions == [old_version] * k + [new_version] * (n - k), "versions must change at the sync"
        assert final.interruptions >= 1
        g = final.generation()
        assert g.token_versions == final.token_versions and g.weight_version == (old_version if k else new_version)
        if n == k:
            continue
        mid += k > 0
        old_ref = _hf_logprobs(model_dir, None, final.prompt_ids, final.response_ids)
        new_ref = _hf_logprobs(model_dir, new_weights, final.prompt_ids, final.response_ids)
        got = final.logprobs
        assert max((abs(a - b) for a, b in zip(got[:k], old_ref[:k])), default=0) < 1e-4, "prefix: old weights"
        assert max(abs(a - b) for a, b in zip(got[k:], new_ref[k:])) < 1e-4, "resumed part: new weights"
        assert max(abs(a - b) for a, b in zip(old_ref[k:], new_ref[k:])) > 1e-3  # the two references differ
    return mid


# ============================================================================ records
def test_generation_token_versions_default_and_dump(tmp_path):
    from types import SimpleNamespace

    from megatron_corew.records import Prompt, StepBatch
    from megatron_corew.utils import rollout_dump

    assert Generation([1], [4, 5], [-1.0, -2.0], "stop", weight_version=3).token_versions == [3, 3]
    with pytest.raises(ValueError, match="2 token versions for 3 tokens"):
        Generation([1], [4, 5, 6], [0.0] * 3, "stop", token_versions=[1, 2])
    r = Request(rid=0, prompt_ids=[1], params=SamplingParams(max_new_tokens=5))
    r.keep([4, 5], [-1.0, -2.0], version=2)
    r.keep([6], [-3.0], version=3)
    assert r.remaining == 2
    r.finish_reason = "stop"
    g = r.generation()
    assert g.token_versions == [2, 2, 3] and g.weight_version == 2  # the oldest token's version
    batch = StepBatch(
        step=0, prompts=[Prompt(SimpleNamespace(prompt_ids=[1], index=0, ground_truth="1"))], samples_per_prompt=1
    )
    batch.add_rollouts([g])
    batch.labels = [""]
    row = json.loads(open(rollout_dump.write(str(tmp_path), batch)).readline())
    assert row["token_versions"] == [2, 2, 3] and row["weight_version"] == 2


# ============================================================================ embedded engine
@pytest.fixture(scope="module")
def embedded(tiny_bundle):
    from megatron_corew.rollout.embedded import EmbeddedEngine

    return EmbeddedEngine(tiny_bundle["model"], [2])


def test_embedded_interrupted_equals_uninterrupted_with_unchanged_weights(embedded):
    """Interrupted many times at whatever token the timing gives and resumed each time: the same tokens as one
    uninterrupted decode, and the same behaviour log-probs (to float rounding)."""
    embedded.submit(_requests(48))
    ref = _drain(embedded, len(PROMPTS))
    assert len({tuple(r.response_ids) for r in ref}) == len(PROMPTS)  # sampled, different responses
    done, pending, wait_s = [], _requests(48), 0.005
    for cycle in range(400):
        if not pending:
            break
        embedded.submit(pending)
        time.sleep(wait_s * (1 + cycle // 20))
        pending = embedded.interrupt()
        done += embedded.collect(0)
    done = sorted(done, key=lambda r: r.rid)
    assert not pending and [r.rid for r in done] == [r.rid for r in ref]
    assert max(r.interruptions for r in done) >= 2
    assert any(0 < len(r.response_ids) for r in done)
    for a, b in zip(done, ref):
        assert a.response_ids == b.response_ids and a.finish_reason == b.finish_reason
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-5
        assert set(a.token_versions) == {0}


def test_embedded_resume_after_weight_update_uses_the_new_weights(embedded, tiny_bundle):
    model = tiny_bundle["model"]
    new = _perturbed(model)
    original = {n: t.clone() for n, t in embedded.model.state_dict().items()}
    stopped, _ = _interrupt_mid_response(embedded, lambda: _requests(64), 0.05)
    assert stopped, "every request finished before the interrupt"
    kept = {r.rid: (list(r.response_ids), list(r.logprobs), list(r.token_versions)) for r in stopped}
    try:
        embedded.update_weights(new.items(), version=1)
        embedded.submit(stopped)
        done = _drain(embedded, len(stopped))
    finally:
        embedded.interrupt()
        embedded.update_weights(original.items(), version=0)
    assert _check_sync_point(model, new, stopped, kept, done, 0, 1) >= 1


def test_embedded_returns_requests_as_they_finish_and_refuses_updates_while_decoding(embedded):
    reqs = _requests(200)
    short = Request(
        rid=9, prompt_ids=[5, 6], params=SamplingParams(temperature=T, top_p=TOP_P, max_new_tokens=2), seed=1
    )
    short.keep([7], [-1.0], version=0)  # a resumed request: one token kept, one more to decode
    embedded.submit(reqs + [short])  # one batch: the short one leaves it after one token
    first = embedded.collect(timeout=120)
    assert [r.rid for r in first] == [9] and short.finish_reason is not None and len(short.response_ids) == 2
    with pytest.raises(RuntimeError, match="interrupt"):
        embedded.update_weights([], version=5)
    stopped = embedded.interrupt()
    assert len(stopped) + len(embedded.collect(0)) == len(PROMPTS) and stopped
    assert embedded.weight_version == 0


# ============================================================================ real SGLang server
@pytest.fixture(scope="module")
def sglang_server(tiny_bundle, tmp_path_factory):
    from sglang_stubs import write_stubs
    from test_sglang import _Server, sglang_status

    ok, reason = sglang_status()
    if not ok:
        pytest.skip(reason)
    stubs = write_stubs(str(tmp_path_factory.mktemp("stubs")))
    srv = _Server(tiny_bundle["model"], stubs, str(tmp_path_factory.mktemp("logs") / "server.log")).start()
    yield srv
    srv.stop()


@pytest.mark.sglang
def test_sglang_abort_keeps_prefix_and_resumes_under_new_weights(sglang_server, tiny_bundle):
    """SGLang's /pause_generation (abort) returns the tokens and log-probs so far; the resumed request is a new
    /generate from prompt + kept tokens on the updated server, its tokens stamped with the new version. A request
    still queued in the client when the interrupt comes is handed back with nothing kept and decoded entirely under
    the new weights."""
    from megatron_corew.rollout.sglang import fleet as sf
    from megatron_corew.rollout.sglang import http as sh
    from megatron_corew.rollout.sglang.engine import SGLangEngine

    model = tiny_bundle["model"]
    sglang_server.reset_weights()
    engine = SGLangEngine(
        sf.AttachedFleet([sglang_server.url], sh.HTTPConfig()),
        model_path=model,
        eos_token_ids=[2],
        weight_sync="tensor",
    )
    engine.partial_workers = 3  # the fourth request waits in the client: the interrupt must hand it back unsent
    new = _perturbed(model)
    stopped, finished = _interrupt_mid_response(engine, lambda: _requests(200), 1.0)
    assert stopped, "every request finished before the interrupt"
    kept = {r.rid: (list(r.response_ids), list(r.logprobs), list(r.token_versions)) for r in stopped}
    if not finished:  # none freed a slot: the fourth was never sent
        assert kept[3] == ([], [], [])
    engine.update_weights(new.items(), version=1)
    engine.submit(stopped)
    done = _drain(engine, len(stopped))
    try:
        assert _check_sync_point(model, new, stopped, kept, done, 0, 1) >= 1
    finally:
        sglang_server.reset_weights()
