"""Timing one SEPO iteration (Algorithm 1) phase by phase, and the reference-style estimator's cost.

Every measured iteration is a real :meth:`sepo.rl.trainer.Trainer.step` on a fresh copy of the same base
model with the same seed, hence the same rollout batch (its digest is recorded). The trainer is not
modified: its own phase timers (``sec_rollout`` ... ``sec_kl``) are read from the step's metrics, and thin
wrappers around the trainer's rollout, reward and estimator calls label the network passes that a
:class:`~sepo.bench.measure.PassCounter` sees:

========== ================================================================================ =========
phase      what runs                                                                         gradient
========== ================================================================================ =========
rollout    ``G·B`` samples from ``π_θold`` (``T`` predictor steps + the final denoising step) no
reward     the reward on the batch                                                           --
prepare    reference kernels at the KL steps, the old policy's KL (``kl_in_reward``), the    no
           estimator's draws and old log-probabilities
update     ``K`` epochs: the estimator's log-probabilities, the clipped loss, the backward   yes
           pass of loss + KL, the optimizer step (the trainer's ``sec_update``)
kl         the policy's kernels at the KL steps in each epoch (forward only: ``sec_kl``)      yes
========== ================================================================================ =========

The reference-style estimator (every Hamming neighbour, SNIS with ``M`` samples; METHOD.md §2, §6) is
far too expensive to run whole on a CPU; :func:`time_snis_fraction` measures a stated fraction of its
estimator work and :func:`extrapolate_reference` scales it linearly in network passes.
"""

from __future__ import annotations

import copy
import time
import torch

from sepo.diffusion.model import DiffusionModel
from sepo.rl.config import FinetuneConfig
from sepo.rl.estimators import Estimator, SnisEstimator, UnitLogProbs
from sepo.rl.loss import clipped_policy_loss
from sepo.rl.rewards import Reward
from sepo.rl.rollout import Rollout, collect_rollouts
from sepo.rl.trainer import Trainer

from .measure import PassCounter, PeakMemory, Stopwatch, synchronize, tensor_digest

__all__ = ["NoEstimator", "time_iteration", "time_rollout", "time_snis_fraction", "extrapolate_reference",
           "reference_counts", "PHASES"]

PHASES = ("rollout", "reward", "prepare", "update", "kl")


class NoEstimator(Estimator):
    """Contributes no policy-gradient term (and no network pass): isolates rollout + reward + KL + step."""

    name = "none"

    def log_probs(self, model, rollout, idx):
        zeros = torch.zeros(idx.shape[0], 1, device=rollout.x.device)
        return UnitLogProbs(zeros, torch.ones_like(zeros))

    def passes_per_sample(self, rollout):
        return 0.0


def _instrument(trainer: Trainer, counter: PassCounter, watch: Stopwatch, captured: dict) -> None:
    """Label the passes of each phase of ``trainer.step`` (wrappers on the instance, nothing else changes)."""
    rollout_fn, reward_fn = trainer._rollout, trainer.reward
    est = trainer.estimator
    prepare_fn, log_probs_fn = est.prepare, est.log_probs
    marks: dict[str, float] = {}

    def rollout():
        with counter.phase("rollout"):
            out = rollout_fn()
        captured["rollout"] = out
        return out

    def reward(x):
        with counter.phase("reward"):
            r = reward_fn(x)
        counter.current = "prepare_kl"  # next: reference kernels and the old policy's KL
        synchronize(watch.device)
        marks["reward_end"] = time.perf_counter()
        return r

    def prepare(*args, **kwargs):
        synchronize(watch.device)
        watch.seconds["prepare_kl"] += time.perf_counter() - marks.get("reward_end", time.perf_counter())
        with counter.phase("prepare_estimator"), watch("prepare_estimator"):
            out = prepare_fn(*args, **kwargs)
        counter.current = "update_kl"  # from here on: epochs (estimator calls relabelled below)
        return out

    def log_probs(*args, **kwargs):
        if counter.current != "update_kl":  # inside prepare: already labelled
            return log_probs_fn(*args, **kwargs)
        with counter.phase("update_estimator"), watch("update_estimator_forward"):
            return log_probs_fn(*args, **kwargs)

    trainer._rollout, trainer.reward = rollout, reward
    est.prepare, est.log_probs = prepare, log_probs


