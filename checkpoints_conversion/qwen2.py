"""Qwen2 / Qwen2.5: the dense decoder plus a bias on the fused QKV projection (no other biases)."""

from checkpoints_conversion.families import Family, ParamSpec


def _rope_checks(args) -> list[str]:
    if args.rope_type not in ("default", "linear"):
        return [f"Qwen2 with rope type {args.rope_type!r} is not supported (default or linear only)"]
    return []


FAMILY = Family(
    model_type="qwen2",
    architecture="Qwen2ForCausalLM",
    rotary_embedding="transformers.models.qwen2.modeling_qwen2.Qwen2RotaryEmbedding",
    extra_layer_params=(
        ParamSpec(
            "self_attention.linear_qkv.bias",
            "qkv",
            ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
        ),
    ),
    config_checks=(_rope_checks,),
)
