"""Streaming HF <-> Megatron distributed-checkpoint (torch_dist) conversion.

The Megatron side is the checkpoint ``GPTModel.sharded_state_dict()`` describes: global tensors
under megatron's dist-checkpoint keys, decoder layers stacked on a leading axis
(``decoder.layers.self_attention.linear_qkv.weight`` has shape ``[num_layers, 3-way fused rows,
hidden]``), the vocabulary padded, plus one ``_extra_state`` object per linear module and layer.
Such a checkpoint is independent of the tensor/pipeline layout that loads it (the padded vocab
rows are loaded with megatron's ``allow_shape_mismatch``), so ``dist_checkpointing.load`` into a
model at any TP/PP reads it.

HF -> Megatron never builds a model: every chunk of the checkpoint is a lazy object that reads its
HF tensors when torch.distributed.checkpoint's writer asks for it and is dropped once written
(layers one at a time, the embedding in row blocks), so memory stays at a few tensors.
Megatron -> HF reads a layer at a time with ``dist_checkpointing.load`` of a partial sharded state
dict and streams into :func:`checkpoints_conversion.hf_io.write_hf_checkpoint`.

Everything that can be checked (config, layout, tensor names and shapes) is checked before any
output is created, and outputs appear only by renaming a complete temp directory.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import warnings

import torch

from checkpoints_conversion.families import (EMBEDDING_KEY, EXTRA_STATE_MODULES, FINAL_NORM_KEY,
                                             LAYER_KEY_PREFIX, OUTPUT_KEY, ParamSpec, expected_hf_shapes,
                                             get_family, megatron_layer_shape)
from checkpoints_conversion.hf_io import CheckpointError, HFCheckpointReader, commit_dir
from checkpoints_conversion.mapping import hf_from_shards, shard_from_hf

MODEL_ARGS_FILE = "model_args.json"
HF_CONFIG_SUBDIR = "hf_config"
FORMAT_NAME = "megatron_corew.hf_conversion"
# the embedding / output layer are written in row blocks of at most this many bytes, so neither
# direction ever holds two full copies of a 150k-row vocabulary matrix
VOCAB_BLOCK_BYTES = 64 * 1024**2
# HF tensors a converter may drop without losing anything
_IGNORABLE_SUFFIXES = ("rotary_emb.inv_freq",)

warnings.filterwarnings("ignore", message=".*torch.distributed is disabled, unavailable or uninitialized.*")
warnings.filterwarnings("ignore", message=".*`load_state_dict` is deprecated.*")

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass
class Entry:
    """One global tensor of the Megatron checkpoint."""

    key: str
    kind: str
    shape: tuple                    # global shape (stacked layers first for layer params)
    spec: ParamSpec | None = None   # layer parameter, or None for embedding / norm / output
    hf: tuple = ()                  # HF names of a non-layer entry


def checkpoint_entries(args, padded_vocab: int) -> list[Entry]:
    """Every tensor of the Megatron checkpoint for this architecture, with its global shape."""
    family = get_family(args.model_type)
    h, n = args.hidden_size, args.num_layers
    out = [Entry(EMBEDDING_KEY, "vocab", (padded_vocab, h), hf=("model.embed_tokens.weight",))]
    for spec in family.layer_params():
        out.append(Entry(LAYER_KEY_PREFIX + spec.key, spec.kind, (n,) + megatron_layer_shape(spec, args), spec=spec))
    out.append(Entry(FINAL_NORM_KEY, "replicated", (h,), hf=("model.norm.weight",)))
    if not args.tie_word_embeddings:
        out.append(Entry(OUTPUT_KEY, "vocab", (padded_vocab, h), hf=("lm_head.weight",)))
    return out


def extra_state_keys(args) -> list[str]:
    """Unique keys of the per-layer ``_extra_state`` objects (``key/shard_{layer}_{num_layers}``)."""
    return [f"{LAYER_KEY_PREFIX}{m}._extra_state/shard_{i}_{args.num_layers}"
            for i in range(args.num_layers) for m in EXTRA_STATE_MODULES]


def vocab_blocks(rows: int, row_bytes: int, block_bytes: int = VOCAB_BLOCK_BYTES) -> list[tuple[int, int]]:
    per = max(1, block_bytes // max(row_bytes, 1))
    return [(a, min(a + per, rows)) for a in range(0, rows, per)]


# ---------------------------------------------------------------------------------------------
# validation (no output is created before these pass)

def check_family(args) -> None:
    from megatron_corew.policy.model_builder import ModelConfigError

    problems = get_family(args.model_type).check(args)
    if problems:
        raise ModelConfigError(f"{args.model_dir}: " + "; ".join(problems))


def validate_hf_checkpoint(args, reader: HFCheckpointReader) -> None:
    """The HF tensors are exactly those the config implies, with the shapes it implies."""
    expected = expected_hf_shapes(args)
    missing = [n for n in expected if n not in reader]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise CheckpointError(f"{args.model_dir}: the checkpoint lacks {', '.join(missing[:5])}{more} "
                              f"which the config ({args.model_type}, {args.num_layers} layers) requires")
    wrong = [f"{n}: config implies {shape}, checkpoint has {reader.shape(n)}"
             for n, shape in expected.items() if reader.shape(n) != tuple(shape)]
    if wrong:
        raise CheckpointError(f"{args.model_dir}: config and checkpoint shapes disagree: " + "; ".join(wrong[:5]))
    extra = [n for n in reader.keys() if n not in expected and not n.endswith(_IGNORABLE_SUFFIXES)
             and not (n == "lm_head.weight" and args.tie_word_embeddings)]
    if extra:
        raise CheckpointError(f"{args.model_dir}: tensors {', '.join(sorted(extra)[:5])} have no place in a "
                              f"{args.architecture} with this config (they would be dropped)")
    if args.tie_word_embeddings and "lm_head.weight" in reader:
        _check_tied_copy(args, reader)
    bad_dtype = sorted({str(reader.dtype(n)) for n in expected if not reader.dtype(n).is_floating_point})
    if bad_dtype:
        raise CheckpointError(f"{args.model_dir}: non-floating-point weights ({', '.join(bad_dtype)}); "
                              "quantized checkpoints are not supported")


def _check_tied_copy(args, reader: HFCheckpointReader) -> None:
    """Some tied checkpoints also store lm_head; it must then equal the embedding (compared in row
    blocks), or the config's tie_word_embeddings is wrong and converting would drop weights."""
    name, emb = "lm_head.weight", "model.embed_tokens.weight"
    if reader.shape(name) != reader.shape(emb):
        raise CheckpointError(f"{args.model_dir}: {name} {reader.shape(name)} and {emb} {reader.shape(emb)} "
                              "differ in shape but the config ties the embeddings")
    h = args.hidden_size
    for a, b in vocab_blocks(args.vocab_size, h * reader.dtype(emb).itemsize):
        if not torch.equal(reader.get_rows(name, a, b), reader.get_rows(emb, a, b)):
            raise CheckpointError(f"{args.model_dir}: config ties the embeddings (tie_word_embeddings=true) but "
                                  f"{name} differs from {emb}; converting would drop the output layer")


