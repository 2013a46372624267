"""``sepo bench dna``: DNA enhancer design, every method, several seeds (BENCHMARKS.md "DNA enhancer design").

The paper's §4.2 protocol (Zekri & Boullé 2025, Table 2; DRAKES, Wang et al. 2025) on the offline DHS
data: one pretrained masked DNA diffusion model, a fine-tuning oracle A (the reward) and an evaluation
oracle B (never seen by any method) on disjoint chromosomes. For each seed, every method produces
``num_samples`` sequences with the same number of sampling steps ``T``; the evaluator
(:class:`sepo.demo.DnaEvaluator`) scores them with the paper's metrics.

Methods (:data:`METHODS`):

* sampling-time: ``pretrained``, ``best_of_n``, ``cg``, ``smc``, ``tds`` (:func:`sepo.guidance.generate`;
  the guided ones target ``π_ref · exp(r / α)`` with the reward of oracle A);
* reward back-propagation: ``drakes_nokl`` (β = 0) and ``drakes`` (:class:`sepo.baselines.DrakesTrainer`);
* policy gradient (:func:`sepo.rl.recipes.run_finetune`, the same code as ``sepo finetune``): ``sepo``,
  ``sepo_gf`` (gradient flow: one corrector step per sampling step, in the rollouts and the final
  samples), and the other estimators ``sepo_snis`` (the paper's SNIS estimator), ``trajectory``, ``elbo``.

Fine-tuning methods get the same reward budget: ``max_steps`` iterations of ``G·B`` sequences (DRAKES:
the same number of iterations and batch size, each a differentiable reward call). Every run records the
train-oracle reward and the evaluation-oracle Pred-Activity of each iteration's batch
(:class:`sepo.demo.RolloutMonitor`) against iteration, wall-clock and CPU seconds.

Output (``--out``): ``results.json`` (config, seeds, machine, versions, assets, per method the mean, std
and per-seed values of every metric and cost), ``results.md``, PNGs (``reward_vs_iteration``,
``reward_vs_wallclock``, ``pred_activity_vs_iteration``, ``pred_activity_vs_wallclock``, ``metric_bars``)
and ``runs/<method>/seed<k>/`` (``result.json``, ``samples.fasta``; fine-tuning logs, state and model).
A rerun reuses every finished ``(method, seed)`` and the cached model and oracles (``--cache``).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sepo.errors import ConfigError

from . import register

__all__ = ["DNA_BENCH_PRESETS", "DnaBenchConfig", "METHODS", "MethodSpec", "TABLE_METRICS", "aggregate", "bench_config",
           "results_markdown", "run_dna_bench"]


@dataclass(frozen=True)
class MethodSpec:
    """A benchmarked method: ``label`` (table row), ``kind`` (``sampling``, ``drakes`` or ``finetune``) and
    its fixed settings (guidance options, DrakesConfig or FinetuneConfig fields)."""

    label: str
    kind: str
    settings: dict = field(default_factory=dict)


METHODS: dict[str, MethodSpec] = {
    "pretrained": MethodSpec("Pretrained", "sampling"),
    "best_of_n": MethodSpec("Best-of-N", "sampling"),
    "cg": MethodSpec("CG", "sampling"),
    "smc": MethodSpec("SMC", "sampling"),
    "tds": MethodSpec("TDS", "sampling"),
    "drakes_nokl": MethodSpec("DRAKES w/o KL", "drakes", {"beta": 0.0}),
    "drakes": MethodSpec("DRAKES", "drakes"),
    "sepo": MethodSpec("SEPO", "finetune", {"estimator": "sepo"}),
    "sepo_gf": MethodSpec("SEPO + gradient flow", "finetune", {"estimator": "sepo", "corrector_steps": 1}),
    "sepo_snis": MethodSpec("SEPO, SNIS estimator (paper)", "finetune", {"estimator": "sepo-snis"}),
    "trajectory": MethodSpec("trajectory estimator", "finetune", {"estimator": "trajectory"}),
    "elbo": MethodSpec("ELBO estimator", "finetune", {"estimator": "elbo"}),
}

#: Table columns in the paper's order, then diversity: (key, header, scale).
TABLE_METRICS = (
    ("pred_activity", "Pred-Activity ↑", 1.0),
    ("celltype_acc", "Cell-type acc % ↑", 100.0),
    ("kmer3_corr", "3-mer corr ↑", 1.0),
    ("motif_corr", "Motif corr ↑", 1.0),
    ("app_log_lik", "App-Log-Lik ↑", 1.0),
    ("diversity_hamming", "Hamming div.", 1.0),
    ("unique_frac", "Unique %", 100.0),
    ("gc_frac", "GC %", 100.0),
)
COST_KEYS = ("reward_calls", "soft_reward_calls", "network_passes", "train_network_passes", "sample_network_passes",
             "wall_s", "train_wall_s", "sample_wall_s", "cpu_s")

#: The paper's Table (DRAKES baselines; METHOD.md §4), for orientation only: other data, other oracles.
PAPER_TABLE = {
    "Pretrained": (0.17, 1.5, -0.061, 0.249, -261), "CG": (3.30, 0.0, -0.065, 0.212, -266),
    "SMC": (4.15, 39.9, 0.840, None, -259), "TDS": (4.64, 45.3, 0.848, None, -257),
    "CFG": (5.04, 92.1, 0.746, 0.864, -265), "DRAKES w/o KL": (6.44, 82.5, 0.307, 0.557, -281),
    "DRAKES": (5.61, 92.5, 0.887, 0.911, -264), "SEPO": (7.64, 99.9, None, None, None),
}


@dataclass
class DnaBenchConfig:
    """Settings of ``sepo bench dna`` (a preset, then ``--config`` YAML, then ``--set FIELD=VALUE``).

    Attributes:
        methods: methods to run, keys of :data:`METHODS`, in table order.
        num_samples: sequences each method generates per seed (the paper: 640).
        sampling_steps: predictor steps ``T`` of every method's sampler (rollouts and final samples).
        sampler: sampler of every method (``ancestral``).
        sample_batch_size: sequences drawn at once when sampling for evaluation (bounds memory).
        finetune_preset: ``FINETUNE_PRESETS["dna"]`` preset of the policy-gradient methods.
        finetune: FinetuneConfig fields over that preset, shared by every policy-gradient method.
        drakes: DrakesConfig fields shared by both DRAKES rows (batch size, iterations, steps and truncation
            default to the policy-gradient methods' batch, ``max_steps``, ``T`` and ``kl_truncation_steps``).
        alpha: temperature of the guided samplers' target ``π_ref exp(r / α)`` (CG uses ``γ = 1 / α``).
        method_settings: per-method settings over :data:`METHODS` (guidance options, DrakesConfig or
            FinetuneConfig fields), e.g. ``{best_of_n: {num_candidates: 4}, trajectory: {trajectory_steps: 8}}``.
        pretrain_preset / pretrain: pretraining preset of the DNA task and PretrainConfig overrides.
        oracle_preset / oracle: oracle preset and OracleConfig overrides; ``oracle_seed`` seeds both oracles.
        reference_size: held-out top-HepG2 sites the 3-mer / motif correlations compare against.
        elbo_step_samples: ELBO terms per sequence for App-Log-Lik (unbiased subsample; ``None``: all ``T+1``).
        snis_cost_samples: when ``sepo_snis`` is not run, its per-iteration cost is measured on this many
            samples and extrapolated (linearly in network passes) to the batch (reported as excluded).
        snis_cost_neighbours: Hamming neighbours per sample in that measurement (``None``: all ``L (|V|-1)``);
            the exact pass count of the full estimator is used for the extrapolation either way.
        device: ``cpu``, ``cuda`` or ``auto``.
    """

    methods: list = field(default_factory=lambda: list(METHODS))
    num_samples: int = 640
    sampling_steps: int = 128
    sampler: str = "ancestral"
    sample_batch_size: int | None = 256
    finetune_preset: str = "paper"
    finetune: dict = field(default_factory=dict)
    drakes: dict = field(default_factory=dict)
    alpha: float = 0.5
    method_settings: dict = field(default_factory=dict)
    pretrain_preset: str = "full"
    pretrain: dict = field(default_factory=dict)
    oracle_preset: str = "full"
    oracle: dict = field(default_factory=dict)
    oracle_seed: int = 0
    reference_size: int = 640
    elbo_step_samples: int | None = 16
    snis_cost_samples: int = 1
    snis_cost_neighbours: int | None = None
    device: str = "auto"

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"bench dna: unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
        if not self.methods:
            raise ConfigError("bench dna: methods is empty; name at least one of " + ", ".join(METHODS))
        for name in ("num_samples", "sampling_steps", "reference_size", "snis_cost_samples"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"bench dna: {name} must be >= 1, got {getattr(self, name)}")
        if not self.alpha > 0:
            raise ConfigError(f"bench dna: alpha must be > 0, got {self.alpha}")
        bad = [k for k in self.method_settings if k not in METHODS]
        if bad:
            raise ConfigError(f"bench dna: method_settings names unknown method {bad[0]!r}")


DNA_BENCH_PRESETS: dict[str, dict] = {
    # 2 CPU cores: the demo's model, oracles and SEPO settings; fewer samples and steps than the paper,
    # sepo-snis excluded for cost (its per-iteration cost is measured and reported instead)
    "tiny": dict(
        methods=[m for m in METHODS if m != "sepo_snis"], num_samples=256, sampling_steps=32, finetune_preset="tiny",
        pretrain_preset="tiny", oracle_preset="tiny", reference_size=640, elbo_step_samples=8, device="cpu",
        method_settings={"best_of_n": {"num_candidates": 4}, "smc": {"num_particles": 4}, "tds": {"num_particles": 4},
                         "trajectory": {"trajectory_steps": 8}},
    ),
    # a GPU: the paper's setting (batch 8, 8 groups, K = 2, M = 4, beta = 0.05, lr 1e-4, epsilon 0.2, 128 steps,
    # one corrector step per sampling step for SEPO + gradient flow, truncation 10), 640 samples per seed
    "paper": dict(
        methods=list(METHODS), num_samples=640, sampling_steps=128, finetune_preset="paper", pretrain_preset="full",
        oracle_preset="full", reference_size=640, elbo_step_samples=16, device="auto",
        finetune={"corrector_steps": 0},  # the gradient-flow corrector only in the SEPO + gradient flow row
        drakes={"learning_rate": 1e-4, "beta": 0.05},
        method_settings={"best_of_n": {"num_candidates": 8}, "smc": {"num_particles": 8}, "tds": {"num_particles": 8}},
    ),
}


def bench_config(preset: str, *, yaml_data: dict | None = None, overrides: dict | None = None) -> DnaBenchConfig:
    """A preset, then a YAML mapping, then ``--set`` overrides (dotted keys reach nested maps); validated."""
    from sepo.utils.config import from_dict, merge_overrides

    if preset not in DNA_BENCH_PRESETS:
        raise ConfigError(f"unknown bench dna preset {preset!r}; choose one of {', '.join(DNA_BENCH_PRESETS)}")
    data = copy.deepcopy(DNA_BENCH_PRESETS[preset])
    data = merge_overrides(data, yaml_data or {})
    data = merge_overrides(data, overrides or {})
    return from_dict(DnaBenchConfig, data, where=f"bench dna preset {preset!r}")


# --------------------------------------------------------------------------------------------------
# one (method, seed)


def _settings(cfg: DnaBenchConfig, method: str) -> dict:
    return {**METHODS[method].settings, **(cfg.method_settings.get(method) or {})}


def _finetune_config(cfg: DnaBenchConfig, method: str, seed: int, device: str):
    from sepo.rl.recipes import finetune_config

    overrides = {**cfg.finetune, **_settings(cfg, method), "sampling_steps": cfg.sampling_steps, "sampler": cfg.sampler,
                 "seed": seed, "device": device}
    return finetune_config("dna", cfg.finetune_preset, overrides=overrides)


def _drakes_config(cfg: DnaBenchConfig, method: str, seed: int, device: str):
    from sepo.baselines.drakes import DrakesConfig
    from sepo.utils.config import from_dict

    ft = _finetune_config(cfg, "sepo", seed, device)  # equal budget: the policy-gradient methods' batch and iterations
    data = {"batch_size": ft.batch_size, "max_steps": ft.max_steps, "sampling_steps": cfg.sampling_steps,
            "truncation_steps": ft.kl_truncation_steps or cfg.sampling_steps, "learning_rate": ft.learning_rate,
            "beta": ft.beta, "save_every": ft.save_every, "sampler": cfg.sampler,
            **cfg.drakes, **_settings(cfg, method), "seed": seed, "device": device}
    return from_dict(DrakesConfig, data, where=f"bench dna {method}")


def _sampler(cfg: DnaBenchConfig, corrector_steps: int = 0):
    from sepo.diffusion.sampling import SamplerConfig

    return SamplerConfig(name=cfg.sampler, steps=cfg.sampling_steps, corrector_steps=corrector_steps)


def _curve(run_dir: Path) -> list[dict]:
    from sepo.utils.logging import read_jsonl

    path = run_dir / "metrics.jsonl"
    recs = read_jsonl(path) if path.is_file() else []
    keep = ("reward_mean", "pred_activity", "celltype_acc", "wall_s", "cpu_s", "kl", "network_passes")
    return [{"iteration": r["step"], **{k: r[k] for k in keep if k in r}} for r in recs]


def _run_sampling(method: str, *, cfg, ctx, seed: int) -> tuple[torch.Tensor, dict]:
    from sepo.guidance import generate

    options = _settings(cfg, method)
    if method == "cg":
        options.setdefault("guidance_scale", 1.0 / cfg.alpha)
    if method in ("smc", "tds"):
        options.setdefault("alpha", cfg.alpha)
    gen = torch.Generator(device="cpu").manual_seed(_sample_seed(seed))
    t0, c0 = time.perf_counter(), time.process_time()
    tokens, info = generate(method, ctx.pretrained, n=cfg.num_samples, length=ctx.length, reward=ctx.reward,
                            soft_reward=ctx.soft_reward, sampler=_sampler(cfg), generator=gen,
                            batch_size=cfg.sample_batch_size, **options)
    cost = {"reward_calls": int(info.get("reward_calls", 0)), "soft_reward_calls": int(info.get("soft_reward_calls", 0)),
            "train_network_passes": 0, "sample_network_passes": int(info["network_passes"]),
            "train_wall_s": 0.0, "sample_wall_s": round(time.perf_counter() - t0, 3),
            "cpu_s": round(time.process_time() - c0, 3)}
    return tokens, {"cost": cost, "settings": info.get("options", {}), "curve": []}


def _sample_seed(seed: int) -> int:
    return 10_000 + int(seed)  # the same draws for every method of a seed, distinct from the training seeds


def _sample_finetuned(policy, *, cfg, seed: int, corrector_steps: int) -> tuple[torch.Tensor, dict, float]:
    from sepo.demo import sample_tokens

    t0 = time.perf_counter()
    tokens, info = sample_tokens(policy, n=cfg.num_samples, sampler=_sampler(cfg, corrector_steps), seed=_sample_seed(seed),
                                 batch_size=cfg.sample_batch_size)
    return tokens, info, time.perf_counter() - t0


def _run_finetune(method: str, *, cfg, ctx, seed: int, run_dir: Path) -> tuple[torch.Tensor, dict]:
    from sepo.demo import RolloutMonitor, resume_offsets
    from sepo.models import load_model
    from sepo.rl.recipes import run_finetune
    from sepo.utils.config import save_yaml, to_dict

    ft = _finetune_config(cfg, method, seed, ctx.device)
    done = (run_dir / "metrics.json").is_file() and (run_dir / "model" / "config.json").is_file()
    resume = not done and (run_dir / "state" / "trainer.pt").is_file()
    c0 = time.process_time()
    if not done:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(run_dir / "finetune_config.yaml", ft)
        wall0, cpu0 = resume_offsets(run_dir) if resume else (0.0, 0.0)
        monitor = RolloutMonitor(ctx.eval_oracle, wall_offset=wall0, cpu_offset=cpu0)
        run_finetune("dna", ft, out=run_dir, base=ctx.model_dir, reward=monitor.wrap_reward(ctx.reward),
                     progress=ctx.progress, resume=resume, evaluate=monitor.evaluate)
    curve = _curve(run_dir)
    policy, _ = load_model(run_dir / "model", device=ctx.device, use_ema=True)
    tokens, info, sample_wall = _sample_finetuned(policy, cfg=cfg, seed=seed, corrector_steps=ft.corrector_steps)
    train_passes = int(sum(r.get("network_passes", 0) for r in curve))
    cost = {"reward_calls": ft.max_steps * ft.batch_size, "soft_reward_calls": 0, "train_network_passes": train_passes,
            "sample_network_passes": int(info["network_passes"]), "train_wall_s": curve[-1]["wall_s"] if curve else None,
            "sample_wall_s": round(sample_wall, 3),
            "cpu_s": round((curve[-1].get("cpu_s", 0.0) if curve else 0.0) + time.process_time() - c0, 3)}
    return tokens, {"cost": cost, "settings": to_dict(ft), "curve": curve}


def _run_drakes(method: str, *, cfg, ctx, seed: int, run_dir: Path) -> tuple[torch.Tensor, dict]:
    from dataclasses import asdict

    from sepo.baselines.drakes import DrakesTrainer
    from sepo.demo import RolloutMonitor, resume_offsets
    from sepo.models import load_model, save_model

    dcfg = _drakes_config(cfg, method, seed, ctx.device)
    done = (run_dir / "model" / "config.json").is_file()
    c0 = time.process_time()
    if not done:
        resume = (run_dir / "state" / "trainer.pt").is_file()
        wall0, cpu0 = resume_offsets(run_dir) if resume else (0.0, 0.0)
        monitor = RolloutMonitor(ctx.eval_oracle, wall_offset=wall0, cpu_offset=cpu0)
        policy, info = load_model(ctx.model_dir, device=ctx.device, use_ema=True)
        trainer = DrakesTrainer(policy, soft_reward=monitor.wrap_soft_reward(ctx.soft_reward), config=dcfg, length=ctx.length,
                                out_dir=run_dir, evaluate=monitor.evaluate, base_identity={"path": str(ctx.model_dir)},
                                progress=ctx.progress, resume=resume)
        trainer.train()
        save_model(run_dir / "model", trainer.policy, vocab=info.get("vocab"),
                   provenance={"finetuned_from": str(ctx.model_dir), "method": method, "iterations": trainer.iteration})
    curve = _curve(run_dir)
    policy, _ = load_model(run_dir / "model", device=ctx.device, use_ema=True)
    tokens, info, sample_wall = _sample_finetuned(policy, cfg=cfg, seed=seed, corrector_steps=0)
    cost = {"reward_calls": 0, "soft_reward_calls": dcfg.max_steps * dcfg.batch_size,
            "train_network_passes": int(sum(r.get("network_passes", 0) for r in curve)),
            "sample_network_passes": int(info["network_passes"]), "train_wall_s": curve[-1]["wall_s"] if curve else None,
            "sample_wall_s": round(sample_wall, 3),
            "cpu_s": round((curve[-1].get("cpu_s", 0.0) if curve else 0.0) + time.process_time() - c0, 3)}
    return tokens, {"cost": cost, "settings": asdict(dcfg), "curve": curve}


def _divergence(run_dir: Path) -> int | None:
    """First iteration whose loss or gradient norm was not finite and corrupted the weights, or ``None``.

    Runs that record ``skipped_updates`` come from trainers that skip such updates (the weights stay finite);
    only older runs without the guard can have diverged."""
    from sepo.utils.logging import read_jsonl

    path = run_dir / "metrics.jsonl"
    for rec in read_jsonl(path) if path.is_file() else []:  # json writes NaN / Infinity and reads them back as floats
        if "skipped_updates" in rec:
            continue
        if any(isinstance(rec.get(k), float) and not math.isfinite(rec[k]) for k in ("loss", "grad_norm")):
            return int(rec["step"])
    return None


def _skipped_updates(run_dir: Path) -> int:
    """Optimizer updates the trainer skipped for a NaN/inf loss or gradient (weights left as they were)."""
    from sepo.utils.logging import read_jsonl

    path = run_dir / "metrics.jsonl"
    return int(sum(rec.get("skipped_updates", 0) for rec in (read_jsonl(path) if path.is_file() else [])))


def _run_key(cfg: DnaBenchConfig, method: str) -> dict:
    """The settings a ``(method, seed)`` result depends on (a change invalidates the saved run)."""
    from sepo.utils.config import to_dict

    data = to_dict(cfg)
    for name in ("methods", "device", "snis_cost_samples", "snis_cost_neighbours", "pretrain", "pretrain_preset", "oracle", "oracle_preset", "oracle_seed"):
        data.pop(name)  # assets are identified by their weights (the context key); these do not change a run
    data["method_settings"] = _settings(cfg, method)
    kind = METHODS[method].kind
    if kind in ("finetune", "drakes"):  # the resolved settings, so a change of a preset's values invalidates the run too
        from dataclasses import asdict

        resolved = (to_dict(_finetune_config(cfg, method, 0, "cpu")) if kind == "finetune"
                    else asdict(_drakes_config(cfg, method, 0, "cpu")))
        data["resolved"] = {k: v for k, v in resolved.items() if k not in ("seed", "device")}
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def run_method(method: str, seed: int, *, cfg: DnaBenchConfig, ctx, out: Path) -> dict:
    """Run one ``(method, seed)`` (or reuse its ``result.json``) and return its result."""
    from sepo.tasks.dna.data import decode, write_fasta
    from sepo.utils.io import write_json

    run_dir = out / "runs" / method / f"seed{seed}"
    path = run_dir / "result.json"
    key = {**ctx.key, "config": _run_key(cfg, method)}
    key_path = run_dir / "key.json"
    if key_path.is_file():
        try:
            saved_key = json.loads(key_path.read_text())
        except json.JSONDecodeError:
            saved_key = None
        if saved_key != key:  # other assets or settings: this run (and any state to resume) is stale
            shutil.rmtree(run_dir)
        elif path.is_file():
            try:
                saved = json.loads(path.read_text())
                saved["diverged_at"] = _divergence(run_dir)  # recomputed: the rule may be newer than the run
                saved["skipped_updates"] = _skipped_updates(run_dir)
                if "gc_frac" not in saved["metrics"] and (run_dir / "samples.fasta").is_file():
                    from sepo.demo import gc_fraction
                    from sepo.tasks.dna.data import encode, read_sequences

                    saved["metrics"]["gc_frac"] = gc_fraction(encode(read_sequences(run_dir / "samples.fasta")[1]))
                return saved
            except json.JSONDecodeError:
                pass
    elif run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(key_path, key)
    kind = METHODS[method].kind
    runner = {"sampling": lambda: _run_sampling(method, cfg=cfg, ctx=ctx, seed=seed),
              "finetune": lambda: _run_finetune(method, cfg=cfg, ctx=ctx, seed=seed, run_dir=run_dir),
              "drakes": lambda: _run_drakes(method, cfg=cfg, ctx=ctx, seed=seed, run_dir=run_dir)}[kind]
    tokens, rec = runner()
    write_fasta(run_dir / "samples.fasta", decode(tokens), names=[f"{method}_seed{seed}_{i}" for i in range(len(tokens))])
    t0 = time.perf_counter()
    metrics = ctx.evaluator(tokens, seed=_sample_seed(seed))
    cost = rec["cost"]
    cost["network_passes"] = cost["train_network_passes"] + cost["sample_network_passes"]
    cost["wall_s"] = round((cost["train_wall_s"] or 0.0) + cost["sample_wall_s"], 3)
    result = {"method": method, "label": METHODS[method].label, "kind": kind, "seed": seed, "key": key,
              "metrics": metrics, "cost": cost, "eval_wall_s": round(time.perf_counter() - t0, 3),
              "settings": rec["settings"], "curve": rec["curve"], "diverged_at": _divergence(run_dir),
              "skipped_updates": _skipped_updates(run_dir)}
    write_json(path, result)
    return result


# --------------------------------------------------------------------------------------------------
# sepo-snis cost when it is excluded


def measure_snis_cost(*, cfg: DnaBenchConfig, ctx) -> dict:
    """Per-iteration cost of ``sepo_snis`` at the benchmark's batch: its estimator measured on
    ``snis_cost_samples`` samples (``snis_cost_neighbours`` Hamming neighbours, ``M`` ELBO draws each) and
    extrapolated linearly in passes to the exact count of the full estimator
    (one evaluation of every candidate without gradient and one per epoch with it)."""
    from sepo.bench.iteration import reference_counts, time_snis_fraction
    from sepo.rl.rollout import collect_rollouts

    ft = _finetune_config(cfg, "sepo_snis", 0, ctx.device)
    k = int(cfg.snis_cost_samples)
    gen = torch.Generator(device="cpu").manual_seed(0)
    rollout = collect_rollouts(ctx.pretrained, sampler=ft.sampler_config(), num_groups=1, group_size=k, length=ctx.length,
                               generator=gen)
    neighbours = cfg.snis_cost_neighbours if cfg.snis_cost_neighbours is not None else ft.snis_neighbours
    frac = time_snis_fraction(ctx.pretrained, rollout, snis_samples=ft.num_snis_samples, neighbours=neighbours,
                              num_samples=k, epsilon=ft.epsilon, seed=0, device=ctx.device)
    ref = reference_counts(num_samples=ft.batch_size, length=ctx.length, vocab_size=ctx.pretrained.vocab_size,
                           snis_samples=ft.num_snis_samples, epochs=ft.num_iterations)
    # sepo's sepo-snis: the old policy's candidate likelihoods once per iteration (no gradient), then one
    # evaluation with gradient per epoch; every candidate is x or one of its L (|V| - 1) neighbours
    per_eval = ft.batch_size * ref["passes_per_sample_per_evaluation"]
    counts = {"candidates_per_sample": ref["candidates_per_sample"], "no_grad_passes": per_eval,
              "grad_passes": ft.num_iterations * per_eval}
    est_seconds = counts["no_grad_passes"] * frac["seconds_per_no_grad_pass"] + counts["grad_passes"] * frac["seconds_per_grad_pass"]
    return {"measured_on_samples": k, "batch": ft.batch_size, "epochs": ft.num_iterations, "snis_samples": ft.num_snis_samples,
            "estimator_passes_per_iteration": counts["no_grad_passes"] + counts["grad_passes"],
            "estimator_seconds_per_iteration": round(est_seconds, 2), "fraction": frac, "counts": counts}


# --------------------------------------------------------------------------------------------------
# aggregation, tables, plots


def _stats(values: list) -> dict:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"mean": None, "std": None, "per_seed": list(values)}
    arr = np.asarray(vals, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0, "per_seed": list(values)}


def aggregate(results: dict[str, list[dict]]) -> dict:
    """``method -> [per-seed results]`` -> ``method -> {label, kind, seeds, metrics: {key: {mean, std,
    per_seed}}, cost: {...}, curves}`` (std over seeds with ``ddof = 1``)."""
    from sepo.tasks.dna.metrics import METRIC_KEYS

    out = {}
    for method, runs in results.items():
        if not runs:
            continue
        out[method] = {
            "label": runs[0]["label"], "kind": runs[0]["kind"], "seeds": [r["seed"] for r in runs],
            "metrics": {k: _stats([r["metrics"].get(k) for r in runs]) for k in METRIC_KEYS + ("gc_frac",)},
            "cost": {k: _stats([r["cost"].get(k) for r in runs]) for k in COST_KEYS},
            "settings": runs[0]["settings"],
            "diverged": {r["seed"]: r["diverged_at"] for r in runs if r.get("diverged_at") is not None},
            "skipped_updates": {r["seed"]: r["skipped_updates"] for r in runs if r.get("skipped_updates")},
        }
    return out


def _ms(stat: dict, scale: float = 1.0, digits: int = 2) -> str:
    if stat is None or stat.get("mean") is None:
        return "–"
    return f"{scale * stat['mean']:.{digits}f} ({scale * stat['std']:.{digits}f})"


def _num(v) -> str:
    if v is None:
        return "–"
    if abs(v) < 100 and v != int(v):
        return f"{v:.1f}"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f} M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.0f} k"
    return f"{v:,.0f}"


def results_markdown(result: dict) -> str:
    """The human-readable report (``results.md``) of a ``results.json`` document."""
    cfg, machine, methods = result["config"], result["machine"], result["methods"]
    load = machine.get("load_average")
    lines = [f"# DNA enhancer design benchmark (preset `{result['preset']}`)", "",
             f"Seeds {', '.join(map(str, result['seeds']))}; {cfg['num_samples']} sequences per method and seed; "
             f"every method samples with {cfg['sampling_steps']} `{cfg['sampler']}` steps. Mean (std over seeds, ddof 1). "
             "Pred-Activity = median HepG2 log-odds under the evaluation oracle B (never used by any method); cell-type "
             "acc = fraction with p(HepG2) > 0.5 under oracle B (the ATAC-Acc analogue); 3-mer / motif corr = Pearson / "
             "Spearman correlation with the top held-out chr1 HepG2 sites (motifs: JASPAR2024 CORE vertebrates); "
             f"App-Log-Lik = median ELBO (nats) under the pretrained model ({cfg['elbo_step_samples'] or 'all'} ELBO terms "
             "per sequence); Hamming div. = mean pairwise Hamming distance (of 200); GC % = G+C content, the composition "
             "check.", ""]
    head = ["Method"] + [h for _, h, _ in TABLE_METRICS]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods.values():
        digits = {"pred_activity": 2, "app_log_lik": 1, "diversity_hamming": 1, "celltype_acc": 1, "unique_frac": 1,
                  "gc_frac": 1}
        label = m["label"] + (" †" if m.get("diverged") else "")
        row = [label] + [_ms(m["metrics"][k], s, digits.get(k, 3)) for k, _, s in TABLE_METRICS]
        lines.append("| " + " | ".join(row) + " |")
    ref = result.get("reference_row")
    if ref:
        lines += ["", f"For orientation, the {ref['n']} reference sites themselves (real top held-out HepG2 DHS sites): "
                  f"Pred-Activity {ref['pred_activity']:.2f} (IQR {ref['pred_activity_iqr']:.2f}), cell-type acc "
                  f"{100 * ref['celltype_acc']:.1f} %, GC {100 * ref['gc_frac']:.1f} %."]
    diverged = {m["label"]: m["diverged"] for m in methods.values() if m.get("diverged")}
    if diverged:
        lines += ["", "† Diverged (a non-finite loss or gradient corrupted the weights; the row reports what the corrupt "
                  "model samples): " + "; ".join(f"{label}: " + ", ".join(f"seed {s} at iteration {it}" for s, it in d.items())
                                                 for label, d in diverged.items()) + "."]
    skipped = {m["label"]: m["skipped_updates"] for m in methods.values() if m.get("skipped_updates")}
    if skipped:
        lines += ["", "Updates skipped for a NaN/inf loss or gradient (the weights stay as they were; "
                  "`skipped_updates` in each run's metrics.jsonl): " + "; ".join(
                      f"{label}: " + ", ".join(f"{n} in seed {s}" for s, n in d.items()) for label, d in skipped.items()) + "."]
    lines += ["", "## Budgets (per seed)", "",
              "Reward calls = train-oracle (A) evaluations of whole sequences; soft-reward calls = differentiable "
              "evaluations with a gradient (CG, TDS, DRAKES). Network passes = sequence-forwards of the diffusion "
              "network (fine-tuning + sampling the final sequences). Wall-clock and CPU seconds on a shared machine "
              "(see below).", ""]
    head = ["Method", "reward calls", "soft-reward calls", "passes (train)", "passes (sampling)", "wall s (train)",
            "wall s (sampling)", "CPU s (total)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods.values():
        c = m["cost"]
        lines.append("| " + " | ".join([m["label"], _num(c["reward_calls"]["mean"]), _num(c["soft_reward_calls"]["mean"]),
                                        _num(c["train_network_passes"]["mean"]), _num(c["sample_network_passes"]["mean"]),
                                        _num(c["train_wall_s"]["mean"]), _num(c["sample_wall_s"]["mean"]),
                                        _num(c["cpu_s"]["mean"])]) + " |")
    for name, ex in result.get("excluded", {}).items():
        lines += ["", f"**{name} excluded:** {ex['reason']}"]
    lines += ["", "## Settings", ""]
    for m in methods.values():
        s = m["settings"]
        if m["kind"] == "finetune":
            desc = (f"estimator `{s['estimator']}`, {s['max_steps']} iterations x {s['num_groups']}x{s['num_generations']} "
                    f"samples, K = {s['num_iterations']}, lr {s['learning_rate']:g}, beta {s['beta']:g}, epsilon {s['epsilon']:g}, "
                    f"loss `{s['loss_type']}`, KL over the last {s['kl_truncation_steps']} steps, corrector steps "
                    f"{s['corrector_steps']}, sepo_positions {s['sepo_positions']}, trajectory_steps {s['trajectory_steps']}, "
                    f"elbo_samples {s['elbo_samples']}")
        elif m["kind"] == "drakes":
            desc = (f"{s['max_steps']} iterations x {s['batch_size']} samples, lr {s['learning_rate']:g}, beta {s['beta']:g}, "
                    f"Gumbel temperature {s['gumbel_temperature']:g}, truncation {s['truncation_steps']}")
        else:
            desc = ", ".join(f"{k} {v}" for k, v in s.items()) or "the model's sampler"
        lines.append(f"- **{m['label']}**: {desc}.")
    a = result.get("assets", {})
    if a:
        o = a.get("oracles", {})
        def auc(split):
            v = (o.get(split) or {}).get("test_auroc_hepg2")
            return "n/a" if v is None else f"{v:.3f}"

        lines += ["", "## Assets", "",
                  f"Pretrained model `{a.get('model')}`; oracle A (reward) `{a.get('oracle_a')}`, HepG2-vs-rest AUROC on "
                  f"held-out chr1 {auc('A')}; oracle B (evaluation) `{a.get('oracle_b')}`, AUROC {auc('B')}; disjoint "
                  "training chromosomes."]
    lines += ["", "## Paper (for orientation: Gosai MPRA data and Enformer oracles, not comparable in absolute terms)", "",
              "| Method | Pred-Activity | ATAC-Acc % | 3-mer corr | JASPAR corr | App-Log-Lik |", "|---|---|---|---|---|---|"]
    for label, vals in PAPER_TABLE.items():
        lines.append("| " + " | ".join([label] + ["–" if v is None else f"{v}" for v in vals]) + " |")
    lines += ["", "## Machine", "",
              f"{machine['cpu']}, {machine['cpu_cores_usable']} usable cores, {machine['torch_threads']} torch threads, "
              f"torch {machine['torch']}, device `{machine['device']}`"
              + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
              + (f"; load average at start {load[0]:.1f} (1 min)" if load else "")
              + (f", at end {result['load_average_end'][0]:.1f}" if result.get("load_average_end") else "")
              + f". Total wall-clock {result.get('seconds', 0):.0f} s.", ""]
    return "\n".join(lines)


def _plot_curves(out: Path, methods: dict, results: dict) -> list[str]:
    from sepo.utils.logging import plot_curves

    written = []
    tuned = {m: runs for m, runs in results.items() if runs and METHODS[m].kind != "sampling" and any(r["curve"] for r in runs)}
    for key, ylabel in (("reward_mean", "train-oracle (A) reward"), ("pred_activity", "eval-oracle (B) Pred-Activity")):
        for xkey, xlabel in (("iteration", "iteration"), ("wall_s", "wall-clock (s)")):
            series, bands = {}, {}
            for m, runs in tuned.items():
                n = min(len(r["curve"]) for r in runs)
                if n == 0:
                    continue
                ys = np.array([[c.get(key, np.nan) for c in r["curve"][:n]] for r in runs], dtype=np.float64)
                xs = np.array([[c.get(xkey, np.nan) for c in r["curve"][:n]] for r in runs], dtype=np.float64)
                label = METHODS[m].label
                series[label] = (np.nanmean(xs, 0).tolist(), np.nanmean(ys, 0).tolist())
                if ys.shape[0] > 1:
                    sd = np.nanstd(ys, 0, ddof=1)
                    bands[label] = ((np.nanmean(ys, 0) - sd).tolist(), (np.nanmean(ys, 0) + sd).tolist())
            if not series:
                continue
            name = f"{'reward' if key == 'reward_mean' else 'pred_activity'}_vs_{'iteration' if xkey == 'iteration' else 'wallclock'}.png"
            plot_curves(out / name, series, xlabel=xlabel + (" (mean over seeds)" if xkey != "iteration" else ""),
                        ylabel=ylabel, title=f"{ylabel} of each batch (mean ± std over seeds)", bands=bands)
            written.append(name)
    return written


def _plot_bars(out: Path, methods: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sepo.utils.logging import save_figure

    labels = [m["label"] for m in methods.values()]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7), dpi=110)
    for ax, (key, header, scale) in zip(axes.flat, TABLE_METRICS):
        means = [scale * (m["metrics"][key]["mean"] if m["metrics"][key]["mean"] is not None else np.nan) for m in methods.values()]
        stds = [scale * (m["metrics"][key]["std"] or 0.0) for m in methods.values()]
        ax.bar(range(len(labels)), means, yerr=stds, capsize=3, color=[f"C{i % 10}" for i in range(len(labels))])
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(header.replace(" ↑", ""), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("DNA benchmark: mean ± std over seeds")
    fig.tight_layout()
    save_figure(fig, out / "metric_bars.png")
    return "metric_bars.png"


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class _Context:
    model_dir: Path
    pretrained: object
    eval_oracle: object
    reward: object
    soft_reward: object
    evaluator: object
    device: str
    length: int
    progress: bool
    key: dict


def run_dna_bench(cfg: DnaBenchConfig, *, out: str | Path, seeds: list[int], preset: str = "custom",
                  cache: str | Path | None = None, model: str | Path | None = None, oracle_a=None, oracle_b=None,
                  reference: torch.Tensor | None = None, progress: bool = True, say=print, table=None) -> dict:
    """Run the benchmark into ``out`` and return the ``results.json`` document.

    Assets: the pretrained model, oracle A and oracle B come from ``model`` / ``oracle_a`` / ``oracle_b``
    when given, else from ``cache`` (default ``<out>/assets``: ``pretrained/``, ``oracle-A/``, ``oracle-B/``,
    the layout of ``sepo demo``'s folder), trained there when absent. ``oracle_a`` / ``oracle_b`` may be
    directories written by ``sepo oracle`` or oracle objects (anything with ``activity(tokens) -> [B]``,
    ``celltype_prob(tokens) -> [B]`` and a differentiable ``log_probs(onehot [B, L, 4]) -> [B, 4]``, e.g. a
    model trained on the Gosai MPRA table; see docs/dna.md). ``reference`` replaces the top held-out HepG2
    sites as the 3-mer / motif reference set. ``table`` replaces the packaged DHS table for the oracles and
    the reference set (tests).
    """
    from sepo.bench.measure import machine_info
    from sepo.demo import (DnaEvaluator, check_oracle_roles, ensure_oracle, ensure_pretrained, oracle_summary,
                           versions, _oracle_weights_sha)
    from sepo.guidance import oracle_soft_reward
    from sepo.models import load_model
    from sepo.rl.rewards import Reward
    from sepo.rl.trainer import weights_fingerprint
    from sepo.train.pretrain import resolve_device
    from sepo.utils.config import save_yaml, to_dict
    from sepo.utils.io import write_json, write_text

    if not seeds:
        raise ConfigError("bench dna: give at least one seed (--seeds N)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = str(resolve_device(cfg.device))
    cache = Path(cache) if cache is not None else out / "assets"
    machine = machine_info(device)
    t_all = time.perf_counter()
    save_yaml(out / "bench_config.yaml", cfg)

    def say_(text):
        if say is not None:
            say(text)

    # assets
    model_dir = Path(model) if model else cache / "pretrained"
    if not model:
        t0 = time.perf_counter()
        say_(f"[assets] pretrained model -> {model_dir} ...")
        st = ensure_pretrained(model_dir, preset=cfg.pretrain_preset, overrides=cfg.pretrain, device=device, progress=progress)
        say_(f"[assets] pretrained model: {st} in {time.perf_counter() - t0:.0f} s")
    pretrained, info = load_model(model_dir, device=device, use_ema=True)
    if (info.get("vocab") or {}).get("alphabet") != "ACGT":
        raise ConfigError(f"{model_dir} is not a DNA model; pass one trained with `sepo pretrain --task dna`")
    given = {"A": oracle_a, "B": oracle_b}
    oracle_dirs, oracles, oracle_ids = {}, {}, {}
    for split in "AB":
        spec = given[split]
        if spec is not None and not isinstance(spec, (str, Path)):  # an oracle object (Python API)
            oracles[split], oracle_dirs[split] = spec, f"<{type(spec).__name__} object>"
            oracle_ids[split] = weights_fingerprint(spec)[:16] if isinstance(spec, torch.nn.Module) else f"object:{id(spec)}"
            continue
        path = Path(spec) if spec else cache / f"oracle-{split}"
        t0 = time.perf_counter()
        say_(f"[assets] oracle {split} -> {path} ...")
        oracles[split], st = ensure_oracle(path, split, preset=cfg.oracle_preset, overrides=cfg.oracle, seed=cfg.oracle_seed,
                                           device=device, table=table, progress=progress)
        oracle_dirs[split], oracle_ids[split] = path, _oracle_weights_sha(path)
        auc = oracle_summary(oracles[split])["test_auroc_hepg2"]
        say_(f"[assets] oracle {split}: {st} in {time.perf_counter() - t0:.0f} s (held-out AUROC "
             + ("n/a" if auc is None else f"{auc:.3f}") + ")")
    check_oracle_roles(oracles["A"], oracles["B"])
    oracle_a_model = oracles["A"]

    def activity(tokens):
        return oracle_a_model.activity(tokens)

    reward = Reward(f"oracle-A activity ({oracle_dirs['A']})", activity, batch_size=1024)
    evaluator = DnaEvaluator(eval_oracle=oracles["B"], pretrained=pretrained, reference=reference,
                             reference_size=cfg.reference_size, elbo_steps=cfg.sampling_steps,
                             elbo_step_samples=cfg.elbo_step_samples, table=table)
    key = {"model": weights_fingerprint(pretrained)[:16], "oracle_a": oracle_ids["A"], "oracle_b": oracle_ids["B"],
           "reference": None if reference is None else hashlib.sha256(reference.cpu().numpy().tobytes()).hexdigest()[:16],
           "num_samples": cfg.num_samples,
           "sampling_steps": cfg.sampling_steps, "reference_size": cfg.reference_size,
           "elbo_step_samples": cfg.elbo_step_samples}
    ctx = _Context(model_dir=model_dir, pretrained=pretrained, eval_oracle=oracles["B"], reward=reward,
                   soft_reward=oracle_soft_reward(oracles["A"]), evaluator=evaluator, device=device,
                   length=pretrained.config.length, progress=progress, key=key)

    reference_row = evaluator.reference_row()
    results: dict[str, list[dict]] = {m: [] for m in cfg.methods}
    excluded: dict[str, dict] = {}
    document: dict = {}

    def write_all(final: bool = False) -> None:
        methods = aggregate(results)
        document.clear()
        document.update({
            "benchmark": "dna", "preset": preset, "seeds": list(seeds), "config": to_dict(cfg), "machine": machine,
            "versions": versions(), "assets": {"model": str(model_dir), "oracle_a": str(oracle_dirs["A"]),
                                               "oracle_b": str(oracle_dirs["B"]),
                                               "oracles": {s: oracle_summary(o) for s, o in oracles.items()}},
            "methods": methods, "excluded": excluded, "complete": final, "reference_row": reference_row,
            "seconds": round(time.perf_counter() - t_all, 1),
            "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "curves": {m: [{"seed": r["seed"], "curve": r["curve"]} for r in runs] for m, runs in results.items()
                       if runs and METHODS[m].kind != "sampling"},
        })
        write_json(out / "results.json", document)
        write_text(out / "results.md", results_markdown(document))
        if final and methods:
            plots = _plot_curves(out, methods, results) + [_plot_bars(out, methods)]
            document["plots"] = plots
            write_json(out / "results.json", document)

    total = len(seeds) * len(cfg.methods)
    k = 0
    for seed in seeds:  # seeds outermost: every method's first seed is done before any second seed
        for method in cfg.methods:
            k += 1
            t0 = time.perf_counter()
            say_(f"[{k}/{total}] {METHODS[method].label} (seed {seed}) ...")
            res = run_method(method, seed, cfg=cfg, ctx=ctx, out=out)
            results[method].append(res)
            say_(f"[{k}/{total}] {METHODS[method].label} (seed {seed}): Pred-Activity {res['metrics']['pred_activity']:.2f}, "
                 f"cell-type acc {100 * res['metrics']['celltype_acc']:.1f} %, unique {100 * res['metrics']['unique_frac']:.0f} % "
                 f"in {time.perf_counter() - t0:.0f} s")
            write_all()
    if "sepo_snis" not in cfg.methods:
        say_("[cost] measuring one sepo-snis iteration (excluded from the run) ...")
        snis = measure_snis_cost(cfg=cfg, ctx=ctx)
        sepo_iter = None
        if results.get("sepo"):
            per = [r["cost"]["train_wall_s"] / max(len(r["curve"]), 1) for r in results["sepo"] if r["cost"]["train_wall_s"]]
            sepo_iter = float(np.mean(per)) if per else None
        snis["sepo_seconds_per_iteration"] = None if sepo_iter is None else round(sepo_iter, 2)
        ratio = f", {snis['estimator_seconds_per_iteration'] / sepo_iter:.0f}x a whole `sepo` iteration ({sepo_iter:.1f} s)" if sepo_iter else ""
        snis["reason"] = (f"too expensive for this preset: its estimator alone needs "
                          f"{snis['estimator_passes_per_iteration']:,} network passes per iteration (every one of the "
                          f"{snis['counts']['candidates_per_sample'] - 1} Hamming neighbours of each of {snis['batch']} samples, "
                          f"M = {snis['snis_samples']} ELBO draws each, evaluated once without gradient and in each of {snis['epochs']} "
                          "epochs with gradient), "
                          f"measured at {snis['estimator_seconds_per_iteration']:.0f} s per iteration on this machine{ratio}; "
                          "the `paper` preset runs it")
        excluded["sepo_snis"] = snis
    write_all(final=True)
    say_(f"done in {time.perf_counter() - t_all:.0f} s: {out / 'results.md'}")
    return document


# --------------------------------------------------------------------------------------------------
# command line


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", choices=list(DNA_BENCH_PRESETS),
                   help="tiny (2 CPU cores, about 45 minutes with pretraining and oracles) or paper (a GPU)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ..., N-1)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (results.json, results.md, PNGs, runs/)")
    p.add_argument("--cache", metavar="DIR", default=None,
                   help="folder of the pretrained model and oracles (pretrained/, oracle-A/, oracle-B/), trained there when "
                        "absent; a `sepo demo` output folder works (default: OUT/assets)")
    p.add_argument("--model", metavar="DIR", default=None, help="pretrained DNA model directory (default: CACHE/pretrained)")
    p.add_argument("--oracle-a", metavar="DIR", default=None, help="fine-tuning oracle (split A) directory (default: CACHE/oracle-A)")
    p.add_argument("--oracle-b", metavar="DIR", default=None, help="evaluation oracle (split B) directory (default: CACHE/oracle-B)")
    p.add_argument("--methods", default=None, help="comma-separated subset of: " + ", ".join(METHODS) + " (default: the preset's list)")
    p.add_argument("--config", metavar="YAML", default=None, help="YAML file of DnaBenchConfig fields over the preset (default: none)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="set a DnaBenchConfig field (dotted keys reach finetune.*, method_settings.*), repeatable (default: none)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: the preset's)")
    p.add_argument("--num-threads", type=int, default=None, help="CPU threads for PyTorch (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@register(
    "dna",
    help="DNA enhancer design: every method x seeds, the paper's metrics (Pred-Activity, ...)",
    description="""
    The paper's DNA enhancer-design table on the offline DHS data: pretrained, best-of-N, CG, SMC, TDS,
    DRAKES without and with KL, SEPO, SEPO with gradient flow and the other policy-gradient estimators,
    each on every seed, with the same number of sampling steps; the fine-tuning methods get the same
    reward budget. Fine-tuning uses oracle A; every metric uses oracle B (disjoint chromosomes).
    Writes results.json, results.md and PNG plots into --out; reuses finished runs and the cached
    model and oracles on a rerun.""",
    examples="""
    sepo bench dna --preset tiny --seeds 3 --out runs/bench-dna
    sepo bench dna --preset tiny --seeds 3 --out runs/bench-dna --cache runs/demo      # reuse the demo's model and oracles
    sepo bench dna --preset paper --seeds 3 --device cuda --out runs/bench-dna-paper""",
    add_arguments=_add_arguments,
)
def run(args) -> int:
    from sepo.commands import set_threads
    from sepo.commands.demo import parse_sets
    from sepo.utils.config import load_yaml

    overrides = parse_sets(args.set)
    if args.methods:
        overrides["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.device:
        overrides["device"] = args.device
    cfg = bench_config(args.preset, yaml_data=load_yaml(args.config) if args.config else None, overrides=overrides)
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    set_threads(args.num_threads)
    run_dna_bench(cfg, out=args.out, seeds=list(range(args.seeds)), preset=args.preset, cache=args.cache, model=args.model,
                  oracle_a=args.oracle_a, oracle_b=args.oracle_b, progress=not args.no_progress)
    return 0
