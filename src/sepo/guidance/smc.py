"""Sequential Monte Carlo guidance: SMC (the SMC baseline of DRAKES, Wang et al. 2025) and the twisted
diffusion sampler TDS (Wu et al. 2023, "Practical and asymptotically exact conditional sampling in
diffusion models"), for masked and uniform models.

**Target.** ``π_θ(x) exp(r(x)/α) / Z``, where ``π_θ`` is the law of the model's own sampler (the plan of
:func:`sepo.diffusion.sampling.plan_steps`) and ``α > 0`` is the temperature (``α -> ∞``: plain sampling).

**Algorithm.** Each output runs ``K`` particles through the sampler's steps. Before step ``k`` every
particle is at ``x_k`` and gets a *twisting potential* ``G_k(x_k) = exp(r̂(x_k)/α)``, an estimate of
``E[exp(r(x_0)/α) | x_k]`` read off the denoiser ``D_θ(x_k)`` (computed once per step and shared with the
ancestral kernel, so no extra network pass; other samplers pay one extra pass per step):

* ``lookahead="argmax"`` (SMC default; needs only the ordinary reward): ``r̂(x_k) = r(argmax D_θ(x_k))``,
  the reward of the per-position most likely clean sequence (revealed tokens kept);
* ``lookahead="expected"`` (TDS; needs the soft reward): ``r̂(x_k) = soft_reward(D_θ(x_k))``, the soft
  reward of the expected one-hot ``E[onehot(x_0) | x_k]`` under the denoiser.

Log-weights accumulate ``log G_k(x_k) - log G_{k-1}(x_{k-1})`` (the first step adds ``log G_0(x_0)``;
constant for the all-mask start of a masked model). When the effective sample size
``(Σw)^2 / Σw^2`` of an output's particles falls below ``ess_threshold · K`` they are resampled
(``systematic`` or ``multinomial``) and their weights reset. After the last step the exact reward
replaces the estimate (``log G_final = r(x_0)/α``) and one particle per output is drawn in proportion to
its weight. The product of the incremental weights telescopes to ``exp(r(x_0)/α) / G_0`` whatever the
estimates are, so the particle approximation of the target is consistent as ``K -> ∞`` (the estimates
only affect the variance); tests measure this in exact worlds.

**TDS** proposes from the twisted kernel ``q ∝ p_θ · exp(Δ/α)``, with ``Δ`` the first-order change of
``r̂`` (:func:`sepo.guidance.common.gradient_log_ratios`: the gradient of ``soft_reward`` at ``D_θ(x_k)``
added to the denoiser's logits at masked positions), and corrects each incremental weight by
``p_θ(x_{k+1} | x_k) / q(x_{k+1} | x_k)``. Costs per output and step: ``K`` network passes, ``K`` reward
calls (SMC, ``argmax``) or ``K`` soft-reward forward(+backward for TDS) calls; plus ``K`` exact reward calls
at the end.
"""

from __future__ import annotations

import math
import time

import torch

from sepo.diffusion.model import DiffusionModel
from sepo.diffusion.sampling import SamplerConfig, initial_state, kernel_probs, plan_steps
from sepo.errors import ConfigError

from .common import categorical, clean_estimate, expand_constraint, gradient_log_ratios, model_device, prepare_sampler, shares_denoiser, twist, uniform
from .rewards import SoftReward, as_reward, soft_reward_and_grad

__all__ = ["smc_sample", "tds_sample", "effective_sample_size", "resample_indices", "RESAMPLING", "LOOKAHEADS"]

RESAMPLING = ("systematic", "multinomial")
LOOKAHEADS = ("argmax", "expected")


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """``(Σ w)^2 / Σ w^2`` per row of log-weights ``[m, K]`` -> ``[m]`` (in ``[1, K]``)."""
    w = torch.softmax(log_w, dim=-1)
    return 1.0 / (w * w).sum(-1)


