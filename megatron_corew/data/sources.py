"""Turn math datasets, in the formats their publishers use, into the verl parquet schema (docs/ALGORITHMS.md section 4).

Output rows (what :func:`megatron_corew.data.load_examples` reads, and what the Co-rewarding reference releases)::

    data_source  : str                                   (the source's hub id unless overridden)
    prompt       : [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": <bare question>}]
    ability      : "math"
    reward_model : {"ground_truth": str, "style": "rule"}
    extra_info   : {"index": <row number in the source>, "split": str, <source metadata, as strings>}

Sources and their columns (column names are matched case-insensitively; the first present one wins):

    math     DigitalLearningGmbH/MATH-lighteval   problem | solution -> last \\boxed{} of the solution
    dapo     open-r1/DAPO-Math-17k-Processed (en)  prompt (a plain string) | solution
    openrs   knoveleng/open-rs                     problem | answer, else last \\boxed{} of solution
    gsm8k    openai/gsm8k (main)                   question | answer "... #### N" -> N (thousands commas dropped)
    math500  HuggingFaceH4/MATH-500                problem | answer, else last \\boxed{} of solution
    aime     AI-MO/aimo-validation-aime            problem / question / prompt | answer (numbers accepted)
    amc      AI-MO/aimo-validation-amc             problem / question / prompt | answer (numbers accepted)
    qa       any question/answer file (e.g. reasoning-gym output)  question / problem / prompt | answer

Few-shot (``few_shot`` > 0): every row's question follows the same K worked examples, drawn with a fixed seed from
other files (``few_shot_from``, never an input; questions that also occur in the inputs are left out), as chat
turns or inline (``data/prompts.py``); the choice is recorded in the parquet's metadata under ``few_shot``.

Inputs are local files (parquet, jsonl, json array / {"data": [...]}) or a directory of them (a hub snapshot:
files whose name starts with the split), or the hub itself through ``datasets`` when it is installed and online
(reading: :mod:`megatron_corew.data.readers`).

Malformed rows (not an object, empty or non-string question, missing or non-string answer, a solution without a
boxed answer, a bad jsonl line) are reported as ``FILE: row N: reason`` and raise (``on_bad_row="error"``) or
are skipped (``"skip"``). A file that cannot be read at all, or lacks a required column entirely, is always an
error. Outputs are written atomically (``checkpoints_conversion.atomic``: a temp file beside the target, fsync,
rename).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

from checkpoints_conversion import atomic
from megatron_corew.data.prompts import FEW_SHOT_ANSWER, SYSTEM_PROMPT, chat_messages, few_shot_messages
from megatron_corew.data.readers import BadRow, PreprocessError, RecordSet, expand_inputs, read_hub, read_records
from megatron_corew.utils import faults

logger = logging.getLogger(__name__)

__all__ = [
    "PreprocessError",
    "SourceSpec",
    "SOURCES",
    "convert_records",
    "preprocess",
    "verl_row",
    "verl_table",
    "atomic_write_parquet",
]


@dataclass(frozen=True)
class SourceSpec:
    name: str
    hub_id: str
    hub_config: str | None
    question_cols: tuple[str, ...]
    answer_cols: tuple[tuple[str, str], ...]  # (column, kind) with kind in {"plain", "boxed", "gsm8k"}
    numeric_answers: bool = False  # the source publishes numbers (AMC floats, AIME ints): format them
    meta_cols: tuple[str, ...] = ()  # copied into extra_info (as strings) when present
    default_split: str = "train"
    splits: tuple[str, ...] = ("train",)


SOURCES: dict[str, SourceSpec] = {
    "math": SourceSpec(
        "math",
        "DigitalLearningGmbH/MATH-lighteval",
        None,
        ("problem",),
        (("solution", "boxed"),),
        meta_cols=("level", "type"),
        default_split="train",
        splits=("train", "test"),
    ),
    "dapo": SourceSpec(
        "dapo", "open-r1/DAPO-Math-17k-Processed", "en", ("prompt",), (("solution", "plain"),), default_split="train"
    ),
    "openrs": SourceSpec(
        "openrs",
        "knoveleng/open-rs",
        None,
        ("problem",),
        (("answer", "plain"), ("solution", "boxed")),
        meta_cols=("level",),
        default_split="train",
    ),
    "gsm8k": SourceSpec(
        "gsm8k",
        "openai/gsm8k",
        "main",
        ("question",),
        (("answer", "gsm8k"),),
        default_split="test",
        splits=("train", "test"),
    ),
    "math500": SourceSpec(
        "math500",
        "HuggingFaceH4/MATH-500",
        None,
        ("problem",),
        (("answer", "plain"), ("solution", "boxed")),
        meta_cols=("subject", "level", "unique_id"),
        default_split="test",
        splits=("test",),
    ),
    "aime": SourceSpec(
        "aime",
        "AI-MO/aimo-validation-aime",
        None,
        ("problem", "question", "prompt"),
        (("answer", "plain"),),
        numeric_answers=True,
        meta_cols=("id", "url", "year"),
        default_split="train",
        splits=("train",),
    ),
    "amc": SourceSpec(
        "amc",
        "AI-MO/aimo-validation-amc",
        None,
        ("problem", "question", "prompt"),
        (("answer", "plain"),),
        numeric_answers=True,
        meta_cols=("id", "url", "source"),
        default_split="train",
        splits=("train",),
    ),
    "qa": SourceSpec(
        "qa",
        "local",
        None,
        ("question", "problem", "prompt"),
        (("answer", "plain"),),
        numeric_answers=True,
        meta_cols=("source_dataset",),
        default_split="train",
        splits=("train", "test"),
    ),
}

FEW_SHOT_KEY = b"few_shot"  # parquet metadata key of the few-shot record


# ----------------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------------
def _find_col(columns: Iterable[str], wanted: str) -> str | None:
    lower = {c.lower(): c for c in columns}
    return wanted if wanted in columns else lower.get(wanted.lower())


def _format_number(v) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"answer is not a finite number ({v!r})")
        return str(int(v)) if v.is_integer() else repr(v)
    return str(v)


def _meta_str(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool) and (not isinstance(v, float) or math.isfinite(v)):
        return _format_number(v)
    return json.dumps(v, default=str)


def _answer_text(value, kind: str, numeric_ok: bool, col: str) -> str:
    try:  # numpy scalars from pandas-written files
        import numpy as np

        if isinstance(value, np.generic):
            value = value.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{col!r} must be a string (got {type(value).__name__}: {str(value)[:60]!r})")
    if not isinstance(value, str):
        if not numeric_ok:
            raise ValueError(f"{col!r} must be a string (got {type(value).__name__}: {value!r})")
        return _format_number(value)
    if kind == "plain":
        ans = value.strip()
    elif kind == "boxed":
        from megatron_corew.rewards.grading import extract_boxed_answer

        ans = extract_boxed_answer(value).strip()
        if not ans:
            raise ValueError(f"{col!r} has no complete \\boxed{{...}} answer")
    elif kind == "gsm8k":
        if "####" not in value:
            raise ValueError(f"{col!r} has no '#### <answer>' line")
        ans = value.rsplit("####", 1)[1].strip().replace(",", "")
    else:  # pragma: no cover
        raise AssertionError(kind)
    if not ans:
        raise ValueError(f"{col!r} is empty")
    return ans


def verl_row(
    question: str,
    ground_truth: str,
    index: int,
    split: str,
    data_source: str,
    system_prompt: str | None = SYSTEM_PROMPT,
    prompt_style: str = "system",
    meta: dict | None = None,
) -> dict:
    """One row of the verl schema. ``prompt_style="system"``: system prompt + bare question (the reference's
    released files); ``"user"``: no system message, the instruction appended to the question after a space."""
    if prompt_style == "system":
        prompt = chat_messages(question, system_prompt)
    elif prompt_style == "user":
        prompt = [{"role": "user", "content": question + (" " + system_prompt if system_prompt else "")}]
    else:
        raise ValueError(f"prompt_style must be 'system' or 'user', got {prompt_style!r}")
    extra = {"index": int(index), "split": split}
    extra.update(meta or {})
    return {
        "data_source": data_source,
        "prompt": prompt,
        "ability": "math",
        "reward_model": {"ground_truth": ground_truth, "style": "rule"},
        "extra_info": extra,
    }


def verl_table(rows: list[dict], meta_keys: Iterable[str] = ()):
    """A pyarrow table with the verl schema (extra_info: index, split, then ``meta_keys`` as strings)."""
    import pyarrow as pa

    msg = pa.struct([("content", pa.string()), ("role", pa.string())])
    extra = [("index", pa.int64()), ("split", pa.string())] + [(k, pa.string()) for k in meta_keys]
    schema = pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(msg)),
            ("ability", pa.string()),
            ("reward_model", pa.struct([("ground_truth", pa.string()), ("style", pa.string())])),
            ("extra_info", pa.struct(extra)),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def atomic_write_parquet(table, path: str) -> None:
    """Write ``table`` so that ``path`` holds the previous file or the complete new one, never a part of it."""
    import pyarrow.parquet as pq

    with atomic.atomic_file(path, before_replace=faults.kill_hook("before_commit", 0)) as tmp:
        pq.write_table(table, tmp)


@dataclass
class ConvertResult:
    rows: list[dict]
    meta_keys: list[str]
    num_in: int
    bad: list[str]
    questions: list[str]  # the bare question of each row


def convert_records(
    record_sets: list[RecordSet],
    spec: SourceSpec,
    split: str,
    on_bad_row: str = "error",
    data_source: str | None = None,
    system_prompt: str | None = SYSTEM_PROMPT,
    prompt_style: str = "system",
) -> ConvertResult:
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    data_source = data_source or spec.hub_id
    rows, bad, num_in, index = [], [], 0, 0
    meta_keys: list[str] = []
    questions: list[str] = []

    def fail(b: BadRow):
        if on_bad_row == "error":
            raise PreprocessError(str(b))
        bad.append(str(b))

    for rs in record_sets:
        qcol = next((c for c in (_find_col(rs.columns, q) for q in spec.question_cols) if c), None)
        acols = [(c, kind) for c, kind in ((_find_col(rs.columns, a), kind) for a, kind in spec.answer_cols) if c]
        if rs.rows and (qcol is None or not acols):
            missing = [] if qcol else [" or ".join(map(repr, spec.question_cols))]
            missing += [] if acols else [" or ".join(repr(a) for a, _ in spec.answer_cols)]
            raise PreprocessError(
                f"{rs.path}: missing required column {', '.join(missing)} for --dataset "
                f"{spec.name} (columns: {rs.columns})"
            )
        mcols = [(m, _find_col(rs.columns, m)) for m in spec.meta_cols]
        for m, c in mcols:
            if c and m not in meta_keys:
                meta_keys.append(m)
        for where, _row_no, rec in rs.rows:
            num_in += 1
            row_index = index  # running row number over all inputs (the source row for a single file)
            index += 1
            if isinstance(rec, BadRow):  # unparseable while reading (e.g. a broken jsonl line)
                fail(rec)
                continue
            try:
                if not isinstance(rec, dict):
                    raise ValueError(f"expected an object with columns, got {type(rec).__name__}")
                q = rec.get(qcol)
                if not isinstance(q, str):
                    raise ValueError(f"question column {qcol!r} must be a string (got {type(q).__name__})")
                if not q.strip():
                    raise ValueError(f"question column {qcol!r} is empty")
                gt, errors = None, []
                for col, kind in acols:  # the first answer column holding a value (a malformed value is an error)
                    v = rec.get(col)
                    if v is None or (isinstance(v, str) and not v.strip()):
                        errors.append(f"{col!r} is missing or empty")
                        continue
                    gt = _answer_text(v, kind, spec.numeric_answers, col)
                    break
                if gt is None:
                    raise ValueError("; ".join(errors))
                meta = {m: _meta_str(rec.get(c)) for m, c in mcols if c is not None and rec.get(c) is not None}
                rows.append(verl_row(q, gt, row_index, split, data_source, system_prompt, prompt_style, meta))
                questions.append(q)
            except ValueError as e:
                fail(BadRow(where, str(e)))
    return ConvertResult(rows, meta_keys, num_in, bad, questions)


@dataclass
class FewShot:
    """K worked examples for every prompt: from ``paths`` (read as the same source format), never an input."""

    k: int
    paths: list[str]
    style: str = "chat"  # chat turns or inline text (data/prompts.py)
    answer_template: str = FEW_SHOT_ANSWER  # a worked example's reply; {answer} is its ground truth
    seed: int = 0


def add_few_shot(
    res: ConvertResult, shots_cfg: FewShot, spec: SourceSpec, inputs: list[str], system_prompt, prompt_style
):
    """Rewrite every row's prompt with the worked examples; return the metadata record."""
    import random

    if shots_cfg.style not in ("chat", "inline"):
        raise PreprocessError(f"--few-shot-style must be chat or inline, got {shots_cfg.style!r}")
    if "{answer}" not in shots_cfg.answer_template:
        raise PreprocessError(f"--few-shot-answer {shots_cfg.answer_template!r} has no {{answer}} placeholder")
    if not shots_cfg.paths:
        raise PreprocessError("--few-shot needs --few-shot-from FILE (worked examples never come from the inputs)")
    files = expand_inputs(shots_cfg.paths, None)
    taken = {os.path.realpath(p) for p in inputs}
    for f in files:
        if os.path.realpath(f) in taken:
            raise PreprocessError(f"--few-shot-from {f} is also an --input: worked examples never come from it")
    pool = convert_records([read_records(f) for f in files], spec, "few_shot", "skip", None, None, "system")
    seen = set(res.questions)
    candidates = [(q, r["reward_model"]["ground_truth"]) for q, r in zip(pool.questions, pool.rows) if q not in seen]
    if len(candidates) < shots_cfg.k:
        raise PreprocessError(
            f"--few-shot-from {', '.join(files)}: {len(candidates)} usable example(s) not in the inputs, "
            f"--few-shot {shots_cfg.k} needs {shots_cfg.k}"
        )
    order = list(range(len(candidates)))
    random.Random(shots_cfg.seed).shuffle(order)
    picked = [candidates[i] for i in order[: shots_cfg.k]]
    shots = [(q, shots_cfg.answer_template.format(answer=gt)) for q, gt in picked]
    for row, q in zip(res.rows, res.questions):
        row["prompt"] = few_shot_messages(q, shots, shots_cfg.style, system_prompt, prompt_style)
    return {
        "k": shots_cfg.k,
        "style": shots_cfg.style,
        "from": files,
        "seed": shots_cfg.seed,
        "answer_template": shots_cfg.answer_template,
        "examples": [{"question": q, "reply": r} for q, r in shots],
        "left_out_as_in_inputs": len(pool.rows) - len(candidates),
    }


