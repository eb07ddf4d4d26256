"""Llama-3.x (and SmolLM2, which is a Llama): the plain dense decoder; Llama-3 rope scaling is taken
from transformers' own inverse frequencies, so only its parameters need to be present."""

from checkpoints_conversion.families import Family

_LLAMA3_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def _rope_checks(args) -> list[str]:
    rope = dict(getattr(args.hf_config, "rope_parameters", None) or {})
    if args.rope_type == "llama3":
        missing = [k for k in _LLAMA3_ROPE_KEYS if rope.get(k) is None]
        if missing:
            return [f"rope type 'llama3' needs {', '.join(missing)} in rope_scaling/rope_parameters"]
    if args.rope_type == "linear" and not rope.get("factor"):
        return ["rope type 'linear' needs a factor"]
    return []


FAMILY = Family(
    model_type="llama",
    architecture="LlamaForCausalLM",
    rotary_embedding="transformers.models.llama.modeling_llama.LlamaRotaryEmbedding",
    config_checks=(_rope_checks,),
)
