"""Prompt datasets for RL post-training (verl / Co-rewarding parquet schema, docs/ALGORITHMS.md section 4).

Each parquet row holds::

    data_source  : str
    prompt       : list of {"role": str, "content": str}   (the column name is configurable: ``prompt_key``)
    ability      : str                                       (not used here)
    reward_model : {"ground_truth": str, "style": str}       (optional column: no column -> ground_truth None)
    extra_info   : {"index": int, "split": str, ...}         (optional)

Extra columns (``level``, ``type``, ...) are ignored. The Co-rewarding reference releases load as they are.
Rows are validated here, once, so a bad file fails at start-up with its row number instead of mid-run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from megatron_corew.data.prompts import prompt_text

logger = logging.getLogger(__name__)

__all__ = [
    "DataError",
    "Example",
    "PromptDataset",
    "PairedDataset",
    "load_examples",
    "load_paired_examples",
    "render_prompt",
]


ROLES = ("system", "user", "assistant", "tool")  # chat roles the templates render


class DataError(ValueError):
    """A data file is missing, unreadable, or holds a row that does not fit the schema."""


@dataclass
class Example:
    index: int  # row number in the source file (0-based, before any filtering)
    messages: list[dict]  # [{"role": ..., "content": ...}, ...]
    ground_truth: str | None  # reward_model.ground_truth; None when the file has no reward_model column
    data_source: str
    extra_info: dict
    prompt_ids: list[int]  # chat template with the assistant header (add_generation_prompt=True)
    prompt_text: str = field(default="", repr=False)  # the rendered prompt string that prompt_ids encodes


# ----------------------------------------------------------------------------------------------------------------
# Normalisation helpers (pyarrow gives lists/dicts; pandas or datasets may give numpy arrays and scalars)
# ----------------------------------------------------------------------------------------------------------------
def _py(x: Any) -> Any:
    """Recursively convert numpy arrays/scalars (and tuples) into plain Python objects."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None:
        if isinstance(x, np.ndarray):
            return [_py(v) for v in x.tolist()] if x.dtype == object else x.tolist()
        if isinstance(x, np.generic):
            return x.item()
    if isinstance(x, (list, tuple)):
        return [_py(v) for v in x]
    if isinstance(x, dict):
        return {k: _py(v) for k, v in x.items()}
    return x


def _check_messages(value: Any, prompt_key: str) -> list[dict]:
    """Return [{"role", "content"}, ...] or raise ValueError with a message about ``prompt_key``."""
    value = _py(value)
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else type(value).__name__
        raise ValueError(f"{prompt_key!r} must be a non-empty list of chat messages (got {got})")
    msgs = []
    for j, m in enumerate(value):
        if not isinstance(m, dict):
            raise ValueError(
                f"{prompt_key!r} message {j} must be a dict with 'role' and 'content' (got {type(m).__name__})"
            )
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not role:
            raise ValueError(f"{prompt_key!r} message {j} has no string 'role' (got {role!r})")
        if not isinstance(content, str):
            raise ValueError(f"{prompt_key!r} message {j} has no string 'content' (got {type(content).__name__})")
        if role not in ROLES:
            raise ValueError(
                f"{prompt_key!r} message {j} has unknown role {role!r} (expected one of {', '.join(ROLES)})"
            )
        msgs.append({"role": role, "content": content})
    if not any(m["role"] == "user" and m["content"].strip() for m in msgs):
        roles = [m["role"] for m in msgs]
        if any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
            raise ValueError(
                f"{prompt_key!r} has the question only in an assistant turn (roles {roles}); it must be a user turn"
            )
        raise ValueError(f"{prompt_key!r} has no user turn with text (roles {roles})")
    return msgs


def _check_ground_truth(value: Any) -> str | None:
    """The row's ground truth; None (an unlabelled row) when it is null. The reference's OpenRS release has such a
    row (4303): the self-supervised methods never read labels, so the file must still load; ``gt`` training and
    evaluation reject unlabelled rows with their row numbers (:func:`unlabelled_rows`)."""
    value = _py(value)
    if not isinstance(value, dict):
        raise ValueError(f"'reward_model' must be a struct with a string 'ground_truth' (got {type(value).__name__})")
    gt = value.get("ground_truth")
    if gt is None:
        return None
    if not isinstance(gt, str):
        raise ValueError(f"'reward_model.ground_truth' must be a string (got {type(gt).__name__}: {gt!r})")
    return gt if gt.strip() else None  # a blank label grades nothing: unlabelled, refused where labels are read


