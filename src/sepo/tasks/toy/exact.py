"""Exact worlds: tiny state spaces (``L <= 4``, ``|V| <= 4``) where everything is enumerable.

With ``S`` states per position there are ``S^L`` sequences (at most ``5^4 = 625`` for a masked model
over 4 tokens), so we can compute, with no sampling at all:

* forward marginals ``p_t`` and the true concrete scores / denoisers of any data distribution ``p_0``;
* the exact output distribution of every sampler for a given network, by propagating a distribution
  through the very kernels the sampler draws from (:func:`sepo.diffusion.sampling.kernel_probs`);
* the exact ELBO of a sequence, and (with autograd) the exact gradient of any expected reward.

This is how the project proves its estimators and samplers (METHOD.md §7).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from sepo.diffusion.likelihood import bridge_alpha, elbo_step_term, elbo_steps, prior_term
from sepo.diffusion.model import DiffusionModel
from sepo.diffusion.process import MaskedProcess, Process
from sepo.diffusion.sampling import SamplerConfig, Step, _check_cacheable, kernel_probs, plan_steps

__all__ = [
    "enumerate_states",
    "state_index",
    "ExactDenoiser",
    "exact_model",
    "forward_marginal",
    "true_log_score",
    "exact_output_distribution",
    "clean_distribution",
    "exact_elbo",
    "total_variation",
]


def enumerate_states(length: int, num_states: int) -> torch.Tensor:
    """All ``num_states**length`` sequences in lexicographic order, ``[N, L]`` long."""
    return torch.tensor(list(itertools.product(range(num_states), repeat=length)), dtype=torch.long).reshape(-1, length)


def state_index(x: torch.Tensor, num_states: int) -> torch.Tensor:
    """Inverse of :func:`enumerate_states`: ``x [..., L]`` -> index ``[...]``."""
    powers = num_states ** torch.arange(x.shape[-1] - 1, -1, -1, device=x.device)
    return (x * powers).sum(-1)


def _likelihoods(process: Process, x_t: torch.Tensor, clean: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``q_t(x_t | x_0)`` for every pair: ``x_t [B, L]``, ``clean [N0, L]``, ``alpha [B]`` -> ``[B, N0, L]``."""
    pi = process.limit(x_t.device, torch.float64)
    a = alpha.to(torch.float64)[:, None, None]
    same = (x_t[:, None, :] == clean[None, :, :]).to(torch.float64)
    return a * same + (1 - a) * pi[x_t][:, None, :]


