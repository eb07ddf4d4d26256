"""HF safetensors -> torch_dist checkpoint, streaming: the model is never built.

Every chunk of the checkpoint is a lazy object that reads its HF tensors when
torch.distributed.checkpoint's writer asks for it and is dropped once written (layers one at a time,
the embedding in row blocks), so memory stays at a few tensors. Config, layout and every tensor name and
shape are checked (:func:`prepare_hf_source`) before any output is created, and the output appears only by
renaming a complete temp directory.
"""

from __future__ import annotations

import io
import json
import os
import shutil

import torch

from checkpoints_conversion.atomic import atomic_dir
from checkpoints_conversion.config import ModelConfigError, check_family, load_model_args, validate_layout
from checkpoints_conversion.families import expected_hf_shapes
from checkpoints_conversion.hf_io import CheckpointError, HFCheckpointReader
from checkpoints_conversion.mapping import shard_from_hf
from checkpoints_conversion.megatron_layout import (
    HF_CONFIG_SUBDIR,
    MODEL_ARGS_FILE,
    checkpoint_entries,
    extra_state_keys,
    model_args_record,
    vocab_blocks,
)

# HF tensors a converter may drop without losing anything
_IGNORABLE_SUFFIXES = ("rotary_emb.inv_freq",)


def validate_hf_checkpoint(args, reader: HFCheckpointReader) -> None:
    """The HF tensors are exactly those the config implies, with the shapes it implies."""
    expected = expected_hf_shapes(args)
    missing = [n for n in expected if n not in reader]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise CheckpointError(
            f"{args.model_dir}: the checkpoint lacks {', '.join(missing[:5])}{more} "
            f"which the config ({args.model_type}, {args.num_layers} layers) requires"
        )
    wrong = [
        f"{n}: config implies {shape}, checkpoint has {reader.shape(n)}"
        for n, shape in expected.items()
        if reader.shape(n) != tuple(shape)
    ]
    if wrong:
        raise CheckpointError(f"{args.model_dir}: config and checkpoint shapes disagree: " + "; ".join(wrong[:5]))
    extra = [
        n
        for n in reader.keys()
        if n not in expected
        and not n.endswith(_IGNORABLE_SUFFIXES)
        and not (n == "lm_head.weight" and args.tie_word_embeddings)
    ]
    if extra:
        raise CheckpointError(
            f"{args.model_dir}: tensors {', '.join(sorted(extra)[:5])} have no place in a "
            f"{args.architecture} with this config (they would be dropped)"
        )
    if args.tie_word_embeddings and "lm_head.weight" in reader:
        _check_tied_copy(args, reader)
    bad_dtype = sorted({str(reader.dtype(n)) for n in expected if not reader.dtype(n).is_floating_point})
    if bad_dtype:
        raise CheckpointError(
            f"{args.model_dir}: non-floating-point weights ({', '.join(bad_dtype)}); "
            "quantized checkpoints are not supported"
        )


def _check_tied_copy(args, reader: HFCheckpointReader) -> None:
    """Some tied checkpoints also store lm_head; it must then equal the embedding (compared in row
    blocks), or the config's tie_word_embeddings is wrong and converting would drop weights."""
    name, emb = "lm_head.weight", "model.embed_tokens.weight"
    if reader.shape(name) != reader.shape(emb):
        raise CheckpointError(
            f"{args.model_dir}: {name} {reader.shape(name)} and {emb} {reader.shape(emb)} "
            "differ in shape but the config ties the embeddings"
        )
    h = args.hidden_size
    for a, b in vocab_blocks(args.vocab_size, h * reader.dtype(emb).itemsize):
        if not torch.equal(reader.get_rows(name, a, b), reader.get_rows(emb, a, b)):
            raise CheckpointError(
                f"{args.model_dir}: config ties the embeddings (tie_word_embeddings=true) but "
                f"{name} differs from {emb}; converting would drop the output layer"
            )


