"""tools/rewrite_questions.py / megatron_corew.data.rephrase: parsing, retries, the answer check, resume after a kill
(same aligned output as an uninterrupted run), the atomic parquet pair.

Two kinds of engine:
* ``RewriteScript`` below is a STAND-IN for a rollout backend (a ``fakes.ScriptedEngine``: ``generate`` replies
  from a fixed script keyed on the question). It exists to drive the parser / retry / check / resume
  logic through exact, known replies; it is not a model.
* a real tiny Qwen3 rephrasing model (megatron_corew/demo/tiny_rephraser.py) with the embedded engine, end to end
  through the CLI, including a SIGKILL halfway through writing a batch and a resume; its rewrites are checked
  (same numbers, new wording) and the pair loads as Co-rewarding-I data; seeded sampling makes runs reproducible.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes import ScriptedEngine

from megatron_corew.data import SYSTEM_PROMPT, load_paired_examples
from megatron_corew.data.rephrase import (
    END_MARKER,
    START_MARKER,
    RewriteConfig,
    RewriteParseError,
    parse_rewrite,
    read_log,
    run_rewrite,
)
from megatron_corew.utils import faults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOOL = os.path.join(REPO, "tools", "rewrite_questions.py")


def good(q, body=None):
    return f"{START_MARKER}\nORIGINAL:\n{q}\nREWRITE:\n{body or 'In a bakery: ' + q}\n{END_MARKER}"


# ----------------------------------------------------------------------------------------------------------------
# Parser
# ----------------------------------------------------------------------------------------------------------------
def test_parse_rewrite():
    assert parse_rewrite(good("What is 2+2?", "A baker has 2 and 2 more. How many?")) == (
        "What is 2+2?",
        "A baker has 2 and 2 more. How many?",
    )
    assert parse_rewrite("<think>maybe " + good("x") + "</think>\n" + good("q", "r")) == ("q", "r")
    assert (
        parse_rewrite("chatter\n" + good("q", "line 1\nORIGINAL: kept\nline 3") + "\ntrailing")[1]
        == "line 1\nORIGINAL: kept\nline 3"
    )
    assert parse_rewrite(f"{START_MARKER} REWRITE: r {END_MARKER}") == ("", "r")
    for bad, msg in [
        ("no markers at all", "no ### RESULT_START"),
        (f"{END_MARKER} {START_MARKER} ORIGINAL: a REWRITE: b", "no ### RESULT_END"),
        (f"{START_MARKER}\nORIGINAL: a\n{END_MARKER}", "no REWRITE"),
        (f"{START_MARKER} ORIGINAL: a REWRITE:   {END_MARKER}", "empty"),
        ("<think>" + good("q"), "unfinished <think>"),
    ]:
        with pytest.raises(RewriteParseError, match=msg):
            parse_rewrite(bad)


# ----------------------------------------------------------------------------------------------------------------
# Scripted stand-in backend
# ----------------------------------------------------------------------------------------------------------------
QUESTIONS = [f"Question {i}: what is {i} + {i}?" for i in range(8)]


class RewriteScript(ScriptedEngine):
    """STAND-IN backend (not a model): replies from a script keyed on the question in the decoded prompt.

    Rewrite prompts: rows 0, 3, 6 rewrite at once; row 1 replies garbage once; row 4 forgets the end marker once,
    then answers inside a thinking block; row 5 repeats the question verbatim once; row 2 never follows the format.
    Answer-check prompts (the row's messages with the rewrite): boxed 2*i, except row 3's rewrite which is answered
    wrongly; the original question of row 6 is answered wrongly (only matters for --check_answer original)."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        self.calls = []  # (number of prompts, seed, greedy)
        self.asked: dict[int, int] = {}

    def start_call(self, prompts, params):
        self.calls.append((len(prompts), params.seed, params.greedy))

    def _row(self, text):
        for i, q in enumerate(QUESTIONS):
            if q in text or f"Version of {i}" in text:
                return i
        raise AssertionError(f"unknown prompt {text[-200:]!r}")

    def reply(self, text, params):
        return self._reply(text), "stop"

    def _reply(self, text):
        i = self._row(text)
        q = QUESTIONS[i]
        if "Rewrite the math problem" not in text:  # an answer-check prompt
            if f"Version of {i}" in text:
                return f"so \\boxed{{{2 * i + (1 if i == 3 else 0)}}}"
            return f"\\boxed{{{2 * i + (1 if i == 6 else 0)}}}"
        n = self.asked[i] = self.asked.get(i, 0) + 1
        body = f"Version of {i}: a shop sells {i} and {i} more."
        if i == 2 or (i == 1 and n == 1):
            return "I think the answer is 4."
        if i == 4 and n == 1:
            return f"{START_MARKER}\nORIGINAL:\n{q}\nREWRITE:\n{body}"
        if i == 4:
            return "<think>draft</think>" + good(q, body)
        if i == 5 and n == 1:
            return good(q, q)
        return good(q, body)


def write_input(path, n=8, broken_rows=()):
    rows = []
    for i in range(n):
        prompt = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": QUESTIONS[i]}]
        if i in broken_rows:
            prompt = [{"role": "system", "content": SYSTEM_PROMPT}]
        rows.append(
            {
                "level": f"L{i % 3}",
                "data_source": "unit",
                "prompt": prompt,
                "ability": "math",
                "reward_model": {"ground_truth": str(2 * i), "style": "rule"},
                "extra_info": {"index": 100 + i, "split": "train"},
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def outputs(d):
    return {"jsonl": str(d / "rw.jsonl"), "parquet": str(d / "rw.parquet"), "original": str(d / "orig.parquet")}


def run(engine, tok, inp, out, cfg=None, **kw):
    return run_rewrite(
        engine,
        tok,
        inp,
        out["jsonl"],
        out["parquet"],
        out["original"],
        "prompt",
        cfg or RewriteConfig(batch_size=3, max_new_tokens=64),
        log=lambda m: None,
        **kw,
    )


def snapshot(out):
    recs = [json.loads(x) for x in open(out["jsonl"])]
    return recs, pq.read_table(out["parquet"]), pq.read_table(out["original"])


def test_retries_and_aligned_pair(tmp_path, tok):
    inp = write_input(tmp_path / "in.parquet", broken_rows=(7,))
    out = outputs(tmp_path)
    summary = run(RewriteScript(tok), tok, inp, out)
    assert summary["rows"] == 8 and summary["rewritten"] == 6 and summary["failed"] == 2
    assert summary["retried_ok"] == 3
    recs = {r["index"]: r for r in read_log(out["jsonl"])[0].values()}
    assert [recs[i]["status"] for i in range(8)] == ["ok", "ok", "failed", "ok", "ok", "ok", "ok", "failed"]
    assert [recs[i]["attempts"] for i in range(8)] == [1, 2, 3, 1, 2, 2, 1, 0]
    assert "no ### RESULT_START" in recs[1]["errors"][0]
    assert "no ### RESULT_END" in recs[4]["errors"][0] and "verbatim" in recs[5]["errors"][0]
    assert len(recs[2]["errors"]) == 3 and recs[2]["last_output"] == "I think the answer is 4."
    assert "no user message" in recs[7]["errors"][0]
    assert recs[0]["original"] == QUESTIONS[0] and recs[0]["rewritten"] == "Version of 0: a shop sells 0 and 0 more."

    src = pq.read_table(inp)
    orig, reph = pq.read_table(out["original"]), pq.read_table(out["parquet"])
    ok = [0, 1, 3, 4, 5, 6]
    assert orig.equals(src.take(ok))  # the original file: the same input rows, same order, unchanged
    assert reph.schema == src.schema
    for o, r, i in zip(orig.to_pylist(), reph.to_pylist(), ok):
        assert r["prompt"][0] == o["prompt"][0] == {"content": SYSTEM_PROMPT, "role": "system"}
        assert r["prompt"][1] == {"content": recs[i]["rewritten"], "role": "user"}
        assert {k: v for k, v in r.items() if k != "prompt"} == {k: v for k, v in o.items() if k != "prompt"}
    pairs = load_paired_examples(out["original"], out["parquet"], tok)  # our Co-rewarding-I loader accepts it
    assert len(pairs) == 6 and [p[1].messages[1]["content"] for p in pairs] == [recs[i]["rewritten"] for i in ok]


def test_answer_check(tmp_path, tok):
    inp = write_input(tmp_path / "in.parquet")
    out = outputs(tmp_path / "gt")
    cfg = RewriteConfig(batch_size=3, max_new_tokens=64, check_answer="ground_truth")
    run(RewriteScript(tok), tok, inp, out, cfg)
    recs = read_log(out["jsonl"])[0]
    assert recs[3]["status"] == "failed" and "answer check failed" in recs[3]["errors"][0]
    assert recs[0]["check"] == {"answer": "0", "expected": "0", "passed": True}
    assert sorted(i for i, r in recs.items() if r["status"] == "ok") == [0, 1, 4, 5, 6, 7]
    out2 = outputs(tmp_path / "orig")
    run(RewriteScript(tok), tok, inp, out2, RewriteConfig(batch_size=3, max_new_tokens=64, check_answer="original"))
    recs = read_log(out2["jsonl"])[0]
    assert sorted(i for i, r in recs.items() if r["status"] == "ok") == [0, 1, 4, 5, 7]  # 3 and 6 disagree


@pytest.fixture
def crash_instead_of_kill(monkeypatch):
    class Crash(Exception):
        pass

    def crash(point, step):
        if faults.active(point, step):
            raise Crash(point)

    monkeypatch.setattr(faults, "maybe_kill", crash)
    return Crash


def test_resume_after_crash_mid_batch_matches_uninterrupted(tmp_path, tok, monkeypatch, crash_instead_of_kill):
    inp = write_input(tmp_path / "in.parquet")
    ref_out = outputs(tmp_path / "ref")
    ref_engine = RewriteScript(tok)
    run(ref_engine, tok, inp, ref_out)
    ref = snapshot(ref_out)

    out = outputs(tmp_path / "resumed")
    monkeypatch.setenv("COREW_FAULT", "rewrite_mid_batch:1")
    with pytest.raises(crash_instead_of_kill):
        run(RewriteScript(tok), tok, inp, out)
    monkeypatch.delenv("COREW_FAULT")
    lines = open(out["jsonl"]).read().splitlines(keepends=True)
    # batch 0, then half of batch 1's bytes: one whole record of it and a torn one (both discarded on resume)
    assert len(lines) == 5 and all(x.endswith("\n") for x in lines[:4]) and not lines[-1].endswith("\n")
    assert not os.path.exists(out["parquet"]) and not os.path.exists(out["original"])
    engine = RewriteScript(tok)
    summary = run(engine, tok, inp, out)
    assert summary["resumed_batches"] == 1
    assert 0 < len(engine.calls) < len(ref_engine.calls)
    assert engine.calls == ref_engine.calls[-len(engine.calls) :]  # the same calls with the same seeds
    got = snapshot(out)
    assert got[0] == ref[0] and got[1].equals(ref[1]) and got[2].equals(ref[2])
    assert sorted(os.listdir(tmp_path / "resumed")) == [
        "orig.parquet",
        "rw.check.jsonl",
        "rw.jsonl",
        "rw.jsonl.meta.json",
        "rw.parquet",
    ]


def test_crash_between_the_two_parquet_files(tmp_path, tok, monkeypatch, crash_instead_of_kill):
    inp = write_input(tmp_path / "in.parquet")
    out = outputs(tmp_path)
    run(RewriteScript(tok), tok, inp, out)
    first = snapshot(out)
    monkeypatch.setenv("COREW_FAULT", "rewrite_between_outputs:0")
    with pytest.raises(crash_instead_of_kill):
        run(RewriteScript(tok), tok, inp, out)  # all batches done: only the pair is rewritten
    assert os.path.exists(out["original"]) and not os.path.exists(out["parquet"])  # incomplete, never misaligned
    monkeypatch.delenv("COREW_FAULT")
    engine = RewriteScript(tok)
    run(engine, tok, inp, out)
    assert engine.calls == []  # nothing regenerated
    again = snapshot(out)
    assert again[0] == first[0] and again[1].equals(first[1]) and again[2].equals(first[2])


def test_over_an_openai_compatible_server(tmp_path, tok):
    """The same run through a real HTTP server on 127.0.0.1 (serving the scripted stand-in) and the OpenAI-compatible
    client engine gives the same records and files as calling the stand-in directly."""
    from megatron_corew.rollout.openai_client import OpenAICompatEngine
    from megatron_corew.rollout.serve import serve_engine

    inp = write_input(tmp_path / "in.parquet", broken_rows=(7,))
    direct = outputs(tmp_path / "direct")
    run(RewriteScript(tok), tok, inp, direct)
    server = serve_engine(RewriteScript(tok), tok, "127.0.0.1", 0)
    try:
        remote = outputs(tmp_path / "remote")
        client = OpenAICompatEngine(f"http://127.0.0.1:{server.server_address[1]}/v1", tokenizer=tok, concurrency=4)
        run(client, tok, inp, remote)
    finally:
        server.shutdown()
        server.server_close()
    a, b = snapshot(direct), snapshot(remote)
    assert a[0] == b[0] and a[1].equals(b[1]) and a[2].equals(b[2])


def test_resume_refuses_other_settings(tmp_path, tok):
    inp = write_input(tmp_path / "in.parquet")
    out = outputs(tmp_path)
    run(RewriteScript(tok), tok, inp, out)
    with pytest.raises(ValueError, match=r"different run \(differs in \['config'\]\)"):
        run(RewriteScript(tok), tok, inp, out, RewriteConfig(batch_size=4, max_new_tokens=64))
    write_input(tmp_path / "other.parquet", n=6)
    with pytest.raises(ValueError, match="input_questions_sha256"):
        run(RewriteScript(tok), tok, str(tmp_path / "other.parquet"), out)
    s = run(RewriteScript(tok), tok, inp, out, RewriteConfig(batch_size=4, max_new_tokens=64), overwrite=True)
    assert s["resumed_batches"] == 0 and s["rewritten"] == 7  # every row but the never-formatted one


# ----------------------------------------------------------------------------------------------------------------
# The real tiny model, end to end (CLI, SIGKILL, resume)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rephraser():
    """The tiny rephrasing model (megatron_corew/demo/tiny_rephraser.py: a tiny Qwen3 fine-tuned to answer the tool's
    instruction with the reply block), built once into assets/tiny_rephraser (about 30 s)."""
    from megatron_corew.demo.tiny_rephraser import ensure_rephraser

    return ensure_rephraser(os.path.join(REPO, "assets", "tiny_rephraser"))


@pytest.mark.e2e
def test_tiny_model_end_to_end_kill_and_resume(tmp_path, rephraser):
    import torch
    from transformers import AutoTokenizer

    from megatron_corew.demo.tiny_rephraser import INSTRUCTION, INSTRUCTION_FILE
    from megatron_corew.demo.tiny_task import generate_problems, verl_rows, write_parquet
    from megatron_corew.rollout.embedded import EmbeddedEngine
    from megatron_corew.rollout.factory import eos_ids

    n = 6
    problems = generate_problems(num_train=n, num_val=1, seed=3)[0]
    inp = str(tmp_path / "in.parquet")
    write_parquet(verl_rows(problems, "train", "original"), inp)
    flags = [
        "--batch_size",
        "2",
        "--max_tokens",
        "128",
        "--max_attempts",
        "2",
        "--seed",
        "5",
        "--instruction_file",
        os.path.join(rephraser, INSTRUCTION_FILE),
    ]
    cfg = RewriteConfig(batch_size=2, max_new_tokens=128, max_attempts=2, seed=5, instruction=INSTRUCTION)
    killed = outputs(tmp_path / "killed")
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", COREW_FAULT="rewrite_mid_batch:1")
    cmd = [
        sys.executable,
        TOOL,
        "--input_path",
        inp,
        "--output_jsonl",
        killed["jsonl"],
        "--output_parquet",
        killed["parquet"],
        "--output_original_parquet",
        killed["original"],
        "--model_path",
        rephraser,
        *flags,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert "batch 1/3" in proc.stderr and "batch 2/3" not in proc.stderr
    assert not os.path.exists(killed["parquet"]) and not os.path.exists(killed["original"])

    tok = AutoTokenizer.from_pretrained(rephraser)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:

        def engine():
            return EmbeddedEngine(rephraser, eos_ids(rephraser, tok), tok.pad_token_id, max_batch_size=64)

        s = run_rewrite(
            engine(), tok, inp, killed["jsonl"], killed["parquet"], killed["original"], cfg=cfg, log=lambda m: None
        )
        assert s["resumed_batches"] == 1
        ref = outputs(tmp_path / "ref")
        run_rewrite(engine(), tok, inp, ref["jsonl"], ref["parquet"], ref["original"], cfg=cfg, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    got, want = snapshot(killed), snapshot(ref)
    assert got[0] == want[0] and got[1].equals(want[1]) and got[2].equals(want[2])
    recs = got[0]
    assert [r["index"] for r in recs] == list(range(n))
    # the tiny rephraser really rewrites: every question becomes a story with the same two numbers
    ok = [r for r in recs if r["status"] == "ok"]
    assert len(ok) >= n - 1, recs
    for r in ok:
        p = problems[r["index"]]
        assert r["rewritten"] != p.original and str(p.a) in r["rewritten"] and str(p.b) in r["rewritten"], r
    # the aligned pair loads as Co-rewarding-I training data (same ground truths, row by row)
    pairs = load_paired_examples(killed["original"], killed["parquet"], tok)
    assert len(pairs) == len(ok)
    assert all(o.ground_truth == r.ground_truth and o.prompt_ids != r.prompt_ids for o, r in pairs)
