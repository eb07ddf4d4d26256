"""The anchor: a frozen fp32 copy of the policy with the policy's sharding -- the KL reference (the initial
policy) or Co-rewarding-II's EMA teacher -- optionally kept in host memory between its uses.

fp32 all through: EMA steps of alpha = 1e-5 vanish in bf16, so the copy never inherits the policy's bf16 / fp8
flags (with them, attention would cast fp32 probabilities to bf16 and pipeline stages would send bf16 buffers).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch

from megatron_corew.policy import model_builder
from megatron_corew.policy.offload import HostOffload, device_bytes
from megatron_corew.policy.weights import copy_weights


class Anchor:
    def __init__(
        self, policy_module, policy_config, model_args, tp: int, pre: bool, post: bool, cpu_offload: bool = False
    ):
        cfg = copy.copy(policy_config)
        cfg.finalize_model_grads_func = None
        cfg.no_sync_func = None
        cfg.bf16 = cfg.fp16 = False
        cfg.fp8 = None
        cfg.params_dtype = cfg.pipeline_dtype = torch.float32
        self.module = model_builder.build_gpt_model(model_args, cfg, tp, pre, post)
        self.module.float()
        copy_weights(policy_module, self.module)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._offload = HostOffload(self.module) if cpu_offload else None

    @contextmanager
    def resident(self, modify: bool = False):
        """The anchor's weights on their devices for this block (always, without host offload)."""
        if self._offload is None:
            yield self.module
        else:
            with self._offload.resident(modify=modify) as module:
                yield module

    @property
    def device_bytes(self) -> int:
        return device_bytes(self.module.parameters())

    @torch.no_grad()
    def ema_update(self, policy_module, alpha: float) -> None:
        """theta_anchor <- alpha * theta_policy + (1 - alpha) * theta_anchor, shard by shard, in fp32."""
        policy = dict(policy_module.named_parameters())
        with self.resident(modify=True):
            for name, p in self.module.named_parameters():
                p.mul_(1.0 - alpha).add_(policy[name].detach().float(), alpha=alpha)
