"""The Megatron policy: log-prob passes and the GRPO optimizer step over TP/PP/DP.

Every rank holds the whole step's samples (they are small: token ids); each data-parallel rank
takes its share, cuts it into padded or packed micro-batches (policy/packing.py), and runs megatron's pipeline schedule.
The loss is a sum of per-token terms pre-multiplied by a *global* weight (1 / response tokens of
the whole batch, per view), so summing micro-batch losses reproduces the full-batch loss for any
TP / PP / DP / micro-batch layout.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial

import torch
import torch.distributed as dist

from megatron_corew.algo import grpo, importance
from megatron_corew.policy import model_builder, packing, parallel, vocab_parallel
from megatron_corew.policy.config import TrainerConfig
from megatron_corew.policy.lr_schedule import lr_scheduler
from megatron_corew.policy.vocab_parallel import VocabParallelStats
from megatron_corew.policy.weights import load_hf_weights
from megatron_corew.utils import faults


@dataclass
class TrainSample:
    """One rollout as the trainer sees it. ``view`` separates Co-rewarding-I's two question views
    (each normalised to its own token mean)."""

    prompt_ids: list[int]
    response_ids: list[int]
    advantage: float = 0.0
    view: int = 0
    rollout_logprobs: list[float] | None = None
    loss_mask: float = 1.0  # 0: no part in the loss (--mask-truncated-responses)
    old_logprobs: object = None  # pi_old while several optimizer steps train on it (policy/multistep.py)

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


class _StepSums:
    """The step's float64 sums of loss terms and token counts, by name, reduced over ranks in one all-reduce."""

    NAMES = (
        "pg_loss",
        "kl",
        "entropy",
        "clipped_tokens",
        "tokens",
        "loss_tokens",
        "loss",
        "rollout_logp_abs_diff",
        "rollout_tokens",
        "adv_abs",
    )

    def __init__(self):
        self.values = torch.zeros(len(self.NAMES), dtype=torch.float64)

    def add(self, name: str, value) -> None:
        self.values[self.NAMES.index(name)] += float(value)

    def __getitem__(self, name: str) -> float:
        return self.values[self.NAMES.index(name)].item()

    def all_reduce(self, contributes: bool) -> None:
        if not contributes:
            self.values.zero_()
        parallel.all_reduce_host(self.values)


