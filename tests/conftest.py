"""Shared fixtures: tiny exact worlds and a small *non-exact* random network.

Both are factories (session-scoped fixtures returning functions) so each test module builds the worlds
it needs and caches expensive results in its own module-scoped fixtures.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from sepo.diffusion import DiffusionModel, MaskedProcess, Process, make_process
from sepo.tasks.toy.exact import exact_model

# The tests use tiny tensors, where intra-op threads only add overhead; on shared 2-core machines the
# thread contention made an exact-world loss evaluation 20-40x slower (measured: 3.5 s vs 0.1-0.2 s).
torch.set_num_threads(1)


def random_p0(num_clean: int, *, seed: int = 0, spread: float = 1.5) -> torch.Tensor:
    """A full-support random distribution ``[num_clean]`` (float64): ``softmax(spread * N(0, 1))``."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(spread * torch.randn(num_clean, generator=g, dtype=torch.float64), 0)


@dataclass
class World:
    """An exact world: a process, a data distribution ``p0 [V^L]`` and the model driven by its true posterior."""

    process: Process
    length: int
    p0: torch.Tensor
    model: DiffusionModel


def _make_world(kind: str, *, length: int = 3, vocab: int = 3, seed: int = 0, schedule: str = "loglinear", **schedule_kwargs) -> World:
    process = make_process(kind, vocab, schedule, **schedule_kwargs)
    p0 = random_p0(vocab**length, seed=seed)
    return World(process, length, p0, exact_model(p0.log(), process, length))


class TinyNet(nn.Module):
    """A small random MLP over the whole sequence: ``x_t [B, L]``, ``sigma_bar [B]`` -> ``[B, L, K]``.

    Its outputs are the posterior of nothing in particular and couple all positions, so the exact
    propagation and the samplers must agree for a genuinely *non-exact* model. ``scale`` sharpens the
    random weights (output logits have standard deviation ~``scale``) so the induced laws are far from uniform.
    """

    def __init__(self, num_states: int, length: int, out_dim: int, *, time_conditioned: bool, seed: int, hidden: int = 32, scale: float = 1.5):
        super().__init__()
        self.length, self.out_dim, self.time_conditioned = length, out_dim, time_conditioned
        self.embed = nn.Embedding(num_states, 4)
        self.fc1 = nn.Linear(4 * length + 1, hidden)
        self.fc2 = nn.Linear(hidden, length * out_dim)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(scale * torch.randn(p.shape, generator=g))
            self.fc2.weight /= hidden**0.5  # output logits have a standard deviation of about `scale`

    def forward(self, x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        time = torch.log1p(sigma_bar.float()) if self.time_conditioned else torch.zeros_like(sigma_bar, dtype=torch.float32)
        h = torch.cat([self.embed(x_t).flatten(1), time[:, None]], dim=-1)
        return self.fc2(torch.tanh(self.fc1(h))).view(x_t.shape[0], self.length, self.out_dim)


def _make_tiny_model(kind: str, *, length: int = 3, vocab: int = 3, parameterization: str | None = None,
                     time_conditioned: bool = True, seed: int = 1, schedule: str = "loglinear",
                     scale: float | None = None) -> DiffusionModel:
    process = make_process(kind, vocab, schedule)
    masked = isinstance(process, MaskedProcess)
    parameterization = parameterization or ("subs" if masked else "denoiser")
    out_dim = process.num_states if parameterization in ("subs", "score") else vocab
    # raw log-scores are used unnormalised, so a score net gets milder logits (exp() of large ones is degenerate)
    scale = scale if scale is not None else (1.0 if parameterization == "score" else 1.5)
    net = TinyNet(process.num_states, length, out_dim, time_conditioned=time_conditioned, seed=seed, scale=scale)
    return DiffusionModel(net, process, parameterization=parameterization, time_conditioned=time_conditioned)


@pytest.fixture(scope="session")
def make_world():
    """Factory ``make_world(kind, *, length=3, vocab=3, seed=0, schedule='loglinear', **schedule_kwargs) -> World``."""
    return _make_world


@pytest.fixture(scope="session")
def make_tiny_model():
    """Factory ``make_tiny_model(kind, *, length=3, vocab=3, parameterization=None, time_conditioned=True, seed=1,
    schedule='loglinear', scale=None) -> DiffusionModel`` around a random :class:`TinyNet`."""
    return _make_tiny_model
