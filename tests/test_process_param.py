"""Forward processes and the denoiser <-> concrete-score conversions, against exact enumeration.

Tolerances: transition algebra in float64 to 1e-12; the generator identity by central differences
(h = 1e-6) to 1e-7; float32 marginals to 1e-6; model outputs (float32 network path) against the exact
float64 ratios to 2e-4 in log space; empirical frequencies within 5 binomial standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from sepo.diffusion import DiffusionModel, make_process
from sepo.diffusion.parameterization import log_denoiser_from_log_score, log_score_from_log_denoiser, subs_log_denoiser
from sepo.diffusion.process import process_from_config
from sepo.tasks.toy.exact import ExactDenoiser, enumerate_states, forward_marginal, true_log_score

KINDS = ["masked", "uniform"]
SCHEDS = [("loglinear", {}), ("geometric", {}), ("cosine", {"eps": 1e-3})]


def _proc(kind, sched=("loglinear", {})):
    return make_process(kind, 3, sched[0], **sched[1])


def _generator(process, t: float) -> torch.Tensor:
    """``Q_t = sigma(t) (1 pi^T - I)`` (rows: from), float64."""
    S = process.num_states
    sigma = float(process.schedule.sigma(torch.tensor(t, dtype=torch.float64)))
    pi = process.limit(dtype=torch.float64)
    return sigma * (torch.ones(S, 1, dtype=torch.float64) * pi[None, :] - torch.eye(S, dtype=torch.float64))


# --------------------------------------------------------------------------------------------
# forward processes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sched", SCHEDS, ids=[s[0] for s in SCHEDS])
def test_marginal_rows_match_transition_matrix(kind, sched):
    proc = _proc(kind, sched)
    V, S = proc.vocab_size, proc.num_states
    x0 = torch.arange(V).repeat(4)[None].expand(5, -1)  # [5, 12]
    t = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    q = proc.marginal(x0, t)
    assert q.shape == (5, 12, S)
    torch.testing.assert_close(q.sum(-1), torch.ones(5, 12), rtol=0, atol=1e-6)
    for b in range(5):
        P = proc.transition_matrix(proc.alpha(t[b].double()))
        torch.testing.assert_close(q[b].double(), P[x0[b]], rtol=0, atol=1e-6)
    if kind == "masked":  # never lands on another clean token
        other = torch.ones_like(q, dtype=torch.bool).scatter(-1, x0.unsqueeze(-1), False)
        other[..., proc.mask_id] = False
        assert (q[other] == 0).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sched", SCHEDS, ids=[s[0] for s in SCHEDS])
def test_chapman_kolmogorov(kind, sched):
    proc = _proc(kind, sched)
    alpha = lambda u: proc.alpha(torch.tensor(u, dtype=torch.float64))  # noqa: E731
    for s, t in [(0.0, 0.3), (0.2, 0.7), (0.5, 0.99), (0.1, 1.0)]:
        a_s, a_t = alpha(s), alpha(t)
        P_0s = proc.transition_matrix(a_s / alpha(0.0))
        P_st = proc.transition_matrix(a_t / a_s)
        P_0t = proc.transition_matrix(a_t / alpha(0.0))
        torch.testing.assert_close(P_0s @ P_st, P_0t, rtol=0, atol=1e-12)
        torch.testing.assert_close(P_st.sum(-1), torch.ones(proc.num_states, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sched", SCHEDS, ids=[s[0] for s in SCHEDS])
def test_generator_integrates_to_transition(kind, sched):
    """d/dt P_{0->t} = P_{0->t} Q_t (Kolmogorov forward equation), by central differences."""
    proc = _proc(kind, sched)
    P = lambda u: proc.transition_matrix(proc.alpha(torch.tensor(u, dtype=torch.float64)) / proc.alpha(torch.tensor(0.0, dtype=torch.float64)))  # noqa: E731
    h = 1e-6
    for t in (0.05, 0.3, 0.6, 0.95):
        dP = (P(t + h) - P(t - h)) / (2 * h)
        rhs = P(t) @ _generator(proc, t)
        torch.testing.assert_close(dP, rhs, rtol=1e-7, atol=1e-7 * float(rhs.abs().max()))
        # the rate "into x_t" used by the losses and samplers is the off-diagonal column of Q_t
        x_t = torch.arange(proc.num_states)[None]
        rate = proc.forward_rate_into(x_t, torch.tensor([t])).double()[0]
        Q = _generator(proc, t)
        for x in range(proc.num_states):
            for y in range(proc.num_states):
                if y != x:
                    assert float(rate[x]) == pytest.approx(float(Q[y, x]), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_sample_xt_frequencies_match_marginal(kind):
    proc = _proc(kind)
    n = 40_000
    g = torch.Generator().manual_seed(0)
    for t in (0.2, 0.7):
        x0 = torch.tensor([[0, 1, 2]]).expand(n, -1)
        x_t = proc.sample_xt(x0, torch.full((n,), t), generator=g)
        freq = torch.nn.functional.one_hot(x_t, proc.num_states).double().mean(0)  # [3, S]
        p = proc.marginal(x0[:1], torch.tensor([t]))[0].double()
        se = (p * (1 - p) / n).sqrt()
        assert ((freq - p).abs() <= 5 * se + 1e-12).all(), (freq, p)
    prior = proc.sample_limit((n, 2), generator=g)
    freq = torch.nn.functional.one_hot(prior, proc.num_states).double().mean((0, 1))
    pi = proc.limit(dtype=torch.float64)
    assert ((freq - pi).abs() <= 5 * (pi * (1 - pi) / (2 * n)).sqrt() + 1e-12).all()


def test_process_construction_and_config():
    for kind in KINDS:
        proc = _proc(kind, ("cosine", {"eps": 0.01}))
        again = process_from_config(proc.to_config())
        assert type(again) is type(proc) and again.vocab_size == 3
        t = torch.rand(7)
        torch.testing.assert_close(again.alpha(t), proc.alpha(t))
    assert _proc("masked").num_states == 4 and _proc("masked").mask_id == 3
    assert _proc("uniform").num_states == 3 and _proc("uniform").mask_id is None
    with pytest.raises(ValueError, match="unknown diffusion process 'gaussian'"):
        make_process("gaussian", 3)
    with pytest.raises(ValueError, match="vocab_size must be at least 2"):
        make_process("masked", 1)


# --------------------------------------------------------------------------------------------
# parameterisations: denoiser <-> concrete score
# --------------------------------------------------------------------------------------------
def _relevant(states: torch.Tensor, process) -> torch.Tensor:
    """Entries ``[N, L, S]`` of the concrete score that the reverse process uses: those with a non-zero
    forward rate into ``x_t^i`` (all of them, except at revealed positions of the masked process), plus
    the diagonal. At a revealed token of the masked process the true ratio to ``[MASK]`` is not a
    function of ``D(x_t)`` (see :func:`test_masked_relation_by_hand`) and is never used."""
    S = process.num_states
    rel = torch.ones(*states.shape, S, dtype=torch.bool)
    if process.mask_id is not None:
        rel &= (states == process.mask_id).unsqueeze(-1) | torch.nn.functional.one_hot(states, S).bool()
    return rel


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 0.95])
def test_exact_denoiser_score_equals_true_score(kind, t, make_world):
    w = make_world(kind)
    states, true = true_log_score(w.p0, w.process, w.length, t)
    model_score = w.model.log_score(states, torch.full((states.shape[0],), t)).double()
    rel = _relevant(states, w.process)
    assert torch.isfinite(true[rel]).all()
    torch.testing.assert_close(model_score[rel], true[rel], rtol=0, atol=2e-4)
    # the diagonal is exactly 0 (s(x)_{x} = 1)
    assert (model_score.gather(-1, states.unsqueeze(-1)) == 0).all()
    if kind == "masked":  # a revealed token never becomes another clean token: score 0
        clean_other = (~rel).clone()
        clean_other[..., w.process.mask_id] = False
        assert torch.isneginf(model_score[clean_other]).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_denoiser_from_true_score_is_exact_posterior(kind, t, make_world):
    w = make_world(kind)
    states, true = true_log_score(w.p0, w.process, w.length, t)
    alpha = w.process.alpha(torch.full((states.shape[0],), t, dtype=torch.float64))
    true = torch.where(_relevant(states, w.process), true, torch.zeros_like(true))  # unused entries: any value
    d_from_score = log_denoiser_from_log_score(true, states, alpha, w.process).double().exp()
    d_exact = w.model.log_denoiser(states, torch.full((states.shape[0],), t)).double().exp()
    torch.testing.assert_close(d_from_score, d_exact, rtol=0, atol=1e-5)
    torch.testing.assert_close(d_exact.sum(-1), torch.ones_like(d_exact[..., 0]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trips(kind, make_world):
    """D -> s -> D is the identity for any denoiser; s -> D -> s for true scores (both processes)."""
    w = make_world(kind)
    proc = w.process
    states = enumerate_states(w.length, proc.num_states)
    g = torch.Generator().manual_seed(3)
    tol = 1e-6 if kind == "masked" else 1e-9  # the masked conversions run in float32 (SUBS), uniform keeps float64
    for t in (0.1, 0.5, 0.9):
        alpha = proc.alpha(torch.full((states.shape[0],), t, dtype=torch.float64))
        logits = 2 * torch.randn(states.shape[0], w.length, proc.vocab_size, generator=g, dtype=torch.float64)
        log_d = subs_log_denoiser(logits, states, proc.mask_id).double() if kind == "masked" else logits.log_softmax(-1)
        back = log_denoiser_from_log_score(log_score_from_log_denoiser(log_d, states, alpha, proc), states, alpha, proc)
        torch.testing.assert_close(back.double().exp(), log_d.exp(), rtol=0, atol=tol)
        _, true = true_log_score(w.p0, proc, w.length, t)
        rel = _relevant(states, proc)
        true_in = torch.where(rel, true, torch.zeros_like(true))
        again = log_score_from_log_denoiser(log_denoiser_from_log_score(true_in, states, alpha, proc), states, alpha, proc)
        torch.testing.assert_close(again.double()[rel], true[rel], rtol=0, atol=tol * 10)


@pytest.mark.parametrize("kind", KINDS)
def test_score_parameterization_model_reads_scores(kind, make_world):
    """A 'score' model whose network outputs the true log-scores yields the exact posterior and scores
    (and ignores whatever the network puts at the x_t entry)."""
    w = make_world(kind)
    proc = w.process
    exact_net = ExactDenoiser(w.p0.log(), proc, w.length)

    class ScoreNet(torch.nn.Module):
        def forward(self, x_t, sigma_bar):
            alpha = torch.exp(-sigma_bar.double())
            log_s = log_score_from_log_denoiser(exact_net(x_t, sigma_bar).double().log_softmax(-1)
                                                if kind == "uniform" else subs_log_denoiser(exact_net(x_t, sigma_bar), x_t, proc.mask_id).double(),
                                                x_t, alpha, proc)
            log_s = torch.where(torch.isneginf(log_s), torch.full_like(log_s, -1e4), log_s)
            return log_s.scatter(-1, x_t.unsqueeze(-1), 7.0)  # garbage at the ignored entry

    model = DiffusionModel(ScoreNet(), proc, parameterization="score")
    states = enumerate_states(w.length, proc.num_states)
    for t in (0.2, 0.8):
        tt = torch.full((states.shape[0],), t)
        torch.testing.assert_close(model.log_denoiser(states, tt).exp(), w.model.log_denoiser(states, tt).exp(), rtol=0, atol=1e-5)
        _, true = true_log_score(w.p0, proc, w.length, t)
        rel = _relevant(states, proc)
        torch.testing.assert_close(model.log_score(states, tt).double()[rel], true[rel], rtol=0, atol=2e-4)


def test_masked_relation_by_hand():
    """METHOD.md §1: at a masked position s_v = alpha/(1 - alpha) D_v, with hand-computed numbers.

    p0 over {0,1}^2: p0(00)=.1, p0(01)=.2, p0(10)=.3, p0(11)=.4; loglinear eps=0 at t=0.2 gives alpha=0.8.
    At x_t = (M, 1): p_t(M,1) = (.2+.4)(.2)(.8) = .096, p_t(0,1) = .2(.64) = .128, p_t(1,1) = .4(.64) = .256,
    so s_{1,0} = 4/3, s_{1,1} = 8/3; D_1 = (.2, .4)/.6 = (1/3, 2/3); alpha/(1-alpha) = 4.
    At the revealed position 2 the true ratios p_t(M,0)/p_t(M,1) = .4/.6 = 2/3 and p_t(M,M)/p_t(M,1) = .04/.096
    = 5/12 = ((1-alpha)/alpha)/P(x0_2=1) are *not* functions of D(x_t) (which is one-hot there); the conversion
    returns 0 and (1-alpha)/alpha = 1/4, values that never enter the reverse process because the forward rate
    into a revealed token is 0.
    """
    proc = make_process("masked", 2, "loglinear", eps=0.0)
    p0 = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    model = DiffusionModel(ExactDenoiser(p0.log(), proc, 2), proc, parameterization="subs", time_conditioned=False)
    M = proc.mask_id
    x_t = torch.tensor([[M, 1]])
    t = torch.tensor([0.2])
    assert float(proc.alpha(t)) == pytest.approx(0.8, abs=1e-7)
    d = model.log_denoiser(x_t, t).exp()[0]
    torch.testing.assert_close(d[0].double(), torch.tensor([1 / 3, 2 / 3], dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(d[1].double(), torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=0, atol=0)
    s = model.log_score(x_t, t).exp()[0].double()
    torch.testing.assert_close(s[0], torch.tensor([4 / 3, 8 / 3, 1.0], dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(s[1], torch.tensor([0.0, 1.0, 0.25], dtype=torch.float64), rtol=0, atol=1e-6)
    states, true = true_log_score(p0, proc, 2, 0.2)
    row = int((states == x_t).all(-1).nonzero())
    torch.testing.assert_close(true[row].exp(), torch.tensor([[4 / 3, 8 / 3, 1.0], [2 / 3, 1.0, 5 / 12]], dtype=torch.float64),
                               rtol=0, atol=1e-12)
    assert float(proc.forward_rate_into(x_t, t)[0, 1]) == 0.0
    # and p_t itself, by hand
    pt = forward_marginal(p0, proc, 2, 0.2)
    assert float(pt[row]) == pytest.approx(0.096, abs=1e-12)


def test_subs_carries_revealed_tokens_and_drops_mask_logit():
    logits = torch.tensor([[[0.0, 1.0, 2.0, 50.0], [3.0, 0.0, 0.0, 50.0]]])  # V = 3, mask logit huge
    x_t = torch.tensor([[3, 2]])
    d = subs_log_denoiser(logits, x_t, mask_id=3).exp()
    torch.testing.assert_close(d[0, 0], torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0))
    torch.testing.assert_close(d[0, 1], torch.tensor([0.0, 0.0, 1.0]))


def test_model_rejects_bad_parameterizations_and_counts_passes(make_world):
    w = make_world("masked")
    net = w.model.net
    with pytest.raises(ValueError, match="unknown parameterization 'logits'"):
        DiffusionModel(net, w.process, parameterization="logits")
    with pytest.raises(ValueError, match="'subs' parameterization needs the masked process"):
        DiffusionModel(net, make_process("uniform", 3), parameterization="subs")
    with pytest.raises(ValueError, match="use 'subs'"):
        DiffusionModel(net, w.process, parameterization="denoiser")
    before = w.model.network_passes
    w.model.log_denoiser(torch.zeros(5, 3, dtype=torch.long), torch.tensor(0.5))
    w.model.log_score(torch.zeros(2, 3, dtype=torch.long), torch.full((2,), 0.5))
    assert w.model.network_passes - before == 7
    assert math.isclose(float(w.model.process.alpha(torch.tensor(0.5))), 1 - 0.999 * 0.5, rel_tol=1e-6)
