"""Several optimizer steps per rollout batch (``--num-steps-per-rollout N``, docs/OFF_POLICY.md section 2).

With N = 1 this is ``PolicyTrainer.train_step`` unchanged (decoupled: the old policy is the current one, ratio 1). With
N > 1 (decoupled) one forward pass before the first update records pi_old for every sample (bypass: pi_old is the
engine's behaviour log-prob, no pass); the batch is then cut into N mini-batches
of whole prompts (both views of a Co-rewarding-I pair stay together), each one optimizer step PPO-clipped against
that pi_old, so from the second step on the ratio moves away from 1 and the clip engages. Each mini-batch is
normalised to its own token mean (the loss of a mini-batch is a mean, as in verl/slime); the learning-rate
scheduler moves once per rollout batch, so ``--lr-warmup-fraction`` and the cosine keep counting RL steps.
"""

from __future__ import annotations


def split_keys(keys: list, n: int) -> list[list[int]]:
    """Sample indices in ``n`` (at most one per prompt) near-equal parts of consecutive distinct ``keys``
    (prompts), step order kept."""
    distinct = list(dict.fromkeys(keys))
    n = min(n, len(distinct))  # a batch dynamic sampling left short of prompts takes fewer, whole-prompt steps
    base, extra = divmod(len(distinct), n)
    part_of, start = {}, 0
    for p in range(n):
        size = base + (p < extra)
        for key in distinct[start : start + size]:
            part_of[key] = p
        start += size
    parts: list[list[int]] = [[] for _ in range(n)]
    for i, key in enumerate(keys):
        parts[part_of[key]].append(i)
    return parts


# token means of each mini-batch step, and the token count each is a mean over
_LOSS_TOKEN_MEANS = (
    "adv_abs_mean",
    "loss",
    "pg_loss",
    "kl",
    "entropy",
    "pg_clipfrac",
    "is_weight_mean",
    "is_masked_fraction",
)
_RESPONSE_TOKEN_MEANS = ("rollout_logprob_abs_diff",)


def _token_mean(results: list[dict], key: str, count: str) -> float:
    total = sum(r[count] for r in results)
    return sum(r[key] * r[count] for r in results) / total if total else 0.0


def combine(results: list[dict]) -> dict:
    """One step's metrics from the mini-batch steps: token means weighted by the tokens of each mini-batch (so a
    short mini-batch counts for its tokens, not as much as a long one), the max of maxima, sums of token counts,
    other values (grad norm) averaged over steps; the update counts as applied only when every mini-batch step was;
    ``pg_clipfrac_after_first`` shows the clip at work."""
    out: dict = {}
    for key in results[0]:
        values = [r[key] for r in results]
        if key == "update_ok":
            out[key] = all(values)
        elif key in ("response_tokens", "loss_tokens"):
            out[key] = sum(values)
        elif key.endswith("_max"):
            out[key] = max(values)
        elif key == "lr":
            out[key] = values[0]
        elif key in _LOSS_TOKEN_MEANS:
            out[key] = _token_mean(results, key, "loss_tokens")
        elif key in _RESPONSE_TOKEN_MEANS:
            out[key] = _token_mean(results, key, "response_tokens")
        else:
            out[key] = sum(values) / len(values)
    out["optimizer_steps"] = len(results)
    out["applied_steps"] = sum(bool(r["update_ok"]) for r in results)  # the weights changed if any was applied
    out["pg_clipfrac_after_first"] = _token_mean(results[1:], "pg_clipfrac", "loss_tokens") if results[1:] else 0.0
    return out


def train_rollout(trainer, samples: list, n_steps: int = 1, loss_scale: float = 1.0, keys=None) -> dict:
    """``n_steps`` optimizer steps on ``samples`` (split by ``keys``, one per sample; default: each its own)."""
    if n_steps == 1:
        return trainer.train_step(samples, loss_scale=loss_scale)
    if trainer.cfg.off_policy_form == "decoupled":  # bypass: pi_old is the engine's, no pass needed
        old = trainer.sequence_stats(samples, "policy", want=("logp",))
        for i, s in enumerate(samples):
            s.old_logprobs = old[i]["logp"]
    try:
        parts = split_keys(list(range(len(samples))) if keys is None else list(keys), n_steps)
        results = [
            trainer.train_step([samples[i] for i in part], loss_scale=loss_scale, step_scheduler=False)
            for part in parts
        ]
    finally:
        for s in samples:
            s.old_logprobs = None
    if any(r["update_ok"] for r in results):
        trainer.scheduler.step(1)
    return combine(results)
