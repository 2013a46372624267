"""Samplers against exact propagation of distributions through their own kernels (L = V = 3 worlds).

What is proved:
* every kernel is a probability distribution (for a random, non-exact network too);
* with the true denoiser, the ancestral/analytic kernels are the exact per-position reverse marginals and
  Euler/tau-leaping use the exact reverse rates;
* driven by the true denoiser, every sampler's exact output law approaches p0 as steps grow, and
  TV < 0.01 at 512 steps (masked and uniform; measured TVs in the test docstrings);
* the *empirical* law of sample(...) matches the exact law of the same sampler for a non-exact network
  (Pearson chi-square at significance 1e-4 with a fixed seed), for every sampler, corrector, cache,
  float64 draws, chunked batches and fixed positions; the test is shown to have power;
* the cached sampler uses exactly the passes its cache logic predicts, far fewer than the plain one;
* fixed positions never move; masked prefix conditioning converges to p0( . | prefix);
* bad configurations raise ValueError with a clear message.
"""

from __future__ import annotations

import math

import pytest
import torch

from sepo.diffusion import SamplerConfig, kernel_probs, plan_steps, prefix_constraint, sample
from sepo.diffusion.sampling import Step, sample_categorical
from sepo.tasks.toy.exact import enumerate_states, exact_output_distribution, forward_marginal, state_index, total_variation

L = 3
N_SAMPLES = 40_000
CHI2_Z = 3.719  # one-sided normal quantile for significance 1e-4


def chi_square(samples: torch.Tensor, probs: torch.Tensor, num_states: int) -> tuple[float, float, int]:
    """Pearson goodness-of-fit of ``samples [N, L]`` to ``probs`` over all ``S^L`` states.

    Cells with expected count < 5 are pooled (the pool joins the smallest large cell if it is still < 5).
    Returns ``(statistic, threshold at significance 1e-4 (Wilson-Hilferty), dof)``. Any sample in a state
    of probability < 1e-12 fails outright.
    """
    n = samples.shape[0]
    counts = torch.bincount(state_index(samples, num_states), minlength=probs.numel()).double()
    impossible = probs < 1e-12
    assert counts[impossible].sum() == 0, "a sample landed on a state the exact law gives probability 0"
    expected = n * probs
    big = expected >= 5
    obs, exp = counts[big], expected[big]
    pool_obs, pool_exp = counts[~big & ~impossible].sum(), expected[~big & ~impossible].sum()
    if pool_exp >= 5:
        obs, exp = torch.cat([obs, pool_obs[None]]), torch.cat([exp, pool_exp[None]])
    elif pool_exp > 0:
        j = int(exp.argmin())
        obs[j] += pool_obs
        exp[j] += pool_exp
    stat = float(((obs - exp) ** 2 / exp).sum())
    dof = obs.numel() - 1
    assert dof >= 5, "degenerate law: too few cells for a meaningful test"
    threshold = dof * (1 - 2 / (9 * dof) + CHI2_Z * math.sqrt(2 / (9 * dof))) ** 3
    return stat, threshold, dof


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def worlds(make_world):
    return {kind: make_world(kind) for kind in ("masked", "uniform")}


@pytest.fixture(scope="module")
def tiny(make_tiny_model):
    return {
        "masked": make_tiny_model("masked"),
        "masked_static": make_tiny_model("masked", time_conditioned=False, seed=2),  # cacheable
        "masked_score": make_tiny_model("masked", parameterization="score", seed=3),
        "uniform": make_tiny_model("uniform", seed=4),
        "uniform_score": make_tiny_model("uniform", parameterization="score", seed=5),
    }