def prepare_hf_source(hf_dir: str, tp: int = 1, pp: int = 1):
    """Config, layout and checkpoint checks for HF -> Megatron; returns (ModelArgs, reader)."""
    from megatron_corew.policy.model_builder import ModelConfigError, load_model_args, validate_layout

    for flag, value in (("--target-tensor-parallel-size", tp), ("--target-pipeline-parallel-size", pp)):
        if value < 1:
            raise ModelConfigError(f"{flag} must be >= 1, got {value}")
    args = load_model_args(hf_dir)
    validate_layout(args, tp, pp)
    check_family(args)
    reader = HFCheckpointReader(hf_dir)
    validate_hf_checkpoint(args, reader)
    return args, reader


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
    md = FileSystemReader(ckpt_dir).read_metadata()
    out, objects = {}, set()
    for key, m in md.state_dict_metadata.items():
        if isinstance(m, BytesStorageMetadata):
            objects.add(key)
        else:
            out[key] = (tuple(m.size), m.properties.dtype,
                        [(tuple(c.offsets), tuple(c.sizes)) for c in m.chunks])
    files = {info.relative_path for info in md.storage_data.values()}
    missing = sorted(f for f in files if not os.path.isfile(os.path.join(ckpt_dir, f)))
    if missing:
        raise CheckpointError(f"{ckpt_dir}: data file(s) {', '.join(missing)} listed in .metadata are missing")
    out["__objects__"] = objects
    return out


_ARG_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_layers", "num_attention_heads", "num_query_groups",
               "head_dim", "ffn_hidden_size", "tie_word_embeddings", "qkv_bias", "qk_norm")


