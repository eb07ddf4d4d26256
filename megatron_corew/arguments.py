"""Command-line flags: Megatron's names where Megatron has the concept, ours for the RL parts.

Defaults of the trainer's settings are read from ``TrainerConfig`` so each is written once; reward methods come
from the ``MethodSpec`` registry (``--reward-plugin MODULE`` registers more before the flags are parsed).
"""

from __future__ import annotations

import argparse
import os
import sys

from megatron_corew import rewards
from megatron_corew.evaluation import EVAL_TEMPERATURE
from megatron_corew.policy.config import TrainerConfig
from megatron_corew.rewards.extract import DEFAULT_FORMAT
from megatron_corew.validation import FlagError, validate

_T = TrainerConfig()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="GRPO / Co-rewarding training on megatron-core",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("model and parallelism")
    g.add_argument("--hf-checkpoint", required=True, help="HF model directory the policy starts from")
    g.add_argument("--tensor-model-parallel-size", type=int, default=1)
    g.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    g.add_argument("--use-distributed-optimizer", action="store_true")
    g.add_argument("--bf16", action="store_true", help="bf16 params/compute (fp32 main weights)")
    g.add_argument("--recompute-granularity", choices=["full", "selective"], default=None)
    g.add_argument("--sequence-parallel", action="store_true")
    g.add_argument("--overlap-grad-reduce", action="store_true")
    g.add_argument("--overlap-param-gather", action="store_true", help="needs --use-distributed-optimizer")
    g.add_argument(
        "--attention-backend", choices=["auto", "flash", "fused", "unfused", "local"], default=_T.attention_backend
    )
    g.add_argument("--fp8-format", choices=["e4m3", "hybrid"], default=None)
    g.add_argument("--fp8-recipe", choices=["delayed", "tensorwise", "blockwise"], default=None)

    g = p.add_argument_group("data")
    g.add_argument("--train-data", required=True, help="verl-schema parquet of training prompts")
    g.add_argument("--train-data-rephrased", default=None, help="aligned rephrased parquet (Co-rewarding-I)")
    g.add_argument(
        "--train-data-rephrase-check",
        default=None,
        help="check file of the pair (tools/check_rephrasings.py, or next to the rewrite_questions.py output): "
        "pairs it flagged are dropped",
    )
    g.add_argument(
        "--val-data",
        nargs="+",
        default=None,
        metavar="[NAME=]PATH",
        help="held-out parquet(s) with ground truth for validation; several are logged as val/NAME/... "
        "(NAME: the file stem unless given), one keeps val/accuracy",
    )
    g.add_argument("--max-val-samples", type=int, default=None)
    g.add_argument(
        "--val-n-samples",
        type=int,
        default=0,
        help="also report sampled avg@k accuracy on the held-out set (k samples per question; 0: off)",
    )
    g.add_argument(
        "--val-temperature",
        type=float,
        default=EVAL_TEMPERATURE,
        help="temperature of the avg@k validation samples (tools/evaluate.py's default too)",
    )
    g.add_argument("--prompt-key", default="prompt")
    g.add_argument("--max-prompt-length", type=int, default=512)
    g.add_argument("--max-response-length", type=int, default=3072)

    g = p.add_argument_group("optimisation (Megatron names)")
    g.add_argument("--global-batch-size", type=int, default=128, help="prompts (pairs for Co-rewarding-I) per step")
    g.add_argument("--micro-batch-size", type=int, default=_T.micro_batch_size, help="sequences per micro-batch")
    g.add_argument(
        "--max-tokens-per-micro-batch",
        type=int,
        default=None,
        help="token budget per micro-batch (dynamic batching); overrides nothing, caps both",
    )
    g.add_argument(
        "--micro-batch-layout",
        choices=("padded", "packed"),
        default=_T.micro_batch_layout,
        help="padded rows, or packed whole sequences (THD) token-balanced over DP ranks and micro-batches",
    )
    g.add_argument(
        "--max-tokens-per-gpu",
        type=int,
        default=_T.max_tokens_per_gpu,
        help="packed: token budget per micro-batch; default micro-batch-size x the longest sequence",
    )
    g.add_argument(
        "--logits-chunk-tokens",
        type=int,
        default=_T.logits_chunk_tokens,
        help="> 0: log-probs, entropy, self-certainty and their backward over chunks of this many tokens; "
        "0: whole logits; default: chunked when the vocabulary has >= 32768 entries",
    )
    g.add_argument(
        "--loss-agg-mode",
        choices=("global-token-mean", "microbatch-token-mean"),
        default=_T.loss_agg_mode,
        help="token mean over the step (default) or the reference's mean of per-micro-batch token means",
    )
    g.add_argument(
        "--loss-agg-micro-batch",
        type=int,
        default=_T.loss_agg_micro_batch,
        help="microbatch-token-mean: sequences per reference micro-batch (the reference: 8 per GPU)",
    )
    g.add_argument(
        "--train-iters",
        type=int,
        default=None,
        help="RL steps (0: set up, validate and report the initial weights); default: --epochs over the data",
    )
    g.add_argument("--epochs", type=int, default=3)
    g.add_argument("--lr", type=float, default=_T.lr)
    g.add_argument("--min-lr", type=float, default=_T.min_lr)
    g.add_argument("--lr-warmup-fraction", type=float, default=_T.lr_warmup_fraction)
    g.add_argument("--weight-decay", type=float, default=_T.weight_decay)
    g.add_argument(
        "--weight-decay-all-params",
        action="store_true",
        help="decay biases and norm weights too, as the reference does (megatron's default skips them)",
    )
    g.add_argument("--adam-beta1", type=float, default=_T.adam_beta1)
    g.add_argument("--adam-beta2", type=float, default=_T.adam_beta2)
    g.add_argument("--adam-eps", type=float, default=_T.adam_eps)
    g.add_argument("--clip-grad", type=float, default=_T.clip_grad)
    g.add_argument("--seed", type=int, default=1234)

    g = p.add_argument_group("RL")
    g.add_argument(
        "--reward-method",
        choices=rewards.method_names(),
        default="gt",
        help="; ".join(f"{n}: {rewards.get_method(n).summary}" for n in rewards.method_names()),
    )
    g.add_argument(
        "--reward-plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this dotted module first (it registers more reward methods); repeatable",
    )
    g.add_argument("--n-samples-per-prompt", type=int, default=8)
    g.add_argument("--rollout-temperature", type=float, default=1.0)
    g.add_argument("--rollout-top-p", type=float, default=1.0)
    g.add_argument("--kl-loss-coef", type=float, default=None, help="default: the method's reference value")
    g.add_argument("--kl-loss-type", choices=["k1", "k2", "k3", "low_var_kl"], default=_T.kl_estimator)
    g.add_argument("--entropy-coef", type=float, default=_T.entropy_coef)
    g.add_argument("--clip-ratio-low", type=float, default=_T.clip_low)
    g.add_argument("--clip-ratio-high", type=float, default=_T.clip_high)
    g.add_argument("--dual-clip-c", type=float, default=_T.dual_clip)
    g.add_argument("--no-std-normalization", action="store_true", help="Dr.GRPO advantages")
    g.add_argument(
        "--label-matching",
        choices=["exact", "equiv"],
        default="exact",
        help="pseudo-label voting: raw string equality (reference) or equivalence clusters",
    )
    g.add_argument("--gt-grading", choices=["reference", "equiv"], default="reference")
    g.add_argument(
        "--answer-format",
        default=DEFAULT_FORMAT,
        help="how rewards, votes and validation read an answer from a response: boxed (reference), gsm8k, "
        "answer-is, last-number, regex:PATTERN, or several tried in order (boxed,answer-is,last-number)",
    )
    g.add_argument(
        "--view-loss-agg",
        choices=["sum", "mean"],
        default="sum",
        help="Co-rewarding-I: sum (reference) or average the two views' losses",
    )
    g.add_argument("--teacher-update-interval", type=int, default=1)
    g.add_argument("--teacher-alpha-start", type=float, default=0.01)
    g.add_argument("--teacher-alpha-end", type=float, default=1e-5)
    g.add_argument("--no-ema", action="store_true", help="Co-rewarding-II ablation: teacher stays the initial model")
    g.add_argument(
        "--anchor-cpu-offload",
        "--teacher-cpu-offload",
        dest="anchor_cpu_offload",
        action="store_true",
        help="keep the fp32 EMA teacher / KL reference in (pinned) host memory between its uses "
        "(forward, EMA update, export, checkpoint): saves a full fp32 model copy of GPU memory",
    )
    g.add_argument(
        "--teacher-on-rephrased",
        action="store_true",
        help="Co-rewarding I+II hybrid: the teacher answers the rephrased question",
    )

    g = p.add_argument_group("logging, evaluation, checkpoints")
    g.add_argument("--output-dir", default="runs/default")
    g.add_argument("--tensorboard-dir", default=None)
    g.add_argument("--wandb-project", default=None, help="also log to Weights & Biases (when installed)")
    g.add_argument("--eval-interval", type=int, default=10)
    g.add_argument("--rollout-dump", action="store_true", help="write every step's rollouts as jsonl")
    g.add_argument("--save", default=None)
    g.add_argument("--save-interval", type=int, default=None)
    g.add_argument("--load", default=None)
    g.add_argument(
        "--save-hf-interval",
        type=int,
        default=None,
        help="export an HF checkpoint (safetensors) every N steps and at the end",
    )
    g.add_argument("--save-hf", default=None, help="directory of HF exports (default: OUTPUT_DIR/hf)")
    g.add_argument("--save-hf-dtype", choices=["float32", "bfloat16", "float16"], default=None)
    g.add_argument("--keep-last-checkpoints", type=int, default=None, help="delete older iter_* directories")
    g.add_argument(
        "--on-nonfinite",
        choices=["skip", "stop"],
        default="skip",
        help="NaN/Inf loss or gradient: skip that update (counted) or stop, leaving the last checkpoint",
    )
    g.add_argument(
        "--max-consecutive-skips",
        type=int,
        default=10,
        help="stop (exit 3) after this many consecutive skipped non-finite updates (0: no limit)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an --output-dir that already holds one (its metrics, tensorboard and rollout dumps "
        "are removed); without it such a directory is refused unless the run resumes with --load",
    )
    g.add_argument("--no-progress-bar", action="store_true")
    from megatron_corew.rollout.config import add_rollout_args

    add_rollout_args(p)  # --rollout-backend {embedded,sglang}, --sglang-* flags
    from megatron_corew import offpolicy_options

    offpolicy_options.add_args(p)  # --rollout-is*, --num-steps-per-rollout, --dynamic-sampling*, --overlong-*
    add_colocate_args(p)
    from megatron_corew.rollout.pipeline import add_pipeline_args

    add_pipeline_args(p)  # --async-rollout, --max-staleness, --teacher-prefetch (docs/ASYNC.md)
    return p


