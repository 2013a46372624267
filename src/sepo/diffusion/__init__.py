"""Discrete diffusion core: schedules, forward processes, parameterisations, losses, samplers, ELBO."""

from .likelihood import elbo
from .losses import diffusion_loss, mdlm_nelbo, sample_times, score_entropy
from .model import DiffusionModel
from .process import MaskedProcess, Process, UniformProcess, make_process, process_from_config
from .sampling import SamplerConfig, Step, kernel_probs, plan_steps, prefix_constraint, sample, step_log_prob
from .schedules import Cosine, Geometric, LogLinear, Schedule, make_schedule

__all__ = [
    "Cosine", "DiffusionModel", "Geometric", "LogLinear", "MaskedProcess", "Process", "SamplerConfig",
    "Schedule", "Step", "UniformProcess", "diffusion_loss", "elbo", "kernel_probs", "make_process",
    "make_schedule", "mdlm_nelbo", "plan_steps", "prefix_constraint", "process_from_config", "sample",
    "sample_times", "score_entropy", "step_log_prob",
]