def model_args_record(args, tp: int, pp: int, dtype: torch.dtype) -> dict:
    rec = {"format": FORMAT_NAME, "version": 1}
    for f in _ARG_FIELDS + ("architecture", "norm_eps", "rope_theta", "rope_type", "max_position_embeddings",
                            "eos_token_id", "pad_token_id"):
        rec[f] = getattr(args, f)
    rec.update(padded_vocab_size=args.padded_vocab_size(tp), target_tensor_parallel_size=tp,
               target_pipeline_parallel_size=pp, dtype=dtype_name(dtype), source=os.path.abspath(args.model_dir))
    return rec


def validate_megatron_checkpoint(ckpt_dir: str, args) -> dict:
    """The checkpoint holds exactly the tensors ``args`` implies (any padded vocab >= vocab_size);
    raises CheckpointError naming every disagreement. Returns the metadata."""
    meta = read_checkpoint_metadata(ckpt_dir)
    problems = []
    rec_path = os.path.join(ckpt_dir, MODEL_ARGS_FILE)
    if os.path.isfile(rec_path):
        with open(rec_path) as f:
            rec = json.load(f)
        for fld in _ARG_FIELDS:
            if fld in rec and rec[fld] != getattr(args, fld):
                problems.append(f"{fld}: checkpoint {rec[fld]!r}, config {getattr(args, fld)!r}")
    emb = meta.get(EMBEDDING_KEY)
    padded = emb[0][0] if emb else args.padded_vocab_size(1)
    if padded < args.vocab_size:
        problems.append(f"{EMBEDDING_KEY}: {padded} rows, fewer than config vocab_size {args.vocab_size}")
    for e in checkpoint_entries(args, padded):
        if e.key not in meta:
            problems.append(f"{e.key} is missing (config: {args.model_type}, "
                            f"tie_word_embeddings={args.tie_word_embeddings})")
        elif meta[e.key][0] != e.shape:
            problems.append(f"{e.key}: checkpoint shape {meta[e.key][0]}, config implies {e.shape}")
    if args.tie_word_embeddings and OUTPUT_KEY in meta:
        problems.append(f"{OUTPUT_KEY} present but the config ties the embeddings")
    if problems:
        raise CheckpointError(f"checkpoint {ckpt_dir} does not match config {args.model_dir}: " + "; ".join(problems))
    return meta


# ---------------------------------------------------------------------------------------------
# HF -> Megatron

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

        return [WriteItem(index=MetadataIndex(fqn, torch.Size(off)), type=WriteItemType.SHARD,
                          tensor_data=TensorWriteData(chunk=ChunkStorageMetadata(offsets=torch.Size(off), sizes=size),
                                                      properties=TensorProperties(dtype=self._dtype),
                                                      size=self._gshape))
                for off, (size, _) in self._chunks.items()]

    def __create_chunk_list__(self):
        from torch.distributed.checkpoint.metadata import ChunkStorageMetadata

        return [ChunkStorageMetadata(offsets=torch.Size(off), sizes=size) for off, (size, _) in self._chunks.items()]

    def __get_tensor_shard__(self, index):
        size, fn = self._chunks[tuple(index.offset)]
        t = fn()
        if tuple(t.shape) != tuple(size):
            raise CheckpointError(f"{index.fqn} chunk at {tuple(index.offset)}: produced {tuple(t.shape)}, "
                                  f"expected {tuple(size)}")
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
                        chunks.append(((i, part * rows) + zeros[1:], (1, rows) + per_layer[1:],
                                       lambda n=n: reader.get(n).unsqueeze(0)))
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


def _atomic_dir(out_dir: str, overwrite: bool):
    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    if os.path.exists(out_dir) and not overwrite:
        raise CheckpointError(f"{out_dir} already exists (pass --overwrite to replace it)")
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(os.path.abspath(out_dir)) + "-", dir=parent)


def copy_hf_config_files(src_dir: str, dst_dir: str) -> None:
    """config.json, generation config and tokenizer files (no weights)."""
    os.makedirs(dst_dir, exist_ok=True)
    for fname in sorted(os.listdir(src_dir)):
        src = os.path.join(src_dir, fname)
        if not os.path.isfile(src) or fname.endswith((".safetensors", ".bin", ".pt", ".gguf")) \
                or fname == "model.safetensors.index.json":
            continue
        if fname.endswith((".json", ".txt", ".model", ".jinja", ".tiktoken")) or fname.startswith("tokenizer"):
            shutil.copy2(src, os.path.join(dst_dir, fname))


