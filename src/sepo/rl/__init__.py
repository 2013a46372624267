"""Policy-gradient fine-tuning of discrete diffusion models (SEPO, Algorithm 1) and its parts."""

from .advantages import compute_advantages
from .config import FinetuneConfig
from .estimators import ESTIMATORS, make_estimator
from .loss import clipped_policy_loss
from .rewards import Reward, evaluate_reward
from .rollout import Rollout, collect_rollouts
from .trainer import Trainer

__all__ = ["ESTIMATORS", "FinetuneConfig", "Reward", "Rollout", "Trainer", "clipped_policy_loss", "collect_rollouts",
           "compute_advantages", "evaluate_reward", "make_estimator"]
