"""Metric logging to stdout, a JSONL file and TensorBoard, plus PNG curves.

``MetricLogger(out_dir)`` appends one JSON object per ``log`` call to ``metrics.jsonl`` (flushed, so
an interrupted run keeps what it logged), mirrors scalars to TensorBoard under ``tb/`` and prints a
compact line. ``plot_curves`` draws PNGs with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path


class MetricLogger:
    def __init__(self, out_dir: str | Path, *, filename: str = "metrics.jsonl", tensorboard: bool = True,
                 stdout: bool = True, resume: bool = False):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / filename
        if not resume and self.path.exists():
            self.path.unlink()
        self._fh = open(self.path, "a")
        self.stdout = stdout
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tb"))
            except Exception:  # tensorboard missing: keep going with JSONL + stdout
                self._tb = None
        self._t0 = time.time()

    def log(self, step: int, metrics: dict, *, prefix: str = "") -> None:
        rec = {"step": int(step), "time": round(time.time() - self._t0, 3)}
        for k, v in metrics.items():
            rec[f"{prefix}{k}"] = _plain(v)
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for k, v in rec.items():
                if k not in ("step", "time") and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
        if self.stdout:
            shown = " ".join(f"{k}={_fmt(v)}" for k, v in rec.items() if k not in ("time",) and not isinstance(v, (list, dict)))
            print(shown, file=sys.stdout, flush=True)

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _plain(v):
    if hasattr(v, "item") and getattr(v, "numel", lambda: 1)() == 1:
        return v.item()
    return v


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(path: str | Path, series: dict[str, tuple[list, list]], *, xlabel: str = "step", ylabel: str = "",
                title: str = "", bands: dict[str, tuple[list, list]] | None = None) -> None:
    """Write a PNG with one line per ``name -> (xs, ys)``; optional ``bands`` (lo, hi) shading per name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, label=name)
        if bands and name in bands:
            lo, hi = bands[name]
            ax.fill_between(xs, lo, hi, alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: str | Path) -> None:
    """Write a matplotlib figure as a PNG atomically (no half-written plot) and close it."""
    import matplotlib.pyplot as plt

    from sepo.utils.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
