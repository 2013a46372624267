"""Fine-tuning recipes: a task (toy / dna / text) + a preset -> policy, reward, config, evaluation.

The CLI (``sepo finetune``) and the benchmarks both go through :func:`run_finetune`, so a run from the
command line and a run from a benchmark are the same code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from sepo.errors import ConfigError
from sepo.utils.config import from_dict, merge_overrides
from sepo.utils.io import write_json

from .config import FinetuneConfig
from .rewards import Reward
from .trainer import Trainer

__all__ = ["FINETUNE_PRESETS", "finetune_config", "run_finetune", "ToyRun"]

#: Preset values per task (any FinetuneConfig field; the CLI/YAML override them).
FINETUNE_PRESETS: dict[str, dict[str, dict]] = {
    "toy": {
        # exact world (L=3, V=3, tabular masked denoiser, 48 ancestral steps); full-path KL so that the
        # optimum of the objective is the tilted law π_ref exp(r/β)/Z (see sepo.rl.kl)
        # (measured: trajectory reaches TV 0.029 to the optimum; the exact-gradient floor at 48 steps is 0.019)
        "tiny": dict(max_steps=400, num_groups=8, num_generations=16, num_iterations=2, learning_rate=0.05,
                     lr_scheduler_type="cosine", beta=0.1, kl_truncation_steps=None, kl_in_reward=True,
                     kl_sample_steps=None, scale_rewards=False, max_grad_norm=0.0, sampling_steps=48, save_every=50,
                     log_every=10),
    },
    "dna": {
        # 2 CPU cores, minutes (`sepo demo`, `sepo bench dna --preset tiny`): small batch, 32 sampling steps,
        # 8 scored positions per sample. Per-unit clipping (loss_type="grpo"): with one ratio per sequence the
        # ratio is exp of a sum of 8 position terms weighted by L/8 = 25, which exploded (mean ratio 1e5-1e6,
        # 35-45 % clipped, train reward fell for 7 iterations at lr 3e-3); per-position ratios stay within the
        # clip range. Measured (seed 0, oracle-A reward): eval-oracle median activity of the batches -1.8 ->
        # +1.9 by iteration 13, +2.2 +- 0.2 over iterations 15-40 with beta 0.01; beta 0.05 at the same lr
        # peaked at +1.0 and drifted back (KL 8).
        "tiny": dict(max_steps=30, num_groups=4, num_generations=8, num_iterations=2, learning_rate=3e-3,
                     beta=0.01, kl_truncation_steps=4, kl_sample_steps=None, sampling_steps=32, sepo_positions=8,
                     loss_type="grpo", save_every=5),
        # the paper's DNA setting (a GPU): batch 8, 8 groups, K=2, M=4, beta=0.05, lr 1e-4, eps 0.2,
        # 128 steps, one corrector step per sampling step, truncation 10; per-unit clipping as in "tiny" (the
        # paper's placement of the clip is not recoverable, METHOD.md §2)
        "paper": dict(max_steps=1000, num_groups=8, num_generations=8, num_iterations=2, learning_rate=1e-4,
                      epsilon=0.2, beta=0.05, kl_truncation_steps=10, kl_sample_steps=None, sampling_steps=128,
                      corrector_steps=1, num_snis_samples=4, sepo_positions=16, loss_type="grpo", save_every=50),
    },
    "text": {
        # 2 CPU cores, minutes per run (docs/text.md): 8 prompts x 8 completions, 24 cached ancestral steps, one
        # epoch per batch; sepo scores 8 positions per completion, trajectory 8 steps. Measured: 20 iterations at
        # lr 1e-3 moved the MiniLM judge but not VADER; hence lr 2e-3, 40 its. KL: beta 0.1 on 4 of the last 8
        # steps; at beta 0.02 (2 of 8) the policy collapsed (distinct-2 at a third to a half of the pretrained
        # model's); over the whole path (4 of 25) the policies learned to end completions at min_new_tokens.
        "tiny": dict(max_steps=40, num_groups=8, num_generations=8, num_iterations=1, learning_rate=2e-3,
                     beta=0.1, kl_truncation_steps=8, kl_sample_steps=4, sampler="ancestral_cached",
                     sampling_steps=24, sepo_positions=8, trajectory_steps=8, elbo_samples=4, save_every=10),
    },
}


def finetune_config(task: str, preset: str, *, yaml_data: dict | None = None, overrides: dict | None = None) -> FinetuneConfig:
    """Preset values, then a YAML mapping, then explicit overrides; validated."""
    presets = FINETUNE_PRESETS.get(task)
    if presets is None:
        raise ConfigError(f"unknown task {task!r} for finetune; choose one of {', '.join(FINETUNE_PRESETS)}")
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r} for task {task!r}; choose one of {', '.join(presets)}")
    data = merge_overrides(dict(presets[preset]), yaml_data or {})
    data = merge_overrides(data, overrides or {})
    return from_dict(FinetuneConfig, data, where="finetune config")


@dataclass
class ToyRun:
    """Outcome of a toy run: the exact distances the issue asks for."""

    summary: dict
    history: list = field(default_factory=list)


def _toy(cfg: FinetuneConfig, out: Path | None, *, world_overrides: dict | None = None, progress: bool = True,
         resume: bool = False) -> dict:
    from sepo.tasks.toy.exact import total_variation
    from sepo.tasks.toy.world import ToyWorldConfig, make_toy_world, tilted_optimum

    wcfg = from_dict(ToyWorldConfig, {"sampling_steps": cfg.sampling_steps, "sampler": cfg.sampler, **(world_overrides or {})},
                     where="toy world")
    world = make_toy_world(wcfg)
    if cfg.corrector_steps:
        raise ConfigError("the toy task computes exact laws for predictor-only samplers; set corrector_steps: 0")
    with torch.no_grad():
        pi_ref = world.output_distribution()
    target = tilted_optimum(pi_ref, world.reward_table, cfg.beta) if cfg.beta > 0 else None
    r = world.reward_table.double()

    def evaluate(policy, iteration):
        with torch.no_grad():
            d = world.output_distribution(policy)
        res = {"eval_reward": float((d * r).sum())}
        if target is not None:
            res["tv_to_optimum"] = total_variation(d, target)
        return res

    trainer = Trainer(world.model, reward=world.reward(), config=cfg, length=wcfg.length, out_dir=out, evaluate=evaluate,
                      base_identity={"task": "toy", "world": wcfg.__dict__}, progress=progress, resume=resume)
    t0 = time.time()
    trainer.train()
    final = evaluate(trainer.policy, trainer.iteration)
    summary = {
        "task": "toy",
        "estimator": cfg.estimator,
        "beta": cfg.beta,
        "iterations": trainer.iteration,
        "tv_to_optimum": final.get("tv_to_optimum"),
        "tv_reference_to_optimum": total_variation(pi_ref, target) if target is not None else None,
        "expected_reward": final["eval_reward"],
        "expected_reward_reference": float((pi_ref * r).sum()),
        "expected_reward_optimum": float((target * r).sum()) if target is not None else None,
        "seconds": round(time.time() - t0, 2),
        "world": wcfg.__dict__,
    }
    if out is not None:
        write_json(out / "metrics.json", summary)
    return summary


def run_finetune(task: str, cfg: FinetuneConfig, *, out: str | Path | None, base: str | Path | None = None,
                 reward: Reward | None = None, progress: bool = True, resume: bool = False,
                 world_overrides: dict | None = None, evaluate: Callable | None = None,
                 task_options: dict | None = None) -> dict:
    """Fine-tune on ``task`` and return the run summary (also written to ``<out>/metrics.json``).

    ``task_options``: task-specific settings (text: the fields of :class:`sepo.tasks.text.finetune.TextOptions`)."""
    out = Path(out) if out is not None else None
    if task == "toy":
        return _toy(cfg, out, world_overrides=world_overrides, progress=progress, resume=resume)
    if task == "dna":
        from .dna_recipe import finetune_dna

        return finetune_dna(cfg, out=out, base=base, reward=reward, progress=progress, resume=resume, evaluate=evaluate)
    if task == "text":
        from sepo.tasks.text.finetune import finetune_text, text_options

        return finetune_text(cfg, out=out, base=base, options=text_options(task_options), reward=reward,
                             progress=progress, resume=resume, evaluate=evaluate)
    raise ConfigError(f"finetune task {task!r} is not available; choose toy, dna or text")
