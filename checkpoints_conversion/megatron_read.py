"""torch_dist checkpoint -> HF tensors (streamed a layer at a time), and loading one into a live GPTModel.

Megatron -> HF reads a layer at a time with ``dist_checkpointing.load`` of a partial sharded state dict;
the tensors feed :func:`checkpoints_conversion.hf_io.write_hf_checkpoint`. The checkpoint's tensor names and
shapes are checked against the HF config (:func:`validate_megatron_checkpoint`) before anything is written.
"""

from __future__ import annotations

import json
import os

import torch
from torch.distributed.checkpoint.api import CheckpointException

from checkpoints_conversion.families import EMBEDDING_KEY, FINAL_NORM_KEY, OUTPUT_KEY
from checkpoints_conversion.hf_io import CheckpointError
from checkpoints_conversion.mapping import hf_from_shards
from checkpoints_conversion.megatron_layout import CHECKED_ARG_FIELDS, MODEL_ARGS_FILE, checkpoint_entries


def resolve_checkpoint_dir(path: str) -> str:
    """A dist-checkpoint directory from a converted checkpoint, an RL ``iter_*`` directory, or an RL
    save directory with a ``latest`` pointer."""
    if os.path.isfile(os.path.join(path, "metadata.json")):
        return path
    if os.path.isfile(os.path.join(path, "model", "metadata.json")):
        return os.path.join(path, "model")
    pointer = os.path.join(path, "latest")
    if os.path.isfile(pointer):
        with open(pointer) as f:
            return resolve_checkpoint_dir(os.path.join(path, f.read().strip()))
    raise CheckpointError(f"{path}: not a Megatron distributed checkpoint (no metadata.json, model/ or latest)")


def read_checkpoint_metadata(ckpt_dir: str) -> dict:
    """{key: (global shape, dtype, [(chunk offsets, chunk sizes)])} for the tensors, plus the set of
    byte-object keys under ``"__objects__"``; reads only the small metadata files."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    cfg_path = os.path.join(ckpt_dir, "metadata.json")
    try:
        with open(cfg_path) as f:
            backend = json.load(f).get("sharded_backend")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt_dir}: unreadable metadata.json ({e})") from None
    if backend != "torch_dist":
        raise CheckpointError(f"{ckpt_dir}: sharded backend {backend!r} is not supported (torch_dist only)")
    if not os.path.isfile(os.path.join(ckpt_dir, ".metadata")):
        raise CheckpointError(f"{ckpt_dir}: .metadata is missing (incomplete checkpoint)")
    try:
        md = FileSystemReader(ckpt_dir).read_metadata()
    except (Exception, CheckpointException) as e:  # EOFError / UnpicklingError of a torn .metadata
        raise _torn(ckpt_dir, ".metadata", e) from None
    out, objects = {}, set()
    for key, m in md.state_dict_metadata.items():
        if isinstance(m, BytesStorageMetadata):
            objects.add(key)
        else:
            out[key] = (tuple(m.size), m.properties.dtype, [(tuple(c.offsets), tuple(c.sizes)) for c in m.chunks])
    files = {info.relative_path for info in md.storage_data.values()}
    missing = sorted(f for f in files if not os.path.isfile(os.path.join(ckpt_dir, f)))
    if missing:
        raise CheckpointError(f"{ckpt_dir}: data file(s) {', '.join(missing)} listed in .metadata are missing")
    out["__objects__"] = objects
    return out


def validate_megatron_checkpoint(ckpt_dir: str, args) -> dict:
    """The checkpoint holds exactly the tensors ``args`` implies (any padded vocab >= vocab_size);
    raises CheckpointError naming every disagreement. Returns the metadata."""
    meta = read_checkpoint_metadata(ckpt_dir)
    problems = []
    rec_path = os.path.join(ckpt_dir, MODEL_ARGS_FILE)
    if os.path.isfile(rec_path):
        with open(rec_path) as f:
            rec = json.load(f)
        for fld in CHECKED_ARG_FIELDS:
            if fld in rec and rec[fld] != getattr(args, fld):
                problems.append(f"{fld}: checkpoint {rec[fld]!r}, config {getattr(args, fld)!r}")
    emb = meta.get(EMBEDDING_KEY)
    padded = emb[0][0] if emb else args.padded_vocab_size(1)
    if padded < args.vocab_size:
        problems.append(f"{EMBEDDING_KEY}: {padded} rows, fewer than config vocab_size {args.vocab_size}")
    for e in checkpoint_entries(args, padded):
        if e.key not in meta:
            problems.append(
                f"{e.key} is missing (config: {args.model_type}, tie_word_embeddings={args.tie_word_embeddings})"
            )
        elif meta[e.key][0] != e.shape:
            problems.append(f"{e.key}: checkpoint shape {meta[e.key][0]}, config implies {e.shape}")
    if args.tie_word_embeddings and OUTPUT_KEY in meta:
        problems.append(f"{OUTPUT_KEY} present but the config ties the embeddings")
    if problems:
        raise CheckpointError(f"checkpoint {ckpt_dir} does not match config {args.model_dir}: " + "; ".join(problems))
    return meta


def _ensure_process_group():
    """dist_checkpointing.load needs a process group; a private single-rank gloo group suffices."""
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    return True


def _load_chunks(ckpt_dir: str, requests: dict) -> dict:
    """{name: (key, dtype, chunk offset, chunk size, global shape)} -> {name: tensor} via megatron."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing import ShardedTensor

    sharded = {}
    for name, (key, dt, off, size, gshape) in requests.items():
        sharded[name] = ShardedTensor(
            key=key,
            data=torch.empty(size, dtype=dt),
            dtype=dt,
            local_shape=tuple(size),
            global_shape=tuple(gshape),
            global_offset=tuple(off),
            axis_fragmentations=None,
        )
    try:
        return dist_checkpointing.load(sharded, ckpt_dir, validate_access_integrity=False)
    except (Exception, CheckpointException) as e:  # torch's CheckpointException (a BaseException) wraps the
        raise _torn(ckpt_dir, "its tensors", e) from None  # EOFError / zip error of a torn shard


