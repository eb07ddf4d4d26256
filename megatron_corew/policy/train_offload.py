"""--offload-train: the trainer's device memory is freed between its phases and restored before its next use.

When SGLang engines share the trainer's GPUs (``--colocate``), generation needs the memory that the policy's
weights, megatron's DDP gradient buffers and the optimizer state (fp32 main params, exp_avg, exp_avg_sq; whole or
sharded by the distributed optimizer) hold during training. ``offload()`` copies the state that must survive into
(pinned, on CUDA) host buffers and shrinks every device storage to zero bytes *in place*
(``UntypedStorage.resize_(0)``): every view megatron keeps (parameters inside the contiguous param buffer,
``main_grad``, bucket views, optimizer shards) stays the same Python object and becomes valid again when
``onload()`` grows the storage back and copies the bytes in. The gradient buffers are released without a copy:
every train step zeroes them before use, so they hold nothing between steps and come back zeroed.

While offloaded the tensors' storages hold no bytes: a kernel reading one is undefined behaviour (torch checks
no storage bounds), so a forward pass of the policy while offloaded raises (a pre-hook) and every other reader
(EMA update, weight export, checkpoints) runs inside ``resident()`` or after ``onload()`` (``colocation.py``).
The frozen anchor / EMA teacher has its own offload (``policy/offload.py``, ``--anchor-cpu-offload``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

__all__ = ["TrainStateOffload", "CATEGORIES"]

CATEGORIES = ("params", "grads", "main_params", "optimizer_state")


@dataclass
class _Entry:
    tensor: torch.Tensor  # any tensor over the storage; its storage is resized in place
    category: str
    key: str  # optimizer state name (exp_avg, ...) or the category
    nbytes: int
    keep: bool  # copied to host (False: released and zeroed on restore)


def _inner_optimizers(optimizer):
    """megatron's optimizers (chained or not) -> [(megatron optimizer, its torch optimizer)]."""
    opts = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    return [(o, getattr(o, "optimizer", o)) for o in opts]


def _byte_view(t: torch.Tensor) -> torch.Tensor:
    """A flat uint8 tensor over the whole storage of ``t`` (whatever its dtype, offset and shape)."""
    return torch.empty(0, dtype=torch.uint8, device=t.device).set_(t.untyped_storage())


