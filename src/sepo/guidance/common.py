"""Pieces shared by the sampler plug-ins: constraints, device-safe draws, denoiser sharing, kernel twisting.

**Twisting a kernel.** Every guided sampler here changes the model's per-position kernel
``p(x_s^i = y | x_t)`` (:func:`sepo.diffusion.sampling.kernel_probs`) into

    q(x_s^i = y | x_t) ∝ p(x_s^i = y | x_t) · exp(scale · Δ_{i,y}),

one position at a time, where ``Δ_{i,y}`` approximates how much a (log-)potential changes when position
``i`` moves to ``y``. Positions whose kernel is a point mass (revealed tokens of a masked model, prompt
positions) are unchanged.

**The gradient ("first-order") Δ** (:func:`gradient_log_ratios`) reads the potential
``r̂(x_t) = soft_reward(D_θ(x_t))`` on the denoiser's per-position clean-token distributions and
approximates the denoiser of the next state by ``D_θ(x_t)`` with row ``i`` replaced by ``onehot(y)``
when ``y`` is a clean token, and left as is when ``y`` is ``[MASK]`` (staying masked). For the masked
process this is exact for row ``i`` itself (SUBS carries a revealed token over); the other rows' change
is neglected. A first-order Taylor expansion in ``D`` then gives

    Δ_{i,y} = g_{i,y} - Σ_u D_{i,u} g_{i,u}   (y clean),    Δ_{i,[MASK]} = 0,    g = ∂ soft_reward / ∂ D,

i.e. a linearisation of ``r̂(x_t with y at i) - r̂(x_t)`` (Nisonoff et al. 2024's first-order
approximation of a predictor, here a reward evaluated on ``D_θ(x_t)``; Wu et al. 2023's TDS uses the
same gradient twist). For the uniform process every state is a clean token and the same formula is the
``t -> 0`` reading (the next state's clean estimate is its own token). It costs one forward and one
backward of the soft reward per sample and step, and no backward pass through the diffusion network.
"""

from __future__ import annotations

import dataclasses

import torch

from sepo.diffusion.model import DiffusionModel
from sepo.diffusion.process import MaskedProcess
from sepo.diffusion.sampling import SamplerConfig, Step, _model_device
from sepo.errors import ConfigError

from .rewards import SoftReward, soft_reward_and_grad

__all__ = [
    "prepare_sampler",
    "expand_constraint",
    "uniform",
    "categorical",
    "shares_denoiser",
    "twist",
    "gradient_log_ratios",
    "clean_estimate",
    "model_device",
]

model_device = _model_device


def prepare_sampler(model: DiffusionModel, cfg: SamplerConfig | None) -> SamplerConfig:
    """Validate the sampler for guided use. ``ancestral_cached`` becomes ``ancestral`` (the same kernels;
    guidance needs a fresh denoiser output at every step anyway)."""
    cfg = cfg or SamplerConfig()
    if not isinstance(cfg, SamplerConfig):
        raise ConfigError(f"sampler must be a SamplerConfig, got {type(cfg).__name__}")
    if cfg.name == "ancestral_cached":
        cfg = dataclasses.replace(cfg, name="ancestral")
    if isinstance(model.process, MaskedProcess) and not cfg.final_denoise:
        raise ConfigError("guided sampling of a masked model needs final_denoise=True (rewards are only defined on "
                          "fully unmasked sequences); set sampler.final_denoise: true")
    return cfg


