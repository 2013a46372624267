"""Pretraining and evaluation of diffusion models on real data (task registry, trainer, NELBO)."""

from .evaluate import nelbo_per_sequence, stratified_times, summarize_nelbo
from .pretrain import PretrainConfig, TrainingError, build_pretrain_model, pretrain, resolve_config, run_status
from .tasks import TASK_LOCATIONS, TaskSpec, get_task, register_task, task_for_model, task_names

__all__ = [
    "PretrainConfig", "TASK_LOCATIONS", "TaskSpec", "TrainingError", "build_pretrain_model", "get_task",
    "nelbo_per_sequence", "pretrain", "register_task", "resolve_config", "run_status", "stratified_times",
    "summarize_nelbo", "task_for_model", "task_names",
]
