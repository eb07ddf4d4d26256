"""Every flag's rules in one place: its range, what it needs or excludes, and whether it defines the experiment.

- :data:`RANGES`: dest -> (low, low inclusive, high, high inclusive) for every numeric flag
  (``tests/test_bad_input.py`` fails when a numeric flag has none).
- :data:`RULES`: one line per rule. ``Rule(dest, ok, text)`` applies when ``dest`` is given (differs from its
  default): ``ok(args, method)`` false refuses the run with ``--dest TEXT`` (``warn=True``: a warning instead).
  ``TEXT`` may name ``{v}`` (the flag's value), ``{a.other_flag}`` and ``{m}`` (``--reward-method NAME``).
- :data:`EXPERIMENT`: the flags that define the experiment. A resume (``--load``) whose value differs from the
  checkpoint's is refused (``REFUSE``) or warned about with the reason it is allowed (policy/checkpointing.py).

:func:`check` walks the table before any process group, model or engine exists; ``arguments.parse_args`` turns
the first failure into one stderr line and exit code 2.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

INF = math.inf

# dest -> (low, low inclusive, high, high inclusive); None values are "unset" and always pass
RANGES: dict[str, tuple[float, bool, float, bool]] = {
    "tensor_model_parallel_size": (1, True, INF, False),
    "pipeline_model_parallel_size": (1, True, INF, False),
    "max_val_samples": (1, True, INF, False),
    "val_n_samples": (0, True, INF, False),
    "val_temperature": (0, False, INF, False),
    "max_prompt_length": (1, True, INF, False),
    "max_response_length": (1, True, INF, False),
    "global_batch_size": (1, True, INF, False),
    "micro_batch_size": (1, True, INF, False),
    "max_tokens_per_micro_batch": (1, True, INF, False),
    "max_tokens_per_gpu": (1, True, INF, False),
    "logits_chunk_tokens": (0, True, INF, False),
    "loss_agg_micro_batch": (1, True, INF, False),
    "train_iters": (0, True, INF, False),  # 0: set up, validate, report the initial weights (result.json), exit
    "epochs": (1, True, INF, False),
    "lr": (0, False, 1, True),  # above 1 no optimiser step is meaningful (1e6 silently destroys the model)
    "min_lr": (0, True, 1, True),
    "lr_warmup_fraction": (0, True, 1, True),
    "weight_decay": (0, True, INF, False),
    "adam_beta1": (0, True, 1, False),
    "adam_beta2": (0, True, 1, False),
    "adam_eps": (0, False, INF, False),
    "clip_grad": (0, True, INF, False),  # 0: no clipping
    "seed": (0, True, 2**32 - 1, True),
    "n_samples_per_prompt": (2, True, INF, False),  # group advantages compare a prompt's samples
    "rollout_temperature": (0, False, INF, False),
    "rollout_top_p": (0, False, 1, True),
    "kl_loss_coef": (0, True, INF, False),
    "entropy_coef": (0, True, INF, False),
    "clip_ratio_low": (0, True, 1, False),
    "clip_ratio_high": (0, True, INF, False),
    "dual_clip_c": (1, False, INF, False),
    "teacher_update_interval": (1, True, INF, False),
    "teacher_alpha_start": (0, True, 1, True),
    "teacher_alpha_end": (0, True, 1, True),
    "eval_interval": (0, True, INF, False),  # 0: no validation during training
    "save_interval": (1, True, INF, False),
    "save_hf_interval": (1, True, INF, False),
    "keep_last_checkpoints": (1, True, INF, False),
    "max_consecutive_skips": (0, True, INF, False),  # 0: no limit
    "rollout_batch_size": (1, True, INF, False),
    "sglang_num_engines": (1, True, INF, False),
    "sglang_bucket_mb": (0, False, INF, False),
    "sglang_base_port": (1, True, 65535, True),
    "sglang_startup_timeout": (0, False, INF, False),
    "sglang_request_timeout": (0, False, INF, False),
    "sglang_sync_timeout": (0, False, INF, False),
    "sglang_control_timeout": (0, False, INF, False),
    "sglang_http_retries": (0, True, INF, False),
    "sglang_max_restarts": (0, True, INF, False),
    "sglang_request_batch_size": (1, True, INF, False),
    "sglang_reward_workers": (0, True, INF, False),
    "rollout_is_threshold": (1, True, INF, False),  # a ratio bound below 1 would truncate or drop on-policy tokens
    "rollout_is_threshold_lower": (0, True, 1, True),
    "num_steps_per_rollout": (1, True, INF, False),
    "dynamic_sampling_max_rounds": (0, True, INF, False),
    "overlong_buffer_len": (0, True, INF, False),  # 0: no soft overlong penalty
    "overlong_penalty_factor": (0, True, INF, False),
    "sglang_base_gpu_id": (0, True, INF, False),
    "peak_flops": (0, False, INF, False),
    "max_staleness": (0, True, INF, False),  # 0: --async-rollout runs the synchronous schedule
    "random_reward_p": (0, True, 1, True),
}


class Rule(NamedTuple):
    dest: str  # the rule applies when this flag is given
    ok: Callable  # (args, method) -> bool
    text: str | Callable  # after "--dest "; a format string or args -> str
    warn: bool = False


def _mis_bounds(a) -> tuple[float, float]:
    hi = a.rollout_is_threshold
    lo = a.rollout_is_threshold_lower if a.rollout_is_threshold_lower is not None else 1 / hi
    return lo, hi


def _dup_val_names(a) -> list[str]:
    from megatron_corew.offpolicy_options import val_sets

    names = [n for n, _ in val_sets(a.val_data)]
    return sorted({n for n in names if names.count(n) > 1})


def _shared_teacher(a, m) -> bool:
    return a.rollout_backend == "sglang" and m.teacher and str(a.sglang_teacher_engines) == "shared"


def _rephrased_text(a) -> str:
    from megatron_corew import rewards

    extra = "; with an EMA teacher add --teacher-on-rephrased" if rewards.get_method(a.reward_method).teacher else ""
    return "does not apply to {m} (it never reads the rephrased file)" + extra


_COMBINE = (
    "do not combine: refill rounds are generated on demand",
    "do not combine: colocated engines give their GPU memory to the trainer while it trains, so nothing can be "
    "generated alongside (use disaggregated engines)",
)
_SHARED = (
    "needs a teacher engine group of its own (--sglang-teacher-engines N): on shared engines the teacher swaps its "
    "weights in and the two roles' generations only queue"
)

# the order is the order of the checks: the first failing rule is the one line the user sees
RULES: tuple[Rule, ...] = (
    # the method
    Rule(
        "reward_method",
        lambda a, m: not m.paired_views or m.reframes or a.train_data_rephrased,
        "{v} needs --train-data-rephrased (it trains on both views of each question)",
    ),  # fmt: skip
    Rule("teacher_on_rephrased", lambda a, m: a.train_data_rephrased, "needs --train-data-rephrased"),
    Rule(
        "train_data_rephrase_check",
        lambda a, m: a.train_data_rephrased,
        "needs --train-data-rephrased (it filters that pair)",
    ),  # fmt: skip
    Rule(
        "train_data_rephrased",
        lambda a, m: not m.reframes,
        "does not apply to {m} (the policy writes the second view itself)",
    ),  # fmt: skip
    Rule(
        "train_data_rephrased", lambda a, m: m.paired_views or (m.teacher and a.teacher_on_rephrased), _rephrased_text
    ),  # fmt: skip
    Rule(
        "teacher_on_rephrased",
        lambda a, m: not (m.paired_views and m.teacher),
        "does not apply to {m} (its teacher answers both views)",
    ),  # fmt: skip
    Rule(
        "async_rollout",
        lambda a, m: not m.reframes,
        "does not apply to {m} (its second view is written at the step's start)",
    ),  # fmt: skip
    *(
        Rule(d, lambda a, m: m.teacher, "does not apply to {m} (it has no EMA teacher)")
        for d in ("teacher_update_interval", "teacher_alpha_start", "teacher_alpha_end", "no_ema")
    ),
    Rule("view_loss_agg", lambda a, m: m.paired_views, "does not apply to {m} (it trains on one view)"),
    Rule("label_matching", lambda a, m: m.pseudo_labels, "does not apply to {m} (it votes no pseudo-labels)"),
    Rule(
        "label_matching",
        lambda a, m: not m.fixed_label_matching,
        "does not apply to {m} (it always clusters by equivalence)",
    ),  # fmt: skip
    Rule(
        "random_reward_p",
        lambda a, m: "random_reward_p" in m.reads_flags,
        "does not apply to {m} (it reads no such setting)",
    ),
    Rule(
        "gt_grading",
        lambda a, m: m.needs_ground_truth or a.val_data,
        "does not apply: {m} grades no ground truth and there is no --val-data",
    ),  # fmt: skip
    # validation, checkpoints, exports
    *(
        Rule(d, lambda a, m: a.val_data, "does not apply without --val-data")
        for d in ("max_val_samples", "val_n_samples", "val_temperature")
    ),
    Rule(
        "val_data",
        lambda a, m: not _dup_val_names(a),
        lambda a: f"names {', '.join(_dup_val_names(a))} more than once; name them NAME=PATH",
    ),  # fmt: skip
    Rule("save_interval", lambda a, m: a.save, "does not apply without --save"),
    Rule("save_hf", lambda a, m: a.save_hf_interval, "does not apply without --save-hf-interval"),
    Rule("save_hf_dtype", lambda a, m: a.save_hf_interval, "does not apply without --save-hf-interval"),
    Rule(
        "keep_last_checkpoints",
        lambda a, m: a.save or a.save_hf_interval,
        "does not apply without --save or --save-hf-interval",
    ),  # fmt: skip
    # batching and optimisation
    Rule("min_lr", lambda a, m: a.min_lr <= a.lr, "{v:g} is larger than --lr {a.lr:g}; valid: 0 <= --min-lr <= --lr"),
    Rule(
        "max_tokens_per_gpu",
        lambda a, m: a.micro_batch_layout == "packed",
        "does not apply to --micro-batch-layout padded (its budget is --max-tokens-per-micro-batch)",
    ),  # fmt: skip
    Rule(
        "max_tokens_per_micro_batch",
        lambda a, m: a.micro_batch_layout == "padded",
        "does not apply to --micro-batch-layout packed (the default; its budget is --max-tokens-per-gpu)",
    ),  # fmt: skip
    Rule(
        "loss_agg_micro_batch",
        lambda a, m: a.loss_agg_mode == "microbatch-token-mean",
        "does not apply without --loss-agg-mode microbatch-token-mean",
    ),  # fmt: skip
    Rule("overlap_param_gather", lambda a, m: a.use_distributed_optimizer, "needs --use-distributed-optimizer"),
    # rollout engine
    Rule(
        "rollout_drop_finished",
        lambda a, m: a.rollout_backend == "embedded",
        "off (--no-rollout-drop-finished) does not apply to --rollout-backend sglang (it batches continuously)",
    ),  # fmt: skip
    Rule(
        "rollout_no_shared_prefill",
        lambda a, m: a.rollout_backend == "embedded",
        "does not apply to --rollout-backend sglang (it caches prefixes)",
    ),  # fmt: skip
    Rule(
        "sglang_ray_resource",
        lambda a, m: a.rollout_backend == "sglang" and a.sglang_use_ray and not a.sglang_urls,
        "does not apply without --rollout-backend sglang --sglang-use-ray",
    ),  # fmt: skip
    # off-policy and DAPO options (docs/OFF_POLICY.md)
    *(
        Rule(d, lambda a, m: a.rollout_is != "none", "does not apply without --rollout-is tis|mis")
        for d in ("rollout_is_level", "rollout_is_threshold", "rollout_is_threshold_lower")
    ),
    Rule(
        "rollout_is_threshold_lower",
        lambda a, m: a.rollout_is != "tis",
        "does not apply to --rollout-is tis (it truncates above only)",
    ),  # fmt: skip
    Rule(
        "rollout_is",
        lambda a, m: a.rollout_is != "mis" or _mis_bounds(a)[1] > _mis_bounds(a)[0],
        lambda a: (
            "mis with --rollout-is-threshold {1:g} and lower bound {0:g} drops every token whose ratio is "
            "not exactly 1; widen the bounds".format(*_mis_bounds(a))
        ),
    ),  # fmt: skip
    Rule("dynamic_sampling_max_rounds", lambda a, m: a.dynamic_sampling, "does not apply without --dynamic-sampling"),
    Rule(
        "overlong_penalty_factor", lambda a, m: a.overlong_buffer_len, "does not apply without --overlong-buffer-len"
    ),  # fmt: skip
    Rule(
        "overlong_buffer_len",
        lambda a, m: a.overlong_buffer_len < a.max_response_length,
        "{v} must be below --max-response-length {a.max_response_length}",
    ),  # fmt: skip
    Rule(
        "num_steps_per_rollout",
        lambda a, m: a.num_steps_per_rollout <= a.global_batch_size,
        "{v} exceeds --global-batch-size {a.global_batch_size} (each step needs at least one prompt)",
    ),  # fmt: skip
    # rollout pipelining (docs/ASYNC.md)
    Rule("max_staleness", lambda a, m: a.async_rollout, "does not apply without --async-rollout"),
    Rule("async_mode", lambda a, m: a.async_rollout, "does not apply without --async-rollout"),
    Rule(
        "stale_samples", lambda a, m: a.async_mode == "fully-async", "does not apply without --async-mode fully-async"
    ),
    Rule("teacher_prefetch", lambda a, m: m.teacher, "does not apply to {m} (no teacher)"),
    *(
        Rule(d, ok, f"and {other} {why}")
        for d in ("async_rollout", "teacher_prefetch")
        for other, ok, why in (
            ("--dynamic-sampling", lambda a, m: not a.dynamic_sampling, _COMBINE[0]),
            ("--colocate", lambda a, m: not a.colocate, _COMBINE[1]),
        )
    ),
    *(Rule(d, lambda a, m: not _shared_teacher(a, m), _SHARED) for d in ("async_rollout", "teacher_prefetch")),
    # warnings: the flag is accepted but has no effect
    Rule("kl_loss_type", lambda a, m: a.kl_loss_coef != 0, "has no effect with --kl-loss-coef 0", warn=True),
    Rule("epochs", lambda a, m: a.train_iters is None, "has no effect with --train-iters", warn=True),
    Rule(
        "colocate",
        lambda a, m: not a.sglang_urls,
        "with --sglang-urls: the attached servers must run with --enable-memory-saver",
        warn=True,
    ),  # fmt: skip
)

REFUSE = "refuse"
# dest -> REFUSE, or the reason a changed value is accepted on resume (printed with the warning)
EXPERIMENT: dict[str, str] = {
    "reward_method": REFUSE,
    "seed": REFUSE,
    "max_prompt_length": REFUSE,
    "max_response_length": REFUSE,
    "rollout_temperature": REFUSE,
    "rollout_top_p": REFUSE,
    "loss_agg_mode": REFUSE,
    "loss_agg_micro_batch": REFUSE,
    "kl_loss_type": REFUSE,
    "entropy_coef": REFUSE,
    "clip_ratio_low": REFUSE,
    "clip_ratio_high": REFUSE,
    "dual_clip_c": REFUSE,
    "no_std_normalization": REFUSE,
    "label_matching": REFUSE,
    "gt_grading": REFUSE,
    "view_loss_agg": REFUSE,
    "no_ema": REFUSE,
    "teacher_on_rephrased": REFUSE,
    "rollout_is": "its default follows the staleness of the rollouts (--async-rollout, --max-staleness, --num-steps-per-rollout)",
    "off_policy_form": REFUSE,
    "answer_format": REFUSE,
    "random_reward_p": REFUSE,
    "rollout_is_level": REFUSE,
    "rollout_is_threshold": REFUSE,
    "rollout_is_threshold_lower": REFUSE,
    "num_steps_per_rollout": REFUSE,
    "dynamic_sampling": REFUSE,
    "dynamic_sampling_max_rounds": REFUSE,
    "overlong_buffer_len": REFUSE,
    "overlong_penalty_factor": REFUSE,
    "mask_truncated_responses": REFUSE,
    "async_rollout": REFUSE,
    "teacher_prefetch": REFUSE,
    "async_mode": REFUSE,
    "stale_samples": "what happens to a group that lags too far from the resumed step on",
    "max_staleness": "saved rollouts that lag more than the new bound are regenerated",
    "global_batch_size": "fitting the run to other hardware; the sampler keeps its place in the epoch",
    "n_samples_per_prompt": "fitting the run to other hardware; group advantages stay per prompt",
    "train_iters": "extending or shortening the run; the learning-rate schedule keeps the checkpoint's length",
    "lr": REFUSE,  # the scheduler state in the checkpoint wins: a new value would silently do nothing
    "min_lr": REFUSE,
    "lr_warmup_fraction": REFUSE,
    "kl_loss_coef": "a deliberate change of the KL penalty from the resumed step",
    "teacher_alpha_start": "a deliberate change of the EMA schedule from the resumed step",
    "teacher_alpha_end": "a deliberate change of the EMA schedule from the resumed step",
    "teacher_update_interval": "a deliberate change of the EMA schedule from the resumed step",
}


def flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _num(x: float) -> str:
    return "inf" if x == INF else f"{x:g}"


def describe_range(lo: float, lo_in: bool, hi: float, hi_in: bool) -> str:
    return f"{'[' if lo_in else '('}{_num(lo)}, {_num(hi)}{']' if hi_in and hi != INF else ')'}"


def range_error(args, ranges: dict | None = None) -> str | None:
    """The first numeric flag in ``ranges`` (default :data:`RANGES`) outside its range; None (unset) passes."""
    for dest, (lo, lo_in, hi, hi_in) in (RANGES if ranges is None else ranges).items():
        v = getattr(args, dest, None)
        if v is None or isinstance(v, bool):
            continue
        ok = math.isfinite(v) and (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)
        if not ok:
            return f"{flag(dest)} {v:g} is out of range; valid: {describe_range(lo, lo_in, hi, hi_in)}"
    return None


def check(args, defaults: dict, method) -> tuple[str | None, list[str]]:
    """Walk :data:`RANGES` then :data:`RULES`: (the first refusal or None, the warnings). A rule whose flag the
    namespace lacks (a tool's parser) is skipped."""
    err = range_error(args)
    if err:
        return err, []
    warnings = []
    m = f"--reward-method {args.reward_method}"
    for rule in RULES:
        if not hasattr(args, rule.dest) or getattr(args, rule.dest) == defaults.get(rule.dest):
            continue
        if rule.ok(args, method):
            continue
        text = rule.text(args) if callable(rule.text) else rule.text
        line = f"{flag(rule.dest)} {text.format(v=getattr(args, rule.dest), a=args, m=m)}"
        if not rule.warn:
            return line, warnings
        warnings.append(line)
    return None, warnings


def help_suffix(dest: str) -> str:
    """What --help adds after a flag's own text: its range and whether a resume may change it."""
    parts = []
    if dest in RANGES:
        parts.append(f"valid: {describe_range(*RANGES[dest])}")
    if EXPERIMENT.get(dest) == REFUSE:
        parts.append("fixed on resume")
    return f" [{'; '.join(parts)}]" if parts else ""
