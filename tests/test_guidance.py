"""Sampling-time baselines (best-of-N, CG, SMC, TDS) proved in exact worlds (L = 3, V = 3).

The pretrained model is the toy world's tabular denoiser initialised at the exact posterior of ``p0``;
the reward is a random table in [0, 1] and its differentiable extension is the multilinear
``Σ_x table[x] Π_i probs[i, x_i]``. Targets are computed by enumeration: the sampler's exact output law
``π`` (propagated through the very kernels the sampler draws from) and the tilted law ``π exp(r/α) / Z``.
Empirical checks use fixed seeds; the tolerances are several times the Monte-Carlo noise measured at
these sample sizes (TV of an empirical law of 2000 draws over 27 states is about 0.03-0.04).
"""

from __future__ import annotations

import math

import pytest
import torch

from sepo.diffusion import SamplerConfig, make_process
from sepo.diffusion.sampling import plan_steps
from sepo.errors import ConfigError, RewardError
from sepo.guidance import (
    best_of_n_law,
    cg_kernel,
    check_soft_reward,
    effective_sample_size,
    generate,
    method_options,
    oracle_soft_reward,
    resample_indices,
    table_soft_reward,
    twist,
)
from sepo.tasks.toy.exact import clean_distribution, enumerate_states, exact_model, exact_output_distribution, state_index, total_variation
from sepo.tasks.toy.world import ToyWorldConfig, make_toy_world, tilted_optimum

L, V = 3, 3


@pytest.fixture(scope="module")
def world():
    return make_toy_world(ToyWorldConfig(length=L, vocab_size=V, sampling_steps=8))


@pytest.fixture(scope="module")
def soft(world):
    return table_soft_reward(world.reward_table, V, L)


@pytest.fixture(scope="module")
def pi(world):
    with torch.no_grad():
        return exact_output_distribution(world.model, L, SamplerConfig(steps=8))


def empirical(tokens: torch.Tensor) -> torch.Tensor:
    counts = torch.bincount(state_index(tokens.cpu(), V), minlength=V**L).double()
    return counts / counts.sum()


def propagate(kernel, process, cfg) -> torch.Tensor:
    """Exact law over clean sequences of a sampler whose step kernel is ``kernel(states, step) [N, L, S]``."""
    S = process.num_states
    states = enumerate_states(L, S)
    dist = torch.zeros(states.shape[0], dtype=torch.float64)
    dist[state_index(process.sample_limit((1, L)), S)] = 1.0
    for step in plan_steps(cfg):
        probs = kernel(states, step).double()
        trans = torch.ones(states.shape[0], states.shape[0], dtype=torch.float64)
        for i in range(L):
            trans = trans * probs[:, i, :][:, states[:, i]]
        dist = dist @ trans
    return clean_distribution(dist, process, L)


# --------------------------------------------------------------------------------------------------
# rewards and helpers
# --------------------------------------------------------------------------------------------------
def test_table_soft_reward_is_the_multilinear_extension(world, soft):
    clean = enumerate_states(L, V)
    onehot = torch.nn.functional.one_hot(clean, V).double()
    assert torch.allclose(soft(onehot), world.reward_table.double(), atol=1e-12)
    check_soft_reward(soft, world.reward(), clean, V)  # the consistency check passes ...
    with pytest.raises(RewardError):  # ... and catches a soft reward of another reward
        check_soft_reward(lambda p: soft(p) + 0.1, world.reward(), clean, V)
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(5, L, V, generator=g, dtype=torch.float64), -1)
    # expectation over independent positions, by enumeration
    weights = probs[:, torch.arange(L), clean].prod(-1)  # [5, 27]
    assert torch.allclose(soft(probs), weights @ world.reward_table.double(), atol=1e-12)


def test_twist_reweights_and_normalises():
    p = torch.tensor([[[0.5, 0.3, 0.2, 0.0]]], dtype=torch.float64)
    delta = torch.tensor([[[1.0, 0.0, -1.0, 5.0]]], dtype=torch.float64)
    q, log_ratio = twist(p, delta, 2.0)
    expect = p * torch.exp(2.0 * delta)
    expect = expect / expect.sum()
    assert torch.allclose(q, expect) and q[0, 0, 3] == 0  # zero-probability states stay impossible
    assert torch.allclose(log_ratio[0, 0, :3], (q / p)[0, 0, :3].log())
    point = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]], dtype=torch.float64)  # a revealed token never moves
    assert torch.equal(twist(point, delta, 3.0)[0], point)


