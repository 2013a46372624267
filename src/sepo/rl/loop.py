"""The outer loop shared by every fine-tuning trainer (SEPO's :class:`~sepo.rl.trainer.Trainer`, DRAKES):
step until ``max_steps``, evaluate/log every ``log_every``, checkpoint every ``save_every``, then plot.

A trainer provides ``cfg`` (``max_steps``, ``log_every``, ``save_every``), ``iteration``, ``step() -> dict``,
``policy``, ``history``, ``evaluate`` (or ``None``), ``logger`` (or ``None``), ``out_dir`` (or ``None``),
``progress``, ``save()``. An iteration whose every update was skipped for a NaN/inf loss or gradient
(``step()`` reports ``skipped_updates > 0`` and ``applied_updates == 0``; see :func:`guarded_update`) leaves
the weights as they were; ``cfg.max_nonfinite_iterations`` (3 where the config has no such field) of them in
a row stop the run with :class:`~sepo.errors.TrainingError`, before that iteration is logged or saved.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from sepo.errors import CheckpointError, TrainingError
from sepo.utils.logging import MetricLogger, plot_curves, read_jsonl

__all__ = ["train_loop", "plot_reward_curves", "guarded_update", "start_run", "run_summary", "weights_fingerprint"]


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the parameters (names, shapes, bytes): the reference's identity in checkpoints."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def start_run(trainer, *, seed: int, base_identity: dict | None, logger: MetricLogger | None, progress: bool,
              resume: bool) -> None:
    """The run bookkeeping every trainer shares (call after ``policy``, ``out_dir`` and the optimizer exist): the
    run's random generator, counters, the base model's identity (its fingerprint added), logging; on ``resume``
    the saved state replaces all of it (``trainer._load_state()``)."""
    trainer.generator = torch.Generator(device="cpu").manual_seed(seed)
    trainer.iteration = 0
    trainer.history = []
    trainer.base_identity = dict(base_identity or {})
    trainer.base_identity.setdefault("fingerprint", weights_fingerprint(trainer.policy))
    trainer.progress = progress
    trainer.logger = logger
    if resume:
        if trainer.out_dir is None:
            raise CheckpointError("resume needs the run's out_dir")
        trainer._load_state()
    if trainer.logger is None and trainer.out_dir is not None:
        trainer.logger = MetricLogger(trainer.out_dir, resume=resume)


def run_summary(trainer, history: list[dict], *, task: str, base, seconds: float) -> dict:
    """The summary a fine-tuning recipe writes to ``metrics.json`` (a SEPO :class:`~sepo.rl.trainer.Trainer`)."""
    return {
        "task": task,
        "estimator": trainer.cfg.estimator,
        "reward": trainer.reward.name,
        "base": str(base),
        "iterations": trainer.iteration,
        "reward_first_iteration": history[0]["reward_mean"] if history else None,
        "reward_last_iteration": history[-1]["reward_mean"] if history else None,
        "seconds": round(seconds, 2),
    }


def guarded_update(optimizer: torch.optim.Optimizer, params, loss: torch.Tensor, *, max_grad_norm: float) -> tuple[float, bool]:
    """Backward, clip the gradient norm (``0``: no clipping) and step — unless the loss or the gradient is
    NaN/inf, in which case the step is skipped: one bad batch would otherwise corrupt the weights and Adam's
    moments for good. Returns ``(gradient norm before clipping, whether the step was applied)``."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf)
    applied = bool(torch.isfinite(loss.detach()) & torch.isfinite(gn))
    if applied:
        optimizer.step()
    else:
        optimizer.zero_grad(set_to_none=True)
    return float(gn), applied


def train_loop(trainer, *, desc: str, title: str, postfix: tuple[str, ...] = ("reward_mean",)) -> list[dict]:
    from tqdm.auto import tqdm

    cfg = trainer.cfg
    bar = tqdm(total=cfg.max_steps, initial=trainer.iteration, desc=desc, disable=not trainer.progress)
    limit, bad_run = getattr(cfg, "max_nonfinite_iterations", 3), 0
    while trainer.iteration < cfg.max_steps:
        metrics = trainer.step()
        bad_run = bad_run + 1 if metrics.get("skipped_updates", 0) and not metrics.get("applied_updates", 1) else 0
        if bad_run >= limit:
            bar.close()
            raise TrainingError(
                f"every update of the last {bad_run} iterations had a NaN/inf loss or gradient (skipped: the weights are "
                f"those of iteration {trainer.iteration - bad_run}); lower learning_rate, use loss_type=grpo or "
                "dual_clip, or check the reward's scale")
        last = trainer.iteration == cfg.max_steps
        report = trainer.iteration % cfg.log_every == 0 or last
        if trainer.evaluate is not None and report:
            metrics.update(trainer.evaluate(trainer.policy, trainer.iteration))
        if trainer.logger is not None and report:
            trainer.logger.log(trainer.iteration, metrics)
        if trainer.out_dir is not None and (trainer.iteration % cfg.save_every == 0 or last):
            trainer.save()
        bar.update(1)
        bar.set_postfix({k.removesuffix("_mean"): f"{metrics[k]:.3f}" for k in postfix if k in metrics})
    bar.close()
    if trainer.out_dir is not None:
        plot_reward_curves(trainer.out_dir, title=title)
    return trainer.history


def plot_reward_curves(out_dir: str | Path, *, title: str) -> None:
    """``reward.png`` from ``metrics.jsonl``: the training reward and any evaluation curves logged with it."""
    out_dir = Path(out_dir)
    recs = read_jsonl(out_dir / "metrics.jsonl")
    if not recs:
        return
    its = [r["step"] for r in recs]
    series = {"reward (train)": (its, [r["reward_mean"] for r in recs])}
    for key in ("eval_reward", "pred_activity"):
        pts = [(r["step"], r[key]) for r in recs if key in r]
        if pts:
            series[key] = ([p[0] for p in pts], [p[1] for p in pts])
    plot_curves(out_dir / "reward.png", series, xlabel="iteration", ylabel="reward", title=title)


def read_run_state(out_dir: str | Path, *, fmt: str, fingerprint: str | None, what: str = "run") -> tuple[dict, dict]:
    """Read ``<out>/state`` (``trainer.pt`` + ``policy.safetensors``) written by a trainer's ``save``.

    Checks the format tag and that the run started from the base model with ``fingerprint``; any
    problem is one actionable :class:`~sepo.errors.CheckpointError`. Returns ``(state, policy_weights)``.
    """
    import torch
    from safetensors.torch import load_file

    from sepo.errors import CheckpointError

    path = Path(out_dir) / "state"
    if not (path / "trainer.pt").is_file():
        raise CheckpointError(f"no {what} state in {path}; start without --resume")
    try:
        state = torch.load(path / "trainer.pt", weights_only=False)
        weights = load_file(str(path / "policy.safetensors"))
    except Exception as e:
        raise CheckpointError(f"{what} state in {path} is unreadable ({type(e).__name__}); delete it or start a new --out") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(f"{path} is not a {what} state")
    if state["reference"].get("fingerprint") != fingerprint:
        raise CheckpointError(f"the base model given differs from the one the run in {out_dir} started from "
                              "(weights fingerprint mismatch); resume with the same base model")
    return state, weights
