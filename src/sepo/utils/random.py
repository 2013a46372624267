"""Random draws that work whatever device the generator and the data live on.

A ``torch.Generator`` is tied to a device; drawing on the generator's device and moving the result
lets a CPU generator (reproducible across machines) drive a CUDA model, and a CUDA generator drive
CUDA tensors without a copy.
"""

from __future__ import annotations

import torch


def _gen_device(generator, device):
    return generator.device if generator is not None else device


def rand(shape, *, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
    """``U[0, 1)`` of ``shape`` on ``device``, drawn with ``generator`` (any device)."""
    return torch.rand(tuple(shape), generator=generator, device=_gen_device(generator, device), dtype=dtype).to(device)


def randint(high: int, shape, *, generator=None, device=None) -> torch.Tensor:
    """Integers in ``[0, high)`` of ``shape`` on ``device``, drawn with ``generator`` (any device)."""
    return torch.randint(0, high, tuple(shape), generator=generator, device=_gen_device(generator, device)).to(device)
