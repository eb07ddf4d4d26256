"""tools/preprocess_data.py and megatron_corew.data.sources: source formats -> verl schema -> our loader.

Shows: (1) schema round trip: preprocess -> load_examples -> the chat-template prompt equals the rendering of the
same question in the reference's released layouts (system + user messages); (2) malformed inputs are reported with
file and row and skipped or rejected per --on-bad-row; a corrupt parquet or a missing column is rejected;
(3) a SIGKILL while writing leaves no half-written output (previous output intact, stale temp cleaned next run).
Real third-party data: champ-dataset (270 competition problems) and reasoning-gym (GSM-style generators).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from megatron_corew.data import SYSTEM_PROMPT, load_examples
from megatron_corew.data.sources import SOURCES, PreprocessError, preprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOOL = os.path.join(REPO, "tools", "preprocess_data.py")


def run_tool(*args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=REPO, **(env_extra or {}))
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, env=env, timeout=120)


def write_jsonl(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


def reference_render(tok, question):
    """What the reference (verl RLHFDataset) renders for a released row: the chat template over its prompt column."""
    msgs = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
    return tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


# Each source in (a small sample of) its publisher's own format: (records, file type, expected ground truths)
Q1 = "How many vertical asymptotes does the graph of $y=\\frac{2}{x^2+x-6}$ have?"
Q2 = "Janet has 3 apples and buys 1,200 more. How many apples does she have?"
SOURCE_SAMPLES = {
    "math": (
        [
            {
                "problem": Q1,
                "level": "Level 3",
                "type": "Algebra",
                "solution": "The denominator factors ... so there are $\\boxed{2}$ vertical asymptotes.",
            },
            {
                "problem": "Simplify $\\frac{4}{8}$.",
                "level": "Level 1",
                "type": "Prealgebra",
                "solution": "We get $\\boxed{\\frac{1}{2}}$.",
            },
        ],
        "parquet",
        ["2", "\\frac{1}{2}"],
    ),
    "dapo": (
        [
            {
                "prompt": Q1,
                "solution": "2",
                "data_source": "math_dapo",
                "source_prompt": [{"role": "user", "content": "Solve ..." + Q1}],
                "ability": "MATH",
                "reward_model": {"ground_truth": "2", "style": "rule-lighteval/MATH_v2"},
                "extra_info": {"index": "x"},
            }
        ],
        "parquet",
        ["2"],
    ),
    "openrs": (
        [
            {"problem": Q1, "solution": "... $\\boxed{2}$", "answer": "2", "level": "Easy"},
            {"problem": "Find $1+1$.", "solution": "So $\\boxed{2}$.", "answer": None, "level": "Easy"},
        ],
        "jsonl",
        ["2", "2"],
    ),
    "gsm8k": ([{"question": Q2, "answer": "3 + 1200 = <<3+1200=1203>>1203\n#### 1,203"}], "parquet", ["1203"]),
    "math500": (
        [
            {
                "problem": Q1,
                "solution": "... $\\boxed{2}$.",
                "answer": "2",
                "subject": "Algebra",
                "level": 3,
                "unique_id": "test/algebra/1.json",
            }
        ],
        "jsonl",
        ["2"],
    ),
    "aime": ([{"ID": "2024-I-1", "Problem": Q1, "Solution": "...", "Answer": 204}], "json", ["204"]),
    "amc": (
        [
            {"id": 0, "problem": Q1, "answer": 142.0, "url": "https://example.org/amc"},
            {"id": 1, "problem": Q2, "answer": 2.5, "url": "https://example.org/amc"},
        ],
        "jsonl",
        ["142", "2.5"],
    ),
}


def write_source(tmp_path, name, records, kind):
    path = tmp_path / f"{name}_src.{kind}"
    if kind == "parquet":
        pq.write_table(pa.Table.from_pylist(records), str(path))
    elif kind == "jsonl":
        write_jsonl(path, records)
    else:
        path.write_text(json.dumps(records))
    return str(path)


@pytest.mark.parametrize("name", sorted(SOURCE_SAMPLES))
def test_schema_round_trip_every_source(tmp_path, tok, name):
    records, kind, gts = SOURCE_SAMPLES[name]
    src = write_source(tmp_path, name, records, kind)
    summary = preprocess(name, [src], str(tmp_path / "out"))
    out = summary["output"]
    assert out == str(tmp_path / "out" / f"{SOURCES[name].default_split}.parquet")
    assert summary["rows_out"] == len(records) and summary["skipped"] == 0
    table = pq.read_table(out)
    assert table.column_names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    ds = load_examples(out, tok)
    qcol = {"dapo": "prompt", "gsm8k": "question", "aime": "Problem"}.get(name, "problem")
    for i, (ex, rec, gt) in enumerate(zip(ds, records, gts)):
        q = rec[qcol]
        assert ex.messages == [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q}]
        assert ex.ground_truth == gt
        assert ex.data_source == SOURCES[name].hub_id
        assert ex.extra_info["index"] == i and ex.extra_info["split"] == SOURCES[name].default_split
        assert ex.prompt_text == reference_render(tok, q)
        assert ex.prompt_ids == tok(reference_render(tok, q), add_special_tokens=False)["input_ids"]


def test_rendering_matches_reference_release_layouts(tmp_path, tok):
    """Our output and rows written in the reference's exact released layouts (MATH: level/type columns + pandas
    metadata; AMC-TTT: extra_info {id, index, source}; OpenRS: a leading solution column) render identically."""
    import pandas as pd

    src = write_source(tmp_path, "math", SOURCE_SAMPLES["math"][0][:1], "parquet")
    ours = load_examples(preprocess("math", [src], str(tmp_path / "ours.parquet"))["output"], tok)[0]
    msgs = [{"content": SYSTEM_PROMPT, "role": "system"}, {"content": Q1, "role": "user"}]
    rm = {"ground_truth": "2", "style": "rule"}
    ref_math = tmp_path / "ref_math.parquet"
    pd.DataFrame(
        [
            {
                "level": "Level 3",
                "type": "Algebra",
                "data_source": "DigitalLearningGmbH/MATH-lighteval",
                "prompt": msgs,
                "ability": "math",
                "reward_model": rm,
                "extra_info": {"index": 0, "split": "test"},
            }
        ]
    ).to_parquet(ref_math, index=False)
    assert b"pandas" in (pq.read_schema(ref_math).metadata or {})
    ref_amc = tmp_path / "ref_amc.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "data_source": "DigitalLearningGmbH/MATH-lighteval",
                    "prompt": msgs,
                    "ability": "math",
                    "reward_model": {"ground_truth": "142.0", "style": "rule"},
                    "extra_info": {"id": "0", "index": 0, "source": "amc"},
                }
            ]
        ),
        ref_amc,
    )
    ref_openrs = tmp_path / "ref_openrs.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "solution": "... \\boxed{2}",
                    "data_source": "x",
                    "prompt": msgs,
                    "ability": "math",
                    "reward_model": rm,
                    "extra_info": {"index": 0, "level": "Easy", "split": "train"},
                }
            ]
        ),
        ref_openrs,
    )
    for ref in (ref_math, ref_amc, ref_openrs):
        ex = load_examples(str(ref), tok)[0]
        assert ex.prompt_text == ours.prompt_text == reference_render(tok, Q1)
        assert ex.prompt_ids == ours.prompt_ids
        assert ex.messages == ours.messages


def test_user_prompt_style_and_overrides(tmp_path, tok):
    src = write_source(tmp_path, "gsm8k", SOURCE_SAMPLES["gsm8k"][0], "parquet")
    out = preprocess("gsm8k", [src], str(tmp_path / "o"), prompt_style="user", data_source="gsm8k", split="train")
    ex = load_examples(out["output"], tok)[0]
    assert out["output"].endswith("train.parquet")
    assert ex.messages == [{"role": "user", "content": Q2 + " " + SYSTEM_PROMPT}]
    assert ex.data_source == "gsm8k" and ex.extra_info["split"] == "train"


def test_directory_input_picks_the_split(tmp_path, tok):
    snap = tmp_path / "snapshot" / "main"
    snap.mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist([{"question": Q2, "answer": "#### 1203"}]), str(snap / "test-00000-of-00001.parquet")
    )
    pq.write_table(
        pa.Table.from_pylist([{"question": "x?", "answer": "#### 1"}] * 3), str(snap / "train-00000-of-00001.parquet")
    )
    out = preprocess("gsm8k", [str(tmp_path / "snapshot")], str(tmp_path / "o"))
    assert out["rows_out"] == 1 and out["split"] == "test"
    with pytest.raises(PreprocessError, match="no .* file whose name starts with the split 'validation'"):
        preprocess("gsm8k", [str(tmp_path / "snapshot")], str(tmp_path / "o"), split="validation")


# ----------------------------------------------------------------------------------------------------------------
# Malformed inputs
# ----------------------------------------------------------------------------------------------------------------
BAD_MATH_LINES = [
    {"problem": "Good one?", "solution": "$\\boxed{1}$"},  # row 0: ok
    {"problem": "No answer column value", "solution": None},  # row 1: missing answer
    {"problem": "   ", "solution": "$\\boxed{3}$"},  # row 2: empty question
    {"problem": "Number instead of text", "solution": 4},  # row 3: non-string answer
    "{not json",  # row 4: broken line
    ["a", "list"],  # row 5: not an object
    {"problem": "Unboxed", "solution": "the answer is 5"},  # row 6: no boxed answer
    {"problem": 17, "solution": "$\\boxed{7}$"},  # row 7: non-string question
    {"problem": "Good two?", "solution": "$\\boxed{8}$"},  # row 8: ok
]


def test_malformed_rows_error_names_file_and_row(tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", BAD_MATH_LINES)
    out = tmp_path / "out"
    proc = run_tool("--dataset", "math", "--input", src, "--output", str(out))
    assert proc.returncode == 2
    assert f"{src}: row 1 (line 2):" in proc.stderr and "'solution' is missing or empty" in proc.stderr
    assert not out.exists() or not os.listdir(out)  # nothing written


def test_malformed_rows_skipped_and_reported(tmp_path, tok):
    src = write_jsonl(tmp_path / "bad.jsonl", BAD_MATH_LINES)
    proc = run_tool("--dataset", "math", "--input", src, "--output", str(tmp_path / "out"), "--on-bad-row", "skip")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["rows_in"] == 9 and summary["rows_out"] == 2 and summary["skipped"] == 7
    reasons = {int(s.split(": row ")[1].split()[0]): s for s in summary["skipped_rows"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7]
    assert all(s.startswith(src) for s in reasons.values())
    assert "empty" in reasons[2] and "must be a string (got int" in reasons[3] and "not valid JSON" in reasons[4]
    assert "expected an object" in reasons[5] and "boxed" in reasons[6] and "question column" in reasons[7]
    for r in reasons.values():  # each one also printed on stderr
        assert r in proc.stderr
    ds = load_examples(summary["output"], tok)
    assert [e.ground_truth for e in ds] == ["1", "8"]
    assert [e.extra_info["index"] for e in ds] == [0, 8]  # the source row numbers


def test_non_string_answers(tmp_path):
    """Numbers are the source format of AIME/AMC answers (formatted: 142.0 -> '142'); elsewhere they are malformed."""
    src = write_jsonl(tmp_path / "m500.jsonl", [{"problem": "p", "answer": 7, "solution": "no box"}])
    with pytest.raises(
        PreprocessError, match=r"m500.jsonl: row 0 \(line 1\): 'answer' must be a string \(got int: 7\)"
    ):
        preprocess("math500", [src], str(tmp_path / "o"))
    src = write_jsonl(
        tmp_path / "amc.jsonl",
        [
            {"problem": "p", "answer": [1, 2]},
            {"problem": "q", "answer": True},
            {"problem": "r", "answer": float("nan")},
            {"problem": "s", "answer": 3},
        ],
    )
    res = preprocess("amc", [src], str(tmp_path / "o"), on_bad_row="skip")
    assert res["rows_out"] == 1 and res["skipped"] == 3
    assert "got list" in res["skipped_rows"][0] and "got bool" in res["skipped_rows"][1]
    assert "finite" in res["skipped_rows"][2]


def test_missing_columns_rejected_whatever_the_flag(tmp_path):
    src = write_source(tmp_path, "x", [{"question": "q?", "solution": "\\boxed{1}"}], "parquet")
    for flag in ("error", "skip"):
        proc = run_tool("--dataset", "math", "--input", src, "--output", str(tmp_path / "o"), "--on-bad-row", flag)
        assert proc.returncode == 2
        assert f"{src}: missing required column 'problem'" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_corrupt_parquet_rejected(tmp_path):
    src = write_source(tmp_path, "math", SOURCE_SAMPLES["math"][0] * 50, "parquet")
    data = open(src, "rb").read()
    bad = tmp_path / "corrupt.parquet"
    bad.write_bytes(data[: len(data) // 2])
    proc = run_tool("--dataset", "math", "--input", str(bad), "--output", str(tmp_path / "o"))
    assert proc.returncode == 2 and f"{bad}: cannot read as a parquet file" in proc.stderr
    bad.write_bytes(b"PAR1" + bytes(range(256)) * 4 + b"PAR1")
    proc = run_tool("--dataset", "math", "--input", str(bad), "--output", str(tmp_path / "o"), "--on-bad-row", "skip")
    assert proc.returncode == 2 and str(bad) in proc.stderr
    assert not (tmp_path / "o").exists()


def test_no_usable_rows_and_missing_file(tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", BAD_MATH_LINES[1:3])
    with pytest.raises(PreprocessError, match="no usable rows"):
        preprocess("math", [src], str(tmp_path / "o"), on_bad_row="skip")
    with pytest.raises(PreprocessError, match="file not found"):
        preprocess("math", [str(tmp_path / "nope.jsonl")], str(tmp_path / "o"))


# ----------------------------------------------------------------------------------------------------------------
# Kill safety
# ----------------------------------------------------------------------------------------------------------------
def test_kill_while_writing_leaves_no_partial_output(tmp_path, tok):
    """SIGKILL between writing the temp file and renaming it (COREW_FAULT=before_commit:0): the target is absent
    (first run) or still the previous complete file; the next run removes the stale temp and writes the output."""
    out_dir = tmp_path / "out"
    target = out_dir / "train.parquet"
    src1 = write_source(tmp_path, "math", SOURCE_SAMPLES["math"][0][:1], "parquet")
    src2 = write_source(tmp_path, "math2", SOURCE_SAMPLES["math"][0], "parquet")
    fault = {"COREW_FAULT": "before_commit:0"}

    proc = run_tool("--dataset", "math", "--input", src1, "--output", str(out_dir), env_extra=fault)
    assert proc.returncode == -9
    assert not target.exists()
    assert [n for n in os.listdir(out_dir) if ".tmp-" in n]  # the killed writer's temp file, not the target

    assert run_tool("--dataset", "math", "--input", src1, "--output", str(out_dir)).returncode == 0
    assert os.listdir(out_dir) == ["train.parquet"]  # stale temp removed
    before = target.read_bytes()

    proc = run_tool("--dataset", "math", "--input", src2, "--output", str(out_dir), env_extra=fault)
    assert proc.returncode == -9
    assert target.read_bytes() == before and len(load_examples(str(target), tok)) == 1  # previous output intact

    assert run_tool("--dataset", "math", "--input", src2, "--output", str(out_dir)).returncode == 0
    assert os.listdir(out_dir) == ["train.parquet"] and len(load_examples(str(target), tok)) == 2


# ----------------------------------------------------------------------------------------------------------------
# Real third-party data
# ----------------------------------------------------------------------------------------------------------------
def test_champ_competition_problems(tmp_path, tok):
    champ = pytest.importorskip("champ_dataset", reason="champ-dataset not installed (pip install champ-dataset)")
    problems = list(champ.load("v0").problems.values())
    assert len(problems) == 270
    src = write_jsonl(
        tmp_path / "champ.jsonl",
        [{"id": p.identifier, "problem": p.text, "answer": p.answer, "category": p.category} for p in problems],
    )
    res = preprocess("amc", [src], str(tmp_path / "o"), split="test", on_bad_row="error")
    assert res["rows_out"] == 270
    ds = load_examples(res["output"], tok)
    by_id = {p.identifier: p for p in problems}
    for ex in ds:
        p = by_id[ex.extra_info["id"]]
        assert ex.ground_truth == p.answer.strip()
        assert ex.prompt_text == reference_render(tok, p.text)


def test_reasoning_gym_gsm_style(tmp_path, tok):
    rg = pytest.importorskip("reasoning_gym", reason="reasoning-gym not installed (pip install reasoning-gym)")
    items = list(rg.create_dataset("gsm_symbolic", size=20, seed=7))
    # GSM8K's own format: the worked answer ends with '#### <number>'
    recs = [{"question": x["question"], "answer": f"{x['metadata']['answer_cot']}\n#### {x['answer']}"} for x in items]
    src = tmp_path / "gsm.parquet"
    pq.write_table(pa.Table.from_pylist(recs), str(src))
    res = preprocess("gsm8k", [str(src)], str(tmp_path / "o"))
    ds = load_examples(res["output"], tok)
    assert [e.ground_truth for e in ds] == [x["answer"].replace(",", "") for x in items]
    assert all(e.prompt_text == reference_render(tok, x["question"]) for e, x in zip(ds, items))


def run_main(capsys, *args):
    """tools/preprocess_data.py in this process (faster than a subprocess): (exit code, stderr lines)."""
    from tools import preprocess_data

    capsys.readouterr()
    rc = preprocess_data.main(list(args))
    return rc, capsys.readouterr().err.strip().splitlines()


def _qa(tmp_path, name, pairs):
    return write_jsonl(tmp_path / f"{name}.jsonl", [{"question": q, "answer": a} for q, a in pairs])


QA_TEST = [("Calculate 2 + 3.", 5), ("Calculate 7 - 9.", "-2")]
QA_POOL = [("Calculate 1 + 1.", "2"), ("Calculate 2 + 3.", "5"), ("Calculate 4 * 2.", "8"), ("Calculate 9 - 3.", "6")]


@pytest.mark.parametrize("style", ["chat", "inline"])
def test_few_shot_prompts_and_metadata(tmp_path, tok, style, capsys):
    """Every row gets the same K worked examples from the pool file, never a question of the input (2 + 3 is in
    both: left out), in the chosen layout, and the parquet metadata says which; load_examples renders exactly
    those messages (what training, validation and tools/evaluate.py read)."""
    src, pool = _qa(tmp_path, "test", QA_TEST), _qa(tmp_path, "pool", QA_POOL)
    out = str(tmp_path / "fs.parquet")
    flags = ["--dataset", "qa", "--input", src, "--few-shot", "2", "--few-shot-from", pool]
    flags += ["--few-shot-style", style, "--few-shot-seed", "1"]
    rc, err = run_main(capsys, *flags, "--output", out)
    assert rc == 0, err
    meta = json.loads(pq.read_schema(out).metadata[b"few_shot"])
    assert meta["k"] == 2 and meta["style"] == style and meta["left_out_as_in_inputs"] == 1
    shots = [(e["question"], e["reply"]) for e in meta["examples"]]
    assert len(shots) == 2 and all(q != "Calculate 2 + 3." for q, _ in shots)
    answers = dict(QA_POOL)
    assert all(r == f"The answer is \\boxed{{{answers[q]}}}." for q, r in shots)
    ds = load_examples(out, tok)
    for ex, (q, gt) in zip(ds, QA_TEST):
        assert ex.ground_truth == str(gt)
        if style == "chat":
            want = [{"role": "system", "content": SYSTEM_PROMPT}]
            for sq, sr in shots:
                want += [{"role": "user", "content": sq}, {"role": "assistant", "content": sr}]
            want.append({"role": "user", "content": q})
        else:
            text = "".join(f"Question: {sq}\nAnswer: {sr}\n\n" for sq, sr in shots) + f"Question: {q}"
            want = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]
        assert ex.messages == want
        assert ex.prompt_text == tok.apply_chat_template(want, add_generation_prompt=True, tokenize=False)
    again = str(tmp_path / "again.parquet")
    assert run_main(capsys, *flags, "--output", again)[0] == 0
    assert pq.read_table(again).equals(pq.read_table(out))  # a fixed seed draws the same examples


def test_few_shot_bad_input_refused_in_one_line(tmp_path, capsys):
    src, pool = _qa(tmp_path, "test", QA_TEST), _qa(tmp_path, "pool", QA_POOL)
    out = str(tmp_path / "x.parquet")
    cases = [
        (["--few-shot", "2", "--few-shot-from", src], f"error: --few-shot-from {src} is also an --input"),
        (["--few-shot", "2"], "error: --few-shot needs --few-shot-from FILE"),
        (["--few-shot", "4", "--few-shot-from", pool], "usable example(s) not in the inputs, --few-shot 4 needs 4"),
        (["--few-shot-from", pool], "error: --few-shot-from does not apply without --few-shot K"),
        (["--few-shot", "1", "--few-shot-from", pool, "--few-shot-answer", "x"], "has no {answer} placeholder"),
    ]
    for flags, message in cases:
        rc, lines = run_main(capsys, "--dataset", "qa", "--input", src, "--output", out, *flags)
        assert rc == 2 and len(lines) == 1 and message in lines[0], (flags, lines)
        assert not os.path.exists(out)
