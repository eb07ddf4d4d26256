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
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?I?B?)\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500MB, 2GB)")
    unit = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9, "T": 1e12, "TB": 1e12,
            "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}.get(m.group(2))
    if unit is None:
        raise argparse.ArgumentTypeError(f"unknown unit in {text!r}")
    return int(float(m.group(1)) * unit)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--load", required=True, help="Megatron checkpoint directory")
    p.add_argument("--hf-config-dir", default=None,
                   help="HF directory with config.json and tokenizer files (default: LOAD/hf_config)")
    p.add_argument("--save", required=True, help="output HF model directory")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="dtype of the written weights (auto: as stored in the checkpoint)")
    p.add_argument("--max-shard-size", type=parse_size, default="1GB",
                   help="largest safetensors shard (also the bound on buffered output)")
    p.add_argument("--overwrite", action="store_true", help="replace --save if it exists")
    p.add_argument("--no-progress-bar", action="store_true")
    return p


def convert(load: str, hf_config_dir: str | None, save: str, dtype: str = "auto", max_shard_bytes: int = 10**9,
            overwrite: bool = False, progress: bool = True) -> dict:
    """Validate, then write. Raises ModelConfigError / CheckpointError before creating any output."""
    from checkpoints_conversion.hf_io import CheckpointError, write_hf_checkpoint
    from checkpoints_conversion.megatron_io import (DTYPES, HF_CONFIG_SUBDIR, check_family, dtype_name,
                                                    iter_hf_tensors, resolve_checkpoint_dir, stored_dtype,
                                                    validate_megatron_checkpoint)
    from megatron_corew.policy.model_builder import load_model_args

    if os.path.exists(save) and not overwrite:
        raise CheckpointError(f"{save} already exists (pass --overwrite to replace it)")
    ckpt = resolve_checkpoint_dir(load)
    if hf_config_dir is None:
        hf_config_dir = os.path.join(ckpt, HF_CONFIG_SUBDIR)
        if not os.path.isfile(os.path.join(hf_config_dir, "config.json")):
            raise CheckpointError(f"{load} has no {HF_CONFIG_SUBDIR}/config.json: pass --hf-config-dir")
    args = load_model_args(hf_config_dir)
    check_family(args)
    meta = validate_megatron_checkpoint(ckpt, args)
    out_dtype = DTYPES.get(dtype) or stored_dtype(meta)
    overrides = {}
    cfg_dtype = getattr(args.hf_config, "dtype", None) or getattr(args.hf_config, "torch_dtype", None)
    if cfg_dtype is not None and str(cfg_dtype).replace("torch.", "") != dtype_name(out_dtype):
        overrides["dtype"] = dtype_name(out_dtype)
    write_hf_checkpoint(save, iter_hf_tensors(ckpt, args, meta, dtype=out_dtype, progress=progress),
                        config_dir=hf_config_dir, max_shard_bytes=max_shard_bytes, config_overrides=overrides)
    return {"checkpoint": ckpt, "architecture": args.architecture, "num_layers": args.num_layers,
            "dtype": dtype_name(out_dtype)}


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    from checkpoints_conversion.hf_io import CheckpointError
    from megatron_corew.policy.model_builder import ModelConfigError

    t0 = time.perf_counter()
    try:
        info = convert(a.load, a.hf_config_dir, a.save, a.dtype, a.max_shard_size, a.overwrite,
                       not a.no_progress_bar)
    except (ModelConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    print(f"wrote {a.save}: {info['architecture']} {info['num_layers']} layers, {info['dtype']}, from "
          f"{info['checkpoint']} in {time.perf_counter() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