class ExactDenoiser(nn.Module):
    """The exact marginal posterior ``p(x_0^i | x_t)`` of a data distribution over ``V^L``, as a network.

    ``log_p0`` (``[V^L]``) is a buffer, or a learnable parameter with ``learnable=True``: the latter is a
    *tabular perfect-ratio model* whose scores are exact ratios of one distribution (``softmax(log_p0)``).
    Output: log-posterior logits ``[B, L, V]`` (usable as SUBS or denoiser logits).
    """

    def __init__(self, log_p0: torch.Tensor, process: Process, length: int, *, learnable: bool = False):
        super().__init__()
        self.process = process
        self.length = length
        log_p0 = torch.as_tensor(log_p0, dtype=torch.float64)
        if learnable:
            self.log_p0 = nn.Parameter(log_p0.clone())
        else:
            self.register_buffer("log_p0", log_p0.clone())
        self.register_buffer("clean", enumerate_states(length, process.vocab_size), persistent=False)

    def forward(self, x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        alpha = torch.exp(-sigma_bar.to(torch.float64))
        lik = _likelihoods(self.process, x_t, self.clean, alpha).clamp_min(1e-300).log().sum(-1)  # [B, N0]
        post = torch.log_softmax(torch.log_softmax(self.log_p0, 0)[None, :] + lik, dim=-1)  # p(x0 | x_t)
        onehot = nn.functional.one_hot(self.clean, self.process.vocab_size).to(post.dtype)  # [N0, L, V]
        d = torch.einsum("bn,nlv->blv", post.exp(), onehot)
        return d.clamp_min(1e-300).log().to(torch.float32 if not self.log_p0.requires_grad else torch.float64)


def exact_model(log_p0: torch.Tensor, process: Process, length: int, *, learnable: bool = False) -> DiffusionModel:
    """A :class:`DiffusionModel` driven by the true posterior of ``p0`` (time-independent if masked)."""
    net = ExactDenoiser(log_p0, process, length, learnable=learnable)
    masked = isinstance(process, MaskedProcess)
    return DiffusionModel(net, process, parameterization="subs" if masked else "denoiser", time_conditioned=not masked)


def forward_marginal(p0: torch.Tensor, process: Process, length: int, t: float) -> torch.Tensor:
    """``p_t`` over all ``S^L`` states (float64), for ``p0`` over ``V^L``."""
    states = enumerate_states(length, process.num_states)
    clean = enumerate_states(length, process.vocab_size)
    alpha = process.alpha(torch.full((states.shape[0],), t, dtype=torch.float64))
    lik = _likelihoods(process, states, clean, alpha).prod(-1)  # [N, N0]
    return lik @ p0.to(torch.float64)


def true_log_score(p0: torch.Tensor, process: Process, length: int, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """True concrete scores at every state: returns ``(states [N, L], log s [N, L, S])``; ``-inf`` where
    the neighbour has probability 0."""
    S = process.num_states
    states = enumerate_states(length, S)
    pt = forward_marginal(p0, process, length, t)
    log_s = torch.empty(states.shape[0], length, S, dtype=torch.float64)
    for i in range(length):
        for y in range(S):
            nb = states.clone()
            nb[:, i] = y
            log_s[:, i, y] = pt[state_index(nb, S)].log() - pt.log()
    return states, log_s


def _transition(model: DiffusionModel, states: torch.Tensor, step: Step, cfg: SamplerConfig, fixed) -> torch.Tensor:
    probs = kernel_probs(model, states, step, cfg, fixed=fixed).to(torch.float64)  # [N, L, S]
    trans = torch.ones(states.shape[0], states.shape[0], dtype=probs.dtype, device=probs.device)
    for i in range(states.shape[1]):
        trans = trans * probs[:, i, :][:, states[:, i]]
    return trans


def exact_output_distribution(
    model: DiffusionModel,
    length: int,
    cfg: SamplerConfig,
    *,
    fixed: torch.Tensor | None = None,
    fixed_tokens: torch.Tensor | None = None,
    return_all_states: bool = False,
) -> torch.Tensor:
    """Exact law of the sampler's output, ``[S^L]`` over all states or ``[V^L]`` over clean ones.

    Differentiable with respect to the model's parameters (used for exact policy gradients).
    ``fixed [L]`` / ``fixed_tokens [L]`` constrain positions as in :func:`sepo.diffusion.sampling.sample`.
    """
    _check_cacheable(model, cfg)  # same contract as sample(): the cache is exact only for such models
    proc = model.process
    S = proc.num_states
    states = enumerate_states(length, S).to(next(iter(model.buffers()), torch.empty(0)).device)
    fixed_b = None if fixed is None else fixed[None].expand(states.shape[0], -1)
    dist = torch.zeros(states.shape[0], dtype=torch.float64)
    if isinstance(proc, MaskedProcess):  # all-mask start, fixed positions in place
        start = proc.sample_limit((1, length))
        if fixed is not None:
            start = torch.where(fixed[None], fixed_tokens[None], start)
        dist[state_index(start, S)] = 1.0
    else:  # uniform prior on the free positions
        free = torch.ones(states.shape[0], dtype=torch.bool)
        if fixed is not None:
            free = (states[:, fixed] == fixed_tokens[fixed]).all(-1)
        dist = free.to(torch.float64) / free.sum()
    for step in plan_steps(cfg):
        dist = dist @ _transition(model, states, step, cfg, fixed_b)
    if return_all_states:
        return dist
    return clean_distribution(dist, proc, length)


def clean_distribution(dist_all: torch.Tensor, process: Process, length: int) -> torch.Tensor:
    """Restrict a distribution over ``S^L`` states to the ``V^L`` clean ones (same order as
    :func:`enumerate_states` with ``V``)."""
    if not isinstance(process, MaskedProcess):
        return dist_all
    clean = enumerate_states(length, process.vocab_size)
    return dist_all[state_index(clean, process.num_states)]


def exact_elbo(model: DiffusionModel, x0: torch.Tensor, *, steps: int, min_t: float = 1e-5) -> torch.Tensor:
    """The ELBO of :func:`sepo.diffusion.likelihood.elbo`, computed by enumerating every ``x_t``.

    ``x0 [L]`` -> scalar, or a batch ``x0 [B, L]`` -> ``[B]`` (one network call per step for the whole
    batch). float64; differentiable with respect to the model's parameters.
    """
    proc = model.process
    single = x0.dim() == 1
    x0s = x0[None] if single else x0
    batch, length = x0s.shape
    states = enumerate_states(length, proc.num_states).to(x0s.device)
    n = states.shape[0]
    pair_x0 = x0s.repeat_interleave(n, 0)  # [B*N, L]: every (x0, x_t) pair, x0-major
    pair_xt = states.repeat(batch, 1)
    total = prior_term(proc, x0s).to(torch.float64)
    for step in elbo_steps(steps, min_t):
        a = bridge_alpha(proc, torch.tensor(step.t, dtype=torch.float64))
        r = _likelihoods(proc, states, x0s, a.expand(n)).prod(-1).T.reshape(-1)  # r(x_t | x0), [B*N]
        keep = (r > 0).nonzero().squeeze(-1)  # only reachable x_t (others would give 0 * -inf)
        term = elbo_step_term(model, pair_x0[keep], pair_xt[keep], step).to(torch.float64)
        contrib = torch.zeros(batch * n, dtype=torch.float64, device=x0s.device).index_add(0, keep, r[keep] * term)
        total = total + contrib.view(batch, n).sum(-1)
    return total[0] if single else total


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p.to(torch.float64) - q.to(torch.float64)).abs().sum())
