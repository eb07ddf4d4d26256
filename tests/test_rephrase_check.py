"""The rephrasing quality gate (megatron_corew/data/rephrase_check.py, question_facts.py): hand-built pairs for each
failure flagged with the right reason and faithful rewrites kept (expectations written by hand); the realistic
sample of benchmarks/rephrase_sample.py (real champ-dataset / gsm_symbolic problems, rewritten by hand); the
journal verdicts and --on-bad-rephrase of tools/rewrite_questions.py with a scripted stand-in backend; the
standalone tools/check_rephrasings.py; the paired loader reading a check file; --prompt-key for the paired and
validation files; the tiny rephrasing model's 200 rewrites end to end (e2e)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes import ScriptedEngine

from megatron_corew.data import SYSTEM_PROMPT, DataError, load_paired_examples
from megatron_corew.data.question_facts import formulas_of, numbers_of, request_of
from megatron_corew.data.rephrase import END_MARKER, START_MARKER, RewriteConfig, read_log, run_rewrite
from megatron_corew.data.rephrase_check import (
    CheckConfig,
    check_pair,
    content_tokens,
    lexical_distance,
    pair_sha,
    read_check_file,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

# ----------------------------------------------------------------------------------------------------------------
# Hand-built pairs: (original, rewrite, the reasons the check must give; [] = kept)
# ----------------------------------------------------------------------------------------------------------------
ORIG_CANDY = "Lena buys 12 candies for $3 each and gives 5 of them to her friends. How many candies does she keep?"
ORIG_CARDS = (
    "Two cards are drawn without replacement from a deck of 52 cards. What is the probability that both are aces? "
    "Express your answer as a common fraction."
)
ORIG_RUN = "A runner covers 8 kilometers in 40 minutes. At this pace, how many minutes does 10 kilometers take?"
ORIG_FRAC = "What is $\\frac{1}{2}$ of $1{,}000$ plus three?"
ORIG_EQ = "If $2x + 5 = 17$, what is the value of $x^2$?"

PAIRS = [
    # faithful rewrites
    (ORIG_CANDY, "Omar picks up 12 toffees at $3 apiece and hands 5 to his classmates. How many toffees remain?", []),
    (
        ORIG_CARDS,
        "From a 52-card pack, a dealer takes two cards without putting the first back. What is the probability "
        "that the two cards are both aces? Express your answer as a common fraction.",
        [],
    ),
    (ORIG_RUN, "A cyclist rides 8 kilometers in 40 minutes. Keeping that speed, how many minutes will 10 km take?", []),
    (ORIG_FRAC, "A farm has 1000 hens and sells 1/2 of them, then buys 3 more. What number is that?", []),
    (ORIG_EQ, "A gardener's number x satisfies 2x+5=17. Find x^2.", []),
    # each failure
    (
        ORIG_CANDY,
        "Omar picks up 12 toffees at $4 apiece and hands 5 to his classmates. How many toffees remain?",
        ["number_changed"],
    ),
    (
        ORIG_CARDS,
        "From a 52-card pack, a dealer takes two cards. What is the probability that the two cards are both aces? "
        "Express your answer as a common fraction.",
        ["condition_dropped"],
    ),
    (
        ORIG_RUN,
        "A cyclist rides 8 miles in 40 minutes. Keeping that speed, how many minutes will 10 miles take?",
        ["unit_changed"],
    ),
    (
        ORIG_RUN,
        "A runner covers 8 kilometers in 40 minutes. At this pace, how many minutes do 10 kilometers take?",
        ["near_copy"],
    ),
    (ORIG_CANDY, ORIG_CANDY, ["near_copy"]),
    (ORIG_CARDS, "Describe your favourite holiday destination and explain why you like it.", ["unrelated"]),
    (
        ORIG_CARDS,
        "From a 52-card pack, a dealer takes two cards without putting the first back. How likely are both to be "
        "aces? Give a decimal.",
        ["request_changed"],
    ),
    (ORIG_EQ, "A gardener's number x satisfies 2x+5=19. Find x^2.", ["math_changed"]),
]


@pytest.mark.parametrize(
    "original,rewrite,reasons", PAIRS, ids=[f"{i}-{'+'.join(r) or 'kept'}" for i, (_, _, r) in enumerate(PAIRS)]
)
def test_hand_built_pairs(original, rewrite, reasons):
    c = check_pair(original, rewrite)
    if not reasons:
        assert c.verdict == "kept" and c.reasons == [], c.as_dict()
    else:
        assert c.verdict == "flagged" and set(reasons) <= set(c.reasons), c.as_dict()
    # the changed-number and changed-unit cases name exactly what changed
    if reasons == ["number_changed"]:
        assert c.details["number_changed"] == {"missing": ["3"], "extra": ["4"]}
    if reasons == ["unit_changed"]:
        assert c.details["unit_changed"]["missing"] == ["km"] and c.details["unit_changed"]["extra"] == ["mile"]
    if reasons == ["condition_dropped"]:
        assert c.details["condition_dropped"] == {"missing": ["without replacement"]}


def test_number_normalisation():
    def strong(text):
        digits, words, _ = numbers_of(text)
        return digits + words

    half = Fraction(1, 2)
    assert strong("$\\frac{1}{2}$") == strong("1/2") == strong("\\dfrac12") == strong("0.5") == Counter({half: 1})
    assert strong("1,000 and 2{,}500 and 3,000,000") == Counter({1000: 1, 2500: 1, 3000000: 1})
    assert strong("1, 000") == Counter({1: 1, 0: 1})  # a list, not a thousands separator
    assert strong("twenty-five sheep, three hundred goats") == Counter({25: 1, 300: 1})
    assert strong("costs $3.50 each") == Counter({Fraction(7, 2): 1})
    _, _, weak = numbers_of("one of them, twice, a dozen")
    assert weak == Counter({1: 1, 2: 1, 12: 1})
    # '$' before a number that nothing closes is money; '$...$' is math
    assert (
        check_pair("It costs $5.", "It costs 5 dollars, a good deal for shoppers.").details.get("unit_changed") is None
    )
    assert "unit_changed" not in check_pair("Find $5x$ when $x=2$.", "Compute $5x$ if x is 2 today.").reasons


def test_formulas_and_request():
    assert formulas_of("Solve $x^2 + 3x - 4 = 0$ and $\\dfrac{a}{b} = 2$.") == Counter({"x^2+3x-4=0": 1, "a/b=2": 1})
    assert formulas_of("Find p^2-2*q^2=1 for a pen-pal with 3 + 4 = 7 apples.") == Counter({"p^2-2*q^2=1": 1})
    assert formulas_of("What is $5$ plus $\\frac{1}{2}+3$?") == Counter()  # numbers only: the number check's job
    assert request_of("Tom has 3 cats. He buys 2 more. How many cats? Give the result as a number.") == (
        "How many cats? Give the result as a number."
    )
    assert request_of("Compute $1.5 + 2$. Express your answer as a decimal.") == "Express your answer as a decimal."


def test_lexical_distance_against_hand_computation():
    a, b = "Tom has 3 red apples.", "Tom has 3 green apples and pears!"
    assert content_tokens(a) == ["tom", "3", "red", "apples"]
    assert content_tokens(b) == ["tom", "3", "green", "apples", "pears"]
    dist, bleu = lexical_distance(a, b)
    assert dist == pytest.approx(2 / 5)  # substitute red -> green, insert pears; longer count 5
    assert 0 < bleu < 1 and lexical_distance(a, a) == (0.0, 1.0)
    assert lexical_distance("alpha beta", "gamma delta")[0] == 1.0


def test_no_nltk_data_needed(monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [])  # any data lookup (punkt, stopwords) would raise LookupError
    assert check_pair(ORIG_CANDY, PAIRS[0][1]).verdict == "kept"


def test_thresholds_and_checks_are_settings():
    c = check_pair(ORIG_RUN, PAIRS[8][1], CheckConfig(min_distance=0.0))
    assert c.verdict == "kept"
    c = check_pair(ORIG_CANDY, PAIRS[5][1], CheckConfig(checks=("units", "distance")))
    assert c.verdict == "kept"
    with pytest.raises(ValueError, match="unknown rephrase check"):
        CheckConfig(checks=("numbers", "spelling"))


# ----------------------------------------------------------------------------------------------------------------
# The realistic sample (benchmarks/rephrase_sample.py)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.slow  # reading champ-dataset takes ~5-10 s
def test_realistic_sample():
    pytest.importorskip("champ_dataset", reason="champ-dataset not installed")
    pytest.importorskip("reasoning_gym", reason="reasoning-gym not installed")
    from rephrase_sample import resolve

    items = resolve()
    assert len(items) >= 40
    for it in items:
        c = check_pair(it["original"], it["rewrite"])
        if it["label"] == "faithful":
            assert c.verdict == "kept", (it, c.as_dict())
        elif it["label"] == "broken":
            assert it["reason"] in c.reasons, (it, c.as_dict())


# ----------------------------------------------------------------------------------------------------------------
# rewrite_questions: journal verdicts, --on-bad-rephrase, the check file, the paired loader
# ----------------------------------------------------------------------------------------------------------------
ORIG_EGGS = "A box holds 4 rows of 6 eggs. How many eggs are in 7 boxes?"
# kept, number, kept, unit, kept, verbatim (one question each); the verbatim copy is let through the tool's own
# identical-rewrite rejection (allow_identical) to reach the check
SCRIPT = [PAIRS[3], PAIRS[5], PAIRS[4], PAIRS[7], PAIRS[1], (ORIG_EGGS, ORIG_EGGS, ["near_copy"])]


class Rephraser(ScriptedEngine):
    """STAND-IN backend (not a model): the rewrite of each question is fixed by SCRIPT."""

    def reply(self, text, params):
        for original, rewrite, _ in SCRIPT:
            if original in text:
                return f"{START_MARKER}\nORIGINAL:\n{original}\nREWRITE:\n{rewrite}\n{END_MARKER}", "stop"
        raise AssertionError(text[-300:])


def write_questions(path, prompt_key="prompt"):
    rows = [
        {
            prompt_key: [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": o}],
            "reward_model": {"ground_truth": str(i), "style": "rule"},
            "extra_info": {"index": i, "split": "train"},
            "data_source": "unit",
        }
        for i, (o, _, _) in enumerate(SCRIPT)
    ]
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def user_questions(path, key="prompt"):
    return [
        [m for m in cell if m["role"] == "user"][-1]["content"] for cell in pq.read_table(path).column(key).to_pylist()
    ]


@pytest.mark.parametrize("policy", ["keep", "drop", "original"])
def test_rewrite_journal_policy_and_loader(tmp_path, tok, policy, caplog):
    inp = write_questions(tmp_path / "in.parquet")
    out = {k: str(tmp_path / f"{k}.{ext}") for k, ext in (("jsonl", "jsonl"), ("rw", "parquet"), ("orig", "parquet"))}
    cfg = RewriteConfig(batch_size=4, max_new_tokens=64, allow_identical=True, on_bad_rephrase=policy)
    s = run_rewrite(Rephraser(tok), tok, inp, out["jsonl"], out["rw"], out["orig"], cfg=cfg, log=lambda m: None)
    records, bad = read_log(out["jsonl"])
    assert bad == 0 and len(records) == 6
    for i, (_, _, reasons) in enumerate(SCRIPT):  # every verdict in the journal, with the right reason
        chk = records[i]["rephrase_check"]
        assert chk["verdict"] == ("flagged" if reasons else "kept") and set(reasons) <= set(chk["reasons"])
    assert s["rephrase_check"]["kept"] == 3 and s["rephrase_check"]["flagged"] == 3
    assert s["rephrase_check"]["by_reason"]["number_changed"] == 1
    originals, rewrites = user_questions(out["orig"]), user_questions(out["rw"])
    flagged = {1, 3, 5}
    if policy == "drop":
        assert originals == [SCRIPT[i][0] for i in (0, 2, 4)] and rewrites == [SCRIPT[i][1] for i in (0, 2, 4)]
    elif policy == "original":
        assert originals == [o for o, _, _ in SCRIPT]
        assert rewrites == [o if i in flagged else r for i, (o, r, _) in enumerate(SCRIPT)]
    else:
        assert originals == [o for o, _, _ in SCRIPT] and rewrites == [r for _, r, _ in SCRIPT]
    # the check file is aligned with the pair, and the loader drops what it flagged, saying why in one line
    check = read_check_file(s["output_check"])
    assert s["output_check"] == str(tmp_path / "rw.check.jsonl") and len(check) == len(originals)
    assert [c["sha"] for c in check] == [pair_sha(o, r) for o, r in zip(originals, rewrites)]
    with caplog.at_level(logging.INFO, logger="megatron_corew.data.dataset"):
        pairs = load_paired_examples(out["orig"], out["rw"], tok, rephrase_check=s["output_check"])
    assert len(pairs) == 3 and [o.extra_info["index"] for o, _ in pairs] == [0, 2, 4] or policy == "original"
    line = pairs.summary()
    assert any(line in r.getMessage() for r in caplog.records)
    if policy == "keep":
        assert line.startswith("paired data: 3 of 6 pairs kept; dropped: 3 flagged by the rephrasing check")
        assert "number_changed 1" in line and "unit_changed 1" in line and "near_copy" in line
    if policy == "original":
        assert len(pairs) == 6 and "3 kept with the original question" in line


def test_loader_refuses_a_check_file_of_another_pair(tmp_path, tok):
    inp = write_questions(tmp_path / "in.parquet")
    out = {k: str(tmp_path / f"{k}.{ext}") for k, ext in (("jsonl", "jsonl"), ("rw", "parquet"), ("orig", "parquet"))}
    cfg = RewriteConfig(batch_size=8, max_new_tokens=64, allow_identical=True)
    s = run_rewrite(Rephraser(tok), tok, inp, out["jsonl"], out["rw"], out["orig"], cfg=cfg, log=lambda m: None)
    lines = open(s["output_check"]).read().splitlines()
    wrong = str(tmp_path / "wrong.jsonl")
    rec = json.loads(lines[2])
    rec["sha"] = pair_sha("another", "question")
    open(wrong, "w").write("\n".join(lines[:2] + [json.dumps(rec)] + lines[3:]) + "\n")
    with pytest.raises(DataError, match=r"wrong\.jsonl: row 2: the check record is not of this pair"):
        load_paired_examples(out["orig"], out["rw"], tok, rephrase_check=wrong)
    open(wrong, "w").write("\n".join(lines[:4]) + "\n")
    with pytest.raises(DataError, match=r"wrong\.jsonl: 4 check records for a pair of 6 rows"):
        load_paired_examples(out["orig"], out["rw"], tok, rephrase_check=wrong)


# ----------------------------------------------------------------------------------------------------------------
# tools/check_rephrasings.py on an existing pair
# ----------------------------------------------------------------------------------------------------------------
def run_tool(*args):
    """tools/check_rephrasings.py's main in this process (a subprocess would spend seconds importing nltk)."""
    import contextlib
    import io

    from tools.check_rephrasings import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