class TrainStateOffload:
    """Host offload of a ``PolicyTrainer``'s model (megatron DDP) and optimizer state; see the module docstring."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer
        self.entries: list[_Entry] | None = None  # set while offloaded
        self.host: dict[int, torch.Tensor] = {}  # entry index -> host bytes, reused across cycles
        self.cycles = 0
        model.module.register_forward_pre_hook(self._check_resident)

    def _check_resident(self, module, args):
        if self.offloaded:
            raise RuntimeError("the policy was used while its state is offloaded (--offload-train): onload() first")

    # ------------------------------------------------------------------ what the trainer holds
    def _walk(self):
        """(tensor, category, key) for every tensor of the trainer's state, views included (deduplicated later)."""
        params = list(self.model.module.parameters())
        for p in params:
            yield p.data, "params", "params"
        for buffer in list(getattr(self.model, "buffers", [])) + list(
            getattr(self.model, "expert_parallel_buffers", [])
        ):
            if buffer.param_data is not None:
                yield buffer.param_data, "params", "params"
            yield buffer.grad_data, "grads", "grads"
        for p in params:
            if getattr(p, "main_grad", None) is not None:
                yield p.main_grad, "grads", "grads"
            if p.grad is not None:
                yield p.grad, "grads", "grads"
        for _, inner in _inner_optimizers(self.optimizer):
            for group in inner.param_groups:
                for q in group["params"]:
                    yield q.data, "main_params", "main_params"  # the fp32 copies (a model param itself in fp32)
                    if q.grad is not None:
                        yield q.grad, "grads", "grads"
            for state in inner.state.values():
                for key, value in state.items():
                    if torch.is_tensor(value):
                        yield value, "optimizer_state", key

    def _collect(self) -> list[_Entry]:
        """One entry per distinct device storage, in the category that reached it first (params before grads
        before main params before optimizer state). Only storages on the trainer's devices (torch's Adam keeps
        ``step`` on the host with CUDA)."""
        params = list(self.model.module.parameters())
        for p in params:  # a storage once shared with numpy (the weights digest hashes bytes) cannot be resized
            if not p.untyped_storage().resizable() and p.untyped_storage().nbytes() == p.numel() * p.element_size():
                p.data = p.data.clone()  # a parameter's own storage: a fresh copy, same values, same Parameter
        devices = {p.device for p in params}
        seen, out = set(), []
        for t, category, key in self._walk():
            storage = t.untyped_storage()
            if t.device not in devices or storage.nbytes() == 0:
                continue
            ident = (t.device, storage.data_ptr())
            if ident in seen:
                continue
            seen.add(ident)
            if not storage.resizable():
                raise RuntimeError(
                    f"--offload-train: a {category} tensor {tuple(t.shape)} has a storage that cannot be freed"
                )
            out.append(_Entry(t, category, key, storage.nbytes(), keep=category != "grads"))
        return out

    # ------------------------------------------------------------------ the cycle
    @property
    def offloaded(self) -> bool:
        return self.entries is not None

    def offload(self) -> None:
        """Copy the state to host and free its device storages (a no-op when already offloaded)."""
        if self.offloaded:
            return
        entries = self._collect()
        cuda = any(e.tensor.is_cuda for e in entries)
        for i, e in enumerate(entries):
            if not e.keep:
                continue
            host = self.host.get(i)
            if host is None or host.numel() != e.nbytes:
                host = self.host[i] = torch.empty(e.nbytes, dtype=torch.uint8, pin_memory=e.tensor.is_cuda)
            host.copy_(_byte_view(e.tensor), non_blocking=cuda)
        if cuda:
            torch.cuda.synchronize()
        for e in entries:
            e.tensor.untyped_storage().resize_(0)
        for i in [i for i in self.host if i >= len(entries) or not entries[i].keep]:
            del self.host[i]
        if cuda:
            torch.cuda.empty_cache()  # hand the freed blocks back to the driver, so engines can take them
        self.entries = entries

    def onload(self) -> None:
        """Restore every storage (kept ones from host, gradient buffers zeroed); a no-op when resident."""
        if not self.offloaded:
            return
        entries, cuda = self.entries, False
        for i, e in enumerate(entries):
            e.tensor.untyped_storage().resize_(e.nbytes)
            view = _byte_view(e.tensor)
            cuda = cuda or e.tensor.is_cuda
            if e.keep:
                view.copy_(self.host[i], non_blocking=e.tensor.is_cuda)
            else:
                view.zero_()
        if cuda:
            torch.cuda.synchronize()
        self.entries = None
        self.cycles += 1

    @contextmanager
    def resident(self):
        """The state on its devices for this block; offloaded again afterwards if it was offloaded before."""
        was = self.offloaded
        self.onload()
        try:
            yield
        finally:
            if was:
                self.offload()

    # ------------------------------------------------------------------ accounting
    def device_bytes(self) -> dict[str, int]:
        """Bytes the trainer's state holds on its devices now, by category (0 everywhere while offloaded)."""
        entries = self.entries if self.offloaded else self._collect()
        out = dict.fromkeys(CATEGORIES, 0)
        for e in entries:
            out[e.category] += e.tensor.untyped_storage().nbytes()
        return out

    def host_bytes(self) -> dict[str, int]:
        """Bytes of host copies held now, by category and by optimizer-state name (``optimizer_state.exp_avg``)."""
        out = dict.fromkeys(CATEGORIES, 0)
        if self.offloaded:
            for i, e in enumerate(self.entries):
                if e.keep:
                    n = self.host[i].numel()
                    out[e.category] += n
                    if e.category == "optimizer_state":
                        out[f"optimizer_state.{e.key}"] = out.get(f"optimizer_state.{e.key}", 0) + n
        return out
