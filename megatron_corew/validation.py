"""Start-up checks of the training flags: every mistake is one line naming the flag and what would be valid,
raised before any process group, model or engine exists (``arguments.parse_args`` turns it into exit code 2).

Three kinds: numeric ranges (:data:`RANGES`, one entry per numeric flag; ``tests/test_bad_input.py`` checks that
none is missing), flags that do not apply to the chosen method or to the other flags, and paths (the output,
checkpoint and export directories must be writable; ``--load`` must be an RL checkpoint directory).
"""

from __future__ import annotations

import json
import math
import os

from megatron_corew import rewards


class FlagError(ValueError):
    """A bad flag or path; its message is the whole one-line diagnosis."""


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
    # off-policy / DAPO options (offpolicy_options.py)
    "rollout_is_threshold": (1, True, INF, False),  # a ratio bound below 1 would truncate or drop on-policy tokens
    "rollout_is_threshold_lower": (0, True, 1, True),
    "num_steps_per_rollout": (1, True, INF, False),
    "dynamic_sampling_max_rounds": (0, True, INF, False),
    "overlong_buffer_len": (0, True, INF, False),  # 0: no soft overlong penalty
    "overlong_penalty_factor": (0, True, INF, False),
    "sglang_base_gpu_id": (0, True, INF, False),
    "peak_flops": (0, False, INF, False),
    "max_staleness": (0, True, INF, False),  # 0: --async-rollout runs the synchronous schedule
}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _num(x: float) -> str:
    return "inf" if x == INF else f"{x:g}"


def describe_range(lo: float, lo_in: bool, hi: float, hi_in: bool) -> str:
    return f"{'[' if lo_in else '('}{_num(lo)}, {_num(hi)}{']' if hi_in and hi != INF else ')'}"


def check_ranges(args, ranges: dict | None = None) -> None:
    """Each numeric flag in ``ranges`` (default :data:`RANGES`) within its range; None (unset) passes."""
    for dest, (lo, lo_in, hi, hi_in) in (RANGES if ranges is None else ranges).items():
        v = getattr(args, dest, None)
        if v is None or isinstance(v, bool):
            continue
        ok = math.isfinite(v) and (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)
        if not ok:
            raise FlagError(f"{flag(dest)} {v:g} is out of range; valid: {describe_range(lo, lo_in, hi, hi_in)}")
    if ranges is None and args.min_lr > args.lr:
        raise FlagError(f"--min-lr {args.min_lr:g} is larger than --lr {args.lr:g}; valid: 0 <= --min-lr <= --lr")


def _given(args, defaults: dict, dest: str) -> bool:
    return getattr(args, dest) != defaults.get(dest)