def test_resampling_schemes():
    log_w = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]], dtype=torch.float64))
    assert torch.allclose(effective_sample_size(log_w), 1 / (log_w.exp() ** 2).sum(-1))
    g = torch.Generator().manual_seed(0)
    w = log_w.exp()
    for _ in range(20):  # systematic: each count is floor or ceil of K w_i
        anc = resample_indices(log_w, g, method="systematic")
        counts = torch.stack([torch.bincount(a, minlength=4) for a in anc]).double()
        assert ((counts >= torch.floor(4 * w)) & (counts <= torch.ceil(4 * w))).all()
    big = log_w[:1].expand(5000, -1)  # multinomial: frequencies match the weights
    freq = torch.bincount(resample_indices(big, g, method="multinomial").reshape(-1), minlength=4).double() / (5000 * 4)
    assert torch.allclose(freq, w[0], atol=0.01)


# --------------------------------------------------------------------------------------------------
# best-of-N
# --------------------------------------------------------------------------------------------------
def test_best_of_n_matches_its_exact_law(world, pi):
    n, k = 3000, 3
    law = best_of_n_law(pi, world.reward_table, k)
    assert abs(float(law.sum()) - float(pi.sum()) ** k) < 1e-12  # (π sums to 1 up to float32 rounding)
    tokens, info = generate("best_of_n", world.model, n=n, length=L, reward=world.reward(), sampler=SamplerConfig(steps=8),
                            generator=torch.Generator().manual_seed(0), num_candidates=k)
    assert info["reward_calls"] == n * k and info["network_passes"] == n * k * 9
    tv = total_variation(empirical(tokens), law)
    assert total_variation(pi, law) > 0.3 and tv < 0.05, tv  # measured: law 0.38 from π; empirical TV 0.027
    assert torch.equal(info["rewards"], world.reward()(tokens))


# --------------------------------------------------------------------------------------------------
# SMC and TDS
# --------------------------------------------------------------------------------------------------
ALPHA = 0.25


def _run(method, world, soft, k, *, n=2000, alpha=ALPHA, seed=0, model=None):
    return generate(method, model or world.model, n=n, length=L, reward=world.reward(), soft_reward=soft,
                    sampler=SamplerConfig(steps=8), generator=torch.Generator().manual_seed(seed), num_particles=k, alpha=alpha)


def test_smc_approaches_the_tilted_target_as_particles_grow(world, soft, pi):
    """Measured TV(empirical, π e^{r/α}/Z) with 2000 outputs: K=1 0.40, K=4 0.17, K=16 0.07, K=32 0.045 (plain
    sampling is 0.42 away); mean reward 0.42, 0.60, 0.67, 0.69 against the target's 0.70."""
    target = tilted_optimum(pi, world.reward_table, ALPHA)
    tvs = {}
    for k in (1, 4, 32):
        tokens, info = _run("smc", world, soft, k)
        tvs[k] = total_variation(empirical(tokens), target)
        # look-ahead potential before each of the 9 plan steps, plus the exact reward at the end
        assert info["reward_calls"] == 2000 * k * 10
        assert info["network_passes"] == 2000 * k * 9  # the potential shares the kernel's network pass
    assert tvs[1] > 0.35 and tvs[4] < tvs[1] - 0.15 and tvs[32] < tvs[4] - 0.07 and tvs[32] < 0.07, tvs


def test_tds_approaches_the_tilted_target_faster_than_smc(world, soft, pi):
    """Measured TV with 2000 outputs: TDS K=1 0.12, K=4 0.06, K=16 0.03 (SMC K=4: 0.17); mean reward 0.65,
    0.68, 0.70 (target 0.70)."""
    target = tilted_optimum(pi, world.reward_table, ALPHA)
    tvs = {k: total_variation(empirical(_run("tds", world, soft, k)[0]), target) for k in (1, 16)}
    tokens, info = _run("tds", world, soft, 4)
    tvs[4] = total_variation(empirical(tokens), target)
    assert info["soft_reward_calls"] == 2000 * 4 * 9 and info["reward_calls"] == 2000 * 4
    smc4 = total_variation(empirical(_run("smc", world, soft, 4)[0]), target)
    assert tvs[16] < tvs[1] - 0.05 and tvs[16] < 0.06 and tvs[4] < smc4 - 0.05, (tvs, smc4)


def test_smc_with_infinite_temperature_is_plain_sampling(world, soft, pi):
    tokens, info = _run("smc", world, soft, 4, n=3000, alpha=math.inf)
    assert info["reward_calls"] == 0 and info["resampling_events"] == 0
    assert total_variation(empirical(tokens), pi) < 0.05  # measured 0.029; the tilted target is 0.42 away


