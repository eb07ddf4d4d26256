"""Quality gate for Co-rewarding-I rephrasings: does row i of the rephrased file still ask row i's question?

Co-rewarding-I crosses labels between the two views, so a rewrite that changes a number, drops a condition or a
unit, asks for something else, copies the question, or says something unrelated corrupts the signal silently.
:func:`check_pair` returns a verdict (``kept`` / ``flagged``) with one reason per failed check:

``number_changed``    the multiset of numbers differs (after normalisation: ``1/2`` = ``\\frac{1}{2}`` = ``0.5``,
                      ``1,000`` = ``1{,}000`` = ``1000``, ``three`` = ``3``; ``one``/``half``/``twice``/ordinals only
                      excuse a difference, they are never required)
``math_changed``      a LaTeX or plain-text formula (``$x^2+1$``, ``x^2+y^2=z^2``) of one side is absent from the other
``request_changed``   a term of the answer-bearing request (the last question sentence and what follows: the target
                      quantity such as *sum*, *probability*, *remainder*, or an answer-format instruction) is missing
``condition_dropped`` a mathematical qualifier elsewhere (*distinct*, *positive*, *without replacement*, ...) is missing
``unit_changed``      the set of measurement units differs (*meters* -> *feet*, *hours* -> *minutes*, ``$`` dropped)
``near_copy``         the lexical distance is below ``min_distance`` (no second view)
``unrelated``         the lexical distance is above ``max_distance``

Lexical distance: the token-level edit distance (``nltk.edit_distance``) over the content words and numbers of
``nltk.wordpunct_tokenize`` (a regular expression: no nltk data files are needed at run time), divided by the
longer count; 0 = the same words, 1 = no word in common. Function words are left out because any two English
texts share them (with them, an unrelated text scored 0.95 and a faithful story of a short question 0.96 on the
sample). BLEU-4 (``nltk.translate.bleu_score``, smoothed) is reported alongside.
The default bounds come from the hand-written sample in ``benchmarks/rephrase_sample.py``
(``benchmarks/bench_rephrase_check.py`` prints the measurement).

Output files (one JSON record per pair row, aligned with the parquet pair): ``{"row", "verdict", "reasons",
"details", "distance", "bleu", "sha"}``; ``sha`` fingerprints the two questions so the paired loader
(:func:`megatron_corew.data.load_paired_examples`, ``rephrase_check=``) can refuse a file of another pair.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field

from megatron_corew.data.question_facts import (
    TERMS,
    UNITS,
    formula_diff,
    number_diff,
    request_of,
    term_classes,
)

__all__ = [
    "REASONS",
    "CHECKS",
    "CheckConfig",
    "PairCheck",
    "check_pair",
    "check_pairs",
    "lexical_distance",
    "content_tokens",
    "pair_sha",
    "summarize",
    "summary_table",
    "write_check_file",
    "read_check_file",
    "ON_BAD_REPHRASE",
    "apply_check",
    "check_path_for",
    "check_files",
    "add_check_args",
    "check_config_from_args",
]

REASONS = (
    "number_changed",
    "math_changed",
    "request_changed",
    "condition_dropped",
    "unit_changed",
    "near_copy",
    "unrelated",
)
# the checks that can be switched off, and the reasons each one gives
CHECKS = {
    "numbers": ("number_changed",),
    "math": ("math_changed",),
    "request": ("request_changed",),
    "conditions": ("condition_dropped",),
    "units": ("unit_changed",),
    "distance": ("near_copy", "unrelated"),
}


ON_BAD_REPHRASE = ("keep", "drop", "original")


@dataclass
class CheckConfig:
    min_distance: float = 0.15  # below: a near copy (see benchmarks/bench_rephrase_check.py)
    max_distance: float = 0.95  # above: shares (almost) no word with the question
    checks: tuple[str, ...] = tuple(CHECKS)

    def __post_init__(self):
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise ValueError(f"unknown rephrase check(s) {unknown} (known: {', '.join(CHECKS)})")
        if not 0.0 <= self.min_distance <= self.max_distance <= 1.0:
            raise ValueError(
                f"need 0 <= min_distance <= max_distance <= 1, got {self.min_distance} and {self.max_distance}"
            )


@dataclass
class PairCheck:
    verdict: str  # kept | flagged
    reasons: list[str]
    details: dict = field(default_factory=dict)  # per reason: what is missing / extra
    distance: float = 0.0
    bleu: float = 0.0

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "details": self.details,
            "distance": round(self.distance, 4),
            "bleu": round(self.bleu, 4),
        }


# ----------------------------------------------------------------------------------------------------------------
# Lexical distance (nltk)
# ----------------------------------------------------------------------------------------------------------------
# function words: shared by any two English texts, so they would pull an unrelated text's distance below 1
_FUNCTION_WORDS = frozenset(
    "a an the of to in on at for with and or but is are was were be been by as that this these those it its he she "
    "they them his her their him what how many much does do did has have had if each from then there than which who "
    "so such any all some can will would not no".split()
)


def _tokens(text: str) -> list[str]:
    from nltk.tokenize import wordpunct_tokenize  # a regular expression: no punkt data needed

    return [t.lower() for t in wordpunct_tokenize(text)]


def content_tokens(text: str) -> list[str]:
    """The words and numbers of ``text`` (nltk tokens, lower case) without punctuation and function words."""
    return [t for t in _tokens(text) if t.isalnum() and t not in _FUNCTION_WORDS]


def lexical_distance(a: str, b: str) -> tuple[float, float]:
    """(distance, BLEU): the token edit distance (``nltk.edit_distance``) between the content tokens of ``a`` and
    ``b`` divided by the longer count (0 = same words, 1 = no word in common, in order), and the smoothed sentence
    BLEU-4 of ``b`` against ``a`` over all tokens (reported, not gated)."""
    from nltk.metrics.distance import edit_distance
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    ca, cb = content_tokens(a), content_tokens(b)
    dist = edit_distance(ca, cb) / max(len(ca), len(cb)) if ca or cb else 0.0
    ta, tb = _tokens(a), _tokens(b)
    bleu = sentence_bleu([ta], tb, smoothing_function=SmoothingFunction().method1) if ta and tb else 0.0
    return float(dist), float(bleu)


# ----------------------------------------------------------------------------------------------------------------
# The check
# ----------------------------------------------------------------------------------------------------------------
def check_pair(original: str, rewritten: str, cfg: CheckConfig | None = None) -> PairCheck:
    """The verdict on one (original question, rewritten question) pair."""
    cfg = cfg or CheckConfig()
    reasons: list[str] = []
    details: dict = {}

    def flag(reason, detail):
        if detail is not None:
            reasons.append(reason)
            details[reason] = detail

    if "numbers" in cfg.checks:
        flag("number_changed", number_diff(original, rewritten))
    if "math" in cfg.checks:
        flag("math_changed", formula_diff(original, rewritten))
    if "request" in cfg.checks or "conditions" in cfg.checks:
        req = term_classes(request_of(original), TERMS)
        have = term_classes(rewritten, TERMS)
        rest = term_classes(original, TERMS) - req
        if "request" in cfg.checks:
            miss = sorted(req - have)
            flag("request_changed", {"missing": miss} if miss else None)
        if "conditions" in cfg.checks:
            miss = sorted(rest - have)
            flag("condition_dropped", {"missing": miss} if miss else None)
    if "units" in cfg.checks:
        # a unit of the question must stay; the request's units (the answer's unit) must stay in the request; a
        # story may add units elsewhere ("47 + 38" -> "47 apples and 38 more")
        ua, ub = term_classes(original, UNITS), term_classes(rewritten, UNITS)
        qa, qb = term_classes(request_of(original), UNITS), term_classes(request_of(rewritten), UNITS)
        miss, req_miss = sorted(ua - ub), sorted(qa - qb)
        detail = {
            "missing": miss,
            "extra": sorted(ub - ua),
            "request_missing": req_miss,
            "request_extra": sorted(qb - qa),
        }
        flag("unit_changed", detail if miss or req_miss else None)
    dist, bleu = lexical_distance(original, rewritten)
    if "distance" in cfg.checks:
        flag("near_copy", {"distance": round(dist, 4), "min": cfg.min_distance} if dist < cfg.min_distance else None)
        flag("unrelated", {"distance": round(dist, 4), "max": cfg.max_distance} if dist > cfg.max_distance else None)
    return PairCheck("flagged" if reasons else "kept", reasons, details, dist, bleu)


def pair_sha(original: str, rewritten: str) -> str:
    """Fingerprint of a pair's two questions (the check file's link to its parquet rows)."""
    return hashlib.sha256((original + "\x00" + rewritten).encode()).hexdigest()[:16]


def check_pairs(pairs, cfg: CheckConfig | None = None) -> list[PairCheck]:
    cfg = cfg or CheckConfig()
    return [check_pair(o, r, cfg) for o, r in pairs]


def check_path_for(output_parquet: str) -> str:
    """Where the check file of a rephrased parquet file goes by default: ``X.parquet`` -> ``X.check.jsonl``."""
    root = output_parquet[: -len(".parquet")] if output_parquet.endswith(".parquet") else output_parquet
    return root + ".check.jsonl"


def apply_check(
    questions: list[str], rewrites: list[str], cfg: CheckConfig, on_bad_rephrase: str
) -> tuple[list[int], list[str], list[dict], list]:
    """Check each (question, rewrite) and apply the policy. Returns (kept positions, the rephrased question of each
    kept position, the check file's records, the checks): ``drop`` leaves flagged positions out, ``original``
    puts the question itself in their place (verdict ``fallback``)."""
    if on_bad_rephrase not in ON_BAD_REPHRASE:
        raise ValueError(f"on_bad_rephrase must be one of {', '.join(ON_BAD_REPHRASE)}, got {on_bad_rephrase!r}")
    checks = [check_pair(q, r, cfg) for q, r in zip(questions, rewrites)]
    keep, texts, records = [], [], []
    for k, (q, r, c) in enumerate(zip(questions, rewrites, checks)):
        verdict = c.verdict
        if verdict == "flagged" and on_bad_rephrase == "drop":
            continue
        if verdict == "flagged" and on_bad_rephrase == "original":
            r, verdict = q, "fallback"
        rec = {"row": len(keep), **c.as_dict(), "verdict": verdict, "sha": pair_sha(q, r)}
        keep.append(k)
        texts.append(r)
        records.append(rec)
    return keep, texts, records, checks


# ----------------------------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------------------------
def _quantiles(xs: list[float]) -> dict:
    if not xs:
        return {}
    s = sorted(xs)

    def q(p):
        return round(s[min(len(s) - 1, int(p * (len(s) - 1) + 0.5))], 3)

    return {"min": q(0), "p10": q(0.1), "p50": q(0.5), "p90": q(0.9), "max": q(1)}


def summarize(checks: list[PairCheck], fallbacks: int = 0) -> dict:
    """Counts by verdict and reason, and the distance / BLEU distributions (quantiles and a 10-bin histogram)."""
    by_reason = Counter(r for c in checks for r in c.reasons)
    dists = [c.distance for c in checks]
    hist = [0] * 10
    for d in dists:
        hist[min(int(d * 10), 9)] += 1
    return {
        "pairs": len(checks),
        "kept": sum(c.verdict == "kept" for c in checks),
        "flagged": sum(c.verdict == "flagged" for c in checks),
        "fallback_to_original": fallbacks,
        "by_reason": {r: by_reason[r] for r in REASONS if by_reason[r]},
        "distance": _quantiles(dists),
        "distance_histogram": hist,
        "bleu": _quantiles([c.bleu for c in checks]),
    }


def summary_table(summary: dict) -> str:
    """A markdown table of a :func:`summarize` result."""
    n = max(summary["pairs"], 1)
    lines = ["| verdict / reason | pairs | share |", "|---|---|---|"]
    lines.append(f"| kept | {summary['kept']} | {summary['kept'] / n:.1%} |")
    lines.append(f"| flagged | {summary['flagged']} | {summary['flagged'] / n:.1%} |")
    for r, k in summary["by_reason"].items():
        lines.append(f"| - {r} | {k} | {k / n:.1%} |")
    if summary.get("fallback_to_original"):
        lines.append(f"| flagged, original question used | {summary['fallback_to_original']} | |")
    d, b = summary["distance"], summary["bleu"]
    if d:
        lines.append("")
        lines.append("| | min | p10 | p50 | p90 | max |")
        lines.append("|---|---|---|---|---|---|")
        lines.append("| edit distance | " + " | ".join(str(d[k]) for k in ("min", "p10", "p50", "p90", "max")) + " |")
        lines.append("| BLEU-4 | " + " | ".join(str(b[k]) for k in ("min", "p10", "p50", "p90", "max")) + " |")
        h = summary["distance_histogram"]
        lines.append("")
        lines.append("distance histogram (0.0-0.1 ... 0.9-1.0): " + " ".join(map(str, h)))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Check files
# ----------------------------------------------------------------------------------------------------------------
def write_check_file(path: str, records: list[dict]) -> None:
    """One JSON record per pair row (``row``, ``verdict``, ``reasons``, ``details``, ``distance``, ``bleu``,
    ``sha``), written atomically."""
    from checkpoints_conversion import atomic

    atomic.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_check_file(path: str) -> list[dict]:
    """The records of a check file, in row order; a bad line raises ValueError naming the file and line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno}: not valid JSON ({e.msg})") from None
            if (
                not isinstance(rec, dict)
                or rec.get("row") != len(out)
                or rec.get("verdict") not in ("kept", "flagged", "fallback")
                or not isinstance(rec.get("reasons"), list)
            ):
                raise ValueError(
                    f"{path}: line {lineno}: expected a record with row={len(out)}, a verdict (kept / flagged / "
                    f"fallback) and a reasons list"
                )
            out.append(rec)
    return out