# --------------------------------------------------------------------------------------------
# plans and kernels
# --------------------------------------------------------------------------------------------
def test_plan_steps_structure():
    plan = plan_steps(SamplerConfig(steps=4, corrector_steps=2, corrector_step_size=0.01, min_t=0.1))
    assert [s.kind for s in plan] == (["predict", "correct", "correct"] * 4) + ["denoise"]
    predicts = [s for s in plan if s.kind == "predict"]
    assert predicts[0].t == 1.0 and predicts[-1].s == pytest.approx(0.1)
    assert all(a.s == pytest.approx(b.t) for a, b in zip(predicts, predicts[1:]))  # a contiguous grid
    assert all(s.h == pytest.approx(0.225) for s in predicts)
    assert all(s.h == 0.01 and s.t == pytest.approx(prev.s) for prev, s in zip(plan, plan[1:]) if s.kind == "correct" and prev.kind == "predict")
    assert plan[-1] == Step("denoise", 0.1, 0.0, 0.1, len(plan) - 1)
    assert [s.index for s in plan] == list(range(len(plan)))
    assert [s.kind for s in plan_steps(SamplerConfig(steps=3, final_denoise=False))] == ["predict"] * 3


@pytest.mark.parametrize("key", ["masked", "masked_score", "uniform", "uniform_score"])
def test_kernels_are_probability_distributions(key, tiny):
    """For a random network: every kernel row is >= 0 and sums to 1 (1e-5), for every state, including
    large steps where Euler must clamp; fixed positions get a point mass on their token."""
    model = tiny[key]
    states = enumerate_states(L, model.num_states)
    fixed = torch.zeros_like(states, dtype=torch.bool)
    fixed[:, 1] = True
    steps = [Step("predict", 1.0, 0.5, 0.5, 0), Step("predict", 0.5, 0.49, 0.01, 0), Step("predict", 0.01, 1e-5, 0.01, 0),
             Step("correct", 0.3, 0.3, 0.2, 0), Step("denoise", 1e-5, 0.0, 1e-5, 0)]
    for name in ("ancestral", "analytic", "euler", "tau_leaping"):
        cfg = SamplerConfig(name=name)
        for step in steps:
            with torch.no_grad():
                probs = kernel_probs(model, states, step, cfg).double()
                pinned = kernel_probs(model, states, step, cfg, fixed=fixed).double()
            assert (probs >= 0).all(), (name, step)
            torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1], dtype=torch.float64), rtol=0, atol=1e-5)
            torch.testing.assert_close(pinned[:, 1], torch.nn.functional.one_hot(states[:, 1], model.num_states).double())
            torch.testing.assert_close(pinned[:, [0, 2]], probs[:, [0, 2]])
            if model.process.mask_id is not None:  # a revealed token never moves except by the corrector's forward rate
                revealed = states != model.process.mask_id
                onehot = torch.nn.functional.one_hot(states, model.num_states).double()
                if step.kind != "correct":
                    assert torch.equal(probs[revealed], onehot[revealed]), (name, step)


def _true_reverse_marginals(world, t: float, s: float) -> torch.Tensor:
    """Per-position marginals ``[N, L, S]`` of the exact joint reverse transition
    ``p(x_s | x_t) = p_s(x_s) P_{s->t}(x_s, x_t) / p_t(x_t)`` over all ``N = S^L`` states ``x_t``."""
    proc = world.process
    S = proc.num_states
    states = enumerate_states(L, S)
    p_s, p_t = (forward_marginal(world.p0, proc, L, u) for u in (s, t))
    alpha = lambda u: proc.alpha(torch.tensor(u, dtype=torch.float64))  # noqa: E731
    P = proc.transition_matrix(alpha(t) / alpha(s))
    joint = P[states[:, None, :], states[None, :, :]].prod(-1)  # [x_s, x_t]
    rev = (p_s[:, None] * joint / p_t[None, :]).T  # [x_t, x_s]
    onehot = torch.nn.functional.one_hot(states, S).double()  # [x_s, L, S]
    return torch.einsum("ab,bls->als", rev, onehot)


