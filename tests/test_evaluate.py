"""megatron_corew.evaluation, tools/evaluate.py and the OpenAI-compatible backend.

* metric arithmetic (pass@1, avg@k, pass@k, unbiased pass@j) through ``CountingEngine``, a STAND-IN backend that
  replies from a fixed script (not a model), so every expected number is known exactly;
* the in-training validation (``validation_metrics``) gives the numbers of the former ``RLRun.validate`` code;
* ``OpenAICompatEngine`` against a real HTTP server on 127.0.0.1 (``serve_engine`` in front of the embedded engine
  with the tiny model): same greedy text as the engine itself, seeded sampling, retries on 5xx, no retry on 4xx;
* tools/evaluate.py end to end on the tiny model (embedded backend and --openai-url), with a GSM-style benchmark
  made by reasoning-gym when installed; and (slow) from a Megatron checkpoint.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from fakes import ScriptedEngine
from helpers import REPO

from megatron_corew.data.dataset import load_examples
from megatron_corew.demo.tiny_task import generate_problems, verl_rows, write_parquet
from megatron_corew.evaluation import evaluate, evaluate_examples, pass_at_k, results_markdown, validation_metrics
from megatron_corew.rollout.base import RolloutEngine, SamplingParams

TOOL = os.path.join(REPO, "tools", "evaluate.py")


def test_pass_at_k_matches_enumeration():
    for n, c in [(4, 0), (4, 1), (5, 2), (6, 6), (8, 3)]:
        outcomes = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(outcomes, k))
            assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


# ----------------------------------------------------------------------------------------------------------------
# Scripted stand-in backend
# ----------------------------------------------------------------------------------------------------------------
class CountingEngine(ScriptedEngine):
    """STAND-IN backend (not a model). Problem i ("What is i + i?", ground truth 2i) is answered correctly by the
    greedy call iff i is even; in a sampled call, sample j of problem i is correct iff j < i (so problem i has
    min(i, k) correct samples). Records the SamplingParams of every call."""

    add_eos = True

    def start_call(self, prompts, params):
        self.seen = {}

    def reply(self, text, params):
        i = int(text.split("What is ")[1].split(" ")[0])
        j = self.seen[i] = self.seen.get(i, -1) + 1
        right = (i % 2 == 0) if params.greedy else (j < i)
        ans = 2 * i if right else 2 * i + 1
        reply = f"{i} + {i} = {ans}. The answer is \\boxed{{{ans}}}."
        if i == 5 and params.greedy:
            reply = "no box here"
        return reply, "stop" if i != 3 else "length"


def counting_examples(tmp_path, tok, n=6):
    rows = [
        {
            "data_source": "unit",
            "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
            "ability": "math",
            "reward_model": {"ground_truth": str(2 * i), "style": "rule"},
            "extra_info": {"index": i, "split": "t"},
        }
        for i in range(n)
    ]
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "bench.parquet"))
    return list(load_examples(str(tmp_path / "bench.parquet"), tok))


def test_metrics_exact(tmp_path, tok):
    exs = counting_examples(tmp_path, tok)  # problems 0..5
    eng = CountingEngine(tok)
    g = evaluate(eng, tok, {"bench": exs}, mode="greedy", seed=3, max_new_tokens=32)["bench"]
    assert g["pass@1"] == pytest.approx(3 / 6)  # 0, 2, 4 (5 has no box)
    assert g["boxed_rate"] == pytest.approx(5 / 6) and g["truncated_rate"] == pytest.approx(1 / 6)
    p = eng.params[-1]
    assert p.greedy and p.seed == 3 and p.max_new_tokens == 32
    s = evaluate_examples(eng, tok, exs, mode="sampled", k=4, pass_ks=[2], seed=7, return_records=True)
    correct = [min(i, 4) for i in range(6)]  # 0, 1, 2, 3, 4, 4 correct samples out of 4
    assert s["avg@4"] == pytest.approx(sum(correct) / 24) and s["pass@1"] == s["avg@4"]
    assert s["pass@4"] == pytest.approx(5 / 6)
    # maj@4 by hand: problem 0 (0 right) and 1 (1 right vs 3 identical wrong) lose the vote; problem 2 is a 2-2 tie
    # that goes to the first answer seen (the right one); 3, 4, 5 win outright
    assert s["maj@4"] == pytest.approx(4 / 6)
    assert s["pass@2"] == pytest.approx(sum(pass_at_k(4, c, 2) for c in correct) / 6)
    p = eng.params[-1]
    assert not p.greedy and p.temperature == 0.8 and p.top_p == 1.0 and p.seed == 7  # paper's eval temperature
    assert len(s["records"]) == 24 and s["records"][5] == {
        "row": 1,
        "sample": 1,
        "ground_truth": "2",
        "answer": "3",
        "score": 0.0,
        "finish_reason": "stop",
        "response": "1 + 1 = 3. The answer is \\boxed{3}.",
        "response_length": s["records"][5]["response_length"],
    }
    md = results_markdown({"bench": s})
    assert "| benchmark | n | mode | pass@1 | avg@4 | pass@2 | pass@4 | maj@4 |" in md
    assert f"| bench | 6 | sampled k=4 T=0.8 | {100 * s['avg@4']:.2f} |" in md
    with pytest.raises(ValueError, match="mode"):
        evaluate_examples(eng, tok, exs, mode="beam")


def test_grading_modes(tmp_path, tok):
    exs = counting_examples(tmp_path, tok, n=3)
    for e in exs:
        e.ground_truth = {"0": "0.0", "2": "2", "4": "4"}[e.ground_truth]  # "0" vs "0.0": only equiv accepts it
    ref = evaluate_examples(CountingEngine(tok), tok, exs, grading="reference")
    eq = evaluate_examples(CountingEngine(tok), tok, exs, grading="equiv")
    assert ref["pass@1"] == pytest.approx(1 / 3) and eq["pass@1"] == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------------------------------------------
# The tiny model
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_bundle):
    """The warm-started tiny model if assets/tiny exists, else a random tiny Qwen3 (same tokenizer) built here;
    a 12-problem held-out benchmark."""
    from transformers import AutoTokenizer

    from megatron_corew.demo.tiny_bundle import is_complete

    root = tmp_path_factory.mktemp("tiny")
    if is_complete(os.path.join(REPO, "assets", "tiny")):
        model = os.path.join(REPO, "assets", "tiny", "model")
    else:
        model = make_bundle(num_train=4, num_val=2)["model"]
    bench = str(root / "tiny_val.parquet")
    write_parquet(verl_rows(generate_problems(num_train=1, num_val=12, seed=11)[1], "test", "original"), bench)
    tk = AutoTokenizer.from_pretrained(model)
    return {"model": model, "bench": bench, "tok": tk, "examples": list(load_examples(bench, tk))}


@pytest.fixture(scope="module")
def engine(tiny):
    from megatron_corew.rollout.embedded import EmbeddedEngine
    from megatron_corew.rollout.factory import eos_ids

    return EmbeddedEngine(tiny["model"], eos_ids(tiny["model"], tiny["tok"]), tiny["tok"].pad_token_id)


def old_validate(engine, tokenizer, examples, grading, max_len, k, temp):
    """The body of RLRun.validate before it called validation_metrics (kept here to pin the numbers)."""
    from megatron_corew.rewards.grading import grade

    def answers(gens):
        return [tokenizer.decode(g.response_ids, skip_special_tokens=True) for g in gens]

    n = len(examples)
    greedy = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=max_len, greedy=True, seed=0)
    gens = engine.generate([e.prompt_ids for e in examples], greedy)
    correct = [grade(t, e.ground_truth, grading) for t, e in zip(answers(gens), examples)]
    out = {"val/accuracy": sum(correct) / n, "val/response_length": sum(len(g.response_ids) for g in gens) / n}
    gens = engine.generate(
        [e.prompt_ids for e in examples for _ in range(k)],
        SamplingParams(temperature=temp, top_p=1.0, max_new_tokens=max_len, seed=1),
    )
    hits = [grade(t, examples[i // k].ground_truth, grading) for i, t in enumerate(answers(gens))]
    out[f"val/accuracy_avg@{k}"] = sum(hits) / len(hits)
    return out


def test_validation_metrics_match_previous_validate(tiny, engine):
    exs = tiny["examples"][:8]
    new = validation_metrics(
        engine, tiny["tok"], exs, grading="reference", max_new_tokens=20, n_samples=2, temperature=1.0
    )
    old = old_validate(engine, tiny["tok"], exs, "reference", 20, 2, 1.0)
    assert {k: new[k] for k in old} == old
    assert set(new) == set(old) | {"val/pass@2", "val/maj@2"}


def test_openai_compatible_server_and_engine(tiny, engine):
    from megatron_corew.rollout.openai_client import OpenAICompatEngine, OpenAICompatError
    from megatron_corew.rollout.serve import serve_engine

    class FlakyOnce(RolloutEngine):  # wraps the real engine; its first call fails (the server answers 500)
        def __init__(self, inner):
            self.inner, self.failed = inner, False

        def generate(self, prompts, params):
            if not self.failed:
                self.failed = True
                raise RuntimeError("transient")
            return self.inner.generate(prompts, params)

        def update_weights(self, named_tensors, version):
            raise NotImplementedError

    tk, exs = tiny["tok"], tiny["examples"][:6]
    server = serve_engine(FlakyOnce(engine), tk, "127.0.0.1", 0, model_name="tiny")
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        client = OpenAICompatEngine(url, tokenizer=tk, retries=2, backoff_s=0.05, concurrency=3)
        assert client.model == "tiny" and client.health()
        greedy = SamplingParams(max_new_tokens=16, greedy=True)
        remote = client.generate([e.prompt_ids for e in exs], greedy)  # first request: 500, retried
        local = engine.generate([e.prompt_ids for e in exs], greedy)
        assert [g.response_ids for g in remote] == [g.response_ids for g in local]
        assert [g.meta["text"] for g in remote] == [tk.decode(g.response_ids, skip_special_tokens=True) for g in local]
        assert [g.finish_reason for g in remote] == [g.finish_reason for g in local]
        sampled = SamplingParams(temperature=1.0, max_new_tokens=16, seed=4)
        a = client.generate([exs[0].prompt_ids] * 4, sampled)
        b = client.generate([exs[0].prompt_ids] * 4, sampled)
        assert [g.response_ids for g in a] == [g.response_ids for g in b]  # seed + i per request
        assert (
            a[0].response_ids
            == engine.generate([exs[0].prompt_ids], SamplingParams(temperature=1.0, max_new_tokens=16, seed=4))[
                0
            ].response_ids
        )
        r_remote = evaluate(client, tk, {"tiny": exs}, max_new_tokens=16)["tiny"]
        r_local = evaluate(engine, tk, {"tiny": exs}, max_new_tokens=16)["tiny"]
        assert r_remote["pass@1"] == r_local["pass@1"]
        with pytest.raises(OpenAICompatError, match="HTTP 400"):  # client errors are not retried
            client._request("POST", "/v1/completions", {"prompt": [], "max_tokens": 2})
        with pytest.raises(NotImplementedError):
            client.update_weights([], 1)
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(OpenAICompatError, match="failed after 2 attempt"):
        OpenAICompatEngine(url, model="tiny", retries=1, backoff_s=0.01, timeout=2).generate([[1, 2]], greedy)


def test_openai_client_against_a_strict_server(tiny, engine):
    """A server that rejects non-OpenAI fields (as the OpenAI service does): the client drops its extensions after
    the first 400 and takes the token ids from re-tokenising the text."""
    from megatron_corew.rollout.openai_client import OpenAICompatEngine
    from megatron_corew.rollout.serve import serve_engine

    tk, exs = tiny["tok"], tiny["examples"][:3]
    server = serve_engine(engine, tk, "127.0.0.1", 0, model_name="tiny", strict=True)
    try:
        client = OpenAICompatEngine(f"http://127.0.0.1:{server.server_address[1]}", tokenizer=tk, concurrency=1)
        greedy = SamplingParams(max_new_tokens=16, greedy=True)
        remote = client.generate([e.prompt_ids for e in exs], greedy)
        assert client._extensions is False
    finally:
        server.shutdown()
        server.server_close()
    local = engine.generate([e.prompt_ids for e in exs], greedy)
    texts = [tk.decode(g.response_ids, skip_special_tokens=True) for g in local]
    assert [g.meta["text"] for g in remote] == texts
    assert [g.response_ids for g in remote] == [tk(t, add_special_tokens=False)["input_ids"] for t in texts]


def run_cli(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, env=env, timeout=timeout)


def gsm_benchmark(tmp_path):
    """A GSM-style benchmark nobody here wrote (reasoning-gym), through our preprocessing; None if not installed."""
    try:
        import reasoning_gym as rg
    except ImportError:
        return None
    import pyarrow as pa

    from megatron_corew.data.sources import preprocess

    items = list(rg.create_dataset("gsm_symbolic", size=4, seed=1))
    src = tmp_path / "gsm_src.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"question": x["question"], "answer": "...\n#### " + x["answer"]} for x in items]),
        str(src),
    )
    return preprocess("gsm8k", [str(src)], str(tmp_path / "gsm" / "test.parquet"))["output"]


@pytest.mark.e2e
def test_cli_end_to_end(tmp_path, tiny, engine):
    out = tmp_path / "eval"
    data = [f"tinyval={tiny['bench']}"]
    gsm = gsm_benchmark(tmp_path)
    if gsm:
        data.append(gsm)  # named "gsm" after its directory
    proc = run_cli(
        "--model",
        tiny["model"],
        "--data",
        *data,
        "--mode",
        "both",
        "--k",
        "2",
        "--max-new-tokens",
        "16",
        "--max-samples",
        "6",
        "--output-dir",
        str(out),
        "--save-responses",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = ["tinyval"] + (["gsm"] if gsm else [])
    files = sorted(os.listdir(out))
    assert files == sorted(
        ["results.json", "results.md"] + [f"{n}{ext}" for n in names for ext in (".json", ".md", ".responses.jsonl")]
    )
    res = json.load(open(out / "results.json"))["results"]
    exs = tiny["examples"][:6]
    local = evaluate(engine, tiny["tok"], {"t": exs}, max_new_tokens=16)["t"]
    assert res["tinyval"]["greedy"]["pass@1"] == local["pass@1"]
    assert res["tinyval"]["sampled"]["k"] == 2 and res["tinyval"]["sampled"]["temperature"] == 0.8
    assert {"avg@2", "pass@2"} <= set(res["tinyval"]["sampled"])
    per = json.load(open(out / "tinyval.json"))
    assert per["benchmark"] == "tinyval" and per["greedy"] == res["tinyval"]["greedy"]
    md = open(out / "results.md").read()
    assert "### greedy" in md and "### sampled" in md and "| tinyval | 6 | greedy |" in md
    lines = open(out / "tinyval.responses.jsonl").read().splitlines()
    assert len(lines) == 6 + 12
    if gsm:
        assert res["gsm"]["n"] == 4
    bad = run_cli("--model", tiny["model"], "--data", str(tmp_path / "missing.parquet"), "--output-dir", str(out))
    assert bad.returncode == 2 and "missing.parquet: file not found" in bad.stderr


@pytest.mark.e2e
def test_cli_openai_backend(tmp_path, tiny, engine):
    from megatron_corew.rollout.serve import serve_engine

    server = serve_engine(engine, tiny["tok"], "127.0.0.1", 0, model_name="tiny")
    try:
        out = tmp_path / "eval"
        proc = run_cli(
            "--openai-url",
            f"http://127.0.0.1:{server.server_address[1]}/v1",
            "--tokenizer",
            tiny["model"],
            "--data",
            tiny["bench"],
            "--max-new-tokens",
            "16",
            "--max-samples",
            "6",
            "--output-dir",
            str(out),
        )
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.load(open(out / "results.json"))["results"]["tiny_val"]["greedy"]
    local = evaluate(engine, tiny["tok"], {"t": tiny["examples"][:6]}, max_new_tokens=16)["t"]
    assert res["pass@1"] == local["pass@1"]


def test_megatron_checkpoint_input_is_checked(tmp_path):
    """A directory that is no Megatron checkpoint is one clear CheckpointError, before any work."""
    from checkpoints_conversion.hf_io import CheckpointError
    from tools import evaluate as mod

    with pytest.raises(CheckpointError, match="not a Megatron distributed checkpoint"):
        mod.megatron_to_hf(str(tmp_path / "ckpt"), None, str(tmp_path / "out"))
    assert mod.benchmark_name("data/math500/test.parquet") == ("math500", "data/math500/test.parquet")
    assert mod.benchmark_name("amc=x/y.parquet") == ("amc", "x/y.parquet")


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_from_megatron_checkpoint(tmp_path, tiny):
    conv = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "convert_hf_to_megatron.py"),
            "--hf-dir",
            tiny["model"],
            "--save",
            str(tmp_path / "ckpt"),
            "--no-progress-bar",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
        timeout=300,
    )
    assert conv.returncode == 0, conv.stderr[-3000:]
    args = ["--data", tiny["bench"], "--max-new-tokens", "16", "--max-samples", "6"]
    a = run_cli("--megatron-checkpoint", str(tmp_path / "ckpt"), *args, "--output-dir", str(tmp_path / "a"))
    b = run_cli("--model", tiny["model"], *args, "--output-dir", str(tmp_path / "b"))
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-3000:] + b.stderr[-3000:]
    ra = json.load(open(tmp_path / "a" / "results.json"))["results"]
    rb = json.load(open(tmp_path / "b" / "results.json"))["results"]
    for r in (ra, rb):
        for m in r.values():
            for v in m.values():
                if isinstance(v, dict):
                    v.pop("generate_seconds"), v.pop("grade_seconds")
    assert ra == rb
