"""The Megatron policy: log-prob passes and the GRPO optimizer step over TP/PP/DP.

Every rank holds the whole step's samples (they are small: token ids); each data-parallel rank
takes its share, cuts it into padded micro-batches, and runs megatron's pipeline schedule.
The loss is a sum of per-token terms pre-multiplied by a *global* weight (1 / response tokens of
the whole batch, per view), so summing micro-batch losses reproduces the full-batch loss for any
TP / PP / DP / micro-batch layout.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.distributed as dist

from megatron_corew.utils import faults

from megatron_corew.algo import grpo

from megatron_corew.policy import model_builder

from megatron_corew.policy import parallel
from megatron_corew.policy.vocab_parallel import VocabParallelStats
from megatron_corew.policy.weights import copy_weights, load_hf_weights


@dataclass
class TrainSample:
    """One rollout as the trainer sees it. ``view`` separates Co-rewarding-I's two question views
    (each normalised to its own token mean)."""

    prompt_ids: list[int]
    response_ids: list[int]
    advantage: float = 0.0
    view: int = 0
    rollout_logprobs: list[float] | None = None

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass
class TrainerConfig:
    tp: int = 1
    pp: int = 1
    micro_batch_size: int = 8
    max_tokens_per_micro_batch: int | None = None
    lr: float = 3e-6
    min_lr: float = 0.0
    lr_warmup_fraction: float = 0.1
    train_iters: int = 100
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = 3.0
    kl_coef: float = 0.0
    kl_estimator: str = "low_var_kl"
    entropy_coef: float = 0.0
    temperature: float = 1.0
    bf16: bool = False
    use_distributed_optimizer: bool = False
    recompute: str | None = None
    sequence_parallel: bool = False
    fp8: str | None = None
    fp8_recipe: str | None = None
    overlap_grad_reduce: bool = False
    overlap_param_gather: bool = False
    attention_backend: str = "auto"  # megatron AttnBackend name: auto, flash, fused, unfused, local
    need_anchor: bool = True  # build the frozen reference / teacher copy
    anchor_cpu_offload: bool = False
    extra_config: dict = field(default_factory=dict)


class PolicyTrainer:
    def __init__(self, model_args, cfg: TrainerConfig, hf_source=None):
        from megatron.core import parallel_state as ps
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
        from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

        self.args, self.cfg, self.ps = model_args, cfg, ps
        extra = dict(cfg.extra_config)
        if cfg.attention_backend != "auto":
            from megatron.core.transformer.enums import AttnBackend

            extra["attention_backend"] = AttnBackend[cfg.attention_backend]
        if cfg.pp > 1:
            # micro-batches are padded per batch, so stages exchange shapes first; megatron checks the
            # MoE dispatcher even for dense models and only alltoall accepts variable lengths
            extra.setdefault("variable_seq_lengths", True)
            extra.setdefault("moe_token_dispatcher_type", "alltoall")
        self.config = model_builder.build_transformer_config(
            model_args, cfg.tp, cfg.pp, bf16=cfg.bf16, recompute=cfg.recompute,
            sequence_parallel=cfg.sequence_parallel, fp8=cfg.fp8, fp8_recipe=cfg.fp8_recipe, **extra)
        self.pre, self.post = ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage()
        module = model_builder.build_gpt_model(model_args, self.config, cfg.tp, self.pre, self.post)
        if hf_source is not False:  # False: keep megatron's random init (benchmarks of real shapes)
            load_hf_weights(module, model_args, hf_source if hf_source is not None else model_args.model_dir)
        ddp_cfg = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, overlap_grad_reduce=cfg.overlap_grad_reduce,
            overlap_param_gather=cfg.overlap_param_gather and cfg.use_distributed_optimizer,
            use_distributed_optimizer=cfg.use_distributed_optimizer)
        self.model = DistributedDataParallel(config=self.config, ddp_config=ddp_cfg, module=module)
        from megatron.core.distributed import finalize_model_grads

        # Our loss is already globally normalised: reduce grads over DP/TP/PP, never rescale them.
        self.config.finalize_model_grads_func = lambda models, num_tokens=None, **kw: finalize_model_grads(models, None, **kw)
        self.config.no_sync_func = self.model.no_sync
        self.optimizer = get_megatron_optimizer(OptimizerConfig(
            optimizer="adam", lr=cfg.lr, min_lr=cfg.min_lr, weight_decay=cfg.weight_decay,
            adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, adam_eps=cfg.adam_eps,
            clip_grad=cfg.clip_grad, bf16=cfg.bf16, params_dtype=self.config.params_dtype,
            use_distributed_optimizer=cfg.use_distributed_optimizer), [self.model])
        warmup = int(cfg.lr_warmup_fraction * cfg.train_iters)
        self.scheduler = OptimizerParamScheduler(
            self.optimizer, init_lr=0.0 if warmup else cfg.lr, max_lr=cfg.lr, min_lr=cfg.min_lr,
            lr_warmup_steps=warmup, lr_decay_steps=max(cfg.train_iters, warmup + 1), lr_decay_style="cosine",
            start_wd=cfg.weight_decay, end_wd=cfg.weight_decay, wd_incr_steps=1, wd_incr_style="constant")
        self.anchor = None
        self._anchor_offload = None
        if cfg.need_anchor:
            self.anchor = self._build_frozen_copy()
            if cfg.anchor_cpu_offload:
                from megatron_corew.policy.offload import HostOffload

                self._anchor_offload = HostOffload(self.anchor)
        from megatron.core.pipeline_parallel import get_forward_backward_func

        self._fb = get_forward_backward_func()
        self.step_count = 0

    # ------------------------------------------------------------------ models
    def _build_frozen_copy(self):
        """An fp32 copy with the policy's sharding: the KL anchor (reference or EMA teacher)."""
        import copy

        import torch

        cfg = copy.copy(self.config)
        cfg.finalize_model_grads_func = None
        cfg.no_sync_func = None
        # fp32 all through (EMA steps of 1e-5 vanish in bf16): with the policy's bf16 flags the attention would
        # cast its fp32 probabilities to bf16 and meet fp32 values, and PP would send bf16 buffers
        cfg.bf16 = cfg.fp16 = False
        cfg.fp8 = None
        cfg.params_dtype = cfg.pipeline_dtype = torch.float32
        frozen = model_builder.build_gpt_model(self.args, cfg, self.cfg.tp, self.pre, self.post)
        frozen.float()
        copy_weights(self.model.module, frozen)
        for p in frozen.parameters():
            p.requires_grad_(False)
        return frozen

    @property
    def module(self):
        return self.model.module

    # ------------------------------------------------------------------ batching
    def _local_microbatches(self, samples: list[TrainSample], loss_scale: float = 1.0) -> list[dict]:
        """This DP rank's micro-batches: samples sorted by length, dealt round-robin to DP ranks,
        then cut by sequence count or token budget and right-padded."""
        ps = self.ps
        dp, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
        tokens_per_view: dict[int, int] = {}
        for s in samples:
            tokens_per_view[s.view] = tokens_per_view.get(s.view, 0) + len(s.response_ids)
        order = sorted(range(len(samples)), key=lambda i: (samples[i].length, i))
        mine = order[dp_rank::dp]
        groups, current = [], []
        for i in mine:
            candidate = current + [i]
            too_many = len(candidate) > self.cfg.micro_batch_size
            budget = self.cfg.max_tokens_per_micro_batch
            too_long = budget is not None and len(candidate) * max(samples[j].length for j in candidate) > budget
            if current and (too_many or too_long):
                groups.append(current)
                candidate = [i]
            current = candidate
        if current:
            groups.append(current)
        return [self._pad_microbatch([samples[i] for i in g], g, tokens_per_view, loss_scale) for g in groups]

    def _pad_microbatch(self, batch, indices, tokens_per_view, loss_scale) -> dict:
        width = max(s.length for s in batch)
        b = len(batch)
        tokens = torch.zeros((b, width), dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.float32)
        adv = torch.zeros((b, width), dtype=torch.float32)
        weight = torch.zeros((b, width), dtype=torch.float32)
        rollout_logp = torch.zeros((b, width), dtype=torch.float32)
        has_rollout_logp = all(s.rollout_logprobs is not None for s in batch)
        for r, s in enumerate(batch):
            seq = s.prompt_ids + s.response_ids
            tokens[r, :len(seq)] = torch.tensor(seq)
            # position t predicts token t+1: response tokens are predicted from len(prompt)-1 on
            start, end = len(s.prompt_ids) - 1, len(seq) - 1
            mask[r, start:end] = 1.0
            adv[r, start:end] = s.advantage
            weight[r, start:end] = loss_scale / max(tokens_per_view[s.view], 1)
            if has_rollout_logp:
                rollout_logp[r, start:end] = torch.tensor(s.rollout_logprobs, dtype=torch.float32)
        labels = torch.zeros_like(tokens)
        labels[:, :-1] = tokens[:, 1:]
        dev = parallel.device()
        return {"tokens": tokens.to(dev), "labels": labels.to(dev), "mask": mask.to(dev), "adv": adv.to(dev),
                "weight": weight.to(dev), "rollout_logp": rollout_logp.to(dev) if has_rollout_logp else None,
                "positions": torch.arange(width, device=dev).unsqueeze(0).expand(b, -1),
                "indices": indices, "lengths": [len(s.response_ids) for s in batch],
                "prompt_lengths": [len(s.prompt_ids) for s in batch]}

    def _run(self, model, microbatches, loss_fn, forward_only: bool):
        def forward_step(data_iterator, model_chunk):
            mb = next(data_iterator)
            output = model_chunk(mb["tokens"], mb["positions"], None)
            return output, partial(loss_fn, mb)

        width = max(mb["tokens"].shape[1] for mb in microbatches)
        return self._fb(forward_step_func=forward_step, data_iterator=iter(microbatches), model=[model],
                        num_microbatches=len(microbatches), seq_length=width,
                        micro_batch_size=microbatches[0]["tokens"].shape[0], forward_only=forward_only)

    def _stats(self, logits):
        return VocabParallelStats(logits, self.args.vocab_size, self.cfg.temperature)

    @contextmanager
    def anchor_resident(self, modify: bool = False):
        """The anchor's weights on their devices for this block (always, without --anchor-cpu-offload)."""
        if self._anchor_offload is None:
            yield self.anchor
        else:
            with self._anchor_offload.resident(modify=modify) as module:
                yield module

    @property
    def anchor_device_bytes(self) -> int:
        from megatron_corew.policy.offload import device_bytes

        return device_bytes(self.anchor.parameters()) if self.anchor is not None else 0

    # ------------------------------------------------------------------ passes
    @torch.no_grad()
    def sequence_stats(self, samples: list[TrainSample], which: str = "policy", want=("logp",),
                       microbatches=None) -> dict[int, dict]:
        """Forward-only pass; returns {sample index: {"logp": tensor[resp], "entropy": float (mean),
        "self_certainty": float (mean)}} on every rank (small: one row per response token)."""
        if which != "policy":
            with self.anchor_resident():
                return self._sequence_stats(self.anchor, which, samples, want, microbatches)
        return self._sequence_stats(self.model, which, samples, want, microbatches)

    def _sequence_stats(self, model, which, samples, want, microbatches):
        mbs = microbatches if microbatches is not None else self._local_microbatches(samples)
        found: dict[int, dict] = {}

        def loss_fn(mb, logits):
            stats = self._stats(logits)
            logp = stats.token_logprobs(mb["labels"])
            ent = stats.entropy() if "entropy" in want else None
            sc = stats.self_certainty() if "self_certainty" in want else None
            for r, idx in enumerate(mb["indices"]):
                start = mb["prompt_lengths"][r] - 1
                n = mb["lengths"][r]
                row = {"logp": logp[r, start:start + n].float().cpu()}
                if ent is not None:
                    row["entropy"] = float(ent[r, start:start + n].mean()) if n else 0.0
                if sc is not None:
                    row["self_certainty"] = float(sc[r, start:start + n].mean()) if n else 0.0
                found[idx] = row
            if "store" in want:
                mb[f"{which}_logp"] = logp.detach()
            return logp.new_zeros(()), torch.tensor(1, dtype=torch.int), {}

        self._run(model, mbs, loss_fn, forward_only=True)
        return self._share(found)

    def _share(self, local: dict) -> dict:
        """Union of the per-sample dicts held by the last-stage, TP-rank-0 ranks, on every rank."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return local
        contributes = self.post and self.ps.get_tensor_model_parallel_rank() == 0
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local if contributes else {})
        merged: dict = {}
        for part in gathered:
            merged.update(part)
        return merged

    def train_step(self, samples: list[TrainSample], recompute_old_logp: bool = False,
                   loss_scale: float = 1.0) -> dict:
        """One GRPO optimizer step over all samples. Returns metrics (identical on every rank).

        ``loss_scale`` multiplies every token weight (0.5 averages Co-rewarding-I's two views)."""
        cfg = self.cfg
        mbs = self._local_microbatches(samples, loss_scale)
        use_kl = cfg.kl_coef > 0 and self.anchor is not None
        if use_kl:
            self.sequence_stats(samples, "anchor", want=("logp", "store"), microbatches=mbs)
        if recompute_old_logp:
            self.sequence_stats(samples, "policy", want=("logp", "store"), microbatches=mbs)
        # pg, kl, entropy, clipfrac, tokens, loss, |logp - old|, |logp - rollout logp|, tokens with rollout logp
        sums = torch.zeros(9, dtype=torch.float64)

        def loss_fn(mb, logits):
            stats = self._stats(logits)
            logp = stats.token_logprobs(mb["labels"])
            # One update per rollout batch: the old policy IS the current one, so ratio == 1 and
            # the clipped objective's gradient is the policy gradient (no extra forward pass).
            old = mb["policy_logp"] if recompute_old_logp else logp.detach()
            pg, clipped = grpo.ppo_clip_losses(logp, old, mb["adv"], cfg.clip_low, cfg.clip_high, cfg.dual_clip)
            per_token = pg
            w = mb["weight"] * mb["mask"]
            kl = grpo.kl_penalty(logp, mb["anchor_logp"], cfg.kl_estimator) if use_kl else None
            if kl is not None:
                per_token = per_token + cfg.kl_coef * kl
            with torch.set_grad_enabled(cfg.entropy_coef != 0):
                ent = stats.entropy()  # always logged: entropy collapse is a failure signature
            if cfg.entropy_coef:
                per_token = per_token - cfg.entropy_coef * ent
            loss = (per_token * w).sum()
            if faults.active("nan_loss", self.step_count + 1):
                loss = loss * float("nan")
            with torch.no_grad():
                m = mb["mask"]
                sums[0] += float((pg * w).sum())
                sums[1] += float((kl * w).sum()) if kl is not None else 0.0
                sums[2] += float((ent * m).sum())
                sums[3] += float((clipped.float() * m).sum())
                sums[4] += float(m.sum())
                sums[5] += float(loss)
                sums[6] += float(((logp - old).abs() * m).sum())
                if mb["rollout_logp"] is not None:
                    sums[7] += float(((logp - mb["rollout_logp"]).abs() * m).sum())
                    sums[8] += float(m.sum())
            return loss, m.sum().to(torch.int), {}

        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        self._run(self.model, mbs, loss_fn, forward_only=False)
        if self._grads_finite(sums[5]):
            ok, grad_norm, _ = self.optimizer.step()
        else:  # never let a NaN/Inf reach the weights or the Adam moments
            ok, grad_norm = False, float("nan")
            self.model.zero_grad_buffer()
            self.optimizer.zero_grad()
        if ok:
            self.scheduler.step(1)
        self.step_count += 1
        if not (self.post and self.ps.get_tensor_model_parallel_rank() == 0):
            sums.zero_()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(sums)
        tokens = max(sums[4].item(), 1.0)
        return {"loss": sums[5].item(), "pg_loss": sums[0].item(), "kl": sums[1].item(),
                "entropy": sums[2].item() / tokens, "pg_clipfrac": sums[3].item() / tokens,
                "grad_norm": float(grad_norm) if grad_norm is not None else math.nan,
                "update_ok": bool(ok), "lr": self.optimizer.param_groups[0]["lr"], "response_tokens": tokens,
                "rollout_logprob_abs_diff": sums[7].item() / sums[8].item() if sums[8] > 0 else math.nan}

    def _grads_finite(self, local_loss) -> bool:
        """True when the loss and every gradient are finite on every rank (fp32 has no grad scaler
        to catch them, and megatron would step with NaN grads)."""
        bad = torch.tensor([0.0 if bool(torch.isfinite(torch.as_tensor(local_loss))) else 1.0])
        for buffer in self.model.buffers:
            if not bool(torch.isfinite(buffer.grad_data).all()):
                bad[0] = 1.0
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        return bad.item() == 0.0

    # ------------------------------------------------------------------ anchor
    @torch.no_grad()
    def ema_update_anchor(self, alpha: float) -> None:
        """theta_anchor <- alpha * theta_policy + (1 - alpha) * theta_anchor, shard by shard, in fp32."""
        policy = dict(self.model.module.named_parameters())
        with self.anchor_resident(modify=True):
            for name, p in self.anchor.named_parameters():
                p.mul_(1.0 - alpha).add_(policy[name].detach().float(), alpha=alpha)
