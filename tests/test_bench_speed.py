"""``sepo bench speed``: exact network-pass counts per phase and estimator, the files it writes, the
cached sampler's savings, and the unbiased KL-step subsampling it relies on.

Every count below is computed by hand from the settings (and, for the trajectory estimator, from the
recorded trajectory) and compared with what the benchmark's hooks and the models' own counters saw.
Models are the tiny random networks of ``conftest.py`` (L = 3, |V| = 3, masked, SUBS).
"""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from sepo import cli
from sepo.bench.iteration import (NoEstimator, extrapolate_reference, reference_counts, time_iteration, time_rollout,
                                  time_snis_fraction)
from sepo.bench.samplers import time_sampler
from sepo.bench.speed import ENTRIES, SpeedConfig, run_speed
from sepo.rl.config import FinetuneConfig
from sepo.rl.kl import subsample_kl_steps
from sepo.rl.rewards import Reward

L, V = 3, 3
REWARD = Reward("sum", lambda x: x.float().sum(-1))


@pytest.fixture(scope="module")
def model(make_tiny_model):
    # no time input: the cached sampler applies; a masked SUBS model like the DNA CNN
    return make_tiny_model("masked", length=L, vocab=V, time_conditioned=False, seed=3)


def _cfg(**kw):
    base = dict(num_generations=2, num_groups=2, num_iterations=2, sampling_steps=6, beta=0.05, kl_truncation_steps=4,
                kl_sample_steps=None,
                max_steps=1, seed=5)
    base.update(kw)
    return FinetuneConfig(**base)


N, T, K, TRUNC = 4, 6, 2, 4  # batch G*B, predictor steps, epochs, KL steps (as in _cfg)


def _phase(entry, name):
    return entry["phases"][name]


def test_rollout_only_is_G_B_T_plus_final_step(model):
    e = time_rollout(model, _cfg(), length=L)
    assert e["network_passes"] == N * (T + 1)  # T predictor steps + the final denoising step, no caching
    assert _phase(e, "rollout")["grad_passes"] == 0


@pytest.mark.parametrize("positions,kl_steps", [(2, None), (1, 2)])
def test_sepo_passes_per_phase(model, positions, kl_steps):
    e = time_iteration(model, _cfg(estimator="sepo", sepo_positions=positions, kl_sample_steps=kl_steps),
                       reward=REWARD, length=L)
    k = TRUNC if kl_steps is None else kl_steps
    assert _phase(e, "rollout")["passes"] == N * (T + 1)
    prep = _phase(e, "prepare")
    # reference kernels + old policy's KL at k steps, then one masked copy per scored position (no gradient)
    assert prep["detail"]["kl_reference_passes"] == N * k
    assert prep["detail"]["kl_passes"] == 2 * N * k
    assert prep["detail"]["estimator_passes"] == N * positions
    assert prep["grad_passes"] == 0
    assert _phase(e, "update")["passes"] == _phase(e, "update")["grad_passes"] == K * N * positions
    assert _phase(e, "kl")["passes"] == _phase(e, "kl")["grad_passes"] == K * N * k
    assert e["estimator_passes"] == (1 + K) * N * positions
    assert e["network_passes"] == N * (T + 1) + (2 + K) * N * k + (1 + K) * N * positions
    assert _phase(e, "reward")["passes"] == 0


def test_snis_all_neighbours_matches_formula(model):
    M = 2
    e = time_iteration(model, _cfg(estimator="sepo-snis", num_snis_samples=M, snis_neighbours=None), reward=REWARD, length=L)
    counts = reference_counts(num_samples=N, length=L, vocab_size=V, snis_samples=M, epochs=K)
    assert counts["candidates_per_sample"] == 1 + L * (V - 1)
    per_eval = N * (1 + L * (V - 1)) * M
    # ours: the old policy's candidate likelihoods once (they give the SNIS weights and the old surrogate),
    # then one evaluation per epoch with gradient; the reference redoes the old policy's every epoch
    assert _phase(e, "prepare")["detail"]["estimator_passes"] == per_eval
    assert counts["no_grad_passes"] == K * per_eval
    assert _phase(e, "update")["grad_passes"] == counts["grad_passes"] == K * per_eval


def test_trajectory_passes_are_the_changed_steps(model):
    e = time_iteration(model, _cfg(estimator="trajectory"), reward=REWARD, length=L)
    traj = torch.stack(e["rollout"].trajectory)  # [steps + 1, N, L]
    changed_steps = int((traj[1:] != traj[:-1]).any(-1).sum())  # (sample, step) pairs that carry θ
    assert changed_steps <= N * (T + 1)
    assert _phase(e, "prepare")["detail"]["estimator_passes"] == changed_steps
    assert _phase(e, "update")["grad_passes"] == K * changed_steps