def _phase_table(metrics: dict, counter: PassCounter, watch: Stopwatch) -> dict:
    passes = counter.by_phase()

    def p(*names):
        return {k: sum(passes.get(n, {}).get(k, 0) for n in names) for k in ("total", "grad", "no_grad")}

    rows = {
        "rollout": (metrics.get("sec_rollout", 0.0), p("rollout")),
        "reward": (metrics.get("sec_reward", 0.0), p("reward")),
        "prepare": (metrics.get("sec_prepare", 0.0), p("prepare_kl", "prepare_estimator")),
        "update": (metrics.get("sec_update", 0.0), p("update_estimator")),
        "kl": (metrics.get("sec_kl", 0.0), p("update_kl")),
    }
    table = {name: {"seconds": round(float(sec), 4), "passes": c["total"], "grad_passes": c["grad"],
                    "source": "measured"} for name, (sec, c) in rows.items()}
    table["prepare"]["detail"] = {
        "kl_seconds": round(watch.seconds.get("prepare_kl", 0.0), 4),
        "kl_passes": p("prepare_kl")["total"],
        "kl_reference_passes": passes.get("prepare_kl", {}).get("reference", 0),
        "estimator_seconds": round(watch.seconds.get("prepare_estimator", 0.0), 4),
        "estimator_passes": p("prepare_estimator")["total"],
    }
    table["update"]["detail"] = {
        "estimator_forward_seconds": round(watch.seconds.get("update_estimator_forward", 0.0), 4),
        "backward_and_step_seconds": round(max(metrics.get("sec_update", 0.0) - watch.seconds.get("update_estimator_forward", 0.0), 0.0), 4),
    }
    return table


def time_iteration(base: DiffusionModel, config: FinetuneConfig, *, reward: Reward, length: int,
                   estimator: Estimator | None = None) -> dict:
    """Run one real trainer iteration on a copy of ``base`` and measure it.

    Args:
        base: the model (not modified; copied for the policy and, with ``beta > 0``, the reference).
        config: the fine-tuning configuration (its ``seed`` fixes the rollout batch).
        reward: the reward.
        length: sequence length ``L``.
        estimator: replaces the configured estimator (e.g. :class:`NoEstimator`).
    Returns:
        ``seconds_per_iteration``, ``network_passes`` (from the models' counters), ``estimator_passes``,
        ``peak_memory_mb`` (+ ``memory_method``), ``phases`` (see module docstring), ``batch_digest``,
        ``metrics`` (the trainer's own), ``rollout`` (the batch, for :func:`time_snis_fraction`).
    """
    device = torch.device(config.device)
    policy = copy.deepcopy(base).to(device)
    trainer = Trainer(policy, reward=reward, config=config, length=length, progress=False)
    if estimator is not None:
        trainer.estimator = estimator
    counter = PassCounter({"policy": trainer.policy, "reference": trainer.reference})
    watch = Stopwatch(device)
    captured: dict = {}
    _instrument(trainer, counter, watch, captured)
    passes0 = trainer._passes()
    try:
        with PeakMemory(device) as mem:
            synchronize(device)
            t0 = time.perf_counter()
            metrics = trainer.step()
            synchronize(device)
            seconds = time.perf_counter() - t0
    finally:
        counter.close()
    passes = trainer._passes() - passes0
    counted = sum(counter.counts.values())
    if counted != passes:  # the hooks and the models' own counters must agree
        raise RuntimeError(f"pass counting disagrees: hooks saw {counted}, the models counted {passes}")
    phases = _phase_table(metrics, counter, watch)
    est_passes = phases["prepare"]["detail"]["estimator_passes"] + phases["update"]["passes"]
    return {
        "seconds_per_iteration": round(seconds, 4),
        "network_passes": int(passes),
        "estimator_passes": int(est_passes),
        "peak_memory_mb": None if mem.peak_mb is None else round(mem.peak_mb, 1),
        "memory_method": mem.method,
        "phases": phases,
        "batch_digest": tensor_digest(captured["rollout"].x),
        "measured": True,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "rollout": captured["rollout"],
    }


