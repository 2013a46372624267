"""Diffusion transformer (DiT) for text: bidirectional attention, rotary positions, adaLN-zero.

Re-implements the "DDiT" backbone used by SEDD (Lou et al., 2024) and MDLM (Sahoo et al., 2024), which
adapts DiT (Peebles & Xie, 2023) to token sequences, so that their published checkpoints map onto it
one tensor at a time (:mod:`sepo.models.convert`):

* token embedding over the process' states (``[MASK]`` included);
* the noise level ``sigma_bar`` -> sinusoidal features -> MLP -> SiLU gives a conditioning vector ``c``;
* each block: ``h += gate_a * Attn(LN(h) * (1 + scale_a) + shift_a)`` and
  ``h += gate_m * MLP(LN(h) * (1 + scale_m) + shift_m)``, the six modulation vectors a linear function
  of ``c`` initialised at zero (adaLN-zero: every block starts as the identity);
* attention: one bias-free QKV projection, rotary position embeddings on queries and keys
  (Su et al., 2021; "rotate-half" layout, base 10000), ``torch.nn.functional.scaled_dot_product_attention``
  without a causal mask, a bias-free output projection; the MLP uses tanh-GELU;
* LayerNorms carry a scale and no bias;
* output: ``Linear(LN(h) * (1 + scale) + shift)`` (zero-initialised), optionally SEDD's
  ``scale_by_sigma`` score scaling.

With ``time_conditioned=False`` the network sees ``sigma_bar = 0`` (as MDLM does), so its output does
not depend on the noise level.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .layers import NoiseEmbedding, sedd_output_scaling

__all__ = ["DiT", "DiTBlock", "rotary_cos_sin", "apply_rotary"]


def rotary_cos_sin(length: int, head_dim: int, *, base: float = 10_000.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables ``cos, sin`` of shape ``[L, head_dim]`` (frequencies repeated over both halves)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.arange(length, dtype=torch.float32, device=device)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, H, L, d]`` by position: pairs ``(x_j, x_{j + d/2})`` turn by angle ``pos * f_j``."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x [B, L, H] * (1 + scale [B, 1, H]) + shift [B, 1, H]``."""
    return x * (1.0 + scale) + shift


class DiTBlock(nn.Module):
    """One pre-norm transformer block with adaLN-zero modulation from ``c [B, cond_dim]``."""

    def __init__(self, hidden: int, n_heads: int, cond_dim: int, *, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.norm_attn = nn.LayerNorm(hidden, bias=False)
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.proj = nn.Linear(hidden, hidden, bias=False)
        self.norm_mlp = nn.LayerNorm(hidden, bias=False)
        self.fc1 = nn.Linear(hidden, mlp_ratio * hidden)
        self.fc2 = nn.Linear(mlp_ratio * hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.modulation = nn.Linear(cond_dim, 6 * hidden)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b, length, width = h.shape
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(c)[:, None, :].chunk(6, dim=-1)
        u = modulate(self.norm_attn(h), shift_a, scale_a)
        qkv = self.qkv(u).view(b, length, 3, self.n_heads, width // self.n_heads)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(dim=2))  # each [B, heads, L, d]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        a = a.transpose(1, 2).reshape(b, length, width)
        h = h + gate_a * self.dropout(self.proj(a))
        u = modulate(self.norm_mlp(h), shift_m, scale_m)
        return h + gate_m * self.dropout(self.fc2(F.gelu(self.fc1(u), approximate="tanh")))


class DiTOutput(nn.Module):
    """Final adaLN-modulated LayerNorm and linear read-out (zero-initialised)."""

    def __init__(self, hidden: int, out_dim: int, cond_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, bias=False)
        self.modulation = nn.Linear(cond_dim, 2 * hidden)
        self.linear = nn.Linear(hidden, out_dim)
        for p in (*self.modulation.parameters(), *self.linear.parameters()):
            nn.init.zeros_(p)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c)[:, None, :].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(h), shift, scale))


class DiT(nn.Module):
    """``net(x_t [B, L] long, sigma_bar [B] float) -> [B, L, out_dim]``.

    Args:
        num_states: input states per position (``V + 1`` for the masked process).
        out_dim: output width ``K``.
        hidden, n_layers, n_heads, mlp_ratio: transformer shape.
        cond_dim: width of the noise conditioning vector.
        dropout: dropout on each residual branch (training only).
        time_conditioned: feed ``sigma_bar``; when off the network is fed 0 instead.
        scale_by_sigma: SEDD's absorbing-score output scaling.
        length: maximum sequence length accepted.
    """

    def __init__(
        self,
        *,
        num_states: int,
        out_dim: int,
        hidden: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        mlp_ratio: int = 4,
        cond_dim: int = 128,
        dropout: float = 0.0,
        time_conditioned: bool = True,
        scale_by_sigma: bool = False,
        length: int = 1024,
    ):
        super().__init__()
        if hidden % n_heads or (hidden // n_heads) % 2:
            raise ValueError(f"hidden ({hidden}) / n_heads ({n_heads}) must be an even integer")
        self.length = int(length)
        self.head_dim = hidden // n_heads
        self.time_conditioned = bool(time_conditioned)
        self.scale_by_sigma = bool(scale_by_sigma)
        self.embed = nn.Embedding(num_states, hidden)
        self.noise_embed = NoiseEmbedding(cond_dim)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden, n_heads, cond_dim, mlp_ratio=mlp_ratio, dropout=dropout) for _ in range(n_layers)
        )
        self.output = DiTOutput(hidden, out_dim, cond_dim)
        self._rotary_cache: tuple | None = None

    def _rotary(self, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (length, str(device))
        if self._rotary_cache is None or self._rotary_cache[0] != key:
            self._rotary_cache = (key, rotary_cos_sin(length, self.head_dim, device=device))
        return self._rotary_cache[1]

    def forward(self, x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        if x_t.shape[-1] > self.length:
            raise ValueError(f"sequence length {x_t.shape[-1]} exceeds the model's maximum length {self.length}")
        sigma_bar = sigma_bar.reshape(-1).expand(x_t.shape[0])
        c = self.noise_embed(sigma_bar if self.time_conditioned else torch.zeros_like(sigma_bar))
        h = self.embed(x_t)
        cos, sin = self._rotary(x_t.shape[-1], x_t.device)
        for block in self.blocks:
            h = block(h, cos, sin, c)
        out = self.output(h, c)
        if self.scale_by_sigma:
            out = sedd_output_scaling(out, sigma_bar)
        return out
