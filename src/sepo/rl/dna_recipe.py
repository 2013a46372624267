"""Fine-tune a pretrained DNA diffusion model toward a reward (GC content, an oracle's activity, ...)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from sepo.errors import ConfigError
from sepo.utils.io import write_json

from .config import FinetuneConfig
from .rewards import BUILTIN_REWARDS, Reward
from .loop import run_summary
from .trainer import Trainer, weights_fingerprint

__all__ = ["finetune_dna", "dna_reward"]


def dna_reward(spec: str) -> Reward:
    """``gc`` (built in) or ``oracle:DIR`` (HepG2 activity of a trained oracle, ``sepo oracle``)."""
    if spec in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[spec]()
    if spec.startswith("oracle:"):
        from sepo.tasks.dna.oracle import load_oracle

        oracle = load_oracle(spec.partition(":")[2])

        def activity(tokens):
            with torch.no_grad():
                return oracle.activity(tokens)

        return Reward(f"oracle-activity({spec.partition(':')[2]})", activity, batch_size=512)
    raise ConfigError(f"unknown DNA reward {spec!r}; use 'gc' or 'oracle:PATH' (a directory written by `sepo oracle`)")


def finetune_dna(cfg: FinetuneConfig, *, out: Path | None, base: str | Path | None, reward: Reward | None = None,
                 progress: bool = True, resume: bool = False, evaluate: Callable | None = None) -> dict:
    """Load ``base`` (a model directory), fine-tune it with ``cfg`` and save ``<out>/model``."""
    from sepo.models import load_model, save_model

    if base is None:
        raise ConfigError("--base is required for --task dna: pass the directory of a pretrained model (sepo pretrain --out)")
    policy, info = load_model(base, device=cfg.device, use_ema=True)
    vocab = info.get("vocab") or {}
    if vocab.get("alphabet") != "ACGT":
        raise ConfigError(f"{base} is not a DNA model (vocabulary {vocab}); pass a model trained with --task dna")
    reward = reward or BUILTIN_REWARDS["gc"]()
    identity = {"path": str(base), "fingerprint": weights_fingerprint(policy)}
    trainer = Trainer(policy, reward=reward, config=cfg, length=policy.config.length, out_dir=out, evaluate=evaluate,
                      base_identity=identity, progress=progress, resume=resume)
    t0 = time.time()
    history = trainer.train()
    summary = run_summary(trainer, history, task="dna", base=base, seconds=time.time() - t0)
    if out is not None:
        save_model(out / "model", trainer.policy, vocab=vocab,
                   provenance={"finetuned_from": identity, "reward": reward.name, "estimator": cfg.estimator,
                               "iterations": trainer.iteration})
        write_json(out / "metrics.json", summary)
    return summary
