"""Flags of the off-policy and DAPO-era training options (docs/OFF_POLICY.md), the resolution of the off-policy
correction, and the naming of several validation sets; their ranges and rules are in megatron_corew/flags.py. Off by
default, except the correction of rollouts that can be stale (--async-rollout with --max-staleness >= 1,
--num-steps-per-rollout > 1): there --rollout-is defaults to tis."""

from __future__ import annotations

import os

from megatron_corew.algo.importance import FORMS, LEVELS, MODES


def add_args(p) -> None:
    g = p.add_argument_group("off-policy correction and DAPO options (docs/OFF_POLICY.md)")
    g.add_argument(
        "--rollout-is",
        choices=MODES,
        default=None,
        help="correct the train/rollout mismatch with the weight pi_old / pi_rollout on each token's policy-gradient "
        "loss: tis truncates it at --rollout-is-threshold, mis drops tokens/sequences outside its bounds "
        "(default: tis where rollouts can be stale under --off-policy-form decoupled, else none)",
    )
    g.add_argument(
        "--off-policy-form",
        choices=FORMS,
        default="decoupled",
        help="pi_old of the PPO ratio: decoupled = the policy before this rollout batch's updates, with the IS "
        "weight pi_old / pi_behaviour (--rollout-is) for the engine's staleness; bypass = the engine's behaviour "
        "log-probs, so the clip acts on the sampling policy (no IS weight)",
    )
    g.add_argument(
        "--rollout-is-level",
        choices=LEVELS,
        default="token",
        help="ratio per token, per sequence (exp of the summed log-ratio) or geometric (exp of the mean log-ratio)",
    )
    g.add_argument("--rollout-is-threshold", type=float, default=2.0, help="TIS clip C; MIS upper bound")
    g.add_argument(
        "--rollout-is-threshold-lower", type=float, default=None, help="MIS lower bound (default 1 / threshold)"
    )
    g.add_argument(
        "--num-steps-per-rollout",
        type=int,
        default=1,
        help="optimizer steps (mini-batches of whole prompts) per rollout batch; > 1 recomputes pi_old first",
    )
    g.add_argument(
        "--dynamic-sampling",
        action="store_true",
        help="DAPO: drop groups whose rewards have zero variance and refill the batch from more prompts",
    )
    g.add_argument(
        "--dynamic-sampling-max-rounds",
        type=int,
        default=3,
        help="extra generation rounds a step may spend refilling; then it trains on what it kept",
    )
    g.add_argument(
        "--overlong-buffer-len",
        type=int,
        default=0,
        help="DAPO soft overlong penalty: the last N tokens before --max-response-length lower the reward "
        "linearly to -factor (0: off)",
    )
    g.add_argument("--overlong-penalty-factor", type=float, default=1.0, help="the penalty at the length limit")
    g.add_argument(
        "--mask-truncated-responses",
        action="store_true",
        help="responses cut at --max-response-length (finish_reason length) take no part in the loss",
    )


def stale_rollouts(args) -> bool:
    """True where the policy that sampled a batch can differ from the one before its update: generated ahead of
    time (--async-rollout, --max-staleness >= 1) or trained by several optimizer steps."""
    async_ahead = getattr(args, "async_rollout", False) and getattr(args, "max_staleness", 0) >= 1
    return bool(async_ahead or args.num_steps_per_rollout > 1)


def resolve_off_policy(args, given, flag_error) -> list[str]:
    """Set ``args.rollout_is`` (None: not given) to its effective mode; refuse what cannot be right; return the
    one-line warnings; ``given(dest)``: set on the command line. Rules in docs/OFF_POLICY.md section 6."""
    explicit, form, stale = args.rollout_is, getattr(args, "off_policy_form", "decoupled"), stale_rollouts(args)
    top_p = getattr(args, "rollout_top_p", 1.0)
    warnings = []
    if form == "bypass" and explicit in ("tis", "mis"):
        raise flag_error(
            f"--rollout-is {explicit} does not apply to --off-policy-form bypass (pi_old is the behaviour policy: "
            "the weight is 1)"
        )
    if top_p < 1 and (explicit in ("tis", "mis") or form == "bypass"):
        what = f"--rollout-is {explicit}" if explicit in ("tis", "mis") else "--off-policy-form bypass"
        raise flag_error(
            f"{what} needs the behaviour log-probs, and with --rollout-top-p {top_p} the engine's are of the "
            "untruncated distribution"
        )
    if explicit is None:
        args.rollout_is = "tis" if stale and form == "decoupled" and top_p == 1 else "none"
        if stale and form == "decoupled" and top_p < 1:
            warnings.append(
                f"--rollout-top-p {top_p}: stale rollouts are trained without off-policy correction (the engine's "
                "log-probs are of the untruncated distribution)"
            )
    elif explicit == "none" and stale and form == "decoupled":
        warnings.append("--rollout-is none: stale rollouts are trained as on-policy, without off-policy correction")
    if form == "decoupled" and args.num_steps_per_rollout == 1:
        for dest in ("clip_ratio_low", "clip_ratio_high", "dual_clip_c"):
            if given(dest):
                raise flag_error(
                    f"--{dest.replace('_', '-')} has no effect: with one optimizer step per rollout and "
                    "--off-policy-form decoupled the PPO ratio is exactly 1 (use --num-steps-per-rollout > 1 or "
                    "--off-policy-form bypass)"
                )
    return warnings


def val_sets(specs) -> list[tuple[str, str]]:
    """``--val-data`` entries as (name, path): ``NAME=PATH`` or a path named by its file stem."""
    if not specs:
        return []
    if isinstance(specs, str):
        specs = [specs]
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or os.sep in name or not name:
            name, path = os.path.splitext(os.path.basename(spec))[0], spec
        out.append((name, path))
    return out


def validation_prefixes(names: list[str]) -> list[str]:
    """Metric prefix of each set: one set keeps ``val/`` (the names every tool reads); several get ``val/NAME/``."""
    return ["val/"] if len(names) == 1 else [f"val/{n}/" for n in names]


def mean_over_sets(metrics: dict, names: list[str]) -> dict:
    """Several sets: ``val/accuracy`` (and ``val/response_length``) as the unweighted mean over the sets, so the
    collapse monitor, the start/end log lines and result.json keep a single number."""
    if len(names) <= 1:
        return {}
    out = {}
    for key in ("accuracy", "response_length"):
        out[f"val/{key}"] = sum(metrics[f"val/{n}/{key}"] for n in names) / len(names)
    return out
