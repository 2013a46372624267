"""The per-sequence ELBO of the T-step ancestral sampler, against exact enumeration (L = V = 3).

log p^T(x0) below is the exact log-probability of x0 under the exact output law of the T-step ancestral
sampler with final denoising (same min_t) that the ELBO bounds.

Measured (p0 = softmax(1.5 N(0,1)) over 3^3, loglinear eps = 1e-3, min_t = 1e-5):
* exact masked model: min over x0 of log p^T - ELBO_T = 2.6e-2 (T=2) ... 6.6e-4 (T=128); E_p0[log p0 - ELBO_T]
  = 0.25, 0.13, 0.066, 0.034, 0.017, 0.0084, 0.0042 for T = 2..128 (first order); max_x0 |log p0 - ELBO_128| = 0.042;
* exact uniform model: E_p0 gap 0.34 (T=2) ... 0.0074 (T=128);
* random networks: the bound holds with gaps 0.09-30 nats;
* masked with alpha(1) = 0.3: the bound holds only because the bridge conditions the forward chain on the
  all-mask start (with r = q instead, ELBO > log p^T: checked by hand-mutating bridge_alpha).
Per x0 the ELBO is *not* monotone in T (e.g. it drops by 1.06 nats from T=2 to T=4 for a rare x0 of the
exact masked model): a coarse sampler can give an atypical x0 more mass than p0 does, and the bound follows
log p^T(x0). What refinement improves is the p0-average (the expected NLL bound), tested below; for the exact
masked model that is expected, since the expected conditional entropy of a masked token grows with the
masking level, which makes the ELBO's Riemann sum increase under refinement.
"""

from __future__ import annotations

import math

import pytest
import torch

from sepo.diffusion import SamplerConfig, elbo, make_process
from sepo.diffusion.likelihood import bridge_alpha, elbo_step_term, elbo_steps, prior_term
from sepo.diffusion.sampling import Step
from sepo.tasks.toy.exact import enumerate_states, exact_elbo, exact_output_distribution

L = 3
NESTED = (2, 4, 8, 16, 32, 64, 128)
CLEAN = enumerate_states(L, 3)


@pytest.fixture(scope="module")
def models(make_world, make_tiny_model):
    return {
        "exact_masked": make_world("masked").model,
        "exact_uniform": make_world("uniform").model,
        "tiny_masked": make_tiny_model("masked"),
        "tiny_uniform": make_tiny_model("uniform", seed=4),
        # alpha(1) = 0.3: the bridge (forward chain conditioned on the all-mask start) differs visibly from q
        "exact_masked_eps0.3": make_world("masked", eps=0.3).model,
    }


@pytest.fixture(scope="module")
def p0(make_world):
    return make_world("masked").p0  # the same p0 (seed 0) drives both exact models


@pytest.fixture(scope="module")
def exact_tables(models):
    """For every model and T in NESTED: (ELBO_T(x0), log p^T(x0)) for all 27 clean x0 (float64)."""
    out = {}
    with torch.no_grad():
        for key in ("exact_masked", "exact_uniform", "tiny_masked", "tiny_uniform", "exact_masked_eps0.3"):
            model = models[key]
            for T in NESTED if key in ("exact_masked", "exact_uniform") else (2, 8, 32):
                lp = exact_output_distribution(model, L, SamplerConfig(name="ancestral", steps=T)).log()
                out[key, T] = (exact_elbo(model, CLEAN, steps=T), lp)
    return out


@pytest.mark.parametrize("key", ["exact_masked", "exact_uniform", "tiny_masked", "tiny_uniform", "exact_masked_eps0.3"])
def test_elbo_is_a_lower_bound(key, exact_tables):
    """ELBO_T(x0) <= log p^T(x0) for every x0 and T (float32 terms: slack 1e-6)."""
    for (k, T), (el, lp) in exact_tables.items():
        if k == key:
            assert torch.isfinite(el).all() and torch.isfinite(lp).all()
            assert (el <= lp + 1e-6).all(), (T, float((el - lp).max()))