def _torn(ckpt_dir: str, what: str, e: Exception) -> CheckpointError:
    """One line for a checkpoint file that cannot be read (a copy cut short, a disk error)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    msg = (lines[-1] if lines else "")[:200]
    return CheckpointError(f"{ckpt_dir}: cannot read {what} ({type(e).__name__}: {msg}); it is truncated or corrupt")


def _compact(t: torch.Tensor, dtype) -> torch.Tensor:
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    t = t.contiguous()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size():
        t = t.clone()
    return t


def iter_hf_tensors(ckpt_dir: str, args, meta: dict, *, dtype: torch.dtype | None = None, progress: bool = True):
    """Yield (HF name, tensor) from a validated checkpoint, one layer in memory at a time."""
    from tqdm import tqdm

    created = _ensure_process_group()
    try:
        entries = checkpoint_entries(args, meta[EMBEDDING_KEY][0][0])
        by_key = {e.key: e for e in entries}
        layer_entries = [e for e in entries if e.spec is not None]
        bar = tqdm(
            total=args.num_layers + len(entries) - len(layer_entries),
            desc="Megatron -> HF",
            unit="step",
            disable=not progress,
            dynamic_ncols=True,
        )

        def vocab_tensor(key: str) -> torch.Tensor:
            gshape, dt, chunks = meta[key]
            out = torch.empty((args.vocab_size,) + gshape[1:], dtype=dt)
            # read stored chunks one at a time (converted checkpoints store row blocks)
            row_ranges = sorted({(off[0], off[0] + size[0]) for off, size in chunks})
            for a, b in row_ranges:
                if a >= args.vocab_size:
                    continue
                got = _load_chunks(
                    ckpt_dir, {"t": (key, dt, (a,) + (0,) * (len(gshape) - 1), (b - a,) + gshape[1:], gshape)}
                )["t"]
                stop = min(b, args.vocab_size)
                out[a:stop] = got[: stop - a]
                del got
            return out

        yield "model.embed_tokens.weight", _compact(vocab_tensor(EMBEDDING_KEY), dtype)
        bar.update(1)
        for i in range(args.num_layers):
            requests = {}
            for e in layer_entries:
                _, dt, _ = meta[e.key]
                requests[e.key] = (e.key, dt, (i,) + (0,) * (len(e.shape) - 1), (1,) + e.shape[1:], e.shape)
            loaded = _load_chunks(ckpt_dir, requests)
            for e in layer_entries:
                names = [f"model.layers.{i}.{s}" for s in e.spec.hf]
                for name, t in hf_from_shards(e.kind, names, [loaded.pop(e.key)[0]], args):
                    yield name, _compact(t, dtype)
            del loaded
            bar.update(1)
        e = by_key[FINAL_NORM_KEY]
        _, dt, _ = meta[e.key]
        t = _load_chunks(ckpt_dir, {"t": (e.key, dt, (0,), e.shape, e.shape)})["t"]
        yield "model.norm.weight", _compact(t, dtype)
        bar.update(1)
        if not args.tie_word_embeddings:
            yield "lm_head.weight", _compact(vocab_tensor(OUTPUT_KEY), dtype)
            bar.update(1)
        bar.close()
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


def stored_dtype(meta: dict) -> torch.dtype:
    return meta[EMBEDDING_KEY][1]


def load_megatron_checkpoint(model, ckpt_dir: str, strict: str = "assume_ok_unexpected") -> None:
    """Load a converted (or RL-trainer) checkpoint into this rank's shard of a GPTModel, at any
    TP/PP. ``_extra_state`` objects the checkpoint lacks (e.g. Transformer Engine's) are left at
    their defaults; every parameter must be present."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    while hasattr(model, "module"):
        model = model.module
    ckpt_dir = resolve_checkpoint_dir(ckpt_dir)
    objects = read_checkpoint_metadata(ckpt_dir)["__objects__"]
    sharded = model.sharded_state_dict()
    skipped = [k for k, v in sharded.items() if isinstance(v, ShardedObject) and v.unique_key not in objects]
    for k in skipped:
        del sharded[k]
    loaded = dist_checkpointing.load(sharded, ckpt_dir, strict=strict)
    missing, unexpected = model.load_state_dict(loaded, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise CheckpointError(f"{ckpt_dir}: loading left parameters unset {missing} / unexpected {unexpected}")
