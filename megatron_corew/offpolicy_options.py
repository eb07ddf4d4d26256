"""Flags of the off-policy and DAPO-era training options (docs/OFF_POLICY.md) and the naming of several validation
sets; their ranges and rules are in megatron_corew/flags.py. All off by default: a run without them is bit for bit the run before them."""

from __future__ import annotations

import os

from megatron_corew.algo.importance import LEVELS, MODES


def add_args(p) -> None:
    g = p.add_argument_group("off-policy correction and DAPO options (docs/OFF_POLICY.md)")
    g.add_argument(
        "--rollout-is",
        choices=MODES,
        default="none",
        help="correct the train/rollout mismatch with the weight pi_old / pi_rollout on each token's policy-gradient "
        "loss: tis truncates it at --rollout-is-threshold, mis drops tokens/sequences outside its bounds",
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
