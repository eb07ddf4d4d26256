"""The two conversions as functions: what tools/convert_*.py and tools/evaluate.py call.

Each validates everything it can (config, layout, tensor names and shapes) before creating any output,
raising :class:`ModelConfigError` or :class:`CheckpointError` (both in :data:`CONVERSION_ERRORS`) with a
one-line reason, and publishes its output only when complete. On a machine without CUDA the caller applies
the CPU compatibility layer first (``megatron_corew/policy/cpu_compat.py``: ``cpu_compat.apply()``);
this package imports nothing from ``megatron_corew``.
"""

from __future__ import annotations

import os

from checkpoints_conversion.config import ModelConfigError, check_family, load_model_args
from checkpoints_conversion.hf_io import CheckpointError, write_hf_checkpoint
from checkpoints_conversion.megatron_layout import DTYPES, HF_CONFIG_SUBDIR, dtype_name
from checkpoints_conversion.megatron_read import (
    iter_hf_tensors,
    resolve_checkpoint_dir,
    stored_dtype,
    validate_megatron_checkpoint,
)
from checkpoints_conversion.megatron_write import prepare_hf_source, write_megatron_checkpoint

__all__ = ["CONVERSION_ERRORS", "CheckpointError", "ModelConfigError", "hf_to_megatron", "megatron_to_hf"]

CONVERSION_ERRORS = (ModelConfigError, CheckpointError)


def hf_to_megatron(
    hf_dir: str,
    save: str,
    tp: int = 1,
    pp: int = 1,
    dtype: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """HF safetensors at ``hf_dir`` -> torch_dist checkpoint at ``save``, checked for TP=``tp`` / PP=``pp``
    (which also set the vocab padding). ``dtype``: "auto" keeps the HF dtype. Returns the model-args record."""
    if os.path.exists(save) and not overwrite:
        raise CheckpointError(f"{save} already exists (pass --overwrite to replace it)")
    args, reader = prepare_hf_source(hf_dir, tp, pp)
    return write_megatron_checkpoint(
        save, args, reader, tp=tp, pp=pp, dtype=DTYPES.get(dtype), progress=progress, overwrite=overwrite
    )


def megatron_to_hf(
    load: str,
    hf_config_dir: str | None,
    save: str,
    dtype: str = "auto",
    max_shard_bytes: int = 10**9,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """torch_dist checkpoint (converted, an RL ``iter_*`` directory or an RL save directory) -> HF checkpoint at
    ``save``. Config and tokenizer files come from ``hf_config_dir`` (default: the checkpoint's ``hf_config/``);
    ``dtype``: "auto" keeps the stored dtype. Returns {checkpoint, architecture, num_layers, dtype}."""
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
    write_hf_checkpoint(
        save,
        iter_hf_tensors(ckpt, args, meta, dtype=out_dtype, progress=progress),
        config_dir=hf_config_dir,
        max_shard_bytes=max_shard_bytes,
        config_overrides=overrides,
    )
    return {
        "checkpoint": ckpt,
        "architecture": args.architecture,
        "num_layers": args.num_layers,
        "dtype": dtype_name(out_dtype),
    }