def _true_reverse_rates(world, t: float) -> torch.Tensor:
    """``Q̄_t(x -> y) = Q_t(y -> x) p_t(y) / p_t(x)`` for every state and single substitution ``[N, L, S]``
    (0 on the diagonal)."""
    proc = world.process
    S = proc.num_states
    states = enumerate_states(L, S)
    p_t = forward_marginal(world.p0, proc, L, t)
    sigma = float(proc.schedule.sigma(torch.tensor(t, dtype=torch.float64)))
    pi = proc.limit(dtype=torch.float64)
    rates = torch.zeros(states.shape[0], L, S, dtype=torch.float64)
    for i in range(L):
        for y in range(S):
            nb = states.clone()
            nb[:, i] = y
            rates[:, i, y] = sigma * pi[states[:, i]] * p_t[state_index(nb, S)] / p_t
    return rates.scatter(-1, states.unsqueeze(-1), 0.0)


@pytest.mark.parametrize("kind", ["masked", "uniform"])
def test_true_model_kernels_are_exact_reverse_marginals(kind, worlds):
    """With the true denoiser the ancestral and analytic kernels equal the per-position marginals of the exact
    joint reverse transition p(x_s | x_t), for large and small steps. Tolerance: 2e-5 (float32 model path;
    measured <= 1e-7), 5e-5 for analytic, whose P^{-1} cancels terms of size 1/a ~ 800 at t = 1 (measured 2.4e-5)."""
    w = worlds[kind]
    states = enumerate_states(L, w.process.num_states)
    for t, s in ((1.0, 0.6), (0.7, 0.3), (0.3, 0.29), (0.05, 1e-5)):
        want = _true_reverse_marginals(w, t, s)
        for name in ("ancestral", "analytic"):
            got = kernel_probs(w.model, states, Step("predict", t, s, t - s, 0), SamplerConfig(name=name)).double()
            tol = 5e-5 if name == "analytic" else 2e-5
            torch.testing.assert_close(got, want, rtol=0, atol=tol, msg=f"{name} {t}->{s}")


