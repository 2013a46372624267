"""Pretraining a discrete diffusion model on a task's training split, with exact resume.

MDLM's continuous-time NELBO (Sahoo et al., 2024) trains masked SUBS models; SEDD's score entropy
(Lou et al., 2024) trains every other parameterisation (e.g. the uniform process); both come from
:func:`sepo.diffusion.diffusion_loss`. AdamW with linear warm-up and cosine (or constant) decay,
gradient clipping, an EMA of the weights (used for validation and saved as the model's evaluation
weights), periodic validation NELBO, JSONL / TensorBoard / stdout logs and a loss-curve PNG.

The output folder is itself a model directory (:func:`sepo.models.load_model` reads it) plus:

* ``train_state.pt``   everything needed to continue exactly (weights, optimizer, LR schedule, EMA,
  step, data order, every RNG), written atomically at each checkpoint;
* ``pretrain_config.yaml``  the resolved :class:`PretrainConfig`;
* ``metrics.jsonl``, ``tb/``, ``loss.png``, ``train_summary.json`` (written when the run finishes).

Exact resume: the data order comes from a CPU generator and the noise (times, masks) from a generator
on the training device; both are checkpointed with the global RNGs, so an interrupted run continued
with ``resume=True`` ends with the same parameters (bit for bit, same device and thread count) as a run
that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

import torch

from sepo.diffusion import diffusion_loss
from sepo.errors import CheckpointError, ConfigError, SepoError
from sepo.utils.config import from_dict, load_yaml, merge_overrides, save_yaml, to_dict
from sepo.utils.io import write_json, write_text
from sepo.utils.logging import MetricLogger, plot_curves, read_jsonl

from .evaluate import nelbo_per_sequence, summarize_nelbo
from .tasks import TaskSpec, get_task

__all__ = [
    "PretrainConfig",
    "TrainingError",
    "resolve_config",
    "pretrain",
    "build_pretrain_model",
    "run_status",
    "resolve_device",
    "CONFIG_FILE",
    "TRAIN_STATE_FILE",
]

CONFIG_FILE = "pretrain_config.yaml"
TRAIN_STATE_FILE = "train_state.pt"
SUMMARY_FILE = "train_summary.json"
#: files and folders a pretraining run writes next to the model files (``--force`` removes them).
RUN_ARTEFACTS = (CONFIG_FILE, TRAIN_STATE_FILE, SUMMARY_FILE, "metrics.jsonl", "tb", "loss.png")
#: files of a model directory (:func:`sepo.models.save_model`).
MODEL_FILES = ("config.json", "model.safetensors", "ema.safetensors")
#: fields that may change when a run is resumed (they do not affect the trained parameters).
RESUME_MUTABLE = ("device", "num_threads", "log_every", "eval_every", "checkpoint_every")


class TrainingError(SepoError):
    """Training cannot go on (non-finite loss, ...)."""


@dataclass
class PretrainConfig:
    """Configuration of one pretraining run (YAML: one ``field: value`` per line; see ``configs/``).

    Attributes:
        task: task name (``dna``; see :mod:`sepo.train.tasks`), which fixes data, vocabulary and length.
        preset: the task preset this config started from (informational; set by :func:`resolve_config`).
        model: model preset of :data:`sepo.models.MODEL_PRESETS` (``dna-tiny``, ``dna-full``, ...).
        model_overrides: ``ModelConfig`` fields replacing the preset's (e.g. ``{hidden: 96, n_stacks: 3}``).
        process: forward process, ``masked`` (MDLM NELBO) or ``uniform`` (score entropy; the model
            becomes a time-conditioned uniform denoiser unless ``model_overrides`` says otherwise).
        steps: number of optimizer steps in total.
        batch_size: sequences per step.
        lr: peak learning rate of AdamW.
        lr_schedule: ``cosine`` (decay to ``min_lr_ratio * lr`` at the last step) or ``constant``,
            both after ``warmup_steps`` of linear warm-up from 0.
        min_lr_ratio: final learning rate as a fraction of ``lr`` (cosine only).
        warmup_steps: steps of linear learning-rate warm-up.
        weight_decay: AdamW decoupled weight decay.
        beta2: AdamW second-moment decay (``beta1`` is 0.9).
        grad_clip: clip the global gradient norm to this value; 0 disables clipping.
        ema_decay: decay of the exponential moving average of the weights (warmed up as
            ``min(ema_decay, (1 + n) / (10 + n))`` after ``n`` updates); the EMA weights are validated
            and saved as the model's evaluation weights.
        eval_every: validation NELBO every this many steps (and at the end); 0 = only at the end.
        val_size: validation sequences used (a fixed random subset); 0 = the whole validation split.
        val_draws: noise levels per validation sequence (stratified times).
        val_batch_size: sequences per validation forward pass.
        log_every: log the mean training loss every this many steps (and at the end).
        checkpoint_every: write a checkpoint every this many steps (and at the end); 0 = only at the end.
        seed: seeds model initialisation, data order and noise.
        device: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        num_threads: CPU threads for PyTorch; ``null`` = all cores available to this process.
    """

    task: str = "dna"
    preset: Optional[str] = None
    model: str = "dna-tiny"
    model_overrides: dict = field(default_factory=dict)
    process: Literal["masked", "uniform"] = "masked"
    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.0
    beta2: float = 0.999
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    eval_every: int = 100
    val_size: int = 512
    val_draws: int = 2
    val_batch_size: int = 256
    log_every: int = 25
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"
    num_threads: Optional[int] = None

    def __post_init__(self):
        positive = ("steps", "batch_size", "val_draws", "val_batch_size", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "val_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay and grad_clip must be >= 0")
        if not 0.0 <= self.beta2 < 1.0:
            raise ValueError(f"beta2 must be in [0, 1), got {self.beta2}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 (or null for all cores), got {self.num_threads}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


def resolve_config(*, task: str | None = None, preset: str | None = "tiny", config_file: str | Path | None = None,
                   overrides: dict | None = None, base: dict | None = None) -> PretrainConfig:
    """Build a validated :class:`PretrainConfig` from, in increasing priority: the task's ``preset``
    (or ``base`` if given, e.g. a saved run's config), a YAML ``config_file``, then ``overrides``
    (``None`` values ignored). Raises :class:`ConfigError` with one line on any problem."""
    file_data = load_yaml(config_file) if config_file is not None else {}
    task_name = task or file_data.get("task") or (base or {}).get("task") or "dna"
    if base is not None:
        data = dict(base)
    else:
        spec = get_task(task_name)
        preset_name = preset or file_data.get("preset") or "tiny"
        data = {**spec.preset(preset_name), "preset": preset_name}
    data = merge_overrides(data, file_data)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}  # command-line flags not given are None
    data = merge_overrides(data, {**given, "task": task_name})
    where = Path(config_file).name if config_file is not None else "pretrain config"
    return from_dict(PretrainConfig, data, where=where)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available else CPU; a clear error when CUDA is requested but missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not (name in ("cpu", "cuda") or name.startswith("cuda:")):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def model_config(cfg: PretrainConfig, task: TaskSpec):
    """The validated :class:`~sepo.models.ModelConfig` of ``cfg``, checked against the task."""
    from sepo.models import preset_config

    overrides = {**cfg.model_overrides, "process": cfg.process}
    try:
        mcfg = preset_config(cfg.model, **overrides)
    except ConfigError as e:
        raise ConfigError(f"model / model_overrides: {e}") from None
    if mcfg.vocab_size != task.vocab_size or mcfg.length != task.length:
        raise ConfigError(
            f"model preset {cfg.model!r} has vocab_size {mcfg.vocab_size} and length {mcfg.length}, but task "
            f"{task.name!r} needs {task.vocab_size} and {task.length}; pick a {task.name} model preset"
        )
    return mcfg


def build_pretrain_model(cfg: PretrainConfig, task: TaskSpec):
    """Fresh :class:`~sepo.diffusion.DiffusionModel` for ``cfg`` (initialised from ``cfg.seed``)."""
    from sepo.models import build_model

    mcfg = model_config(cfg, task)
    torch.manual_seed(cfg.seed)
    return build_model(mcfg)


# --------------------------------------------------------------------------------------------
# run folder
# --------------------------------------------------------------------------------------------
def run_status(out_dir: str | Path) -> tuple[str, int | None, int | None]:
    """``(status, step, total_steps)`` of a run folder; status is ``absent``, ``empty``, ``foreign`` (files
    that are not a run), ``unstarted`` (a run stopped before its first checkpoint), ``unfinished`` or
    ``finished``."""
    out = Path(out_dir)
    if not out.exists():
        return "absent", None, None
    if not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; choose a folder")
    if not any(out.iterdir()):
        return "empty", None, None
    state_path = out / TRAIN_STATE_FILE
    if not (out / CONFIG_FILE).is_file():
        return "foreign", None, None
    if not state_path.is_file():
        return "unstarted", 0, load_yaml(out / CONFIG_FILE).get("steps")
    step = _peek_step(state_path)
    total = load_yaml(out / CONFIG_FILE).get("steps")
    done = step is not None and total is not None and step >= total and (out / SUMMARY_FILE).is_file()
    return ("finished" if done else "unfinished"), step, total


def _peek_step(path: Path) -> int | None:
    from sepo.models import load_train_state

    try:
        return int(load_train_state(path, restore_rng=False)["step"])
    except (SepoError, KeyError, TypeError, ValueError):
        return None


def _prepare_out_dir(out: Path, *, resume: bool, force: bool) -> None:
    status, step, total = run_status(out)
    if resume:
        if status in ("absent", "empty", "foreign"):
            raise CheckpointError(f"nothing to resume in {str(out)!r}: no {TRAIN_STATE_FILE} there; run without --resume to start")
        if status == "unstarted":
            raise CheckpointError(f"{str(out)!r} holds a run stopped before its first checkpoint; start it over with --force")
        return
    if status in ("absent", "empty"):
        return
    if not force:
        if status == "finished":
            raise ConfigError(f"{str(out)!r} holds a finished run ({step} steps); pass --force to overwrite it or choose another --out")
        if status == "unstarted":
            raise ConfigError(f"{str(out)!r} holds a run stopped before its first checkpoint; pass --force to start over or choose another --out")
        if status == "unfinished":
            raise ConfigError(f"{str(out)!r} holds an unfinished run (step {step} of {total}); pass --resume to continue it or --force to start over")
        raise ConfigError(f"{str(out)!r} exists and is not empty; choose a new --out or pass --force to write into it")
    _remove_run_files(out)


def _remove_run_files(out: Path) -> None:
    """Delete what an earlier run wrote here (our artefacts and model files only, never other files)."""
    for name in (*RUN_ARTEFACTS, *MODEL_FILES):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


# --------------------------------------------------------------------------------------------
# data order
# --------------------------------------------------------------------------------------------
class BatchStream:
    """Epochs of shuffled indices ``0 .. n-1`` (the last incomplete batch of an epoch is dropped),
    reproducible from its state: the current permutation, a cursor and the generator's state."""

    def __init__(self, n: int, batch_size: int, *, seed: int):
        if n < batch_size:
            raise ConfigError(f"batch_size {batch_size} exceeds the {n} training sequences; lower --batch-size")
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.generator)
        self.cursor = 0
        self.epoch = 0

    def next(self) -> torch.Tensor:
        if self.cursor + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.cursor = 0
            self.epoch += 1
        idx = self.perm[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"perm": self.perm.clone(), "cursor": self.cursor, "epoch": self.epoch, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.perm = state["perm"].clone()
        self.cursor = int(state["cursor"])
        self.epoch = int(state["epoch"])
        self.generator.set_state(state["generator"])


def lr_factor(step: int, cfg: PretrainConfig) -> float:
    """Multiplier of ``cfg.lr`` used for optimizer step ``step + 1`` (``step`` = steps already taken)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    decay_steps = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
def pretrain(cfg: PretrainConfig, out_dir: str | Path, *, resume: bool = False, force: bool = False,
             progress: bool = True, on_step: Callable[[int], None] | None = None) -> dict:
    """Train (or continue training) a model as described by ``cfg`` and write it to ``out_dir``.

    Args:
        resume: continue from ``out_dir/train_state.pt``; ``cfg`` must match the saved config except
            for :data:`RESUME_MUTABLE` fields.
        force: start over in a folder that already holds a run.
        progress: show a tqdm progress bar (on stderr).
        on_step: called with the step number after each step (after any checkpoint of that step).
    Returns:
        a summary dict (final step, validation bits per token, wall time, ...), also written to
        ``train_summary.json`` when the run finishes.
    """
    out = Path(out_dir)
    # everything that can be checked is checked before the folder is touched (--force deletes)
    task = get_task(cfg.task)
    device = resolve_device(cfg.device)
    model_config(cfg, task)
    if resume:
        _prepare_out_dir(out, resume=True, force=False)
        saved = from_dict(PretrainConfig, load_yaml(out / CONFIG_FILE), where=f"{out / CONFIG_FILE}")
        changed = [f.name for f in dataclasses.fields(PretrainConfig)
                   if f.name not in RESUME_MUTABLE and getattr(saved, f.name) != getattr(cfg, f.name)]
        if changed:
            name = changed[0]
            raise ConfigError(f"--resume continues the saved run, but {name} differs (saved {getattr(saved, name)!r}, "
                              f"given {getattr(cfg, name)!r}); drop that option or start a new --out")
        if run_status(out)[0] == "finished":
            import json

            print(f"{out} already finished its {cfg.steps} steps; nothing to do", file=sys.stdout)
            return json.loads((out / SUMMARY_FILE).read_text())
    elif not force:
        _prepare_out_dir(out, resume=False, force=False)  # refuse early, before loading data
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads or _available_cores())
    try:
        return _train(cfg, out, task=task, device=device, resume=resume, force=force, progress=progress, on_step=on_step)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: PretrainConfig, out: Path, *, task: TaskSpec, device: torch.device, resume: bool, force: bool,
           progress: bool, on_step) -> dict:
    from sepo.models import EMA, capture_rng_state, load_train_state, restore_rng_state, save_model, save_train_state

    # data first: a data error must not leave a half-made (or, with --force, a deleted) run folder
    train_tokens = task.load_split("train")
    val_tokens = task.load_split("validation")
    if cfg.val_size and cfg.val_size < val_tokens.shape[0]:
        pick = torch.randperm(val_tokens.shape[0], generator=torch.Generator().manual_seed(cfg.seed + 7919))[: cfg.val_size]
        val_tokens = val_tokens[pick.sort().values]
    train_tokens = train_tokens.to(torch.uint8 if task.vocab_size <= 255 else torch.int32).to(device)

    model = build_pretrain_model(cfg, task).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    ema = EMA(model, decay=cfg.ema_decay)
    stream = BatchStream(train_tokens.shape[0], cfg.batch_size, seed=cfg.seed)
    noise_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    step = 0
    if force:
        _prepare_out_dir(out, resume=False, force=True)

    if resume:
        state = load_train_state(out / TRAIN_STATE_FILE, restore_rng=False)
        extra = state.get("extra") or {}
        if extra.get("device_type", device.type) != device.type:
            raise ConfigError(f"this run was trained on {extra['device_type']}; resume it with --device {extra['device_type']}")
        try:
            model.load_state_dict(extra["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            ema.load_state_dict(state["ema"])
            stream.load_state_dict(extra["data"])
            noise_gen.set_state(extra["noise_generator"])
            restore_rng_state(state["rng"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{out / TRAIN_STATE_FILE} does not fit this run ({str(e).splitlines()[0][:200]}); start over with --force") from None
        step = int(state["step"])
        _truncate_metrics(out / "metrics.jsonl", step)
    else:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(out / CONFIG_FILE, cfg)

    length = task.length
    logger = MetricLogger(out, resume=resume, stdout=False)
    unit = task.unit
    provenance = {"task": task.name, "trained_by": "sepo pretrain", "pretrain_config": to_dict(cfg)}

    def validate() -> float:
        ema.store(model)
        ema.copy_to(model)
        try:
            gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)  # same noise at every evaluation
            per_seq = nelbo_per_sequence(model, val_tokens, draws=cfg.val_draws, batch_size=cfg.val_batch_size,
                                         generator=gen, device=device)
        finally:
            ema.restore(model)
        return summarize_nelbo(per_seq, length=length, unit=unit)[f"bits_per_{unit}"]

    def checkpoint(at: int) -> None:
        save_model(out, model, vocab=task.vocab, ema_state=ema.state_dict(), provenance={**provenance, "step": at})
        save_train_state(out / TRAIN_STATE_FILE, optimizer=opt, scheduler=sched, step=at, rng_state=capture_rng_state(),
                         ema=ema, extra={"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                                         "data": stream.state_dict(), "noise_generator": noise_gen.get_state(),
                                         "device_type": device.type})
        _plot_loss(out, unit)

    t0 = time.time()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=f"pretrain {task.name}", unit="step", dynamic_ncols=True)
    running, running_n, last_val = torch.zeros((), device=device), 0, None
    seqs_seen = 0
    try:
        while step < cfg.steps:
            idx = stream.next().to(device)
            x0 = train_tokens[idx].long()
            loss = diffusion_loss(model, x0, generator=noise_gen).mean() / length  # nats per token
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            else:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
            opt.step()
            sched.step()
            ema.decay = min(cfg.ema_decay, (1.0 + ema.num_updates) / (10.0 + ema.num_updates))
            ema.update(model)
            step += 1
            seqs_seen += x0.shape[0]
            running += loss.detach()
            running_n += 1

            is_checkpoint = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps
            if step % cfg.log_every == 0 or step == cfg.steps or is_checkpoint:
                mean_loss = float(running) / running_n
                if not math.isfinite(mean_loss):  # never log or checkpoint a diverged model
                    raise TrainingError(f"training diverged by step {step} (loss {mean_loss}); lower --lr or raise "
                                        f"warmup_steps, then start over with --force (or --resume from the last checkpoint)")
            if step % cfg.log_every == 0 or step == cfg.steps:
                elapsed = max(time.time() - t0, 1e-9)
                rec = {"train_loss": mean_loss, f"train_bits_per_{unit}": mean_loss / math.log(2.0),
                       "lr": sched.get_last_lr()[0], "grad_norm": float(grad_norm), "seq_per_s": seqs_seen / elapsed}
                logger.log(step, rec)
                running, running_n = torch.zeros((), device=device), 0
                _say(bar, f"step {step}/{cfg.steps}  train {rec[f'train_bits_per_{unit}']:.4f} bits/{unit}  lr {rec['lr']:.2e}")
                if bar is not None:
                    bar.set_postfix({f"bits/{unit}": f"{rec[f'train_bits_per_{unit}']:.3f}"})
            if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
                last_val = validate()
                logger.log(step, {f"val_bits_per_{unit}": last_val})
                _say(bar, f"step {step}/{cfg.steps}  validation (EMA) {last_val:.4f} bits/{unit}")
            if is_checkpoint:
                checkpoint(step)
            if bar is not None:
                bar.update(1)
            if on_step is not None:
                on_step(step)
    except KeyboardInterrupt:
        last = _peek_step(out / TRAIN_STATE_FILE)
        if last is None:
            print(f"interrupted at step {step}, before the first checkpoint; start over with --force", file=sys.stderr)
        else:
            print(f"interrupted at step {step}; the checkpoint of step {last} is in {out} (continue with --resume)",
                  file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
        logger.close()

    summary = {
        "task": task.name,
        "steps": step,
        f"val_bits_per_{unit}": last_val,
        "wall_time_s": round(time.time() - t0, 2),
        "device": str(device),
        "num_threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "out": str(out),
    }
    write_json(out / SUMMARY_FILE, summary)
    return summary


def _say(bar, text: str) -> None:
    if bar is not None:
        bar.write(text, file=sys.stdout)
    else:
        print(text, file=sys.stdout, flush=True)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log records written after the checkpoint we resume from (they will be logged again)."""
    import json

    records = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    if path.exists():
        write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def _plot_loss(out: Path, unit: str) -> None:
    records = read_jsonl(out / "metrics.jsonl")
    series = {}
    for key, label in ((f"train_bits_per_{unit}", "train"), (f"val_bits_per_{unit}", "validation (EMA)")):
        pts = [(r["step"], r[key]) for r in records if key in r]
        if pts:
            series[label] = ([p[0] for p in pts], [p[1] for p in pts])
    if series:
        plot_curves(out / "loss.png", series, xlabel="step", ylabel=f"NELBO (bits per {unit})", title="pretraining loss")
