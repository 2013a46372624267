"""``DiffusionModel``: a network plus the process it denoises, exposing both reverse-process views.

The network is any ``nn.Module`` called as ``net(x_t [B, L] long, sigma_bar [B] float) -> [B, L, K]``.
``parameterization`` says how to read its output:

* ``"subs"``    masked process, MDLM SUBS denoiser logits (``K = V`` or ``V + 1``);
* ``"denoiser"`` uniform process, logits of the clean-token posterior (``K = V``);
* ``"score"``   either process, SEDD log concrete scores (``K = S``; the entry at ``x_t`` is ignored).

The model counts *network passes* (sequence-forwards: one per sequence per call), which the
benchmarks report.
"""

from __future__ import annotations

import torch
from torch import nn

from .parameterization import log_denoiser_from_log_score, log_score_from_log_denoiser, subs_log_denoiser
from .process import MaskedProcess, Process

__all__ = ["DiffusionModel", "PARAMETERIZATIONS"]

PARAMETERIZATIONS = ("subs", "denoiser", "score")


class DiffusionModel(nn.Module):
    def __init__(self, net: nn.Module, process: Process, *, parameterization: str = "subs", time_conditioned: bool = True):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}; choose one of {PARAMETERIZATIONS}")
        if parameterization == "subs" and not isinstance(process, MaskedProcess):
            raise ValueError("the 'subs' parameterization needs the masked process; use 'denoiser' or 'score' for uniform")
        if parameterization == "denoiser" and isinstance(process, MaskedProcess):
            raise ValueError("use 'subs' (not 'denoiser') for the masked process")
        self.net = net
        self.process = process
        self.parameterization = parameterization
        self.time_conditioned = bool(time_conditioned)
        self.network_passes = 0

    @property
    def vocab_size(self) -> int:
        return self.process.vocab_size

    @property
    def num_states(self) -> int:
        return self.process.num_states

    def raw(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Network output ``[B, L, K]``; ``t`` is a float tensor of shape ``[B]`` (or a scalar)."""
        t = torch.as_tensor(t, dtype=torch.float32, device=x_t.device).expand(x_t.shape[0])
        self.network_passes += int(x_t.shape[0])
        return self.net(x_t, self.process.schedule.sigma_bar(t))

    def log_denoiser(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log ``D_theta(x_t)`` ``[B, L, V]`` (float32)."""
        out = self.raw(x_t, t)
        return self.log_denoiser_from_raw(out, x_t, t)

    def log_score(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log concrete score ``[B, L, S]`` with ``log s(x_t)_{i, x_t^i} = 0``."""
        out = self.raw(x_t, t)
        return self.log_score_from_raw(out, x_t, t)

    # --- conversions from a raw output (lets callers share one forward pass) --------------------
    def _alpha(self, t, x_t):
        t = torch.as_tensor(t, dtype=torch.float32, device=x_t.device).expand(x_t.shape[0])
        return self.process.alpha(t)

    def log_denoiser_from_raw(self, out, x_t, t):
        if self.parameterization == "subs":
            return subs_log_denoiser(out, x_t, self.process.mask_id)
        if self.parameterization == "denoiser":
            return torch.log_softmax(out.float(), dim=-1)
        return log_denoiser_from_log_score(self._score_from_raw(out, x_t), x_t, self._alpha(t, x_t), self.process)

    def log_score_from_raw(self, out, x_t, t):
        if self.parameterization == "score":
            return self._score_from_raw(out, x_t)
        log_d = self.log_denoiser_from_raw(out, x_t, t)
        return log_score_from_log_denoiser(log_d, x_t, self._alpha(t, x_t), self.process)

    def _score_from_raw(self, out, x_t):
        out = out.float()
        return out.scatter(-1, x_t.unsqueeze(-1), 0.0)
