"""Advantages from rewards arranged in groups ``[G, B]`` (``G`` groups of ``B`` samples).

* ``group``: GRPO (Shao et al., 2024) — subtract the group mean, divide by the group std if
  ``scale_rewards``;
* ``batch``: the same with statistics over the whole batch;
* ``leave_one_out``: RLOO (Ahmadian et al., 2024) — subtract the mean of the *other* samples of the
  group, which keeps the estimator unbiased; divided by the group std if ``scale_rewards``;
* ``none``: raw rewards.

Dr. GRPO (Liu et al., 2025) argues the std division biases the update; ``scale_rewards=False`` removes it
(the trainer's ``loss_type="dr_grpo"`` also removes the length normalisation).
"""

from __future__ import annotations

import torch

__all__ = ["compute_advantages", "ADVANTAGES"]

ADVANTAGES = ("group", "batch", "leave_one_out", "none")


def compute_advantages(rewards: torch.Tensor, *, kind: str = "group", scale_rewards: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``rewards [G, B]`` -> advantages ``[G, B]``."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be arranged [groups, samples], got shape {tuple(rewards.shape)}")
    r = rewards.float()
    if kind == "none":
        return r.clone()
    if kind == "group":
        adv = r - r.mean(1, keepdim=True)
        scale = r.std(1, keepdim=True, unbiased=False) if r.shape[1] > 1 else torch.ones_like(r[:, :1])
    elif kind == "batch":
        adv = r - r.mean()
        scale = r.std(unbiased=False) if r.numel() > 1 else torch.ones(())
    elif kind == "leave_one_out":
        b = r.shape[1]
        if b < 2:
            raise ValueError("leave_one_out advantages need at least 2 samples per group")
        adv = r - (r.sum(1, keepdim=True) - r) / (b - 1)
        scale = r.std(1, keepdim=True, unbiased=False)
    else:
        raise ValueError(f"unknown advantage {kind!r}; choose one of {', '.join(ADVANTAGES)}")
    if scale_rewards:
        adv = adv / (scale + eps)
    return adv
