"""Periodic HF exports of the policy during training (``--save-hf-interval``).

:func:`save_hf_checkpoint` is collective: every rank calls it. The TP shards are gathered and the
pipeline stages send their layers to global rank 0 (``weights.export_hf_weights``), which streams
them into sharded safetensors in a temp directory renamed into place when complete
(``checkpoints_conversion.hf_io.write_hf_checkpoint``), next to the config, generation config and
tokenizer files of the HF model the run started from. The result loads with
``AutoModelForCausalLM.from_pretrained`` (and serves with SGLang) as it is.
"""

from __future__ import annotations

import os
import shutil

import torch
import torch.distributed as dist

from checkpoints_conversion.atomic import clean_stale_temps_in, publish_link
from checkpoints_conversion.hf_io import write_hf_checkpoint
from megatron_corew.policy import parallel
from megatron_corew.policy.weights import export_hf_weights
from megatron_corew.utils import faults


def hf_export_dir(out_dir: str, step: int) -> str:
    return os.path.join(out_dir, f"step_{step:07d}")


def save_hf_checkpoint(
    trainer_model,
    model_args,
    out_dir: str,
    step: int,
    *,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = 10**9,
    keep_last: int | None = None,
) -> str:
    """Write the policy as an HF checkpoint to ``out_dir/step_{step:07d}`` and point the symlink
    ``out_dir/latest`` at it (``from_pretrained(out_dir/latest)`` loads it); returns that path (on every rank).

    ``dtype``: dtype of the written weights (default: the parameters' dtype, fp32 for fp32 training;
    pass the HF config's dtype, e.g. torch.bfloat16, for a checkpoint of the original size).
    ``keep_last``: delete older ``step_*`` exports beyond this many."""
    target = hf_export_dir(out_dir, step)
    tensors = export_hf_weights(trainer_model, model_args, dtype)
    if parallel.is_rank0():
        written = dtype or next(p for p in _unwrap(trainer_model).parameters()).dtype
        declared = getattr(model_args.hf_config, "dtype", None) or getattr(model_args.hf_config, "torch_dtype", None)
        name = str(written).replace("torch.", "")
        overrides = {"dtype": name} if declared is not None and str(declared).replace("torch.", "") != name else None
        write_hf_checkpoint(
            target,
            _kill_midway(tensors, step),
            config_dir=model_args.model_dir,
            max_shard_bytes=max_shard_bytes,
            config_overrides=overrides,
        )
        publish_link(out_dir, os.path.basename(target))
        if keep_last:
            for old in sorted(d for d in os.listdir(out_dir) if d.startswith("step_"))[:-keep_last]:
                shutil.rmtree(os.path.join(out_dir, old), ignore_errors=True)
        clean_stale_temps_in(out_dir)
    else:
        for _ in tensors:  # collectives: every rank walks the export
            pass
    if dist.is_initialized():
        dist.barrier()
    return target


def exported(out_dir: str, step: int) -> bool:
    """Whether the export of ``step`` is complete (a killed export leaves only a hidden temp directory)."""
    return os.path.isfile(os.path.join(hf_export_dir(out_dir, step), "model.safetensors.index.json"))


def _kill_midway(tensors, step: int):
    """``COREW_FAULT=during_hf_export:STEP``: SIGKILL after the first tensor is written into the temp directory."""
    for i, item in enumerate(tensors):
        if i == 1:
            faults.maybe_kill("during_hf_export", step)
        yield item


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model
