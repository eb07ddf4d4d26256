"""GRPO core against hand-computed values and float64 formulas written out independently."""

import math

import pytest
import torch

from megatron_corew.algo import grpo
from megatron_corew.algo.ema import ema_alpha


def test_group_advantages_hand_computed():
    # group 0: rewards 1,0,0,1 -> mean .5, unbiased std sqrt(1/3)
    adv = grpo.group_advantages([1, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1])
    s = math.sqrt(1 / 3)
    expected = [0.5 / (s + 1e-6), -0.5 / (s + 1e-6), -0.5 / (s + 1e-6), 0.5 / (s + 1e-6), 0.0, 0.0]
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)


def test_group_of_one_uses_mean0_std1_and_dr_grpo():
    assert grpo.group_advantages([0.7], [0]).tolist() == pytest.approx([0.7 / (1 + 1e-6)])
    adv = grpo.group_advantages([1.0, 0.0, 0.0], [5, 5, 5], norm_by_std=False)
    assert adv.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3])


def test_kl_estimators_float64():
    logp = torch.tensor([-1.0, -2.0, -0.5], dtype=torch.float64)
    ref = torch.tensor([-1.2, -1.0, -0.5], dtype=torch.float64)
    d = [(-1.0) - (-1.2), (-2.0) - (-1.0), 0.0]
    assert grpo.kl_penalty(logp, ref, "k1").tolist() == pytest.approx(d)
    assert grpo.kl_penalty(logp, ref, "k2").tolist() == pytest.approx([0.5 * x * x for x in d])
    k3 = [math.exp(-x) - (-x) - 1 for x in d]
    assert grpo.kl_penalty(logp, ref, "low_var_kl").tolist() == pytest.approx(k3)
    assert grpo.kl_penalty(logp, logp, "low_var_kl").abs().max().item() == 0.0
    big = grpo.kl_penalty(torch.tensor([-30.0]), torch.tensor([0.0]), "k3")
    assert big.item() == 10.0  # clamped
    with pytest.raises(ValueError):
        grpo.kl_penalty(logp, ref, "k9")


def test_ppo_clip_and_dual_clip_hand_cases():
    old = torch.zeros(4)
    # ratios: e^0.5=1.6487 (pos adv -> clipped at 1.2), e^-0.5=.6065 (neg adv -> clipped at .8),
    # e^2 = 7.389 with neg adv -> dual clip caps the loss at 3 * |A|, ratio 1 -> plain
    logp = torch.tensor([0.5, -0.5, 2.0, 0.0])
    adv = torch.tensor([1.0, -1.0, -1.0, 2.0])
    loss, clipped = grpo.ppo_clip_losses(logp, old, adv, 0.2, 0.2, 3.0)
    assert loss.tolist() == pytest.approx([-1.2, 0.8, 3.0, -2.0], rel=1e-6)
    assert clipped.tolist() == [True, True, False, False]  # the dual-clip case is capped, not "clipped"
    loss_hi, _ = grpo.ppo_clip_losses(logp, old, adv, 0.2, 0.28, None)
    assert loss_hi[0].item() == pytest.approx(-1.28)
    assert loss_hi[2].item() == pytest.approx(math.exp(2.0))  # no dual clip: unbounded


def test_ema_alpha_schedule():
    assert ema_alpha(1, 100) == pytest.approx(0.01)
    assert ema_alpha(101, 100) == pytest.approx(1e-5)
    mid = 1e-5 + 0.5 * (0.01 - 1e-5) * (1 + math.cos(math.pi * 50 / 100))
    assert ema_alpha(51, 100) == pytest.approx(mid)
    assert ema_alpha(500, 100) == pytest.approx(1e-5)
    assert ema_alpha(1, 10, 0.01, 1e-4) == pytest.approx(0.01)


