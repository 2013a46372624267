"""``sepo bench speed``: cost of one SEPO iteration per estimator, against the reference-style estimator
and the rollout-only lower bound, plus sampler throughput (BENCHMARKS.md "Speed and memory").

All iterations run in one process on copies of one model with one seed, hence on the same rollout batch
(``batch_digest`` in the JSON). Entries (:data:`ENTRIES`):

* ``rollout_only`` — the ``G·B`` rollouts alone (``G·B·(T+1)`` passes for plain ancestral: ``T``
  predictor steps and the final denoising step): the lower bound of any iteration;
* ``rollout_kl`` — a real iteration with no estimator: rollout + reward + KL term + optimizer step;
* ``reference`` — the reference-style estimator: ``sepo-snis`` over every Hamming neighbour with ``M``
  SNIS samples (METHOD.md §2, §6), partly extrapolated (see :mod:`sepo.bench.iteration`);
* ``sepo`` — the recommended settings: ``sepo_positions`` scored positions per sample and the KL at
  ``kl_sample_steps`` of its truncated steps (both unbiased subsamples);
* ``sepo_positions_only`` — the same positions, every KL step (isolates the KL subsampling);
* ``sepo_cached`` — the recommended settings with ``ancestral_cached`` rollouts (same law, fewer passes;
  compared with the plain-ancestral ``rollout_only`` bound);
* ``sepo_defaults``, ``trajectory``, ``elbo`` — :class:`~sepo.rl.config.FinetuneConfig`'s defaults for
  each estimator (the minibatch is split to fit the gradient-memory budget where needed: same passes).

Targets (issue 5, ``cpu`` preset): ``sepo`` uses >= 100x fewer network passes and >= 50x less wall time
than ``reference``, and takes <= 1.5x ``rollout_only``.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from sepo.errors import ConfigError
from sepo.utils.io import write_json, write_text

from . import register

__all__ = ["SpeedConfig", "SPEED_PRESETS", "ENTRIES", "run_speed", "speed_config"]

ENTRIES = ("rollout_only", "rollout_kl", "reference", "sepo", "sepo_positions_only", "sepo_cached", "elbo", "trajectory",
           "sepo_defaults")


@dataclass
class SpeedConfig:
    """Settings of ``sepo bench speed``.

    Attributes:
        model: model preset built with random weights when no model directory is given (timing does not
            depend on the weights' values).
        length: sequence length ``L``.
        num_generations: samples per group ``B``.
        num_groups: groups ``G``; the batch is ``G·B`` samples.
        num_iterations: epochs ``K`` per iteration.
        num_snis_samples: ``M``, SNIS Monte-Carlo samples of the reference-style estimator.
        sampling_steps: predictor steps ``T`` of the rollouts.
        sampler: rollout sampler (``ancestral``: the ``G·B·T`` lower bound as stated).
        beta: KL weight; ``kl_truncation_steps``: steps the KL covers.
        sepo_positions: positions scored per sample by the recommended ``sepo`` settings.
        kl_sample_steps: KL steps evaluated per iteration by the recommended ``sepo`` settings.
        reference_samples: samples of the batch in the measured fraction of the reference-style estimator.
        reference_neighbours: Hamming neighbours per sample in that fraction (``None``: all ``L(|V|-1)``).
        grad_rows_budget: most sequences forwarded with gradient at once (bounds memory: the minibatch of
            the heavy default-settings entries is split to fit; passes are unchanged).
        repeats: runs of ``rollout_only`` and ``sepo`` (the entries the targets compare), alternated; each
            reports its fastest run (the least disturbed by other load) and lists all of them.
        reward: built-in reward (``gc``: cheap, so the reward phase does not hide the estimator's cost).
        sampler_model: model preset of the sampler-throughput part (``None``: the iteration's model).
            The cached sampler's gain depends on it: its calls forward only the sequences that changed, so a
            network whose cost is dominated by per-call overhead (a small one on a CPU) gains less.
        sampler_num_samples: sequences per draw in the sampler part.
        sampler_steps: ``T`` values of the sampler grid; ``corrector_at``: those that also get a corrector run.
        samplers: samplers in the grid.
        chunk_batch_size: chunk size of the memory-budget variant (``None``: skip it).
        autocast: measure a bfloat16-autocast variant (GPU presets).
        compile: measure a ``torch.compile`` variant.
    """

    model: str = "dna-full"
    length: int = 200
    num_generations: int = 4
    num_groups: int = 4
    num_iterations: int = 2
    num_snis_samples: int = 4
    sampling_steps: int = 128
    sampler: str = "ancestral"
    beta: float = 0.05
    kl_truncation_steps: int = 10
    sepo_positions: int = 4
    kl_sample_steps: int = 2
    reference_samples: int = 1
    reference_neighbours: int | None = 15
    grad_rows_budget: int = 512
    repeats: int = 3
    reward: str = "gc"
    sampler_model: str | None = None
    sampler_num_samples: int = 8
    sampler_steps: list[int] = field(default_factory=lambda: [128, 1000])
    corrector_at: list[int] = field(default_factory=lambda: [128])
    samplers: list[str] = field(default_factory=lambda: ["ancestral", "ancestral_cached", "analytic", "euler", "tau_leaping"])
    chunk_batch_size: int | None = 2
    autocast: bool = False
    compile: bool = False

    def __post_init__(self):
        for name in ("length", "num_generations", "num_groups", "num_iterations", "num_snis_samples", "sampling_steps",
                     "kl_truncation_steps", "sepo_positions", "kl_sample_steps", "reference_samples", "grad_rows_budget",
                     "sampler_num_samples", "repeats"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.reference_samples > self.num_generations * self.num_groups:
            raise ConfigError(f"reference_samples ({self.reference_samples}) exceeds the batch of "
                              f"{self.num_generations * self.num_groups} samples")
        if self.reward not in ("gc",):
            raise ConfigError(f"unknown reward {self.reward!r}; the speed benchmark uses 'gc'")

    @property
    def batch_size(self) -> int:
        return self.num_generations * self.num_groups


SPEED_PRESETS: dict[str, dict] = {
    # issue 5's DNA setting scaled for 2 CPU cores (the sampler grid takes ~20 min of it on one core)
    "cpu": dict(),
    # the paper's setting (batch 8, 8 groups), for a GPU: whole reference neighbourhood of one sample measured
    "paper": dict(num_generations=8, num_groups=8, reference_neighbours=None, grad_rows_budget=4096,
                  sampler_model=None, sampler_num_samples=64, chunk_batch_size=16,
                  autocast=True),
    # seconds-long run of every code path (tests, quick checks): tiny model, short sequences, few steps
    "smoke": dict(model="dna-tiny", length=32, num_generations=2, num_groups=2, num_iterations=1, num_snis_samples=2,
                  sampling_steps=8, kl_truncation_steps=3, sepo_positions=2, kl_sample_steps=1, reference_neighbours=3,
                  grad_rows_budget=32, repeats=2, sampler_num_samples=2, sampler_steps=[8, 16], corrector_at=[8], chunk_batch_size=1),
}


def speed_config(preset: str, **overrides) -> SpeedConfig:
    """The :class:`SpeedConfig` of ``preset`` with ``overrides`` (``None`` values ignored)."""
    if preset not in SPEED_PRESETS:
        raise ConfigError(f"unknown speed preset {preset!r}; choose one of {', '.join(SPEED_PRESETS)}")
    data = {**SPEED_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(data) - {f.name for f in fields(SpeedConfig)}
    if unknown:
        raise ConfigError(f"unknown speed setting(s): {', '.join(sorted(unknown))}")
    return SpeedConfig(**data)


# ------------------------------------------------------------------------------------------------
def _finetune_config(cfg: SpeedConfig, device: torch.device, seed: int, **changes):
    from sepo.rl.config import FinetuneConfig

    base = dict(num_generations=cfg.num_generations, num_groups=cfg.num_groups, num_iterations=cfg.num_iterations,
                num_snis_samples=cfg.num_snis_samples, sampling_steps=cfg.sampling_steps, sampler=cfg.sampler,
                beta=cfg.beta, kl_truncation_steps=cfg.kl_truncation_steps, seed=seed, device=str(device), max_steps=1)
    base.update(changes)
    return FinetuneConfig(**base)


def _minibatch(n: int, rows_per_sample: int, budget: int) -> int | None:
    """Largest divisor of ``n`` whose gradient rows fit ``budget`` (``None`` when the whole batch fits)."""
    if n * rows_per_sample <= budget:
        return None
    for mb in range(n, 0, -1):
        if n % mb == 0 and mb * rows_per_sample <= budget:
            return mb
    return 1


def entry_settings(cfg: SpeedConfig, name: str) -> tuple[str, dict]:
    """Label and :class:`FinetuneConfig` changes of entry ``name`` (see module docstring)."""
    n, kl_rows = cfg.batch_size, min(cfg.kl_truncation_steps, cfg.sampling_steps + 1)
    if name == "rollout_kl":
        return "no estimator: rollout + reward + KL + step", dict(estimator="sepo")
    if name == "reference":
        return (f"sepo-snis, all L(|V|-1) neighbours, M={cfg.num_snis_samples}",
                dict(estimator="sepo-snis", snis_neighbours=None))
    if name == "sepo":
        return (f"sepo, {cfg.sepo_positions} positions, KL at {cfg.kl_sample_steps}/{cfg.kl_truncation_steps} steps",
                dict(estimator="sepo", sepo_positions=cfg.sepo_positions, kl_sample_steps=cfg.kl_sample_steps))
    if name == "sepo_positions_only":
        return (f"sepo, {cfg.sepo_positions} positions, KL at all {cfg.kl_truncation_steps} steps",
                dict(estimator="sepo", sepo_positions=cfg.sepo_positions, kl_sample_steps=None))
    if name == "sepo_cached":
        return ("sepo as recommended, ancestral_cached rollouts",
                dict(estimator="sepo", sepo_positions=cfg.sepo_positions, kl_sample_steps=cfg.kl_sample_steps,
                     sampler="ancestral_cached"))
    if name == "sepo_defaults":
        from sepo.rl.config import FinetuneConfig

        # labelled from FinetuneConfig's own defaults, so the row stays true when they change
        defaults = FinetuneConfig()
        positions = defaults.sepo_positions or cfg.length
        kl_steps = min(defaults.kl_sample_steps or kl_rows, kl_rows)
        mb = _minibatch(n, positions + kl_steps, cfg.grad_rows_budget)
        return (f"sepo defaults: {positions} positions, KL at {kl_steps}/{cfg.kl_truncation_steps} steps"
                + (f", minibatch {mb}" if mb else ""), dict(estimator="sepo", minibatch_size=mb))
    if name == "trajectory":
        mb = _minibatch(n, cfg.sampling_steps + 1 + kl_rows, cfg.grad_rows_budget)
        return ("trajectory defaults: every step that changed a token" + (f", minibatch {mb}" if mb else ""),
                dict(estimator="trajectory", minibatch_size=mb))
    if name == "elbo":
        return "elbo defaults: 4 Monte-Carlo draws", dict(estimator="elbo")
    if name == "rollout_only":
        return f"{cfg.sampler} rollouts only (lower bound)", {}
    raise ConfigError(f"unknown speed entry {name!r}; choose from {', '.join(ENTRIES)}")


def _settings_summary(fcfg) -> dict:
    keys = ("estimator", "sepo_positions", "kl_sample_steps", "kl_truncation_steps", "beta", "minibatch_size",
            "trajectory_steps", "elbo_samples", "num_snis_samples", "snis_neighbours", "sampler", "sampling_steps")
    return {k: getattr(fcfg, k) for k in keys}


def _ratios(entries: dict) -> None:
    ro, ref = entries.get("rollout_only"), entries.get("reference")
    for e in entries.values():
        own = e["phases"].get("rollout", {}).get("seconds")
        if own:  # same run, so robust to load changes on a shared machine
            e["time_vs_own_rollout"] = round(e["seconds_per_iteration"] / own, 3)
        if ro:
            e["time_vs_rollout_only"] = round(e["seconds_per_iteration"] / ro["seconds_per_iteration"], 3)
            e["passes_vs_rollout_only"] = round(e["network_passes"] / ro["network_passes"], 3)
        if ref:
            e["reference_time_ratio"] = round(ref["seconds_per_iteration"] / e["seconds_per_iteration"], 2)
            e["reference_passes_ratio"] = round(ref["network_passes"] / e["network_passes"], 2)
            e["reference_estimator_passes_ratio"] = (round(ref["estimator_passes"] / e["estimator_passes"], 1)
                                                     if e.get("estimator_passes") else None)


def _targets(entries: dict) -> dict:
    sepo, ref, ro = entries.get("sepo"), entries.get("reference"), entries.get("rollout_only")
    out = {}
    if sepo and ref:
        out["fewer_passes_iteration"] = {
            "what": "reference ÷ sepo, network passes of the whole iteration", "value": sepo["reference_passes_ratio"],
            "target": ">= 100", "met": sepo["reference_passes_ratio"] >= 100}
        out["fewer_passes_estimator"] = {
            "what": "reference ÷ sepo, network passes of the estimator (prepare + epochs; rollout and KL excluded)",
            "value": sepo["reference_estimator_passes_ratio"], "target": ">= 100",
            "met": (sepo["reference_estimator_passes_ratio"] or 0) >= 100}
        out["less_time"] = {"what": "reference ÷ sepo, wall time per iteration", "value": sepo["reference_time_ratio"],
                            "target": ">= 50", "met": sepo["reference_time_ratio"] >= 50}
    if sepo and ro:
        out["near_rollout"] = {"what": "sepo ÷ rollout_only, wall time per iteration", "value": sepo["time_vs_rollout_only"],
                               "target": "<= 1.5", "met": sepo["time_vs_rollout_only"] <= 1.5}
    if sepo and sepo.get("time_vs_own_rollout"):
        out["near_own_rollout"] = {"what": "sepo ÷ its own rollout phase (same run), wall time",
                                   "value": sepo["time_vs_own_rollout"], "target": "<= 1.5",
                                   "met": sepo["time_vs_own_rollout"] <= 1.5}
    return out


def _warm_up(model, *, length: int, device) -> None:
    """One short draw and one forward + backward, so the first timed entry pays no one-off start-up costs."""
    from sepo.diffusion.sampling import SamplerConfig, sample

    warm = copy.deepcopy(model)
    sample(warm, num_samples=2, length=length, config=SamplerConfig(steps=2), device=device,
           generator=torch.Generator().manual_seed(0))
    x = torch.full((2, length), warm.process.mask_id if warm.process.mask_id is not None else 0, device=device)
    warm.log_denoiser(x, torch.full((2,), 0.5, device=device)).sum().backward()


def _build_model(preset: str, *, length: int, seed: int, device):
    from sepo.models import build_model, preset_config

    torch.manual_seed(seed)
    model = build_model(preset_config(preset))
    if model.config.length < length:
        raise ConfigError(f"model preset {preset!r} accepts at most {model.config.length} tokens; lower --length")
    return model.to(device).eval()


def run_speed(cfg: SpeedConfig, *, out_dir: str | Path | None, device: torch.device | str = "cpu", seed: int = 0,
              preset: str = "custom", model=None, model_name: str | None = None, entries: list[str] | None = None,
              samplers: bool = True, progress: bool = True, log=print) -> dict:
    """Run the speed benchmark; write ``speed.json`` and ``speed.md`` under ``out_dir`` (if given).

    Args:
        cfg: the settings.
        model: a :class:`~sepo.diffusion.DiffusionModel` to time (default: ``cfg.model`` with random weights).
        entries: subset of :data:`ENTRIES` (``reference`` brings ``rollout_kl`` along, which it builds on).
        samplers: also run the sampler-throughput part.
    Returns:
        The result dictionary written to ``speed.json``.
    """
    from sepo.models import count_parameters
    from sepo.rl.rewards import BUILTIN_REWARDS

    from .iteration import (NoEstimator, extrapolate_reference, reference_counts, time_iteration, time_rollout,
                            time_snis_fraction)
    from .measure import machine_info
    from .report import speed_markdown

    device = torch.device(device)
    wanted = list(ENTRIES if entries is None else entries)
    for name in wanted:
        if name not in ENTRIES:
            raise ConfigError(f"unknown speed entry {name!r}; choose from {', '.join(ENTRIES)}")
    if "reference" in wanted and "rollout_kl" not in wanted:
        wanted.insert(wanted.index("reference"), "rollout_kl")
    if cfg.beta <= 0:
        wanted = [w for w in wanted if w != "rollout_kl"]
        if "reference" in wanted:
            raise ConfigError("the reference-style entry builds on rollout_kl, which needs beta > 0")
    if model is None:
        model_name = model_name or cfg.model
        model = _build_model(cfg.model, length=cfg.length, seed=seed, device=device)
    model = model.to(device).eval()
    model_name = model_name or "given model"
    out_dir = Path(out_dir) if out_dir is not None else None
    reward = BUILTIN_REWARDS[cfg.reward]()
    result = {
        "benchmark": "speed", "preset": preset, "seed": seed, "complete": False,
        "config": {**asdict(cfg), "model": model_name, "model_parameters": count_parameters(model),
                   "batch_size": cfg.batch_size},
        "machine": machine_info(device),
        "entries": {},
        "notes": [
            "network passes = sequence-forwards (a call on n sequences counts n), counted by the model and by hooks.",
            "rollout_only uses the trainer's sampler, seed and batch: G·B·(T+1) passes for plain ancestral "
            "(T predictor steps + the final denoising step).",
            "the CPU may be shared with other jobs: absolute seconds are pessimistic there, ratios are what to read.",
        ],
    }

    stem = "speed" if wanted else "samplers"  # a samplers-only run does not overwrite an iteration run's files

    def save():
        if out_dir is not None:
            write_json(out_dir / f"{stem}.json", result)
            write_text(out_dir / f"{stem}.md", speed_markdown(result))

    entries_out = result["entries"]
    rollout_kl_run = None
    if wanted:
        _warm_up(model, length=cfg.length, device=device)
    def measure(name, fcfg):
        if name == "rollout_only":
            return time_rollout(model, fcfg, length=cfg.length)
        return time_iteration(model, fcfg, reward=reward, length=cfg.length)

    repeated = [n for n in ("rollout_only", "sepo") if n in wanted] if cfg.repeats > 1 else []
    for name in wanted:
        label, changes = entry_settings(cfg, name)
        fcfg = _finetune_config(cfg, device, seed, **changes)
        log(f"[speed] {name}: {label} ...")
        if name == "rollout_kl":
            rollout_kl_run = time_iteration(model, fcfg, reward=reward, length=cfg.length, estimator=NoEstimator())
            entry = dict(rollout_kl_run)
        elif name == "reference":
            frac = time_snis_fraction(model, rollout_kl_run["rollout"], snis_samples=cfg.num_snis_samples,
                                      neighbours=cfg.reference_neighbours, num_samples=cfg.reference_samples,
                                      epsilon=fcfg.epsilon, seed=seed, device=device)
            counts = reference_counts(num_samples=cfg.batch_size, length=cfg.length, vocab_size=model.vocab_size,
                                      snis_samples=cfg.num_snis_samples, epochs=cfg.num_iterations)
            if frac["passes_per_sample_per_evaluation"] != (frac["neighbours"] + 1) * cfg.num_snis_samples:
                raise RuntimeError("the SNIS fraction's pass count does not match (1 + neighbours) * M")
            result["reference_fraction"], result["reference_counts"] = frac, counts
            entry = extrapolate_reference(rollout_kl_run, frac, counts)
        else:
            entry = measure(name, fcfg)
        entry.pop("rollout", None)
        entry = {"label": label, "settings": _settings_summary(fcfg) if name != "rollout_only" else
                 {"sampler": fcfg.sampler, "sampling_steps": fcfg.sampling_steps}, **entry}
        entries_out[name] = entry
        log(f"[speed] {name}: {entry['seconds_per_iteration']:.2f} s, {entry['network_passes']:,} passes, "
            f"peak {entry['peak_memory_mb']} MiB" + ("" if entry.get("measured", True) else " (extrapolated)"))
        _ratios(entries_out)
        save()
    for r in range(2, cfg.repeats + 1 if repeated else 1):  # alternate the compared entries, keep the fastest run
        for name in repeated:
            fcfg = _finetune_config(cfg, device, seed, **entry_settings(cfg, name)[1])
            again = measure(name, fcfg)
            again.pop("rollout", None)
            old_entry = entries_out[name]
            if again["network_passes"] != old_entry["network_passes"] or again["batch_digest"] != old_entry["batch_digest"]:
                raise RuntimeError(f"repeat {r} of {name} did different work (passes or batch differ)")
            runs = old_entry.get("repeats_seconds", [old_entry["seconds_per_iteration"]]) + [again["seconds_per_iteration"]]
            if again["seconds_per_iteration"] < old_entry["seconds_per_iteration"]:
                old_entry.update({k: v for k, v in again.items() if k in ("seconds_per_iteration", "phases", "peak_memory_mb", "metrics")})
            old_entry["repeats_seconds"] = runs
            log(f"[speed] {name} (run {r}/{cfg.repeats}): {again['seconds_per_iteration']:.2f} s")
        _ratios(entries_out)
        save()
    # every entry with the configured sampler must have drawn the same batch (sepo_cached uses another sampler)
    digests = {e["batch_digest"] for e in entries_out.values() if e["settings"].get("sampler") == cfg.sampler}
    result["same_batch"] = len(digests) <= 1
    result["targets"] = _targets(entries_out)

    if samplers:
        from .samplers import run_sampler_benchmark, sampler_cases

        if cfg.sampler_model is None:
            s_model, s_name = model, model_name
        else:
            s_model, s_name = _build_model(cfg.sampler_model, length=cfg.length, seed=seed, device=device), cfg.sampler_model
        log(f"[speed] samplers on {s_name} ...")
        cases = sampler_cases(steps=cfg.sampler_steps, corrector_at=cfg.corrector_at, samplers=cfg.samplers)
        res = run_sampler_benchmark(s_model, cases=cases, num_samples=cfg.sampler_num_samples, length=cfg.length,
                                    seed=seed, device=device, chunk_batch_size=cfg.chunk_batch_size, compile=cfg.compile,
                                    autocast=cfg.autocast and device.type == "cuda", progress=progress)
        result["samplers"] = {"model": s_name, "model_parameters": count_parameters(s_model),
                              "num_samples": cfg.sampler_num_samples, "length": cfg.length, **res}
        if cfg.autocast and device.type != "cuda":
            result["notes"].append("bf16 autocast is measured on GPU only (CPU bf16 kernels are not representative).")
    result["complete"] = True
    save()
    return result


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    from sepo.commands import add_device_argument

    p.add_argument("--preset", choices=tuple(SPEED_PRESETS), default="cpu",
                   help="cpu: issue 5's 2-core setting (B=4, G=4, K=2, M=4, L=200, T=128, dna-full); "
                        "paper: B=8, G=8 (GPU); smoke: a seconds-long check of every code path")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for speed.json and speed.md (written atomically)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model initialisation and of the iteration")
    p.add_argument("--model", default=None, metavar="DIR", help="time this model directory instead of random weights")
    p.add_argument("--entries", default=None, metavar="LIST",
                   help=f"comma-separated subset of {','.join(ENTRIES)} (default: all)")
    p.add_argument("--no-samplers", action="store_true", help="skip the sampler-throughput part")
    p.add_argument("--samplers-only", action="store_true",
                   help="only the sampler-throughput part (writes samplers.json and samplers.md)")
    p.add_argument("--sepo-positions", type=int, default=None, metavar="N", help="positions per sample of the recommended sepo settings")
    p.add_argument("--kl-sample-steps", type=int, default=None, metavar="N", help="KL steps per iteration of the recommended sepo settings")
    p.add_argument("--samplers", default=None, metavar="LIST", help="comma-separated samplers of the sampler grid (default: all five)")
    p.add_argument("--sampler-steps", default=None, metavar="LIST", help="comma-separated T values of the sampler grid (default: 128,1000)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile of the network in the sampler part")
    add_device_argument(p)
    p.add_argument("--num-threads", type=int, default=None, metavar="N",
                   help="CPU threads for PyTorch (default: all available cores; 1 is steadier on a shared machine)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _run(args) -> int:
    from sepo.commands import resolve_device, set_threads

    set_threads(args.num_threads)
    device = resolve_device(args.device)
    if args.samplers_only and args.no_samplers:
        raise ConfigError("--samplers-only and --no-samplers exclude each other; drop one")
    try:
        steps = None if args.sampler_steps is None else [int(v) for v in args.sampler_steps.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--sampler-steps must be comma-separated integers, got {args.sampler_steps!r}") from None
    names = None if args.samplers is None else [v.strip() for v in args.samplers.split(",") if v.strip()]
    if names is not None:
        from sepo.diffusion.sampling import SAMPLERS

        bad = [n for n in names if n not in SAMPLERS]
        if bad or not names:
            raise ConfigError(f"unknown sampler(s) {', '.join(bad) or '(none)'} in --samplers; choose from {', '.join(SAMPLERS)}")
    if steps is not None and (not steps or min(steps) < 1):
        raise ConfigError("--sampler-steps needs positive integers, e.g. 128,1000")
    cfg = speed_config(args.preset, sepo_positions=args.sepo_positions, kl_sample_steps=args.kl_sample_steps,
                       compile=True if args.compile else None, samplers=names, sampler_steps=steps)
    model = model_name = None
    if args.model:
        from sepo.diffusion import MaskedProcess
        from sepo.models import load_model

        model, _ = load_model(args.model, device=device)
        if not isinstance(model.process, MaskedProcess):
            raise ConfigError(f"{args.model} is not a masked model; the speed benchmark times masked models")
        if model.config.length < cfg.length:
            cfg = replace(cfg, length=model.config.length)
        model_name = str(args.model)
    entries = None if args.entries is None else [e.strip() for e in args.entries.split(",") if e.strip()]
    if args.samplers_only:
        entries = []
    log = (lambda *a, **k: None) if args.quiet else (lambda msg: print(msg, flush=True))
    result = run_speed(cfg, out_dir=args.out, device=device, seed=args.seed, preset=args.preset, model=model,
                       model_name=model_name, entries=entries, samplers=not args.no_samplers,
                       progress=not args.quiet, log=log)
    if not args.quiet:
        for t in result.get("targets", {}).values():
            print(f"target: {t['what']}: {t['value']} (required {t['target']}): {'met' if t['met'] else 'NOT met'}")
        stem = "samplers" if entries == [] else "speed"
        print(f"wrote {Path(args.out) / (stem + '.json')} and {Path(args.out) / (stem + '.md')}")
    return 0


register(
    "speed",
    help="time one SEPO iteration per estimator vs the reference-style estimator and the rollout bound; sampler throughput",
    description="""
    Time one SEPO iteration (rollout / reward / prepare / update / KL) for each estimator on one model and
    one batch, against the reference-style estimator (every Hamming neighbour, SNIS with M samples) and the
    rollout-only lower bound; count network passes (sequence-forwards) and peak memory; then measure the
    samplers' throughput (sequences/s, cached vs plain ancestral, inference mode, chunking, bf16 autocast
    on GPU, optionally torch.compile).

    Writes speed.json (entries with seconds_per_iteration, network_passes, peak_memory_mb, the per-phase
    breakdown and the ratios to rollout_only and to reference; sampler throughput; settings, machine,
    date) and speed.md (the same as tables) to --out. The reference-style row is partly extrapolated from a
    measured fraction of its work, linearly in passes; both files say which numbers are measured.""",
    examples="""
    sepo bench speed --preset cpu --out runs/speed --num-threads 1
    sepo bench speed --preset paper --device cuda --out runs/speed-gpu
    sepo bench speed --preset smoke --out /tmp/speed-smoke""",
    add_arguments=add_arguments,
)(_run)
