"""Question rephrasing for Co-rewarding-I (docs/ALGORITHMS.md section 4), on any rollout engine.

An instruct model is asked to rewrite each question with different wording and a different real-world scenario,
same mathematics and same answer, and to reply only between ``### RESULT_START`` / ``### RESULT_END`` in the form
``ORIGINAL: ... REWRITE: ...``. Outputs (as in the reference tool): a JSONL log, the rephrased parquet (the input
rows that were rewritten, user message replaced, every other column unchanged) and the original parquet holding
the same input rows in the same order.

Beyond the reference:

* **retries**: a row whose output does not parse (or fails the check below) is sampled again, up to
  ``max_attempts`` times in all, then logged as failed and dropped;
* **answer check** (optional): the same model answers the rephrased question (greedy, with the row's own
  prompt messages) and the rewrite is kept only if that answer matches the ground truth (``ground_truth``) or
  the model's own greedy answer to the original question (``original``);
* **resumable**: the JSONL holds one record per input row (``ok`` or ``failed``), written batch by batch in one
  write + fsync. Batches are fixed row ranges and every generation call has a seed derived from
  (seed, batch, attempt), so a resumed run redoes exactly the unfinished batches with the same draws: after a
  kill, resume gives the same output as an uninterrupted run. A partly written batch is discarded on resume.
  The run's settings are kept next to the JSONL (``.meta.json``); resuming with different ones is refused;
* **atomic pair**: both parquet files are written to temp files first; the old rephrased file is removed before
  the two renames, so a kill can leave the pair incomplete (rephrased file missing) but never misaligned.

* **quality check** (:mod:`megatron_corew.data.rephrase_check`): at the end of the run every rewrite is compared
  with its row's question (numbers, formulas, request, conditions, units, lexical distance); the verdict and
  reasons go into its JSONL record (``"rephrase_check"``), and ``on_bad_rephrase`` decides what the parquet pair
  holds for a flagged row: ``keep`` it, ``drop`` the pair, or put the ``original`` question in the rephrased file
  (the second view is then no second view, but not a wrong one). A check file aligned with the pair (one record
  per pair row, :func:`~megatron_corew.data.rephrase_check.write_check_file`) lets the paired loader report or
  drop flagged pairs. The check is not part of the run's identity: a resume may change its settings.

JSONL record: ``{"index": row, "status": "ok"|"failed", "original": ..., "rewritten": ..., "attempts": n,
"errors": [...], "rephrase_check": {"verdict", "reasons", "details", "distance", "bleu"}}`` (``original`` /
``rewritten`` as in the reference's log; ``rephrase_check`` on ``ok`` records).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from checkpoints_conversion import atomic
from megatron_corew.data.prompts import chat_messages, prompt_ids
from megatron_corew.data.rephrase_check import (
    ON_BAD_REPHRASE,
    CheckConfig,
    apply_check,
    check_path_for,
    summarize,
    summary_table,
    write_check_file,
)
from megatron_corew.data.rewrite_format import (  # noqa: F401  (public names of the rephrasing API)
    DEFAULT_INSTRUCTION,
    END_MARKER,
    START_MARKER,
    RewriteParseError,
    parse_rewrite,
    question_of,
    rewrite_prompt,
    with_question,
)
from megatron_corew.utils import faults

logger = logging.getLogger(__name__)
_BEFORE_COMMIT = faults.kill_hook("before_commit", 0)

__all__ = [
    "START_MARKER",
    "END_MARKER",
    "DEFAULT_INSTRUCTION",
    "RewriteParseError",
    "RewriteConfig",
    "parse_rewrite",
    "question_of",
    "with_question",
    "rewrite_prompt",
    "run_rewrite",
    "read_log",
    "ON_BAD_REPHRASE",
    "apply_check",
    "check_path_for",
]


@dataclass
class RewriteConfig:
    batch_size: int = 128
    temperature: float = 0.7
    top_p: float = 0.8
    max_new_tokens: int = 20480
    max_attempts: int = 3  # generations per row in all (1 = no retry)
    seed: int = 0
    enable_thinking: bool = False
    instruction: str = DEFAULT_INSTRUCTION
    allow_identical: bool = False  # keep a "rewrite" that is the question verbatim
    check_answer: str = "off"  # off | ground_truth | original
    check_grading: str = "equiv"  # reference | equiv (ground_truth check); the original check uses equivalence
    check_max_new_tokens: int = 3072
    # the quality gate (applied at the end of a run; not part of the identity)
    rephrase_check: CheckConfig = field(default_factory=CheckConfig)
    on_bad_rephrase: str = "keep"  # keep | drop | original

    def identity(self) -> dict:
        """Settings that change the generations: resuming with different ones is refused."""
        d = asdict(self)
        del d["rephrase_check"], d["on_bad_rephrase"]
        d["instruction"] = hashlib.sha256(self.instruction.encode()).hexdigest()[:16]
        return d


def _seed(base: int, batch: int, attempt: int, purpose: int) -> int:
    return (base * 1_000_003 + batch * 10_007 + attempt * 101 + purpose) % (2**31 - 1)


# ---------------------------------------------------------------------------------------------------------------
# The JSONL log
# ---------------------------------------------------------------------------------------------------------------
def read_log(path: str) -> tuple[dict[int, dict], int]:
    """Records by row index from a (possibly truncated) log; returns (records, number of unusable lines)."""
    records: dict[int, dict] = {}
    bad = 0
    if not os.path.exists(path):
        return records, 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):  # the tail of a killed write
                bad += 1
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if (
                not isinstance(rec, dict)
                or not isinstance(rec.get("index"), int)
                or rec.get("status") not in ("ok", "failed")
            ):
                bad += 1
                continue
            if rec["index"] in records:
                bad += 1  # a duplicate: the first record of a row wins
                continue
            records[rec["index"]] = rec
    return records, bad


def _write_lines(path: str, records: list[dict], fault_batch: int | None = None) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as f:
        if fault_batch is not None and faults.active("rewrite_mid_batch", fault_batch):
            f.write(data[: len(data) // 2])  # crash-safety tests: a batch half on disk, then SIGKILL
            f.flush()
            os.fsync(f.fileno())
            faults.maybe_kill("rewrite_mid_batch", fault_batch)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _rewrite_log(path: str, records: list[dict]) -> None:
    with atomic.atomic_file(path, before_replace=_BEFORE_COMMIT) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Row:
    index: int
    question: str | None
    position: int | None
    ground_truth: str | None
    messages: list | None  # the row's prompt messages (for the answer check), None for a plain-string prompt
    error: str | None = None
    errors: list = field(default_factory=list)


def _ground_truth(rec: dict) -> str | None:
    rm = rec.get("reward_model")
    gt = rm.get("ground_truth") if isinstance(rm, dict) else None
    return gt if isinstance(gt, str) else None


def _rows_of(table, question_column: str) -> list[_Row]:
    if question_column not in table.column_names:
        raise ValueError(f"missing question column {question_column!r} (columns: {table.column_names})")
    cols = [question_column] + (["reward_model"] if "reward_model" in table.column_names else [])
    rows = []
    for i, rec in enumerate(table.select(cols).to_pylist()):
        try:
            q, pos = question_of(rec[question_column])
            msgs = rec[question_column] if pos is not None else None
            rows.append(_Row(i, q, pos, _ground_truth(rec), msgs))
        except ValueError as e:
            rows.append(_Row(i, None, None, None, None, error=str(e)))
    return rows


def _check_prompt(tokenizer, row: _Row, rewritten: str, enable_thinking: bool = False) -> list[int]:
    """The rewritten question in the row's own prompt messages (system prompt + question for a plain string)."""
    msgs = (
        with_question(row.messages, row.position, rewritten) if row.messages is not None else chat_messages(rewritten)
    )
    return prompt_ids(tokenizer, msgs, enable_thinking=enable_thinking)


