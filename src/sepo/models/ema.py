"""Exponential moving average of a model's parameters (Polyak averaging), used for evaluation weights.

``shadow <- decay * shadow + (1 - decay) * param`` after each optimiser step; SEDD and MDLM evaluate
with EMA weights (decay 0.9999).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """EMA of the floating-point parameters of ``model`` (names as in ``model.named_parameters()``).

    Args:
        model: the module whose parameters are averaged (the shadow starts as a copy of them).
        decay: weight of the past, in ``[0, 1)``.

    ``store(model)`` / ``restore(model)`` swap the live weights out and back around an evaluation with
    ``copy_to(model)``. Shadow tensors live on the parameters' device and in float32 or wider.
    """

    def __init__(self, model: nn.Module, *, decay: float = 0.9999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: self._wide(p).detach().clone() for name, p in self._params(model)
        }
        self._stored: dict[str, torch.Tensor] | None = None

    @staticmethod
    def _params(model: nn.Module):
        return [(n, p) for n, p in model.named_parameters() if p.dtype.is_floating_point]

    @staticmethod
    def _wide(p: torch.Tensor) -> torch.Tensor:
        # averaging in half precision loses the (1 - decay) increments
        return p.float() if p.dtype in (torch.float16, torch.bfloat16) else p

    def _check(self, model: nn.Module) -> list[tuple[str, torch.Tensor]]:
        params = self._params(model)
        names = [n for n, _ in params]
        if set(names) != set(self.shadow):
            missing = sorted(set(self.shadow) ^ set(names))[:3]
            raise ValueError(f"EMA was built for a different model (parameters differ: {missing})")
        return params

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current parameters of ``model`` into the shadow."""
        for name, p in self._check(model):
            self.shadow[name].lerp_(self._wide(p.detach()), 1.0 - self.decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the parameters of ``model`` with the shadow."""
        for name, p in self._check(model):
            p.copy_(self.shadow[name].to(p.dtype))

    @torch.no_grad()
    def store(self, model: nn.Module) -> None:
        """Remember the live parameters of ``model`` (to bring them back with :meth:`restore`)."""
        self._stored = {name: p.detach().clone() for name, p in self._check(model)}

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        """Put back the parameters saved by :meth:`store`."""
        if self._stored is None:
            raise RuntimeError("EMA.restore called without a matching EMA.store")
        for name, p in self._check(model):
            p.copy_(self._stored[name])
        self._stored = None

    def averaged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``model.state_dict()`` with every averaged parameter replaced by its shadow (buffers as live)."""
        self._check(model)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for name, value in self.shadow.items():
            state[name] = value.to(state[name].dtype).clone()
        return state

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            raise ValueError("EMA state was saved for a different model (parameter names differ)")
        for name, value in shadow.items():
            if value.shape != self.shadow[name].shape:
                raise ValueError(f"EMA state: {name} has shape {tuple(value.shape)}, expected {tuple(self.shadow[name].shape)}")
            self.shadow[name] = value.to(device=self.shadow[name].device, dtype=self.shadow[name].dtype).clone()
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
