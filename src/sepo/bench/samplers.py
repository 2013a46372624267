"""Sampler throughput: sequences per second of every sampler, and the effect of the execution options.

Each case draws ``num_samples`` sequences of length ``L`` from scratch with :func:`sepo.diffusion.sample`
on one model and one seed and records seconds, network passes (sequence-forwards), sequences/s and peak
memory. Variants of one case isolate one option each:

* ``ancestral_cached`` vs ``ancestral`` — MDLM's caching: the denoiser of a masked model without time
  input only changes when a token changes, and at ``T >> L`` most steps change none;
* ``inference_mode`` — the rollout under ``torch.inference_mode`` instead of ``torch.no_grad``;
* ``batch_size`` — chunks under a memory budget (same output law, less peak memory);
* ``compile`` — ``torch.compile`` of the network (first call = compilation, timed separately);
* ``autocast_bf16`` — bfloat16 autocast of the network (GPU).
"""

from __future__ import annotations

import contextlib
import copy
import time

import torch

from sepo.diffusion.model import DiffusionModel
from sepo.diffusion.sampling import SamplerConfig, sample

from .measure import PeakMemory, synchronize

__all__ = ["sampler_cases", "time_sampler", "run_sampler_benchmark"]


def sampler_cases(*, steps: list[int], corrector_at: list[int], samplers: list[str]) -> list[dict]:
    """The grid: every sampler at every ``T`` in ``steps``; with one corrector step at each ``T`` in ``corrector_at``."""
    cases = []
    for T in steps:
        for name in samplers:
            cases.append({"sampler": name, "steps": T, "corrector_steps": 0})
            if T in corrector_at:
                cases.append({"sampler": name, "steps": T, "corrector_steps": 1})
    return cases


def time_sampler(model: DiffusionModel, *, sampler: str, steps: int, corrector_steps: int = 0, num_samples: int,
                 length: int, seed: int, device, batch_size: int | None = None, inference_mode: bool = False,
                 autocast_dtype: torch.dtype | None = None) -> dict:
    """Draw ``num_samples`` sequences once and measure it (see module docstring)."""
    device = torch.device(device)
    cfg = SamplerConfig(name=sampler, steps=steps, corrector_steps=corrector_steps)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    grad_ctx = torch.inference_mode() if inference_mode else contextlib.nullcontext()
    amp_ctx = torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    with PeakMemory(device) as mem, grad_ctx, amp_ctx:
        synchronize(device)
        t0 = time.perf_counter()
        out = sample(model, num_samples=num_samples, length=length, config=cfg, generator=generator, device=device,
                     batch_size=batch_size)
        synchronize(device)
        seconds = time.perf_counter() - t0
    return {
        "sampler": sampler, "steps": steps, "corrector_steps": corrector_steps, "num_samples": num_samples,
        "batch_size": batch_size, "inference_mode": inference_mode,
        "autocast": None if autocast_dtype is None else str(autocast_dtype).replace("torch.", ""),
        "seconds": round(seconds, 4), "network_passes": int(out.network_passes),
        "passes_per_sequence": round(out.network_passes / num_samples, 2),
        "sequences_per_second": round(num_samples / seconds, 4),
        "peak_memory_mb": None if mem.peak_mb is None else round(mem.peak_mb, 1),
        "all_clean": bool((out.x < model.vocab_size).all() and (out.x >= 0).all()),
    }


def _compiled_copy(model: DiffusionModel) -> DiffusionModel:
    compiled = copy.deepcopy(model)
    compiled.net = torch.compile(compiled.net, dynamic=True)  # the cached sampler calls it with varying batch sizes
    return compiled


def run_sampler_benchmark(model: DiffusionModel, *, cases: list[dict], num_samples: int, length: int, seed: int,
                          device, chunk_batch_size: int | None, compile: bool, autocast: bool,
                          progress: bool = True) -> dict:
    """Run the grid of ``cases`` and the option variants; return ``{"cases", "variants", "gains", ...}``."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    model = model.to(device).eval()
    common = dict(num_samples=num_samples, length=length, seed=seed, device=device)
    # warm-up (allocator, lazy initialisation) so the first case is not penalised
    time_sampler(model, sampler="ancestral", steps=2, **common)
    results = []
    for case in tqdm(cases, desc="samplers", disable=not progress):
        try:
            results.append(time_sampler(model, **case, **common))
        except ValueError as e:  # a sampler that does not apply to this model
            results.append({**case, "skipped": str(e)})
    variants = []
    base = dict(sampler="ancestral", steps=min(c["steps"] for c in cases), corrector_steps=0)
    variants.append({"variant": "inference_mode", **time_sampler(model, **base, inference_mode=True, **common)})
    if chunk_batch_size is not None and chunk_batch_size < num_samples:
        cached = dict(base, sampler="ancestral_cached")
        variants.append({"variant": f"batch_size={chunk_batch_size}",
                         **time_sampler(model, **cached, batch_size=chunk_batch_size, **common)})
    if autocast:
        variants.append({"variant": "autocast_bf16", **time_sampler(model, **base, autocast_dtype=torch.bfloat16, **common)})
    if compile:
        variants.append(_time_compiled(model, base, common))
    return {"cases": results, "variants": variants, "gains": _gains(results)}


def _time_compiled(model: DiffusionModel, base: dict, common: dict) -> dict:
    t0 = time.perf_counter()
    try:
        compiled = _compiled_copy(model)
        time_sampler(compiled, sampler="ancestral", steps=2, **common)  # compiles
        compile_seconds = time.perf_counter() - t0
        row = time_sampler(compiled, **base, **common)
        return {"variant": "compile", "compile_seconds": round(compile_seconds, 2), **row}
    except Exception as e:  # compilation needs a working toolchain; report instead of failing the benchmark
        return {"variant": "compile", **base, "skipped": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def _gains(results: list[dict]) -> list[dict]:
    """Throughput of ``ancestral_cached`` over ``ancestral`` at each ``T`` (same corrector setting)."""
    out = []
    key = {(r["sampler"], r["steps"], r["corrector_steps"]): r for r in results if "skipped" not in r}
    for (name, T, corr), r in key.items():
        plain = key.get(("ancestral", T, corr))
        if name == "ancestral_cached" and plain is not None:
            out.append({"steps": T, "corrector_steps": corr,
                        "throughput_gain": round(r["sequences_per_second"] / plain["sequences_per_second"], 3),
                        "pass_reduction": round(plain["network_passes"] / max(r["network_passes"], 1), 3)})
    return out