def test_elbo_and_no_estimator(model):
    e = time_iteration(model, _cfg(estimator="elbo", elbo_samples=3), reward=REWARD, length=L)
    assert e["estimator_passes"] == (1 + K) * N * 3
    none = time_iteration(model, _cfg(), reward=REWARD, length=L, estimator=NoEstimator())
    assert none["estimator_passes"] == 0
    assert none["network_passes"] == N * (T + 1) + (2 + K) * N * TRUNC
    assert none["batch_digest"] == e["batch_digest"]  # same seed -> same rollout batch


def test_snis_fraction_and_extrapolation(model):
    shared = time_iteration(model, _cfg(), reward=REWARD, length=L, estimator=NoEstimator())
    frac = time_snis_fraction(model, shared["rollout"], snis_samples=2, neighbours=3, num_samples=1, epsilon=0.2,
                              seed=0, device="cpu")
    assert frac["passes_per_sample_per_evaluation"] == (1 + 3) * 2
    assert frac["no_grad_passes"] == 8 and frac["grad_passes"] == 8  # prepare evaluates the old policy once
    counts = reference_counts(num_samples=N, length=L, vocab_size=V, snis_samples=2, epochs=K)
    ref = extrapolate_reference(shared, frac, counts)
    expected = (shared["seconds_per_iteration"] + counts["no_grad_passes"] * frac["seconds_per_no_grad_pass"]
                + counts["grad_passes"] * frac["seconds_per_grad_pass"])
    assert ref["seconds_per_iteration"] == pytest.approx(expected, abs=1e-3)
    assert ref["network_passes"] == shared["network_passes"] + counts["no_grad_passes"] + counts["grad_passes"]
    assert ref["measured"] is False and "extrapolated" in ref["phases"]["update"]["source"]


def test_cached_sampler_makes_fewer_passes(model):
    common = dict(steps=60, num_samples=4, length=L, seed=1, device="cpu")
    plain = time_sampler(model, sampler="ancestral", **common)
    cached = time_sampler(model, sampler="ancestral_cached", **common)
    assert plain["network_passes"] == 4 * 61
    # 3 tokens over 60 steps: a sequence changes at most 3 times (+ the first pass and the final step)
    assert cached["network_passes"] <= 4 * (1 + 3 + 1) < plain["network_passes"]
    assert plain["all_clean"] and cached["all_clean"]


def test_kl_step_subsampling_is_unbiased():
    f = torch.tensor([0.3, 1.1, 2.0, 0.7, 5.0])  # per-step KL values
    ids = list(range(5))
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert subsample_kl_steps(ids, None, g) == (ids, 1.0)
    assert subsample_kl_steps(ids, 7, g) == (ids, 1.0)
    assert torch.equal(g.get_state(), state)  # keeping all steps draws nothing: old runs stay reproducible
    draws, inclusion = 4000, torch.zeros(5)
    total = 0.0
    for _ in range(draws):
        kept, scale = subsample_kl_steps(ids, 2, g)
        assert scale == 2.5 and len(set(kept)) == 2 and kept == sorted(kept)
        inclusion[kept] += 1
        total += scale * float(f[kept].sum())
    assert torch.allclose(inclusion / draws, torch.full((5,), 0.4), atol=0.03)  # each step kept w.p. k/n
    assert total / draws == pytest.approx(float(f.sum()), rel=0.03)  # Horvitz-Thompson: unbiased sum