class PolicyTrainer:
    def __init__(self, model_args, cfg: TrainerConfig, hf_source=None):
        from megatron.core import parallel_state as ps
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

        self.args, self.cfg, self.ps = model_args, cfg, ps
        if cfg.logits_chunk_tokens is None:  # large vocabularies: chunked, never [tokens, vocab] fp32 at once
            cfg.logits_chunk_tokens = vocab_parallel.default_chunk_tokens(model_args.vocab_size, cfg.tp)
        extra = {}
        if cfg.attention_backend != "auto":
            from megatron.core.transformer.enums import AttnBackend

            extra["attention_backend"] = AttnBackend[cfg.attention_backend]
        if cfg.pp > 1:
            # micro-batches are padded per batch, so stages exchange shapes first; megatron checks the
            # MoE dispatcher even for dense models and only alltoall accepts variable lengths
            extra.setdefault("variable_seq_lengths", True)
            extra.setdefault("moe_token_dispatcher_type", "alltoall")
        self.config = model_builder.build_transformer_config(
            model_args,
            cfg.tp,
            cfg.pp,
            bf16=cfg.bf16,
            recompute=cfg.recompute,
            sequence_parallel=cfg.sequence_parallel,
            fp8=cfg.fp8,
            fp8_recipe=cfg.fp8_recipe,
            **extra,
        )
        self.pre, self.post = ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage()
        module = model_builder.build_gpt_model(model_args, self.config, cfg.tp, self.pre, self.post)
        if hf_source is not False:  # False: keep megatron's random init (benchmarks of real shapes)
            load_hf_weights(module, model_args, hf_source if hf_source is not None else model_args.model_dir)
        ddp_cfg = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=cfg.overlap_grad_reduce,
            overlap_param_gather=cfg.overlap_param_gather and cfg.use_distributed_optimizer,
            use_distributed_optimizer=cfg.use_distributed_optimizer,
        )
        self.model = DistributedDataParallel(config=self.config, ddp_config=ddp_cfg, module=module)
        from megatron.core.distributed import finalize_model_grads

        # Our loss is already globally normalised: reduce grads over DP/TP/PP, never rescale them.
        self.config.finalize_model_grads_func = lambda models, num_tokens=None, **kw: finalize_model_grads(
            models, None, **kw
        )
        self.config.no_sync_func = self.model.no_sync
        self.optimizer = get_megatron_optimizer(
            OptimizerConfig(
                optimizer="adam",
                lr=cfg.lr,
                min_lr=cfg.min_lr,
                weight_decay=cfg.weight_decay,
                adam_beta1=cfg.adam_beta1,
                adam_beta2=cfg.adam_beta2,
                adam_eps=cfg.adam_eps,
                clip_grad=cfg.clip_grad,
                bf16=cfg.bf16,
                params_dtype=self.config.params_dtype,
                use_distributed_optimizer=cfg.use_distributed_optimizer,
            ),
            [self.model],
            config_overrides={} if cfg.weight_decay_all_params else None,  # None: megatron's bias / norm skip
        )
        self.scheduler = lr_scheduler(self.optimizer, cfg)
        self.anchor_copy = None
        if cfg.need_anchor:
            from megatron_corew.policy.anchor import Anchor

            self.anchor_copy = Anchor(
                self.model.module,
                self.config,
                model_args,
                cfg.tp,
                self.pre,
                self.post,
                cpu_offload=cfg.anchor_cpu_offload,
            )
        if cfg.logits_chunk_tokens and self.post:  # the loss computes logits chunk by chunk from the hidden states
            model_builder.defer_output_layer(self.model.module)
            if self.anchor_copy is not None:
                model_builder.defer_output_layer(self.anchor_copy.module)
        from megatron.core.pipeline_parallel import get_forward_backward_func

        self._fb = get_forward_backward_func()
        self.step_count = 0

    # ------------------------------------------------------------------ models
    @property
    def anchor(self):
        """The frozen reference / EMA teacher module (None when no method or KL term needs one)."""
        return self.anchor_copy.module if self.anchor_copy is not None else None

    @property
    def module(self):
        return self.model.module

    # ------------------------------------------------------------------ batching
    def _local_microbatches(self, samples: list[TrainSample], loss_scale: float = 1.0) -> list[dict]:
        """This DP rank's micro-batches. Padded: samples sorted by length, dealt round-robin to DP ranks, cut by
        sequence count or token budget and right-padded. Packed: a token-balanced split over DP ranks and
        micro-batches (:mod:`packing`), each micro-batch one row of concatenated sequences."""
        ps, cfg = self.ps, self.cfg
        dp, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
        keep = [getattr(s, "loss_mask", 1.0) for s in samples]  # 0: masked out of the loss (truncated responses)
        weights = grpo.token_weights(
            [len(s.response_ids) if k else 0 for s, k in zip(samples, keep)],
            [s.view for s in samples],
            cfg.loss_agg_mode,
            cfg.loss_agg_micro_batch,
            loss_scale,
        )
        weights = [w * k for w, k in zip(weights, keep)]
        multiple = cfg.tp if cfg.sequence_parallel else 1  # sequence parallelism splits every row over TP ranks
        if cfg.micro_batch_layout == "packed":
            lengths = [s.length for s in samples]
            budget = cfg.max_tokens_per_gpu or cfg.micro_batch_size * max(lengths, default=1)
            groups = packing.balanced_microbatches(lengths, dp, budget)[dp_rank]
            return [packing.packed_microbatch([samples[i] for i in g], g, weights, multiple) for g in groups]
        order = sorted(range(len(samples)), key=lambda i: (samples[i].length, i))
        mine = order[dp_rank::dp]
        groups, current = [], []
        for i in mine:
            candidate = current + [i]
            too_many = len(candidate) > cfg.micro_batch_size
            budget = cfg.max_tokens_per_micro_batch
            too_long = budget is not None and len(candidate) * max(samples[j].length for j in candidate) > budget
            if current and (too_many or too_long):
                groups.append(current)
                candidate = [i]
            current = candidate
        if current or not groups:  # a rank with no sequence (fewer than DP ranks) runs one empty micro-batch
            groups.append(current)
        return [packing.padded_microbatch([samples[i] for i in g], g, weights, multiple) for g in groups]

    def _run(self, model, microbatches, loss_fn, forward_only: bool):
        def forward_step(data_iterator, model_chunk):
            mb = next(data_iterator)
            output = model_chunk(mb["tokens"], mb["positions"], None, packed_seq_params=mb["packed"])
            if self.cfg.logits_chunk_tokens and self.post:
                mb["output_weight"] = getattr(model_chunk, "module", model_chunk).output_layer.deferred_weight
            return output, partial(loss_fn, mb)

        width = max(mb["tokens"].shape[1] for mb in microbatches)
        return self._fb(
            forward_step_func=forward_step,
            data_iterator=iter(microbatches),
            model=[model],
            num_microbatches=len(microbatches),
            seq_length=width,
            micro_batch_size=microbatches[0]["tokens"].shape[0],
            forward_only=forward_only,
        )

    def _token_stats(self, mb, output, want, entropy_grad: bool = True) -> dict:
        """{"logp", and "entropy" / "self_certainty" if in ``want``}: [rows, width] fp32 (0 off the response) from
        the model output (logits, or with ``logits_chunk_tokens`` the output layer's input, chunked), computed on
        the response positions only."""
        chunk = self.cfg.logits_chunk_tokens
        shape, rows = mb["mask"].shape, mb["rows"]
        # only the response positions: prompt and padding rows of the logits are never read
        selected = output.reshape(-1, output.shape[-1]).index_select(0, rows)
        labels = mb["labels"].reshape(-1).index_select(0, rows)
        if chunk:
            res = vocab_parallel.chunked_stats(
                selected, mb["output_weight"], labels, self.args.vocab_size, self.cfg.temperature, chunk, want
            )
        else:
            stats = self._stats(selected)
            res = {"logp": stats.token_logprobs(labels)}
            if "entropy" in want:
                with torch.set_grad_enabled(torch.is_grad_enabled() and entropy_grad):
                    res["entropy"] = stats.entropy()
            if "self_certainty" in want:
                res["self_certainty"] = stats.self_certainty()
        full = mb["mask"].new_zeros(shape.numel())
        return {k: full.index_copy(0, rows, v).view(shape) for k, v in res.items() if k == "logp" or k in want}

    def _stats(self, logits):
        return VocabParallelStats(logits, self.args.vocab_size, self.cfg.temperature)

    @contextmanager
    def anchor_resident(self, modify: bool = False):
        """The anchor's weights on their devices for this block (always, without --anchor-cpu-offload)."""
        if self.anchor_copy is None:
            yield None
        else:
            with self.anchor_copy.resident(modify=modify) as module:
                yield module

    @property
    def anchor_device_bytes(self) -> int:
        return self.anchor_copy.device_bytes if self.anchor_copy is not None else 0

    # ------------------------------------------------------------------ passes
    @torch.no_grad()
    def sequence_stats(
        self, samples: list[TrainSample], which: str = "policy", want=("logp",), microbatches=None
    ) -> dict[int, dict]:
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
            out = self._token_stats(mb, logits, want)
            logp = out["logp"]
            flat = {k: v.reshape(-1) for k, v in out.items()}
            for r, idx in enumerate(mb["indices"]):
                start, n = mb["first"][r], mb["lengths"][r]
                row = {"logp": flat["logp"][start : start + n].float().cpu()}
                for name, values in flat.items():  # the per-response means of the statistics asked for
                    if name != "logp":
                        row[name] = float(values[start : start + n].mean()) if n else 0.0
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

    def train_step(self, samples, loss_scale: float = 1.0, step_scheduler: bool = True) -> dict:
        """One GRPO optimizer step over all samples (``TrainSample`` or any record with the same fields, such as
        ``records.Rollout``). Returns metrics, identical on every rank.

        ``loss_scale`` multiplies every token weight (0.5 averages Co-rewarding-I's two views); samples carrying
        ``old_logprobs`` (policy/multistep.py) are PPO-clipped against them, others against the current policy."""
        cfg = self.cfg
        mbs = self._local_microbatches(samples, loss_scale)
        use_kl = cfg.kl_coef > 0 and self.anchor is not None
        if use_kl:
            self.sequence_stats(samples, "anchor", want=("logp", "store"), microbatches=mbs)
        sums = _StepSums()
        is_corr = importance.ISCorrection(cfg.rollout_is, cfg.rollout_is_level, cfg.rollout_is_high, cfg.rollout_is_low)

        def loss_fn(mb, logits):
            out = self._token_stats(mb, logits, ("entropy",), entropy_grad=cfg.entropy_coef != 0)
            logp = out["logp"]
            mb["live"] = mb["mask"] * (mb["weight"] != 0)  # response tokens the loss keeps (not masked-out samples)
            # decoupled with one update per rollout batch: pi_old is the current policy, ratio == 1 and the clipped
            # objective's gradient is the policy gradient (no extra forward pass); x the detached IS weight
            pg, clipped = importance.policy_gradient_loss(
                logp, mb, cfg.off_policy_form, is_corr, cfg.clip_low, cfg.clip_high, cfg.dual_clip
            )
            per_token = pg
            w = mb["weight"] * mb["mask"]
            kl = grpo.kl_penalty(logp, mb["anchor_logp"], cfg.kl_estimator) if use_kl else None
            if kl is not None:
                per_token = per_token + cfg.kl_coef * kl
            # always logged: entropy collapse is a failure signature
            ent = out["entropy"] if cfg.entropy_coef else out["entropy"].detach()
            if cfg.entropy_coef:
                per_token = per_token - cfg.entropy_coef * ent
            loss = (per_token * w).sum()
            if faults.active("nan_loss", self.step_count + 1):
                loss = loss * float("nan")
            with torch.no_grad():
                m, live = mb["mask"], mb["live"]
                sums.add("pg_loss", (pg * w).sum())
                sums.add("adv_abs", (mb["adv"].abs() * (w != 0)).sum())  # 0: the step trains no policy gradient
                sums.add("kl", (kl * w).sum() if kl is not None else 0.0)
                sums.add("entropy", (ent * live).sum())
                sums.add("clipped_tokens", (clipped.float() * live).sum())
                sums.add("tokens", m.sum())
                sums.add("loss_tokens", live.sum())
                sums.add("loss", loss)
                if mb["rollout_logp"] is not None:
                    sums.add("rollout_logp_abs_diff", ((logp - mb["rollout_logp"]).abs() * m).sum())
                    sums.add("rollout_tokens", m.sum())
            return loss, m.sum().to(torch.int), {}

        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        self._run(self.model, mbs, loss_fn, forward_only=False)
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step applies (the scheduler moves on below)
        if self._grads_finite(sums["loss"]):
            ok, grad_norm, _ = self.optimizer.step()
            self._finish_param_gather()
        else:  # never let a NaN/Inf reach the weights or the Adam moments
            ok, grad_norm = False, float("nan")
            self.model.zero_grad_buffer()
            self.optimizer.zero_grad()
        if ok and step_scheduler:
            self.scheduler.step(1)
        self.step_count += 1
        # the last pipeline stage's TP-rank-0 ranks saw the logits; sum their parts over data parallelism
        contributes = self.post and self.ps.get_tensor_model_parallel_rank() == 0
        sums.all_reduce(contributes=contributes)
        tokens, live = max(sums["tokens"], 1.0), max(sums["loss_tokens"], 1.0)
        return {
            "loss": sums["loss"],
            "pg_loss": sums["pg_loss"],
            "kl": sums["kl"],
            "entropy": sums["entropy"] / live,  # means over the tokens the loss keeps
            "pg_clipfrac": sums["clipped_tokens"] / live,
            "adv_abs_mean": sums["adv_abs"] / live,
            "grad_norm": float(grad_norm) if grad_norm is not None else math.nan,
            "update_ok": bool(ok),
            "lr": lr,
            "response_tokens": tokens,
            "loss_tokens": sums["loss_tokens"],
            "rollout_logprob_abs_diff": (
                sums["rollout_logp_abs_diff"] / sums["rollout_tokens"] if sums["rollout_tokens"] > 0 else math.nan
            ),
            **is_corr.metrics(contributes),
        }

    def _finish_param_gather(self) -> None:
        """With --overlap-param-gather the distributed optimizer leaves the all-gather of the updated parameters
        to the next forward pass; the weight export and the EMA teacher read them before that, so gather now."""
        if self.model.ddp_config.overlap_param_gather:
            self.model.start_param_sync(force_sync=True)

    def _grads_finite(self, local_loss) -> bool:
        """True when the loss and every gradient are finite on every rank (fp32 has no grad scaler
        to catch them, and megatron would step with NaN grads)."""
        bad = torch.tensor([0.0 if bool(torch.isfinite(torch.as_tensor(local_loss))) else 1.0])
        for buffer in self.model.buffers:
            if not bool(torch.isfinite(buffer.grad_data).all()):
                bad[0] = 1.0
        parallel.all_reduce_host(bad, op=dist.ReduceOp.MAX)
        return bad.item() == 0.0

    # ------------------------------------------------------------------ anchor
    def ema_update_anchor(self, alpha: float) -> None:
        """theta_anchor <- alpha * theta_policy + (1 - alpha) * theta_anchor (Co-rewarding-II's teacher); under
        --bf16 theta_policy is the optimizer's fp32 main copy."""
        self.anchor_copy.ema_update(self.model.module, alpha, self.optimizer)

    # ------------------------------------------------------------------ weights and checkpoints
    @staticmethod
    def check_model(model_dir: str, tp: int, pp: int):
        """Read and check the HF model's config against the layout before any process group exists."""
        from checkpoints_conversion.config import load_model_args, validate_layout

        model_args = load_model_args(model_dir)
        validate_layout(model_args, tp, pp)
        return model_args

    def _model(self, which: str):
        return self.model if which == "policy" else self.anchor

    def _resident(self, which: str):
        """The anchor's weights on their devices for a block that reads ``which`` (nothing to do for the policy)."""
        return self.anchor_resident() if which == "anchor" else nullcontext()

    def push_weights(self, engine, version: int, which: str = "policy") -> dict:
        """Push the policy (or the anchor) as HF tensors into ``engine`` (policy/weight_push.py). Collective: ranks
        without an engine, or runs without one, still take part. Returns seconds and bytes of the push."""
        from megatron_corew.policy import weight_push

        with self._resident(which):
            return weight_push.push(self._model(which), self.args, engine, version, which)

    def weights_digest(self, which: str = "policy") -> str | None:
        """sha256 over the exported HF tensors (names, dtypes, bytes) on rank 0: equal digests = equal weights."""
        if self._model(which) is None:
            return None
        import hashlib

        from megatron_corew.policy.weights import export_hf_weights

        h = hashlib.sha256()
        with self._resident(which):
            for name, t in export_hf_weights(self._model(which), self.args):
                h.update(name.encode())
                h.update(str(t.dtype).encode())
                # bytes of a copy (bf16 too): a numpy view would make the parameter's storage unresizable (offload)
                h.update(t.detach().cpu().reshape(-1).view(torch.uint8).clone().numpy().tobytes())
        return h.hexdigest() if parallel.is_rank0() else None

    def save(self, save_dir: str, step: int, loop_state: dict, keep_last: int | None = None) -> str:
        from megatron_corew.policy.checkpointing import save_checkpoint

        return save_checkpoint(save_dir, step, self, loop_state, keep_last=keep_last)

    def load(self, load_dir: str) -> dict | None:
        from megatron_corew.policy.checkpointing import load_checkpoint

        return load_checkpoint(load_dir, self)

    def save_hf(self, out_dir: str, step: int, dtype_name: str | None = None) -> str:
        """HF safetensors export of the policy (collective; rank 0 writes atomically)."""
        from megatron_corew.policy.hf_export import save_hf_checkpoint

        dtype = getattr(torch, dtype_name) if dtype_name else None
        return save_hf_checkpoint(self.model, self.args, out_dir, step, dtype=dtype)
