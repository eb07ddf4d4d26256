"""Moving weights in and out of a (TP/PP-sharded) megatron GPTModel by HF parameter name.

The same export feeds the embedded engine, the SGLang weight sync and the HF checkpoint writer.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from checkpoints_conversion.hf_io import CheckpointError, HFCheckpointReader
from checkpoints_conversion.mapping import hf_from_shards, hf_names, layer_offset, shard_from_hf
from megatron_corew.policy import parallel


def _parallel():
    from megatron.core import parallel_state as ps

    return ps


def unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


@torch.no_grad()
def load_hf_weights(model, args, source) -> None:
    """Fill this rank's shard of ``model`` from an HF checkpoint (directory, reader or state dict)."""
    ps = _parallel()
    model = unwrap(model)
    if isinstance(source, str):
        source = HFCheckpointReader(source)
    get = source.get if hasattr(source, "get") and not isinstance(source, dict) else source.__getitem__
    tp, tp_rank = ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank()
    offset = layer_offset(model)
    padded_vocab = args.padded_vocab_size(tp)
    for name, param in model.named_parameters():
        kind, names = hf_names(name, args, offset)
        try:
            tensors = [get(n) for n in names]
        except KeyError as e:
            raise CheckpointError(f"{args.model_dir}: missing tensor {e}") from None
        shard = shard_from_hf(kind, tensors, args, tp_rank, tp, padded_vocab)
        if tuple(shard.shape) != tuple(param.shape):
            raise CheckpointError(
                f"{args.model_dir}: {names[0]} gives shape {tuple(shard.shape)} for megatron "
                f"{name} {tuple(param.shape)}: config and checkpoint disagree"
            )
        param.copy_(shard.to(param.dtype))


@torch.no_grad()
def copy_weights(src, dst) -> None:
    """Copy parameters between two identically sharded models (policy <-> reference/teacher)."""
    src_params = dict(unwrap(src).named_parameters())
    for name, p in unwrap(dst).named_parameters():
        p.copy_(src_params[name])


def _tp_gather(t: torch.Tensor) -> list[torch.Tensor]:
    ps = _parallel()
    tp = ps.get_tensor_model_parallel_world_size()
    if tp == 1:
        return [t]
    out = [torch.empty_like(t) for _ in range(tp)]
    dist.all_gather(out, t.contiguous(), group=ps.get_tensor_model_parallel_group())
    return out


def is_stage_sender() -> bool:
    """The rank that pushes its pipeline stage's tensors: data-parallel rank 0, tensor-parallel rank 0."""
    ps = _parallel()
    return ps.get_data_parallel_rank() == 0 and ps.get_tensor_model_parallel_rank() == 0


@torch.no_grad()
def stage_tensors(model, args, dtype: torch.dtype | None = None):
    """Yield (hf_name, full tensor) of this rank's pipeline stage: TP shards are all-gathered within the stage, so
    every TP rank of the stage must walk it (data-parallel rank 0 only: the other replicas hold the same)."""
    model = unwrap(model)
    offset = layer_offset(model)
    for name, param in model.named_parameters():
        if name == "output_layer.weight" and args.tie_word_embeddings:
            continue  # the tied copy on the last stage: exported once, from the embedding
        kind, names = hf_names(name, args, offset)
        for hf_name, t in hf_from_shards(kind, names, _tp_gather(param.data), args):
            yield hf_name, (t.to(dtype) if dtype is not None else t)


@torch.no_grad()
def export_hf_weights(model, args, dtype: torch.dtype | None = None, sent: dict | None = None):
    """Yield (hf_name, full tensor) on global rank 0; other ranks must also exhaust the generator.

    Pipeline stages take turns: within a stage the TP shards are all-gathered, and the stage's
    (data-parallel 0, TP 0) rank sends the merged tensors to rank 0 point to point (``sent["bytes"]`` counts
    what this rank sent there)."""
    ps = _parallel()
    model = unwrap(model)
    pp = ps.get_pipeline_model_parallel_world_size()
    stage = ps.get_pipeline_model_parallel_rank()
    is_sender = is_stage_sender()
    pp_ranks = dist.get_process_group_ranks(ps.get_pipeline_model_parallel_group()) if pp > 1 else None
    me = parallel.rank()

    for s in range(pp):
        if ps.get_data_parallel_rank() == 0 and stage == s:
            for hf_name, t in stage_tensors(model, args, dtype):
                if me == 0:
                    yield hf_name, t
                elif is_sender:
                    dist.send_object_list([(hf_name, tuple(t.shape), t.dtype)], dst=pp_ranks[0])
                    dist.send(t.contiguous(), dst=pp_ranks[0])
                    if sent is not None:
                        sent["bytes"] = sent.get("bytes", 0) + t.numel() * t.element_size()
            if is_sender and me != 0:
                dist.send_object_list([None], dst=pp_ranks[0])
        elif me == 0 and s != stage:
            while True:
                box = [None]
                dist.recv_object_list(box, src=pp_ranks[s])
                if box[0] is None:
                    break
                hf_name, shape, tdtype = box[0]
                t = torch.empty(shape, dtype=tdtype, device=param_device(model))
                dist.recv(t, src=pp_ranks[s])
                yield hf_name, t


def param_device(model) -> torch.device:
    return next(unwrap(model).parameters()).device


def hf_state_dict(model, args, dtype=None) -> dict | None:
    """The full HF state dict on global rank 0 (None elsewhere); fine for small models and tests."""
    out = {name: t.cpu() for name, t in export_hf_weights(model, args, dtype)}
    return out if (not dist.is_initialized() or dist.get_rank() == 0) else None
