"""HF ``config.json`` -> megatron-core ``TransformerConfig`` + layer spec + ``GPTModel``.

One reader for the three dense families we support (Qwen2/2.5, Qwen3, Llama-3.x). Everything the
Megatron model needs is read from the HF config here, checked against the requested parallel
layout, and rejected with a one-line reason when we cannot represent it exactly: a silent
config mismatch is the most common source of "the converted model is subtly wrong".
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

SUPPORTED_FAMILIES = {
    # model_type: (HF architecture, rotary embedding class path)
    "qwen2": ("Qwen2ForCausalLM", "transformers.models.qwen2.modeling_qwen2.Qwen2RotaryEmbedding"),
    "qwen3": ("Qwen3ForCausalLM", "transformers.models.qwen3.modeling_qwen3.Qwen3RotaryEmbedding"),
    "llama": ("LlamaForCausalLM", "transformers.models.llama.modeling_llama.LlamaRotaryEmbedding"),
}
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
    with open(cfg_path) as f:
        raw = json.load(f)
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_FAMILIES:
        raise ModelConfigError(
            f"{cfg_path}: unsupported architecture model_type={model_type!r} "
            f"(architectures={raw.get('architectures')}); supported: {sorted(SUPPORTED_FAMILIES)}")
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(model_dir)
    architecture = SUPPORTED_FAMILIES[model_type][0]
    archs = raw.get("architectures") or [architecture]
    if archs[0] != architecture:
        raise ModelConfigError(f"{cfg_path}: architecture {archs[0]} is not supported for model_type "
                               f"{model_type} (expected {architecture})")
    rope = dict(getattr(hf, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ModelConfigError(f"{cfg_path}: rope type {rope_type!r} is not supported "
                               f"(supported: {', '.join(SUPPORTED_ROPE_TYPES)})")
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
        model_dir=model_dir, model_type=model_type, architecture=architecture,
        vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, num_layers=hf.num_hidden_layers,
        num_attention_heads=heads, num_query_groups=groups, head_dim=head_dim,
        ffn_hidden_size=hf.intermediate_size, norm_eps=hf.rms_norm_eps,
        rope_theta=float(rope.get("rope_theta", getattr(hf, "rope_theta", 10000.0))), rope_type=rope_type,
        max_position_embeddings=hf.max_position_embeddings,
        tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
        qkv_bias=(model_type == "qwen2"), qk_norm=(model_type == "qwen3"),
        eos_token_id=eos, pad_token_id=getattr(hf, "pad_token_id", None), hf_config=hf)


def validate_layout(args: ModelArgs, tp: int, pp: int) -> None:
    """Reject TP/PP sizes that do not divide the model (flag names as the user typed them)."""
    if args.num_attention_heads % tp:
        raise ModelConfigError(f"--tensor-model-parallel-size {tp} does not divide num_attention_heads "
                               f"{args.num_attention_heads} of {args.model_dir}")
    if args.num_query_groups % tp:
        raise ModelConfigError(f"--tensor-model-parallel-size {tp} does not divide num_key_value_heads "
                               f"{args.num_query_groups} of {args.model_dir}")
    if args.ffn_hidden_size % tp:
        raise ModelConfigError(f"--tensor-model-parallel-size {tp} does not divide intermediate_size "
                               f"{args.ffn_hidden_size} of {args.model_dir}")
    if args.num_layers % pp:
        raise ModelConfigError(f"--pipeline-model-parallel-size {pp} does not divide num_hidden_layers "
                               f"{args.num_layers} of {args.model_dir}")


def transformer_engine_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import transformer_engine  # noqa: F401
        import transformer_engine.pytorch  # noqa: F401
    except Exception:
        return False
    return True


def build_transformer_config(args: ModelArgs, tp: int = 1, pp: int = 1, *, bf16: bool = False,
                             recompute: str | None = None, sequence_parallel: bool = False,
                             fp8: str | None = None, fp8_recipe: str | None = None, **extra):
    """The megatron TransformerConfig matching the HF architecture exactly (fp32 by default)."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    validate_layout(args, tp, pp)
    on_gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if bf16 else torch.float32
    kw = dict(
        num_layers=args.num_layers, hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads, num_query_groups=args.num_query_groups,
        kv_channels=args.head_dim, ffn_hidden_size=args.ffn_hidden_size,
        normalization="RMSNorm", layernorm_epsilon=args.norm_eps,
        gated_linear_unit=True, activation_func=torch.nn.functional.silu,
        add_bias_linear=False, add_qkv_bias=args.qkv_bias, qk_layernorm=args.qk_norm,
        hidden_dropout=0.0, attention_dropout=0.0,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
        sequence_parallel=sequence_parallel,
        params_dtype=dtype, pipeline_dtype=dtype, bf16=bf16,
        # perform_initialization must stay on: megatron tags TP-sharded weights (tensor_model_parallel)
        # only inside its init functions, and the grad norm silently drops shards without the tag.
        use_cpu_initialization=not on_gpu, perform_initialization=True,
        gradient_accumulation_fusion=False, bias_dropout_fusion=on_gpu, masked_softmax_fusion=False,
        bias_activation_fusion=on_gpu, apply_rope_fusion=False, persist_layer_norm=False,
        calculate_per_token_loss=True,
    )
    if recompute:
        kw.update(recompute_granularity=recompute)
        if recompute == "full":
            kw.update(recompute_method="uniform", recompute_num_layers=1)
    if fp8:
        kw.update(fp8=fp8, fp8_recipe=fp8_recipe or "delayed")
    kw.update(extra)
    return TransformerConfig(**kw)


