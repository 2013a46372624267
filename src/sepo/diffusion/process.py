"""Forward noising processes: masked (absorbing) and uniform CTMCs acting on each position alone.

Both are *interpolating* processes: with keep-probability ``alpha_t`` from the schedule,

    q_t(x_t = y | x_0) = alpha_t * [y == x_0] + (1 - alpha_t) * pi(y)

where ``pi`` is the limit distribution: a point mass on ``[MASK]`` (absorbing graph) or uniform over
the vocabulary (uniform graph). The forward rate matrix is ``Q_t(x -> y) = sigma(t) (pi(y) - [x == y])``
(row convention: rate of jumping from ``x`` to ``y``), and the transition from time ``s`` to ``t > s``
is ``P_{s->t} = a I + (1 - a) 1 pi^T`` with ``a = alpha_t / alpha_s``.

Token ids: clean tokens are ``0 .. vocab_size - 1``; the masked process adds ``mask_id = vocab_size``,
so it has ``num_states = vocab_size + 1`` states per position.

References: D3PM (Austin et al., 2021), SEDD (Lou et al., 2024), MDLM (Sahoo et al., 2024).
"""

from __future__ import annotations

import torch

from sepo.utils.random import rand, randint

from .schedules import Schedule, make_schedule, schedule_from_config

__all__ = ["Process", "MaskedProcess", "UniformProcess", "make_process", "process_from_config"]


class Process:
    """An interpolating forward process over ``vocab_size`` clean tokens with schedule ``schedule``."""

    kind: str = "base"

    def __init__(self, vocab_size: int, schedule: Schedule):
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
        self.vocab_size = int(vocab_size)
        self.schedule = schedule

    # --- static structure -------------------------------------------------------------------
    @property
    def num_states(self) -> int:
        raise NotImplementedError

    @property
    def mask_id(self) -> int | None:
        return None

    def limit(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """Limit distribution ``pi`` over the ``num_states`` states, shape ``[S]``."""
        raise NotImplementedError

    # --- forward marginals ------------------------------------------------------------------
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.alpha(t)

    def marginal(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``q_t(. | x_0)`` per position. ``x0 [B, L]`` long, ``t [B]`` -> probs ``[B, L, S]``."""
        alpha = self.alpha(t).to(torch.float32)[:, None, None]
        onehot = torch.nn.functional.one_hot(x0, self.num_states).to(alpha.dtype)
        return alpha * onehot + (1.0 - alpha) * self.limit(x0.device, alpha.dtype)

    def sample_xt(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``x_t ~ q_t(. | x_0)``. ``x0 [B, L]``, ``t [B]`` -> ``[B, L]`` long."""
        alpha = self.alpha(t).to(torch.float32)[:, None]
        keep = rand(x0.shape, generator=generator, device=x0.device) < alpha
        noise = self.sample_limit(x0.shape, device=x0.device, generator=generator)
        return torch.where(keep, x0, noise)

    def sample_limit(self, shape, *, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw from ``pi`` independently per position (the sampler's prior)."""
        raise NotImplementedError

    def transition_matrix(self, a: torch.Tensor) -> torch.Tensor:
        """``P = a I + (1 - a) 1 pi^T`` for keep-ratio ``a`` (any shape) -> ``[..., S, S]`` (rows: from)."""
        a = torch.as_tensor(a, dtype=torch.float64)
        eye = torch.eye(self.num_states, dtype=a.dtype)
        pi = self.limit(dtype=a.dtype)
        return a[..., None, None] * eye + (1.0 - a)[..., None, None] * pi.expand(self.num_states, -1)

    def forward_rate_into(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward rate ``Q_t(y -> x_t)`` for any ``y != x_t``; equals ``sigma(t) pi(x_t)``. ``[B, L]``."""
        sigma = self.schedule.sigma(t).to(torch.float32)[:, None]
        return sigma * self.limit(x_t.device)[x_t]

    def to_config(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "schedule": self.schedule.to_config()}


class MaskedProcess(Process):
    """Absorbing ("masked") process: a token jumps to ``[MASK]`` at rate ``sigma(t)``."""

    kind = "masked"

    @property
    def num_states(self) -> int:
        return self.vocab_size + 1

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    def limit(self, device=None, dtype=torch.float32):
        pi = torch.zeros(self.num_states, device=device, dtype=dtype)
        pi[self.mask_id] = 1.0
        return pi

    def sample_limit(self, shape, *, device=None, generator=None):
        return torch.full(tuple(shape), self.mask_id, dtype=torch.long, device=device)


class UniformProcess(Process):
    """Uniform process: a token jumps to a uniformly drawn token (possibly itself) at rate ``sigma(t)``.

    Our rate is ``sigma(t) (1/N 11^T - I)``, so ``alpha_t = exp(-sigma_bar(t))`` as for the masked
    process. SEDD's uniform graph uses ``11^T - N I`` (its ``sigma`` is ours divided by ``N``).
    """

    kind = "uniform"

    @property
    def num_states(self) -> int:
        return self.vocab_size

    def limit(self, device=None, dtype=torch.float32):
        return torch.full((self.num_states,), 1.0 / self.num_states, device=device, dtype=dtype)

    def sample_limit(self, shape, *, device=None, generator=None):
        return randint(self.vocab_size, shape, generator=generator, device=device)


PROCESSES = {"masked": MaskedProcess, "uniform": UniformProcess}


def make_process(kind: str, vocab_size: int, schedule: Schedule | str | None = None, **schedule_kwargs) -> Process:
    """Build ``masked`` or ``uniform`` process; ``schedule`` may be a name or a :class:`Schedule`."""
    if kind not in PROCESSES:
        raise ValueError(f"unknown diffusion process {kind!r}; choose 'masked' or 'uniform'")
    if schedule is None or isinstance(schedule, str):
        schedule = make_schedule(schedule or "loglinear", **schedule_kwargs)
    return PROCESSES[kind](vocab_size, schedule)


def process_from_config(cfg: dict) -> Process:
    return PROCESSES[cfg["kind"]](cfg["vocab_size"], schedule_from_config(cfg["schedule"]))
