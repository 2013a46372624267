"""KL regularisation toward a frozen reference along the sampler's path (DRAKES, Wang et al. 2025).

By the chain rule of KL, the KL between the fine-tuned and the reference *path* distributions is
``E_{path ~ θ}[Σ_steps KL(p_θ(· | x_t) || p_ref(· | x_t))]``, and each per-step term is available in
closed form from the two models' per-position kernels at the visited state ``x_t``. Summing only the
last ``kl_truncation_steps`` steps is DRAKES's truncation. The path KL upper-bounds the KL between the
two models' output distributions, and maximising ``E[r] - β KL_path`` over path measures has the
output marginal ``π_ref exp(r/β) / Z`` as optimum.

Gradient: ``∇ E_θ[f_θ(path)] = E[∇ f_θ] + E[f_θ ∇ log P_θ(path)]``. The first (direct) part is the
differentiated closed form below; the second is added by subtracting ``β f`` from the reward before the
advantages (``kl_in_reward``), exactly so for the ``trajectory`` estimator.
"""

from __future__ import annotations

import torch

from sepo.diffusion.sampling import kernel_probs

from .rollout import Rollout

__all__ = ["kl_step_indices", "subsample_kl_steps", "reference_kernels", "path_kl"]


def kl_step_indices(num_steps: int, truncation: int | None) -> list[int]:
    """Indices of the plan steps that carry the KL: the last ``truncation`` (``None``: all)."""
    k = num_steps if truncation is None else min(truncation, num_steps)
    return list(range(num_steps - k, num_steps))


def subsample_kl_steps(step_ids: list[int], k: int | None, generator: torch.Generator | None) -> tuple[list[int], float]:
    """``k`` of ``step_ids`` drawn uniformly without replacement, and the factor ``len(step_ids) / k``.

    Each step is kept with probability ``k / len(step_ids)``, so the rescaled sum over the kept steps is an
    unbiased (Horvitz-Thompson) estimate of the sum over all of them, for the KL and for its gradient; it
    costs ``k`` instead of ``len(step_ids)`` network passes per sample and evaluation. ``k=None`` (or
    ``k >= len(step_ids)``) keeps every step, factor 1, and draws nothing from ``generator``.
    """
    if k is None or k >= len(step_ids):
        return list(step_ids), 1.0
    pick = torch.randperm(len(step_ids), generator=generator)[:k].sort().values.tolist()
    return [step_ids[i] for i in pick], len(step_ids) / k


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-position KL ``[.., L]`` between categorical rows ``[.., L, S]``."""
    # log of p.clamp_min: xlogy(p, p)'s gradient in its second argument is p / p = NaN where a computed p is 0
    # (corrector kernels), and 0 * NaN poisons the whole backward pass
    return (torch.special.xlogy(p, p.clamp_min(1e-30)) - torch.special.xlogy(p, q.clamp_min(1e-30))).sum(-1)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p.clamp_min(1e-30)).sum(-1)


@torch.no_grad()
def reference_kernels(ref, rollout: Rollout, step_ids: list[int]) -> list[torch.Tensor]:
    """The reference model's kernels ``[N, L, S]`` at the visited states of each KL step (cached per iteration)."""
    out = []
    for k in step_ids:
        out.append(kernel_probs(ref, rollout.trajectory[k], rollout.steps[k], rollout.sampler, fixed=rollout.fixed))
    return out


def path_kl(policy, rollout: Rollout, idx: torch.Tensor, step_ids: list[int], ref_probs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample truncated path KL ``[n]`` and mean per-position kernel entropy ``[n]`` (with gradient)."""
    n = idx.shape[0]
    kl = torch.zeros(n, device=rollout.x.device)
    ent = torch.zeros(n, device=rollout.x.device)
    fixed = None if rollout.fixed is None else rollout.fixed[idx]
    free = rollout.free_positions()[idx].float()
    for k, q in zip(step_ids, ref_probs):
        p = kernel_probs(policy, rollout.trajectory[k][idx], rollout.steps[k], rollout.sampler, fixed=fixed)
        kl = kl + (_kl(p, q[idx]) * free).sum(-1)
        ent = ent + (_entropy(p) * free).sum(-1) / free.sum(-1).clamp_min(1)
    return kl, ent / max(len(step_ids), 1)
