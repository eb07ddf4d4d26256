"""Qwen3 (dense): the dense decoder plus per-head RMSNorm on queries and keys (qk-norm), no QKV bias."""

from checkpoints_conversion.families import Family, ParamSpec


def _rope_checks(args) -> list[str]:
    if args.rope_type not in ("default", "linear"):
        return [f"Qwen3 with rope type {args.rope_type!r} is not supported (default or linear only)"]
    return []


FAMILY = Family(
    model_type="qwen3",
    architecture="Qwen3ForCausalLM",
    rotary_embedding="transformers.models.qwen3.modeling_qwen3.Qwen3RotaryEmbedding",
    extra_layer_params=(
        ParamSpec("self_attention.q_layernorm.weight", "replicated", ("self_attn.q_norm.weight",)),
        ParamSpec("self_attention.k_layernorm.weight", "replicated", ("self_attn.k_norm.weight",)),
    ),
    config_checks=(_rope_checks,),
)
