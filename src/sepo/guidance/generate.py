"""One entry point for every sampling-time method, so benchmarks call them all the same way.

``generate(method, model, n=..., length=..., reward=..., soft_reward=..., generator=..., **options)``
returns ``(tokens [n, L], info)`` where ``info`` always has ``method``, ``n``, ``reward_calls`` (sequences
scored by the exact reward), ``soft_reward_calls`` (evaluations of the differentiable reward, each with
its gradient for CG / TDS), ``network_passes`` (sequence forwards of the diffusion network), ``seconds``
and the resolved ``options``. Methods and their options (defaults):

==============  ========================================================================================
``pretrained``  the model's own sampler (no options)
``best_of_n``   ``num_candidates=4``
``cg``          ``guidance_scale=1.0``, ``log_potential=None`` (exact neighbour guidance; default: gradient)
``smc``         ``num_particles=8, alpha=1.0, ess_threshold=0.5, resampling='systematic', lookahead='argmax'``
``tds``         ``num_particles=8, alpha=1.0, ess_threshold=0.5, resampling='systematic'``
==============  ========================================================================================

The fine-tuning baseline (DRAKES) is :class:`sepo.baselines.DrakesTrainer`; its fine-tuned model is then
sampled with ``generate("pretrained", finetuned_model, ...)``.
"""

from __future__ import annotations

import difflib
import inspect
import time

import torch

from sepo.diffusion.model import DiffusionModel
from sepo.diffusion.process import MaskedProcess
from sepo.diffusion.sampling import SamplerConfig, sample
from sepo.errors import ConfigError

from .best_of_n import best_of_n_sample
from .cg import cg_sample
from .common import expand_constraint, model_device
from .smc import smc_sample, tds_sample

__all__ = ["generate", "METHODS", "method_options", "pretrained_sample"]


def pretrained_sample(
    model: DiffusionModel,
    *,
    n: int,
    length: int,
    sampler: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
    fixed: torch.Tensor | None = None,
    fixed_tokens: torch.Tensor | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Plain sampling with the model's sampler (:func:`sepo.diffusion.sampling.sample`)."""
    cfg = sampler or SamplerConfig()
    if isinstance(model.process, MaskedProcess) and not cfg.final_denoise:
        raise ConfigError("sampling a masked model for a benchmark needs final_denoise=True (outputs must be unmasked)")
    t0, passes0 = time.perf_counter(), model.network_passes
    device = model_device(model)
    fx, ft = expand_constraint(fixed, fixed_tokens, n, length, 1, device)
    out = sample(model, num_samples=n, length=length, config=cfg, generator=generator, device=device, fixed=fx,
                 fixed_tokens=ft, batch_size=batch_size, progress=progress)
    return out.x, {"reward_calls": 0, "soft_reward_calls": 0, "network_passes": model.network_passes - passes0,
                   "seconds": time.perf_counter() - t0}


METHODS = {
    "pretrained": pretrained_sample,
    "best_of_n": best_of_n_sample,
    "cg": cg_sample,
    "smc": smc_sample,
    "tds": tds_sample,
}

_COMMON = ("model", "n", "length", "reward", "soft_reward", "sampler", "generator", "fixed", "fixed_tokens", "batch_size",
           "progress")
_INTERNAL = ("twisted",)  # smc_sample's switch to TDS: use method 'tds' instead


def method_options(method: str) -> dict:
    """The options ``method`` accepts, with their defaults."""
    if method not in METHODS:
        raise ConfigError(f"unknown sampling method {method!r}; choose one of {', '.join(METHODS)}")
    sig = inspect.signature(METHODS[method]).parameters
    return {k: p.default for k, p in sig.items() if k not in _COMMON and k not in _INTERNAL}


def generate(
    method: str,
    model: DiffusionModel,
    *,
    n: int,
    length: int,
    reward=None,
    soft_reward=None,
    sampler: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
    fixed: torch.Tensor | None = None,
    fixed_tokens: torch.Tensor | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    **options,
) -> tuple[torch.Tensor, dict]:
    """Draw ``n`` sequences ``[n, length]`` with ``method`` (see the module docstring).

    Args:
        reward: exact reward (``Reward`` or callable ``tokens [B, L] -> [B]``); needed by best_of_n, smc, tds.
        soft_reward: differentiable reward ``probs [B, L, V] -> [B]``; needed by cg (unless ``log_potential``)
            and tds, optional for smc (``lookahead='expected'``).
        fixed, fixed_tokens: prompt constraint, ``[L]`` or ``[n, L]`` (kept by every method).
        batch_size: outputs (best_of_n: candidates) processed at once.
    The model is put in eval mode for sampling and restored afterwards.
    """
    allowed = method_options(method)
    unknown = [k for k in options if k not in allowed]
    if unknown:
        hint = difflib.get_close_matches(unknown[0], list(allowed), n=1)
        raise ConfigError(f"method {method!r} has no option {unknown[0]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; its options are: {', '.join(allowed) or 'none'}")
    if int(n) < 1 or int(length) < 1:
        raise ConfigError(f"generate needs n >= 1 and length >= 1, got n={n}, length={length}")
    fn = METHODS[method]
    params = inspect.signature(fn).parameters
    kwargs = dict(n=int(n), length=int(length), sampler=sampler, generator=generator, fixed=fixed, fixed_tokens=fixed_tokens,
                  batch_size=batch_size, progress=progress, **options)
    if "reward" in params:
        if reward is None:
            raise ConfigError(f"method {method!r} needs a reward (tokens [B, L] -> [B])")
        kwargs["reward"] = reward
    if "soft_reward" in params:
        if soft_reward is None and method == "tds":
            raise ConfigError("method 'tds' needs a differentiable reward (soft_reward: probs [B, L, V] -> [B])")
        kwargs["soft_reward"] = soft_reward
    was_training = model.training
    model.eval()
    try:
        tokens, info = fn(model, **kwargs)
    finally:
        model.train(was_training)
    resolved = {**allowed, **options}
    info = {"method": method, "n": int(n), **info,
            "options": {k: v for k, v in resolved.items() if not callable(v)}}
    return tokens, info
