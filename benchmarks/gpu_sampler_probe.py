"""Where does a GPU rollout's time go? (issue 5, follow-up of ``gpu_check.sh``)

The first GPU check (``results/gpu/``) found the full DNA CNN's ancestral sampler at 3.4 ms per step for
64 sequences of length 200 on an H200: far below what the card can do, i.e. the loop is bound by kernel
launches and host round trips, not by arithmetic. This probe measures, on one model with random weights:

1. throughput against the batch (64 ... 2048 sequences): if seq/s grows ~linearly, each step is overhead-bound;
2. host synchronisations per sampler step (``aten::item`` / ``aten::_local_scalar_dense`` / ``aten::nonzero``
   counted by the profiler on a short draw), the usual cause of a stalled launch queue;
3. ``torch.compile`` of the network, default mode and ``reduce-overhead`` (CUDA graphs), at a fixed batch.

Usage: ``python benchmarks/gpu_sampler_probe.py --out DIR [--device cuda] [--no-compile]``; writes
``DIR/sampler_probe.json`` and prints one line per measurement.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from sepo.bench.measure import machine_info, synchronize
from sepo.bench.samplers import time_sampler
from sepo.diffusion import SamplerConfig, sample
from sepo.models import build_model, preset_config


def host_syncs_per_step(model, *, sampler: str, steps: int, num_samples: int, length: int, device) -> dict:
    """Profile one short draw and count the ops that make the host wait for the device, per step."""
    cfg = SamplerConfig(name=sampler, steps=steps)
    names = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero",  # (CPU tensors too)
             "cudaStreamSynchronize", "cudaMemcpyAsync", "cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.device(device).type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        sample(model, num_samples=num_samples, length=length, config=cfg,
               generator=torch.Generator().manual_seed(0), device=device)
    counts = {e.key: e.count for e in prof.key_averages() if e.key in names}
    return {name: round(counts.get(name, 0) / (steps + 1), 2) for name in names}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="dna-full")
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--batches", default="64,256,1024,2048")
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(preset_config(args.model)).to(device).eval()
    common = dict(length=args.length, seed=0, device=device)
    result = {"machine": machine_info(device), "model": args.model, "length": args.length, "steps": args.steps,
              "batch_scan": [], "host_syncs_per_step": {}, "compile": []}

    def log(row):
        print(json.dumps(row), flush=True)

    time_sampler(model, sampler="ancestral", steps=4, num_samples=8, **common)  # warm-up (cuDNN autotune, allocator)
    for n in [int(b) for b in args.batches.split(",")]:
        for sampler in ("ancestral", "ancestral_cached"):
            row = time_sampler(model, sampler=sampler, steps=args.steps, num_samples=n, **common)
            row["ms_per_step"] = round(1000 * row["seconds"] / (args.steps + 1), 3)
            result["batch_scan"].append(row)
            log(row)
    for sampler in ("ancestral", "ancestral_cached"):
        result["host_syncs_per_step"][sampler] = host_syncs_per_step(model, sampler=sampler, steps=16, num_samples=64,
                                                                     length=args.length, device=device)
        log({sampler: result["host_syncs_per_step"][sampler]})
    if not args.no_compile:
        base = time_sampler(model, sampler="ancestral", steps=args.steps, num_samples=64, **common)
        result["compile"].append({"variant": "eager", **base})
        for mode in ("default", "reduce-overhead"):
            compiled = copy.deepcopy(model)
            try:
                compiled.net = torch.compile(compiled.net, mode=mode, dynamic=False)
                t0 = time.perf_counter()
                for _ in range(3):  # compile, then let CUDA graphs record (they need a few calls at a fixed shape)
                    time_sampler(compiled, sampler="ancestral", steps=2, num_samples=64, **common)
                synchronize(device)
                compile_s = time.perf_counter() - t0
                row = time_sampler(compiled, sampler="ancestral", steps=args.steps, num_samples=64, **common)
                row = {"variant": f"compile-{mode}", "compile_seconds": round(compile_s, 1), **row,
                       "speedup_vs_eager": round(base["seconds"] / row["seconds"], 2)}
            except Exception as e:  # report, do not hide: a failing mode is a result too
                row = {"variant": f"compile-{mode}", "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            result["compile"].append(row)
            log(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampler_probe.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'sampler_probe.json'}")


if __name__ == "__main__":
    main()