def test_check_rephrasings_tool(tmp_path, tok):
    orig = write_questions(tmp_path / "o.parquet", prompt_key="question")
    table = pq.read_table(orig).to_pylist()
    for row, (_, rewrite, _) in zip(table, SCRIPT):
        row["question"] = [row["question"][0], {"role": "user", "content": rewrite}]
    rw = str(tmp_path / "r.parquet")
    pq.write_table(pa.Table.from_pylist(table), rw)
    o2, r2, chk = (str(tmp_path / n) for n in ("o2.parquet", "r2.parquet", "c.jsonl"))
    proc = run_tool("--original", orig, "--rephrased", rw, "--output", chk, "--prompt-key", "question",
                    "--on-bad-rephrase", "drop", "--output-original", o2, "--output-rephrased", r2)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "| kept | 3 | 50.0% |" in proc.stdout and "| - number_changed | 1 |" in proc.stdout
    assert user_questions(o2, "question") == [SCRIPT[i][0] for i in (0, 2, 4)]
    assert user_questions(r2, "question") == [SCRIPT[i][1] for i in (0, 2, 4)]
    assert [c["index"] for c in read_check_file(chk)] == [0, 2, 4]
    pairs = load_paired_examples(o2, r2, tok, prompt_key="question", rephrase_check=chk)
    assert len(pairs) == 3 and pairs.num_check_dropped == 0
    # bad input: one line, exit code 2
    proc = run_tool("--original", orig, "--rephrased", rw, "--output", chk, "--on-bad-rephrase", "drop")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "needs --output-original" in proc.stderr
    proc = run_tool("--original", orig, "--rephrased", rw, "--output", chk)
    assert proc.returncode == 2 and "missing column 'prompt'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_tool("--original", orig, "--rephrased", rw, "--output", chk, "--prompt-key", "question",
                    "--rephrase-checks", "numbers,spelling")  # fmt: skip
    assert proc.returncode == 2 and "--rephrase-checks: unknown check(s) ['spelling']" in proc.stderr


