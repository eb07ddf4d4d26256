"""Lazy reading and atomic writing of HF safetensors checkpoints (one tensor in memory at a time)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch


class CheckpointError(ValueError):
    """A checkpoint on disk is missing, incomplete or does not match its config."""


class HFCheckpointReader:
    """Tensor-by-name access to a (possibly sharded) safetensors checkpoint without loading it all."""

    def __init__(self, model_dir: str):
        from safetensors import safe_open

        self.model_dir = model_dir
        index_path = os.path.join(model_dir, "model.safetensors.index.json")
        single = os.path.join(model_dir, "model.safetensors")
        if os.path.isfile(index_path):
            with open(index_path) as f:
                weight_map = json.load(f)["weight_map"]
        elif os.path.isfile(single):
            with safe_open(single, "pt") as f:
                weight_map = {k: "model.safetensors" for k in f.keys()}
        else:
            raise CheckpointError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")
        for shard in sorted(set(weight_map.values())):
            if not os.path.isfile(os.path.join(model_dir, shard)):
                raise CheckpointError(f"{model_dir}: shard file {shard} listed in the index is missing")
        self.weight_map = weight_map
        self._open = safe_open
        self._handles = {}

    def keys(self):
        return self.weight_map.keys()

    def __contains__(self, name):
        return name in self.weight_map

    def _handle(self, name: str):
        if name not in self.weight_map:
            raise CheckpointError(f"{self.model_dir}: tensor {name} not found in the checkpoint")
        shard = self.weight_map[name]
        if shard not in self._handles:
            self._handles[shard] = self._open(os.path.join(self.model_dir, shard), "pt")
        return self._handles[shard]

    def get(self, name: str) -> torch.Tensor:
        return self._handle(name).get_tensor(name)

    def shape(self, name: str) -> tuple:
        return tuple(self._handle(name).get_slice(name).get_shape())


def write_hf_checkpoint(out_dir: str, named_tensors, *, config_dir: str | None = None,
                        max_shard_bytes: int = 2 * 1024**3, dtype: torch.dtype | None = None) -> None:
    """Stream (name, tensor) pairs into sharded safetensors plus an index, in a temp directory that
    is renamed into place only when complete (a crash never leaves a half-written checkpoint).
    Config, generation config and tokenizer files are copied from ``config_dir``."""
    from safetensors.torch import save_file

    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(out_dir) + "-", dir=parent)
    try:
        shards, current, current_bytes, weight_map, total = [], {}, 0, {}, 0

        def flush():
            nonlocal current, current_bytes
            if current:
                name = f"model-{len(shards) + 1:05d}.safetensors"
                save_file(current, os.path.join(tmp, name), metadata={"format": "pt"})
                shards.append((name, list(current)))
                current, current_bytes = {}, 0

        for name, tensor in named_tensors:
            t = tensor.detach().to("cpu")
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            t = t.contiguous()
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
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                      f, indent=2)
        if config_dir:
            for fname in os.listdir(config_dir):
                if fname.endswith(".safetensors") or fname == "model.safetensors.index.json":
                    continue
                src = os.path.join(config_dir, fname)
                if os.path.isfile(src) and (fname.endswith((".json", ".txt", ".model", ".jinja"))
                                            or fname.startswith("tokenizer")):
                    shutil.copy2(src, os.path.join(tmp, fname))
        if os.path.exists(out_dir):
            old = out_dir.rstrip("/") + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
