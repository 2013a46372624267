"""Dilated 1-D CNN for DNA (the backbone of the SEPO / DRAKES DHS-enhancer benchmark).

The architecture is modelled on the DNA networks of Dirichlet flow matching (Stark et al., 2024) and DRAKES
(Wang et al., 2025), re-implemented: token embedding over the process' states (``[MASK]`` included),
``n_stacks`` repeats of ``len(dilations)`` kernel-``k`` convolutions with dilations (default
1, 1, 4, 16, 64), each a pre-LayerNorm residual branch ``h + Dropout(GELU(Conv(LN(h) + time)))``, then a
LayerNorm and a two-layer per-position head.

Receptive field: ``1 + n_stacks * sum_d (k - 1) d``, i.e. 2753 positions for the full preset
(4 stacks, k = 9) and 1377 for the tiny one: every output sees the whole 200-bp sequence.

Parameter counts (``vocab_size = 4``, masked SUBS, no time embedding): ``dna-full`` (hidden 128,
4 stacks) 2,974,853; ``dna-tiny`` (hidden 64, 2 stacks) 375,493. A time embedding adds
``256 cond + cond^2 + 2 cond`` for the noise MLP and ``n_convs (cond + 1) hidden`` for the per-layer
projections (+379,648 for the full preset, +62,208 for the tiny one).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import NoiseEmbedding, sedd_output_scaling

__all__ = ["DNACNN", "receptive_field"]


def receptive_field(*, kernel_size: int, dilations: list[int], n_stacks: int) -> int:
    """Number of input positions one output position depends on (``1 + sum (k - 1) d``)."""
    return 1 + n_stacks * sum((kernel_size - 1) * d for d in dilations)


class DNACNN(nn.Module):
    """``net(x_t [B, L] long, sigma_bar [B] float) -> [B, L, out_dim]``.

    Args:
        num_states: input states per position (``V + 1`` for the masked process).
        out_dim: output width ``K``.
        hidden: channels of the residual stream.
        n_stacks, dilations, kernel_size: the convolution stack (``n_stacks * len(dilations)`` convs).
        dropout: dropout on each residual branch (training only).
        time_conditioned: add a projection of the noise embedding before each convolution; when off,
            ``sigma_bar`` is ignored (and there are no time parameters).
        cond_dim: width of the noise embedding.
        scale_by_sigma: apply SEDD's absorbing-score output scaling (score models only).
        length: maximum sequence length accepted.
    """

    def __init__(
        self,
        *,
        num_states: int,
        out_dim: int,
        hidden: int = 128,
        n_stacks: int = 4,
        dilations: tuple[int, ...] | list[int] = (1, 1, 4, 16, 64),
        kernel_size: int = 9,
        dropout: float = 0.0,
        time_conditioned: bool = False,
        cond_dim: int = 128,
        scale_by_sigma: bool = False,
        length: int = 200,
    ):
        super().__init__()
        self.length = int(length)
        self.time_conditioned = bool(time_conditioned)
        self.scale_by_sigma = bool(scale_by_sigma)
        self.layer_dilations = [int(d) for d in dilations] * int(n_stacks)
        self.receptive_field = receptive_field(kernel_size=kernel_size, dilations=list(dilations), n_stacks=n_stacks)
        self.embed = nn.Embedding(num_states, hidden)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in self.layer_dilations)
        # 'same' padding: (k - 1) d / 2 on each side keeps the length for odd k
        self.convs = nn.ModuleList(
            nn.Conv1d(hidden, hidden, kernel_size, dilation=d, padding=(kernel_size - 1) * d // 2)
            for d in self.layer_dilations
        )
        if self.time_conditioned:
            self.noise_embed = NoiseEmbedding(cond_dim)
            self.time_proj = nn.ModuleList(nn.Linear(cond_dim, hidden) for _ in self.layer_dilations)
        self.dropout = nn.Dropout(dropout)
        self.final_norm = nn.LayerNorm(hidden)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        if x_t.shape[-1] > self.length:
            raise ValueError(f"sequence length {x_t.shape[-1]} exceeds the model's maximum length {self.length}")
        h = self.embed(x_t)  # [B, L, H]
        c = self.noise_embed(sigma_bar.reshape(-1).expand(x_t.shape[0])) if self.time_conditioned else None
        for i, (norm, conv) in enumerate(zip(self.norms, self.convs)):
            u = norm(h)
            if c is not None:
                u = u + self.time_proj[i](c)[:, None, :]
            u = conv(u.transpose(1, 2)).transpose(1, 2)  # Conv1d wants [B, H, L]
            h = h + self.dropout(torch.nn.functional.gelu(u))
        out = self.head(self.final_norm(h))
        if self.scale_by_sigma:
            out = sedd_output_scaling(out, sigma_bar.reshape(-1).expand(x_t.shape[0]))
        return out