def expand_constraint(fixed, fixed_tokens, n: int, length: int, repeat: int, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Prompt constraint for ``n`` outputs, each repeated ``repeat`` times (particles / candidates).

    ``fixed`` bool and ``fixed_tokens`` long, each ``[L]`` (shared) or ``[n, L]``. Returns ``[n * repeat, L]``
    tensors (output-major: the copies of output ``j`` are rows ``j * repeat .. j * repeat + repeat - 1``).
    """
    if fixed is None and fixed_tokens is None:
        return None, None
    if fixed is None or fixed_tokens is None:
        raise ConfigError("pass both fixed (bool mask) and fixed_tokens (the prompt tokens), or neither")
    fixed = torch.as_tensor(fixed, dtype=torch.bool)
    fixed_tokens = torch.as_tensor(fixed_tokens, dtype=torch.long)
    if fixed.dim() == 1:
        fixed = fixed.expand(n, -1)
    if fixed_tokens.dim() == 1:
        fixed_tokens = fixed_tokens.expand(n, -1)
    if fixed.shape != (n, length) or fixed_tokens.shape != (n, length):
        raise ConfigError(f"fixed / fixed_tokens must have shape [{length}] or [{n}, {length}], "
                          f"got {tuple(fixed.shape)} and {tuple(fixed_tokens.shape)}")
    rep = lambda t: t.repeat_interleave(repeat, 0).to(device)  # noqa: E731
    return rep(fixed), rep(fixed_tokens)


def uniform(shape, generator: torch.Generator | None, device, dtype=torch.float64) -> torch.Tensor:
    """``U(0, 1)`` draws of ``shape`` on ``device`` from ``generator`` wherever the generator lives
    (a CPU generator can drive a CUDA run; the draws are then copied)."""
    gen_device = generator.device if generator is not None else torch.device(device)
    u = torch.rand(tuple(shape), generator=generator, device=gen_device, dtype=dtype)
    return u.to(device)


def categorical(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of ``probs [..., S]`` by inverse CDF in float64; never a zero-probability state."""
    p = probs.detach().to(torch.float64)
    cdf = p.cumsum(-1)
    u = uniform(p.shape[:-1] + (1,), generator, p.device) * cdf[..., -1:]
    idx = (cdf <= u).sum(-1).clamp(max=p.shape[-1] - 1)
    bad = p.gather(-1, idx.unsqueeze(-1)).squeeze(-1) <= 0
    return torch.where(bad, p.argmax(-1), idx)


def shares_denoiser(cfg: SamplerConfig, step: Step) -> bool:
    """Whether :func:`kernel_probs` can reuse a denoiser output ``D_θ(x_t)`` computed by the caller."""
    return step.kind == "denoise" or (step.kind == "predict" and cfg.name == "ancestral")


def twist(probs: torch.Tensor, delta: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``q ∝ probs · exp(scale · delta)`` per position (see the module docstring).

    Args:
        probs: kernel ``[B, L, S]``; delta: ``[B, L, S]`` (ignored where ``probs == 0``).
    Returns:
        ``(q [B, L, S], log q - log p [B, L, S])`` (the second is ``0`` where ``probs == 0``).
    """
    support = probs > 0
    tilt = torch.where(support, scale * delta.to(probs.dtype), torch.zeros_like(probs))
    tilt = tilt - torch.where(support, tilt, torch.full_like(tilt, float("-inf"))).amax(-1, keepdim=True)  # no overflow
    unnorm = probs * tilt.exp()
    norm = unnorm.sum(-1, keepdim=True)
    return unnorm / norm, torch.where(support, tilt - norm.log(), torch.zeros_like(probs))


def clean_estimate(log_d: torch.Tensor, x: torch.Tensor, fixed: torch.Tensor | None = None) -> torch.Tensor:
    """The denoiser's per-position clean-token probabilities ``[B, L, V]`` with prompt positions set to their
    (known) tokens. A masked model's SUBS denoiser already carries revealed tokens over; a uniform model's
    denoiser does not know which positions are fixed."""
    d = log_d.exp()
    if fixed is not None:
        onehot = torch.nn.functional.one_hot(x.clamp(max=d.shape[-1] - 1), d.shape[-1]).to(d.dtype)
        d = torch.where(fixed.unsqueeze(-1), onehot, d)
    return d


def gradient_log_ratios(log_d: torch.Tensor, x: torch.Tensor, model: DiffusionModel, soft_reward: SoftReward,
                        fixed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """First-order potential differences (module docstring).

    Args:
        log_d: ``log D_θ(x_t)`` ``[B, L, V]``; x: ``x_t [B, L]``.
    Returns:
        ``(value [B], delta [B, L, S])``: ``soft_reward(D_θ(x_t))`` and ``Δ``, zero at fixed positions and
        (masked process) at revealed positions and for the ``[MASK]`` target.
    """
    d = clean_estimate(log_d, x, fixed)
    value, g = soft_reward_and_grad(soft_reward, d)
    g = g.to(d.dtype)
    delta = g - (d * g).sum(-1, keepdim=True)
    proc = model.process
    if isinstance(proc, MaskedProcess):
        delta = torch.cat([delta, torch.zeros_like(delta[..., :1])], dim=-1)
        delta = delta.masked_fill((x != proc.mask_id).unsqueeze(-1), 0.0)
    if fixed is not None:
        delta = delta.masked_fill(fixed.unsqueeze(-1), 0.0)
    return value, delta
