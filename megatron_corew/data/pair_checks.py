"""Is a rephrased file the row-aligned partner of its original (``dataset.load_paired_examples``)? Row indices and
ground truths must agree where both sides carry them; without either, the questions' numbers must mostly survive
the rephrasing; a rephrase check file must belong to this pair."""

from __future__ import annotations

import os

from megatron_corew.data.dataset import DataError


def check_aligned(opath: str, rpath: str, oparsed, rparsed, by_numbers: bool = True) -> None:
    """Raise ``DataError`` naming the first row where the two parsed files disagree (``extra_info.index`` or the
    ground truth); when no row carries either and ``by_numbers``, compare the questions' numbers instead."""
    compared = 0
    for (i, o), (_, r) in zip(oparsed, rparsed):
        oi, ri = o["extra_info"].get("index"), r["extra_info"].get("index")
        og, rg = o["ground_truth"], r["ground_truth"]
        compared += (oi is not None and ri is not None) or (og is not None and rg is not None)
        if oi is not None and ri is not None and oi != ri:
            raise DataError(
                f"paired files are misaligned at row {i}: extra_info.index is {oi!r} in {opath} but {ri!r} in {rpath}"
            )
        if og is not None and rg is not None and og.strip() != rg.strip():
            raise DataError(f"paired files disagree at row {i}: ground truth {og!r} in {opath} but {rg!r} in {rpath}")
    if not compared and by_numbers:
        _aligned_by_numbers(opath, rpath, oparsed, rparsed)


def _aligned_by_numbers(opath: str, rpath: str, oparsed, rparsed, sample: int = 200) -> None:
    """Neither side has an index or a label to compare: a rephrasing keeps its question's numbers, so when most
    sampled rows do not (and row i's numbers sit better at row i+1, or almost no row matches), the files are
    misaligned. Faithful rewrites keep their numbers in ~90% of pairs (docs/REPHRASING.md)."""
    from megatron_corew.data.question_facts import number_diff, numbers_of

    n, m = len(oparsed), min(sample, len(oparsed))
    picked = sorted({k * (n - 1) // (m - 1) for k in range(m)}) if m > 1 else []
    questions = {k: _question(oparsed[k][1]["messages"]) for k in picked}
    rows = [k for k in picked if sum(sum(c.values()) for c in numbers_of(questions[k])[:2])]  # rows with numbers
    if len(rows) < 8:
        return

    def kept(pairs) -> float:  # share of (original row, rephrased row) pairs whose rephrasing keeps the numbers
        return sum(number_diff(questions[k], _question(rparsed[j][1]["messages"])) is None for k, j in pairs) / max(
            1, len(pairs)
        )

    same = kept([(k, k) for k in rows])
    next_row = kept([(k, k + 1) for k in rows if k + 1 < n])
    if same < 0.5 and (same < 0.2 or next_row > same + 0.25):
        raise DataError(
            f"{opath} + {rpath}: the paired files look misaligned: only {same:.0%} of {len(rows)} sampled rows keep "
            f"their question's numbers in the rephrasing (row i against row i+1: {next_row:.0%}); neither file has "
            "extra_info.index or a ground truth to check; add an index, or pass --train-data-rephrase-check"
        )


def _question(messages: list[dict]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else ""


def read_rephrase_check(path: str, oparsed, rparsed) -> tuple[set[int], dict[str, int], int]:
    """(flagged rows, flagged count by reason, fallback count) of a check file that belongs to this pair."""
    from megatron_corew.data.rephrase_check import pair_sha, read_check_file

    if not os.path.exists(path):
        raise DataError(f"{path}: rephrase check file not found")
    try:
        records = read_check_file(path)
    except (OSError, ValueError) as e:
        raise DataError(str(e)) from None
    if len(records) != len(oparsed):
        raise DataError(f"{path}: {len(records)} check records for a pair of {len(oparsed)} rows")
    flagged, by_reason, fallback = set(), {}, 0
    for rec, (i, o), (_, r) in zip(records, oparsed, rparsed):
        sha = rec.get("sha")
        if sha is not None and sha != pair_sha(_question(o["messages"]), _question(r["messages"])):
            raise DataError(f"{path}: row {i}: the check record is not of this pair's questions (another pair?)")
        if rec["verdict"] == "flagged":
            flagged.add(i)
            for reason in rec["reasons"] or ["unspecified"]:
                by_reason[reason] = by_reason.get(reason, 0) + 1
        elif rec["verdict"] == "fallback":
            fallback += 1
    return flagged, by_reason, fallback