# ----------------------------------------------------------------------------------------------------------------
# --prompt-key reaches the paired and the validation files (train.py)
# ----------------------------------------------------------------------------------------------------------------
def test_prompt_key_for_paired_and_validation_files(tmp_path, tok, tiny_bundle, capsys):
    from megatron_corew import rewards
    from megatron_corew.arguments import parse_args
    from megatron_corew.train import RLRun

    def write(path, questions):
        rows = [
            {
                "question": [{"role": "user", "content": q}],
                "reward_model": {"ground_truth": str(i), "style": "rule"},
                "extra_info": {"index": i},
            }
            for i, q in enumerate(questions)
        ]
        pq.write_table(pa.Table.from_pylist(rows), str(path))
        return str(path)

    o = write(tmp_path / "o.parquet", [o for o, _, _ in SCRIPT])
    r = write(tmp_path / "r.parquet", [r for _, r, _ in SCRIPT])
    v = write(tmp_path / "v.parquet", ["What is 1 + 1?", "What is 2 + 2?"])
    chk = str(tmp_path / "c.jsonl")
    assert run_tool("--original", o, "--rephrased", r, "--output", chk, "--prompt-key", "question").returncode == 0
    argv = ["--hf-checkpoint", tiny_bundle["model"], "--output-dir", str(tmp_path / "run"), "--train-data", o, "--train-data-rephrased", r, "--val-data", v,
            "--prompt-key", "question", "--reward-method", "corewarding_1", "--global-batch-size", "2",
            "--train-data-rephrase-check", chk]  # fmt: skip
    a = parse_args(argv)
    run = SimpleNamespace(args=a, method=rewards.get_method(a.reward_method), tokenizer=tok)
    RLRun._load_data(run)  # before the fix: missing column 'prompt' for the paired and validation files
    assert len(run.train_set) == 3 and [e.prompt_text for e in next(iter(run.val_sets.values()))][1].endswith(
        "What is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "paired data: 3 of 6 pairs kept; dropped: 3 flagged by the rephrasing check" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------------
# The tiny rephrasing model's 200 rewrites, end to end
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_tiny_rephraser_200_rewrites_checked(tmp_path):
    from transformers import AutoTokenizer

    from megatron_corew.demo.tiny_rephraser import INSTRUCTION_FILE, ensure_rephraser
    from megatron_corew.demo.tiny_task import generate_problems, verl_rows, write_parquet

    rephraser = ensure_rephraser(os.path.join(REPO, "assets", "tiny_rephraser"))
    problems = generate_problems(seed=0)[1]  # the 200 held-out questions
    assert len(problems) == 200
    inp = str(tmp_path / "in.parquet")
    write_parquet(verl_rows(problems, "test", "original"), inp)
    out = {k: str(tmp_path / f"{k}.{ext}") for k, ext in (("jsonl", "jsonl"), ("rw", "parquet"), ("orig", "parquet"))}
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(REPO, "tools", "rewrite_questions.py"), "--input_path", inp,
           "--output_jsonl", out["jsonl"], "--output_parquet", out["rw"], "--output_original_parquet", out["orig"],
           "--model_path", rephraser, "--batch_size", "100", "--max_tokens", "96", "--max_attempts", "2",
           "--seed", "1", "--instruction_file", os.path.join(rephraser, INSTRUCTION_FILE),
           "--on-bad-rephrase", "drop"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    print(proc.stderr[-1500:])  # the summary table
    assert "| kept |" in proc.stderr and "edit distance" in proc.stderr
    records, _ = read_log(out["jsonl"])
    ok = [r for r in records.values() if r["status"] == "ok"]
    assert len(ok) >= 190
    for r in ok:  # the verdict agrees with an independent look at the two numbers of the tiny task
        p = problems[r["index"]]
        nums = sorted(int(x) for x in re.findall(r"\d+", r["rewritten"]))
        same_numbers = nums == sorted([p.a, p.b])
        chk = r["rephrase_check"]
        assert ("number_changed" not in chk["reasons"]) == same_numbers, (r, p)
    kept = [r for r in ok if r["rephrase_check"]["verdict"] == "kept"]
    assert len(kept) == summary["pairs_written"] == summary["rephrase_check"]["kept"] >= 180
    tok = AutoTokenizer.from_pretrained(rephraser)
    pairs = load_paired_examples(out["orig"], out["rw"], tok, rephrase_check=summary["output_check"])
    assert len(pairs) == len(kept)
    # the same pair with 10 rewrites given a wrong number and 5 made verbatim copies: exactly those are flagged
    table = pq.read_table(out["rw"]).to_pylist()
    originals = user_questions(out["orig"])
    for k, row in enumerate(table[:15]):
        q = row["prompt"][-1]["content"]
        row["prompt"][-1]["content"] = (
            re.sub(r"\d+", lambda m: str(int(m.group(0)) + 1), q, count=1) if k < 10 else originals[k]
        )
    broken = str(tmp_path / "broken.parquet")
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(out["rw"])), broken)
    chk = str(tmp_path / "broken.check.jsonl")
    assert run_tool("--original", out["orig"], "--rephrased", broken, "--output", chk).returncode == 0
    verdicts = read_check_file(chk)
    assert [v["row"] for v in verdicts if v["verdict"] == "flagged"] == list(range(15))
    assert all("number_changed" in v["reasons"] for v in verdicts[:10])
    assert all(v["reasons"] == ["near_copy"] for v in verdicts[10:15])
