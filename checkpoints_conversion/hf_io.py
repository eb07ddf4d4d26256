"""Lazy reading and atomic writing of HF safetensors checkpoints (one tensor in memory at a time)."""

from __future__ import annotations

import json
import os
import shutil

import torch

from checkpoints_conversion.atomic import atomic_dir


class CheckpointError(ValueError):
    """A checkpoint on disk is missing, incomplete or does not match its config."""


_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _read_safetensors_header(path: str) -> tuple[dict, int]:
    """(tensor name -> {dtype, shape, data_offsets}, byte offset of the data section)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{path}: not a safetensors file (too short)")
        n = int.from_bytes(head, "little")
        if n <= 0 or 8 + n > size:
            raise CheckpointError(f"{path}: corrupt safetensors header")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    data_start = 8 + n
    for name, info in header.items():
        end = info["data_offsets"][1]
        if data_start + end > size:
            raise CheckpointError(f"{path}: truncated file (tensor {name} ends past the end of the file)")
    return header, data_start


class HFCheckpointReader:
    """Tensor-by-name access to a (possibly sharded) safetensors checkpoint without loading it all.

    Tensors are read with plain file reads rather than through a memory map, so a streaming
    conversion keeps only the tensors it holds resident (an mmap keeps every page it touched
    mapped, and the process RSS then grows to the size of the checkpoint)."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        if not os.path.isdir(model_dir):
            raise CheckpointError(f"model directory not found: {model_dir}")
        index_path = os.path.join(model_dir, "model.safetensors.index.json")
        single = os.path.join(model_dir, "model.safetensors")
        if os.path.isfile(index_path):
            with open(index_path) as f:
                weight_map = json.load(f)["weight_map"]
        elif os.path.isfile(single):
            weight_map = None
        else:
            raise CheckpointError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")
        shards = sorted(set(weight_map.values())) if weight_map is not None else ["model.safetensors"]
        for shard in shards:
            if not os.path.isfile(os.path.join(model_dir, shard)):
                raise CheckpointError(f"{model_dir}: shard file {shard} listed in the index is missing")
        self._headers = {shard: _read_safetensors_header(os.path.join(model_dir, shard)) for shard in shards}
        if weight_map is None:
            weight_map = {k: "model.safetensors" for k in self._headers["model.safetensors"][0]}
        for name, shard in weight_map.items():
            if name not in self._headers[shard][0]:
                raise CheckpointError(f"{model_dir}: the index puts {name} in {shard}, which does not contain it")
        self.weight_map = weight_map

    def keys(self):
        return self.weight_map.keys()

    def __contains__(self, name):
        return name in self.weight_map

    def _info(self, name: str):
        if name not in self.weight_map:
            raise CheckpointError(f"{self.model_dir}: tensor {name} not found in the checkpoint")
        shard = self.weight_map[name]
        header, data_start = self._headers[shard]
        return os.path.join(self.model_dir, shard), header[name], data_start

    def _dtype_of(self, path, name, info) -> torch.dtype:
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        return dtype

    @staticmethod
    def _read(path: str, offset: int, nbytes: int, what: str) -> torch.Tensor:
        buf = torch.empty(nbytes, dtype=torch.uint8)
        if nbytes:
            view = memoryview(buf.numpy())
            with open(path, "rb", buffering=0) as f:
                f.seek(offset)
                got = 0
                while got < nbytes:
                    n = f.readinto(view[got:])
                    if not n:
                        raise CheckpointError(f"{path}: unexpected end of file reading {what}")
                    got += n
        return buf

    def get(self, name: str) -> torch.Tensor:
        path, info, data_start = self._info(name)
        dtype = self._dtype_of(path, name, info)
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        expected = dtype.itemsize
        for d in shape:
            expected *= d
        if end - begin != expected:
            raise CheckpointError(f"{path}: tensor {name} has {end - begin} bytes, shape {shape} needs {expected}")
        return self._read(path, data_start + begin, end - begin, name).view(dtype).reshape(shape)

    def get_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of a tensor (dim 0), reading only those bytes (e.g. an embedding block)."""
        path, info, data_start = self._info(name)
        dtype = self._dtype_of(path, name, info)
        shape = tuple(info["shape"])
        if not shape or not 0 <= start <= stop <= shape[0]:
            raise CheckpointError(f"{path}: rows [{start}, {stop}) out of range for {name} {shape}")
        row = dtype.itemsize
        for d in shape[1:]:
            row *= d
        begin = info["data_offsets"][0] + start * row
        out = self._read(path, data_start + begin, (stop - start) * row, name)
        return out.view(dtype).reshape((stop - start,) + shape[1:])

    def shape(self, name: str) -> tuple:
        return tuple(self._info(name)[1]["shape"])

    def dtype(self, name: str) -> torch.dtype:
        return _ST_DTYPES.get(self._info(name)[1]["dtype"])


_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def save_safetensors(tensors: dict, path: str, metadata: dict | None = None) -> None:
    """Write a safetensors file straight from the tensors' memory (``safetensors.torch.save_file``
    first copies every tensor into a Python bytes object, doubling the memory of a shard)."""
    header, offset, order = {}, 0, []
    # like safetensors' own writer: larger element sizes first, so every tensor is aligned to its dtype
    for name, t in sorted(tensors.items(), key=lambda kv: (-kv[1].element_size(), kv[0])):
        if t.dtype not in _ST_NAMES:
            raise CheckpointError(f"cannot write {name}: unsupported dtype {t.dtype}")
        t = t.detach().cpu().contiguous()
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
        order.append(t)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for t in order:
            if t.numel():
                f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        f.flush()
        os.fsync(f.fileno())


def write_hf_checkpoint(
    out_dir: str,
    named_tensors,
    *,
    config_dir: str | None = None,
    max_shard_bytes: int = 2 * 1024**3,
    dtype: torch.dtype | None = None,
    config_overrides: dict | None = None,
) -> None:
    """Stream (name, tensor) pairs into sharded safetensors plus an index, in a temp directory that
    is renamed into place only when complete (a crash never leaves a half-written checkpoint).
    At most one output shard (``max_shard_bytes``) is held in memory.
    Config, generation config and tokenizer files are copied from ``config_dir``; keys in
    ``config_overrides`` are then set in the copied config.json (e.g. the dtype actually written)."""
    with atomic_dir(out_dir) as tmp:
        shards, current, current_bytes, weight_map, total = [], {}, 0, {}, 0

        def flush():
            nonlocal current, current_bytes
            if current:
                name = f"model-{len(shards) + 1:05d}.safetensors"
                save_safetensors(current, os.path.join(tmp, name), metadata={"format": "pt"})
                shards.append((name, list(current)))
                current, current_bytes = {}, 0

        for name, tensor in named_tensors:
            t = tensor.detach().to("cpu")
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            t = t.contiguous()
            if t.untyped_storage().nbytes() != t.numel() * t.element_size():
                t = t.clone()  # a view would keep its whole base tensor alive in the shard buffer
            nbytes = t.numel() * t.element_size()
            if current and current_bytes + nbytes > max_shard_bytes:
                flush()
            current[name] = t
            current_bytes += nbytes
            total += nbytes
        flush()
        count = len(shards)
        for i, (name, keys) in enumerate(shards):
            final = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            os.rename(os.path.join(tmp, name), os.path.join(tmp, final))
            for k in keys:
                weight_map[k] = final
        with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
        if config_dir:
            for fname in os.listdir(config_dir):
                if fname.endswith(".safetensors") or fname == "model.safetensors.index.json":
                    continue
                src = os.path.join(config_dir, fname)
                if os.path.isfile(src) and (
                    fname.endswith((".json", ".txt", ".model", ".jinja")) or fname.startswith("tokenizer")
                ):
                    shutil.copy2(src, os.path.join(tmp, fname))
        if config_overrides:
            cfg_path = os.path.join(tmp, "config.json")
            cfg = {}
            if os.path.isfile(cfg_path):
                with open(cfg_path) as f:
                    cfg = json.load(f)
            cfg.update(config_overrides)
            with open(cfg_path, "w") as f:
                json.dump(cfg, f, indent=2, sort_keys=True)
                f.write("\n")