def resample_indices(log_w: torch.Tensor, generator: torch.Generator | None, *, method: str = "systematic") -> torch.Tensor:
    """Ancestor indices ``[m, K]`` (each in ``0..K-1``) drawn in proportion to ``softmax(log_w)`` per row.

    ``systematic``: one uniform per row, ``K`` evenly spaced points through the weights' CDF (lower variance).
    ``multinomial``: ``K`` independent draws per row.
    """
    m, k = log_w.shape
    w = torch.softmax(log_w.to(torch.float64), dim=-1)
    if method == "multinomial":
        return categorical(w[:, None, :].expand(m, k, k), generator)
    cdf = w.cumsum(-1)
    points = (uniform((m, 1), generator, log_w.device) + torch.arange(k, device=log_w.device, dtype=torch.float64)) / k
    points = points * cdf[:, -1:]  # guard the rounding of the last CDF value
    return torch.searchsorted(cdf, points, right=True).clamp(max=k - 1)


def _check(num_particles, alpha, ess_threshold, resampling, lookahead):
    if int(num_particles) < 1:
        raise ConfigError(f"smc: num_particles must be >= 1, got {num_particles}")
    if not (alpha > 0):
        raise ConfigError(f"smc: alpha (temperature) must be > 0 (use inf for plain sampling), got {alpha}")
    if not 0.0 <= ess_threshold <= 1.0:
        raise ConfigError(f"smc: ess_threshold must be in [0, 1] (a fraction of the particles), got {ess_threshold}")
    if resampling not in RESAMPLING:
        raise ConfigError(f"smc: resampling must be one of {', '.join(RESAMPLING)}, got {resampling!r}")
    if lookahead not in LOOKAHEADS:
        raise ConfigError(f"smc: lookahead must be one of {', '.join(LOOKAHEADS)}, got {lookahead!r}")


