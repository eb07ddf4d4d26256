"""Command-line flags: Megatron's names where Megatron has the concept, ours for the RL parts.

Defaults of the trainer's settings are read from ``TrainerConfig`` so each is written once; reward methods come
from the ``MethodSpec`` registry (``--reward-plugin MODULE`` registers more before the flags are parsed).
"""

from __future__ import annotations

import argparse
import os
import sys

from megatron_corew import flags, rewards
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
    g.add_argument("--tensor-model-parallel-size", type=int, default=1, help="tensor-parallel ranks (megatron-core TP)")
    g.add_argument("--pipeline-model-parallel-size", type=int, default=1, help="pipeline stages (megatron-core PP)")
    g.add_argument(
        "--use-distributed-optimizer", action="store_true", help="shard the optimizer state over data-parallel ranks"
    )
    g.add_argument("--bf16", action="store_true", help="bf16 params/compute (fp32 main weights)")
    g.add_argument(
        "--recompute-granularity",
        choices=["full", "selective"],
        default=None,
        help="activation recomputation: full layers or selective (attention only)",
    )
    g.add_argument(
        "--sequence-parallel",
        action="store_true",
        help="shard layer norms and dropout along the sequence over the TP ranks",
    )
    g.add_argument(
        "--overlap-grad-reduce", action="store_true", help="overlap the DP gradient all-reduce with the backward pass"
    )
    g.add_argument("--overlap-param-gather", action="store_true", help="needs --use-distributed-optimizer")
    g.add_argument(
        "--attention-backend",
        choices=["auto", "flash", "fused", "unfused", "local"],
        default=_T.attention_backend,
        help="megatron-core attention kernel (auto: the best available)",
    )
    g.add_argument(
        "--fp8-format",
        choices=["e4m3", "hybrid"],
        default=None,
        help="FP8 training format (needs Transformer Engine and a CUDA GPU)",
    )
    g.add_argument(
        "--fp8-recipe",
        choices=["delayed", "tensorwise", "blockwise"],
        default=None,
        help="FP8 scaling recipe (with --fp8-format)",
    )

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
    g.add_argument(
        "--max-val-samples",
        type=int,
        default=None,
        help="validate on the first N rows of each --val-data set (default: all)",
    )
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
    g.add_argument("--prompt-key", default="prompt", help="parquet column holding the chat prompt")
    g.add_argument(
        "--max-prompt-length",
        type=int,
        default=512,
        help="prompts longer than this many tokens are dropped (counted at start-up)",
    )
    g.add_argument("--max-response-length", type=int, default=3072, help="tokens generated per response at most")

    g = p.add_argument_group("optimisation (Megatron names)")
    g.add_argument("--global-batch-size", type=int, default=128, help="prompts (pairs for Co-rewarding-I) per step")
    g.add_argument("--micro-batch-size", type=int, default=_T.micro_batch_size, help="sequences per micro-batch")
    g.add_argument(
        "--max-tokens-per-micro-batch",
        type=int,
        default=None,
        help="padded layout: token budget per micro-batch (dynamic batching); overrides nothing, caps both",
    )
    g.add_argument(
        "--micro-batch-layout",
        choices=("packed", "padded"),
        default="packed",  # TrainerConfig keeps padded for library callers; see docs/TRAINING.md
        help="packed: whole sequences in one row (THD), token-balanced over DP ranks and micro-batches; "
        "padded: right-padded rows, one per sequence",
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
    g.add_argument(
        "--epochs", type=int, default=3, help="passes over the training prompts when --train-iters is not given"
    )
    g.add_argument("--lr", type=float, default=_T.lr, help="peak learning rate")
    g.add_argument("--min-lr", type=float, default=_T.min_lr, help="learning rate at the end of the cosine decay")
    g.add_argument(
        "--lr-warmup-fraction",
        type=float,
        default=_T.lr_warmup_fraction,
        help="fraction of the steps with linear warm-up",
    )
    g.add_argument("--weight-decay", type=float, default=_T.weight_decay, help="AdamW weight decay")
    g.add_argument(
        "--weight-decay-all-params",
        action="store_true",
        help="decay biases and norm weights too, as the reference does (megatron's default skips them)",
    )
    g.add_argument("--adam-beta1", type=float, default=_T.adam_beta1, help="Adam beta1")
    g.add_argument("--adam-beta2", type=float, default=_T.adam_beta2, help="Adam beta2")
    g.add_argument("--adam-eps", type=float, default=_T.adam_eps, help="Adam epsilon")
    g.add_argument("--clip-grad", type=float, default=_T.clip_grad, help="gradient-norm clip (0: none)")
    g.add_argument("--seed", type=int, default=1234, help="seed of the data order, sampling and initialisation")

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
    g.add_argument("--n-samples-per-prompt", type=int, default=8, help="responses sampled per prompt (the GRPO group)")
    g.add_argument(
        "--rollout-temperature", type=float, default=1.0, help="sampling temperature of the training rollouts"
    )
    g.add_argument("--rollout-top-p", type=float, default=1.0, help="nucleus sampling top-p of the training rollouts")
    g.add_argument("--kl-loss-coef", type=float, default=None, help="default: the method's reference value")
    g.add_argument(
        "--kl-loss-type",
        choices=["k1", "k2", "k3", "low_var_kl"],
        default=_T.kl_estimator,
        help="KL estimator of the KL loss",
    )
    g.add_argument("--entropy-coef", type=float, default=_T.entropy_coef, help="entropy bonus coefficient")
    inert = (
        " (acts only where the PPO ratio can differ from 1: --num-steps-per-rollout > 1 or --off-policy-form bypass)"
    )
    g.add_argument(
        "--clip-ratio-low", type=float, default=_T.clip_low, help="PPO clip: lower ratio bound 1 - this" + inert
    )
    g.add_argument(
        "--clip-ratio-high", type=float, default=_T.clip_high, help="PPO clip: upper ratio bound 1 + this" + inert
    )
    g.add_argument(
        "--dual-clip-c", type=float, default=_T.dual_clip, help="dual-clip bound of negative-advantage losses" + inert
    )
    g.add_argument("--no-std-normalization", action="store_true", help="Dr.GRPO advantages")
    g.add_argument(
        "--label-matching",
        choices=["exact", "equiv"],
        default=None,
        help="pseudo-label voting: raw string equality (the reference) or equivalence clusters; default: the "
        "method's (exact, equiv for corewarding_3)",
    )
    g.add_argument(
        "--gt-grading",
        choices=["reference", "equiv"],
        default="reference",
        help="ground-truth grading: the reference's string normalisation or equivalence",
    )
    g.add_argument("--random-reward-p", type=float, default=0.5, help="random_reward: the probability of a reward of 1")
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
    g.add_argument("--teacher-update-interval", type=int, default=1, help="EMA teacher update every N steps")
    g.add_argument(
        "--teacher-alpha-start",
        type=float,
        default=0.01,
        help="EMA weight of the policy at the first step (cosine schedule)",
    )
    g.add_argument("--teacher-alpha-end", type=float, default=1e-5, help="EMA weight of the policy at the last step")
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
    g.add_argument(
        "--output-dir",
        default="runs/default",
        help="run directory: metrics.jsonl, result.json, tensorboard, rollout dumps",
    )
    g.add_argument(
        "--tensorboard-dir", default=None, help="tensorboard event directory (default: OUTPUT_DIR/tensorboard)"
    )
    g.add_argument("--wandb-project", default=None, help="also log to Weights & Biases (when installed)")
    g.add_argument(
        "--eval-interval", type=int, default=10, help="validate every N steps (0: only before and after training)"
    )
    g.add_argument("--rollout-dump", action="store_true", help="write every step's rollouts as jsonl")
    g.add_argument("--save", default=None, help="directory of RL checkpoints (iter_*/ and latest)")
    g.add_argument("--save-interval", type=int, default=None, help="write a checkpoint every N steps and at the end")
    g.add_argument("--load", default=None, help="resume the run from this --save directory")
    g.add_argument(
        "--save-hf-interval",
        type=int,
        default=None,
        help="export an HF checkpoint (safetensors) every N steps and at the end",
    )
    g.add_argument("--save-hf", default=None, help="directory of HF exports (default: OUTPUT_DIR/hf)")
    g.add_argument(
        "--save-hf-dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="dtype of the HF exports (default: the training dtype)",
    )
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
    g.add_argument("--no-progress-bar", action="store_true", help="no tqdm progress bar")
    from megatron_corew.rollout.config import add_rollout_args

    add_rollout_args(p)  # --rollout-backend {embedded,sglang}, --sglang-* flags
    from megatron_corew import offpolicy_options

    offpolicy_options.add_args(p)  # --rollout-is*, --num-steps-per-rollout, --dynamic-sampling*, --overlong-*
    add_colocate_args(p)
    add_pipeline_args(p)  # --async-rollout, --max-staleness, --teacher-prefetch (docs/ASYNC.md)
    for action in p._actions:  # each flag's range and resume rule from the one table (megatron_corew/flags.py)
        if action.help is not None:
            action.help += flags.help_suffix(action.dest)
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


def add_pipeline_args(parser) -> None:
    g = parser.add_argument_group("rollout pipelining (docs/ASYNC.md)")
    g.add_argument(
        "--async-rollout",
        action="store_true",
        help="one-step off-policy: generate step k+1's rollouts (rank 0, background thread) while step k trains",
    )
    g.add_argument(
        "--max-staleness",
        type=int,
        default=1,
        help="with --async-rollout: generate up to this many steps ahead; a trained sample may lag the trainer's "
        "weights by at most this many versions (0: the synchronous schedule)",
    )
    g.add_argument(
        "--async-mode",
        choices=["pipeline", "fully-async"],
        default="pipeline",
        help="with --async-rollout: pipeline = whole steps generated ahead, a weight sync waits for the requests in "
        "flight; fully-async = the engine decodes continuously, a weight sync interrupts the requests in flight "
        "and resumes them on the new weights (partial rollouts), and each step takes its whole groups "
        "(--max-staleness bounds every token's age)",
    )
    g.add_argument(
        "--stale-samples",
        choices=["regenerate", "drop"],
        default="regenerate",
        help="with --async-mode fully-async: a group whose oldest token lags the trainer by more than "
        "--max-staleness is generated again from the current weights (regenerate) or left out of its step (drop)",
    )
    g.add_argument(
        "--teacher-prefetch",
        action="store_true",
        help="Co-rewarding-II: the teacher answers step k+1's questions while step k trains (its labels come "
        "from the teacher one EMA step older)",
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
    if args.label_matching is None:
        args.label_matching = method.label_matching
    if args.fp8_format:
        from megatron_corew.policy.model_builder import transformer_engine_available

        if not transformer_engine_available():
            raise FlagError(
                "--fp8-format needs Transformer Engine and a CUDA GPU; neither is "
                "available here (no silent fallback to bf16)"
            )
    if args.sequence_parallel:
        from megatron_corew.policy.model_builder import transformer_engine_available

        if not transformer_engine_available():  # megatron's local layer spec has no sequence-parallel norm
            raise FlagError("--sequence-parallel needs Transformer Engine and a CUDA GPU; neither is available here")


def _defaults() -> dict:
    p = build_parser()
    return {a.dest: a.default for a in p._actions}
