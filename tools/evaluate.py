"""Evaluate a model on math benchmarks: greedy pass@1 and/or sampled avg@k / pass@k.

    python tools/evaluate.py --model runs/qwen3-8b-c2/hf/step_60 \\
        --data data/math500/test.parquet data/gsm8k/test.parquet amc=data/amc/test.parquet \\
        --mode both --k 8 --output-dir eval/qwen3-8b-c2
    python tools/evaluate.py --megatron-checkpoint ckpt/qwen3-8b-c2 --hf-config-dir /models/Qwen3-8B-Base ...
    python tools/evaluate.py --openai-url http://host:8000 --tokenizer /models/Qwen3-8B-Base --data ...

Benchmarks are verl-schema parquet files (tools/preprocess_data.py writes them; the reference's released files
load as they are), named NAME=PATH or after the file (``data/math500/test.parquet`` -> ``math500``).
Sampled mode uses temperature 0.8 by default (the paper's evaluation setting). Writes, per benchmark,
``OUT/<name>.md`` + ``OUT/<name>.json`` (and ``OUT/<name>.responses.jsonl`` with --save-responses), and the
combined ``OUT/results.md`` + ``OUT/results.json``. Backends: embedded (default), SGLang, OpenAI-compatible URL.
The same code (megatron_corew/evaluation.py) runs the in-training validation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time


def build_parser() -> argparse.ArgumentParser:
    from megatron_corew.evaluation import EVAL_MAX_NEW_TOKENS, EVAL_TEMPERATURE
    from megatron_corew.rollout.tool_backend import add_tool_backend_args

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    m = p.add_argument_group("model (one of)")
    m.add_argument("--model", default=None, help="HF model directory")
    m.add_argument(
        "--megatron-checkpoint",
        default=None,
        help="Megatron checkpoint (converted to HF in a temp dir with tools/convert_megatron_to_hf.py)",
    )
    m.add_argument(
        "--hf-config-dir",
        default=None,
        help="with --megatron-checkpoint: config + tokenizer files (default: CKPT/hf_config)",
    )
    m.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the model's)")
    d = p.add_argument_group("benchmarks")
    d.add_argument("--data", nargs="+", required=True, help="benchmark parquet files, optionally NAME=PATH")
    d.add_argument("--max-samples", type=int, default=None, help="first N problems of each benchmark")
    d.add_argument("--max-prompt-length", type=int, default=None, help="drop longer prompts (tokens)")
    d.add_argument("--on-bad-row", choices=["error", "skip"], default="error")
    e = p.add_argument_group("evaluation")
    e.add_argument("--mode", choices=["greedy", "sampled", "both"], default="greedy")
    e.add_argument("--k", type=int, default=8, help="samples per problem in sampled mode (avg@k, pass@k)")
    e.add_argument("--pass-k", type=int, nargs="*", default=None, help="extra pass@j to report (j <= k)")
    e.add_argument("--temperature", type=float, default=EVAL_TEMPERATURE, help="sampled mode (= --val-temperature)")
    e.add_argument("--top-p", type=float, default=1.0, help="sampled mode")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--max-new-tokens", type=int, default=EVAL_MAX_NEW_TOKENS, help="= --max-response-length")
    e.add_argument("--grading", choices=["reference", "equiv"], default="reference")
    e.add_argument(
        "--answer-format",
        default="boxed",
        help="how answers are read from responses, as train_rl.py --answer-format (rewards/extract.py)",
    )
    e.add_argument("--grader-workers", type=int, default=0, help="grading processes with per-item timeouts (0: inline)")
    e.add_argument("--output-dir", required=True)
    e.add_argument("--save-responses", action="store_true", help="write every response with its grade (jsonl)")
    add_tool_backend_args(p)
    return p


def benchmark_name(spec: str) -> tuple[str, str]:
    if "=" in spec and not os.path.exists(spec):
        name, path = spec.split("=", 1)
        return name, path
    stem = os.path.splitext(os.path.basename(spec))[0]
    if stem in ("test", "train", "val", "validation", "dev"):
        parent = os.path.basename(os.path.dirname(os.path.abspath(spec)))
        return (parent or stem), spec
    return stem, spec


def megatron_to_hf(checkpoint: str, hf_config_dir: str | None, out_dir: str) -> str:
    """Convert the checkpoint to HF into ``out_dir``/model (as tools/convert_megatron_to_hf.py does); returns it."""
    from checkpoints_conversion import api
    from megatron_corew.policy import cpu_compat

    cpu_compat.apply()  # before megatron's first import; a no-op where CUDA exists
    save = os.path.join(out_dir, "model")
    api.megatron_to_hf(checkpoint, hf_config_dir, save, dtype="auto", progress=False)
    return save


INF = float("inf")
TOOL_RANGES = {  # dest -> (low, low inclusive, high, high inclusive), as megatron_corew.validation.RANGES
    "max_samples": (1, True, INF, False),
    "max_prompt_length": (1, True, INF, False),
    "k": (1, True, INF, False),
    "temperature": (0, False, INF, False),
    "top_p": (0, False, 1, True),
    "seed": (0, True, 2**32 - 1, True),
    "max_new_tokens": (1, True, INF, False),
    "grader_workers": (0, True, INF, False),
}


def model_dir_problem(option: str, path: str) -> str | None:
    """Why ``path`` is not a usable local HF model directory (a hub lookup would give a misleading error)."""
    from megatron_corew.validation import FlagError, check_config_json, check_tokenizer_files

    if not os.path.isdir(path):
        return f"{option} {path}: directory not found (a local HF model directory)"
    if not os.path.isfile(os.path.join(path, "config.json")):
        return f"{option} {path} has no config.json: not an HF model directory"
    try:
        check_config_json(path)
        check_tokenizer_files(option, path)
    except FlagError as e:
        return str(e)
    return None


def main(argv=None) -> int:
    from megatron_corew.rollout.tool_backend import parse_tool_args

    args = parse_tool_args(build_parser(), argv)
    sources = [x for x in (args.model, args.megatron_checkpoint) if x]
    if len(sources) > 1 or (not sources and not args.openai_url):
        print(
            "error: pass exactly one of --model or --megatron-checkpoint (or --openai-url with --tokenizer)",
            file=sys.stderr,
        )
        return 2
    if args.openai_url and not (args.tokenizer or args.model):
        print("error: --openai-url needs --tokenizer (prompts are rendered and tokenised here)", file=sys.stderr)
        return 2
    from megatron_corew.rewards.extract import parse_format
    from megatron_corew.utils.lifecycle import set_cpu_threads
    from megatron_corew.validation import FlagError, check_ranges, check_writable

    try:
        check_ranges(args, TOOL_RANGES)
        check_writable("--output-dir", args.output_dir)  # before the evaluation, not after it
        try:
            parse_format(args.answer_format)
        except ValueError as e:
            raise FlagError(f"--answer-format: {e}") from None
    except FlagError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    problem = model_dir_problem("--model", args.model) if args.model else None
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    set_cpu_threads()
    from transformers import AutoTokenizer

    from checkpoints_conversion.atomic import write_text
    from megatron_corew.data import DataError, load_examples
    from megatron_corew.evaluation import evaluate, results_markdown

    tmp = None
    engine = None
    try:
        model_dir = args.model
        if args.megatron_checkpoint:
            tmp = tempfile.mkdtemp(prefix="corew-eval-")
            t0 = time.perf_counter()
            try:
                model_dir = megatron_to_hf(args.megatron_checkpoint, args.hf_config_dir, tmp)
            except Exception as e:  # noqa: BLE001 - ModelConfigError / CheckpointError with a clear message
                print(f"error: cannot convert {args.megatron_checkpoint}: {type(e).__name__}: {e}", file=sys.stderr)
                return 2
            print(f"converted {args.megatron_checkpoint} to HF in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        tok_dir = args.tokenizer or model_dir
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        benchmarks = {}
        for spec in args.data:
            name, path = benchmark_name(spec)
            if not name or name.startswith(".") or "/" in name or os.sep in name:
                print(f"error: bad benchmark name {name!r} (it names the output files)", file=sys.stderr)
                return 2
            if name in benchmarks:
                print(f"error: two benchmarks named {name!r}; use NAME=PATH", file=sys.stderr)
                return 2
            try:
                ds = load_examples(
                    path, tokenizer, max_prompt_length=args.max_prompt_length, on_bad_row=args.on_bad_row
                )
            except DataError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            exs = list(ds)[: args.max_samples] if args.max_samples else list(ds)
            no_gt = [e.index for e in exs if e.ground_truth is None]
            if no_gt:
                print(
                    f"error: {path}: {len(no_gt)} row(s) without (or with a blank) reward_model.ground_truth "
                    f"(first: row {no_gt[0]})",
                    file=sys.stderr,
                )
                return 2
            benchmarks[name] = exs
        from megatron_corew.rollout.tool_backend import create_tool_engine

        engine = create_tool_engine(args, model_dir, tokenizer)
        pool = None
        if args.grader_workers:
            from megatron_corew.rewards.grading import ProcessPoolGrader

            pool = ProcessPoolGrader(workers=args.grader_workers)
        modes = ["greedy", "sampled"] if args.mode == "both" else [args.mode]
        results: dict[str, dict] = {}
        records: dict[str, list] = {}
        for name, exs in benchmarks.items():
            merged: dict = {"file": benchmark_name_path(args.data, name), "n": len(exs)}
            for mode in modes:
                r = evaluate(
                    engine,
                    tokenizer,
                    {name: exs},
                    mode=mode,
                    k=args.k,
                    temperature=args.temperature,
                    seed=args.seed,
                    grading=args.grading,
                    top_p=args.top_p,
                    max_new_tokens=args.max_new_tokens,
                    pass_ks=args.pass_k,
                    grader=pool,
                    return_records=args.save_responses,
                    answer_format=args.answer_format,
                )[name]
                recs = r.pop("records", None)
                if recs is not None:
                    records.setdefault(name, []).extend(dict(x, mode=mode) for x in recs)
                merged[mode] = r
                print(
                    f"{name} [{mode}]: "
                    + ", ".join(f"{k}={100 * v:.2f}" for k, v in r.items() if k.startswith(("pass@", "avg@"))),
                    file=sys.stderr,
                )
            results[name] = merged
        if pool is not None:
            pool.close()
        model_desc = args.model or args.megatron_checkpoint or args.openai_url
        os.makedirs(args.output_dir, exist_ok=True)
        tables = {mode: {n: r[mode] for n, r in results.items()} for mode in modes}
        for name in results:
            md = "".join(
                results_markdown({name: results[name][mode]}, title=f"{name} ({mode})") + "\n" for mode in modes
            )
            write_text(os.path.join(args.output_dir, f"{name}.md"), f"model: `{model_desc}`\n\n" + md)
            write_text(
                os.path.join(args.output_dir, f"{name}.json"),
                json.dumps({"model": model_desc, "benchmark": name, **results[name]}, indent=1),
            )
            if name in records:
                write_text(
                    os.path.join(args.output_dir, f"{name}.responses.jsonl"),
                    "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in records[name]),
                )
        md = f"model: `{model_desc}`\n\n" + "".join(
            results_markdown(t, title=mode) + "\n" for mode, t in tables.items()
        )
        write_text(os.path.join(args.output_dir, "results.md"), md)
        write_text(
            os.path.join(args.output_dir, "results.json"),
            json.dumps(
                {
                    "model": model_desc,
                    "results": results,
                    "settings": {
                        "mode": args.mode,
                        "k": args.k,
                        "temperature": args.temperature,
                        "top_p": args.top_p,
                        "seed": args.seed,
                        "max_new_tokens": args.max_new_tokens,
                        "grading": args.grading,
                        "answer_format": args.answer_format,
                    },
                },
                indent=1,
            ),
        )
        print(md, flush=True)
        return 0
    finally:
        if engine is not None:
            engine.shutdown()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def benchmark_name_path(specs, name: str) -> str:
    for s in specs:
        n, p = benchmark_name(s)
        if n == name:
            return p
    return ""


if __name__ == "__main__":
    sys.exit(main())
