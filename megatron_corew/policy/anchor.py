"""The anchor: a frozen fp32 copy of the policy with the policy's sharding -- the KL reference (the initial
policy) or Co-rewarding-II's EMA teacher -- optionally kept in host memory between its uses.

fp32 all through: EMA steps of alpha = 1e-5 vanish in bf16, so the copy never inherits the policy's bf16 / fp8
flags (with them, attention would cast fp32 probabilities to bf16 and pipeline stages would send bf16 buffers).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.distributed as dist

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
    def ema_update(self, policy_module, alpha: float, optimizer=None) -> None:
        """theta_anchor <- alpha * theta_policy + (1 - alpha) * theta_anchor, shard by shard, in fp32.

        theta_policy is the optimizer's fp32 main copy where it keeps one (``--bf16``), not the rounded bf16
        weights the forward pass uses: the reference averages fp32 weights."""
        with self.resident(modify=True):
            anchor = dict(self.module.named_parameters())
            for name, source in ema_sources(policy_module, optimizer):
                anchor[name].mul_(1.0 - alpha).add_(source, alpha=alpha)


def _main_params(optimizer):
    """The fp32 main copies of the low-precision model parameters in megatron's mixed-precision optimizer
    (chained or not): ({id(param): (fp32 tensor, (start, end) flat slice or None when whole)}, the distributed
    optimizer's group or None). A distributed optimizer holds only this rank's slice of each parameter."""
    found, group = {}, None
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]) if optimizer is not None else []:
        if hasattr(opt, "shard_fp32_from_float16_groups"):
            group = opt.data_parallel_group
            for models, shards in zip(opt.model_float16_groups, opt.shard_fp32_from_float16_groups):
                for param, shard in zip(models, shards):
                    rng = opt._get_model_param_range_map(param)["param"]
                    found[id(param)] = (shard, (rng.start, rng.end))
        elif hasattr(opt, "fp32_from_float16_groups"):
            for models, mains in zip(opt.float16_groups, opt.fp32_from_float16_groups):
                for param, main in zip(models, mains):
                    found[id(param)] = (main, None)
    return found, group


def ema_sources(policy_module, optimizer=None):
    """(name, fp32 tensor) for each policy parameter: an fp32 parameter itself (it is the main copy), else the
    optimizer's fp32 main copy; under the distributed optimizer the slices are summed over its group one
    parameter at a time (every rank walks the same parameters in the same order)."""
    mains, group = _main_params(optimizer)
    for name, param in policy_module.named_parameters():
        entry = mains.get(id(param))
        if param.dtype == torch.float32 or (entry is None and group is None):
            yield name, param.detach().float()
        elif group is None:
            yield name, entry[0].detach()
        else:
            full = torch.zeros(param.numel(), dtype=torch.float32, device=param.device)
            if entry is not None:  # this rank's slice; ranks owning none of the parameter add zeros
                full[entry[1][0] : entry[1][1]] = entry[0].detach().view(-1)
            dist.all_reduce(full, group=group)
            yield name, full.view(param.shape)
