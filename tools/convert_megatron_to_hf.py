"""Convert a Megatron distributed checkpoint (torch_dist; from convert_hf_to_megatron.py or an RL
training save) back into an HF checkpoint loadable by ``AutoModelForCausalLM.from_pretrained``.

    python tools/convert_megatron_to_hf.py --load CKPT --hf-config-dir DIR --save OUT \\
        [--dtype bf16] [--max-shard-size 1GB]

CKPT may be a converted checkpoint, an RL ``iter_*`` directory or an RL save directory (its
``latest`` iteration). DIR provides config.json, generation config and tokenizer files (default:
CKPT/hf_config when present). The checkpoint's tensor shapes are checked against the config before
anything is written; OUT (sharded safetensors + index) appears only when complete. Memory stays at
one layer plus one output shard.
"""

from __future__ import annotations

import argparse
import re
import sys
import time


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?I?B?)\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500MB, 2GB)")
    unit = {
        "": 1,
        "B": 1,
        "K": 1e3,
        "KB": 1e3,
        "M": 1e6,
        "MB": 1e6,
        "G": 1e9,
        "GB": 1e9,
        "T": 1e12,
        "TB": 1e12,
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "TIB": 2**40,
    }.get(m.group(2))
    if unit is None:
        raise argparse.ArgumentTypeError(f"unknown unit in {text!r}")
    return int(float(m.group(1)) * unit)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--load", required=True, help="Megatron checkpoint directory")
    p.add_argument(
        "--hf-config-dir",
        default=None,
        help="HF directory with config.json and tokenizer files (default: LOAD/hf_config)",
    )
    p.add_argument("--save", required=True, help="output HF model directory")
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="dtype of the written weights (auto: as stored in the checkpoint)",
    )
    p.add_argument(
        "--max-shard-size",
        type=parse_size,
        default="1GB",
        help="largest safetensors shard (also the bound on buffered output)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --save if it exists")
    p.add_argument("--no-progress-bar", action="store_true")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    from megatron_corew.validation import FlagError, check_writable

    try:  # a file (or a path under one) is refused now, not after the conversion with a traceback
        check_writable("--save", a.save)
    except FlagError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    from megatron_corew.policy import cpu_compat

    cpu_compat.apply()  # before megatron's first import; a no-op where CUDA exists
    from checkpoints_conversion import api

    t0 = time.perf_counter()
    try:
        info = api.megatron_to_hf(
            a.load, a.hf_config_dir, a.save, a.dtype, a.max_shard_size, a.overwrite, not a.no_progress_bar
        )
    except api.CONVERSION_ERRORS as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    print(
        f"wrote {a.save}: {info['architecture']} {info['num_layers']} layers, {info['dtype']}, from "
        f"{info['checkpoint']} in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