@torch.no_grad()
def smc_sample(
    model: DiffusionModel,
    *,
    n: int,
    length: int,
    reward,
    num_particles: int = 8,
    alpha: float = 1.0,
    ess_threshold: float = 0.5,
    resampling: str = "systematic",
    lookahead: str = "argmax",
    soft_reward: SoftReward | None = None,
    twisted: bool = False,
    sampler: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
    fixed: torch.Tensor | None = None,
    fixed_tokens: torch.Tensor | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """``n`` outputs ``[n, L]`` from SMC with ``num_particles`` particles each (TDS with ``twisted=True``).

    Args:
        reward: the exact reward (final weights; ``argmax`` look-ahead potentials).
        alpha: temperature of the target ``π_θ exp(r/α)``; ``math.inf`` gives plain sampling.
        ess_threshold: resample an output's particles when their ESS < ``ess_threshold * num_particles``.
        lookahead: ``argmax`` or ``expected`` (see module docstring); forced to ``expected`` when twisted.
        soft_reward: differentiable reward, needed for ``expected`` and ``twisted``.
        batch_size: outputs processed at once (each with all its particles).
    Returns:
        ``(tokens, info)``; ``info`` has ``reward_calls``, ``soft_reward_calls``, ``network_passes``,
        ``seconds``, ``resampling_events`` (output-steps resampled), ``final_ess`` (mean ESS fraction
        before the final draw).
    """
    lookahead = "expected" if twisted else lookahead
    _check(num_particles, alpha, ess_threshold, resampling, lookahead)
    if lookahead == "expected" and soft_reward is None:
        raise ConfigError(("tds" if twisted else "smc with lookahead='expected'") + " needs a differentiable reward (soft_reward)")
    reward = as_reward(reward)
    cfg = prepare_sampler(model, sampler)
    steps = plan_steps(cfg)
    k = int(num_particles)
    tempered = math.isfinite(alpha)
    t0, passes0 = time.perf_counter(), model.network_passes
    device = model_device(model)
    fx, ft = expand_constraint(fixed, fixed_tokens, n, length, k, device)
    chunk = int(batch_size or n)
    counts = {"reward_calls": 0, "soft_reward_calls": 0, "resampling_events": 0}
    outs, final_ess = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(steps) * ((n + chunk - 1) // chunk), desc="sampling (tds)" if twisted else "sampling (smc)", leave=False)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        sl = slice(lo * k, hi * k)
        tokens, ess = _run_chunk(model, cfg, steps, hi - lo, k, length, reward, soft_reward, alpha, tempered, ess_threshold,
                                 resampling, lookahead, twisted, generator, None if fx is None else fx[sl],
                                 None if ft is None else ft[sl], counts, bar)
        outs.append(tokens)
        final_ess.append(ess)
    if bar is not None:
        bar.close()
    info = {**counts, "network_passes": model.network_passes - passes0, "seconds": time.perf_counter() - t0,
            "final_ess": float(torch.cat(final_ess).mean()) / k}
    return torch.cat(outs), info


def _run_chunk(model, cfg, steps, m, k, length, reward, soft_reward, alpha, tempered, ess_threshold, resampling,
               lookahead, twisted, generator, fixed, fixed_tokens, counts, bar):
    device = model_device(model)
    p = m * k
    x = initial_state(model, p, length, device=device, generator=generator, fixed=fixed, fixed_tokens=fixed_tokens)
    log_w = torch.zeros(m, k, dtype=torch.float64, device=device)
    log_g_prev = None
    rows = torch.arange(m, device=device)[:, None] * k
    for step in steps:
        t = torch.full((p,), float(step.t), dtype=torch.float32, device=device)
        need_d = tempered or shares_denoiser(cfg, step)
        log_d = model.log_denoiser(x, t) if need_d else None
        delta = None
        if tempered:
            if lookahead == "argmax":
                x0_hat = log_d.argmax(-1) if fixed is None else torch.where(fixed, x, log_d.argmax(-1))
                value = reward(x0_hat.cpu()).to(device, torch.float64)
                counts["reward_calls"] += p
            elif twisted:
                value, delta = gradient_log_ratios(log_d, x, model, soft_reward, fixed)
                counts["soft_reward_calls"] += p
            else:
                value, _ = soft_reward_and_grad(soft_reward, clean_estimate(log_d, x, fixed))
                counts["soft_reward_calls"] += p
            log_g = value.to(torch.float64).view(m, k) / alpha
            log_w = log_w + (log_g if log_g_prev is None else log_g - log_g_prev)
            # resample the outputs whose particles degenerated
            need = effective_sample_size(log_w) < ess_threshold * k
            if need.any():
                anc = resample_indices(log_w, generator, method=resampling)
                anc = torch.where(need[:, None], anc, torch.arange(k, device=device).expand(m, k))
                flat = (rows + anc).reshape(-1)
                x, log_d, log_g = x[flat], log_d[flat], log_g.reshape(-1)[flat].view(m, k)
                delta = None if delta is None else delta[flat]
                log_w = torch.where(need[:, None], torch.zeros_like(log_w), log_w)
                counts["resampling_events"] += int(need.sum())
            log_g_prev = log_g
        probs = kernel_probs(model, x, step, cfg, fixed=fixed, log_d=log_d if shares_denoiser(cfg, step) else None)
        if delta is not None:
            q, log_ratio = twist(probs, delta, 1.0 / alpha)
            x_new = categorical(q, generator)
            # importance correction p/q of the proposal, summed over positions
            log_w = log_w - log_ratio.gather(-1, x_new.unsqueeze(-1)).squeeze(-1).to(torch.float64).sum(-1).view(m, k)
        else:
            x_new = categorical(probs, generator)
        x = x_new
        if bar is not None:
            bar.update(1)
    if tempered:  # the exact reward replaces the last estimate
        final = reward(x.cpu()).to(device, torch.float64).view(m, k) / alpha
        counts["reward_calls"] += p
        log_w = log_w + final - log_g_prev
    ess = effective_sample_size(log_w)
    pick = categorical(torch.softmax(log_w, dim=-1), generator)
    return x.view(m, k, length)[torch.arange(m, device=device), pick], ess


def tds_sample(
    model: DiffusionModel,
    *,
    n: int,
    length: int,
    reward,
    soft_reward: SoftReward,
    num_particles: int = 8,
    alpha: float = 1.0,
    ess_threshold: float = 0.5,
    resampling: str = "systematic",
    sampler: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
    fixed: torch.Tensor | None = None,
    fixed_tokens: torch.Tensor | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """TDS: :func:`smc_sample` with the gradient-twisted proposal and ``expected`` look-ahead potentials."""
    return smc_sample(model, n=n, length=length, reward=reward, soft_reward=soft_reward, twisted=True,
                      num_particles=num_particles, alpha=alpha, ess_threshold=ess_threshold, resampling=resampling,
                      lookahead="expected", sampler=sampler, generator=generator, fixed=fixed, fixed_tokens=fixed_tokens,
                      batch_size=batch_size, progress=progress)