def check_applicable(args, defaults: dict) -> list[str]:
    """Refuse flags the chosen method (or the other flags) would silently ignore; return warnings."""
    from megatron_corew.rewards.extract import parse_format

    try:
        parse_format(args.answer_format)
    except ValueError as e:
        raise FlagError(f"--answer-format: {e}") from None
    method = rewards.get_method(args.reward_method)
    m = f"--reward-method {args.reward_method}"
    if method.paired_views and not args.train_data_rephrased:
        raise FlagError(f"{m} needs --train-data-rephrased (it trains on both views of each question)")
    if args.teacher_on_rephrased and not args.train_data_rephrased:
        raise FlagError("--teacher-on-rephrased needs --train-data-rephrased")
    if getattr(args, "train_data_rephrase_check", None) and not args.train_data_rephrased:
        raise FlagError("--train-data-rephrase-check needs --train-data-rephrased (it filters that pair)")
    if args.train_data_rephrased and not (method.paired_views or (method.teacher and args.teacher_on_rephrased)):
        extra = "; with an EMA teacher add --teacher-on-rephrased" if method.teacher else ""
        raise FlagError(f"--train-data-rephrased does not apply to {m} (it never reads the rephrased file){extra}")
    if not method.teacher:
        for dest in (
            "teacher_update_interval",
            "teacher_alpha_start",
            "teacher_alpha_end",
            "no_ema",
            "teacher_on_rephrased",
        ):
            if _given(args, defaults, dest):
                raise FlagError(f"{flag(dest)} does not apply to {m} (it has no EMA teacher)")
    if not method.paired_views and _given(args, defaults, "view_loss_agg"):
        raise FlagError(f"--view-loss-agg does not apply to {m} (it trains on one view)")
    if not method.pseudo_labels and _given(args, defaults, "label_matching"):
        raise FlagError(f"--label-matching does not apply to {m} (it votes no pseudo-labels)")
    if not method.needs_ground_truth and not args.val_data and _given(args, defaults, "gt_grading"):
        raise FlagError(f"--gt-grading does not apply: {m} grades no ground truth and there is no --val-data")
    if not args.val_data:
        for dest in ("max_val_samples", "val_n_samples", "val_temperature"):
            if _given(args, defaults, dest):
                raise FlagError(f"{flag(dest)} does not apply without --val-data")
    if args.save_interval is not None and not args.save:
        raise FlagError("--save-interval does not apply without --save")
    if args.save_hf and not args.save_hf_interval:
        raise FlagError("--save-hf does not apply without --save-hf-interval")
    if args.save_hf_dtype and not args.save_hf_interval:
        raise FlagError("--save-hf-dtype does not apply without --save-hf-interval")
    if args.keep_last_checkpoints is not None and not (args.save or args.save_hf_interval):
        raise FlagError("--keep-last-checkpoints does not apply without --save or --save-hf-interval")
    if args.max_tokens_per_gpu is not None and args.micro_batch_layout != "packed":
        raise FlagError("--max-tokens-per-gpu does not apply without --micro-batch-layout packed")
    if getattr(args, "rollout_drop_finished", False) and args.rollout_backend != "embedded":
        raise FlagError("--rollout-drop-finished does not apply to --rollout-backend sglang (it batches continuously)")
    if getattr(args, "rollout_no_shared_prefill", False) and args.rollout_backend != "embedded":
        raise FlagError("--rollout-no-shared-prefill does not apply to --rollout-backend sglang (it caches prefixes)")
    if _given(args, defaults, "loss_agg_micro_batch") and args.loss_agg_mode != "microbatch-token-mean":
        raise FlagError("--loss-agg-micro-batch does not apply without --loss-agg-mode microbatch-token-mean")
    if args.overlap_param_gather and not args.use_distributed_optimizer:
        raise FlagError("--overlap-param-gather needs --use-distributed-optimizer")
    if hasattr(args, "rollout_is"):  # namespaces built without the off-policy flags skip their checks
        from megatron_corew import offpolicy_options

        offpolicy_options.check(args, defaults, FlagError)
    from megatron_corew.rollout.pipeline import check_pipeline_args

    check_pipeline_args(args, method, lambda dest: _given(args, defaults, dest))
    warnings = []
    if args.kl_loss_coef == 0 and _given(args, defaults, "kl_loss_type"):
        warnings.append("--kl-loss-type has no effect with --kl-loss-coef 0")
    if args.train_iters is not None and _given(args, defaults, "epochs"):
        warnings.append("--epochs has no effect with --train-iters")
    return warnings