def time_rollout(base: DiffusionModel, config: FinetuneConfig, *, length: int) -> dict:
    """The rollout-only lower bound: the same ``G·B`` samples (same seed and sampler), nothing else."""
    device = torch.device(config.device)
    model = copy.deepcopy(base).to(device).eval()
    generator = torch.Generator(device="cpu").manual_seed(config.seed)  # the trainer's generator
    counter = PassCounter({"policy": model})
    try:
        with PeakMemory(device) as mem, counter.phase("rollout"):
            synchronize(device)
            t0 = time.perf_counter()
            out = collect_rollouts(model, sampler=config.sampler_config(), num_groups=config.num_groups,
                                   group_size=config.num_generations, length=length, generator=generator,
                                   batch_size=config.rollout_batch_size)
            synchronize(device)
            seconds = time.perf_counter() - t0
    finally:
        counter.close()
    passes = counter.total()
    return {
        "seconds_per_iteration": round(seconds, 4),
        "network_passes": int(passes),
        "estimator_passes": 0,
        "peak_memory_mb": None if mem.peak_mb is None else round(mem.peak_mb, 1),
        "memory_method": mem.method,
        "phases": {"rollout": {"seconds": round(seconds, 4), "passes": int(passes), "grad_passes": 0, "source": "measured"}},
        "batch_digest": tensor_digest(out.x),
        "measured": True,
    }


def reference_counts(*, num_samples: int, length: int, vocab_size: int, snis_samples: int, epochs: int) -> dict:
    """Exact network passes of the ``sepo-snis`` estimator with every Hamming neighbour (no prompt).

    Per sample and evaluation: ``(1 + L (|V| - 1)) · M`` sequence-forwards (each candidate's ``M``-draw
    ELBO). The reference code evaluates the old policy's SNIS quantities again in every epoch (no
    gradient) next to the current policy's (with gradient): METHOD.md §6. (sepo's own ``sepo-snis``
    evaluates the old policy once per iteration.)
    """
    candidates = 1 + length * (vocab_size - 1)
    per_eval = num_samples * candidates * snis_samples
    return {"candidates_per_sample": candidates, "passes_per_sample_per_evaluation": candidates * snis_samples,
            "no_grad_passes": epochs * per_eval, "grad_passes": epochs * per_eval, "rows_per_forward": per_eval}


