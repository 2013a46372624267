"""Sampling-time baselines that steer a pretrained discrete diffusion model toward a reward.

* :func:`best_of_n_sample` - best of ``N`` samples (:mod:`.best_of_n`);
* :func:`cg_sample` - classifier guidance of the reverse kernels (Nisonoff et al. 2024; :mod:`.cg`);
* :func:`smc_sample`, :func:`tds_sample` - sequential Monte Carlo with look-ahead potentials and the twisted
  diffusion sampler (Wu et al. 2023; :mod:`.smc`);
* :func:`generate` - one entry point for all of them (and plain sampling), returning tokens and a cost
  record (:mod:`.generate`);
* differentiable ("soft") rewards ``probs [B, L, V] -> [B]``: :func:`oracle_soft_reward`,
  :func:`table_soft_reward` (:mod:`.rewards`).
"""

from .best_of_n import best_of_n_law, best_of_n_sample
from .cg import cg_kernel, cg_sample, neighbour_log_ratios
from .common import gradient_log_ratios, twist
from .generate import METHODS, generate, method_options, pretrained_sample
from .rewards import SoftReward, as_reward, check_soft_reward, oracle_soft_reward, soft_reward_and_grad, table_soft_reward
from .smc import effective_sample_size, resample_indices, smc_sample, tds_sample

__all__ = [
    "METHODS", "SoftReward", "as_reward", "best_of_n_law", "best_of_n_sample", "cg_kernel", "cg_sample",
    "check_soft_reward", "effective_sample_size", "generate", "gradient_log_ratios", "method_options",
    "neighbour_log_ratios", "oracle_soft_reward", "pretrained_sample", "resample_indices", "smc_sample",
    "soft_reward_and_grad", "table_soft_reward", "tds_sample", "twist",
]
