"""Toy worlds for fine-tuning: a tiny model, a reward table and the exact KL-regularised optimum.

A world has ``L`` positions over ``V`` tokens (``V^L`` sequences, e.g. 27). The pretrained model is a
*tabular* denoiser (one learnable row of logits per noisy state: every kernel the sampler uses is
free) or a small *MLP* (weights shared across states, like a real network). Its sampler's exact
output law ``π_ref`` is computed by propagation, so is the target of KL-regularised fine-tuning
``π* = π_ref exp(r / β) / Z`` and the total variation any run reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sepo.diffusion.model import DiffusionModel
from sepo.diffusion.process import make_process
from sepo.diffusion.sampling import SamplerConfig
from sepo.rl.rewards import table_reward

from .exact import ExactDenoiser, enumerate_states, exact_output_distribution, state_index

__all__ = ["ToyWorldConfig", "ToyWorld", "TabularDenoiser", "MLPDenoiser", "make_toy_world", "tilted_optimum"]


@dataclass
class ToyWorldConfig:
    """A tiny world.

    Attributes:
        length: sequence length ``L`` (≤ 4).
        vocab_size: clean tokens ``V`` (≤ 4).
        process: ``masked`` or ``uniform``.
        model: ``tabular`` (one row of logits per state) or ``mlp`` (shared weights).
        sampling_steps: sampler steps ``T``; the exact laws are those of this sampler.
        sampler: sampler name.
        data_temperature: spread of the random data law ``p0 ∝ exp(N(0,1) * data_temperature)``.
        hidden: MLP width.
        seed: seed of ``p0``, the reward table and the MLP initialisation.
    """

    length: int = 3
    vocab_size: int = 3
    process: str = "masked"
    model: str = "tabular"
    sampling_steps: int = 16
    sampler: str = "ancestral"
    data_temperature: float = 1.5
    hidden: int = 64
    seed: int = 0

    def __post_init__(self):
        if not (1 <= self.length <= 4 and 2 <= self.vocab_size <= 4):
            raise ValueError(f"toy worlds need 1 <= length <= 4 and 2 <= vocab_size <= 4, got {self.length}, {self.vocab_size}")
        if self.model not in ("tabular", "mlp"):
            raise ValueError(f"toy model must be 'tabular' or 'mlp', got {self.model!r}")


class TabularDenoiser(nn.Module):
    """Logits ``[S^L, L, V]``, one row per (noisy) state; ignores time. Initialised from ``init_logits``."""

    def __init__(self, init_logits: torch.Tensor, num_states: int):
        super().__init__()
        self.num_states = num_states
        self.logits = nn.Parameter(init_logits.detach().clone().float())

    def forward(self, x_t, sigma_bar):
        return self.logits[state_index(x_t, self.num_states)]


class MLPDenoiser(nn.Module):
    """One-hot states -> MLP -> logits ``[L, V]`` (+ a noise-level input when ``time_conditioned``)."""

    def __init__(self, length: int, num_states: int, vocab_size: int, *, hidden: int = 64, time_conditioned: bool = False):
        super().__init__()
        self.length, self.num_states, self.vocab_size = length, num_states, vocab_size
        self.time_conditioned = time_conditioned
        self.net = nn.Sequential(nn.Linear(length * num_states + int(time_conditioned), hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, length * vocab_size))

    def forward(self, x_t, sigma_bar):
        h = nn.functional.one_hot(x_t, self.num_states).float().flatten(1)
        if self.time_conditioned:
            h = torch.cat([h, torch.log1p(sigma_bar.float())[:, None]], -1)
        return self.net(h).view(-1, self.length, self.vocab_size)


@dataclass
class ToyWorld:
    config: ToyWorldConfig
    model: DiffusionModel  # the pretrained policy
    p0: torch.Tensor  # data law over V^L
    reward_table: torch.Tensor  # [V^L] in [0, 1]

    @property
    def sampler(self) -> SamplerConfig:
        return SamplerConfig(name=self.config.sampler, steps=self.config.sampling_steps)

    def reward(self):
        return table_reward(self.reward_table, self.config.vocab_size, name="toy-table")

    def output_distribution(self, model: DiffusionModel | None = None) -> torch.Tensor:
        return exact_output_distribution(model or self.model, self.config.length, self.sampler)


def _fit_mlp(model: DiffusionModel, p0: torch.Tensor, length: int, *, steps: int, seed: int) -> None:
    """Pretrain the MLP on the exact data law with the diffusion loss (small, deterministic)."""
    from sepo.diffusion.losses import diffusion_loss

    g = torch.Generator().manual_seed(seed)
    clean = enumerate_states(length, model.vocab_size)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        x0 = clean[torch.multinomial(p0.float(), 256, replacement=True, generator=g)]
        loss = diffusion_loss(model, x0, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def make_toy_world(cfg: ToyWorldConfig | None = None, *, pretrain_steps: int = 1500) -> ToyWorld:
    cfg = cfg or ToyWorldConfig()
    g = torch.Generator().manual_seed(cfg.seed)
    n_clean = cfg.vocab_size**cfg.length
    p0 = torch.softmax(torch.randn(n_clean, generator=g, dtype=torch.float64) * cfg.data_temperature, 0)
    reward = torch.rand(n_clean, generator=g)
    process = make_process(cfg.process, cfg.vocab_size, "loglinear", eps=1e-3)
    masked = cfg.process == "masked"
    param = "subs" if masked else "denoiser"
    if cfg.model == "tabular":
        if not masked:
            raise ValueError("the tabular toy model is time-independent, which only suits the masked process; use model='mlp'")
        exact = ExactDenoiser(p0.log(), process, cfg.length)
        states = enumerate_states(cfg.length, process.num_states)
        with torch.no_grad():
            init = exact(states, torch.zeros(states.shape[0])).float().clamp_min(-30.0)
        net = TabularDenoiser(init, process.num_states)
        model = DiffusionModel(net, process, parameterization=param, time_conditioned=False)
    else:
        torch.manual_seed(cfg.seed)
        net = MLPDenoiser(cfg.length, process.num_states, cfg.vocab_size, hidden=cfg.hidden, time_conditioned=not masked)
        model = DiffusionModel(net, process, parameterization=param, time_conditioned=not masked)
        _fit_mlp(model, p0, cfg.length, steps=pretrain_steps, seed=cfg.seed)
    return ToyWorld(cfg, model, p0, reward)


def tilted_optimum(pi_ref: torch.Tensor, reward: torch.Tensor, beta: float) -> torch.Tensor:
    """``π* ∝ π_ref exp(r / β)``, the maximiser of ``E_π[r] - β KL(π || π_ref)``."""
    logits = pi_ref.to(torch.float64).clamp_min(1e-300).log() + reward.to(torch.float64) / beta
    return torch.softmax(logits, 0)
