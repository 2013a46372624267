"""Fine-tuning baselines that are not policy gradients.

* :class:`DrakesTrainer` / :class:`DrakesConfig` - DRAKES reward back-propagation through the last
  sampler steps with the straight-through Gumbel-softmax, with (``beta > 0``) or without a KL to the
  pretrained model (Wang et al. 2025; :mod:`.drakes`).

Sampling-time baselines (best-of-N, CG, SMC, TDS) live in :mod:`sepo.guidance`.
"""

from .drakes import DrakesConfig, DrakesTrainer, RelaxedRollout, kernel_kl, relaxed_rollout, straight_through_gumbel

__all__ = ["DrakesConfig", "DrakesTrainer", "RelaxedRollout", "kernel_kl", "relaxed_rollout", "straight_through_gumbel"]
