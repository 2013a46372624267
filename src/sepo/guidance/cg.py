"""Classifier guidance (CG) for discrete diffusion (Nisonoff et al. 2024, "Unlocking guidance for discrete
state-space diffusion and flow models").

Guidance multiplies each reverse transition ``x_t -> y`` (``y`` one substitution away) by the ratio of a
noisy-state potential, ``exp(γ (f_t(y) - f_t(x_t)))``; with ``f_t = log h_t / γ`` and the *exact*
``h_t(x) = E[exp(γ r(x_0)) | x_t = x]`` this is Doob's h-transform and the continuous-time reverse
process then samples exactly ``p_0(x) exp(γ r(x)) / Z``. Our samplers take discrete steps, so each
step applies the ratios per position to the model's kernel (:func:`sepo.guidance.common.twist`):

    q(x_s^i = y | x_t) ∝ p_θ(x_s^i = y | x_t) · exp(γ Δ_{i,y}),

evaluated at the step's start time ``t``. The per-position factorisation and the frozen time are
``O(step size)`` errors, which vanish as the number of steps grows.

Two ways to get ``Δ``:

* ``log_potential=f`` (a callable ``(x_t [B, L], t) -> [B]``, e.g. a classifier trained on noisy inputs,
  or an exact enumerated ``log h_t / γ`` in tests): ``Δ_{i,y} = f(x_t with y at i) - f(x_t)``, evaluated on
  all ``L · S`` neighbours (exact, ``L · S + 1`` potential calls per sample and step);
* ``soft_reward`` (default): the first-order approximation of ``f(x_t) = soft_reward(D_θ(x_t))`` described in
  :mod:`sepo.guidance.common` - a linearisation, in the denoiser's clean-token probabilities, of the reward
  of the denoiser's estimate of ``x_0``. It approximates the exact guidance in two ways: ``E[r(x_0) | x_t]``
  is replaced by ``r`` at the mean estimate ``D_θ(x_t)`` (no ``log E exp``), and the change of the estimate
  under a substitution is linearised and restricted to the substituted position. It is therefore *not*
  asymptotically exact; it moves mass toward high reward, more so as ``γ`` grows. Cost: one soft-reward
  forward + backward per sample and step, no extra network pass for ancestral steps.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from sepo.diffusion.model import DiffusionModel
from sepo.diffusion.sampling import SamplerConfig, Step, initial_state, kernel_probs, plan_steps
from sepo.errors import ConfigError, RewardError

from .common import categorical, expand_constraint, gradient_log_ratios, model_device, prepare_sampler, shares_denoiser, twist
from .rewards import SoftReward

__all__ = ["cg_kernel", "cg_sample", "neighbour_log_ratios"]


def _times(t: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(t), dtype=torch.float32, device=x.device)


def neighbour_log_ratios(log_potential: Callable, x: torch.Tensor, t: float, num_states: int,
                         fixed: torch.Tensor | None = None) -> torch.Tensor:
    """``Δ_{i,y} = f(x with y at i, t) - f(x, t)`` for every position and state: ``x [B, L]`` -> ``[B, L, S]``."""
    b, length = x.shape
    nb = x[:, None, None, :].expand(b, length, num_states, length).clone()
    pos = torch.arange(length, device=x.device)
    nb[:, pos, :, pos] = torch.arange(num_states, device=x.device).expand(length, b, num_states)
    vals = torch.as_tensor(log_potential(nb.reshape(-1, length), float(t))).to(x.device).reshape(b, length, num_states)
    base = torch.as_tensor(log_potential(x, float(t))).to(x.device).reshape(b)
    delta = vals.to(torch.float64) - base.to(torch.float64)[:, None, None]
    if fixed is not None:
        delta = delta.masked_fill(fixed.unsqueeze(-1), 0.0)
    return delta


def cg_kernel(model: DiffusionModel, x: torch.Tensor, step: Step, cfg: SamplerConfig, *, guidance_scale: float,
              soft_reward: SoftReward | None = None, log_potential: Callable | None = None,
              fixed: torch.Tensor | None = None) -> torch.Tensor:
    """Guided per-position kernel ``[B, L, S]`` at state ``x [B, L]`` for ``step`` (see module docstring).

    With ``guidance_scale = 0`` (or neither guide given) this is exactly the model's kernel.
    """
    log_d = None
    gradient_guided = guidance_scale != 0 and log_potential is None and soft_reward is not None
    if gradient_guided or shares_denoiser(cfg, step):
        log_d = model.log_denoiser(x, _times(step.t, x))
    probs = kernel_probs(model, x, step, cfg, fixed=fixed, log_d=log_d if shares_denoiser(cfg, step) else None)
    if guidance_scale == 0:
        return probs
    if log_potential is not None:
        delta = neighbour_log_ratios(log_potential, x, step.t, model.num_states, fixed)
    elif soft_reward is not None:
        _, delta = gradient_log_ratios(log_d, x, model, soft_reward, fixed)
    else:
        return probs
    if not torch.isfinite(delta[probs > 0]).all():
        raise RewardError("classifier guidance got a non-finite potential difference; check the guide")
    q, _ = twist(probs, delta, guidance_scale)
    return q


@torch.no_grad()
def cg_sample(
    model: DiffusionModel,
    *,
    n: int,
    length: int,
    guidance_scale: float = 1.0,
    soft_reward: SoftReward | None = None,
    log_potential: Callable | None = None,
    sampler: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
    fixed: torch.Tensor | None = None,
    fixed_tokens: torch.Tensor | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Draw ``n`` guided samples ``[n, L]`` (guidance strength ``γ = guidance_scale``).

    Returns ``(tokens, info)``; ``info`` counts ``soft_reward_calls`` (gradient evaluations, one per sample
    and step), ``potential_calls`` (with ``log_potential``), ``reward_calls`` (0: CG never calls the exact
    reward), ``network_passes`` and ``seconds``.
    """
    if soft_reward is None and log_potential is None:
        raise ConfigError("classifier guidance needs a differentiable reward (soft_reward) or a noisy-state log_potential")
    if not torch.isfinite(torch.tensor(float(guidance_scale))):
        raise ConfigError(f"cg: guidance_scale must be a finite number, got {guidance_scale}")
    cfg = prepare_sampler(model, sampler)
    steps = plan_steps(cfg)
    t0, passes0 = time.perf_counter(), model.network_passes
    device = model_device(model)
    fx, ft = expand_constraint(fixed, fixed_tokens, n, length, 1, device)
    chunk = int(batch_size or n)
    outs, soft_calls, pot_calls = [], 0, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(steps) * ((n + chunk - 1) // chunk), desc="sampling (cg)", leave=False)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        f = None if fx is None else fx[lo:hi]
        x = initial_state(model, hi - lo, length, device=device, generator=generator, fixed=f,
                          fixed_tokens=None if ft is None else ft[lo:hi])
        for step in steps:
            q = cg_kernel(model, x, step, cfg, guidance_scale=guidance_scale, soft_reward=soft_reward,
                          log_potential=log_potential, fixed=f)
            if guidance_scale != 0:
                if log_potential is not None:
                    pot_calls += (hi - lo) * (length * model.num_states + 1)
                else:
                    soft_calls += hi - lo
            x = categorical(q, generator)
            if bar is not None:
                bar.update(1)
        outs.append(x)
    if bar is not None:
        bar.close()
    info = {"reward_calls": 0, "soft_reward_calls": soft_calls, "potential_calls": pot_calls,
            "network_passes": model.network_passes - passes0, "seconds": time.perf_counter() - t0}
    return torch.cat(outs), info