@pytest.mark.parametrize("kind", ["masked", "uniform"])
def test_true_model_euler_and_tau_leaping_use_true_reverse_rates(kind, worlds):
    """Euler's jump probabilities are h * Q̄_t and tau-leaping's are (1 - exp(-h R)) Q̄_t / R with the exact
    reverse rates Q̄_t(x -> y) = Q_t(y -> x) p_t(y)/p_t(x) (rtol 1e-4)."""
    w = worlds[kind]
    states = enumerate_states(L, w.process.num_states)
    h = 1e-3
    for t in (0.9, 0.5, 0.1):
        rates = _true_reverse_rates(w, t)
        step = Step("predict", t, t - h, h, 0)
        euler = kernel_probs(w.model, states, step, SamplerConfig(name="euler")).double()
        off = torch.ones_like(rates, dtype=torch.bool).scatter(-1, states.unsqueeze(-1), False)
        torch.testing.assert_close(euler[off], h * rates[off], rtol=1e-4, atol=1e-9)
        total = rates.sum(-1, keepdim=True)
        tau = kernel_probs(w.model, states, step, SamplerConfig(name="tau_leaping")).double()
        want = (1 - torch.exp(-h * total)) * rates / total.clamp_min(1e-300)
        torch.testing.assert_close(tau[off], want[off], rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("kind", ["masked", "uniform"])
def test_corrector_leaves_p_t_invariant(kind, worlds):
    """The corrector (generator Q_t + Q̄_t, first-jump per position) with the true scores keeps p_t: the
    deviation TV(p_t K_h, p_t) is second order in h (positions jump independently within a step).
    Measured TV at h = 1e-2 / 1e-3: 1e-4-3.5e-4 / 1e-6-3.6e-6, while the kernel moves 0.006-0.02 of the mass."""
    w = worlds[kind]
    S = w.process.num_states
    states = enumerate_states(L, S)
    tvs = []
    for t in (0.8, 0.4):
        p_t = forward_marginal(w.p0, w.process, L, t)
        for h in (1e-2, 1e-3):
            probs = kernel_probs(w.model, states, Step("correct", t, t, h, 0), SamplerConfig(corrector_steps=1)).double()
            trans = torch.ones(states.shape[0], states.shape[0], dtype=torch.float64)
            for i in range(L):
                trans = trans * probs[:, i, :][:, states[:, i]]
            tvs.append(total_variation(p_t @ trans, p_t))
            moved = float((p_t * (1 - trans.diagonal())).sum())  # the kernel really moves mass ...
            assert moved > 100 * tvs[-1]  # ... and (nearly) none of it leaves p_t
        assert tvs[-1] < tvs[-2] / 30 and tvs[-1] < 1e-5, tvs


def test_sample_categorical_never_returns_zero_probability_index():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([
        [0.0, 0.5, 0.5, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 1.0],
        [1.0, 0.0, 0.0, 0.0, 0.0],
        [1e-30, 0.0, 1.0 - 1e-7, 0.0, 1e-7],
        [0.3, 0.0, 0.0, 0.7, 0.0],
    ])
    probs = probs.repeat(20_000, 1)
    for float64 in (False, True):
        idx = sample_categorical(probs, g, float64=float64)
        assert (probs.gather(-1, idx[:, None]) > 0).all()
        freq = torch.nn.functional.one_hot(idx[4::5], 5).double().mean(0)  # rows [0.3, 0, 0, 0.7, 0]
        assert abs(float(freq[0]) - 0.3) < 5 * math.sqrt(0.21 / 20_000)
    # unnormalised rows are drawn proportionally
    idx = sample_categorical(torch.tensor([[2.0, 6.0]]).expand(40_000, -1), g)
    assert abs(float(idx.double().mean()) - 0.75) < 5 * math.sqrt(0.1875 / 40_000)


# --------------------------------------------------------------------------------------------
# the true model: convergence to p0
# --------------------------------------------------------------------------------------------
SAMPLERS = [("ancestral", 0), ("analytic", 0), ("euler", 0), ("tau_leaping", 0), ("ancestral", 1)]


@pytest.mark.parametrize("kind", ["masked", "uniform"])
@pytest.mark.parametrize("name, corrector", SAMPLERS, ids=[f"{n}+{c}c" for n, c in SAMPLERS])
def test_true_model_converges_to_p0(kind, name, corrector, worlds):
    """TV(exact output law, p0) decreases from 8 to 64 to 512 steps and is < 0.01 at 512.
    Measured at 512 steps (p0 = softmax(1.5 N(0,1)) over 3^3): masked 0.0007-0.0009, uniform 0.0012-0.0019."""
    w = worlds[kind]
    tv = {}
    for steps in (8, 64, 512):
        dist = exact_output_distribution(w.model, L, SamplerConfig(name=name, steps=steps, corrector_steps=corrector))
        assert float(dist.sum()) == pytest.approx(1.0, abs=1e-4)  # float32 kernels lose ~1e-8 per step
        tv[steps] = total_variation(dist, w.p0)
    assert tv[512] < 0.01 and tv[512] < tv[64] < tv[8], tv
    assert tv[512] < tv[64] / 4, tv  # first order in the step size (ratio 8 measured ~ 6-8)


@pytest.mark.parametrize("kind", ["masked", "uniform"])
def test_min_t_zero_is_valid_without_corrector(kind, worlds):
    """min_t = 0 (last predictor step lands on t = 0): every sampler's exact law is a proper distribution."""
    for name in ("ancestral", "analytic", "euler", "tau_leaping"):
        dist = exact_output_distribution(worlds[kind].model, L, SamplerConfig(name=name, steps=16, min_t=0.0))
        assert torch.isfinite(dist).all() and float(dist.sum()) == pytest.approx(1.0, abs=1e-5), name
        assert total_variation(dist, worlds[kind].p0) < 0.1


def test_true_model_converges_masked_4x4(make_world):
    """One larger world (L = V = 4, 625 states): ancestral TV goes 8 -> 32 steps at first order.
    Measured TV: 0.107 (8 steps), 0.028 (32), 0.0071 (128; slower, not run here)."""
    w = make_world("masked", length=4, vocab=4, seed=7)
    tv = [total_variation(exact_output_distribution(w.model, 4, SamplerConfig(steps=s)), w.p0) for s in (8, 32)]
    assert tv[1] < tv[0] / 3 and tv[1] < 0.04, tv


@pytest.mark.parametrize("name, corrector", [("ancestral", 0), ("tau_leaping", 0), ("ancestral", 1)])
def test_masked_prefix_conditioning_converges_to_conditional(name, corrector, worlds):
    """Fixing x^1 = 2 (masked, true denoiser): the output law is supported on the prefix and converges to
    p0( . | x^1 = 2): TV < 0.01 at 512 steps (measured 0.0005-0.0007)."""
    w = worlds["masked"]
    clean = enumerate_states(L, 3)
    cond = w.p0 * (clean[:, 0] == 2)
    cond = cond / cond.sum()
    fixed, tokens = torch.tensor([True, False, False]), torch.tensor([2, 0, 0])
    dist = exact_output_distribution(w.model, L, SamplerConfig(name=name, steps=512, corrector_steps=corrector),
                                     fixed=fixed, fixed_tokens=tokens)
    assert float(dist[clean[:, 0] != 2].sum()) == 0.0
    assert total_variation(dist, cond) < 0.01


def test_uniform_prefix_is_kept_but_only_approximately_conditions(worlds):
    """Uniform process: fixed positions are kept exactly, but clamping a token of a uniform-noise model is
    *not* exact conditioning (the denoiser reads the clamped token as noisy): the law plateaus at
    TV ~ 0.13 from p0( . | x^1 = 2) (measured 0.135 at 64 and 0.126 at 512 steps). Documented limitation."""
    w = worlds["uniform"]
    clean = enumerate_states(L, 3)
    cond = w.p0 * (clean[:, 0] == 2)
    cond = cond / cond.sum()
    dist = exact_output_distribution(w.model, L, SamplerConfig(steps=64), fixed=torch.tensor([True, False, False]),
                                     fixed_tokens=torch.tensor([2, 0, 0]))
    assert float(dist[clean[:, 0] != 2].sum()) == 0.0
    assert 0.05 < total_variation(dist, cond) < 0.2


# --------------------------------------------------------------------------------------------
# empirical law of sample(...) == exact law of the same kernels, for a non-exact network
# --------------------------------------------------------------------------------------------
MIDDLE = torch.tensor([False, True, False])  # an infilling constraint (not a prefix)
CONFIGS = [
    # (model key, sampler config kwargs, extra: fixed position mask or None, sample() kwargs)
    ("masked", dict(name="ancestral"), None, {}),
    ("masked", dict(name="analytic"), None, {}),
    ("masked", dict(name="euler"), None, {}),
    ("masked", dict(name="tau_leaping"), None, {}),
    ("masked", dict(name="ancestral", corrector_steps=1), None, {}),
    ("masked", dict(name="euler", corrector_steps=2, corrector_step_size=0.3), None, {}),
    ("masked", dict(name="ancestral", float64=True), None, {}),
    ("masked", dict(name="ancestral", final_denoise=False, min_t=0.3), None, {}),  # ends with masks left
    ("masked", dict(name="ancestral"), MIDDLE, {"batch_size": 15_000}),
    ("masked_static", dict(name="ancestral_cached"), None, {}),
    ("masked_static", dict(name="ancestral_cached", corrector_steps=1), None, {}),
    ("masked_static", dict(name="ancestral_cached"), MIDDLE, {"batch_size": 15_000}),
    ("masked_score", dict(name="ancestral"), None, {}),
    ("masked_score", dict(name="analytic"), None, {}),
    ("uniform", dict(name="ancestral"), None, {}),
    ("uniform", dict(name="analytic"), None, {}),
    ("uniform", dict(name="euler"), None, {}),
    ("uniform", dict(name="tau_leaping"), None, {}),
    ("uniform", dict(name="ancestral", corrector_steps=1), None, {}),
    ("uniform", dict(name="tau_leaping", float64=True), MIDDLE, {}),
    ("uniform_score", dict(name="analytic"), None, {}),
    ("uniform_score", dict(name="euler", corrector_steps=1), None, {}),
]


def _cid(c):
    key, kw, fixed, extra = c
    s = f"{key}-{kw['name']}" + "".join(f"-{k}={v}" for k, v in kw.items() if k != "name")
    return s + ("-infill" if fixed is not None else "") + ("-chunked" if extra else "")


def _draw(model, cfg, fixed_pos, seed, *, n=N_SAMPLES, **kwargs):
    fixed = fixed_tokens = None
    if fixed_pos is not None:
        fixed = fixed_pos[None].expand(n, -1)
        fixed_tokens = torch.where(fixed, torch.tensor([0, 2, 0]), 0)
    out = sample(model, num_samples=n, length=L, config=cfg, generator=torch.Generator().manual_seed(seed),
                 fixed=fixed, fixed_tokens=fixed_tokens, **kwargs)
    return out


@pytest.mark.parametrize("config", CONFIGS, ids=[_cid(c) for c in CONFIGS])
def test_empirical_law_matches_exact_law(config, tiny):
    key, kw, fixed_pos, extra = config
    model = tiny[key]
    cfg = SamplerConfig(steps=6, **kw)
    out = _draw(model, cfg, fixed_pos, seed=CONFIGS.index(config), **extra)
    assert out.x.shape == (N_SAMPLES, L)
    with torch.no_grad():
        exact = exact_output_distribution(model, L, cfg, return_all_states=True,
                                          fixed=fixed_pos, fixed_tokens=None if fixed_pos is None else torch.tensor([0, 2, 0]))
    if cfg.final_denoise and model.process.mask_id is not None:
        assert float(exact[(enumerate_states(L, model.num_states) == model.process.mask_id).any(-1)].sum()) < 1e-12
    if not cfg.final_denoise:  # this config really ends with masked tokens
        assert float(exact[(enumerate_states(L, model.num_states) == model.process.mask_id).any(-1)].sum()) > 0.05
    stat, threshold, dof = chi_square(out.x, exact, model.num_states)
    assert stat < threshold, f"chi2 = {stat:.1f} > {threshold:.1f} (dof {dof})"
    if fixed_pos is not None:
        assert (out.x[:, 1] == 2).all()


def test_chi_square_has_power(tiny):
    """The same check rejects laws that differ slightly: 6-step ancestral samples against the exact laws of
    4 ancestral steps (TV 0.034 from the 6-step law) and of 3 tau-leaping steps (TV 0.038). Measured chi2:
    322 and 435 against a threshold of 62; at N = 40,000 the detection edge is TV ~ 0.014 (chi2 71)."""
    model = tiny["masked"]
    out = _draw(model, SamplerConfig(steps=6), None, seed=0)
    with torch.no_grad():
        own = exact_output_distribution(model, L, SamplerConfig(steps=6), return_all_states=True)
        for other in (SamplerConfig(steps=4), SamplerConfig(steps=3, name="tau_leaping")):
            exact = exact_output_distribution(model, L, other, return_all_states=True)
            assert total_variation(exact, own) < 0.05  # a small difference ...
            stat, threshold, _ = chi_square(out.x, exact, model.num_states)
            assert stat > 2 * threshold, (other, stat, threshold)  # ... is clearly detected


# --------------------------------------------------------------------------------------------
# cache, fixed positions, trajectories
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["tiny", "exact"])
def test_cached_sampler_counts_passes(which, tiny, worlds):
    """ancestral_cached refreshes a sequence only after one of its tokens changed: the pass count equals
    N (first step) + the number of (sequence, step) pairs whose state changed at the previous step;
    plain ancestral uses N (steps + 1). Exact laws of both are identical."""
    model = tiny["masked_static"] if which == "tiny" else worlds["masked"].model
    n, steps = 2000, 64
    cached = sample(model, num_samples=n, length=L, config=SamplerConfig(name="ancestral_cached", steps=steps),
                    generator=torch.Generator().manual_seed(0), keep_trajectory=True)
    traj = torch.stack(cached.trajectory)  # [steps + 2, n, L]: before each step, and the result
    changed_before = (traj[1:-1] != traj[:-2]).any(-1)  # [steps, n]: changed during the previous step
    assert cached.network_passes == n + int(changed_before.sum())
    assert cached.network_passes <= n * (L + 1)  # at most L reveal events per sequence, plus the first pass
    plain = sample(model, num_samples=n, length=L, config=SamplerConfig(name="ancestral", steps=steps),
                   generator=torch.Generator().manual_seed(0))
    assert plain.network_passes == n * (steps + 1)
    assert cached.network_passes < plain.network_passes / 10
    d_plain = exact_output_distribution(model, L, SamplerConfig(name="ancestral", steps=16))
    d_cached = exact_output_distribution(model, L, SamplerConfig(name="ancestral_cached", steps=16))
    assert torch.equal(d_plain, d_cached)