def add_colocate_args(p) -> None:
    """Time-sharing the GPUs between training and generation (megatron_corew/colocation.py), and perf metrics."""
    g = p.add_argument_group("colocation and performance (slime's names)")
    g.add_argument(
        "--offload-train",
        action="store_true",
        help="between train phases move the trainer's weights, gradient buffers and optimizer state to (pinned) "
        "host memory, and back before the policy's next use",
    )
    g.add_argument(
        "--colocate",
        action="store_true",
        help="rollout engines share the trainer's GPUs: implies --offload-train; SGLang engines (CUDA) also release "
        "their weights and KV cache while the trainer trains and resume them to generate",
    )
    g.add_argument(
        "--peak-flops",
        type=float,
        default=None,
        help="peak dense FLOP/s of one device for perf/train_mfu (default: utils/perf.py's table by GPU name; "
        "on CPU without it the MFU is not logged)",
    )


def _plugins(argv: list[str]) -> list[str]:
    """The --reward-plugin modules, read before the parser is built (they add --reward-method choices)."""
    out = []
    for i, tok in enumerate(argv):
        if tok == "--reward-plugin" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif tok.startswith("--reward-plugin="):
            out.append(tok.split("=", 1)[1])
    return out


def parse_args(argv=None):
    from megatron_corew.rollout.config import split_sglang_passthrough

    argv = sys.argv[1:] if argv is None else list(argv)
    rewards.load_plugins(_plugins(argv))
    argv, passthrough = split_sglang_passthrough(argv)
    args = build_parser().parse_args(argv)
    args.sglang_passthrough = passthrough
    try:
        check_args(args)
    except FlagError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    return args


def check_args(args) -> None:
    """Fill the method's defaults and run the start-up checks (:mod:`megatron_corew.validation`); raises FlagError."""
    method = rewards.get_method(args.reward_method)
    if args.kl_loss_coef is None:
        args.kl_loss_coef = method.kl_coef
    for warning in validate(args, _defaults()):
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    if args.fp8_format:
        from megatron_corew.policy.model_builder import transformer_engine_available

        if not transformer_engine_available():
            raise FlagError(
                "--fp8-format needs Transformer Engine and a CUDA GPU; neither is "
                "available here (no silent fallback to bf16)"
            )


def _defaults() -> dict:
    p = build_parser()
    return {a.dest: a.default for a in p._actions}
