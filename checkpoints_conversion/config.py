"""HF ``config.json`` -> :class:`ModelArgs`: the architecture facts of one checkpoint, checked once.

One reader for the dense families of :mod:`checkpoints_conversion.families`. Everything the Megatron model
and the converters need is read from the HF config here, checked against the requested parallel layout,
and rejected with a one-line reason when it cannot be represented exactly: a silent config mismatch is the
most common source of "the converted model is subtly wrong".
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field

import torch

from checkpoints_conversion.families import SUPPORTED_MODEL_TYPES, get_family

SUPPORTED_ROPE_TYPES = ("default", "llama3", "linear")


class ModelConfigError(ValueError):
    """The HF config or the requested parallel layout cannot be built exactly."""


@dataclass
class ModelArgs:
    """The architecture facts of one HF checkpoint, in our own vocabulary."""

    model_dir: str
    model_type: str
    architecture: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_query_groups: int
    head_dim: int
    ffn_hidden_size: int
    norm_eps: float
    rope_theta: float
    rope_type: str
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    qk_norm: bool
    eos_token_id: list = field(default_factory=list)
    pad_token_id: int | None = None
    hf_config: object = None  # the transformers PretrainedConfig, for rotary and export

    def padded_vocab_size(self, tp: int, divisible_by: int = 128) -> int:
        """Megatron splits the vocabulary over TP ranks, so pad it to a multiple of
        divisible_by * tp (the padded rows are masked out of every softmax we compute)."""
        multiple = divisible_by * tp
        return ((self.vocab_size + multiple - 1) // multiple) * multiple


def load_model_args(model_dir: str) -> ModelArgs:
    """Read and validate ``model_dir/config.json``; raise ModelConfigError naming the problem."""
    cfg_path = os.path.join(model_dir, "config.json")
    if not os.path.isdir(model_dir):
        raise ModelConfigError(f"model directory not found: {model_dir}")
    if not os.path.isfile(cfg_path):
        raise ModelConfigError(f"{cfg_path} is missing: not an HF model directory")
    try:
        with open(cfg_path) as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ModelConfigError(f"{cfg_path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelConfigError(
            f"{cfg_path}: unsupported architecture model_type={model_type!r} "
            f"(architectures={raw.get('architectures')}); supported: {list(SUPPORTED_MODEL_TYPES)}"
        )
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(model_dir)
    architecture = get_family(model_type).architecture
    archs = raw.get("architectures") or [architecture]
    if archs[0] != architecture:
        raise ModelConfigError(
            f"{cfg_path}: architecture {archs[0]} is not supported for model_type "
            f"{model_type} (expected {architecture})"
        )
    rope = dict(getattr(hf, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ModelConfigError(
            f"{cfg_path}: rope type {rope_type!r} is not supported (supported: {', '.join(SUPPORTED_ROPE_TYPES)})"
        )
    if model_type == "llama" and (getattr(hf, "attention_bias", False) or getattr(hf, "mlp_bias", False)):
        raise ModelConfigError(f"{cfg_path}: Llama with attention_bias/mlp_bias is not supported")
    if model_type == "qwen3" and getattr(hf, "attention_bias", False):
        raise ModelConfigError(f"{cfg_path}: Qwen3 with attention_bias=True is not supported")
    if getattr(hf, "use_sliding_window", False):
        raise ModelConfigError(f"{cfg_path}: sliding-window attention is not supported")
    if getattr(hf, "hidden_act", "silu") != "silu":
        raise ModelConfigError(f"{cfg_path}: hidden_act={hf.hidden_act!r}; only silu (SwiGLU) is supported")
    heads = hf.num_attention_heads
    groups = getattr(hf, "num_key_value_heads", None) or heads
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // heads
    eos = hf.eos_token_id
    eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    return ModelArgs(
        model_dir=model_dir,
        model_type=model_type,
        architecture=architecture,
        vocab_size=hf.vocab_size,
        hidden_size=hf.hidden_size,
        num_layers=hf.num_hidden_layers,
        num_attention_heads=heads,
        num_query_groups=groups,
        head_dim=head_dim,
        ffn_hidden_size=hf.intermediate_size,
        norm_eps=hf.rms_norm_eps,
        rope_theta=float(rope.get("rope_theta", getattr(hf, "rope_theta", 10000.0))),
        rope_type=rope_type,
        max_position_embeddings=hf.max_position_embeddings,
        tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
        qkv_bias=(model_type == "qwen2"),
        qk_norm=(model_type == "qwen3"),
        eos_token_id=eos,
        pad_token_id=getattr(hf, "pad_token_id", None),
        hf_config=hf,
    )


def validate_layout(args: ModelArgs, tp: int, pp: int) -> None:
    """Reject TP/PP sizes that do not divide the model (flag names as the user typed them)."""
    if args.num_attention_heads % tp:
        raise ModelConfigError(
            f"--tensor-model-parallel-size {tp} does not divide num_attention_heads "
            f"{args.num_attention_heads} of {args.model_dir}"
        )
    if args.num_query_groups % tp:
        raise ModelConfigError(
            f"--tensor-model-parallel-size {tp} does not divide num_key_value_heads "
            f"{args.num_query_groups} of {args.model_dir}"
        )
    if args.ffn_hidden_size % tp:
        raise ModelConfigError(
            f"--tensor-model-parallel-size {tp} does not divide intermediate_size "
            f"{args.ffn_hidden_size} of {args.model_dir}"
        )
    if args.num_layers % pp:
        raise ModelConfigError(
            f"--pipeline-model-parallel-size {pp} does not divide num_hidden_layers "
            f"{args.num_layers} of {args.model_dir}"
        )


def check_family(args: ModelArgs) -> None:
    """The family's own config checks (e.g. the rope parameters Llama-3 scaling needs)."""
    problems = get_family(args.model_type).check(args)
    if problems:
        raise ModelConfigError(f"{args.model_dir}: " + "; ".join(problems))


def hf_inv_freq(args: ModelArgs) -> torch.Tensor:
    """Rotary inverse frequencies exactly as transformers computes them (incl. Llama-3 scaling)."""
    module_name, cls_name = get_family(args.model_type).rotary_embedding.rsplit(".", 1)
    rotary_cls = getattr(importlib.import_module(module_name), cls_name)
    rotary = rotary_cls(args.hf_config)
    if float(getattr(rotary, "attention_scaling", 1.0)) != 1.0:
        raise ModelConfigError(f"{args.model_dir}: rope attention scaling != 1 is not supported")
    return rotary.inv_freq.detach().float().clone()