def _process_batch(engine, tokenizer, rows: list[_Row], b: int, cfg: RewriteConfig) -> list[dict]:
    from megatron_corew.evaluation import response_text
    from megatron_corew.rewards.grading import answers_equivalent, extract_boxed_answer, grade
    from megatron_corew.rollout.base import SamplingParams

    done: dict[int, dict] = {}
    for r in rows:
        if r.error is not None:
            done[r.index] = {"index": r.index, "status": "failed", "attempts": 0, "errors": [r.error]}
    pending = [r for r in rows if r.error is None]
    if cfg.check_answer == "ground_truth":
        for r in list(pending):
            if r.ground_truth is None:
                done[r.index] = {
                    "index": r.index,
                    "status": "failed",
                    "attempts": 0,
                    "errors": ["no reward_model.ground_truth for the answer check"],
                }
                pending.remove(r)
    original_answers: dict[int, str] = {}
    if cfg.check_answer == "original" and pending:
        params = SamplingParams(max_new_tokens=cfg.check_max_new_tokens, greedy=True, seed=_seed(cfg.seed, b, 0, 2))
        gens = engine.generate([_check_prompt(tokenizer, r, r.question, cfg.enable_thinking) for r in pending], params)
        original_answers = {r.index: extract_boxed_answer(response_text(tokenizer, g)) for r, g in zip(pending, gens)}
    last_output: dict[int, str] = {}
    for attempt in range(cfg.max_attempts):
        if not pending:
            break
        params = SamplingParams(
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            seed=_seed(cfg.seed, b, attempt, 0),
        )
        gens = engine.generate(
            [rewrite_prompt(tokenizer, r.question, cfg.instruction, cfg.enable_thinking) for r in pending], params
        )
        candidates = []
        for r, g in zip(pending, gens):
            text = response_text(tokenizer, g)
            last_output[r.index] = text
            try:
                original, rewritten = parse_rewrite(text)
                if not cfg.allow_identical and rewritten.strip() == r.question.strip():
                    raise RewriteParseError("the rewrite repeats the question verbatim")
                candidates.append((r, original, rewritten))
            except RewriteParseError as e:
                r.errors.append(
                    f"attempt {attempt + 1}: {e}" + ("" if g.finish_reason != "length" else " (output hit max tokens)")
                )
        checks: dict[int, dict] = {}
        if cfg.check_answer != "off" and candidates:
            params = SamplingParams(
                max_new_tokens=cfg.check_max_new_tokens, greedy=True, seed=_seed(cfg.seed, b, attempt, 1)
            )
            gens = engine.generate(
                [_check_prompt(tokenizer, r, rw, cfg.enable_thinking) for r, _, rw in candidates], params
            )
            for (r, _, _), g in zip(candidates, gens):
                text = response_text(tokenizer, g)
                ans = extract_boxed_answer(text)
                if cfg.check_answer == "ground_truth":
                    ok = grade(text, r.ground_truth, cfg.check_grading) > 0
                    checks[r.index] = {"answer": ans, "expected": r.ground_truth, "passed": ok}
                else:
                    exp = original_answers.get(r.index, "")
                    ok = bool(ans.strip()) and bool(exp.strip()) and answers_equivalent(ans, exp)
                    checks[r.index] = {"answer": ans, "expected": exp, "passed": ok}
        still = {r.index for r in pending}
        for r, original, rewritten in candidates:
            chk = checks.get(r.index)
            if chk is not None and not chk["passed"]:
                r.errors.append(
                    f"attempt {attempt + 1}: answer check failed (rephrased answer "
                    f"{chk['answer']!r}, expected {chk['expected']!r})"
                )
                continue
            rec = {
                "index": r.index,
                "status": "ok",
                "original": original,
                "rewritten": rewritten,
                "attempts": attempt + 1,
                "errors": list(r.errors),
            }
            if chk is not None:
                rec["check"] = chk
            done[r.index] = rec
            still.discard(r.index)
        pending = [r for r in pending if r.index in still]
    for r in pending:
        done[r.index] = {
            "index": r.index,
            "status": "failed",
            "attempts": cfg.max_attempts,
            "errors": list(r.errors),
            "last_output": last_output.get(r.index, "")[-2000:],
        }
    return [done[r.index] for r in rows]


