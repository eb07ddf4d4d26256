"""Off-policy correction and the DAPO-era options (docs/OFF_POLICY.md): importance sampling against a float64
reference written out here, several optimizer steps per rollout (the clip engages from step 2 on), dynamic
sampling, the soft overlong penalty and truncation masking on hand-built batches, several validation sets, their
flag checks, and one 2-step run with everything on (e2e)."""

import json
import math
import os
from types import SimpleNamespace

import pytest
import torch
from helpers import WORKERS, assert_real_signal, make_tiny_hf_model, read_metrics, run_python_worker, run_train

from megatron_corew.algo import dynamic_sampling, grpo, importance, shaping
from megatron_corew.policy import packing
from megatron_corew.records import Prompt, Rollout, StepBatch
from megatron_corew.rollout.base import Generation


# ---------------------------------------------------------------- importance sampling, float64 reference
class _S:
    def __init__(self, prompt, rollout_logprobs, adv):
        self.prompt_ids, self.response_ids = prompt, [5] * len(rollout_logprobs)
        self.rollout_logprobs, self.advantage = rollout_logprobs, adv

    @property
    def length(self):
        return len(self.prompt_ids) + len(self.response_ids)


def _reference(samples, lp, old, weights, mode, level, high, low, clip=0.2, dual=3.0):
    """Plain float64, one token at a time: PPO-clip loss times the IS weight; returns (loss, d loss / d lp)."""
    lp = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in lp]
    total = torch.zeros((), dtype=torch.float64)
    for i, s in enumerate(samples):
        rows = [o - r for o, r in zip(old[i], s.rollout_logprobs)]
        if level == "sequence":
            seq = math.exp(min(max(sum(rows), -20.0), 20.0))
        elif level == "geometric":
            seq = math.exp(sum(rows) / len(rows))
        for t in range(len(rows)):
            rho = math.exp(rows[t]) if level == "token" else seq
            if mode == "tis":
                w = min(rho, high)
            else:
                w = rho if low <= rho <= high else 0.0
            A = s.advantage
            ratio = torch.exp(lp[i][t] - old[i][t])
            pg = torch.maximum(-A * ratio, -A * torch.clamp(ratio, 1 - clip, 1 + clip))
            if A < 0:
                pg = torch.minimum(pg, torch.tensor(-A * dual, dtype=torch.float64))
            total = total + weights[i] * w * pg
    total.backward()
    return total.item(), [x.grad.tolist() for x in lp]


@pytest.mark.parametrize("mode", ["tis", "mis"])
@pytest.mark.parametrize("level", ["token", "sequence", "geometric"])
def test_is_loss_and_gradient_match_float64_reference(mode, level):
    g = torch.Generator().manual_seed(3)
    lengths, advs = [4, 7, 2, 5], [1.3, -0.7, 0.4, -1.6]
    old = [(-torch.rand(n, generator=g, dtype=torch.float64) * 3).tolist() for n in lengths]
    rollout = [[o + 0.4 * float(torch.randn((), generator=g)) for o in row] for row in old]
    lp = [[o + 0.3 * float(torch.randn((), generator=g)) for o in row] for row in old]  # a later policy: clip acts
    samples = [_S([7, 8, 9][: 1 + i % 3], r, a) for i, (r, a) in enumerate(zip(rollout, advs))]
    weights = [0.05, 0.02, 0.1, 0.03]
    high, low = (1.5, None) if mode == "tis" else (1.15, 0.87)
    mb = packing.padded_microbatch(samples, list(range(4)), weights)

    def grid(rows):  # per-sample token lists into the micro-batch's [rows, width] layout
        out = torch.zeros(mb["mask"].numel(), dtype=torch.float32)
        for k, row in enumerate(rows):
            out[mb["first"][k] : mb["first"][k] + len(row)] = torch.tensor(row)
        return out.view(mb["mask"].shape)

    logp = grid(lp).requires_grad_(True)
    oldt = grid(old)
    pg, _ = grpo.ppo_clip_losses(logp, oldt, mb["adv"], 0.2, 0.2, 3.0)
    corr = importance.ISCorrection(mode, level, high, low)
    loss = (corr.correct(pg, oldt, mb) * mb["weight"] * mb["mask"]).sum()
    loss.backward()
    ref_loss, ref_grad = _reference(
        samples,
        lp,
        [grid(old).view(-1)[mb["first"][k] : mb["first"][k] + n].tolist() for k, n in enumerate(lengths)],
        weights,
        mode,
        level,
        high,
        1.0 / high if low is None else low,
    )
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5, abs=1e-7)
    flat = logp.grad.view(-1)
    for k, n in enumerate(lengths):
        got = flat[mb["first"][k] : mb["first"][k] + n].tolist()
        assert got == pytest.approx(ref_grad[k], rel=1e-5, abs=1e-7), (k, got, ref_grad[k])
    m = corr.metrics(contributes=True)
    assert 0 <= m["is_masked_fraction"] <= 1 and m["is_weight_max"] <= high + 1e-6
    if mode == "mis":  # the thresholds were chosen so that some tokens/sequences are dropped
        assert m["is_masked_fraction"] > 0


