"""The clipped policy-gradient loss ``ℓ_A`` (PPO, Schulman et al. 2017), per sequence or per unit.

Units are what an estimator scores (positions for ``sepo``, steps for ``trajectory``, Monte-Carlo draws
for ``elbo``). With ``ρ = exp(logp - old_logp)`` and advantage ``A``, every variant has gradient
``A Σ_u w_u ∇ logp_u`` (up to the normalisation below) at ``θ = θ_old``:

* ``sequence`` (default): one ratio per sample, ``ρ = exp(Σ_u w_u (logp_u - old_u))``, clipped per sample
  — the standard PPO rule (the reference code's single ``min`` over batch sums is not; METHOD.md §5.7);
* ``grpo``: one ratio per unit, clipped per unit, averaged over the sample's units (GRPO's length
  normalisation, Shao et al. 2024);
* ``dr_grpo``: per-unit ratios summed and divided by a constant (the sequence length), which removes the
  length normalisation (Liu et al. 2025, Dr. GRPO).

``dual_clip = c`` bounds the objective of a negative advantage below by ``c A`` (dual-clip PPO, Ye et al.
2020, "Mastering complex control in MOBA games with deep RL"): without it a unit whose ratio has run away
(``ρ`` of 1e18 is what whole-sequence ELBO draws produce after one Adam step) contributes ``ρ A`` to the loss
and an unbounded gradient; with it such units contribute a constant. At ``θ = θ_old`` (``ρ = 1 < c``) the
gradient is unchanged.
"""

from __future__ import annotations

import torch

__all__ = ["clipped_policy_loss", "LOSS_TYPES"]

LOSS_TYPES = ("sequence", "grpo", "dr_grpo")


def _ppo(ratio: torch.Tensor, adv: torch.Tensor, epsilon: float,
         dual_clip: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - epsilon, 1.0 + epsilon) * adv
    obj = torch.minimum(unclipped, clipped)
    was_clipped = clipped < unclipped
    if dual_clip is not None:
        floor = dual_clip * adv  # a lower bound of the objective, applied to negative advantages only
        low = (adv < 0) & (obj < floor)
        obj = torch.where(low, floor.expand_as(obj), obj)
        was_clipped = was_clipped | low
    return obj, was_clipped.float()


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    weight: torch.Tensor,
    advantages: torch.Tensor,
    *,
    epsilon: float,
    loss_type: str = "sequence",
    norm_constant: float = 1.0,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, dict]:
    """``logp, old_logp, weight [n, U]``, ``advantages [n]`` -> (scalar loss, stats).

    ``norm_constant`` is Dr. GRPO's constant divisor (the trainer passes the sequence length).
    ``dual_clip``: ``c > 1`` bounds the objective of negative advantages at ``c A`` (``None``: off).
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None), got {dual_clip}")
    adv = advantages.to(logp.dtype)
    valid = weight > 0
    delta = torch.where(valid, logp - old_logp, torch.zeros_like(logp))
    if loss_type == "sequence":
        log_ratio = (weight * delta).sum(-1)
        ratio = log_ratio.exp()
        obj, clipped = _ppo(ratio, adv, epsilon, dual_clip)
        loss = -obj.mean()
        ratios, clip_frac = ratio.detach(), clipped.mean()
    elif loss_type in ("grpo", "dr_grpo"):
        ratio = delta.exp()
        obj, clipped = _ppo(ratio, adv[:, None], epsilon, dual_clip)
        obj = obj * weight
        if loss_type == "grpo":
            per_sample = obj.sum(-1) / valid.sum(-1).clamp_min(1)
        else:
            per_sample = obj.sum(-1) / norm_constant
        loss = -per_sample.mean()
        ratios = ratio.detach()[valid]
        clip_frac = (clipped * valid).sum() / valid.sum().clamp_min(1)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
    if ratios.numel() == 0:
        ratios = torch.ones(1)
    stats = {
        "clip_frac": float(clip_frac),
        "ratio_mean": float(ratios.mean()),
        "ratio_min": float(ratios.min()),
        "ratio_max": float(ratios.max()),
    }
    return loss, stats