@pytest.mark.parametrize("key", ["masked", "uniform"])
def test_fixed_positions_never_change(key, tiny):
    """With a prefix (prefix_constraint) every state of every trajectory keeps the prefix, for all samplers."""
    model = tiny[key]
    n = 500
    fixed, tokens = prefix_constraint(torch.tensor([2, 1]), n, L)
    assert fixed[0].tolist() == [True, True, False] and tokens[0].tolist() == [2, 1, 0]
    fixed, tokens = prefix_constraint(torch.tensor([[2]]).expand(n, -1), n, L)
    for name, corr in SAMPLERS:
        out = sample(model, num_samples=n, length=L, config=SamplerConfig(name=name, steps=8, corrector_steps=corr),
                     generator=torch.Generator().manual_seed(1), fixed=fixed, fixed_tokens=tokens, keep_trajectory=True)
        assert len(out.trajectory) == len(out.steps) + 1
        for state in out.trajectory:
            assert (state[:, 0] == 2).all(), name
        assert out.x[:, 1:].unique(dim=0).shape[0] > 1  # the free positions are really sampled
        if model.process.mask_id is not None:
            assert (out.x != model.process.mask_id).all()


# --------------------------------------------------------------------------------------------
# bad configurations
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="ddim"), "unknown sampler 'ddim'; choose one of ancestral, ancestral_cached"),
        (dict(steps=0), "sampler steps must be >= 1, got 0"),
        (dict(steps=-3), "sampler steps must be >= 1, got -3"),
        (dict(corrector_steps=-1), "corrector_steps must be >= 0"),
        (dict(min_t=1.0), r"min_t must be in \[0, 1\)"),
        (dict(corrector_step_size=0.0), "corrector_step_size must be > 0"),
        (dict(corrector_steps=1, min_t=0.0), "corrector steps need min_t > 0"),  # used to give NaN kernels
    ],
)
def test_bad_sampler_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplerConfig(**kwargs)


@pytest.mark.parametrize("key", ["masked", "uniform"])
def test_cached_sampler_rejects_time_conditioned_or_uniform_models(key, tiny):
    cfg = SamplerConfig(name="ancestral_cached", steps=4)
    for run in (lambda: sample(tiny[key], num_samples=2, length=L, config=cfg),
                lambda: exact_output_distribution(tiny[key], L, cfg)):
        with pytest.raises(ValueError, match="'ancestral_cached' .* only exact for a masked model whose denoiser ignores time"):
            run()


def test_prefix_constraint_rejects_bad_shapes():
    with pytest.raises(ValueError, match="does not fit 3 samples of length 2"):
        prefix_constraint(torch.tensor([1, 2, 0]), 3, 2)
    with pytest.raises(ValueError, match="does not fit 3 samples"):
        prefix_constraint(torch.tensor([[1], [2]]), 3, 2)
