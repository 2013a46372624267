"""Training losses: MDLM's continuous-time NELBO and SEDD's (diffusion-weighted) score entropy.

Both are per-sequence Monte-Carlo estimates in nats, one noise level per sequence, and both upper-bound
``-log p_theta(x_0)`` in continuous time (up to the prior term, ~0 for these schedules).

* MDLM (Sahoo et al., 2024, eq. 10): ``∫ -alpha'_t / (1 - alpha_t) sum_{i masked} -log D_theta(x_t)_{i, x_0^i} dt``.
* Score entropy / DWDSE (Lou et al., 2024, eq. 8):
  ``∫ E_{x_t} sum_i sum_{y != x_t^i} Q_t(y -> x_t^i) [ s_{i,y} - r_{i,y} log s_{i,y} + K(r_{i,y}) ] dt``
  with ``r_{i,y} = q_t(y | x_0^i) / q_t(x_t^i | x_0^i)`` and ``K(r) = r (log r - 1)``.
  For the masked process with ``s = alpha/(1 - alpha) D`` it reduces exactly to the MDLM integrand.
"""

from __future__ import annotations

import torch

from sepo.utils.random import rand

from .model import DiffusionModel

__all__ = ["sample_times", "mdlm_nelbo", "score_entropy", "diffusion_loss"]


def sample_times(batch: int, *, generator=None, device=None, t_min: float = 1e-4, antithetic: bool = True) -> torch.Tensor:
    """Times in ``[t_min, 1]``; ``antithetic`` spreads them evenly (MDLM's low-discrepancy sampler)."""
    u = rand((1 if antithetic else batch,), generator=generator, device=device)
    if antithetic:
        u = (u + torch.arange(batch, device=device) / batch) % 1.0
    return t_min + (1.0 - t_min) * u


def mdlm_nelbo(model: DiffusionModel, x0: torch.Tensor, t: torch.Tensor, *, generator=None, x_t: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sequence MDLM NELBO estimate ``[B]`` (nats) at times ``t [B]`` (masked process)."""
    proc = model.process
    if proc.mask_id is None:  # without a mask nothing is "masked": the loss would silently be 0
        raise ValueError("the MDLM NELBO needs the masked process; use score_entropy for a uniform model")
    if x_t is None:
        x_t = proc.sample_xt(x0, t, generator)
    log_d = model.log_denoiser(x_t, t)
    nll = -log_d.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    masked = x_t == proc.mask_id
    weight = -proc.schedule.dalpha(t) / (1.0 - proc.alpha(t))  # [B]
    return weight * (nll * masked).sum(-1)


def score_entropy(model: DiffusionModel, x0: torch.Tensor, t: torch.Tensor, *, generator=None, x_t: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sequence diffusion-weighted denoising score entropy ``[B]`` (nats), any process."""
    proc = model.process
    if x_t is None:
        x_t = proc.sample_xt(x0, t, generator)
    log_s = model.log_score(x_t, t)  # [B, L, S]
    q = proc.marginal(x0, t)  # q_t(y | x_0), [B, L, S]
    q_xt = q.gather(-1, x_t.unsqueeze(-1))
    r = q / q_xt
    not_self = torch.ones_like(r).scatter(-1, x_t.unsqueeze(-1), 0.0)
    s = log_s.exp()
    # K(r) = r log r - r, with 0 log 0 = 0; and r log s = 0 where r = 0 (even if s = 0)
    term = s - torch.where(r > 0, r * log_s, torch.zeros_like(r)) + torch.special.xlogy(r, r) - r
    term = torch.where(not_self.bool(), term, torch.zeros_like(term))
    weight = proc.forward_rate_into(x_t, t)  # [B, L]
    return (weight * term.sum(-1)).sum(-1)


def diffusion_loss(model: DiffusionModel, x0: torch.Tensor, *, generator=None, t: torch.Tensor | None = None, kind: str | None = None) -> torch.Tensor:
    """The default training loss per sequence: MDLM NELBO for SUBS models, score entropy otherwise."""
    if t is None:
        t = sample_times(x0.shape[0], generator=generator, device=x0.device)
    kind = kind or ("nelbo" if model.parameterization == "subs" else "score_entropy")
    if kind == "nelbo":
        return mdlm_nelbo(model, x0, t, generator=generator)
    if kind == "score_entropy":
        return score_entropy(model, x0, t, generator=generator)
    raise ValueError(f"unknown loss {kind!r}; choose 'nelbo' or 'score_entropy'")
