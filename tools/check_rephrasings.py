"""Run the rephrasing quality check on an existing row-aligned pair (original + rephrased parquet files).

    python tools/check_rephrasings.py --original data/math/train_original.parquet \\
        --rephrased data/math/train_rewrite_Qwen3-32B.parquet --output data/math/train_rewrite.check.jsonl \\
        [--on-bad-rephrase drop --output-original o.parquet --output-rephrased r.parquet]

Prints the summary table (kept / flagged by reason, distance distribution) and writes the check file: one record
per pair row, which ``train_rl.py --train-data-rephrase-check`` reads to drop the flagged pairs. With
``--on-bad-rephrase drop|original`` it also writes the filtered pair, aligned. See
megatron_corew/data/rephrase_check.py.
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    from megatron_corew.data.rephrase_check import add_check_args

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--original", required=True, help="parquet file of the original questions")
    p.add_argument("--rephrased", required=True, help="parquet file of their rephrasings, row by row")
    p.add_argument("--output", required=True, help="check file to write (jsonl, one record per pair row)")
    p.add_argument("--prompt-key", "--question_column", dest="prompt_key", default="prompt")
    p.add_argument("--output-original", default=None, help="the original file after --on-bad-rephrase")
    p.add_argument("--output-rephrased", default=None, help="the rephrased file after --on-bad-rephrase")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    add_check_args(p)
    return p


def main(argv=None) -> int:
    from megatron_corew.data.rephrase_check import check_config_from_args, check_files, summary_table

    args = build_parser().parse_args(argv)
    try:
        cfg = check_config_from_args(args)
        summary = check_files(
            args.original,
            args.rephrased,
            args.output,
            cfg,
            args.on_bad_rephrase,
            args.prompt_key,
            args.output_original,
            args.output_rephrased,
        )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print(summary_table(summary), flush=True)
        print(f"{summary['pairs_written']} of {summary['pairs']} pairs written; check file: {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
