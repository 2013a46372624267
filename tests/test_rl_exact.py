"""Policy-gradient estimators and the KL machinery against exact gradients in tiny worlds (METHOD.md §7)."""

import copy

import pytest
import torch
from torch import nn

from sepo.diffusion import DiffusionModel, SamplerConfig, make_process, plan_steps
from sepo.rl.diagnostics import estimator_gradient
from sepo.rl.estimators import make_estimator
from sepo.rl.kl import kl_step_indices, path_kl, reference_kernels
from sepo.rl.rollout import collect_rollouts
from sepo.tasks.toy.exact import enumerate_states, exact_output_distribution
from sepo.tasks.toy.objectives import exact_objective, flat_grad
from sepo.tasks.toy.world import ToyWorldConfig, make_toy_world

L, V = 3, 3
CFG = SamplerConfig(name="ancestral", steps=8)


def cosine(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


class ProductNet(nn.Module):
    """A masked denoiser whose output law is the product of per-position categoricals softmax(theta_i)."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.randn(L, V, generator=torch.Generator().manual_seed(3)))

    def forward(self, x_t, sigma_bar):
        return self.theta.expand(x_t.shape[0], L, V)


@pytest.fixture(scope="module")
def world():
    torch.manual_seed(0)
    return make_toy_world(ToyWorldConfig(length=L, vocab_size=V, sampling_steps=CFG.steps, model="tabular", seed=1))


def exact_grad_J(model, reward):
    params = [p for p in model.parameters() if p.requires_grad]
    out = exact_objective(model, L, CFG, reward)
    return flat_grad(out["J"], params), out["pi"].detach()


def rollout(model, n, seed, keep=True):
    g = torch.Generator().manual_seed(seed)
    return collect_rollouts(model, sampler=CFG, num_groups=1, group_size=n, length=L, generator=g, keep_trajectory=keep), g


def exact_expectation(model, estimator, pi, reward):
    """E_{x~pi}[(r(x) - J) ∇ surrogate(x)] by enumeration (for estimators with no internal randomness)."""
    from sepo.rl.rollout import Rollout

    x = enumerate_states(L, V)
    ro = Rollout(x, 1, x.shape[0], CFG, [])
    estimator.draw(model, ro, torch.Generator().manual_seed(0))
    J = float((pi * reward).sum())
    adv = (reward - J) * pi * x.shape[0]  # mean over states of pi-weighted advantages
    return estimator_gradient(model, estimator, ro, adv.float())


def test_sepo_exact_for_product_policies():
    """Where its assumption holds (positions independent under π_θ), sepo's expectation IS ∇J."""
    model = DiffusionModel(ProductNet(), make_process("masked", V), parameterization="subs", time_conditioned=False)
    reward = torch.rand(V**L, generator=torch.Generator().manual_seed(5)).double()
    g_exact, pi = exact_grad_J(model, reward)
    g_sepo = exact_expectation(model, make_estimator("sepo"), pi, reward)
    assert cosine(g_sepo, g_exact) > 0.99999
    assert float((g_sepo - g_exact).norm() / g_exact.norm()) < 1e-4


def test_sepo_biased_for_correlated_policies(world):
    """With correlated positions the pseudo-likelihood gradient is not ∇J: the bias is real (measured in docs)."""
    reward = world.reward_table.double()
    g_exact, pi = exact_grad_J(world.model, reward)
    g_sepo = exact_expectation(world.model, make_estimator("sepo"), pi, reward)
    c = cosine(g_sepo, g_exact)
    assert 0.0 < c < 0.99


def test_trajectory_estimator_matches_exact_gradient(world):
    """DDPO-style step log-probabilities are unbiased: the sample mean approaches ∇J (cos >= 0.99)."""
    reward = world.reward_table.double()
    g_exact, pi = exact_grad_J(world.model, reward)
    J = float((pi * reward).sum())
    est = make_estimator("trajectory")
    ro, g = rollout(world.model, 20000, seed=0)
    est.draw(world.model, ro, g)
    adv = world.reward()(ro.x) - J
    g_traj = estimator_gradient(world.model, est, ro, adv, chunk=5000)
    assert cosine(g_traj, g_exact) >= 0.99


def test_ratio_is_one_at_old_policy_for_every_estimator(world):
    """Shared noise: the old log-probs from prepare() equal the new ones before any update."""
    for name, kw in [("sepo", {}), ("sepo", {"sepo_positions": 2}), ("trajectory", {"trajectory_steps": 3}),
                     ("elbo", {"elbo_samples": 3}), ("sepo-snis", {"num_snis_samples": 2, "snis_neighbours": 3})]:
        est = make_estimator(name, **kw)
        ro, g = rollout(world.model, 16, seed=1)
        old = est.prepare(world.model, ro, g)
        new = est.log_probs(world.model, ro, torch.arange(16))
        assert torch.allclose(old.logp, new.logp, atol=1e-6), name
        assert (old.weight >= 0).all() and old.weight.sum() > 0


def test_position_subsampling_is_unbiased(world):
    """sepo with 1 random position per sample has the same expectation as all positions (weights L/m)."""
    reward = world.reward_table.double()
    _, pi = exact_grad_J(world.model, reward)
    full = exact_expectation(world.model, make_estimator("sepo"), pi, reward)
    x = enumerate_states(L, V)
    from sepo.rl.rollout import Rollout

    reps = 300
    ro = Rollout(x.repeat(reps, 1), 1, x.shape[0] * reps, CFG, [])
    est = make_estimator("sepo", sepo_positions=1)
    est.draw(world.model, ro, torch.Generator().manual_seed(2))
    J = float((pi * reward).sum())
    adv = ((reward - J) * pi * x.shape[0]).float().repeat(reps)
    sub = estimator_gradient(world.model, est, ro, adv)
    assert cosine(sub, full) > 0.995


def test_path_kl_estimate_and_regularised_gradient(world):
    """Per-sample closed-form path KL is unbiased for the exact path KL, and the trajectory estimator with
    kl_in_reward + direct KL gradient follows ∇(J - β KL_path)."""
    beta = 0.3
    policy = copy.deepcopy(world.model)
    with torch.no_grad():  # move the policy away from the reference so the KL is non-trivial
        policy.net.logits.add_(0.7 * torch.randn_like(policy.net.logits, generator=None))
    reward = world.reward_table.double()
    params = [p for p in policy.parameters() if p.requires_grad]
    steps = kl_step_indices(len(plan_steps(CFG)), None)  # 8 predictor steps + final denoise
    out = exact_objective(policy, L, CFG, reward, reference=world.model, beta=beta, kl_steps=steps)
    g_exact = flat_grad(out["objective"], params)
    kl_exact = float(out["kl"].detach())

    ro, g = rollout(policy, 20000, seed=3)
    ref_probs = reference_kernels(world.model, ro, steps)
    with torch.no_grad():
        kl_samples, _ = path_kl(policy, ro, torch.arange(ro.size), steps, ref_probs)
    se = float(kl_samples.std() / ro.size**0.5)
    assert abs(float(kl_samples.mean()) - kl_exact) < 4 * se + 1e-4

    est = make_estimator("trajectory")
    est.draw(policy, ro, g)
    shaped = world.reward()(ro.x).double() - beta * kl_samples.double()
    adv = (shaped - shaped.mean()).float()
    g_est = estimator_gradient(policy, est, ro, adv, kl_steps=steps, ref_probs=ref_probs, beta=beta, chunk=5000)
    # measured 0.99975; dropping the in-reward half gives 0.998, dropping the direct half 0.83
    assert cosine(g_est, g_exact) >= 0.999
