"""Keep a frozen model (the KL reference or the fp32 EMA teacher) in host memory between uses.

The anchor is a full fp32 copy of the policy: for an 8B model that is 32 GB of accelerator memory used only for
one forward pass (and one EMA update) per step. With offload its parameters live in (pinned) CPU tensors and the
device copies are freed; ``resident()`` brings them back for the duration of a ``with`` block. Blocks nest.
A block that changes the weights (EMA update, checkpoint load) says so with ``modify=True`` and the host copy is
refreshed when the block ends; a read-only block just frees the device copies again.

While released, every parameter is an empty tensor on its device, so a use outside ``resident()`` fails loudly
(shape errors) instead of silently computing with stale weights.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["HostOffload", "device_bytes"]


def device_bytes(params) -> int:
    """Bytes these parameters hold on their devices now (0 for released ones)."""
    return sum(p.data.numel() * p.data.element_size() for p in params)


class HostOffload:
    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.params = list(module.parameters())
        pin = torch.cuda.is_available() and any(p.is_cuda for p in self.params)
        # a copy even on a CPU-only machine, so the mechanism (free, restore, write back) is the one the GPU runs
        self.host = [
            p.data.detach().to("cpu", copy=True).pin_memory() if pin else p.data.detach().clone() for p in self.params
        ]
        self.devices = [p.device for p in self.params]
        self.depth = 0
        self.dirty = False
        self._release()

    @property
    def device_bytes(self) -> int:
        return device_bytes(self.params)

    @property
    def host_bytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.host)

    def _fetch(self) -> None:
        for p, h, dev in zip(self.params, self.host, self.devices):
            p.data = h.to(dev, non_blocking=True) if dev.type != "cpu" else h.clone()
        if any(d.type == "cuda" for d in self.devices):
            torch.cuda.synchronize()

    def _release(self) -> None:
        if self.dirty:
            for p, h in zip(self.params, self.host):
                h.copy_(p.data, non_blocking=False)
            self.dirty = False
        for p, dev in zip(self.params, self.devices):
            p.data = torch.empty(0, dtype=p.dtype, device=dev)

    @contextmanager
    def resident(self, modify: bool = False):
        if self.depth == 0:
            self._fetch()
        self.depth += 1
        try:
            yield self.module
        finally:
            self.depth -= 1
            self.dirty = self.dirty or modify
            if self.depth == 0:
                self._release()