# ----------------------------------------------------------------------------------------------------------------
# An existing pair of files
# ----------------------------------------------------------------------------------------------------------------
def _questions(path: str, table, prompt_key: str) -> list[tuple[str, int | None]]:
    from megatron_corew.data.rewrite_format import question_of

    if prompt_key not in table.column_names:
        raise ValueError(f"{path}: missing column {prompt_key!r} (columns: {table.column_names})")
    out = []
    for i, cell in enumerate(table.column(prompt_key).to_pylist()):
        try:
            out.append(question_of(cell))
        except ValueError as e:
            raise ValueError(f"{path}: row {i}: {e}") from None
    return out


def check_files(
    original_path: str,
    rephrased_path: str,
    output_check: str,
    cfg: CheckConfig | None = None,
    on_bad_rephrase: str = "keep",
    prompt_key: str = "prompt",
    output_original: str | None = None,
    output_rephrased: str | None = None,
) -> dict:
    """Check an existing row-aligned pair (such as the reference's released files); write the check file and, when
    asked, the pair after ``on_bad_rephrase`` (both files, aligned, every other column unchanged)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from checkpoints_conversion import atomic
    from megatron_corew.data.rewrite_format import with_question

    if (output_original is None) != (output_rephrased is None):
        raise ValueError("pass both --output-original and --output-rephrased, or neither")
    if on_bad_rephrase != "keep" and output_original is None:
        raise ValueError(f"--on-bad-rephrase {on_bad_rephrase} needs --output-original and --output-rephrased")
    tables = []
    for path in (original_path, rephrased_path):
        try:
            tables.append(pq.read_table(path))
        except (pa.ArrowException, OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read as a parquet file ({type(e).__name__}: {e})") from None
    otab, rtab = tables
    if otab.num_rows != rtab.num_rows:
        raise ValueError(
            f"the pair differs in length: {original_path} has {otab.num_rows} rows, {rephrased_path} {rtab.num_rows}"
        )
    oq = _questions(original_path, otab, prompt_key)
    rq = _questions(rephrased_path, rtab, prompt_key)
    keep, texts, records, checks = apply_check(
        [q for q, _ in oq], [q for q, _ in rq], cfg or CheckConfig(), on_bad_rephrase
    )
    for rec, k in zip(records, keep):
        rec["index"] = k
    write_check_file(output_check, records)
    if output_original is not None:
        idx = pa.array(keep, type=pa.int64())
        o_out, r_out = otab.take(idx), rtab.take(idx)
        cells = r_out.column(prompt_key).to_pylist()
        new = [with_question(c, rq[k][1], text) for c, k, text in zip(cells, keep, texts)]
        col = rtab.column_names.index(prompt_key)
        f = rtab.schema.field(prompt_key)
        r_out = r_out.set_column(col, f, pa.array(new, type=f.type))
        for table, path in ((o_out, output_original), (r_out, output_rephrased)):
            tmp = atomic.temp_path(path)
            try:
                pq.write_table(table, tmp)
                atomic.commit_file(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
    summary = summarize(checks, fallbacks=sum(r["verdict"] == "fallback" for r in records))
    summary.update(pairs_written=len(keep), output_check=output_check, on_bad_rephrase=on_bad_rephrase)
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Command-line flags (tools/rewrite_questions.py, tools/check_rephrasings.py)
# ----------------------------------------------------------------------------------------------------------------
def add_check_args(parser) -> None:
    d = CheckConfig()
    g = parser.add_argument_group("rephrasing quality check (megatron_corew/data/rephrase_check.py)")
    g.add_argument(
        "--on-bad-rephrase",
        "--on_bad_rephrase",
        dest="on_bad_rephrase",
        choices=["keep", "drop", "original"],
        default="keep",
        help="a flagged pair: keep it, drop it from both files, or use the original question as its rephrasing",
    )
    g.add_argument(
        "--rephrase-checks",
        "--rephrase_checks",
        dest="rephrase_checks",
        default=",".join(CHECKS),
        help=f"comma-separated checks to run ({', '.join(CHECKS)}), or 'none'",
    )
    g.add_argument(
        "--min-distance",
        "--min_distance",
        dest="min_distance",
        type=float,
        default=d.min_distance,
        help="lexical distance below which a rewrite is a near copy (reason near_copy)",
    )
    g.add_argument(
        "--max-distance",
        "--max_distance",
        dest="max_distance",
        type=float,
        default=d.max_distance,
        help="lexical distance above which a rewrite is unrelated to its question (reason unrelated)",
    )


def check_config_from_args(args) -> CheckConfig:
    """The CheckConfig of parsed flags; ValueError names the flag at fault."""
    names = [c.strip() for c in args.rephrase_checks.split(",") if c.strip()]
    if names == ["none"]:
        names = []
    unknown = [c for c in names if c not in CHECKS]
    if unknown:
        raise ValueError(f"--rephrase-checks: unknown check(s) {unknown} (known: {', '.join(CHECKS)}, or none)")
    if not 0.0 <= args.min_distance <= args.max_distance <= 1.0:
        raise ValueError(
            f"--min-distance {args.min_distance} / --max-distance {args.max_distance}: need 0 <= min <= max <= 1"
        )
    return CheckConfig(min_distance=args.min_distance, max_distance=args.max_distance, checks=tuple(names))