def test_is_ratio_one_when_engine_and_trainer_agree():
    lp = torch.randn(2, 6)
    mb = {"mask": torch.ones(2, 6), "rollout_logp": lp.clone(), "first": [0, 6], "lengths": [6, 6]}
    pg = torch.randn(2, 6)
    for mode in ("tis", "mis"):
        for level in importance.LEVELS:
            corr = importance.ISCorrection(mode, level, 2.0)
            out = corr.correct(pg, lp, mb)
            assert torch.equal(out, pg), (mode, level)  # bitwise: the weight is exactly 1
            assert corr.metrics(True) == {"is_weight_mean": 1.0, "is_weight_max": 1.0, "is_masked_fraction": 0.0}
    assert importance.ISCorrection().correct(pg, lp, mb) is pg and importance.ISCorrection().metrics(True) == {}


def _form_reference(form, samples, lp, prox, weights, high, clip=0.2, dual=3.0):
    """Plain float64, one token at a time, of each off-policy form; returns (loss, d loss / d lp).
    decoupled: w = min(pi_prox / pi_behaviour, C) times the PPO clip of pi / pi_prox.
    bypass: the PPO clip of pi / pi_behaviour, no weight."""
    lp = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in lp]
    total = torch.zeros((), dtype=torch.float64)
    for i, s in enumerate(samples):
        for t, beh in enumerate(s.rollout_logprobs):
            if form == "decoupled":
                w, ref = min(math.exp(prox[i][t] - beh), high), prox[i][t]
            else:
                w, ref = 1.0, beh
            A = s.advantage
            ratio = torch.exp(lp[i][t] - ref)
            pg = torch.maximum(-A * ratio, -A * torch.clamp(ratio, 1 - clip, 1 + clip))
            if A < 0:
                pg = torch.minimum(pg, torch.tensor(-A * dual, dtype=torch.float64))
            total = total + weights[i] * w * pg
    total.backward()
    return total.item(), [x.grad.tolist() for x in lp]


@pytest.mark.parametrize("form", importance.FORMS)
def test_off_policy_forms_loss_and_gradient_match_float64(form):
    """Stale rollouts: the engine sampled with pi_behaviour, the policy before this update was pi_prox, the
    policy being updated is pi. Loss and gradient of the trainer's policy-gradient term (the function its loss
    calls) against the float64 formula of each form."""
    g = torch.Generator().manual_seed(7)
    lengths, advs = [5, 3, 6], [1.1, -0.9, -1.7]
    prox = [(-torch.rand(n, generator=g, dtype=torch.float64) * 3).tolist() for n in lengths]
    beh = [[o + 0.5 * float(torch.randn((), generator=g)) for o in row] for row in prox]  # older weights
    lp = [[o + 0.3 * float(torch.randn((), generator=g)) for o in row] for row in prox]
    samples = [_S([7, 8][: 1 + i % 2], b, a) for i, (b, a) in enumerate(zip(beh, advs))]
    for s, p in zip(samples, prox):
        s.old_logprobs = p  # recorded before the first update (policy/multistep.py)
    weights, high = [0.04, 0.1, 0.03], 1.6
    mb = packing.padded_microbatch(samples, list(range(3)), weights)
    flat = torch.zeros(mb["mask"].numel(), dtype=torch.float32)
    for k, row in enumerate(lp):
        flat[mb["first"][k] : mb["first"][k] + len(row)] = torch.tensor(row)
    logp = flat.view(mb["mask"].shape).requires_grad_(True)
    corr = importance.ISCorrection("tis" if form == "decoupled" else "none", "token", high)
    pg, _ = importance.policy_gradient_loss(logp, mb, form, corr, 0.2, 0.2, 3.0)
    loss = (pg * mb["weight"] * mb["mask"]).sum()
    loss.backward()
    ref_loss, ref_grad = _form_reference(form, samples, lp, prox, weights, high)
    other_loss, _ = _form_reference("bypass" if form == "decoupled" else "decoupled", samples, lp, prox, weights, high)
    assert abs(ref_loss - other_loss) > 1e-3  # the two forms differ on this batch: the test can tell them apart
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5, abs=1e-7)
    got = logp.grad.view(-1)
    for k, n in enumerate(lengths):
        row = got[mb["first"][k] : mb["first"][k] + n].tolist()
        assert row == pytest.approx(ref_grad[k], rel=1e-5, abs=1e-7), (form, k, row, ref_grad[k])
    assert any(x != 0 for r in ref_grad for x in r)
    if form == "decoupled":
        assert corr.metrics(True)["is_weight_max"] == pytest.approx(high)  # some weights truncated at C


