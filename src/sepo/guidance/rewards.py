"""Rewards as the guided samplers and reward back-propagation see them.

Two kinds of reward are used:

* an ordinary reward, :class:`sepo.rl.rewards.Reward` (or any batched callable ``tokens [B, L] -> [B]``),
  which need not be differentiable; best-of-N and SMC only need this one;
* a *differentiable* ("soft") reward: a callable ``soft_reward(probs [B, L, V]) -> [B]`` defined on
  per-position distributions over the ``V`` clean tokens, differentiable with respect to ``probs``, and
  equal to the ordinary reward on one-hot inputs. Classifier guidance, TDS and DRAKES need it.

This module provides the adapter for the DNA cell-type oracles (:func:`oracle_soft_reward`), the exact
multilinear extension of a reward table used in exact worlds (:func:`table_soft_reward`), a consistency
check (:func:`check_soft_reward`) and the gradient helper the guided kernels share
(:func:`soft_reward_and_grad`).
"""

from __future__ import annotations

from typing import Callable

import torch

from sepo.errors import ConfigError, RewardError
from sepo.rl.rewards import Reward

__all__ = [
    "SoftReward",
    "as_reward",
    "table_soft_reward",
    "oracle_soft_reward",
    "check_soft_reward",
    "soft_reward_and_grad",
]

SoftReward = Callable[[torch.Tensor], torch.Tensor]
"""``probs [B, L, V]`` (rows on the simplex) -> ``[B]``, differentiable in ``probs``."""


def as_reward(reward, *, name: str = "reward") -> Reward:
    """Wrap a plain callable as a validated :class:`~sepo.rl.rewards.Reward` (a ``Reward`` is returned as is)."""
    if isinstance(reward, Reward):
        return reward
    if not callable(reward):
        raise ConfigError(f"the reward must be a callable tokens [B, L] -> [B] or a sepo Reward, got {type(reward).__name__}")
    return Reward(getattr(reward, "__name__", name), reward)


def table_soft_reward(table: torch.Tensor, vocab_size: int, length: int) -> SoftReward:
    """Multilinear extension of a reward table over all ``vocab_size**length`` sequences (exact worlds).

    ``soft_reward(probs) = sum_x table[x] prod_i probs[i, x_i]``: the expected table value when every
    position is drawn independently from its row of ``probs``; on one-hot rows it is ``table[x]``.
    Table order is that of :func:`sepo.tasks.toy.exact.enumerate_states` (first position most significant).
    """
    table = torch.as_tensor(table, dtype=torch.float64)
    if table.numel() != vocab_size**length:
        raise ConfigError(f"a reward table over {vocab_size}^{length} sequences needs {vocab_size**length} entries, got {table.numel()}")

    def soft_reward(probs: torch.Tensor) -> torch.Tensor:
        if probs.dim() != 3 or probs.shape[1:] != (length, vocab_size):
            raise RewardError(f"table soft reward expects probs [B, {length}, {vocab_size}], got {tuple(probs.shape)}")
        t = table.to(probs.device, probs.dtype).reshape(1, -1).expand(probs.shape[0], -1)
        for i in range(length):  # contract the most significant position first
            t = torch.einsum("bvr,bv->br", t.reshape(probs.shape[0], vocab_size, -1), probs[:, i, :])
        return t.reshape(-1)

    return soft_reward


def oracle_soft_reward(oracle) -> SoftReward:
    """Differentiable HepG2 activity of a DNA cell-type oracle (:mod:`sepo.tasks.dna.oracle`).

    ``probs [B, L, 4]`` over ACGT -> ``logit_HepG2 - logsumexp(other logits)`` computed from the oracle's
    ``log_probs`` on the soft one-hot input, so it equals ``oracle.activity(tokens)`` on one-hot inputs.
    The oracle is put in eval mode and its parameters are frozen: a reward is not trained.
    """
    if not hasattr(oracle, "log_probs"):
        raise ConfigError(f"oracle_soft_reward needs an oracle with a log_probs(soft_onehot) method, got {type(oracle).__name__}")
    try:  # the oracle module is optional for this package: import lazily
        from sepo.tasks.dna.oracle import HEPG2, hepg2_log_odds
    except ImportError:  # pragma: no cover - only without the DNA task module
        HEPG2 = 0

        def hepg2_log_odds(lp):
            others = torch.cat([lp[:, :HEPG2], lp[:, HEPG2 + 1 :]], dim=1)
            return lp[:, HEPG2] - torch.logsumexp(others, dim=1)

    if isinstance(oracle, torch.nn.Module):
        oracle.eval().requires_grad_(False)

    def soft_reward(probs: torch.Tensor) -> torch.Tensor:
        return hepg2_log_odds(oracle.log_probs(probs)).to(probs.device)

    soft_reward.__name__ = "oracle_activity"
    return soft_reward


def check_soft_reward(soft_reward: SoftReward, reward, tokens: torch.Tensor, vocab_size: int, *, atol: float = 1e-4) -> None:
    """Raise :class:`RewardError` unless ``soft_reward(onehot(tokens)) == reward(tokens)`` (within ``atol``)."""
    reward = as_reward(reward)
    hard = reward(tokens).to(torch.float64)
    soft = soft_reward(torch.nn.functional.one_hot(tokens, vocab_size).float()).detach().to("cpu", torch.float64)
    if soft.shape != hard.shape or not torch.allclose(soft, hard, atol=atol, rtol=1e-4):
        worst = float((soft - hard).abs().max()) if soft.shape == hard.shape else float("nan")
        raise RewardError(f"the differentiable reward disagrees with reward {reward.name!r} on one-hot inputs "
                          f"(max difference {worst:.3g}); pass a soft reward that extends the same reward")


def soft_reward_and_grad(soft_reward: SoftReward, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(value [B], d value / d probs [B, L, V])`` at ``probs`` (no graph is kept)."""
    with torch.enable_grad():
        p = probs.detach().float().requires_grad_(True)
        value = soft_reward(p)
        if value.shape != (probs.shape[0],):
            raise RewardError(f"the differentiable reward returned shape {tuple(value.shape)} for a batch of {probs.shape[0]}; "
                              "it must return one float per sample")
        (grad,) = torch.autograd.grad(value.sum(), p)
    if not (torch.isfinite(value).all() and torch.isfinite(grad).all()):
        raise RewardError("the differentiable reward returned a non-finite value or gradient; check its inputs (rows of probabilities)")
    return value.detach(), grad
