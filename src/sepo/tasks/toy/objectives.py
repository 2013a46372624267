"""Exact objectives in toy worlds: expected reward, path KL and their gradients by autograd.

``J(θ) = Σ_x π_θ(x) r(x)`` with ``π_θ`` the sampler's exact output law, and the path KL
``Σ_k Σ_x d_k(x) KL(p_θ(·|x) || p_ref(·|x))`` where ``d_k`` is the exact law of the state before step
``k`` (chain rule of KL along the sampler's Markov chain). Both are differentiable in the policy's
parameters, which gives the exact policy gradient the estimators are measured against.
"""

from __future__ import annotations

import torch

from sepo.diffusion.model import DiffusionModel
from sepo.diffusion.process import MaskedProcess
from sepo.diffusion.sampling import SamplerConfig, kernel_probs, plan_steps

from .exact import _transition, clean_distribution, enumerate_states, state_index

__all__ = ["exact_objective", "flat_grad"]


def exact_objective(policy: DiffusionModel, length: int, cfg: SamplerConfig, reward: torch.Tensor, *,
                    reference: DiffusionModel | None = None, beta: float = 0.0, kl_steps: list[int] | None = None) -> dict:
    """``{"J", "kl", "objective" = J - beta * kl, "pi"}`` (tensors with gradient w.r.t. the policy).

    ``kl_steps``: plan-step indices carrying the KL (``None``: all), as in :func:`sepo.rl.kl.kl_step_indices`.
    """
    proc = policy.process
    S = proc.num_states
    states = enumerate_states(length, S)
    dist = torch.zeros(states.shape[0], dtype=torch.float64)
    if isinstance(proc, MaskedProcess):
        dist[state_index(proc.sample_limit((1, length)), S)] = 1.0
    else:
        dist[:] = 1.0 / states.shape[0]
    steps = plan_steps(cfg)
    kl_set = set(range(len(steps)) if kl_steps is None else kl_steps)
    kl = torch.zeros((), dtype=torch.float64)
    for k, step in enumerate(steps):
        if reference is not None and beta > 0 and k in kl_set:
            p = kernel_probs(policy, states, step, cfg).to(torch.float64)
            with torch.no_grad():
                q = kernel_probs(reference, states, step, cfg).to(torch.float64)
            per_state = (torch.special.xlogy(p, p) - torch.special.xlogy(p, q.clamp_min(1e-300))).sum(-1).sum(-1)
            kl = kl + (dist * per_state).sum()
        dist = dist @ _transition(policy, states, step, cfg, None)
    pi = clean_distribution(dist, proc, length)
    J = (pi * reward.to(torch.float64)).sum()
    return {"J": J, "kl": kl, "objective": J - beta * kl, "pi": pi}


def flat_grad(value: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """Gradient of a scalar w.r.t. ``params`` as one flat float64 vector (zeros for unused params)."""
    grads = torch.autograd.grad(value, params, allow_unused=True, retain_graph=False)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64) for g, p in zip(grads, params)])