def prepare_hf_source(hf_dir: str, tp: int = 1, pp: int = 1):
    """Config, layout and checkpoint checks for HF -> Megatron; returns (ModelArgs, reader)."""
    for flag, value in (("--target-tensor-parallel-size", tp), ("--target-pipeline-parallel-size", pp)):
        if value < 1:
            raise ModelConfigError(f"{flag} must be >= 1, got {value}")
    args = load_model_args(hf_dir)
    validate_layout(args, tp, pp)
    check_family(args)
    reader = HFCheckpointReader(hf_dir)
    validate_hf_checkpoint(args, reader)
    return args, reader


class _LazyGlobalTensor(torch.Tensor):
    """A global tensor known by shape, dtype and chunk list; each chunk is produced on demand.

    Implements torch.distributed.checkpoint's ``_Checkpointable`` protocol (as megatron's own
    ``CheckpointableShardedTensor`` does), so the DCP planner plans from metadata alone and the
    writer calls :meth:`__get_tensor_shard__` just before it writes each chunk."""

    @staticmethod
    def __new__(cls, global_shape, dtype, chunks, on_chunk=None):
        return torch.Tensor._make_wrapper_subclass(cls, torch.Size(global_shape), dtype=dtype)

    def __init__(self, global_shape, dtype, chunks, on_chunk=None):
        self._gshape = torch.Size(global_shape)
        self._dtype = dtype
        self._chunks = {tuple(off): (torch.Size(size), fn) for off, size, fn in chunks}
        self._on_chunk = on_chunk

    def __create_write_items__(self, fqn, obj, index=None):
        from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex, TensorProperties
        from torch.distributed.checkpoint.planner import TensorWriteData, WriteItem, WriteItemType

        return [
            WriteItem(
                index=MetadataIndex(fqn, torch.Size(off)),
                type=WriteItemType.SHARD,
                tensor_data=TensorWriteData(
                    chunk=ChunkStorageMetadata(offsets=torch.Size(off), sizes=size),
                    properties=TensorProperties(dtype=self._dtype),
                    size=self._gshape,
                ),
            )
            for off, (size, _) in self._chunks.items()
        ]

    def __create_chunk_list__(self):
        from torch.distributed.checkpoint.metadata import ChunkStorageMetadata

        return [ChunkStorageMetadata(offsets=torch.Size(off), sizes=size) for off, (size, _) in self._chunks.items()]

    def __get_tensor_shard__(self, index):
        size, fn = self._chunks[tuple(index.offset)]
        t = fn()
        if tuple(t.shape) != tuple(size):
            raise CheckpointError(
                f"{index.fqn} chunk at {tuple(index.offset)}: produced {tuple(t.shape)}, expected {tuple(size)}"
            )
        if self._on_chunk is not None:
            self._on_chunk()
        return t.to(self._dtype).contiguous()

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise NotImplementedError(f"{cls.__name__} is a checkpoint placeholder, not a tensor")

    def __repr__(self):
        return f"_LazyGlobalTensor(shape={tuple(self._gshape)}, dtype={self._dtype}, chunks={len(self._chunks)})"


def _lazy_state_dict(args, reader: HFCheckpointReader, padded: int, dtype, on_chunk) -> tuple[dict, int]:
    """The checkpoint as {key: lazy global tensor or serialized extra-state object}; and the chunk count."""
    state, count = {}, 0
    entries = checkpoint_entries(args, padded)
    for e in entries:
        chunks = []
        if e.spec is None and e.kind == "vocab":
            name = e.hf[0]
            h = e.shape[1]
            row_bytes = h * (dtype or reader.dtype(name)).itemsize

            def block(a, b, name=name, h=h):
                have = min(b, args.vocab_size)
                rows = reader.get_rows(name, a, have) if have > a else None
                if have == b:
                    return rows
                out = torch.zeros((b - a, h), dtype=rows.dtype if rows is not None else reader.dtype(name))
                if rows is not None:
                    out[: have - a] = rows
                return out

            for a, b in vocab_blocks(e.shape[0], row_bytes):
                chunks.append(((a, 0), (b - a, h), lambda a=a, b=b, block=block: block(a, b)))
            first = name
        elif e.spec is None:
            chunks.append(((0,) * len(e.shape), e.shape, lambda n=e.hf[0]: reader.get(n)))
            first = e.hf[0]
        else:
            spec, per_layer = e.spec, e.shape[1:]
            zeros = (0,) * len(per_layer)
            for i in range(args.num_layers):
                names = [f"model.layers.{i}.{s}" for s in spec.hf]
                if spec.kind == "gate_up":
                    # megatron stores fc1 as [gate; up] chunks; write them as two chunks like it does
                    rows = per_layer[0] // 2
                    for part, n in enumerate(names):
                        chunks.append(
                            (
                                (i, part * rows) + zeros[1:],
                                (1, rows) + per_layer[1:],
                                lambda n=n: reader.get(n).unsqueeze(0),
                            )
                        )
                else:

                    def fused(names=names, kind=spec.kind):
                        return shard_from_hf(kind, [reader.get(n) for n in names], args, 0, 1, padded).unsqueeze(0)

                    chunks.append(((i,) + zeros, (1,) + per_layer, fused))
            first = f"model.layers.0.{spec.hf[0]}"
        state[e.key] = _LazyGlobalTensor(e.shape, dtype or reader.dtype(first), chunks, on_chunk)
        count += len(chunks)
    buf = io.BytesIO()
    torch.save([None], buf)  # what megatron writes for a local-spec module's (empty) extra state
    for key in extra_state_keys(args):
        state[key] = io.BytesIO(buf.getvalue())
    return state, count