def test_is_statistics_count_only_tokens_the_loss_keeps():
    """A sample masked out of the loss (--mask-truncated-responses: token weight 0) leaves the IS statistics alone:
    weight mean and max over the kept sample's tokens only (hand-computed: ratios e^0.1, e^-0.2 vs a masked e^1)."""
    kept, masked = _S([7, 8], [-1.0, -2.0], 1.0), _S([7], [-3.0], 1.0)
    mb = packing.padded_microbatch([kept, masked], [0, 1], [0.5, 0.0])
    old = torch.zeros_like(mb["mask"])
    for k, row in enumerate([[-0.9, -2.2], [-2.0]]):
        old.view(-1)[mb["first"][k] : mb["first"][k] + len(row)] = torch.tensor(row)
    mb["live"] = mb["mask"] * (mb["weight"] != 0)  # as the trainer's loss sets it
    corr = importance.ISCorrection("tis", "token", 5.0)
    corr.correct(torch.zeros_like(old), old, mb)
    m = corr.metrics(True)
    assert m["is_weight_mean"] == pytest.approx((math.exp(0.1) + math.exp(-0.2)) / 2, rel=1e-6)
    assert m["is_weight_max"] == pytest.approx(math.exp(0.1), rel=1e-6)


# ---------------------------------------------------------------- trainer level (one worker process)
@pytest.fixture(scope="module")
def worker_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("offpolicy")
    model = make_tiny_hf_model(str(root / "model"), "qwen2")
    g = torch.Generator().manual_seed(11)
    rows = []
    for k in range(6):
        p, n = 3 + k % 3, 4 + (3 * k) % 7
        rows.append(
            {
                "prompt": torch.randint(3, 99, (p,), generator=g).tolist(),
                "response": torch.randint(3, 99, (n,), generator=g).tolist(),
                "adv": [1.0, -1.0, 0.5, -0.5, 2.0, -2.0][k],
            }
        )
    spath, out = str(root / "samples.json"), str(root / "out.json")
    with open(spath, "w") as f:
        json.dump(rows, f)
    run_python_worker(
        os.path.join(WORKERS, "offpolicy_worker.py"), ["--model", model, "--samples", spath, "--out", out]
    )
    with open(out) as f:
        return rows, json.load(f)


def test_trainer_is_agreement_leaves_the_step_bitwise_unchanged(worker_results):
    _, res = worker_results
    base = res["agree"]["none"]
    for name, r in res["agree"].items():
        assert r["loss"] == base["loss"] and r["digest"] == base["digest"], name
        if name != "none":
            assert r["is_weight_mean"] == 1.0 and r["is_weight_max"] == 1.0 and r["is_masked_fraction"] == 0.0


def test_trainer_is_loss_on_injected_mismatch_matches_float64(worker_results):
    rows, res = worker_results
    own, noisy = res["own_logp"], res["noisy_logp"]
    total = sum(len(r["response"]) for r in rows)
    for name, m in res["mismatch"].items():
        mode, level = name.split(":")
        ref, dropped = 0.0, 0
        for r, o, b in zip(rows, own, noisy):
            d = [x - y for x, y in zip(o, b)]
            seq = math.exp(max(min(sum(d), 20), -20)) if level == "sequence" else math.exp(sum(d) / len(d))
            for t in range(len(d)):
                rho = math.exp(d[t]) if level == "token" else seq
                w = min(rho, 1.5) if mode == "tis" else (rho if 0.7 <= rho <= 1.5 else 0.0)
                dropped += w == 0.0
                ref += -r["adv"] * w / total  # ratio pi/pi_old is 1 on one step: the PPO term is -A
        assert m["loss"] == pytest.approx(ref, rel=1e-5, abs=1e-7), name
        assert m["is_masked_fraction"] == pytest.approx(dropped / total), name


