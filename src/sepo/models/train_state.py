"""Training state for exact resume: optimiser, LR schedule, step, EMA and every random number generator.

The state is one ``torch.save`` file of plain containers and tensors (so it loads with
``weights_only=True``), written atomically. Model weights live in the model directory
(:func:`sepo.models.save_model`); resuming = load the weights (``use_ema=False``), then this file.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sepo.errors import CheckpointError
from sepo.utils.io import atomic_path

from .ema import EMA

__all__ = ["capture_rng_state", "restore_rng_state", "save_train_state", "load_train_state"]

TRAIN_FORMAT = "sepo-train-state"
TRAIN_FORMAT_VERSION = 1


def capture_rng_state() -> dict:
    """State of Python's ``random``, NumPy's global generator, torch's CPU generator and (when CUDA is
    available) every CUDA generator, as plain containers and tensors."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`. CUDA states are restored when CUDA is available."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:  # a different number of GPUs: restore what matches
            for i, s in enumerate(cuda[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, device=i)


def save_train_state(
    path: str | os.PathLike,
    *,
    optimizer: torch.optim.Optimizer,
    step: int,
    scheduler: Any = None,
    rng_state: dict | None = None,
    ema: EMA | None = None,
    extra: dict | None = None,
) -> Path:
    """Atomically write everything but the weights needed to continue training bit for bit.

    Args:
        path: the file (e.g. ``<run>/train_state.pt``).
        optimizer: its ``state_dict()`` is stored.
        step: number of optimiser steps taken.
        scheduler: an LR scheduler (anything with ``state_dict``), optional.
        rng_state: from :func:`capture_rng_state`; captured now when omitted.
        ema: an :class:`EMA`, optional.
        extra: free-form plain data (data-loader position, best metric, ...).
    """
    payload = {
        "format": TRAIN_FORMAT,
        "format_version": TRAIN_FORMAT_VERSION,
        "step": int(step),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state if rng_state is not None else capture_rng_state(),
        "ema": ema.state_dict() if ema is not None else None,
        "extra": extra or {},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_train_state(
    path: str | os.PathLike,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    ema: EMA | None = None,
    restore_rng: bool = True,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Read a file from :func:`save_train_state` and load it into the given objects.

    Returns the payload (``step``, ``extra``, ``rng``, ...). Raises :class:`CheckpointError` when the
    file is missing, corrupt, of another format, or does not fit the optimiser / scheduler / EMA.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state '{path}' not found; resume from a run folder that holds it, or start a new run")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"training state '{path}' is unreadable ({first[:200]}); it is corrupt: start a new run or restore the file") from None
    if not isinstance(payload, dict) or payload.get("format") != TRAIN_FORMAT:
        raise CheckpointError(f"'{path}' is not a sepo training state; pass the train_state file written by `sepo pretrain`")
    if payload.get("format_version", 0) > TRAIN_FORMAT_VERSION:
        raise CheckpointError(f"training state '{path}' was written by a newer sepo (format version {payload['format_version']}); upgrade sepo")
    parts = [("optimizer", optimizer), ("scheduler", scheduler), ("ema", ema)]
    for name, target in parts:
        if target is None:
            continue
        if payload.get(name) is None:
            raise CheckpointError(f"training state '{path}' has no {name} state; resume with the same training setup it was saved with")
        try:
            target.load_state_dict(payload[name])
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CheckpointError(
                f"training state '{path}' does not fit the current {name} ({first[:200]}); resume with the same model and settings"
            ) from None
    if restore_rng:
        restore_rng_state(payload["rng"])
    return payload