def _write_pair(
    table,
    ok: list[int],
    rewritten: dict[int, str],
    rows: list[_Row],
    question_column: str,
    output_parquet: str,
    output_original_parquet: str,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    original = table.take(pa.array(ok, type=pa.int64()))
    cells = original.column(question_column).to_pylist()
    new_cells = [with_question(c, rows[i].position, rewritten[i]) for c, i in zip(cells, ok)]
    col_idx = table.column_names.index(question_column)
    field_ = table.schema.field(question_column)
    rephrased = original.set_column(col_idx, field_, pa.array(new_cells, type=field_.type))
    tmp_o = atomic.temp_path(output_original_parquet)
    tmp_r = atomic.temp_path(output_parquet)
    try:
        pq.write_table(original, tmp_o)
        pq.write_table(rephrased, tmp_r)
        if os.path.exists(output_parquet):  # from here until the last rename the pair is visibly incomplete
            os.remove(output_parquet)
        atomic.commit_file(tmp_o, output_original_parquet, before_replace=_BEFORE_COMMIT)
        faults.maybe_kill("rewrite_between_outputs", 0)
        atomic.commit_file(tmp_r, output_parquet, before_replace=_BEFORE_COMMIT)
    finally:
        for t in (tmp_o, tmp_r):
            if os.path.exists(t):
                os.remove(t)


def run_rewrite(
    engine,
    tokenizer,
    input_path: str,
    output_jsonl: str,
    output_parquet: str,
    output_original_parquet: str,
    question_column: str = "prompt",
    cfg: RewriteConfig | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    output_check: str | None = None,
) -> dict:
    """Rephrase every row of ``input_path`` (resuming from ``output_jsonl``) and write the aligned pair."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cfg = cfg or RewriteConfig()
    if cfg.max_attempts < 1 or cfg.batch_size < 1:
        raise ValueError("max_attempts and batch_size must be >= 1")
    if cfg.on_bad_rephrase not in ON_BAD_REPHRASE:
        raise ValueError(f"on_bad_rephrase must be one of {', '.join(ON_BAD_REPHRASE)}, got {cfg.on_bad_rephrase!r}")
    if cfg.check_answer not in ("off", "ground_truth", "original"):
        raise ValueError(f"check_answer must be off, ground_truth or original, got {cfg.check_answer!r}")
    try:
        table = pq.read_table(input_path)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ValueError(f"{input_path}: cannot read as a parquet file ({type(e).__name__}: {e})") from e
    rows = _rows_of(table, question_column)
    for r in rows:
        if r.error:
            log(f"{input_path}: row {r.index}: {r.error} (logged as failed)")
    qhash = hashlib.sha256("\x00".join(r.question or "" for r in rows).encode()).hexdigest()[:16]
    meta = {
        "input_rows": len(rows),
        "input_questions_sha256": qhash,
        "question_column": question_column,
        "config": cfg.identity(),
    }
    meta_path = output_jsonl + ".meta.json"
    for p in (output_jsonl, output_parquet, output_original_parquet):
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    if overwrite:
        for p in (output_jsonl, meta_path):
            if os.path.exists(p):
                os.remove(p)
    records, n_bad_lines = read_log(output_jsonl)
    if records or n_bad_lines:
        old = None
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                old = json.load(f)
        if old != meta:
            diff = sorted(k for k in set(meta) | set(old or {}) if (old or {}).get(k) != meta.get(k))
            raise ValueError(
                f"{output_jsonl} holds results of a different run (differs in {diff}); pass "
                f"--overwrite to start again, or the same input and settings to resume"
            )
    else:
        atomic.write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True), before_replace=_BEFORE_COMMIT)
    B = cfg.batch_size
    batches = [rows[s : s + B] for s in range(0, len(rows), B)]
    complete = [all(r.index in records for r in batch) for batch in batches]
    keep = [records[r.index] for batch, c in zip(batches, complete) if c for r in batch]
    dropped = len(records) - len(keep)
    if dropped or n_bad_lines:
        log(f"resume: discarding {dropped} record(s) of unfinished batches and {n_bad_lines} broken line(s)")
        _rewrite_log(output_jsonl, keep)
    elif not os.path.exists(output_jsonl):
        open(output_jsonl, "a").close()
    n_done = sum(complete)
    if n_done:
        log(f"resume: {n_done} of {len(batches)} batch(es) already done")
    results = {r["index"]: r for r in keep}
    for b, batch in enumerate(batches):
        if complete[b]:
            continue
        recs = _process_batch(engine, tokenizer, batch, b, cfg)
        _write_lines(output_jsonl, recs, fault_batch=b)
        results.update((r["index"], r) for r in recs)
        n_ok = sum(r["status"] == "ok" for r in recs)
        log(f"batch {b + 1}/{len(batches)}: {n_ok}/{len(recs)} rewritten")
    ok = sorted(i for i, r in results.items() if r["status"] == "ok")
    keep, texts, check_records, checks = apply_check(
        [rows[i].question for i in ok], [results[i]["rewritten"] for i in ok], cfg.rephrase_check, cfg.on_bad_rephrase
    )
    for i, c in zip(ok, checks):
        results[i]["rephrase_check"] = c.as_dict()
    _rewrite_log(output_jsonl, [results[r.index] for r in rows])  # the verdicts into the journal, atomically
    pair_rows = [ok[k] for k in keep]
    for rec, i in zip(check_records, pair_rows):
        rec["index"] = i
    _write_pair(
        table,
        pair_rows,
        dict(zip(pair_rows, texts)),
        rows,
        question_column,
        output_parquet,
        output_original_parquet,
    )
    output_check = output_check or check_path_for(output_parquet)
    write_check_file(output_check, check_records)
    check_summary = summarize(checks, fallbacks=sum(r["verdict"] == "fallback" for r in check_records))
    log(f"rephrase check (--on-bad-rephrase {cfg.on_bad_rephrase}: {len(pair_rows)} of {len(ok)} pairs written):")
    log(summary_table(check_summary))
    n_fail = len(rows) - len(ok)
    if not pair_rows:
        log(
            f"warning: no pair to write ({len(ok)} rewritten, {len(ok) - len(pair_rows)} of them dropped by the "
            "rephrase check); both parquet files are empty"
        )
    attempts = [r.get("attempts", 0) for r in results.values()]
    return {
        "input": input_path,
        "rows": len(rows),
        "rewritten": len(ok),
        "failed": n_fail,
        "retried_ok": sum(1 for i in ok if results[i]["attempts"] > 1),
        "mean_attempts": sum(attempts) / max(len(attempts), 1),
        "resumed_batches": n_done,
        "output_jsonl": output_jsonl,
        "output_parquet": output_parquet,
        "output_original_parquet": output_original_parquet,
        "output_check": output_check,
        "pairs_written": len(pair_rows),
        "rephrase_check": check_summary,
    }
