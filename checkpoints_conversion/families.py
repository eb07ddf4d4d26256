"""What the three dense families share, and the registry of per-family differences.

Every supported model is the same decoder (RMSNorm, GQA attention with RoPE, SwiGLU MLP); a family
module (``qwen2``, ``qwen3``, ``llama``) only declares the per-layer parameters it adds and the config
checks specific to it. One :class:`ParamSpec` ties together the names a parameter has in the three
places we meet it:

- ``hf``: the HF tensor names (``model.layers.{i}.`` + suffix), several when Megatron fuses them;
- ``key``: the Megatron *dist-checkpoint* key (``decoder.layers.`` + key, layers stacked on axis 0);
  these are the keys ``GPTModel.sharded_state_dict()`` uses for both the local and the TE spec;
- ``kind``: how the fused tensor is laid out and split over TP (see :mod:`checkpoints_conversion.mapping`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class ParamSpec:
    key: str
    kind: str
    hf: tuple[str, ...]


# The decoder layer every family has.
DENSE_LAYER_PARAMS = (
    ParamSpec("self_attention.linear_qkv.layer_norm_weight", "replicated", ("input_layernorm.weight",)),
    ParamSpec(
        "self_attention.linear_qkv.weight",
        "qkv",
        ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    ),
    ParamSpec("self_attention.linear_proj.weight", "row", ("self_attn.o_proj.weight",)),
    ParamSpec("mlp.linear_fc1.layer_norm_weight", "replicated", ("post_attention_layernorm.weight",)),
    ParamSpec("mlp.linear_fc1.weight", "gate_up", ("mlp.gate_proj.weight", "mlp.up_proj.weight")),
    ParamSpec("mlp.linear_fc2.weight", "row", ("mlp.down_proj.weight",)),
)
# Megatron linear modules that carry an ``_extra_state`` object in the dist checkpoint (None for the
# local spec; Transformer Engine keeps its FP8 metadata there).
EXTRA_STATE_MODULES = ("self_attention.linear_proj", "self_attention.linear_qkv", "mlp.linear_fc1", "mlp.linear_fc2")

EMBEDDING_KEY = "embedding.word_embeddings.weight"
OUTPUT_KEY = "output_layer.weight"
FINAL_NORM_KEY = "decoder.final_layernorm.weight"
LAYER_KEY_PREFIX = "decoder.layers."


@dataclass(frozen=True)
class Family:
    model_type: str
    architecture: str
    rotary_embedding: str  # transformers' rotary class (module path), whose inverse frequencies the model uses
    extra_layer_params: tuple[ParamSpec, ...] = ()
    # extra config checks: fn(ModelArgs) -> list of problems (empty when fine)
    config_checks: tuple[Callable, ...] = field(default_factory=tuple)

    def layer_params(self) -> tuple[ParamSpec, ...]:
        return DENSE_LAYER_PARAMS + self.extra_layer_params

    def check(self, args) -> list[str]:
        problems = []
        for fn in self.config_checks:
            problems.extend(fn(args))
        return problems


_FAMILY_MODULES = {"qwen2": "qwen2", "qwen3": "qwen3", "llama": "llama"}
SUPPORTED_MODEL_TYPES = tuple(sorted(_FAMILY_MODULES))


def get_family(model_type: str) -> Family:
    if model_type not in _FAMILY_MODULES:
        raise KeyError(f"unsupported model_type {model_type!r}; supported: {sorted(_FAMILY_MODULES)}")
    return importlib.import_module(f"checkpoints_conversion.{_FAMILY_MODULES[model_type]}").FAMILY


def hf_layer_shapes(args) -> dict[str, tuple]:
    """HF per-layer suffix -> tensor shape implied by the config (for every family's parameters)."""
    h, d = args.hidden_size, args.head_dim
    q, kv, ffn = args.num_attention_heads * d, args.num_query_groups * d, args.ffn_hidden_size
    return {
        "input_layernorm.weight": (h,),
        "post_attention_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (q, h),
        "self_attn.k_proj.weight": (kv, h),
        "self_attn.v_proj.weight": (kv, h),
        "self_attn.q_proj.bias": (q,),
        "self_attn.k_proj.bias": (kv,),
        "self_attn.v_proj.bias": (kv,),
        "self_attn.o_proj.weight": (h, q),
        "self_attn.q_norm.weight": (d,),
        "self_attn.k_norm.weight": (d,),
        "mlp.gate_proj.weight": (ffn, h),
        "mlp.up_proj.weight": (ffn, h),
        "mlp.down_proj.weight": (h, ffn),
    }


def expected_hf_shapes(args) -> dict[str, tuple]:
    """Every HF tensor this architecture must have, with the shape its config implies."""
    family = get_family(args.model_type)
    layer = hf_layer_shapes(args)
    out = {"model.embed_tokens.weight": (args.vocab_size, args.hidden_size)}
    for i in range(args.num_layers):
        for spec in family.layer_params():
            for s in spec.hf:
                out[f"model.layers.{i}.{s}"] = layer[s]
    out["model.norm.weight"] = (args.hidden_size,)
    if not args.tie_word_embeddings:
        out["lm_head.weight"] = (args.vocab_size, args.hidden_size)
    return out


def megatron_layer_shape(spec: ParamSpec, args) -> tuple:
    """Global (all TP ranks) shape of one layer's slice of a stacked Megatron parameter."""
    layer = hf_layer_shapes(args)
    shapes = [layer[s] for s in spec.hf]
    if spec.kind in ("replicated", "row"):
        return shapes[0]
    # qkv and gate_up concatenate their parts along dim 0
    return (sum(s[0] for s in shapes),) + tuple(shapes[0][1:])