def render_prompt(tokenizer, messages: list[dict]) -> tuple[str, list[int]]:
    """(text, ids) of ``messages`` as the policy sees them; a tokenizer without a chat template is a data error."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError("the tokenizer has no chat_template; prompts cannot be rendered")
    text = prompt_text(tokenizer, messages)
    return text, list(tokenizer(text, add_special_tokens=False)["input_ids"])


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------
def _read_table(path: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read as a parquet file ({type(e).__name__}: {e})") from e


def _parse_rows(path: str, table, prompt_key: str, on_bad_row: str) -> tuple[list[tuple[int, dict]], int]:
    """Validate rows. Returns ([(row, parsed)], num_skipped); parsed has messages, ground_truth, data_source,
    extra_info."""
    cols = table.column_names
    if prompt_key not in cols:
        raise DataError(f"{path}: missing required column {prompt_key!r} (columns: {cols})")
    wanted = [c for c in (prompt_key, "reward_model", "data_source", "extra_info") if c in cols]
    try:
        records = table.select(wanted).to_pylist()
    except Exception as e:  # pragma: no cover - corrupt pages are usually caught by read_table
        raise DataError(f"{path}: cannot decode columns {wanted} ({type(e).__name__}: {e})") from e
    has_rm = "reward_model" in cols
    parsed, bad = [], []
    for i, rec in enumerate(records):
        try:
            messages = _check_messages(rec.get(prompt_key), prompt_key)
            gt = _check_ground_truth(rec.get("reward_model")) if has_rm else None
            extra = _py(rec.get("extra_info"))
            if extra is None:
                extra = {}
            if not isinstance(extra, dict):
                raise ValueError(f"'extra_info' must be a struct/dict (got {type(extra).__name__})")
            ds = rec.get("data_source")
            parsed.append(
                (
                    i,
                    dict(
                        messages=messages,
                        ground_truth=gt,
                        extra_info=extra,
                        data_source="unknown" if ds is None else str(ds),
                    ),
                )
            )
        except ValueError as e:
            msg = f"{path}: row {i}: {e}"
            if on_bad_row == "error":
                raise DataError(msg) from None
            bad.append(msg)
    if bad:
        logger.warning(
            "%s: skipped %d malformed row(s) of %d; first: %s", path, len(bad), len(records), "; ".join(bad[:3])
        )
    return parsed, len(bad)


def _tokenize(path: str, parsed: list[tuple[int, dict]], tokenizer, on_bad_row: str) -> tuple[list[Example], int]:
    examples, texts, skipped = [], [], 0
    for i, p in parsed:
        try:
            text = prompt_text(tokenizer, p["messages"])
        except Exception as e:  # e.g. a template that rejects the role order
            msg = f"{path}: row {i}: 'prompt' cannot be rendered with the chat template ({type(e).__name__}: {e})"
            if on_bad_row == "error":
                raise DataError(msg) from e
            logger.warning("skipping %s", msg)
            skipped += 1
            continue
        texts.append(text)
        examples.append(Example(index=i, prompt_ids=[], prompt_text=text, **p))
    if texts:
        for ex, ids in zip(examples, tokenizer(texts, add_special_tokens=False)["input_ids"]):
            ex.prompt_ids = list(ids)
    return examples, skipped


def _check_options(on_bad_row: str, max_prompt_length: int | None) -> None:
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    if max_prompt_length is not None and max_prompt_length <= 0:
        raise ValueError(f"max_prompt_length must be positive, got {max_prompt_length}")


# ----------------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------------
class PromptDataset(Sequence):
    """Validated, tokenized prompts of one parquet file (after length filtering)."""

    def __init__(
        self,
        examples: list[Example],
        path: str,
        num_rows: int,
        num_dropped: int = 0,
        num_skipped: int = 0,
        max_prompt_length: int | None = None,
    ):
        self.examples = examples
        self.path = path
        self.num_rows = num_rows  # rows in the file
        self.num_dropped = num_dropped  # rows dropped because the prompt was longer than max_prompt_length
        self.num_skipped = num_skipped  # malformed rows skipped (on_bad_row="skip")
        self.max_prompt_length = max_prompt_length

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def drop_note(self, use: str) -> str | None:
        """One line for the start-up log when ``--max-prompt-length`` dropped rows of this file (``use``: what the
        file is for), so a score on fewer rows is never read as one on the whole set."""
        if not self.num_dropped:
            return None
        return (
            f"{use} {self.path}: {self.num_dropped} of {self.num_rows} rows dropped (prompt longer than "
            f"--max-prompt-length {self.max_prompt_length} tokens); {len(self)} rows are used"
        )

    def unlabelled_rows(self) -> list[int]:
        """File rows (0-based) of the kept examples that have no ground truth."""
        return [e.index for e in self.examples if e.ground_truth is None]

    def __repr__(self) -> str:
        return (
            f"PromptDataset({self.path!r}, {len(self)} examples of {self.num_rows} rows, "
            f"dropped={self.num_dropped}, skipped={self.num_skipped})"
        )


class PairedDataset(Sequence):
    """Aligned (original, rephrased) prompts for Co-rewarding-I; item i is a pair sharing row i of both files."""

    def __init__(
        self,
        original: PromptDataset,
        rephrased: PromptDataset,
        num_dropped: int = 0,
        num_flagged: dict[str, int] | None = None,
        num_fallback: int = 0,
        num_check_dropped: int = 0,
    ):
        assert len(original) == len(rephrased)
        self.original = original
        self.rephrased = rephrased
        self.num_dropped = num_dropped  # pairs dropped because either prompt was too long
        self.num_flagged = dict(num_flagged or {})  # reasons of the pairs the rephrasing check flagged (a pair may
        self.num_check_dropped = num_check_dropped  # have several); pairs dropped because the check flagged them
        self.num_fallback = num_fallback  # pairs whose rephrasing is the original question (the check's fallback)
        self.num_rows = original.num_rows

    def summary(self) -> str:
        """One line: pairs kept, and why the others were dropped."""
        n_flag = self.num_check_dropped
        limit = self.original.max_prompt_length
        why = [f"{self.num_dropped} with a prompt longer than {limit} tokens" if limit else "none for length"]
        if self.num_flagged:
            reasons = ", ".join(f"{r} {k}" for r, k in sorted(self.num_flagged.items(), key=lambda x: (-x[1], x[0])))
            why.insert(0, f"{n_flag} flagged by the rephrasing check (reasons: {reasons})")
        line = f"paired data: {len(self)} of {self.num_rows} pairs kept; dropped: " + "; ".join(why)
        if self.num_fallback:
            line += f"; {self.num_fallback} kept with the original question as the rephrasing (check fallback)"
        return line

    @property
    def paths(self) -> tuple[str, str]:
        return self.original.path, self.rephrased.path

    @property
    def path(self) -> str:
        return self.original.path

    def __len__(self) -> int:
        return len(self.original)

    def __getitem__(self, i) -> tuple[Example, Example]:
        if isinstance(i, slice):
            return list(zip(self.original[i], self.rephrased[i]))
        return self.original[i], self.rephrased[i]

    def __iter__(self):
        return zip(self.original, self.rephrased)

    def __repr__(self) -> str:
        return f"PairedDataset({self.paths}, {len(self)} pairs of {self.num_rows}, dropped={self.num_dropped})"


def load_examples(
    path: str | os.PathLike,
    tokenizer,
    max_prompt_length: int | None = None,
    prompt_key: str = "prompt",
    on_bad_row: str = "error",
) -> PromptDataset:
    """Read a verl-schema parquet file, validate it, and tokenize each prompt with the chat template.

    Rows whose prompt has more than ``max_prompt_length`` tokens are dropped (counted in ``num_dropped``).
    Malformed rows raise :class:`DataError` (``on_bad_row="error"``) or are skipped and logged (``"skip"``).
    """
    _check_options(on_bad_row, max_prompt_length)
    path = os.fspath(path)
    table = _read_table(path)
    parsed, n_bad = _parse_rows(path, table, prompt_key, on_bad_row)
    examples, n_bad_tpl = _tokenize(path, parsed, tokenizer, on_bad_row)
    kept, dropped = examples, 0
    if max_prompt_length is not None:
        kept = [e for e in examples if len(e.prompt_ids) <= max_prompt_length]
        dropped = len(examples) - len(kept)
        if dropped:
            logger.info(
                "%s: dropped %d of %d prompts longer than %d tokens", path, dropped, len(examples), max_prompt_length
            )
    if not kept:
        raise DataError(
            f"{path}: no usable rows ({table.num_rows} rows, {n_bad + n_bad_tpl} malformed, "
            f"{dropped} longer than {max_prompt_length} tokens)"
        )
    ds = PromptDataset(kept, path, table.num_rows, dropped, n_bad + n_bad_tpl, max_prompt_length)
    unlabelled = ds.unlabelled_rows() if "reward_model" in table.column_names else []
    if unlabelled:
        logger.warning(
            "%s: %d row(s) have a null reward_model.ground_truth (first: row %d); they train the "
            "self-supervised methods but are never graded",
            path,
            len(unlabelled),
            unlabelled[0],
        )
    return ds


def load_paired_examples(
    original_path: str | os.PathLike,
    rephrased_path: str | os.PathLike,
    tokenizer,
    max_prompt_length: int | None = None,
    prompt_key: str = "prompt",
    rephrase_check: str | os.PathLike | None = None,
) -> PairedDataset:
    """Load two row-aligned files (row i of ``rephrased_path`` rephrases row i of ``original_path``).

    Checks: equal row counts; where both rows carry ``extra_info.index`` the indices match; where both carry a
    ground truth the ground truths match (a rephrasing keeps the answer). Malformed rows are errors (skipping one
    side would break the alignment). A pair is dropped if EITHER prompt exceeds ``max_prompt_length``.

    ``rephrase_check``: a check file of this pair (``tools/check_rephrasings.py``, or the one
    ``tools/rewrite_questions.py`` writes next to it; :mod:`megatron_corew.data.rephrase_check`): pairs it
    flagged are dropped. Its rows must match the pair's (count and question fingerprints). ``summary()`` of the
    result is the one line to log.
    """
    _check_options("error", max_prompt_length)
    opath, rpath = os.fspath(original_path), os.fspath(rephrased_path)
    otab, rtab = _read_table(opath), _read_table(rpath)
    if otab.num_rows != rtab.num_rows:
        raise DataError(
            f"paired files differ in length: {opath} has {otab.num_rows} rows, {rpath} has {rtab.num_rows} rows"
        )
    oparsed, _ = _parse_rows(opath, otab, prompt_key, "error")
    rparsed, _ = _parse_rows(rpath, rtab, prompt_key, "error")
    from megatron_corew.data import pair_checks

    pair_checks.check_aligned(opath, rpath, oparsed, rparsed, by_numbers=rephrase_check is None)
    flagged_rows, num_flagged, num_fallback = set(), {}, 0
    if rephrase_check is not None:
        flagged_rows, num_flagged, num_fallback = pair_checks.read_rephrase_check(
            os.fspath(rephrase_check), oparsed, rparsed
        )
    oex, _ = _tokenize(opath, oparsed, tokenizer, "error")
    rex, _ = _tokenize(rpath, rparsed, tokenizer, "error")
    keep = [k for k in range(len(oex)) if oex[k].index not in flagged_rows]
    if max_prompt_length is not None:
        keep = [
            k
            for k in keep
            if len(oex[k].prompt_ids) <= max_prompt_length and len(rex[k].prompt_ids) <= max_prompt_length
        ]
    dropped = len(oex) - len(flagged_rows) - len(keep)
    if dropped:
        logger.info(
            "%s + %s: dropped %d of %d pairs with a prompt longer than %d tokens",
            opath,
            rpath,
            dropped,
            len(oex),
            max_prompt_length,
        )
    if not keep:
        raise DataError(
            f"{opath} + {rpath}: no usable pairs ({otab.num_rows} rows, {len(flagged_rows)} flagged by "
            f"{rephrase_check}, {dropped} with a prompt longer than {max_prompt_length} tokens)"
        )
    n_o_long = sum(len(e.prompt_ids) > max_prompt_length for e in oex) if max_prompt_length else 0
    n_r_long = sum(len(e.prompt_ids) > max_prompt_length for e in rex) if max_prompt_length else 0
    original = PromptDataset([oex[k] for k in keep], opath, otab.num_rows, n_o_long, 0, max_prompt_length)
    rephrased = PromptDataset([rex[k] for k in keep], rpath, rtab.num_rows, n_r_long, 0, max_prompt_length)
    pairs = PairedDataset(original, rephrased, dropped, num_flagged, num_fallback, len(flagged_rows))
    logger.info("%s + %s: %s", opath, rpath, pairs.summary())
    return pairs
