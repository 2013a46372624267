"""Measuring estimators: the gradient an estimator produces on a rollout, as a flat vector.

At ``θ = θ_old`` every estimator's clipped loss has gradient ``-(1/N) Σ_b A_b Σ_u w_bu ∇ logp_bu``;
:func:`estimator_gradient` returns the ascent direction ``(1/N) Σ_b A_b Σ_u w_bu ∇ logp_bu`` (plus the
direct KL part when asked), which the exact-world benchmarks compare with the exact gradient.
"""

from __future__ import annotations

import torch

from .estimators import Estimator
from .kl import path_kl
from .rollout import Rollout

__all__ = ["estimator_gradient", "per_sample_surrogate"]


def per_sample_surrogate(model, estimator: Estimator, rollout: Rollout, idx: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ_u w_u logp_u`` per sample ``[n]`` (with gradient): the estimator's stand-in for ``log π_θ(x)``."""
    idx = torch.arange(rollout.size) if idx is None else idx
    units = estimator.log_probs(model, rollout, idx)
    return (units.weight * torch.where(units.weight > 0, units.logp, torch.zeros_like(units.logp))).sum(-1)


def estimator_gradient(model, estimator: Estimator, rollout: Rollout, advantages: torch.Tensor, *,
                       kl_steps: list[int] | None = None, ref_probs=None, beta: float = 0.0,
                       chunk: int = 256) -> torch.Tensor:
    """Mean over the rollout of ``A_b ∇ surrogate_b`` (minus ``beta ∇ KL_b`` when ``kl_steps`` given), flat.

    ``estimator.draw`` must have been called on ``rollout`` (e.g. by ``estimator.prepare``).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    total = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    n = rollout.size
    for lo in range(0, n, chunk):
        idx = torch.arange(lo, min(n, lo + chunk))
        obj = (advantages[idx].to(torch.float64) * per_sample_surrogate(model, estimator, rollout, idx).to(torch.float64)).sum()
        if kl_steps:
            kl, _ = path_kl(model, rollout, idx, kl_steps, ref_probs)
            obj = obj - beta * kl.to(torch.float64).sum()
        grads = torch.autograd.grad(obj, params, allow_unused=True)
        total += torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64) for g, p in zip(grads, params)])
    return total / n
