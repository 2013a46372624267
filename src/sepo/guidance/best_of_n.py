"""Best-of-N: draw ``N`` candidates per output from the model's sampler and keep the highest-reward one.

If the sampler's output law is ``π`` and the reward takes distinct values, the output law is

    P(best = x) = F(r(x))^N - F(r(x)^-)^N,     F(c) = π(r ≤ c),

which tests check exactly. Cost: ``n · N`` reward calls and ``N`` times the network passes of plain
sampling. Ties are broken toward the earliest candidate.
"""

from __future__ import annotations

import time

import torch

from sepo.diffusion.model import DiffusionModel
from sepo.diffusion.process import MaskedProcess
from sepo.diffusion.sampling import SamplerConfig, sample
from sepo.errors import ConfigError

from .common import expand_constraint, model_device
from .rewards import as_reward

__all__ = ["best_of_n_sample", "best_of_n_law"]


def best_of_n_sample(
    model: DiffusionModel,
    *,
    n: int,
    length: int,
    reward,
    num_candidates: int = 4,
    sampler: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
    fixed: torch.Tensor | None = None,
    fixed_tokens: torch.Tensor | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """``n`` outputs ``[n, L]``, each the best of ``num_candidates`` samples under ``reward``.

    ``batch_size`` bounds the number of *candidates* sampled at once. Returns ``(tokens, info)`` with
    ``reward_calls`` (= ``n * num_candidates``), ``network_passes``, ``seconds`` and the chosen
    candidates' rewards (``rewards [n]``).
    """
    if int(num_candidates) < 1:
        raise ConfigError(f"best_of_n: num_candidates must be >= 1, got {num_candidates}")
    cfg = sampler or SamplerConfig()
    if isinstance(model.process, MaskedProcess) and not cfg.final_denoise:
        raise ConfigError("best_of_n of a masked model needs final_denoise=True (rewards are only defined on unmasked sequences)")
    reward = as_reward(reward)
    t0, passes0 = time.perf_counter(), model.network_passes
    k = int(num_candidates)
    device = model_device(model)
    fx, ft = expand_constraint(fixed, fixed_tokens, n, length, k, device)
    out = sample(model, num_samples=n * k, length=length, config=cfg, generator=generator, device=device,
                 fixed=fx, fixed_tokens=ft, batch_size=batch_size, progress=progress)
    cand = out.x.view(n, k, length)
    r = reward(out.x.cpu()).view(n, k)
    best = r.argmax(-1)  # first maximal candidate on ties
    tokens = cand[torch.arange(n, device=cand.device), best.to(cand.device)]
    info = {"reward_calls": n * k, "soft_reward_calls": 0, "network_passes": model.network_passes - passes0,
            "seconds": time.perf_counter() - t0, "rewards": r.gather(-1, best[:, None]).squeeze(-1)}
    return tokens, info


def best_of_n_law(pi: torch.Tensor, reward: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """Exact law of best-of-``num_candidates`` draws from ``pi [N]`` with rewards ``reward [N]`` (distinct
    values assumed; ties make the formula give the law of the best *value*)."""
    pi, reward = pi.to(torch.float64), reward.to(torch.float64)
    below_or_eq = (reward[None, :] <= reward[:, None]).to(torch.float64) @ pi  # F(r(x))
    below = (reward[None, :] < reward[:, None]).to(torch.float64) @ pi  # F(r(x)^-)
    return below_or_eq**num_candidates - below**num_candidates