def test_trainer_bypass_loss_on_injected_mismatch_matches_float64(worker_results):
    """--off-policy-form bypass at trainer level: the step's loss is the PPO clip of pi / pi_behaviour (pi: the
    trainer's own log-probs before the update), recomputed here in float64."""
    rows, res = worker_results
    total = sum(len(r["response"]) for r in rows)
    ref = 0.0
    for r, o, b in zip(rows, res["own_logp"], res["noisy_logp"]):
        A = r["adv"]
        for x, y in zip(o, b):
            ratio = math.exp(x - y)
            pg = max(-A * ratio, -A * min(max(ratio, 0.8), 1.2))
            if A < 0:
                pg = min(pg, -A * 3.0)
            ref += pg / total
    assert res["bypass"]["loss"] == pytest.approx(ref, rel=1e-5, abs=1e-7)
    assert res["bypass"]["pg_clipfrac"] > 0 and res["bypass"]["grad_norm"] > 0  # the clip acts on this batch


def test_masked_samples_count_as_absent(worker_results):
    _, res = worker_results
    assert res["masked"]["loss"] == pytest.approx(res["subset"]["loss"], rel=1e-6, abs=1e-8)
    assert res["masked"]["grad_norm"] == pytest.approx(res["subset"]["grad_norm"], rel=1e-5)
    # the logged token means count only the tokens the loss keeps
    assert res["masked"]["entropy"] == pytest.approx(res["subset"]["entropy"], rel=1e-6)
    assert res["masked"]["loss_tokens"] == res["subset"]["response_tokens"] < res["masked"]["response_tokens"]


def test_several_steps_per_rollout_engage_the_clip(worker_results):
    _, res = worker_results
    steps = res["multi_steps"]
    assert len(steps) == 3 and res["one_step"]["pg_clipfrac"] == 0.0
    assert steps[0]["pg_clipfrac"] == 0.0  # pi_old recomputed = the weights of the first update
    assert all(s["pg_clipfrac"] > 0 for s in steps[1:]), [s["pg_clipfrac"] for s in steps]
    assert res["multi"]["pg_clipfrac_after_first"] > 0
    assert sum(s["response_tokens"] for s in steps) == res["one_step"]["response_tokens"]
    lr0, lr1 = res["multi_lr"]  # the scheduler moved once for the whole rollout batch (cosine over 10 steps)
    assert lr0 == steps[0]["lr"] == steps[2]["lr"]
    assert lr1 == pytest.approx(5e-2 * 0.5 * (1 + math.cos(math.pi * 1 / 10)), rel=1e-6)


def test_multistep_metrics_are_token_weighted():
    """Mini-batch steps of 10 and 30 loss tokens: a token mean of the rollout batch weighs each step by its tokens
    (hand-computed), the grad norm is the mean over steps, counts add up."""
    from megatron_corew.policy import multistep

    a = {"loss": 1.0, "entropy": 2.0, "pg_clipfrac": 0.0, "grad_norm": 1.0, "lr": 0.1, "update_ok": True}
    b = {"loss": 3.0, "entropy": 4.0, "pg_clipfrac": 0.4, "grad_norm": 3.0, "lr": 0.1, "update_ok": True}
    a.update(loss_tokens=10, response_tokens=12, rollout_logprob_abs_diff=0.1, is_weight_max=1.5)
    b.update(loss_tokens=30, response_tokens=36, rollout_logprob_abs_diff=0.5, is_weight_max=1.2)
    m = multistep.combine([a, b])
    assert m["loss"] == pytest.approx((10 * 1.0 + 30 * 3.0) / 40)
    assert m["entropy"] == pytest.approx((10 * 2.0 + 30 * 4.0) / 40)
    assert m["pg_clipfrac"] == pytest.approx(0.3) and m["pg_clipfrac_after_first"] == pytest.approx(0.4)
    assert m["rollout_logprob_abs_diff"] == pytest.approx((12 * 0.1 + 36 * 0.5) / 48)
    assert (
        m["applied_steps"] == 2
        and m["grad_norm"] == 2.0
        and m["is_weight_max"] == 1.5
        and m["lr"] == 0.1
        and m["update_ok"]
    )
    assert (m["loss_tokens"], m["response_tokens"], m["optimizer_steps"]) == (40, 48, 2)


# ---------------------------------------------------------------- overlong, truncation, dynamic sampling
def _rollout(n_tokens, finish="stop", reward=0.0, group=0, prompt=None):
    gen = Generation([1, 2], [4] * n_tokens, [0.0] * n_tokens, finish)
    r = Rollout(prompt or Prompt(None), group, gen)
    r.reward = reward
    return r


