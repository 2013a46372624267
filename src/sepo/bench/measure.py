"""Measuring instruments for the benchmarks: wall clock, peak memory, network passes, machine description.

* :class:`PeakMemory` — peak memory of a block. CUDA: ``torch.cuda.max_memory_allocated`` above the
  memory allocated when the block starts. CPU: the process' resident-set high-water mark (``VmHWM``),
  reset at the start of the block through ``/proc/self/clear_refs`` (Linux >= 4.0), above the resident
  set at the start. ``tracemalloc`` does not see torch's allocations, hence RSS. To make RSS follow
  tensor lifetimes, glibc is told (once) to serve allocations of 1 MiB and more with ``mmap`` — freed
  tensors then go back to the OS — and is trimmed before each measurement.
* :class:`PassCounter` — counts *network passes* (sequence-forwards: one per sequence per call, the
  unit of :attr:`sepo.diffusion.DiffusionModel.network_passes`) per labelled phase, per model and with
  or without gradient, through forward pre-hooks on the models' networks (nothing is modified).
* :func:`synchronize`, :func:`machine_info`, :func:`tensor_digest`.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import hashlib
import os
import platform
import time
from collections import defaultdict

import torch

__all__ = ["PeakMemory", "PassCounter", "Stopwatch", "synchronize", "machine_info", "tensor_digest"]

_MMAP_THRESHOLD_SET = False


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): RSS still works, just less tightly
        return None


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the peak resident set size to the current one (proc(5))
        return True
    except OSError:
        return False


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued GPU work so wall-clock readings cover it (no-op on CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """``with PeakMemory(device) as mem: ...`` then ``mem.peak_mb`` (MiB above the start) and ``mem.method``.

    ``peak_mb`` is ``None`` when the platform offers no way to measure it (``method == "unavailable"``).
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.peak_mb: float | None = None
        self.method = "unavailable"

    def __enter__(self):
        global _MMAP_THRESHOLD_SET
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.method = "cuda_max_memory_allocated"
            return self
        libc = _libc()
        if libc is not None:
            if not _MMAP_THRESHOLD_SET:
                libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB (also stops glibc's dynamic raising)
                _MMAP_THRESHOLD_SET = True
            libc.malloc_trim(0)
        self._start = _proc_status_kib("VmRSS")
        self._resettable = self._start is not None and _reset_rss_peak()
        self.method = "rss_high_water_mark" if self._resettable else "unavailable"
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
        elif self._resettable:
            hwm = _proc_status_kib("VmHWM")
            self.peak_mb = None if hwm is None else max(hwm - self._start, 0) / 1024
        return False


class Stopwatch:
    """Accumulates wall-clock seconds per label: ``with sw("rollout"): ...``; GPU work is synchronised."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, label: str):
        synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[label] += time.perf_counter() - t0


class PassCounter:
    """Counts network passes per phase, model and gradient mode.

    Args:
        models: ``{name: DiffusionModel}``; a forward pre-hook on each ``model.net`` adds the batch size
            ``x_t.shape[0]`` to ``counts[(phase, name, "grad" | "no_grad")]``.

    Use ``with counter.phase("rollout"): ...`` to label passes (nested labels override; outside any
    label passes count under ``"other"``). Call :meth:`close` to remove the hooks.
    """

    def __init__(self, models: dict):
        self.counts: dict[tuple[str, str, str], int] = defaultdict(int)
        self.current = "other"
        self._handles = []
        for name, model in models.items():
            if model is None:
                continue
            self._handles.append(model.net.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, inputs):
            x_t = inputs[0]
            mode = "grad" if torch.is_grad_enabled() else "no_grad"
            self.counts[(self.current, name, mode)] += int(x_t.shape[0])

        return hook

    @contextlib.contextmanager
    def phase(self, label: str):
        previous, self.current = self.current, label
        try:
            yield
        finally:
            self.current = previous

    def total(self, *, phase: str | None = None, model: str | None = None, mode: str | None = None) -> int:
        """Passes matching the given phase / model / mode (``None``: any)."""
        return sum(n for (p, m, g), n in self.counts.items()
                   if (phase is None or p == phase) and (model is None or m == model) and (mode is None or g == mode))

    def by_phase(self) -> dict[str, dict[str, int]]:
        """``{phase: {"total", "grad", "no_grad", "<model>": passes}}``."""
        out: dict[str, dict[str, int]] = {}
        for (p, m, g), n in self.counts.items():
            d = out.setdefault(p, {"total": 0, "grad": 0, "no_grad": 0})
            d["total"] += n
            d[g] += n
            d[m] = d.get(m, 0) + n
        return out

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def tensor_digest(x: torch.Tensor) -> str:
    """Short sha256 of a tensor's values (shows that two runs used the same batch)."""
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str = "cpu") -> dict:
    """Where and when the benchmark ran: CPU model, usable cores, threads, torch, GPU, date."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cpu_cores_usable": cores,
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info
