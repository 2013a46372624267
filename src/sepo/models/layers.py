"""Building blocks shared by the backbones: noise-level embedding and SEDD's output scaling."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["sinusoidal_features", "NoiseEmbedding", "sedd_output_scaling"]


def sinusoidal_features(sigma: torch.Tensor, dim: int, *, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of a scalar per sequence: ``sigma [B]`` -> ``[B, dim]``.

    Frequencies ``max_period^(-k / half)`` for ``k < half = dim // 2``; the output is
    ``[cos(sigma f_k) ..., sin(sigma f_k) ...]`` (cosines first), zero-padded to ``dim`` when odd.
    This is the transformer position encoding applied to the noise level (Vaswani et al., 2017;
    DiT, Peebles & Xie, 2023), in the layout SEDD/MDLM checkpoints were trained with.
    """
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=sigma.device)
    freqs = torch.exp(k * (-math.log(max_period) / half))
    angles = sigma.float().reshape(-1, 1) * freqs.reshape(1, -1)
    feats = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        feats = torch.nn.functional.pad(feats, (0, 1))
    return feats


class NoiseEmbedding(nn.Module):
    """``sigma_bar [B]`` -> conditioning vector ``[B, cond_dim]``: sinusoidal features, then
    Linear -> SiLU -> Linear, then SiLU (the conditioning of SEDD/MDLM's DiT)."""

    def __init__(self, cond_dim: int, *, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, sigma_bar: torch.Tensor) -> torch.Tensor:
        feats = sinusoidal_features(sigma_bar, self.freq_dim).to(self.mlp[0].weight.dtype)
        return torch.nn.functional.silu(self.mlp(feats))


def sedd_output_scaling(out: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
    """SEDD's absorbing-score output scaling (Lou et al., 2024, ``scale_by_sigma``).

    ``out [B, L, K] - log(exp(sigma_bar) - 1) - log(K - 1)``: with a zero network the score at a masked
    position is ``1 / ((e^sigma - 1) V)`` per clean token, i.e. ``alpha/(1-alpha)`` times a uniform
    denoiser, so training starts from a calibrated model. ``sigma_bar`` is clamped away from 0 (where
    the scaling diverges; the sampler never asks for the score of a masked token there).
    """
    esigm1 = torch.expm1(sigma_bar.float()).clamp_min(torch.finfo(torch.float32).tiny)
    return out - torch.log(esigm1).to(out.dtype).reshape(-1, 1, 1) - math.log(out.shape[-1] - 1)
