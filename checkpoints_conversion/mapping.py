"""Parameter mapping between HF (Qwen2/2.5, Qwen3, Llama-3.x) and megatron-core GPTModel.

The three families share one layout; they differ only in which parameters exist (Qwen2 QKV bias,
Qwen3 q/k RMSNorm, tied embeddings), so one table of *kinds* covers them:

- ``replicated``: identical on every TP rank (norm weights).
- ``vocab``: split over TP along the vocabulary (dim 0), padded to the Megatron vocab size.
- ``row``: split along the input dim (dim 1): attention output and MLP down projection.
- ``qkv``: q, k, v fused per query group [q_g heads | k_g | v_g], query groups split over TP.
- ``gate_up``: [gate_shard; up_shard] per TP rank.

Both local-spec and Transformer-Engine-spec parameter names are understood. The per-family tables
(which parameters each family has, their dist-checkpoint keys) are in
:mod:`checkpoints_conversion.families` and the ``qwen2`` / ``qwen3`` / ``llama`` modules; the
streaming checkpoint converters are in :mod:`checkpoints_conversion.megatron_write` and
:mod:`checkpoints_conversion.megatron_read`.
"""

from __future__ import annotations

import re

import torch

# megatron layer-suffix -> (kind, HF layer-suffixes)
_LAYER_RULES = {
    "input_layernorm.weight": ("replicated", ["input_layernorm.weight"]),
    "self_attention.linear_qkv.layer_norm_weight": ("replicated", ["input_layernorm.weight"]),
    "self_attention.linear_qkv.weight": (
        "qkv",
        ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"],
    ),
    "self_attention.linear_qkv.bias": (
        "qkv",
        ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"],
    ),
    "self_attention.q_layernorm.weight": ("replicated", ["self_attn.q_norm.weight"]),
    "self_attention.k_layernorm.weight": ("replicated", ["self_attn.k_norm.weight"]),
    "self_attention.linear_proj.weight": ("row", ["self_attn.o_proj.weight"]),
    "pre_mlp_layernorm.weight": ("replicated", ["post_attention_layernorm.weight"]),
    "mlp.linear_fc1.layer_norm_weight": ("replicated", ["post_attention_layernorm.weight"]),
    "mlp.linear_fc1.weight": ("gate_up", ["mlp.gate_proj.weight", "mlp.up_proj.weight"]),
    "mlp.linear_fc2.weight": ("row", ["mlp.down_proj.weight"]),
}
_LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")


def hf_names(mcore_name: str, args, layer_offset: int = 0) -> tuple[str, list[str]]:
    """(kind, HF parameter names) for one megatron parameter name (local layer index + offset)."""
    if mcore_name == "embedding.word_embeddings.weight":
        return "vocab", ["model.embed_tokens.weight"]
    if mcore_name == "output_layer.weight":
        return "vocab", ["model.embed_tokens.weight" if args.tie_word_embeddings else "lm_head.weight"]
    if mcore_name == "decoder.final_layernorm.weight":
        return "replicated", ["model.norm.weight"]
    m = _LAYER_RE.match(mcore_name)
    if m and m.group(2) in _LAYER_RULES:
        kind, suffixes = _LAYER_RULES[m.group(2)]
        layer = int(m.group(1)) + layer_offset
        return kind, [f"model.layers.{layer}.{s}" for s in suffixes]
    raise KeyError(f"no HF mapping for megatron parameter {mcore_name}")


def _qkv_sizes(args):
    heads_per_group = args.num_attention_heads // args.num_query_groups
    return heads_per_group * args.head_dim, args.head_dim


def shard_from_hf(
    kind: str, tensors: list[torch.Tensor], args, tp_rank: int, tp: int, padded_vocab: int
) -> torch.Tensor:
    """The TP shard that rank ``tp_rank`` holds, built from the full HF tensors."""
    if kind == "replicated":
        return tensors[0]
    if kind == "vocab":
        full = tensors[0]
        if full.shape[0] != args.vocab_size:
            raise ValueError(f"vocab tensor has {full.shape[0]} rows, config vocab_size is {args.vocab_size}")
        padded = full.new_zeros((padded_vocab,) + tuple(full.shape[1:]))
        padded[: full.shape[0]] = full
        return padded.chunk(tp, dim=0)[tp_rank]
    if kind == "row":
        return tensors[0].chunk(tp, dim=1)[tp_rank]
    if kind == "gate_up":
        gate, up = (t.chunk(tp, dim=0)[tp_rank] for t in tensors)
        return torch.cat([gate, up], dim=0)
    if kind == "qkv":
        q, k, v = tensors
        q_rows, kv_rows = _qkv_sizes(args)
        g = args.num_query_groups
        tail = tuple(q.shape[1:])
        fused = torch.cat(
            [q.reshape((g, q_rows) + tail), k.reshape((g, kv_rows) + tail), v.reshape((g, kv_rows) + tail)], dim=1
        )
        return fused.chunk(tp, dim=0)[tp_rank].reshape((-1,) + tail)
    raise ValueError(kind)


def hf_from_shards(kind: str, names: list[str], shards: list[torch.Tensor], args) -> list[tuple[str, torch.Tensor]]:
    """Inverse of :func:`shard_from_hf`: full HF tensors from the TP shards of every rank."""
    if kind == "replicated":
        return [(names[0], shards[0])]
    if kind == "vocab":
        return [(names[0], torch.cat(shards, dim=0)[: args.vocab_size])]
    if kind == "row":
        return [(names[0], torch.cat(shards, dim=1))]
    if kind == "gate_up":
        halves = [s.chunk(2, dim=0) for s in shards]
        return [(names[0], torch.cat([h[0] for h in halves], 0)), (names[1], torch.cat([h[1] for h in halves], 0))]
    if kind == "qkv":
        q_rows, kv_rows = _qkv_sizes(args)
        full = torch.cat(shards, dim=0)
        tail = tuple(full.shape[1:])
        grouped = full.reshape((args.num_query_groups, q_rows + 2 * kv_rows) + tail)
        q, k, v = grouped.split([q_rows, kv_rows, kv_rows], dim=1)
        return [(n, t.reshape((-1,) + tail)) for n, t in zip(names, (q, k, v))]
    raise ValueError(kind)


def layer_offset(model) -> int:
    """Global index of this pipeline stage's first layer (megatron numbers layers from 1)."""
    layers = getattr(getattr(model, "decoder", None), "layers", None)
    if layers is None or len(layers) == 0:
        return 0
    return layers[0].layer_number - 1


def expected_hf_names(args) -> list[str]:
    """Every tensor name the HF checkpoint of this architecture must contain (the per-family
    parameter tables live in :mod:`checkpoints_conversion.families` and the family modules)."""
    from checkpoints_conversion.families import expected_hf_shapes

    return list(expected_hf_shapes(args))