def preprocess(
    dataset: str,
    inputs: list[str] | None,
    output: str,
    split: str | None = None,
    on_bad_row: str = "error",
    data_source: str | None = None,
    system_prompt: str | None = SYSTEM_PROMPT,
    prompt_style: str = "system",
    hub: bool = False,
    max_bad_reported: int = 20,
    few_shot: FewShot | None = None,
) -> dict:
    """Convert ``inputs`` (files or directories) of source ``dataset`` and write ``output`` atomically.

    ``output`` is a ``.parquet`` path or a directory (then ``DIR/<split>.parquet``). Returns a summary dict.
    """
    if dataset not in SOURCES:
        raise PreprocessError(f"unknown --dataset {dataset!r}; choose from {sorted(SOURCES)}")
    spec = SOURCES[dataset]
    split = split or spec.default_split
    if hub:
        record_sets = [read_hub(spec.hub_id, spec.hub_config, split)]
    else:
        if not inputs:
            raise PreprocessError("no --input given (pass local files, or --hub to download)")
        record_sets = [read_records(p) for p in expand_inputs(inputs, split)]
    res = convert_records(record_sets, spec, split, on_bad_row, data_source, system_prompt, prompt_style)
    if res.bad:
        logger.warning("skipped %d malformed row(s) of %d; first: %s", len(res.bad), res.num_in, "; ".join(res.bad[:3]))
    if not res.rows:
        raise PreprocessError(
            f"no usable rows in {[rs.path for rs in record_sets]} ({res.num_in} rows, {len(res.bad)} malformed)"
        )
    shots = None
    if few_shot is not None and few_shot.k > 0:
        shots = add_few_shot(res, few_shot, spec, [rs.path for rs in record_sets], system_prompt, prompt_style)
    out = output if output.endswith(".parquet") else os.path.join(output, f"{split}.parquet")
    table = verl_table(res.rows, res.meta_keys)
    if shots is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), FEW_SHOT_KEY: json.dumps(shots)})
    atomic_write_parquet(table, out)
    return {
        "dataset": dataset,
        "split": split,
        "inputs": [rs.path for rs in record_sets],
        "output": out,
        "rows_in": res.num_in,
        "rows_out": len(res.rows),
        "skipped": len(res.bad),
        "skipped_rows": res.bad[:max_bad_reported],
        "few_shot": shots,
    }
