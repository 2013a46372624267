"""Algorithm 1 (SEPO) as a small loop: rollout -> reward -> advantages -> K epochs of ``ℓ_A`` -> θ_old ← θ.

``θ_old`` is the policy at the start of an iteration: rollouts and the old log-probabilities are
computed from it before any update, so no second copy is kept (checkpoints are written at iteration
boundaries, where ``θ_old = θ``). The reference model for the KL is a frozen copy of the pretrained
weights unless ``ref_sync_every > 0``.

Run state (``<out>/state/``, written atomically): policy weights (safetensors), optimizer, the run's
random generator, iteration counter, reward history, the reference's identity (and weights when it is
synced). ``Trainer(..., resume=True)`` continues bit-for-bit: same parameters as an uninterrupted run.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from sepo.diffusion.model import DiffusionModel
from sepo.errors import CheckpointError, RewardError
from sepo.utils.config import to_dict
from sepo.utils.io import atomic_dir, write_json
from sepo.utils.logging import MetricLogger

from .advantages import compute_advantages
from .config import FinetuneConfig
from .estimators import make_estimator
from .kl import kl_step_indices, path_kl, reference_kernels, subsample_kl_steps
from .loop import guarded_update, read_run_state, start_run, train_loop, weights_fingerprint
from .loss import clipped_policy_loss
from .rewards import Reward
from .rollout import Rollout, collect_rollouts

__all__ = ["Trainer", "weights_fingerprint"]


class Trainer:
    """Fine-tune ``policy`` toward ``reward``.

    Args:
        policy: the model to fine-tune (modified in place).
        reward: a :class:`~sepo.rl.rewards.Reward`.
        config: :class:`~sepo.rl.config.FinetuneConfig`.
        length: sequence length ``L``.
        out_dir: run folder (metrics, plots, state). ``None``: nothing written (library use, tests).
        prompts: ``(generator, num_groups) -> list[LongTensor]`` giving one prompt per group, or ``None``.
        evaluate: optional ``(policy, iteration) -> dict`` of extra metrics, called when logging.
        base_identity: description of the pretrained model (path, fingerprint) stored with the run.
    """

    def __init__(self, policy: DiffusionModel, *, reward: Reward, config: FinetuneConfig, length: int,
                 out_dir: str | Path | None = None, prompts: Callable | None = None, evaluate: Callable | None = None,
                 base_identity: dict | None = None, logger: MetricLogger | None = None, progress: bool = True,
                 resume: bool = False):
        self.cfg = config
        self.policy = policy.to(config.device).eval()  # RL runs without dropout: ratios must be deterministic
        self.reference = copy.deepcopy(self.policy).requires_grad_(False).eval() if config.beta > 0 else None
        self.reward = reward
        self.length = int(length)
        self.prompts = prompts
        self.evaluate = evaluate
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.estimator = make_estimator(config.estimator, **config.estimator_options())
        betas = tuple(config.adam_betas) if config.adam_betas else (0.9, 0.999)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=config.learning_rate, betas=betas,
                                           weight_decay=config.weight_decay)
        start_run(self, seed=config.seed, base_identity=base_identity, logger=logger, progress=progress, resume=resume)

    # ------------------------------------------------------------------ one iteration
    def _passes(self) -> int:
        return self.policy.network_passes + (self.reference.network_passes if self.reference is not None else 0)

    def _rollout(self) -> Rollout:
        prompts = self.prompts(self.generator, self.cfg.num_groups) if self.prompts is not None else None
        keep = self.estimator.needs_trajectory or self.cfg.beta > 0 or self.cfg.entropy_coef > 0
        return collect_rollouts(self.policy, sampler=self.cfg.sampler_config(), num_groups=self.cfg.num_groups,
                                group_size=self.cfg.num_generations, length=self.length, generator=self.generator,
                                prompts=prompts, keep_trajectory=keep, batch_size=self.cfg.rollout_batch_size)

    def step(self) -> dict:
        """Run one iteration of Algorithm 1 and return its metrics."""
        cfg = self.cfg
        gen_state = self.generator.get_state()
        passes0 = self._passes()
        timer: dict[str, float] = {}

        t0 = time.perf_counter()
        rollout = self._rollout()
        timer["rollout"] = time.perf_counter() - t0
        rollout_passes = self._passes() - passes0

        t0 = time.perf_counter()
        try:
            rewards = self.reward(rollout.x.cpu())
        except RewardError:
            self._save_failed(rollout, gen_state)
            raise
        timer["reward"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        kl_ids = kl_step_indices(len(rollout.steps), cfg.kl_truncation_steps) if (cfg.beta > 0 or cfg.entropy_coef > 0) else []
        kl_ids, kl_scale = subsample_kl_steps(kl_ids, cfg.kl_sample_steps, self.generator)
        ref_probs, kl_old = [], torch.zeros(rollout.size)
        if kl_ids:
            ref_model = self.reference if self.reference is not None else self.policy
            ref_probs = reference_kernels(ref_model, rollout, kl_ids)
            with torch.no_grad():
                kl_old, _ = path_kl(self.policy, rollout, torch.arange(rollout.size), kl_ids, ref_probs)
            kl_old = kl_scale * kl_old
        shaped = rewards - cfg.beta * kl_old.cpu() if (cfg.kl_in_reward and cfg.beta > 0) else rewards
        adv = compute_advantages(shaped.view(cfg.num_groups, cfg.num_generations), kind=cfg.advantage,
                                 scale_rewards=cfg.effective_scale_rewards).reshape(-1).to(rollout.x.device)
        rollout.rewards, rollout.advantages = rewards, adv
        if self._on_policy_single_step(rollout.size):
            # one epoch, one minibatch: θ_old is θ at the only update, so the old log-probabilities are the
            # update's own, detached (ratio exactly 1); this skips their no-grad pass (text tiny preset: 2,885 -> 2,373
            # network passes per iteration for sepo)
            self.estimator.draw(self.policy, rollout, self.generator)
            old = None
        else:
            old = self.estimator.prepare(self.policy, rollout, self.generator)
        timer["prepare"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        lr = self.learning_rate(self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        stats = self._update(rollout, old, kl_ids, ref_probs, timer, kl_scale=kl_scale)
        stats["lr"] = lr
        timer["update"] = time.perf_counter() - t0 - timer.get("kl", 0.0)

        self.iteration += 1
        if self.reference is not None and cfg.ref_sync_every and self.iteration % cfg.ref_sync_every == 0:
            self.reference.load_state_dict(self.policy.state_dict())
        passes = self._passes() - passes0
        metrics = {
            "iteration": self.iteration,
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std(unbiased=False)),
            "reward_max": float(rewards.max()),
            "adv_mean": float(adv.mean()),
            "adv_std": float(adv.std(unbiased=False)),
            "kl": float(kl_old.mean()),
            **stats,
            "network_passes": int(passes),
            "rollout_passes": int(rollout_passes),
            **{f"sec_{k}": round(v, 4) for k, v in timer.items()},
        }
        self.history.append(metrics)
        return metrics

    def learning_rate(self, iteration: int) -> float:
        """Learning rate at ``iteration`` (0-based): linear warm-up, then constant / linear / cosine decay."""
        cfg = self.cfg
        if iteration < cfg.warmup_steps:
            return cfg.learning_rate * (iteration + 1) / (cfg.warmup_steps + 1)
        frac = (iteration - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        if cfg.lr_scheduler_type == "linear":
            return cfg.learning_rate * (1.0 - frac)
        if cfg.lr_scheduler_type == "cosine":
            return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * frac))
        return cfg.learning_rate

    def _on_policy_single_step(self, n: int) -> bool:
        return self.cfg.num_iterations == 1 and (self.cfg.minibatch_size or n) >= n

    def _update(self, rollout: Rollout, old, kl_ids, ref_probs, timer, *, kl_scale: float = 1.0) -> dict:
        cfg = self.cfg
        n = rollout.size
        mb = cfg.minibatch_size or n
        agg: dict[str, list[float]] = {}
        timer["kl"] = 0.0
        applied_n = 0
        steps_total = cfg.num_iterations * math.ceil(n / mb)
        for _ in range(cfg.num_iterations):
            perm = torch.randperm(n, generator=self.generator).to(rollout.x.device)
            for lo in range(0, n, mb):
                idx = perm[lo : lo + mb]
                units = self.estimator.log_probs(self.policy, rollout, idx)
                old_logp = units.logp.detach() if old is None else old.logp[idx]
                loss, st = clipped_policy_loss(units.logp, old_logp, units.weight, rollout.advantages[idx],
                                               epsilon=cfg.epsilon, loss_type=cfg.loss_type, norm_constant=self.length,
                                               dual_clip=cfg.dual_clip)
                if kl_ids:
                    tk = time.perf_counter()
                    kl, ent = path_kl(self.policy, rollout, idx, kl_ids, ref_probs)
                    kl = kl_scale * kl  # unbiased for the full truncated sum when steps are subsampled
                    loss = loss + cfg.beta * kl.mean() - cfg.entropy_coef * ent.mean()
                    st["kl_policy"] = float(kl.detach().mean())
                    st["entropy"] = float(ent.detach().mean())
                    timer["kl"] += time.perf_counter() - tk
                gn, applied = guarded_update(self.optimizer, self.policy.parameters(), loss, max_grad_norm=cfg.max_grad_norm)
                applied_n += applied
                if not applied:  # skipped: its NaN/inf would only poison the averages below
                    continue
                st["grad_norm"] = gn
                st["loss"] = float(loss.detach())
                for k, v in st.items():
                    agg.setdefault(k, []).append(v)
        # over the epochs' applied minibatch steps: extremes stay extremes, everything else is averaged
        out = {k: (min(v) if k.endswith("_min") else max(v) if k.endswith("_max") else sum(v) / len(v)) for k, v in agg.items()}
        out.setdefault("loss", math.nan)
        out.setdefault("grad_norm", math.nan)
        out["applied_updates"], out["skipped_updates"] = applied_n, steps_total - applied_n
        return out

    # ------------------------------------------------------------------ loop
    def train(self) -> list[dict]:
        """Run until ``max_steps`` iterations; log, checkpoint and plot along the way."""
        return train_loop(self, desc=f"finetune ({self.cfg.estimator})", title=f"SEPO fine-tuning ({self.cfg.estimator})")

    # ------------------------------------------------------------------ state
    def state_dict(self, generator_state: torch.Tensor | None = None) -> dict:
        return {
            "format": "sepo-finetune-state",
            "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state() if generator_state is None else generator_state,
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "config": to_dict(self.cfg),
            "reference": {**self.base_identity, "synced": bool(self.cfg.ref_sync_every)},
            "reward": self.reward.name,
        }

    def save(self, *, generator_state: torch.Tensor | None = None) -> Path:
        """Write ``<out>/state`` atomically (policy = θ_old = θ at an iteration boundary)."""
        target = self.out_dir / "state"
        with atomic_dir(target) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.policy.state_dict().items()}, str(tmp / "policy.safetensors"))
            if self.reference is not None and self.cfg.ref_sync_every:
                save_file({k: v.detach().cpu().contiguous() for k, v in self.reference.state_dict().items()}, str(tmp / "reference.safetensors"))
            torch.save(self.state_dict(generator_state), tmp / "trainer.pt")
        write_json(self.out_dir / "state.json", {"iteration": self.iteration, "reference": self.base_identity,
                                                  "estimator": self.cfg.estimator})
        return target

    def _save_failed(self, rollout: Rollout, gen_state: torch.Tensor) -> None:
        """On a reward failure: keep the run state as of this iteration's start, and the offending batch."""
        if self.out_dir is None:
            return
        self.save(generator_state=gen_state)
        torch.save({"tokens": rollout.x.cpu()}, self.out_dir / "failed_batch.pt")

    def _load_state(self) -> None:
        """Load ``<out>/state`` (weights, optimizer, RNG, counters) to continue exactly."""
        path = self.out_dir / "state"
        state, weights = read_run_state(self.out_dir, fmt="sepo-finetune-state", fingerprint=self.base_identity.get("fingerprint"),
                                        what="fine-tuning run")
        if state["config"].get("estimator") != self.cfg.estimator:
            raise CheckpointError(f"the saved run used estimator {state['config'].get('estimator')!r}, not {self.cfg.estimator!r}; "
                                  "resume with the same configuration")
        self.policy.load_state_dict(weights)
        if self.reference is not None and (path / "reference.safetensors").is_file():
            self.reference.load_state_dict(load_file(str(path / "reference.safetensors")))
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.iteration = int(state["iteration"])
        self.history = list(state["history"])
        self.base_identity = dict(state["reference"])
        self.base_identity.pop("synced", None)
