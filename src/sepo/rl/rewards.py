"""Rewards: any batched Python callable on token tensors (or decoded strings) returning floats.

A reward need not be differentiable. :func:`evaluate_reward` calls it and checks the result: an
exception, a wrongly shaped value or a NaN/inf stops the run with :class:`~sepo.errors.RewardError`
naming the reward and the first offending sample (the trainer saves its state first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from sepo.errors import RewardError

__all__ = ["Reward", "evaluate_reward", "gc_content", "table_reward", "BUILTIN_REWARDS"]


@dataclass
class Reward:
    """A named reward. ``fn`` maps ``tokens [B, L] long`` (or, with ``decode``, ``list[str]``) to ``[B]``.

    Attributes:
        name: shown in logs and error messages.
        fn: the batched reward function.
        decode: optional ``tokens -> list[str]``; when given, ``fn`` receives strings.
        batch_size: call ``fn`` on chunks of at most this many samples (``None``: all at once).
    """

    name: str
    fn: Callable
    decode: Callable | None = None
    batch_size: int | None = None

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return evaluate_reward(self, tokens)


def _call_chunk(reward: Reward, tokens: torch.Tensor) -> torch.Tensor:
    arg = reward.decode(tokens) if reward.decode is not None else tokens
    out = reward.fn(arg)
    out = torch.as_tensor(out, dtype=torch.float32).detach().to("cpu")
    if out.shape != (tokens.shape[0],):
        out = out.reshape(-1) if out.numel() == tokens.shape[0] else out
    if out.shape != (tokens.shape[0],):
        raise RewardError(f"reward {reward.name!r} returned shape {tuple(out.shape)} for a batch of {tokens.shape[0]}; it must return one float per sample")
    return out


def evaluate_reward(reward: Reward, tokens: torch.Tensor) -> torch.Tensor:
    """``tokens [B, L]`` -> rewards ``[B]`` float32 on CPU, validated (see module docstring)."""
    chunks = [tokens] if reward.batch_size is None else list(tokens.split(reward.batch_size))
    outs, offset = [], 0
    for chunk in chunks:
        try:
            outs.append(_call_chunk(reward, chunk))
        except RewardError:
            raise
        except Exception as e:  # the user's code failed: name it and the batch
            raise RewardError(f"reward {reward.name!r} raised {type(e).__name__}: {e} (on samples {offset}..{offset + len(chunk) - 1})") from e
        offset += len(chunk)
    out = torch.cat(outs)
    bad = ~torch.isfinite(out)
    if bad.any():
        i = int(bad.nonzero()[0])
        shown = reward.decode(tokens[i : i + 1])[0] if reward.decode is not None else tokens[i].tolist()
        shown = str(shown)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise RewardError(f"reward {reward.name!r} returned {out[i].item()} for sample {i} ({shown}); rewards must be finite")
    return out


def gc_content(tokens: torch.Tensor, *, g: int = 2, c: int = 1) -> torch.Tensor:
    """Fraction of G or C (DNA alphabet ``ACGT``: C = 1, G = 2) per sequence ``[B]``."""
    return ((tokens == g) | (tokens == c)).float().mean(-1)


def table_reward(table: torch.Tensor, vocab_size: int, name: str = "table") -> Reward:
    """Reward looked up in a table over all ``vocab_size**L`` sequences (exact worlds)."""
    from sepo.tasks.toy.exact import state_index

    table = torch.as_tensor(table, dtype=torch.float32)
    return Reward(name, lambda x: table[state_index(x.cpu(), vocab_size)])


BUILTIN_REWARDS = {"gc": lambda: Reward("gc", gc_content)}