def write_megatron_checkpoint(out_dir: str, args, reader: HFCheckpointReader, *, tp: int = 1, pp: int = 1,
                              dtype: torch.dtype | None = None, progress: bool = True,
                              overwrite: bool = False) -> dict:
    """Write the torch_dist checkpoint of the HF weights (validated by :func:`prepare_hf_source`)
    to ``out_dir`` atomically, with ``model_args.json`` and the HF config/tokenizer files in
    ``hf_config/``. ``tp``/``pp`` choose the vocab padding and are recorded; the checkpoint
    loads at any layout. Returns the model-args record."""
    from megatron_corew.policy import cpu_compat

    cpu_compat.apply()
    import torch.distributed.checkpoint as dcp
    from megatron.core.dist_checkpointing.core import CheckpointingConfig, save_config
    from megatron.core.dist_checkpointing.strategies.torch import MCoreSavePlanner
    from tqdm import tqdm

    padded = args.padded_vocab_size(tp)
    out_dtype = dtype or reader.dtype("model.embed_tokens.weight")
    tmp = _atomic_dir(out_dir, overwrite)
    try:
        bar = tqdm(total=0, desc="HF -> Megatron", unit="tensor", disable=not progress, dynamic_ncols=True)
        state, count = _lazy_state_dict(args, reader, padded, dtype, lambda: bar.update(1))
        bar.total = count
        bar.refresh()
        writer = dcp.FileSystemWriter(tmp, single_file_per_rank=True, thread_count=1, sync_files=True)
        dcp.save(state, storage_writer=writer,
                 planner=MCoreSavePlanner(dedup_replicated_tensors=False, flatten_state_dict=False), no_dist=True)
        bar.close()
        torch.save({}, os.path.join(tmp, "common.pt"))  # megatron's common (non-sharded) state: none
        save_config(CheckpointingConfig("torch_dist", 1), tmp)
        record = model_args_record(args, tp, pp, out_dtype)
        with open(os.path.join(tmp, MODEL_ARGS_FILE), "w") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
        copy_hf_config_files(args.model_dir, os.path.join(tmp, HF_CONFIG_SUBDIR))
        commit_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


# ---------------------------------------------------------------------------------------------
# Megatron -> HF

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
        sharded[name] = ShardedTensor(key=key, data=torch.empty(size, dtype=dt), dtype=dt, local_shape=tuple(size),
                                      global_shape=tuple(gshape), global_offset=tuple(off), axis_fragmentations=None)
    return dist_checkpointing.load(sharded, ckpt_dir, validate_access_integrity=False)


def _compact(t: torch.Tensor, dtype) -> torch.Tensor:
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    t = t.contiguous()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size():
        t = t.clone()
    return t


def iter_hf_tensors(ckpt_dir: str, args, meta: dict, *, dtype: torch.dtype | None = None, progress: bool = True):
    """Yield (HF name, tensor) from a validated checkpoint, one layer in memory at a time."""
    from megatron_corew.policy import cpu_compat

    cpu_compat.apply()
    from tqdm import tqdm

    created = _ensure_process_group()
    try:
        entries = checkpoint_entries(args, meta[EMBEDDING_KEY][0][0])
        by_key = {e.key: e for e in entries}
        layer_entries = [e for e in entries if e.spec is not None]
        bar = tqdm(total=args.num_layers + len(entries) - len(layer_entries), desc="Megatron -> HF", unit="step",
                   disable=not progress, dynamic_ncols=True)

        def vocab_tensor(key: str) -> torch.Tensor:
            gshape, dt, chunks = meta[key]
            out = torch.empty((args.vocab_size,) + gshape[1:], dtype=dt)
            # read stored chunks one at a time (converted checkpoints store row blocks)
            row_ranges = sorted({(off[0], off[0] + size[0]) for off, size in chunks})
            for a, b in row_ranges:
                if a >= args.vocab_size:
                    continue
                got = _load_chunks(ckpt_dir, {"t": (key, dt, (a,) + (0,) * (len(gshape) - 1),
                                                    (b - a,) + gshape[1:], gshape)})["t"]
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


# ---------------------------------------------------------------------------------------------
# loading into a live GPTModel

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