def test_run_speed_writes_documented_files(model, tmp_path):
    cfg = SpeedConfig(model="tiny", length=L, num_generations=2, num_groups=2, num_iterations=1, num_snis_samples=2,
                      sampling_steps=4, kl_truncation_steps=2, sepo_positions=1, kl_sample_steps=1,
                      reference_neighbours=2, grad_rows_budget=8, sampler_model=None, sampler_num_samples=2,
                      sampler_steps=[4], corrector_at=[4], samplers=["ancestral", "ancestral_cached"], chunk_batch_size=1)
    result = run_speed(cfg, out_dir=tmp_path, model=model, model_name="tiny", seed=0, preset="test", log=lambda m: None,
                       progress=False)
    data = json.loads((tmp_path / "speed.json").read_text())
    assert data["complete"] and data["same_batch"]
    assert set(data["entries"]) == set(ENTRIES)
    for name, e in data["entries"].items():
        for key in ("seconds_per_iteration", "network_passes", "peak_memory_mb", "phases", "time_vs_rollout_only",
                    "reference_time_ratio", "reference_passes_ratio", "settings", "label"):
            assert key in e, (name, key)
        assert e["seconds_per_iteration"] > 0 and e["network_passes"] > 0
    assert data["entries"]["rollout_only"]["network_passes"] == 4 * 5
    assert data["entries"]["reference"]["measured"] is False
    assert set(data["entries"]["sepo"]["phases"]) == {"rollout", "reward", "prepare", "update", "kl"}
    assert {"fewer_passes_iteration", "fewer_passes_estimator", "less_time", "near_rollout"} <= set(data["targets"])
    for key in ("date", "cpu", "cpu_cores_usable", "torch"):
        assert key in data["machine"]
    assert data["reference_counts"]["candidates_per_sample"] == 1 + L * (V - 1)
    samplers = data["samplers"]
    assert {(c["sampler"], c["corrector_steps"]) for c in samplers["cases"]} == {
        ("ancestral", 0), ("ancestral", 1), ("ancestral_cached", 0), ("ancestral_cached", 1)}
    assert samplers["gains"] and "throughput_gain" in samplers["gains"][0]
    md = (tmp_path / "speed.md").read_text()
    for fragment in ("| `reference` *extrapolated*", "| `sepo` |", "| `rollout_only` |", "## Targets",
                     "## Sampler throughput", "How the reference-style row was obtained"):
        assert fragment in md
    assert result["entries"]["sepo"]["network_passes"] == data["entries"]["sepo"]["network_passes"]


def test_cli_lists_and_runs_the_benchmark(tmp_path, capsys):
    assert cli.main(["bench", "--help"]) == 0
    assert "speed" in capsys.readouterr().out
    code = cli.main(["bench", "speed", "--preset", "smoke", "--entries", "rollout_only,sepo", "--no-samplers",
                     "--num-threads", "1", "--quiet", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "speed.json").read_text())
    assert set(data["entries"]) == {"rollout_only", "sepo"}
    assert data["entries"]["rollout_only"]["network_passes"] == 4 * (8 + 1)
    code = cli.main(["bench", "speed", "--preset", "smoke", "--entries", "bogus", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: unknown speed entry 'bogus'")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_iteration_on_cuda_counts_the_same_passes(model):
    cfg = _cfg(estimator="sepo", sepo_positions=2, kl_sample_steps=2)
    cpu = time_iteration(model, cfg, reward=REWARD, length=L)
    gpu = time_iteration(model, dataclasses.replace(cfg, device="cuda"), reward=REWARD, length=L)
    assert gpu["memory_method"] == "cuda_max_memory_allocated" and gpu["peak_memory_mb"] > 0
    for phase in ("rollout", "prepare", "update", "kl"):
        assert gpu["phases"][phase]["passes"] == cpu["phases"][phase]["passes"], phase
    on_gpu = copy.deepcopy(model).cuda()
    frac = time_snis_fraction(on_gpu, gpu["rollout"], snis_samples=2, neighbours=None, num_samples=1,
                              epsilon=0.2, seed=0, device="cuda")
    assert frac["passes_per_sample_per_evaluation"] == (1 + L * (V - 1)) * 2
    sampled = time_sampler(on_gpu, sampler="ancestral_cached", steps=20, num_samples=4, length=L, seed=0, device="cuda",
                           autocast_dtype=torch.bfloat16)
    assert sampled["all_clean"] and sampled["network_passes"] < 4 * 21


def test_entry_labels_say_what_each_entry_runs():
    """Each row's label must match the FinetuneConfig it runs (a stale label once called the defaults
    'all positions, KL at all steps' after the defaults had become 4 positions and 2 KL steps)."""
    from sepo.bench.speed import _finetune_config, entry_settings

    cfg = SpeedConfig(sepo_positions=3, kl_sample_steps=2, kl_truncation_steps=10)
    runs = {}
    for name in ("sepo", "sepo_positions_only", "sepo_defaults"):
        label, changes = entry_settings(cfg, name)
        runs[name] = (label, _finetune_config(cfg, torch.device("cpu"), 0, **changes))
    label, ft = runs["sepo"]
    assert (ft.sepo_positions, ft.kl_sample_steps) == (3, 2) and "3 positions" in label and "2/10" in label
    label, ft = runs["sepo_positions_only"]
    assert (ft.sepo_positions, ft.kl_sample_steps) == (3, None) and "all 10" in label
    label, ft = runs["sepo_defaults"]
    defaults = FinetuneConfig()
    assert (ft.sepo_positions, ft.kl_sample_steps) == (defaults.sepo_positions, defaults.kl_sample_steps)
    assert f"{defaults.sepo_positions or cfg.length} positions" in label
    assert f"{min(defaults.kl_sample_steps or 10, 10)}/10" in label
