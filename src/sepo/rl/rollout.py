"""Rollouts: ``G`` groups of ``B`` samples from the current (old) policy, optionally prompted.

A group is ``B`` samples sharing one prompt (prompted generation: the prompt prefix is fixed and the
rest generated) or, unconditionally, just ``B`` samples whose rewards are standardised together (GRPO).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sepo.diffusion.model import DiffusionModel
from sepo.diffusion.sampling import SamplerConfig, Step, sample

__all__ = ["Rollout", "collect_rollouts"]


@dataclass
class Rollout:
    """One batch of ``N = G * B`` samples (group-major order: sample ``g * B + b``).

    Attributes:
        x: final tokens ``[N, L]``.
        num_groups, group_size: ``G`` and ``B``.
        sampler: the sampler configuration that produced ``x``; ``steps`` its plan.
        trajectory: states before every step and the final state, each ``[N, L]`` (when kept).
        fixed, fixed_tokens: ``[N, L]`` prompt constraint, or ``None``.
        rewards, advantages: ``[N]`` once computed.
        aux: estimator state shared between the old and the new policy (noise draws, SNIS weights).
    """

    x: torch.Tensor
    num_groups: int
    group_size: int
    sampler: SamplerConfig
    steps: list[Step]
    trajectory: list[torch.Tensor] | None = None
    fixed: torch.Tensor | None = None
    fixed_tokens: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    aux: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.x.shape[0]

    def free_positions(self) -> torch.Tensor:
        """``[N, L]`` bool: positions the policy generated (not part of a prompt)."""
        if self.fixed is None:
            return torch.ones_like(self.x, dtype=torch.bool)
        return ~self.fixed


def collect_rollouts(
    model: DiffusionModel,
    *,
    sampler: SamplerConfig,
    num_groups: int,
    group_size: int,
    length: int,
    generator: torch.Generator | None = None,
    prompts: list[torch.Tensor] | None = None,
    keep_trajectory: bool = False,
    batch_size: int | None = None,
) -> Rollout:
    """Draw ``num_groups * group_size`` samples with ``model`` (no gradient).

    ``prompts``: one prefix ``[P_g]`` (long) per group, fixed during sampling; ``None`` for unconditional.
    """
    n = num_groups * group_size
    fixed = fixed_tokens = None
    device = next(model.parameters()).device
    if prompts is not None:
        if len(prompts) != num_groups:
            raise ValueError(f"got {len(prompts)} prompts for {num_groups} groups; pass one prompt per group")
        fixed = torch.zeros(n, length, dtype=torch.bool, device=device)
        fixed_tokens = torch.zeros(n, length, dtype=torch.long, device=device)
        for g, p in enumerate(prompts):
            p = torch.as_tensor(p, dtype=torch.long, device=device)
            if p.numel() >= length:
                raise ValueError(f"prompt {g} has {p.numel()} tokens, which leaves nothing to generate at length {length}")
            fixed[g * group_size : (g + 1) * group_size, : p.numel()] = True
            fixed_tokens[g * group_size : (g + 1) * group_size, : p.numel()] = p
    was_training = model.training
    model.eval()
    out = sample(model, num_samples=n, length=length, config=sampler, generator=generator, fixed=fixed,
                 fixed_tokens=fixed_tokens, keep_trajectory=keep_trajectory, batch_size=batch_size, device=device)
    model.train(was_training)
    return Rollout(out.x, num_groups, group_size, sampler, out.steps, out.trajectory, fixed, fixed_tokens)