def time_snis_fraction(base: DiffusionModel, rollout: Rollout, *, snis_samples: int, neighbours: int | None,
                       num_samples: int, epsilon: float, seed: int, device) -> dict:
    """Measure a fraction of the reference-style estimator's work on the first ``num_samples`` samples.

    Runs the real :class:`~sepo.rl.estimators.SnisEstimator` (``neighbours`` Hamming neighbours per sample,
    ``None`` = all) through ``prepare`` (its draw + old log-probabilities, no gradient) and one epoch
    (log-probabilities with gradient, the clipped loss, backward). Returns the measured seconds and exact
    passes of each part and the seconds per pass, which :func:`extrapolate_reference` scales.
    """
    device = torch.device(device)
    model = copy.deepcopy(base).to(device).eval()
    sub = Rollout(rollout.x[:num_samples].clone(), 1, num_samples, rollout.sampler, rollout.steps)
    adv = rollout.advantages[:num_samples] if rollout.advantages is not None else torch.ones(num_samples, device=device)
    est = SnisEstimator(samples=snis_samples, neighbours=neighbours)
    counter = PassCounter({"policy": model})
    watch = Stopwatch(device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    try:
        with PeakMemory(device) as mem_ng, counter.phase("no_grad"), watch("no_grad"):
            old = est.prepare(model, sub, generator)
        idx = torch.arange(num_samples, device=device)
        with PeakMemory(device) as mem_g, counter.phase("grad"), watch("grad"):
            units = est.log_probs(model, sub, idx)
            loss, _ = clipped_policy_loss(units.logp, old.logp, units.weight, adv.to(device), epsilon=epsilon)
            loss.backward()
    finally:
        counter.close()
    ng, g = counter.total(phase="no_grad"), counter.total(phase="grad")
    cand = int(sub.aux["snis_cand_t"].shape[1])
    return {
        "samples": num_samples,
        "neighbours": cand - 1,
        "snis_samples": snis_samples,
        "passes_per_sample_per_evaluation": cand * snis_samples,
        "no_grad_passes": ng,
        "grad_passes": g,
        "no_grad_seconds": round(watch.seconds["no_grad"], 4),
        "grad_seconds": round(watch.seconds["grad"], 4),
        "seconds_per_no_grad_pass": watch.seconds["no_grad"] / max(ng, 1),
        "seconds_per_grad_pass": watch.seconds["grad"] / max(g, 1),
        "peak_memory_mb_no_grad": None if mem_ng.peak_mb is None else round(mem_ng.peak_mb, 1),
        "peak_memory_mb_grad": None if mem_g.peak_mb is None else round(mem_g.peak_mb, 1),
        "memory_method": mem_g.method,
    }


def extrapolate_reference(shared: dict, fraction: dict, counts: dict) -> dict:
    """The reference-style iteration: ``shared`` (a measured iteration with no estimator: rollout, reward,
    KL, optimizer) plus the SNIS estimator's work extrapolated from ``fraction`` linearly in passes.

    Memory: the shared peak plus the fraction's gradient-pass memory per forwarded row times the rows
    ``sepo-snis`` forwards at once with gradient (the whole batch's candidates: ``counts["rows_per_forward"]``).
    """
    prep = counts["no_grad_passes"] * fraction["seconds_per_no_grad_pass"]
    upd = counts["grad_passes"] * fraction["seconds_per_grad_pass"]
    phases = copy.deepcopy(shared["phases"])
    phases["prepare"]["seconds"] = round(phases["prepare"]["seconds"] + prep, 4)
    phases["prepare"]["passes"] += counts["no_grad_passes"]
    phases["prepare"]["source"] = "measured (KL) + extrapolated (SNIS estimator)"
    phases["prepare"]["detail"]["estimator_seconds"] = round(prep, 4)
    phases["prepare"]["detail"]["estimator_passes"] = counts["no_grad_passes"]
    phases["update"]["seconds"] = round(phases["update"]["seconds"] + upd, 4)
    phases["update"]["passes"] += counts["grad_passes"]
    phases["update"]["grad_passes"] += counts["grad_passes"]
    phases["update"]["source"] = "measured (KL backward, optimizer) + extrapolated (SNIS forward + backward)"
    memory = None
    if fraction.get("peak_memory_mb_grad") is not None and shared.get("peak_memory_mb") is not None:
        rows = fraction["grad_passes"]
        memory = round(shared["peak_memory_mb"] + fraction["peak_memory_mb_grad"] / max(rows, 1) * counts["rows_per_forward"], 1)
    return {
        "seconds_per_iteration": round(shared["seconds_per_iteration"] + prep + upd, 4),
        "network_passes": int(shared["network_passes"] + counts["no_grad_passes"] + counts["grad_passes"]),
        "estimator_passes": int(counts["no_grad_passes"] + counts["grad_passes"]),
        "peak_memory_mb": memory,
        "memory_method": "extrapolated: shared peak + gradient memory per row x rows per forward",
        "phases": phases,
        "batch_digest": shared["batch_digest"],
        "measured": False,
        "provenance": ("network_passes: exact counts (formula checked on the measured fraction). seconds: rollout, reward, "
                       "KL and optimizer measured (entry rollout_kl, same batch and KL settings); the SNIS estimator's "
                       "time extrapolated linearly in passes from the measured fraction (see reference_fraction)."),
        "estimator_seconds_extrapolated": round(prep + upd, 4),
    }
