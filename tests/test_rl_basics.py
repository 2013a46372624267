"""Advantages, the clipped loss and reward validation against hand-computed values."""

import math

import pytest
import torch

from sepo.errors import RewardError
from sepo.rl.advantages import compute_advantages
from sepo.rl.loss import clipped_policy_loss
from sepo.rl.rewards import Reward, evaluate_reward, gc_content


def test_group_advantages_hand_values():
    r = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    adv = compute_advantages(r, kind="group", scale_rewards=True, eps=0.0 + 1e-12)
    # group 1: mean 2, std 1 -> (-1, 1); group 2: all equal -> 0 (not NaN)
    assert torch.allclose(adv[0], torch.tensor([-1.0, 1.0]), atol=1e-6)
    assert torch.equal(adv[1], torch.zeros(2))
    assert torch.allclose(compute_advantages(r, kind="group", scale_rewards=False)[0], torch.tensor([-1.0, 1.0]))


def test_batch_loo_none_advantages():
    r = torch.tensor([[1.0, 2.0, 6.0]])
    loo = compute_advantages(r, kind="leave_one_out", scale_rewards=False)
    assert torch.allclose(loo, torch.tensor([[1 - 4.0, 2 - 3.5, 6 - 1.5]]))
    b = compute_advantages(torch.tensor([[0.0, 2.0], [4.0, 6.0]]), kind="batch", scale_rewards=True)
    assert torch.allclose(b, torch.tensor([[-3.0, -1.0], [1.0, 3.0]]) / math.sqrt(5.0), atol=1e-6)
    assert torch.equal(compute_advantages(r, kind="none"), r)
    with pytest.raises(ValueError):
        compute_advantages(r, kind="nope")


@pytest.mark.parametrize("loss_type", ["sequence", "grpo", "dr_grpo"])
def test_clipped_loss_gradient_at_old_policy(loss_type):
    """At θ = θ_old the loss gradient is -(1/N) Σ_b A_b Σ_u w_u ∇logp_u / norm (norm: 1, #units, L)."""
    torch.manual_seed(0)
    theta = torch.randn(3, 4, requires_grad=True)
    weight = torch.tensor([[1.0, 2.0, 0.0, 1.0]] * 3)
    adv = torch.tensor([0.5, -1.0, 2.0])
    old = theta.detach().clone()
    loss, stats = clipped_policy_loss(theta, old, weight, adv, epsilon=0.2, loss_type=loss_type, norm_constant=7.0)
    loss.backward()
    norm = {"sequence": torch.ones(3), "grpo": torch.full((3,), 3.0), "dr_grpo": torch.full((3,), 7.0)}[loss_type]
    expected = -(adv / norm)[:, None] * weight / 3
    assert torch.allclose(theta.grad, expected, atol=1e-6)
    assert stats["clip_frac"] == 0.0 and stats["ratio_mean"] == pytest.approx(1.0)


def test_clipping_blocks_gradient_beyond_epsilon():
    # positive advantage, ratio 1.5 > 1.2: clipped branch is smaller -> no gradient; ratio 0.9: gradient flows
    logp = torch.tensor([[math.log(1.5)], [math.log(0.9)]], requires_grad=True)
    loss, stats = clipped_policy_loss(logp, torch.zeros(2, 1), torch.ones(2, 1), torch.tensor([1.0, 1.0]), epsilon=0.2)
    loss.backward()
    assert logp.grad[0, 0] == 0.0
    assert logp.grad[1, 0] == pytest.approx(-0.9 / 2, abs=1e-6)  # d(-ratio*A/2)/dlogp = -ratio/2
    assert stats["clip_frac"] == pytest.approx(0.5)
    # negative advantage with ratio 0.5 < 0.8: min picks the clipped (constant) branch -> no gradient
    logp2 = torch.tensor([[math.log(0.5)]], requires_grad=True)
    l2, _ = clipped_policy_loss(logp2, torch.zeros(1, 1), torch.ones(1, 1), torch.tensor([-1.0]), epsilon=0.2)
    l2.backward()
    assert logp2.grad.item() == 0.0


def test_reward_validation_names_reward_and_sample():
    toks = torch.zeros(3, 5, dtype=torch.long)
    ok = Reward("const", lambda x: torch.ones(x.shape[0]))
    assert torch.equal(evaluate_reward(ok, toks), torch.ones(3))
    nan = Reward("bad", lambda x: torch.tensor([0.0, float("nan"), 1.0]))
    with pytest.raises(RewardError, match=r"'bad'.*sample 1"):
        evaluate_reward(nan, toks)

    def boom(x):
        raise RuntimeError("oracle crashed")

    with pytest.raises(RewardError, match="'boom' raised RuntimeError: oracle crashed"):
        evaluate_reward(Reward("boom", boom), toks)
    with pytest.raises(RewardError, match="returned shape"):
        evaluate_reward(Reward("shape", lambda x: torch.ones(2)), toks)


def test_gc_content_hand_value():
    # ACGT: C=1, G=2
    toks = torch.tensor([[0, 1, 2, 3], [1, 1, 2, 2]])
    assert torch.equal(gc_content(toks), torch.tensor([0.5, 1.0]))


def test_dual_clip_bounds_runaway_ratios_of_negative_advantages():
    # A = -1: ratio 10 > c = 3 -> objective -3 (constant, no gradient); ratio 2 < c -> PPO's -2 with gradient
    logp = torch.tensor([[math.log(10.0)], [math.log(2.0)]], requires_grad=True)
    adv = torch.tensor([-1.0, -1.0])
    loss, stats = clipped_policy_loss(logp, torch.zeros(2, 1), torch.ones(2, 1), adv, epsilon=0.2, dual_clip=3.0)
    assert loss.item() == pytest.approx((3.0 + 2.0) / 2)
    loss.backward()
    assert logp.grad[0, 0] == 0.0
    assert logp.grad[1, 0] == pytest.approx(2.0 / 2)  # d(-(-ratio))/dlogp / 2 = ratio / 2
    assert stats["clip_frac"] == pytest.approx(0.5)
    # without it the runaway unit dominates the loss; positive advantages are untouched by the dual clip
    plain, _ = clipped_policy_loss(logp.detach(), torch.zeros(2, 1), torch.ones(2, 1), adv, epsilon=0.2)
    assert plain.item() == pytest.approx((10.0 + 2.0) / 2)
    pos, _ = clipped_policy_loss(logp.detach(), torch.zeros(2, 1), torch.ones(2, 1), -adv, epsilon=0.2, dual_clip=3.0)
    assert pos.item() == pytest.approx(-1.2)
    with pytest.raises(ValueError, match="dual_clip"):
        clipped_policy_loss(logp, torch.zeros(2, 1), torch.ones(2, 1), adv, epsilon=0.2, dual_clip=0.5)


def test_explicit_null_overrides_set_none(tmp_path):
    """``--set kl_truncation_steps=null`` and a YAML ``null`` must set the field to None (the whole path);
    they were once dropped silently, so a tuning run labelled 'full-path KL' kept the preset's 8 steps."""
    import yaml

    from sepo.rl.recipes import FINETUNE_PRESETS, finetune_config

    assert FINETUNE_PRESETS["dna"]["tiny"].get("kl_truncation_steps") is not None  # else the test proves nothing
    cfg = finetune_config("dna", "tiny", overrides={"kl_truncation_steps": None})
    assert cfg.kl_truncation_steps is None
    cfg = finetune_config("dna", "tiny", yaml_data=yaml.safe_load("kl_truncation_steps: null\nbeta: 0.3\n"))
    assert cfg.kl_truncation_steps is None and cfg.beta == 0.3
