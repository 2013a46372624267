"""Per-sequence evidence lower bound (ELBO) of the T-step ancestral sampler.

For the generative chain the sampler actually runs (prior ``pi^L`` at ``t = 1``, ancestral kernels on
the grid of :func:`sepo.diffusion.sampling.plan_steps`, a final denoising step), any bridge
distribution ``r(x_{1:T} | x_0)`` gives ``log p_theta(x_0) >= E_r[log p_theta(x_{0:T}) - log r(x_{1:T}|x_0)]``.
We take the forward process, *conditioned on starting from the sampler's prior* where that matters:

* masked: the sampler starts all-masked, so ``r`` is the forward chain conditioned on ``x_1 = [MASK]^L``;
  its marginals are those of a forward process with ``alpha'_t = (alpha_t - alpha_1)/(1 - alpha_1)``
  and its bridges are the usual posteriors ``q(x_s | x_t, x_0)``. The prior term vanishes.
* uniform: ``r = q``; the prior term is ``-KL(q(x_1 | x_0) || pi^L)``, computed in closed form.

Then ``ELBO = prior + sum_steps E_r[-KL(q(x_s | x_t, x_0) || p_theta(x_s | x_t))] + E_r[log D_theta(x_δ)_{x_0}]``,
each KL in closed form per position. The bound tightens as the number of steps grows (D3PM, Austin et
al. 2021; MDLM, Sahoo et al. 2024 show the continuous-time limit).

:func:`elbo` estimates it by Monte Carlo (``num_samples`` draws of ``x_t`` per step, or a random subset
of steps per sequence, rescaled to stay unbiased); :mod:`sepo.tasks.toy.exact` evaluates the same terms exactly.
"""

from __future__ import annotations

import math

import torch

from sepo.utils.random import rand

from .model import DiffusionModel
from .process import MaskedProcess
from .sampling import SamplerConfig, Step, plan_steps, reverse_kernel

__all__ = ["elbo", "elbo_step_term", "bridge_alpha", "prior_term", "elbo_steps"]


def elbo_steps(steps: int, min_t: float = 1e-5) -> list[Step]:
    """The ancestral plan whose ELBO is computed (predictor steps then the final denoising step)."""
    return plan_steps(SamplerConfig(name="ancestral", steps=steps, min_t=min_t, final_denoise=True))


def bridge_alpha(process, t: torch.Tensor) -> torch.Tensor:
    """Keep-probability of the bridge ``r`` at time ``t`` (see module docstring)."""
    a = process.alpha(t)
    if isinstance(process, MaskedProcess):
        a1 = process.alpha(torch.ones((), dtype=a.dtype))
        return (a - a1) / (1.0 - a1)
    return a


def prior_term(process, x0: torch.Tensor) -> torch.Tensor:
    """``E_r[log pi(x_1) - log r(x_1 | x_0)]`` per sequence ``[B]`` (0 for the masked process)."""
    if isinstance(process, MaskedProcess):
        return torch.zeros(x0.shape[0], device=x0.device)
    n = process.vocab_size
    a1 = float(process.alpha(torch.tensor(1.0)))
    p_self = a1 + (1 - a1) / n
    p_other = (1 - a1) / n
    neg_entropy = p_self * math.log(p_self) + (n - 1) * (p_other * math.log(p_other) if p_other > 0 else 0.0)
    per_pos = -math.log(n) - neg_entropy
    return torch.full((x0.shape[0],), per_pos * x0.shape[1], device=x0.device)


def elbo_step_term(model: DiffusionModel, x0: torch.Tensor, x_t: torch.Tensor, step: Step) -> torch.Tensor:
    """Contribution of one step given ``x_t`` -> ``[B]``: ``-KL(q(x_s|x_t,x_0) || p_theta(x_s|x_t))`` summed
    over positions, or ``log p_theta(x_0 | x_t)`` for the final denoising step."""
    t = torch.full((x0.shape[0],), step.t, device=x0.device)
    log_d = model.log_denoiser(x_t, t)
    if step.kind == "denoise":
        return log_d.gather(-1, x0.unsqueeze(-1)).squeeze(-1).sum(-1)
    proc = model.process
    onehot = torch.nn.functional.one_hot(x0, proc.vocab_size).to(log_d.dtype)
    q = reverse_kernel(proc, x_t, onehot, step.t, step.s)
    p = reverse_kernel(proc, x_t, log_d.exp(), step.t, step.s)
    kl = torch.special.xlogy(q, q) - torch.special.xlogy(q, p.clamp_min(1e-38))
    return -kl.sum(-1).sum(-1)


def elbo(
    model: DiffusionModel,
    x0: torch.Tensor,
    *,
    steps: int = 128,
    num_samples: int = 1,
    step_samples: int | None = None,
    min_t: float = 1e-5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Monte-Carlo ELBO (nats) of each sequence ``x0 [B, L]`` under the ``steps``-step ancestral sampler.

    ``step_samples``: each sequence evaluates only this many of the ``steps + 1`` terms per draw, drawn
    uniformly without replacement *per sequence* and rescaled by ``(steps + 1) / step_samples`` (unbiased;
    the estimates of different rows stay independent). ``None`` evaluates all terms. Cost:
    ``num_samples * (step_samples or steps + 1)`` network passes per sequence.
    """
    proc = model.process
    plan = elbo_steps(steps, min_t)
    if step_samples is not None and not 1 <= step_samples <= len(plan):
        raise ValueError(f"step_samples must be between 1 and steps + 1 = {len(plan)} (or None), got {step_samples}")
    batch = x0.shape[0]
    total = prior_term(proc, x0)
    for _ in range(num_samples):
        if step_samples is None:
            chosen, scale = torch.ones(batch, len(plan), dtype=torch.bool, device=x0.device), 1.0
        else:  # every row its own subset of steps
            order = rand((batch, len(plan)), generator=generator).argsort(1)[:, :step_samples].to(x0.device)
            chosen = torch.zeros(batch, len(plan), dtype=torch.bool, device=x0.device).scatter_(1, order, True)
            scale = len(plan) / step_samples
        for j, step in enumerate(plan):
            rows = chosen[:, j].nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            x0_j = x0[rows]
            t = torch.full((rows.numel(),), step.t, device=x0.device, dtype=torch.float64)
            a = bridge_alpha(proc, t).to(torch.float32)
            keep = rand(x0_j.shape, generator=generator, device=x0.device) < a[:, None]
            x_t = torch.where(keep, x0_j, proc.sample_limit(x0_j.shape, device=x0.device, generator=generator))
            term = elbo_step_term(model, x0_j, x_t, step)
            total = total + torch.zeros_like(total, dtype=term.dtype).index_add(0, rows, term) * (scale / num_samples)
    return total