def test_microbatch_token_mean_against_float64_reference():
    """The reference's loss: split the step's sequences (in order) into micro-batches of 8, take each micro-batch's
    token mean of the per-token losses, average those means. Our per-token weights must give the same sum."""
    g = torch.Generator().manual_seed(3)
    lengths = [int(x) for x in torch.randint(1, 40, (21,), generator=g)]
    losses = [torch.randn(n, generator=g, dtype=torch.float64) for n in lengths]
    means = [torch.cat(losses[a : a + 8]).mean() for a in range(0, 21, 8)]  # groups of 8, 8, 5
    reference = torch.stack(means).mean()
    w = grpo.token_weights(lengths, [0] * 21, "microbatch-token-mean", 8)
    ours = sum(wi * li.sum() for wi, li in zip(w, losses))
    assert float(ours) == pytest.approx(float(reference), abs=1e-12)
    w_global = grpo.token_weights(lengths, [0] * 21)
    glob = sum(wi * li.sum() for wi, li in zip(w_global, losses))
    assert float(glob) == pytest.approx(float(torch.cat(losses).mean()), abs=1e-12)
    assert abs(float(glob) - float(reference)) > 1e-3  # the modes differ here
    # views are aggregated separately; the scale multiplies every weight
    w2 = grpo.token_weights([2, 3, 4], [0, 1, 1], "microbatch-token-mean", 1, scale=0.5)
    assert w2 == pytest.approx([0.5 / 2, 0.5 / (2 * 3), 0.5 / (2 * 4)])
    with pytest.raises(ValueError, match="loss aggregation"):
        grpo.token_weights([1], [0], "seq-mean")


class _Sample:
    def __init__(self, n_prompt, n_response, adv, view):
        self.prompt_ids, self.response_ids = [5] * n_prompt, [6] * n_response
        self.advantage, self.view, self.rollout_logprobs = adv, view, None

    @property
    def length(self):
        return len(self.prompt_ids) + len(self.response_ids)


@pytest.mark.parametrize("view_loss_agg", ["sum", "mean"])
def test_two_view_loss_and_gradient_against_float64(view_loss_agg):
    """Co-rewarding-I: each view is normalised by its OWN response tokens, then the views are summed (reference)
    or averaged. The trainer's token weights and micro-batch layout, with a policy that moved since pi_old (the
    clip acts), against the per-view token means written out in float64. View token counts differ (9 vs 30), so
    one shared denominator gives another loss and gradient."""
    from megatron_corew.algo import importance
    from megatron_corew.policy import packing

    spec = [(3, 4, 1.2, 0), (2, 5, -0.8, 0), (4, 12, 0.5, 1), (3, 18, -1.4, 1)]  # prompt, response, advantage, view
    samples = [_Sample(*row) for row in spec]
    g = torch.Generator().manual_seed(5)
    old = [(-torch.rand(len(s.response_ids), generator=g, dtype=torch.float64) * 2).tolist() for s in samples]
    lp = [[o + 0.3 * float(torch.randn((), generator=g)) for o in row] for row in old]
    scale = grpo.view_loss_scale(True, view_loss_agg)
    assert scale == (1.0 if view_loss_agg == "sum" else 0.5) and grpo.view_loss_scale(False, "mean") == 1.0
    weights = grpo.token_weights([len(s.response_ids) for s in samples], [s.view for s in samples], scale=scale)
    for s, o in zip(samples, old):
        s.old_logprobs = o
    mb = packing.padded_microbatch(samples, list(range(len(samples))), weights)
    flat = torch.zeros(mb["mask"].numel())
    for k, row in enumerate(lp):
        flat[mb["first"][k] : mb["first"][k] + len(row)] = torch.tensor(row, dtype=torch.float32)
    logp = flat.view(mb["mask"].shape).requires_grad_(True)
    pg, _ = importance.policy_gradient_loss(logp, mb, "decoupled", importance.ISCorrection(), 0.2, 0.2, 3.0)
    loss = (pg * mb["weight"] * mb["mask"]).sum()
    loss.backward()

    # float64: per view, the mean over its tokens of the PPO-clip loss; then sum or average the two views
    lp64 = [torch.tensor(row, dtype=torch.float64, requires_grad=True) for row in lp]
    view_means = []
    for v in (0, 1):
        terms = []
        for s, x, o in zip(samples, lp64, old):
            if s.view != v:
                continue
            ratio = torch.exp(x - torch.tensor(o, dtype=torch.float64))
            a = s.advantage
            t = torch.maximum(-a * ratio, -a * ratio.clamp(0.8, 1.2))
            terms.append(torch.minimum(t, torch.full_like(t, -a * 3.0)) if a < 0 else t)
        view_means.append(torch.cat(terms).mean())
    ref = view_means[0] + view_means[1] if view_loss_agg == "sum" else (view_means[0] + view_means[1]) / 2
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-7)
    got = logp.grad.view(-1)
    for k, x in enumerate(lp64):
        row = got[mb["first"][k] : mb["first"][k] + len(samples[k].response_ids)].double()
        assert torch.allclose(row, x.grad, rtol=1e-5, atol=1e-7), (k, row, x.grad)
    shared = grpo.token_weights([len(s.response_ids) for s in samples], [0] * 4, scale=2 * scale)
    assert abs(shared[0] - weights[0]) > 1e-3  # one shared denominator would weigh view 0's tokens differently
