"""The torch_dist checkpoint of a model, as the converters write and read it.

It is the checkpoint ``GPTModel.sharded_state_dict()`` describes: global tensors under megatron's
dist-checkpoint keys, decoder layers stacked on a leading axis (``decoder.layers.self_attention.linear_qkv.weight``
has shape ``[num_layers, 3-way fused rows, hidden]``), the vocabulary padded, plus one ``_extra_state``
object per linear module and layer. Such a checkpoint is independent of the tensor/pipeline layout that
loads it (the padded vocab rows are loaded with megatron's ``allow_shape_mismatch``), so
``dist_checkpointing.load`` into a model at any TP/PP reads it. Beside the tensors it holds
``model_args.json`` (the architecture it implies) and ``hf_config/`` (config and tokenizer files).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch

from checkpoints_conversion.families import (
    EMBEDDING_KEY,
    EXTRA_STATE_MODULES,
    FINAL_NORM_KEY,
    LAYER_KEY_PREFIX,
    OUTPUT_KEY,
    ParamSpec,
    get_family,
    megatron_layer_shape,
)

MODEL_ARGS_FILE = "model_args.json"
HF_CONFIG_SUBDIR = "hf_config"
FORMAT_NAME = "megatron_corew.hf_conversion"
# the embedding / output layer are written in row blocks of at most this many bytes, so neither
# direction ever holds two full copies of a 150k-row vocabulary matrix
VOCAB_BLOCK_BYTES = 64 * 1024**2

warnings.filterwarnings("ignore", message=".*torch.distributed is disabled, unavailable or uninitialized.*")
warnings.filterwarnings("ignore", message=".*`load_state_dict` is deprecated.*")

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass
class Entry:
    """One global tensor of the Megatron checkpoint."""

    key: str
    kind: str
    shape: tuple  # global shape (stacked layers first for layer params)
    spec: ParamSpec | None = None  # layer parameter, or None for embedding / norm / output
    hf: tuple = ()  # HF names of a non-layer entry


def checkpoint_entries(args, padded_vocab: int) -> list[Entry]:
    """Every tensor of the Megatron checkpoint for this architecture, with its global shape."""
    family = get_family(args.model_type)
    h, n = args.hidden_size, args.num_layers
    out = [Entry(EMBEDDING_KEY, "vocab", (padded_vocab, h), hf=("model.embed_tokens.weight",))]
    for spec in family.layer_params():
        out.append(Entry(LAYER_KEY_PREFIX + spec.key, spec.kind, (n,) + megatron_layer_shape(spec, args), spec=spec))
    out.append(Entry(FINAL_NORM_KEY, "replicated", (h,), hf=("model.norm.weight",)))
    if not args.tie_word_embeddings:
        out.append(Entry(OUTPUT_KEY, "vocab", (padded_vocab, h), hf=("lm_head.weight",)))
    return out


def extra_state_keys(args) -> list[str]:
    """Unique keys of the per-layer ``_extra_state`` objects (``key/shard_{layer}_{num_layers}``)."""
    return [
        f"{LAYER_KEY_PREFIX}{m}._extra_state/shard_{i}_{args.num_layers}"
        for i in range(args.num_layers)
        for m in EXTRA_STATE_MODULES
    ]


def vocab_blocks(rows: int, row_bytes: int, block_bytes: int = VOCAB_BLOCK_BYTES) -> list[tuple[int, int]]:
    per = max(1, block_bytes // max(row_bytes, 1))
    return [(a, min(a + per, rows)) for a in range(0, rows, per)]


# the architecture fields a converted checkpoint records and the back conversion checks against the config
CHECKED_ARG_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_attention_heads",
    "num_query_groups",
    "head_dim",
    "ffn_hidden_size",
    "tie_word_embeddings",
    "qkv_bias",
    "qk_norm",
)


def model_args_record(args, tp: int, pp: int, dtype: torch.dtype) -> dict:
    rec = {"format": FORMAT_NAME, "version": 1}
    for f in CHECKED_ARG_FIELDS + (
        "architecture",
        "norm_eps",
        "rope_theta",
        "rope_type",
        "max_position_embeddings",
        "eos_token_id",
        "pad_token_id",
    ):
        rec[f] = getattr(args, f)
    rec.update(
        padded_vocab_size=args.padded_vocab_size(tp),
        target_tensor_parallel_size=tp,
        target_pipeline_parallel_size=pp,
        dtype=dtype_name(dtype),
        source=os.path.abspath(args.model_dir),
    )
    return rec