def launched_world_size() -> int:
    """Processes the launcher started (torchrun's WORLD_SIZE, srun's SLURM_NTASKS), 1 for a plain ``python``."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if "SLURM_PROCID" in os.environ and "MASTER_ADDR" in os.environ:
        return int(os.environ.get("SLURM_NTASKS", "1"))
    return 1


def check_layout(args) -> None:
    tp, pp, world = args.tensor_model_parallel_size, args.pipeline_model_parallel_size, launched_world_size()
    if world % (tp * pp):
        how = "launch with torchrun --nproc_per_node N (or srun)" if world == 1 else f"{world} processes were started"
        raise FlagError(
            f"--tensor-model-parallel-size {tp} x --pipeline-model-parallel-size {pp} needs a multiple of "
            f"{tp * pp} processes; {how}"
        )


def check_config_json(path: str) -> None:
    """``path/config.json`` parses (a missing directory or file is left to the model-config check, which names it)."""
    cfg = os.path.join(path, "config.json")
    if not os.path.isfile(cfg):
        return
    try:
        with open(cfg) as f:
            json.load(f)
    except json.JSONDecodeError as e:
        raise FlagError(f"{cfg} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except OSError as e:
        raise FlagError(f"{cfg} cannot be read ({e.strerror})") from None


def check_writable(option: str, path: str) -> None:
    """``path`` is a directory we can write, or can be created: fail now, not at the first save after training."""
    probe = os.path.abspath(path)
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise FlagError(f"{option} {path} exists and is not a directory")
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise FlagError(f"{option} {path} cannot be created: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == os.path.abspath(path) else f" ({probe} is not writable)"
        raise FlagError(f"{option} {path} is not writable{where}")


def check_load(path: str) -> None:
    """``--load`` resumes an RL checkpoint directory (``--save``'s ``iter_*/`` and ``latest``); anything else would
    silently start at step 0 and, with ``--load X --save X``, overwrite the real checkpoints."""
    if not os.path.exists(path):
        raise FlagError(f"--load {path}: directory not found (to start a new run, leave out --load)")
    if not os.path.isdir(path):
        raise FlagError(f"--load {path} is a file; it must be a checkpoint directory written by --save")
    if os.path.isfile(os.path.join(path, "config.json")):
        raise FlagError(
            f"--load {path} is an HF model directory; start from it with --hf-checkpoint {path} "
            "(--load resumes a checkpoint directory written by --save)"
        )
    if not os.path.lexists(os.path.join(path, "latest")):
        raise FlagError(
            f"--load {path} holds no checkpoint (no 'latest' pointer); to start a new run, leave out --load"
        )


def hf_export_root(args) -> str | None:
    if not args.save_hf_interval:
        return None
    return args.save_hf or os.path.join(args.output_dir, "hf")


def check_model(args) -> None:
    """config.json readable, architecture supported, layout dividing the heads (names the file or flag)."""
    from checkpoints_conversion.config import ModelConfigError, load_model_args, validate_layout

    check_config_json(args.hf_checkpoint)
    try:
        validate_layout(
            load_model_args(args.hf_checkpoint), args.tensor_model_parallel_size, args.pipeline_model_parallel_size
        )
    except ModelConfigError as e:
        raise FlagError(str(e)) from None
    check_tokenizer_files("--hf-checkpoint", args.hf_checkpoint)


def check_tokenizer_files(option: str, path: str) -> None:
    """transformers builds an empty tokenizer from a directory without them, and the run dies deep in attention."""
    if not any(os.path.isfile(os.path.join(path, n)) for n in TOKENIZER_FILES):
        raise FlagError(
            f"{option} {path} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); "
            "copy them from the model's release"
        )


def check_paths(args) -> None:
    for option, path in (
        ("--output-dir", args.output_dir),
        ("--save", args.save),
        ("--save-hf", hf_export_root(args)),
        ("--tensorboard-dir", args.tensorboard_dir),
    ):
        if path:
            check_writable(option, path)
    if args.load:
        check_load(args.load)


def check_servers(args) -> None:
    """Attached SGLang servers answer ``/health`` now (rank 0 talks to them), not after the model is built."""
    if getattr(args, "rollout_backend", None) != "sglang" or int(os.environ.get("RANK", "0")) != 0:
        return
    import urllib.error
    import urllib.request

    for option, urls in (("--sglang-urls", args.sglang_urls or []), ("--sglang-router-url", [args.sglang_router_url])):
        for url in filter(None, urls):
            try:
                urllib.request.urlopen(url.rstrip("/") + "/health", timeout=10).close()
            except urllib.error.HTTPError:
                pass  # it answers: the server's own errors are reported by the rollout calls
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", e)
                raise FlagError(
                    f"{option} {url} is not reachable ({reason}); start the server or fix the URL"
                ) from None


def check_ray_resource(args) -> None:
    """``--sglang-ray-resource NAME[=AMOUNT]`` applies to Ray-owned engines only and must parse (whether the cluster
    offers it is checked when rank 0 connects, before the placement group would wait out its timeout)."""
    spec = getattr(args, "sglang_ray_resource", None)
    if spec is None:
        return
    if getattr(args, "rollout_backend", None) != "sglang" or not args.sglang_use_ray or args.sglang_urls:
        raise FlagError("--sglang-ray-resource does not apply without --rollout-backend sglang --sglang-use-ray")
    from megatron_corew.rollout.sglang.ray_fleet import parse_resource

    try:
        parse_resource(spec)
    except ValueError as e:
        raise FlagError(f"--sglang-ray-resource {e}") from None


def validate(args, defaults: dict) -> list[str]:
    """All start-up checks; raises :class:`FlagError`, returns warnings to print once."""
    check_ranges(args)
    warnings = check_applicable(args, defaults)
    check_model(args)
    check_layout(args)
    check_paths(args)
    check_servers(args)
    if getattr(args, "colocate", False) and getattr(args, "sglang_urls", None):
        warnings.append("--colocate with --sglang-urls: the attached servers must run with --enable-memory-saver")
    check_ray_resource(args)
    return warnings