def test_overlong_penalty_hand_built():
    # L_max 20, buffer 5: free up to 15 tokens, then linear to -factor at 20
    rs = [_rollout(n, reward=1.0) for n in (10, 15, 16, 18, 20)]
    m = shaping.apply_overlong_penalty(rs, 20, 5, 1.0)
    assert [r.reward for r in rs] == pytest.approx([1.0, 1.0, 0.8, 0.4, 0.0])
    assert m == pytest.approx({"rollout/overlong_penalty_mean": -0.36, "rollout/overlong_penalized_fraction": 0.6})
    assert shaping.overlong_penalty(20, 20, 5, 0.5) == -0.5 and shaping.overlong_penalty(99, 20, 0, 1.0) == 0.0


def test_truncated_responses_masked_hand_built():
    rs = [_rollout(3), _rollout(8, "length"), _rollout(2), _rollout(8, "length")]
    assert shaping.mask_truncated(rs) == {"rollout/truncated_masked_fraction": 0.5}
    assert [r.loss_mask for r in rs] == [1.0, 0.0, 1.0, 0.0]
    # in the token weights a masked sample counts as absent: the others share 1 / (3 + 2) per token
    keep = [r.loss_mask for r in rs]
    w = grpo.token_weights([3 * keep[0], 0, 2, 0], [0] * 4)
    assert [x * k for x, k in zip(w, keep)] == [0.2, 0.0, 0.2, 0.0]


def _batch(group_rewards, step=0, view=0):
    prompts = [Prompt(SimpleNamespace(ground_truth=None), view, k) for k in range(len(group_rewards))]
    b = StepBatch(step, prompts, len(group_rewards[0]), indices=list(range(len(group_rewards))))
    b.rollouts = [_rollout(2, reward=x, group=k, prompt=prompts[k]) for k, g in enumerate(group_rewards) for x in g]
    b.labels = [f"L{k}" for k in range(len(group_rewards))]
    return b


def test_zero_variance_groups_hand_built():
    assert dynamic_sampling.signal_groups([[1, 1, 1], [0, 1, 0], [0, 0, 0], [0.5, 0.5, 0.4]]) == [
        False,
        True,
        False,
        True,
    ]


def test_label_free_groups_all_or_none_matching_carry_no_signal():
    from megatron_corew import rewards

    # majority vote: all answers agree (all match the label) / none boxed (empty label: none match) / mixed
    answers = [["3", "3", "3", "3"], ["", "", "", ""], ["3", "4", "3", "5"]]
    b = _batch([[0.0] * 4] * 3)
    for r, a in zip(b.rollouts, [a for g in answers for a in g]):
        r.answer = a
    b.labels = []
    rewards.score_batch(b, rewards.get_method("majority_vote"), rewards.ScoreOptions("exact", "reference", None))
    assert [[r.reward for r in g] for g in b.groups()] == [[1.0] * 4, [0.0] * 4, [1.0, 0.0, 1.0, 0.0]]
    assert dynamic_sampling.signal_groups([[r.reward for r in g] for g in b.groups()]) == [False, False, True]


def _rounds(rounds, max_rounds):
    """The real refill loop (``RolloutGenerator.dynamic_rounds``) with the rest of a round stood in for: round k's
    groups get the rewards written here instead of generated and scored ones."""

    from megatron_corew.rollout.generation import PromptSource, RolloutGenerator

    calls = iter(range(1, len(rounds)))
    prompts = PromptSource(lambda step, round=0: _batch(rounds[next(calls)], step), None, None)
    args = SimpleNamespace(dynamic_sampling_max_rounds=max_rounds)
    gen = RolloutGenerator(args, None, prompts, 1, False)
    return lambda first, m: gen.dynamic_rounds(first, lambda batch: None, m)


ROUNDS = [
    [[1, 1], [0, 1], [0, 0]],  # round 0: keeps group 1
    [[0, 0], [1, 1], [0, 0]],  # round 1: keeps nothing
    [[1, 0], [0, 1], [1, 0]],  # round 2: three with signal, two needed
]


def test_dynamic_sampling_refills_and_counts():
    m = {}
    out = _rounds(ROUNDS, 5)(_batch(ROUNDS[0]), m)
    assert m == {
        "rollout/dynamic_generation_rounds": 3,
        "rollout/dynamic_dropped_groups": 2 + 3 + 0,
        "rollout/dynamic_kept_groups": 3,
        "rollout/dynamic_cap_hit": 0.0,
    }
    assert [[r.reward for r in g] for g in out.groups()] == [[0, 1], [1, 0], [0, 1]]
    assert [r.group for r in out.rollouts] == [0, 0, 1, 1, 2, 2]
    assert [p.pair_id for p in out.prompts] == [1, 2 * 3 + 0, 2 * 3 + 1]  # unique across rounds
    assert out.labels == ["L1", "L0", "L1"]


