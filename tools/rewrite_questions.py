"""Rephrase the questions of a verl-schema parquet file for Co-rewarding-I (the reference tool's flags).

    python tools/rewrite_questions.py --input_path data/math/train.parquet \\
        --output_jsonl data/math/train_rewrite_Qwen3-32B.jsonl \\
        --output_parquet data/math/train_rewrite_Qwen3-32B.parquet \\
        --output_original_parquet data/math/train_original.parquet \\
        --model_path /models/Qwen3-32B --batch_size 128 [--rollout-backend sglang --sglang-tp-size 8]

Backends: the embedded HF engine (default), SGLang (``--rollout-backend sglang``, launched or ``--sglang-urls``),
or any OpenAI-compatible server (``--openai-url http://host:8000`` with ``--tokenizer_path``).
Sampling as the reference: temperature 0.7, top_p 0.8, thinking off. Beyond it: ``--max_attempts K`` retries rows
whose output does not parse; ``--check_answer {ground_truth,original}`` keeps a rewrite only if the same model's
answer to it matches; the run resumes from the JSONL after a kill (same output as an uninterrupted run); the
parquet pair is written atomically; every rewrite goes through the quality check (verdict and reasons in the JSONL,
a summary table on stderr, a check file aligned with the pair next to it, ``--on-bad-rephrase keep|drop|original``).
See megatron_corew/data/rephrase.py and megatron_corew/data/rephrase_check.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    from megatron_corew.data.rephrase import RewriteConfig
    from megatron_corew.data.rephrase_check import add_check_args
    from megatron_corew.rollout.tool_backend import add_tool_backend_args

    d = RewriteConfig()
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    g = p.add_argument_group("reference flags")
    g.add_argument("--input_path", default="data/math/train.parquet")
    g.add_argument("--output_jsonl", default="data/math/train_rewrite_Qwen3-32B.jsonl")
    g.add_argument("--output_parquet", default="data/math/train_rewrite_Qwen3-32B.parquet")
    g.add_argument("--output_original_parquet", default="data/math/train_original.parquet")
    g.add_argument("--model_path", default=None, help="HF model directory (not needed with --openai-url)")
    g.add_argument("--tokenizer_path", default=None, help="default: --model_path")
    g.add_argument("--question_column", default="prompt")
    g.add_argument("--batch_size", type=int, default=d.batch_size)
    g.add_argument("--enable_thinking", action="store_true", help="Qwen3 thinking mode (off in the reference runs)")
    g = p.add_argument_group("sampling, retries, checks, resume")
    g.add_argument("--temperature", type=float, default=d.temperature)
    g.add_argument("--top_p", "--top-p", type=float, default=d.top_p)
    g.add_argument("--max_tokens", "--max-new-tokens", dest="max_tokens", type=int, default=d.max_new_tokens)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument(
        "--max_attempts",
        "--max-attempts",
        type=int,
        default=d.max_attempts,
        help="generations per row in all; a row still unparsed after them is logged as failed",
    )
    g.add_argument(
        "--check_answer",
        "--check-answer",
        choices=["off", "ground_truth", "original"],
        default=d.check_answer,
        help="keep a rewrite only if the model's greedy answer to it matches the ground truth, or its "
        "greedy answer to the original question",
    )
    g.add_argument("--check_grading", "--check-grading", choices=["reference", "equiv"], default=d.check_grading)
    g.add_argument("--check_max_tokens", "--check-max-tokens", type=int, default=d.check_max_new_tokens)
    g.add_argument(
        "--allow_identical", "--allow-identical", action="store_true", help="accept a rewrite identical to the question"
    )
    g.add_argument(
        "--instruction_file",
        "--instruction-file",
        default=None,
        help="text file with the rewrite instruction (default: ours, same format as the reference)",
    )
    g.add_argument("--overwrite", action="store_true", help="discard an existing JSONL instead of resuming")
    g.add_argument(
        "--output_check",
        "--output-check",
        default=None,
        help="check file aligned with the pair (default: --output_parquet with .check.jsonl for .parquet)",
    )
    add_check_args(p)
    p.add_argument("--output-dir", default=None, help="SGLang logs/sync dir (default: next to --output_jsonl)")
    add_tool_backend_args(p)
    return p


def main(argv=None) -> int:
    from megatron_corew.rollout.tool_backend import parse_tool_args

    args = parse_tool_args(build_parser(), argv)
    if args.output_dir is None:
        args.output_dir = os.path.join(os.path.dirname(os.path.abspath(args.output_jsonl)), "rewrite_logs")
    tok_path = args.tokenizer_path or args.model_path
    if tok_path is None:
        print("error: pass --model_path (or --tokenizer_path with --openai-url)", file=sys.stderr)
        return 2
    if args.model_path is None and not args.openai_url:
        print("error: --model_path is required unless --openai-url is given", file=sys.stderr)
        return 2
    from megatron_corew.data.rephrase_check import check_config_from_args

    try:
        check_cfg = check_config_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from transformers import AutoTokenizer

    from megatron_corew.data.rephrase import DEFAULT_INSTRUCTION, RewriteConfig, run_rewrite
    from megatron_corew.rollout.tool_backend import create_tool_engine

    instruction = DEFAULT_INSTRUCTION
    if args.instruction_file:
        with open(args.instruction_file, encoding="utf-8") as f:
            instruction = f.read()
    cfg = RewriteConfig(
        batch_size=args.batch_size,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_tokens,
        max_attempts=args.max_attempts,
        seed=args.seed,
        enable_thinking=args.enable_thinking,
        instruction=instruction,
        allow_identical=args.allow_identical,
        check_answer=args.check_answer,
        check_grading=args.check_grading,
        check_max_new_tokens=args.check_max_tokens,
        rephrase_check=check_cfg,
        on_bad_rephrase=args.on_bad_rephrase,
    )
    tokenizer = AutoTokenizer.from_pretrained(tok_path)
    engine = create_tool_engine(args, args.model_path, tokenizer)
    try:
        summary = run_rewrite(
            engine,
            tokenizer,
            args.input_path,
            args.output_jsonl,
            args.output_parquet,
            args.output_original_parquet,
            args.question_column,
            cfg,
            overwrite=args.overwrite,
            log=lambda m: print(m, file=sys.stderr, flush=True),
            output_check=args.output_check,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        engine.shutdown()
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