def test_smc_and_tds_on_a_uniform_model(uniform_world):
    """Uniform process, exact time-dependent denoiser: particles move the output toward the tilted law.
    Measured TV with 1000 outputs: SMC K=1 0.49, K=16 0.105; TDS K=16 0.070."""
    from sepo.rl.rewards import table_reward

    model, table = uniform_world
    cfg = SamplerConfig(steps=6)
    with torch.no_grad():
        pi_u = exact_output_distribution(model, L, cfg)
    target = tilted_optimum(pi_u, table, ALPHA)
    reward, soft_u = table_reward(table, V), table_soft_reward(table, V, L)
    tvs = {}
    for method, k in (("smc", 1), ("smc", 16), ("tds", 16)):
        tokens, _ = generate(method, model, n=1000, length=L, reward=reward, soft_reward=soft_u, sampler=cfg,
                             generator=torch.Generator().manual_seed(0), num_particles=k, alpha=ALPHA)
        tvs[(method, k)] = total_variation(empirical(tokens), target)
    assert tvs[("smc", 16)] < tvs[("smc", 1)] / 3 and tvs[("tds", 16)] < tvs[("smc", 1)] / 4, tvs


# --------------------------------------------------------------------------------------------------
# classifier guidance
# --------------------------------------------------------------------------------------------------
def exact_log_h(world, gamma: float):
    """``f_t(x) = log E[exp(γ r(x_0)) | x_t = x]`` under ``p0`` (exact, by enumeration)."""
    proc = world.model.process
    clean = enumerate_states(L, V)
    lp0, r = world.p0.log(), world.reward_table.double()

    def f(x, t):
        a = float(proc.alpha(torch.tensor(t, dtype=torch.float64)))
        same = (x[:, None, :] == clean[None]).double()
        lik = (a * same + (1 - a) * (x[:, None, :] == proc.mask_id).double()).clamp_min(1e-300).log().sum(-1)
        return torch.logsumexp(lp0 + lik + gamma * r, -1) - torch.logsumexp(lp0 + lik, -1)

    return f


def test_cg_with_exact_ratios_approaches_the_tilted_law(world):
    """Measured TV(guided law, p0 e^{γr}/Z), γ = 3: 4 steps 0.101, 16 steps 0.026, 64 steps 0.0065 (the plain
    sampler's own distance to p0 is 0.114, 0.030, 0.0075: the guidance adds no error of its own)."""
    gamma, f = 3.0, exact_log_h(world, 3.0)
    target = tilted_optimum(world.p0, world.reward_table, 1 / gamma)
    tvs = []
    with torch.no_grad():
        for steps in (4, 16, 64):
            cfg = SamplerConfig(steps=steps)
            law = propagate(lambda x, st: cg_kernel(world.model, x, st, cfg, guidance_scale=1.0, log_potential=f),
                            world.model.process, cfg)
            tvs.append(total_variation(law, target))
    assert tvs[0] > tvs[1] > tvs[2] and tvs[2] < 0.01, tvs


def test_cg_sampler_draws_from_its_kernel(world, soft):
    """The sampling loop uses exactly the kernel that the propagation proves (exact and gradient guides)."""
    cfg = SamplerConfig(steps=8)
    f = exact_log_h(world, 3.0)
    for opts in ({"log_potential": f, "guidance_scale": 1.0}, {"guidance_scale": 4.0}):
        with torch.no_grad():
            law = propagate(lambda x, st: cg_kernel(world.model, x, st, cfg, soft_reward=soft, **opts), world.model.process, cfg)
        tokens, info = generate("cg", world.model, n=2000, length=L, soft_reward=soft, sampler=cfg,
                                generator=torch.Generator().manual_seed(0), **opts)
        assert total_variation(empirical(tokens), law) < 0.05
        assert info["reward_calls"] == 0
    assert info["soft_reward_calls"] == 2000 * 9


def test_cg_gradient_guidance_raises_reward_with_gamma(world, soft, pi):
    """Exact E[r] of the gradient-guided sampler (16 steps): γ = 0, 1, 2, 4, 8 -> 0.416, 0.475, 0.537,
    0.656, 0.807 (exact tilt p0 e^{γr}: 0.415, 0.483, 0.554, 0.686, 0.853)."""
    cfg = SamplerConfig(steps=16)
    r = world.reward_table.double()
    means = []
    with torch.no_grad():
        for gamma in (0.0, 1.0, 2.0, 4.0, 8.0):
            law = propagate(lambda x, st: cg_kernel(world.model, x, st, cfg, guidance_scale=gamma, soft_reward=soft),
                            world.model.process, cfg)
            means.append(float(law @ r))
        plain = exact_output_distribution(world.model, L, cfg)
    assert abs(means[0] - float(plain @ r)) < 1e-9  # γ = 0 is the model's own sampler
    assert all(b > a + 0.03 for a, b in zip(means, means[1:])), means


