"""``ModelArgs`` -> megatron-core ``TransformerConfig`` + layer spec + ``GPTModel``: the Megatron side of a model.

What the HF checkpoint says (and whether it can be represented exactly) is read and checked by
:mod:`checkpoints_conversion.config`; this module only turns those facts into megatron objects.
"""

from __future__ import annotations

import torch

from checkpoints_conversion.config import ModelArgs, hf_inv_freq, validate_layout


def transformer_engine_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import transformer_engine  # noqa: F401
        import transformer_engine.pytorch  # noqa: F401
    except Exception:
        return False
    return True


def build_transformer_config(
    args: ModelArgs,
    tp: int = 1,
    pp: int = 1,
    *,
    bf16: bool = False,
    recompute: str | None = None,
    sequence_parallel: bool = False,
    fp8: str | None = None,
    fp8_recipe: str | None = None,
    **extra,
):
    """The megatron TransformerConfig matching the HF architecture exactly (fp32 by default)."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    validate_layout(args, tp, pp)
    on_gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if bf16 else torch.float32
    kw = dict(
        num_layers=args.num_layers,
        hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads,
        num_query_groups=args.num_query_groups,
        kv_channels=args.head_dim,
        ffn_hidden_size=args.ffn_hidden_size,
        normalization="RMSNorm",
        layernorm_epsilon=args.norm_eps,
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        add_qkv_bias=args.qkv_bias,
        qk_layernorm=args.qk_norm,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        sequence_parallel=sequence_parallel,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=bf16,
        # perform_initialization must stay on: megatron tags TP-sharded weights (tensor_model_parallel)
        # only inside its init functions, and the grad norm silently drops shards without the tag.
        use_cpu_initialization=not on_gpu,
        perform_initialization=True,
        gradient_accumulation_fusion=False,
        bias_dropout_fusion=on_gpu,
        masked_softmax_fusion=False,
        bias_activation_fusion=on_gpu,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        calculate_per_token_loss=True,
    )
    if recompute:
        kw.update(recompute_granularity=recompute)
        if recompute == "full":
            kw.update(recompute_method="uniform", recompute_num_layers=1)
    if fp8:
        kw.update(fp8=fp8, fp8_recipe=fp8_recipe or "delayed")
    kw.setdefault("cuda_graph_scope", [])  # megatron's default "full" is deprecated (and warns) in favour of []
    kw.update(extra)
    return TransformerConfig(**kw)


def build_layer_spec(args: ModelArgs, use_te: bool | None = None):
    """Transformer Engine spec where TE and CUDA are present, megatron's local spec otherwise."""
    from megatron.core.models.gpt import gpt_layer_specs

    if use_te is None:
        use_te = transformer_engine_available()
    if use_te:
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec(qk_layernorm=args.qk_norm)
    spec = gpt_layer_specs.get_gpt_layer_local_spec(qk_layernorm=args.qk_norm, normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = _packed_local_attention()
    return spec


def _packed_local_attention():
    """megatron's local ``DotProductAttention`` that also takes THD ``PackedSeqParams``: each sequence of the
    packed row attends causally within its own ``cu_seqlens`` segment (the semantics of TE's THD attention;
    rotary positions restart per sequence in megatron's own THD rope path), sequences of similar length batched
    (:mod:`megatron_corew.policy.packed_attention`)."""
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    from megatron_corew.policy.packed_attention import packed_attention

    class PackedDotProductAttention(DotProductAttention):
        def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None, **kw):
            packed = kw.pop("packed_seq_params", None)
            if packed is None:
                return super().forward(query, key, value, attention_mask, attn_mask_type, attention_bias, **kw)
            parent = super(PackedDotProductAttention, self).forward

            def attend(q, k, v):
                return parent(q, k, v, None, attn_mask_type)

            return packed_attention(attend, query, key, value, packed.cu_seqlens_q.tolist())

    return PackedDotProductAttention


def packed_seq_params(cu_seqlens: list[int], device=None):
    """megatron's THD ``PackedSeqParams`` for one packed row (TE attention reads them on GPU; the local spec's
    attention above reads the same boundaries)."""
    from megatron.core import parallel_state as ps
    from megatron.core.packed_seq_params import PackedSeqParams

    cu = torch.tensor(cu_seqlens, dtype=torch.int32, device=device)
    longest = max(b - a for a, b in zip(cu_seqlens[:-1], cu_seqlens[1:]))
    return PackedSeqParams(
        qkv_format="thd",
        cu_seqlens_q=cu,
        cu_seqlens_kv=cu,
        max_seqlen_q=longest,
        max_seqlen_kv=longest,
        cp_group=ps.get_context_parallel_group() if ps.model_parallel_is_initialized() else None,
    )


def defer_output_layer(model) -> None:
    """Make ``model`` (a post-process ``GPTModel``) return the output layer's *input* [b, s, hidden] instead of
    the logits, and keep the weight the layer would use in ``model.output_layer.deferred_weight``: the loss then
    computes logits a chunk of tokens at a time (:func:`megatron_corew.policy.vocab_parallel.chunked_stats`).
    The input goes through the same TP mappings as megatron's ``ColumnParallelLinear`` (copy, or the sequence-
    parallel all-gather), so gradients reach the hidden states and the weight as they would through the layer.
    The state dict is unchanged (the forward is overridden on the instance only)."""
    from megatron.core.tensor_parallel.mappings import (
        copy_to_tensor_model_parallel_region,
        gather_from_sequence_parallel_region,
    )

    layer = model.output_layer

    def forward(input_, weight=None, runtime_gather_output=None):
        layer.deferred_weight = layer.weight if weight is None else weight
        if layer.sequence_parallel:
            return gather_from_sequence_parallel_region(input_, True, group=layer.tp_group), None
        if layer.tp_group is not None and layer.tp_group.size() > 1:
            return copy_to_tensor_model_parallel_region(input_, group=layer.tp_group), None
        return input_, None

    layer.forward = forward


def build_gpt_model(
    args: ModelArgs,
    config,
    tp: int = 1,
    pre_process: bool = True,
    post_process: bool = True,
    use_te: bool | None = None,
):
    """A megatron GPTModel for this architecture; weights are left for the loader to fill."""
    from megatron.core.models.gpt.gpt_model import GPTModel

    model = GPTModel(
        config=config,
        transformer_layer_spec=build_layer_spec(args, use_te),
        vocab_size=args.padded_vocab_size(tp),
        max_sequence_length=args.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        parallel_output=True,
        share_embeddings_and_output_weights=args.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=int(args.rope_theta),
    )
    # Megatron knows Llama-3 scaling with fixed constants only; take transformers' frequencies so
    # every supported rope type matches the HF model bit for bit.
    model.rotary_pos_emb.inv_freq = hf_inv_freq(args).to(model.rotary_pos_emb.inv_freq.device)
    if torch.cuda.is_available():
        model = model.cuda()
    return model
