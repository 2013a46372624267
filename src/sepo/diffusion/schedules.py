"""Noise schedules for continuous-time discrete diffusion.

A schedule gives the total noise ``sigma_bar(t)`` (integrated rate) on ``t in [0, 1]``, its rate
``sigma(t) = d sigma_bar / dt``, the keep-probability ``alpha(t) = exp(-sigma_bar(t))`` and its
derivative ``dalpha(t) = -sigma(t) * alpha(t)``. All functions take and return tensors of any shape.

The forward process at time ``t`` keeps a clean token with probability ``alpha(t)`` and otherwise
replaces it by a draw from the process' limit distribution (see :mod:`sepo.diffusion.process`).

References: log-linear and geometric schedules as in SEDD (Lou et al., 2024); the cosine schedule as
in MDLM (Sahoo et al., 2024) / Nichol & Dhariwal (2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Schedule", "LogLinear", "Geometric", "Cosine", "make_schedule", "SCHEDULES"]


class Schedule:
    """Base class. Subclasses define ``sigma_bar`` and ``sigma``; ``alpha`` follows."""

    name: str = "base"

    def sigma_bar(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Keep-probability ``exp(-sigma_bar(t))``."""
        return torch.exp(-self.sigma_bar(t))

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        """``d alpha / dt = -sigma(t) alpha(t)`` (non-positive)."""
        return -self.sigma(t) * self.alpha(t)

    def to_config(self) -> dict:
        return {"name": self.name, **{k: v for k, v in vars(self).items()}}


@dataclass
class LogLinear(Schedule):
    """``sigma_bar(t) = -log(1 - (1 - eps) t)``, i.e. ``alpha(t) = 1 - (1 - eps) t`` (linear in alpha).

    ``eps`` is the keep-probability left at ``t = 1``; ``eps = 0`` gives a fully noised ``x_1`` (and an
    infinite rate at ``t = 1``, which only the ancestral sampler tolerates).
    """

    eps: float = 1e-3
    name = "loglinear"

    def __post_init__(self):
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"loglinear schedule: eps must be in [0, 1), got {self.eps}")

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * t

    def sigma_bar(self, t):
        return -torch.log1p(-(1.0 - self.eps) * t)

    def sigma(self, t):
        return (1.0 - self.eps) / (1.0 - (1.0 - self.eps) * t)


@dataclass
class Geometric(Schedule):
    """``sigma_bar(t) = sigma_min^(1-t) * sigma_max^t`` (SEDD's choice for the uniform graph).

    Note ``alpha(0) = exp(-sigma_min) < 1``: data is very slightly noised at ``t = 0``.
    """

    sigma_min: float = 1e-4
    sigma_max: float = 20.0
    name = "geometric"

    def __post_init__(self):
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"geometric schedule: need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}"
            )

    def sigma_bar(self, t):
        return self.sigma_min ** (1.0 - t) * self.sigma_max**t

    def sigma(self, t):
        return self.sigma_bar(t) * math.log(self.sigma_max / self.sigma_min)


@dataclass
class Cosine(Schedule):
    """``alpha(t) = eps + (1 - eps) cos(pi t / 2)``; ``alpha(0) = 1``, ``alpha(1) = eps``."""

    eps: float = 1e-3
    name = "cosine"

    def __post_init__(self):
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"cosine schedule: eps must be in [0, 1), got {self.eps}")

    def alpha(self, t):
        return self.eps + (1.0 - self.eps) * torch.cos(0.5 * math.pi * t)

    def sigma_bar(self, t):
        return -torch.log(self.alpha(t))

    def dalpha(self, t):
        return -(1.0 - self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def sigma(self, t):
        return -self.dalpha(t) / self.alpha(t)


SCHEDULES = {"loglinear": LogLinear, "geometric": Geometric, "cosine": Cosine}


def make_schedule(name: str = "loglinear", **kwargs) -> Schedule:
    """Build a schedule by name (``loglinear``, ``geometric``, ``cosine``)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](**kwargs)


def schedule_from_config(cfg: dict) -> Schedule:
    cfg = dict(cfg)
    return make_schedule(cfg.pop("name"), **cfg)
