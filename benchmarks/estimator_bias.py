"""Bias and variance of every policy-gradient estimator against the exact gradient, in exact worlds.

For each world (a model + a reward table over all ``V^L`` sequences) we compute the exact gradient of
``J(θ) = E_{x ~ π_θ}[r(x)]`` (``π_θ``: the sampler's exact output law, differentiated by autograd), then
each estimator's mean gradient over ``N`` rollouts (advantage ``r - J``), and report:

* ``cosine`` and ``rel_error`` of the mean gradient against the exact one;
* ``exact_cosine`` for estimators with no internal randomness beyond ``x`` (expectation by enumeration);
* ``var_per_sample``: total variance of one sample's gradient (batch-means estimate), and
  ``var_x_passes``: that variance times the network passes per sample (lower = more efficient).

Then it fine-tunes in the toy world (β = 0.1, the ``toy/tiny`` recipe) with every estimator and with the
exact gradient of the same objective, reporting the total variation reached to ``π_ref exp(r/β)/Z``.

    python benchmarks/estimator_bias.py --out benchmarks/results/estimator_bias [--quick]

Writes ``estimator_bias.json`` and ``estimator_bias.md`` into ``--out``; ``docs/estimators.md`` quotes them.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

from sepo.diffusion import DiffusionModel, SamplerConfig, make_process
from sepo.rl.diagnostics import estimator_gradient
from sepo.rl.estimators import make_estimator
from sepo.rl.rollout import Rollout, collect_rollouts
from sepo.tasks.toy.exact import ExactDenoiser, enumerate_states, total_variation
from sepo.tasks.toy.objectives import exact_objective, flat_grad
from sepo.tasks.toy.world import MLPDenoiser, ToyWorldConfig, make_toy_world, tilted_optimum
from sepo.utils.io import write_json, write_text

ESTIMATORS = [
    ("sepo", {}),
    ("sepo", {"sepo_positions": 1}),
    ("sepo-snis", {"num_snis_samples": 4}),
    ("trajectory", {}),
    ("trajectory", {"trajectory_steps": 2}),
    ("elbo", {"elbo_samples": 4}),
]


class ProductNet(nn.Module):
    """Masked denoiser with output law ``Π_i softmax(θ_i)``: positions independent (sepo's assumption)."""

    def __init__(self, length, vocab, seed):
        super().__init__()
        self.length, self.vocab = length, vocab
        self.theta = nn.Parameter(torch.randn(length, vocab, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x_t, sigma_bar):
        return self.theta.expand(x_t.shape[0], self.length, self.vocab)


def worlds(L: int, V: int, steps: int, seed: int):
    """(name, description, model, reward table) for each world."""
    g = torch.Generator().manual_seed(seed)
    reward = torch.rand(V**L, generator=g).double()
    p0 = torch.softmax(torch.randn(V**L, generator=g, dtype=torch.float64) * 1.5, 0)
    masked = make_process("masked", V)
    uniform = make_process("uniform", V)
    out = []
    out.append(("product (masked)", "per-position categoricals: positions independent",
                DiffusionModel(ProductNet(L, V, seed), masked, parameterization="subs", time_conditioned=False), reward))
    out.append(("tabular perfect-ratio (masked)", "scores are exact ratios of one learnable law softmax(ℓ) over V^L",
                DiffusionModel(ExactDenoiser(p0.log(), masked, L, learnable=True), masked, parameterization="subs",
                               time_conditioned=False), reward))
    tab = make_toy_world(ToyWorldConfig(length=L, vocab_size=V, sampling_steps=steps, model="tabular", seed=seed))
    out.append(("tabular denoiser (masked)", "one free row of logits per noisy state", tab.model, tab.reward_table.double()))
    mlp = make_toy_world(ToyWorldConfig(length=L, vocab_size=V, sampling_steps=steps, model="mlp", seed=seed), pretrain_steps=800)
    out.append(("neural MLP (masked)", "2-layer MLP denoiser pretrained on p0", mlp.model, mlp.reward_table.double()))
    uni = make_toy_world(ToyWorldConfig(length=L, vocab_size=V, sampling_steps=steps, model="mlp", process="uniform", seed=seed),
                         pretrain_steps=800)
    out.append(("neural MLP (uniform)", "time-conditioned MLP denoiser, uniform process", uni.model, uni.reward_table.double()))
    return out


def measure(model, reward, L, cfg, name, kw, n, seed):
    params = [p for p in model.parameters() if p.requires_grad]
    exact = exact_objective(model, L, cfg, reward)
    g_exact = flat_grad(exact["J"], params)
    pi = exact["pi"].detach()
    J = float((pi * reward).sum())
    est = make_estimator(name, **kw)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    ro = collect_rollouts(model, sampler=cfg, num_groups=1, group_size=n, length=L, generator=g,
                          keep_trajectory=est.needs_trajectory)
    est.draw(model, ro, g)
    adv = (reward[_index(ro.x, model.vocab_size)] - J).float()
    chunks = 20
    size = n // chunks
    means = []
    for c in range(chunks):
        sub = _subset(ro, torch.arange(c * size, (c + 1) * size))
        means.append(estimator_gradient(model, est, sub, adv[c * size:(c + 1) * size], chunk=2048))
    means = torch.stack(means)
    g_mean = means.mean(0)
    var_per_sample = float(means.var(0).sum() * size)
    passes = est.passes_per_sample(ro)
    res = {
        "estimator": name + "".join(f" {k}={v}" for k, v in kw.items()),
        "samples": n,
        "cosine": _cos(g_mean, g_exact),
        "rel_error": float((g_mean - g_exact).norm() / g_exact.norm()),
        "passes_per_sample": passes,
        "var_per_sample": var_per_sample,
        "var_x_passes": var_per_sample * passes,
        "grad_norm_exact": float(g_exact.norm()),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if name in ("sepo",) and not kw:  # no randomness beyond x: exact expectation by enumeration
        x = enumerate_states(L, model.vocab_size)
        full = Rollout(x, 1, x.shape[0], cfg, [])
        est.draw(model, full, g)
        w = ((reward - J) * pi * x.shape[0]).float()
        res["exact_cosine"] = _cos(estimator_gradient(model, est, full, w), g_exact)
    return res


def _index(x, V):
    from sepo.tasks.toy.exact import state_index

    return state_index(x, V)


def _subset(ro: Rollout, idx):
    sub = Rollout(ro.x[idx], 1, len(idx), ro.sampler, ro.steps,
                  None if ro.trajectory is None else [t[idx] for t in ro.trajectory])
    sub.aux = {k: v[idx] for k, v in ro.aux.items()}
    return sub


def _cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-300))


def finetune_tv(estimators, iterations: int, seed: int):
    """TV to the tilted optimum reached by each estimator with the toy recipe, and by the exact gradient."""
    from sepo.rl.recipes import finetune_config, run_finetune

    rows = []
    for name, kw in estimators:
        cfg = finetune_config("toy", "tiny", overrides={"estimator": name, "max_steps": iterations, "seed": seed, **kw})
        t0 = time.perf_counter()
        s = run_finetune("toy", cfg, out=None, progress=False)
        rows.append({"estimator": name + "".join(f" {k}={v}" for k, v in kw.items()), "tv_to_optimum": s["tv_to_optimum"],
                     "expected_reward": s["expected_reward"], "seconds": round(time.perf_counter() - t0, 1)})
    # exact ascent on the same objective (path KL over all steps), same schedule and step count
    cfg = finetune_config("toy", "tiny", overrides={"max_steps": iterations})
    world = make_toy_world(ToyWorldConfig(sampling_steps=cfg.sampling_steps))
    ref = copy.deepcopy(world.model)
    reward = world.reward_table.double()
    with torch.no_grad():
        pi_ref = world.output_distribution()
    target = tilted_optimum(pi_ref, world.reward_table, cfg.beta)
    opt = torch.optim.Adam(world.model.parameters(), lr=cfg.learning_rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
    t0 = time.perf_counter()
    for _ in range(iterations):
        out = exact_objective(world.model, 3, world.sampler, reward, reference=ref, beta=cfg.beta)
        opt.zero_grad()
        (-out["objective"]).backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        pi = world.output_distribution()
    rows.append({"estimator": "exact gradient (reference line)", "tv_to_optimum": total_variation(pi, target),
                 "expected_reward": float((pi * reward).sum()), "seconds": round(time.perf_counter() - t0, 1)})
    return rows, {"tv_reference_to_optimum": total_variation(pi_ref, target),
                  "expected_reward_reference": float((pi_ref * reward).sum()),
                  "expected_reward_optimum": float((target * reward).sum())}


def to_markdown(res) -> str:
    lines = [f"# Estimator bias and variance in exact worlds\n",
             f"L = {res['config']['L']}, |V| = {res['config']['V']}, {res['config']['steps']} ancestral steps, "
             f"N = {res['config']['samples']} rollouts per estimator, seed {res['config']['seed']}. "
             "Cosine / relative error of the mean gradient against the exact ∇J; `exact cos` = expectation by "
             "enumeration (no sampling noise); variance = total variance of one sample's gradient; "
             "var×passes = that times network passes per sample (lower is more efficient).\n"]
    for world in res["worlds"]:
        lines.append(f"\n## {world['world']}\n\n{world['description']}\n")
        lines.append("| estimator | cosine | rel. error | exact cos | passes/sample | variance | var×passes |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in world["rows"]:
            ec = f"{r['exact_cosine']:.4f}" if "exact_cosine" in r else "–"
            lines.append(f"| {r['estimator']} | {r['cosine']:.4f} | {r['rel_error']:.3f} | {ec} | {r['passes_per_sample']:.1f} | "
                         f"{r['var_per_sample']:.3g} | {r['var_x_passes']:.3g} |")
    if res.get("finetune"):
        f = res["finetune"]
        lines.append(f"\n## Fine-tuning to the KL-regularised optimum (toy/tiny recipe, β = {f['beta']}, {f['iterations']} iterations)\n")
        lines.append(f"TV(π_ref, π*) = {f['summary']['tv_reference_to_optimum']:.3f}; E_ref[r] = "
                     f"{f['summary']['expected_reward_reference']:.3f}, E_π*[r] = {f['summary']['expected_reward_optimum']:.3f}.\n")
        lines.append("| estimator | TV to optimum | E[r] | seconds |")
        lines.append("|---|---|---|---|")
        for r in f["rows"]:
            lines.append(f"| {r['estimator']} | {r['tv_to_optimum']:.4f} | {r['expected_reward']:.4f} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/estimator_bias")
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--finetune-iterations", type=int, default=400)
    ap.add_argument("--quick", action="store_true", help="small sample counts, no fine-tuning (smoke test)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    L, V = 3, 3
    n = 2000 if args.quick else args.samples
    cfg = SamplerConfig(name="ancestral", steps=args.steps)
    res = {"config": {"L": L, "V": V, "steps": args.steps, "samples": n, "seed": args.seed},
           "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
           "machine": {"platform": platform.platform(), "processor": platform.processor()}, "worlds": []}
    for wname, desc, model, reward in worlds(L, V, args.steps, args.seed):
        rows = []
        for name, kw in ESTIMATORS:
            r = measure(model, reward, L, cfg, name, kw, n, args.seed)
            print(f"{wname:34s} {r['estimator']:28s} cos={r['cosine']:.4f} rel={r['rel_error']:.3f} "
                  f"var*passes={r['var_x_passes']:.3g}", flush=True)
            rows.append(r)
        res["worlds"].append({"world": wname, "description": desc, "rows": rows})
    if not args.quick:
        ft_est = [("sepo", {}), ("sepo-snis", {"num_snis_samples": 4}), ("trajectory", {}), ("elbo", {"elbo_samples": 4})]
        rows, summary = finetune_tv(ft_est, args.finetune_iterations, args.seed)
        for r in rows:
            print(f"finetune {r['estimator']:34s} TV={r['tv_to_optimum']:.4f}", flush=True)
        res["finetune"] = {"beta": 0.1, "iterations": args.finetune_iterations, "rows": rows, "summary": summary}
    out = Path(args.out)
    write_json(out / "estimator_bias.json", res)
    write_text(out / "estimator_bias.md", to_markdown(res))
    print(f"wrote {out}/estimator_bias.json and .md")


if __name__ == "__main__":
    main()