def test_dynamic_sampling_cap_trains_on_what_is_kept():
    m = {}
    out = _rounds(ROUNDS, 1)(_batch(ROUNDS[0]), m)
    assert m["rollout/dynamic_generation_rounds"] == 2 and m["rollout/dynamic_cap_hit"] == 1.0
    assert m["rollout/dynamic_kept_groups"] == 1 and len(out.prompts) == 1
    first = _batch([[1, 1], [0, 0], [1, 1]])
    m = {}
    assert _rounds([None, [[0, 0]] * 3], 1)(first, m) is first  # nothing kept
    assert m["rollout/dynamic_kept_groups"] == 0


def test_dynamic_sampling_views_are_separate_groups():
    # Co-rewarding-I: pair 0's view 0 has no signal, its view 1 has: only the view-1 group stays
    b = _batch([[1, 1], [1, 0]])
    b.prompts = [Prompt(object(), 0, 0), Prompt(object(), 1, 0)]
    keep = dynamic_sampling.signal_groups([[r.reward for r in g] for g in b.groups()])
    out = dynamic_sampling.merge([(b, keep)], 2)
    assert keep == [False, True] and [p.view for p in out.prompts] == [1]


# ---------------------------------------------------------------- several validation sets, flags
def test_val_sets_names_and_metrics():
    from megatron_corew import offpolicy_options as o

    assert o.val_sets(["d/math.parquet", "gsm=e/test.parquet"]) == [
        ("math", "d/math.parquet"),
        ("gsm", "e/test.parquet"),
    ]
    assert o.val_sets("v.parquet") == [("v", "v.parquet")]
    assert o.validation_prefixes(["v"]) == ["val/"] and o.validation_prefixes(["a", "b"]) == ["val/a/", "val/b/"]
    m = {"val/a/accuracy": 0.5, "val/b/accuracy": 0.25, "val/a/response_length": 10, "val/b/response_length": 20}
    assert o.mean_over_sets(m, ["a", "b"]) == {"val/accuracy": 0.375, "val/response_length": 15}
    assert o.mean_over_sets({"val/accuracy": 1}, ["v"]) == {}


