"""Math datasets in their publishers' file formats -> rows, each tagged with where it came from.

Local files (parquet, jsonl, json array / ``{"data": [...]}`` / a dict of columns) or a directory of them (a hub
snapshot: files whose name starts with the split), or the hub itself through ``datasets``. A row that cannot be
parsed (a broken jsonl line) is kept as a bad row, so the converter reports it as ``FILE: row N: reason`` under
the caller's ``on_bad_row`` policy; a file that cannot be read at all is always an error.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PreprocessError", "INPUT_EXTS", "BadRow", "RecordSet", "expand_inputs", "read_records", "read_hub"]

INPUT_EXTS = (".parquet", ".jsonl", ".json")


class PreprocessError(ValueError):
    """An input that cannot be converted: unreadable file, missing column, or a malformed row under 'error'."""


@dataclass
class BadRow:
    """A row that could not be parsed while reading; the converter reports it like any malformed row."""

    where: str  # "FILE: row N" (+ line for jsonl)
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class RecordSet:
    """Rows of one input file: [(where, row_number, record)] (an unparseable row's record is a ``BadRow``),
    plus the file's column names."""

    path: str
    rows: list[tuple[str, int, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)


def expand_inputs(paths: Iterable[str], split: str | None) -> list[str]:
    """Files to read: each path itself, or a directory's files whose name starts with ``split``."""
    out = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            files = sorted(
                f
                for f in glob.glob(os.path.join(glob.escape(p), "**", "*"), recursive=True)
                if f.endswith(INPUT_EXTS) and os.path.isfile(f)
            )
            chosen = [f for f in files if split and os.path.basename(f).startswith(split)]
            if not chosen:
                raise PreprocessError(
                    f"{p}: no {'/'.join(INPUT_EXTS)} file whose name starts with the split "
                    f"{split!r} (files: {[os.path.relpath(f, p) for f in files][:10]})"
                )
            out.extend(chosen)
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise PreprocessError(f"{p}: file not found")
    return out


def read_records(path: str) -> RecordSet:
    """Read one parquet / jsonl / json file. Unparseable jsonl lines become bad rows; an unreadable file raises."""
    path = os.fspath(path)
    rs = RecordSet(path)
    if path.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
            records = table.to_pylist()
        except (pa.ArrowException, OSError, ValueError) as e:
            raise PreprocessError(f"{path}: cannot read as a parquet file ({type(e).__name__}: {e})") from e
        rs.columns = list(table.column_names)
        rs.rows = [(f"{path}: row {i}", i, r) for i, r in enumerate(records)]
        return rs
    if path.endswith(".jsonl"):
        try:
            f = open(path, encoding="utf-8")
        except OSError as e:
            raise PreprocessError(f"{path}: cannot open ({e})") from e
        cols: dict[str, None] = {}
        with f:
            i = 0
            try:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    where = f"{path}: row {i} (line {lineno})"
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        rs.rows.append((where, i, BadRow(where, f"not valid JSON ({e.msg})")))
                        i += 1
                        continue
                    if isinstance(rec, dict):
                        cols.update(dict.fromkeys(rec))
                    rs.rows.append((where, i, rec))
                    i += 1
            except UnicodeDecodeError as e:
                raise PreprocessError(f"{path}: not UTF-8 text ({e})") from e
        rs.columns = list(cols)
        return rs
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PreprocessError(f"{path}: cannot read as JSON ({type(e).__name__}: {e})") from e
        if isinstance(data, dict):
            lists = [
                v for k, v in data.items() if k in ("data", "rows", "train", "test", "examples") and isinstance(v, list)
            ]
            if len(lists) == 1:
                data = lists[0]
            elif data and all(isinstance(v, list) for v in data.values()) and len({len(v) for v in data.values()}) == 1:
                keys = list(data)  # a dict of columns
                data = [dict(zip(keys, vals)) for vals in zip(*data.values())]
        if not isinstance(data, list):
            raise PreprocessError(
                f"{path}: expected a JSON array of objects (or {{'data': [...]}}), got {type(data).__name__}"
            )
        cols = {}
        for i, rec in enumerate(data):
            if isinstance(rec, dict):
                cols.update(dict.fromkeys(rec))
            rs.rows.append((f"{path}: row {i}", i, rec))
        rs.columns = list(cols)
        return rs
    raise PreprocessError(f"{path}: unsupported file type (expected one of {INPUT_EXTS})")


def read_hub(hub_id: str, hub_config: str | None, split: str) -> RecordSet:
    """Records from the hub through ``datasets`` (only when it is installed and the hub is reachable)."""
    try:
        import datasets
    except ImportError as e:
        raise PreprocessError("--hub needs the 'datasets' package; pass local files with --input instead") from e
    try:
        ds = datasets.load_dataset(hub_id, hub_config, split=split)
    except Exception as e:  # noqa: BLE001 - offline, missing split, auth, ...
        raise PreprocessError(
            f"cannot load {hub_id} ({hub_config}) split {split!r} from the hub: {type(e).__name__}: {e}"
        ) from e
    where = f"hub:{hub_id}"
    rs = RecordSet(where, columns=list(ds.column_names))
    rs.rows = [(f"{where}: row {i}", i, r) for i, r in enumerate(ds)]
    return rs