def build_layer_spec(args: ModelArgs, use_te: bool | None = None):
    """Transformer Engine spec where TE and CUDA are present, megatron's local spec otherwise."""
    from megatron.core.models.gpt import gpt_layer_specs

    if use_te is None:
        use_te = transformer_engine_available()
    if use_te:
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec(qk_layernorm=args.qk_norm)
    return gpt_layer_specs.get_gpt_layer_local_spec(qk_layernorm=args.qk_norm, normalization="RMSNorm")


def hf_inv_freq(args: ModelArgs) -> torch.Tensor:
    """Rotary inverse frequencies exactly as transformers computes them (incl. Llama-3 scaling)."""
    import importlib

    module_name, cls_name = SUPPORTED_FAMILIES[args.model_type][1].rsplit(".", 1)
    rotary_cls = getattr(importlib.import_module(module_name), cls_name)
    rotary = rotary_cls(args.hf_config)
    if float(getattr(rotary, "attention_scaling", 1.0)) != 1.0:
        raise ModelConfigError(f"{args.model_dir}: rope attention scaling != 1 is not supported")
    return rotary.inv_freq.detach().float().clone()


def build_gpt_model(args: ModelArgs, config, tp: int = 1, pre_process: bool = True,
                    post_process: bool = True, use_te: bool | None = None):
    """A megatron GPTModel for this architecture; weights are left for the loader to fill."""
    from megatron.core.models.gpt.gpt_model import GPTModel

    model = GPTModel(
        config=config, transformer_layer_spec=build_layer_spec(args, use_te),
        vocab_size=args.padded_vocab_size(tp), max_sequence_length=args.max_position_embeddings,
        pre_process=pre_process, post_process=post_process, parallel_output=True,
        share_embeddings_and_output_weights=args.tie_word_embeddings,
        position_embedding_type="rope", rotary_base=int(args.rope_theta))
    # Megatron knows Llama-3 scaling with fixed constants only; take transformers' frequencies so
    # every supported rope type matches the HF model bit for bit.
    model.rotary_pos_emb.inv_freq = hf_inv_freq(args).to(model.rotary_pos_emb.inv_freq.device)
    if torch.cuda.is_available():
        model = model.cuda()
    return model