def _flag_error(bundle, tmp_path, capsys, *flags):
    from megatron_corew.arguments import parse_args

    base = ["--hf-checkpoint", bundle["model"], "--train-data", bundle["train"], "--output-dir", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as e:
        parse_args(base + list(flags))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_offpolicy_flag_errors(tiny_bundle, tmp_path, capsys):
    cases = [
        (
            ["--rollout-is", "tis", "--rollout-is-threshold", "0.5"],
            "--rollout-is-threshold 0.5 is out of range; valid: [1, inf)",
        ),
        (["--rollout-is-level", "sequence"], "--rollout-is-level does not apply without --rollout-is tis|mis"),
        (
            ["--rollout-is", "tis", "--rollout-is-threshold-lower", "0.5"],
            "--rollout-is-threshold-lower does not apply to --rollout-is tis (it truncates above only)",
        ),
        (["--num-steps-per-rollout", "0"], "--num-steps-per-rollout 0 is out of range; valid: [1, inf)"),
        (
            ["--num-steps-per-rollout", "5", "--global-batch-size", "4"],
            "--num-steps-per-rollout 5 exceeds --global-batch-size 4 (each step needs at least one prompt)",
        ),
        (
            ["--dynamic-sampling-max-rounds", "2"],
            "--dynamic-sampling-max-rounds does not apply without --dynamic-sampling",
        ),
        (
            ["--overlong-penalty-factor", "0.5"],
            "--overlong-penalty-factor does not apply without --overlong-buffer-len",
        ),
        (
            ["--overlong-buffer-len", "40", "--max-response-length", "32"],
            "--overlong-buffer-len 40 must be below --max-response-length 32",
        ),
        (
            ["--val-data", "a/v.parquet", "b/v.parquet"],
            "--val-data names v more than once; name them NAME=PATH",
        ),
        (
            ["--clip-ratio-high", "0.28"],
            "--clip-ratio-high has no effect: with one optimizer step per rollout and --off-policy-form decoupled "
            "the PPO ratio is exactly 1 (use --num-steps-per-rollout > 1 or --off-policy-form bypass)",
        ),
        (
            ["--async-rollout", "--dual-clip-c", "2"],
            "--dual-clip-c has no effect: with one optimizer step per rollout and --off-policy-form decoupled "
            "the PPO ratio is exactly 1 (use --num-steps-per-rollout > 1 or --off-policy-form bypass)",
        ),
        (
            ["--off-policy-form", "bypass", "--rollout-is", "tis"],
            "--rollout-is tis does not apply to --off-policy-form bypass (pi_old is the behaviour policy: the "
            "weight is 1)",
        ),
        (
            ["--rollout-is", "mis", "--rollout-top-p", "0.9"],
            "--rollout-is mis needs the behaviour log-probs, and with --rollout-top-p 0.9 the engine's are of the "
            "untruncated distribution",
        ),
        (
            ["--off-policy-form", "bypass", "--rollout-top-p", "0.9"],
            "--off-policy-form bypass needs the behaviour log-probs, and with --rollout-top-p 0.9 the engine's are "
            "of the untruncated distribution",
        ),
        (
            ["--sequence-parallel"],
            "--sequence-parallel needs Transformer Engine and a CUDA GPU; neither is available here",
        ),
    ]
    for flags, message in cases:
        assert _flag_error(tiny_bundle, tmp_path, capsys, *flags) == "error: " + message, flags


def test_off_policy_correction_is_the_default_where_rollouts_can_be_stale(tiny_bundle, tmp_path, capsys):
    from megatron_corew.arguments import parse_args

    base = ["--hf-checkpoint", tiny_bundle["model"], "--train-data", tiny_bundle["train"]]
    base += ["--output-dir", str(tmp_path / "o")]
    cases = [
        ([], "none", None),
        (["--async-rollout"], "tis", None),  # --max-staleness 1 by default
        (["--async-rollout", "--max-staleness", "0"], "none", None),  # the synchronous schedule
        (["--num-steps-per-rollout", "2"], "tis", None),
        (["--num-steps-per-rollout", "2", "--clip-ratio-high", "0.28"], "tis", None),  # the ratio moves: accepted
        (["--async-rollout", "--off-policy-form", "bypass", "--clip-ratio-high", "0.28"], "none", None),
        (["--async-rollout", "--rollout-is", "mis"], "mis", None),
        (
            ["--async-rollout", "--rollout-is", "none"],
            "none",
            "warning: --rollout-is none: stale rollouts are trained as on-policy, without off-policy correction",
        ),
        (
            ["--async-rollout", "--rollout-top-p", "0.9"],
            "none",
            "warning: --rollout-top-p 0.9: stale rollouts are trained without off-policy correction (the engine's "
            "log-probs are of the untruncated distribution)",
        ),
    ]
    for flags, mode, warning in cases:
        capsys.readouterr()
        args = parse_args(base + flags)
        assert args.rollout_is == mode, flags
        from megatron_corew.policy.config import TrainerConfig

        cfg = TrainerConfig.from_args(args, 2, need_anchor=False)
        assert (cfg.rollout_is, cfg.off_policy_form) == (mode, args.off_policy_form), flags
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
        assert err == ([warning] if warning else []), flags


# ---------------------------------------------------------------- a 2-step run with everything on
@pytest.mark.e2e
def test_two_step_run_with_every_option(warm_bundle, tmp_path):
    """Label-free (majority vote) with every option on, on the warm tiny model (its answers agree some of the time;
    6 or 7 tokens each, so every response is penalised and those with two-digit answers are truncated); each count
    is recomputed from the rollout dumps."""
    out = str(tmp_path / "run")
    L, B = 6, 4
    args = [
        "--hf-checkpoint", warm_bundle["model"], "--train-data", warm_bundle["train"],
        "--val-data", warm_bundle["val"], f"again={warm_bundle['val']}", "--max-val-samples", "4",
        "--reward-method", "majority_vote", "--global-batch-size", "4", "--n-samples-per-prompt", "4",
        "--max-response-length", str(L), "--max-prompt-length", "128", "--micro-batch-size", "8", "--lr", "1e-3",
        "--train-iters", "2", "--eval-interval", "1", "--output-dir", out, "--no-progress-bar", "--rollout-dump",
        "--rollout-is", "mis", "--rollout-is-level", "geometric", "--num-steps-per-rollout", "2",
        "--dynamic-sampling", "--dynamic-sampling-max-rounds", "2",
        "--overlong-buffer-len", str(B), "--overlong-penalty-factor", "0.5", "--mask-truncated-responses",
    ]  # fmt: skip
    proc = run_train(args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows: dict = {}
    for r in read_metrics(out):  # the final validation is a row of its own at the last step
        rows.setdefault(r["step"], {}).update(r)
    assert_real_signal(read_metrics(out), (1, 2))
    penalised = truncated = 0
    for step in (1, 2):
        m = rows[step]
        d = os.path.join(out, "rollouts")
        rounds = [json.loads(x) for x in open(os.path.join(d, f"step_{step:06d}.jsonl"))]
        # overlong: reward = correctness + 0.5 * min(0, L - B - n) / B, written out per response
        pen = [0.5 * min(0, L - B - r["response_tokens"]) / B for r in rounds]
        penalised += sum(p < 0 for p in pen)
        assert m["rollout/overlong_penalty_mean"] == pytest.approx(sum(pen) / len(pen))
        for r, p in zip(rounds, pen):
            assert r["reward"] - p == pytest.approx(round(r["reward"] - p)) and round(r["reward"] - p) in (0, 1)
        trunc = sum(r["finish_reason"] == "length" for r in rounds) / len(rounds)
        truncated += trunc > 0
        assert m["rollout/truncated_masked_fraction"] == trunc == m["rollout/clip_ratio"]
        # dynamic sampling: the zero-variance groups of every round's dump are the dropped ones
        zero = kept = 0
        n_rounds = int(m["rollout/dynamic_generation_rounds"])
        for k in range(n_rounds):
            name = f"step_{step:06d}" + (f"_round{k}" if k else "") + ".jsonl"
            groups: dict = {}
            for r in (json.loads(x) for x in open(os.path.join(d, name))):
                groups.setdefault(r["pair_id"], set()).add(r["reward"])
            zero += sum(len(v) == 1 for v in groups.values())
            kept += sum(len(v) > 1 for v in groups.values())
        assert not os.path.exists(os.path.join(d, f"step_{step:06d}_round{n_rounds}.jsonl"))
        assert m["rollout/dynamic_dropped_groups"] == zero
        assert m["rollout/dynamic_kept_groups"] == min(kept, 4)
        assert m["rollout/dynamic_cap_hit"] == float(kept < 4)
        assert 0 <= m["train/is_masked_fraction"] <= 1 and math.isfinite(m["train/is_weight_mean"])
        assert "train/pg_clipfrac_after_first" in m
    assert penalised > 0 and truncated > 0  # the penalty and the truncation mask did act
    for step in (0, 1, 2):
        v = rows[step]
        assert v["val/accuracy"] == pytest.approx((v["val/val/accuracy"] + v["val/again/accuracy"]) / 2)
        assert v["val/val/accuracy"] == v["val/again/accuracy"]  # the same file twice: the same greedy answers


@pytest.mark.e2e
def test_sigkill_and_resume_with_dynamic_sampling_is_exact(warm_bundle, tmp_path):
    """Refill rounds move the sampler's cursor; it is checkpointed after the step, so the resumed run draws the
    same prompts (same counts, losses and final weights) as the uninterrupted one (warm tiny model: every step
    trains a non-zero policy gradient)."""

    def args(out, extra=()):
        return [
            "--hf-checkpoint", warm_bundle["model"], "--train-data", warm_bundle["train"], "--reward-method", "gt",
            "--global-batch-size", "4", "--n-samples-per-prompt", "4", "--max-response-length", "16",
            "--max-prompt-length", "128", "--micro-batch-size", "8", "--lr", "1e-3", "--train-iters", "4",
            "--eval-interval", "0", "--output-dir", out, "--no-progress-bar", "--save", os.path.join(out, "ckpt"),
            "--save-interval", "2", "--dynamic-sampling", "--num-steps-per-rollout", "2", "--rollout-is", "tis",
            *extra,
        ]  # fmt: skip

    full, crashed = str(tmp_path / "full"), str(tmp_path / "crashed")
    assert run_train(args(full)).returncode == 0
    proc = run_train(args(crashed), env_extra={"COREW_FAULT": "after_step:3"})
    assert proc.returncode == -9  # SIGKILL after step 3: the checkpoint of step 2 is the latest
    assert run_train(args(crashed, ["--load", os.path.join(crashed, "ckpt")])).returncode == 0
    keys = ("train/loss", "reward/mean", "rollout/dynamic_generation_rounds", "rollout/dynamic_dropped_groups")
    a = {r["step"]: r for r in read_metrics(full) if "train/loss" in r}
    b = {r["step"]: r for r in read_metrics(crashed) if "train/loss" in r}  # step 3 twice: the rerun's wins
    assert sum(a[s]["rollout/dynamic_generation_rounds"] for s in a) > len(a)  # refills did happen
    assert_real_signal(read_metrics(full), range(1, 5))
    for step in range(1, 5):
        assert all(a[step][k] == b[step][k] for k in keys), step
    ra, rb = (json.load(open(os.path.join(d, "result.json"))) for d in (full, crashed))
    assert ra["policy_sha256"] == rb["policy_sha256"]