# --------------------------------------------------------------------------------------------------
# the common entry point
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uniform_world():
    proc = make_process("uniform", V, "loglinear", eps=1e-3)
    g = torch.Generator().manual_seed(3)
    p0 = torch.softmax(1.5 * torch.randn(V**L, generator=g, dtype=torch.float64), 0)
    table = torch.rand(V**L, generator=g)
    return exact_model(p0.log(), proc, L), table


@pytest.mark.parametrize("process", ["masked", "uniform"])
@pytest.mark.parametrize("method", ["pretrained", "best_of_n", "cg", "smc", "tds"])
def test_every_method_keeps_prompt_positions(world, uniform_world, soft, method, process):
    from sepo.rl.rewards import table_reward

    if process == "masked":
        model, reward, soft_r = world.model, world.reward(), soft
    else:
        model, table = uniform_world
        reward, soft_r = table_reward(table, V), table_soft_reward(table, V, L)
    fixed = torch.tensor([True, False, False])
    fixed_tokens = torch.tensor([2, 0, 0])
    tokens, info = generate(method, model, n=200, length=L, reward=reward, soft_reward=soft_r,
                            sampler=SamplerConfig(steps=4), generator=torch.Generator().manual_seed(0),
                            fixed=fixed, fixed_tokens=fixed_tokens, batch_size=64)
    assert tokens.shape == (200, L) and (tokens[:, 0] == 2).all() and (tokens < V).all()
    assert len(set(map(tuple, tokens[:, 1:].tolist()))) > 3  # the free positions still vary
    for key in ("method", "reward_calls", "soft_reward_calls", "network_passes", "seconds", "options"):
        assert key in info
    assert info["method"] == method and info["options"] == method_options(method)


@pytest.mark.parametrize("method", ["smc", "tds"])
def test_smc_with_a_prompt_targets_the_prompted_tilted_law(world, soft, method):
    """Measured TV to the prompted target (9 states, 1500 outputs, K = 32): SMC 0.017, TDS 0.035; plain sampling 0.45."""
    cfg = SamplerConfig(steps=8)
    fixed, fixed_tokens = torch.tensor([False, True, False]), torch.tensor([0, 1, 0])
    with torch.no_grad():
        pi_p = exact_output_distribution(world.model, L, cfg, fixed=fixed, fixed_tokens=fixed_tokens)
    target = tilted_optimum(pi_p, world.reward_table, ALPHA)
    tokens, _ = generate(method, world.model, n=1500, length=L, reward=world.reward(), soft_reward=soft, sampler=cfg,
                         generator=torch.Generator().manual_seed(0), fixed=fixed, fixed_tokens=fixed_tokens,
                         num_particles=32, alpha=ALPHA)
    tv = total_variation(empirical(tokens), target)
    assert total_variation(pi_p, target) > 0.4 and tv < 0.07, tv


def test_generate_rejects_bad_calls(world, soft):
    with pytest.raises(ConfigError, match="did you mean 'num_particles'"):
        generate("smc", world.model, n=2, length=L, reward=world.reward(), num_particle=4)
    with pytest.raises(ConfigError, match="needs a reward"):
        generate("best_of_n", world.model, n=2, length=L)
    with pytest.raises(ConfigError, match="soft_reward"):
        generate("tds", world.model, n=2, length=L, reward=world.reward())
    with pytest.raises(ConfigError, match="unknown sampling method"):
        generate("beam", world.model, n=2, length=L)
    with pytest.raises(ConfigError, match="final_denoise"):
        generate("smc", world.model, n=2, length=L, reward=world.reward(), sampler=SamplerConfig(steps=2, final_denoise=False))
    with pytest.raises(ConfigError, match="alpha"):
        generate("smc", world.model, n=2, length=L, reward=world.reward(), alpha=0.0)


def test_oracle_soft_reward_matches_activity():
    from sepo.tasks.dna.oracle import Oracle, OracleConfig

    torch.manual_seed(0)
    oracle = Oracle(OracleConfig(channels=8, hidden=8, layers=2))
    soft = oracle_soft_reward(oracle)
    tokens = torch.randint(0, 4, (6, 40), generator=torch.Generator().manual_seed(0))
    onehot = torch.nn.functional.one_hot(tokens, 4).float()
    assert torch.allclose(soft(onehot), oracle.activity(tokens), atol=1e-5)
    probs = torch.full((2, 40, 4), 0.25, requires_grad=True)
    soft(probs).sum().backward()
    assert torch.isfinite(probs.grad).all() and probs.grad.abs().sum() > 0
    assert all(p.grad is None for p in oracle.parameters())  # the oracle is frozen