def copy_hf_config_files(src_dir: str, dst_dir: str) -> None:
    """config.json, generation config and tokenizer files (no weights)."""
    os.makedirs(dst_dir, exist_ok=True)
    for fname in sorted(os.listdir(src_dir)):
        src = os.path.join(src_dir, fname)
        if (
            not os.path.isfile(src)
            or fname.endswith((".safetensors", ".bin", ".pt", ".gguf"))
            or fname == "model.safetensors.index.json"
        ):
            continue
        if fname.endswith((".json", ".txt", ".model", ".jinja", ".tiktoken")) or fname.startswith("tokenizer"):
            shutil.copy2(src, os.path.join(dst_dir, fname))


def write_megatron_checkpoint(
    out_dir: str,
    args,
    reader: HFCheckpointReader,
    *,
    tp: int = 1,
    pp: int = 1,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Write the torch_dist checkpoint of the HF weights (validated by :func:`prepare_hf_source`)
    to ``out_dir`` atomically, with ``model_args.json`` and the HF config/tokenizer files in
    ``hf_config/``. ``tp``/``pp`` choose the vocab padding and are recorded; the checkpoint
    loads at any layout. Returns the model-args record. On a machine without CUDA the caller applies
    megatron_corew's CPU compatibility layer first (``megatron_corew/policy/cpu_compat.py``)."""
    if os.path.exists(out_dir) and not overwrite:
        raise CheckpointError(f"{out_dir} already exists (pass --overwrite to replace it)")
    import torch.distributed.checkpoint as dcp
    from megatron.core.dist_checkpointing.core import CheckpointingConfig, save_config
    from megatron.core.dist_checkpointing.strategies.torch import MCoreSavePlanner
    from tqdm import tqdm

    padded = args.padded_vocab_size(tp)
    out_dtype = dtype or reader.dtype("model.embed_tokens.weight")
    with atomic_dir(out_dir) as tmp:
        bar = tqdm(total=0, desc="HF -> Megatron", unit="tensor", disable=not progress, dynamic_ncols=True)
        state, count = _lazy_state_dict(args, reader, padded, dtype, lambda: bar.update(1))
        bar.total = count
        bar.refresh()
        writer = dcp.FileSystemWriter(tmp, single_file_per_rank=True, thread_count=1, sync_files=True)
        dcp.save(
            state,
            storage_writer=writer,
            planner=MCoreSavePlanner(dedup_replicated_tensors=False, flatten_state_dict=False),
            no_dist=True,
        )
        bar.close()
        torch.save({}, os.path.join(tmp, "common.pt"))  # megatron's common (non-sharded) state: none
        save_config(CheckpointingConfig("torch_dist", 1), tmp)
        record = model_args_record(args, tp, pp, out_dtype)
        with open(os.path.join(tmp, MODEL_ARGS_FILE), "w") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
        copy_hf_config_files(args.model_dir, os.path.join(tmp, HF_CONFIG_SUBDIR))
    return record
