"""The trainer's settings: one typed config, built once from the flags; its field defaults are the flags' defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainerConfig:
    tp: int = 1
    pp: int = 1
    micro_batch_size: int = 8
    max_tokens_per_micro_batch: int | None = None
    micro_batch_layout: str = "padded"  # padded (right-padded rows) or packed (one row of whole sequences, THD)
    max_tokens_per_gpu: int | None = None  # packed: token budget per micro-batch (None: micro_batch_size x longest)
    # > 0: log-prob / entropy / self-certainty over chunks of this many tokens; 0: whole logits; None: chunked
    # when the vocabulary is large (policy/vocab_parallel.py default_chunk_tokens)
    logits_chunk_tokens: int | None = None
    loss_agg_mode: str = "global-token-mean"  # or microbatch-token-mean (the reference's), see docs/ALGORITHMS.md
    loss_agg_micro_batch: int = 8  # microbatch-token-mean: sequences per reference micro-batch
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
    weight_decay_all_params: bool = False  # the reference decays biases and norms; megatron's default skips them
    rollout_is: str = "none"  # train/rollout mismatch correction: none, tis, mis (algo/importance.py)
    rollout_is_level: str = "token"  # token, sequence or geometric ratio
    rollout_is_high: float = 2.0  # TIS clip C / MIS upper bound
    rollout_is_low: float | None = None  # MIS lower bound (None: 1 / high)
    off_policy_form: str = "decoupled"  # pi_old of the PPO ratio: proximal policy, or the engine's (bypass)

    @classmethod
    def from_args(cls, args, train_iters: int, need_anchor: bool) -> "TrainerConfig":
        """The trainer's settings from the parsed flags (their defaults are this class's, see arguments.py)."""
        return cls(
            tp=args.tensor_model_parallel_size,
            pp=args.pipeline_model_parallel_size,
            micro_batch_size=args.micro_batch_size,
            max_tokens_per_micro_batch=args.max_tokens_per_micro_batch,
            micro_batch_layout=args.micro_batch_layout,
            max_tokens_per_gpu=args.max_tokens_per_gpu,
            logits_chunk_tokens=args.logits_chunk_tokens,
            loss_agg_mode=args.loss_agg_mode,
            loss_agg_micro_batch=args.loss_agg_micro_batch,
            lr=args.lr,
            min_lr=args.min_lr,
            lr_warmup_fraction=args.lr_warmup_fraction,
            train_iters=train_iters,
            weight_decay=args.weight_decay,
            adam_beta1=args.adam_beta1,
            adam_beta2=args.adam_beta2,
            adam_eps=args.adam_eps,
            clip_grad=args.clip_grad,
            clip_low=args.clip_ratio_low,
            clip_high=args.clip_ratio_high,
            dual_clip=args.dual_clip_c,
            kl_coef=args.kl_loss_coef,
            kl_estimator=args.kl_loss_type,
            entropy_coef=args.entropy_coef,
            temperature=args.rollout_temperature,
            bf16=args.bf16,
            use_distributed_optimizer=args.use_distributed_optimizer,
            recompute=args.recompute_granularity,
            sequence_parallel=args.sequence_parallel,
            fp8=args.fp8_format,
            fp8_recipe=args.fp8_recipe,
            overlap_grad_reduce=args.overlap_grad_reduce,
            overlap_param_gather=args.overlap_param_gather,
            attention_backend=args.attention_backend,
            need_anchor=need_anchor,
            anchor_cpu_offload=args.anchor_cpu_offload,
            weight_decay_all_params=args.weight_decay_all_params,
            rollout_is=getattr(args, "rollout_is", None) or "none",  # None: resolved at start-up (validation)
            rollout_is_level=getattr(args, "rollout_is_level", "token"),
            rollout_is_high=getattr(args, "rollout_is_threshold", 2.0),
            rollout_is_low=getattr(args, "rollout_is_threshold_lower", None),
            off_policy_form=getattr(args, "off_policy_form", "decoupled"),
        )
