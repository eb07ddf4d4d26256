"""Convert a math dataset, as its publisher ships it, into the verl parquet schema used for training/evaluation.

    python tools/preprocess_data.py --dataset math --input MATH-lighteval/data --split train --output data/math
    python tools/preprocess_data.py --dataset gsm8k --input gsm8k/main/test-00000-of-00001.parquet --output data/gsm8k
    python tools/preprocess_data.py --dataset amc --input amc.jsonl --output data/amc/test.parquet --on-bad-row skip
    python tools/preprocess_data.py --dataset dapo --hub --output data/dapo          # needs `datasets` + network

    python tools/preprocess_data.py --dataset qa --input test.jsonl --output data/arith/test.parquet \\
        --few-shot 3 --few-shot-from train.jsonl                          # 3 worked examples before each question

Writes OUTPUT (a .parquet path) or OUTPUT/<split>.parquet: system prompt + bare question, reward_model.ground_truth,
extra_info {index, split, source metadata}. Malformed rows are reported as ``FILE: row N: reason`` and either stop
the run (--on-bad-row error, the default; exit code 2) or are skipped and counted. The output appears only when
complete (temp file + rename). Source formats: see megatron_corew/data/sources.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys


def build_parser() -> argparse.ArgumentParser:
    from megatron_corew.data.prompts import FEW_SHOT_ANSWER, SYSTEM_PROMPT
    from megatron_corew.data.sources import SOURCES

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--dataset", required=True, choices=sorted(SOURCES), help="source format")
    p.add_argument(
        "--input",
        nargs="+",
        default=None,
        help="parquet / jsonl / json files, or directories (files whose name starts with --split)",
    )
    p.add_argument("--hub", action="store_true", help="load from the hub with `datasets` instead of --input")
    p.add_argument("--output", required=True, help="output directory (writes <split>.parquet) or a .parquet path")
    p.add_argument(
        "--split",
        default=None,
        help="split name for extra_info and directory inputs (default: the source's usual split)",
    )
    p.add_argument(
        "--on-bad-row",
        choices=["error", "skip"],
        default="error",
        help="malformed row: stop with FILE: row N: reason, or skip it and report",
    )
    p.add_argument(
        "--data-source",
        default=None,
        help="data_source value (default: the source's hub id; the reference writes "
        "'DigitalLearningGmbH/MATH-lighteval' for every source)",
    )
    p.add_argument("--system-prompt", default=SYSTEM_PROMPT)
    p.add_argument(
        "--prompt-style",
        choices=["system", "user"],
        default="system",
        help="system: system prompt + bare question (reference releases); user: instruction appended "
        "to the question, no system message",
    )
    f = p.add_argument_group("few-shot prompts")
    f.add_argument("--few-shot", type=int, default=0, help="worked examples before each question (0: none)")
    f.add_argument(
        "--few-shot-from",
        nargs="+",
        default=None,
        help="files the examples are drawn from (same --dataset format; never an --input)",
    )
    f.add_argument("--few-shot-style", choices=["chat", "inline"], default="chat", help="chat turns or one text")
    f.add_argument("--few-shot-answer", default=FEW_SHOT_ANSWER, help="an example's reply; {answer}: its answer")
    f.add_argument("--few-shot-seed", type=int, default=0, help="which examples are drawn")
    return p


def _sigterm_to_exit(signum, frame):  # let `finally` blocks remove temp files on SIGTERM
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _sigterm_to_exit)
    from megatron_corew.data.sources import FewShot, PreprocessError, preprocess

    if not args.hub and not args.input:
        print("error: pass --input FILE... (or --hub)", file=sys.stderr)
        return 2
    from megatron_corew.validation import FlagError, check_writable

    try:  # OUTPUT is a directory, or a .parquet file inside one: neither may sit under an existing file
        if args.output.endswith(".parquet"):
            check_writable("--output", os.path.dirname(os.path.abspath(args.output)))
            if os.path.isdir(args.output):
                raise FlagError(f"--output {args.output} is a directory; name a .parquet file or a directory")
        else:
            check_writable("--output", args.output)
    except FlagError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.few_shot < 0:
        print(f"error: --few-shot {args.few_shot} must be >= 0", file=sys.stderr)
        return 2
    if args.few_shot_from and not args.few_shot:
        print("error: --few-shot-from does not apply without --few-shot K", file=sys.stderr)
        return 2
    shots = None
    if args.few_shot:
        shots = FewShot(
            args.few_shot, args.few_shot_from or [], args.few_shot_style, args.few_shot_answer, args.few_shot_seed
        )
    try:
        summary = preprocess(
            args.dataset,
            args.input,
            args.output,
            split=args.split,
            on_bad_row=args.on_bad_row,
            data_source=args.data_source,
            system_prompt=args.system_prompt or None,
            prompt_style=args.prompt_style,
            hub=args.hub,
            few_shot=shots,
        )
    except PreprocessError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    for line in summary["skipped_rows"]:
        print(f"skipped {line}", file=sys.stderr)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