def test_elbo_tightens_and_approaches_log_p0(exact_tables, p0):
    """Exact masked model on nested grids: E_p0[ELBO_T] increases with T, the expected gap to log p0 halves with
    each doubling (first order; measured ratio 0.50), and at T = 128 the gap is < 0.005 on average (0.0042)
    and < 0.05 for every x0 (0.042)."""
    gaps = []
    for T in NESTED:
        el, lp = exact_tables["exact_masked", T]
        gaps.append(float(p0 @ (p0.log() - el)))
    assert all(g > 0 for g in gaps)
    assert all(b < a for a, b in zip(gaps, gaps[1:])), gaps
    assert all(b / a < 0.55 for a, b in zip(gaps[2:], gaps[3:])), gaps
    el128 = exact_tables["exact_masked", 128][0]
    assert gaps[-1] < 0.005 and float((p0.log() - el128).abs().max()) < 0.05
    # and the bound itself becomes tight against the sampler's own law (log p^T - ELBO_T -> 0)
    slack = [float(p0 @ (exact_tables["exact_masked", T][1] - exact_tables["exact_masked", T][0])) for T in NESTED]
    assert slack[-1] < slack[0] / 20, slack


def test_uniform_elbo_tightens_on_average(exact_tables, p0):
    """Exact uniform model: E_p0 gap decreases on nested grids; < 0.01 at T = 128 (measured 0.0074)."""
    gaps = [float(p0 @ (p0.log() - exact_tables["exact_uniform", T][0])) for T in NESTED]
    assert all(b < a for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 0.01, gaps


# --------------------------------------------------------------------------------------------
# Monte-Carlo estimator
# --------------------------------------------------------------------------------------------
def _z_scores(draws: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``draws [R, 27]`` independent estimates per x0 -> z-score of their mean against ``exact [27]``."""
    se = draws.std(0) / draws.shape[0] ** 0.5
    return (draws.mean(0) - exact) / se


@pytest.mark.parametrize("key", ["exact_masked", "exact_uniform", "tiny_masked", "tiny_uniform", "exact_masked_eps0.3"])
def test_monte_carlo_elbo_is_unbiased(key, models):
    """elbo(...) averaged over 200 independent draws per x0 matches exact_elbo: every |z| < 5 and the 27
    squared z-scores sum below the chi-square(27) 1e-4 quantile (~62); all steps evaluated."""
    model = models[key]
    reps = 200
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        exact = exact_elbo(model, CLEAN, steps=8)
        draws = elbo(model, CLEAN.repeat(reps, 1), steps=8, generator=g).double().view(reps, -1)
    assert (draws.std(0) > 0).any()  # really random
    z = _z_scores(draws, exact)
    assert (z.abs() < 5).all() and float((z**2).sum()) < 62, z


@pytest.mark.parametrize("key", ["exact_masked_eps0.3", "tiny_uniform"])
def test_monte_carlo_elbo_with_step_samples_is_unbiased(key, models):
    """With step_samples = 2 of the 9 terms (per-row subsets, rescaled): unbiased, rows independent (300 draws
    per x0 in one call); num_samples = 4 averages draws (50 per x0). Same z-score criteria."""
    model = models[key]
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        exact = exact_elbo(model, CLEAN, steps=8)
        draws = elbo(model, CLEAN.repeat(300, 1), steps=8, step_samples=2, generator=g).double().view(300, -1)
        averaged = elbo(model, CLEAN.repeat(50, 1), steps=8, num_samples=4, generator=g).double().view(50, -1)
        single = elbo(model, CLEAN.repeat(50, 1), steps=8, generator=g).double().view(50, -1)
    z = _z_scores(draws, exact)
    assert (z.abs() < 5).all() and float((z**2).sum()) < 62, z
    z = _z_scores(averaged, exact)
    assert (z.abs() < 5).all() and float((z**2).sum()) < 62, z
    # averaging 4 draws shrinks the spread (about 2x in standard deviation)
    assert float(averaged.std(0).mean()) < 0.7 * float(single.std(0).mean())


def test_step_samples_must_fit_the_plan(models):
    with pytest.raises(ValueError, match=r"step_samples must be between 1 and steps \+ 1 = 9"):
        elbo(models["tiny_masked"], CLEAN, steps=8, step_samples=10)
    with pytest.raises(ValueError, match="got 0"):
        elbo(models["tiny_masked"], CLEAN, steps=8, step_samples=0)


def test_elbo_passes(models):
    model = models["tiny_masked"]
    before = model.network_passes
    with torch.no_grad():
        elbo(model, CLEAN, steps=8, num_samples=2)
        mid = model.network_passes
        elbo(model, CLEAN, steps=8, step_samples=3)
    assert mid - before == 2 * 9 * 27 and model.network_passes - mid == 3 * 27


# --------------------------------------------------------------------------------------------
# the pieces of the construction
# --------------------------------------------------------------------------------------------
def test_masked_bridge_is_forward_process_conditioned_on_all_mask():
    """r(x_t | x0) = q_t(x_t | x0) P_{t->1}(x_t, M) / q_1(M | x0) per position, for the masked process."""
    proc = make_process("masked", 3, "loglinear", eps=0.05)
    M = proc.mask_id
    alpha = lambda u: proc.alpha(torch.tensor(u, dtype=torch.float64))  # noqa: E731
    for t in (0.0, 0.2, 0.7, 1.0):
        q_t = proc.transition_matrix(alpha(t))[0]  # from x0 = 0
        to_mask = proc.transition_matrix(alpha(1.0) / alpha(t))[:, M]
        cond = q_t * to_mask / proc.transition_matrix(alpha(1.0))[0, M]
        a = float(bridge_alpha(proc, torch.tensor(t, dtype=torch.float64)))
        want = torch.zeros(4, dtype=torch.float64)
        want[0], want[M] = a, 1 - a
        torch.testing.assert_close(cond, want, rtol=0, atol=1e-12)
    assert float(bridge_alpha(proc, torch.tensor(1.0, dtype=torch.float64))) == 0.0  # starts all-masked
    uni = make_process("uniform", 3)
    t = torch.tensor([0.3, 0.9], dtype=torch.float64)
    torch.testing.assert_close(bridge_alpha(uni, t), uni.alpha(t))  # uniform: no conditioning


def test_uniform_prior_term_is_minus_kl_to_uniform():
    proc = make_process("uniform", 3, "loglinear", eps=0.2)
    x0 = torch.tensor([[0, 2, 1], [1, 1, 1]])
    P1 = proc.transition_matrix(proc.alpha(torch.tensor(1.0, dtype=torch.float64)))
    for b in range(2):
        q1 = P1[x0[b][None, :], CLEAN].prod(-1)  # q(x_1 | x0) over all 27 x_1
        neg_kl = -(q1 * (q1.log() + L * math.log(3))).sum()
        assert float(prior_term(proc, x0)[b]) == pytest.approx(float(neg_kl), abs=1e-6)
    assert float(neg_kl) < -0.01
    assert (prior_term(make_process("masked", 3), x0) == 0).all()


def test_masked_step_term_is_weighted_cross_entropy(models):
    """Masked: -KL(q(x_s|x_t,x0) || p(x_s|x_t)) = (alpha_s - alpha_t)/(1 - alpha_t) sum_{i masked} log D(x_t)_{i,x0_i};
    the denoising term is sum_i log D(x_delta)_{i, x0_i}. Checked for a random network (rtol 1e-5)."""
    model = models["tiny_masked"]
    proc = model.process
    states = enumerate_states(L, proc.num_states)
    x0 = CLEAN[torch.arange(states.shape[0]) % 27]
    consistent = ((states == x0) | (states == proc.mask_id)).all(-1)
    x0, x_t = x0[consistent], states[consistent]
    masked = x_t == proc.mask_id
    for t, s in ((1.0, 0.6), (0.5, 0.45), (0.02, 1e-5)):
        a_t, a_s = (float(proc.alpha(torch.tensor(u, dtype=torch.float64))) for u in (t, s))
        with torch.no_grad():
            log_d = model.log_denoiser(x_t, torch.full((x_t.shape[0],), t)).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
            want = (a_s - a_t) / (1 - a_t) * (log_d * masked).sum(-1)
            got = elbo_step_term(model, x0, x_t, Step("predict", t, s, t - s, 0))
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
            got = elbo_step_term(model, x0, x_t, Step("denoise", t, 0.0, t, 0))
            torch.testing.assert_close(got, log_d.sum(-1), rtol=1e-6, atol=1e-6)
    plan = elbo_steps(4, min_t=0.01)
    assert [p.kind for p in plan] == ["predict"] * 4 + ["denoise"] and plan[-1].t == pytest.approx(0.01)
