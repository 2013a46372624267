"""``sepo bench dna`` plumbing on a micro configuration (a model and two oracles trained for a few steps on a
few hundred real DHS sequences, 2 methods, 1 seed, a handful of samples): the documented files and keys, the
aggregation, the stated budgets against hand-counted passes and reward calls, the sepo-snis cost formula,
reuse on a rerun, and the presets' validation."""

from __future__ import annotations

import json

import pytest
import torch

from sepo import cli
from sepo.bench.dna import (DNA_BENCH_PRESETS, METHODS, TABLE_METRICS, _drakes_config, aggregate, bench_config,
                            run_dna_bench)
from sepo.errors import ConfigError
from sepo.tasks.dna.data import encode, read_sequences
from sepo.tasks.dna.metrics import METRIC_KEYS
from sepo.tasks.dna.oracle import load_oracle

from test_demo import micro_table

N, T, ITERS, G, B = 8, 4, 2, 2, 4
MICRO = dict(snis_cost_neighbours=8,
    methods=["pretrained", "sepo"], num_samples=N, sampling_steps=T, reference_size=16, elbo_step_samples=2, device="cpu",
    pretrain={"steps": 2, "batch_size": 8, "val_size": 16, "val_draws": 1, "warmup_steps": 1, "eval_every": 0,
              "log_every": 1, "checkpoint_every": 0, "num_threads": 1, "model_overrides": {"hidden": 16, "n_stacks": 1}},
    oracle={"channels": 8, "hidden": 8, "max_steps": 3, "batch_size": 32},
    finetune={"max_steps": ITERS, "num_groups": G, "num_generations": B, "kl_truncation_steps": 2, "sepo_positions": 2,
              "save_every": 1},
)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "dna"
    cfg = bench_config("tiny", overrides=MICRO)
    lines: list[str] = []
    doc = run_dna_bench(cfg, out=out, seeds=[0], preset="micro", progress=False, say=lines.append, table=micro_table())
    return out, doc, lines


def test_results_json_has_every_method_with_mean_std_and_costs(bench_run):
    out, doc, _ = bench_run
    saved = json.loads((out / "results.json").read_text())
    assert saved["complete"] and saved["seeds"] == [0] and saved["preset"] == "micro"
    assert {"config", "machine", "versions", "assets"} <= set(saved)
    assert saved["machine"]["load_average"] is not None and saved["versions"]["torch"] == torch.__version__
    assert list(saved["methods"]) == ["pretrained", "sepo"]
    for m in saved["methods"].values():
        for key in METRIC_KEYS:
            stat = m["metrics"][key]
            assert stat["per_seed"] == [stat["mean"]] and stat["std"] == 0.0  # one seed: mean = the value, std 0
        for key in ("reward_calls", "network_passes", "wall_s", "cpu_s"):
            assert m["cost"][key]["mean"] is not None
    for name in ("results.md", "reward_vs_iteration.png", "reward_vs_wallclock.png", "pred_activity_vs_iteration.png",
                 "pred_activity_vs_wallclock.png", "metric_bars.png", "runs/sepo/seed0/samples.fasta",
                 "runs/pretrained/seed0/result.json", "runs/sepo/seed0/model/config.json"):
        assert (out / name).is_file(), name
    assert (out / "metric_bars.png").read_bytes()[:4] == b"\x89PNG"


def test_budgets_match_hand_counts(bench_run):
    out, doc, _ = bench_run
    pre = json.loads((out / "runs/pretrained/seed0/result.json").read_text())
    sepo = json.loads((out / "runs/sepo/seed0/result.json").read_text())
    # masked ancestral sampling: T predictor steps + the final denoising step, one pass per sequence each
    assert pre["cost"]["sample_network_passes"] == N * (T + 1) == sepo["cost"]["sample_network_passes"]
    assert pre["cost"]["reward_calls"] == 0 and pre["cost"]["train_network_passes"] == 0
    assert sepo["cost"]["reward_calls"] == ITERS * G * B  # every iteration scores its G*B rollouts once
    # per iteration: rollouts G*B*(T+1); KL reference + old policy at 2 steps (2*G*B each); sepo's old log-probs
    # G*B*2 positions; K = 2 epochs of (2 positions + 2 KL steps) per sample
    per_iter = G * B * (T + 1) + 2 * (2 * G * B) + G * B * 2 + 2 * (G * B * 2 + G * B * 2)
    assert [c["network_passes"] for c in sepo["curve"]] == [per_iter] * ITERS
    assert sepo["cost"]["network_passes"] == ITERS * per_iter + N * (T + 1)
    assert [c["iteration"] for c in sepo["curve"]] == [1, 2] and sepo["curve"][1]["wall_s"] > sepo["curve"][0]["wall_s"]


def test_metrics_are_the_evaluation_oracle_on_the_saved_samples(bench_run):
    out, doc, _ = bench_run
    oracle_b = load_oracle(out / "assets" / "oracle-B")
    assert oracle_b.meta["split"] == "B"
    for method in ("pretrained", "sepo"):
        _, seqs = read_sequences(out / "runs" / method / "seed0" / "samples.fasta")
        act = oracle_b.activity(encode(seqs)).double()
        assert doc["methods"][method]["metrics"]["pred_activity"]["mean"] == pytest.approx(float(act.quantile(0.5)), abs=1e-5)


def test_sepo_snis_is_excluded_with_its_counted_cost(bench_run):
    _, doc, _ = bench_run
    ex = doc["excluded"]["sepo_snis"]
    # every sample of the batch: itself + L (|V| - 1) = 1 + 200 * 3 neighbours, M = 4 ELBO draws each, evaluated
    # once without gradient (SNIS weights and old likelihoods) and once per epoch (K = 2) with gradient
    assert ex["estimator_passes_per_iteration"] == G * B * 601 * 4 * (1 + 2)
    # measured on one sample with 8 of its neighbours (9 candidates x M = 4 draws, one pass each with gradient)
    assert ex["fraction"]["grad_passes"] == 9 * 4 and ex["estimator_seconds_per_iteration"] > 0
    md = (bench_run[0] / "results.md").read_text()
    assert "sepo_snis excluded" in md and f"{ex['estimator_passes_per_iteration']:,} network passes" in md


def test_results_md_columns_follow_the_paper(bench_run):
    out, _, _ = bench_run
    md = (out / "results.md").read_text()
    header = next(ln for ln in md.splitlines() if ln.startswith("| Method | Pred-Activity"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols == ["Method"] + [h for _, h, _ in TABLE_METRICS]
    assert cols[1:6] == ["Pred-Activity ↑", "Cell-type acc % ↑", "3-mer corr ↑", "Motif corr ↑", "App-Log-Lik ↑"]
    assert "| Pretrained |" in md and "| SEPO |" in md


def test_rerun_reuses_finished_runs(bench_run, capsys):
    out, doc, _ = bench_run
    stamp = (out / "runs/sepo/seed0/result.json").stat().st_mtime_ns
    code = cli.main(["bench", "dna", "--preset", "tiny", "--seeds", "1", "--out", str(out), "--methods", "pretrained,sepo",
                     "--set", "num_samples=8", "--set", "sampling_steps=4", "--set", "reference_size=16",
                     "--set", "elbo_step_samples=2", "--set", "finetune.max_steps=2", "--set", "finetune.num_groups=2",
                     "--set", "finetune.num_generations=4", "--set", "finetune.kl_truncation_steps=2",
                     "--set", "finetune.sepo_positions=2", "--set", "finetune.save_every=1", "--set", "snis_cost_neighbours=8",
                     "--device", "cpu", "--num-threads", "1", "--no-progress"])
    capsys.readouterr()
    assert code == 0
    assert (out / "runs/sepo/seed0/result.json").stat().st_mtime_ns == stamp
    again = json.loads((out / "results.json").read_text())
    assert again["methods"]["sepo"]["metrics"] == doc["methods"]["sepo"]["metrics"]


def test_oracle_objects_and_a_custom_reference(bench_run, tmp_path):
    out, doc, _ = bench_run
    oracle_a, oracle_b = load_oracle(out / "assets" / "oracle-A"), load_oracle(out / "assets" / "oracle-B")
    # the reference: exactly the sequences the pretrained row generates (same model, sampler and seed), so the
    # 3-mer correlation must be 1 if and only if the custom reference is the one used
    reference = encode(read_sequences(out / "runs" / "pretrained" / "seed0" / "samples.fasta")[1])
    cfg = bench_config("tiny", overrides={**MICRO, "methods": ["pretrained"]})
    again = run_dna_bench(cfg, out=tmp_path / "objects", seeds=[0], model=out / "assets" / "pretrained", oracle_a=oracle_a,
                          oracle_b=oracle_b, reference=reference, progress=False, say=None)
    metrics = again["methods"]["pretrained"]["metrics"]
    assert metrics["kmer3_corr"]["mean"] == pytest.approx(1.0)
    assert metrics["pred_activity"]["mean"] == pytest.approx(doc["methods"]["pretrained"]["metrics"]["pred_activity"]["mean"])
    assert again["assets"]["oracle_a"] == "<Oracle object>"
    assert again["reference_row"]["n"] == N and again["reference_row"]["pred_activity"] == pytest.approx(
        float(oracle_b.activity(reference).double().quantile(0.5)), abs=1e-5)
    with pytest.raises(ConfigError, match="same model"):
        run_dna_bench(cfg, out=tmp_path / "same", seeds=[0], model=out / "assets" / "pretrained", oracle_a=oracle_a,
                      oracle_b=oracle_a, progress=False, say=None)


def test_aggregate_mean_and_sample_std():
    runs = [{"seed": s, "label": "X", "kind": "sampling", "settings": {}, "curve": [],
             "metrics": {k: v for k in METRIC_KEYS}, "cost": {"reward_calls": 10}} for s, v in ((0, 1.0), (1, 2.0), (2, 6.0))]
    stat = aggregate({"x": runs})["x"]["metrics"]["pred_activity"]
    assert stat["mean"] == pytest.approx(3.0) and stat["std"] == pytest.approx(((4 + 1 + 9) / 2) ** 0.5)
    assert aggregate({"x": runs})["x"]["cost"]["reward_calls"] == {"mean": 10.0, "std": 0.0, "per_seed": [10, 10, 10]}


def test_presets_and_validation():
    tiny = bench_config("tiny")
    assert "sepo_snis" not in tiny.methods and tiny.sampling_steps == 32 and tiny.finetune_preset == "tiny"
    paper = bench_config("paper")
    assert paper.methods == list(METHODS) and paper.sampling_steps == 128 and paper.num_samples == 640
    drakes = _drakes_config(tiny, "drakes_nokl", 1, "cpu")  # equal budget: the SEPO batch and iterations
    from sepo.rl.recipes import FINETUNE_PRESETS

    ft = FINETUNE_PRESETS["dna"]["tiny"]
    assert drakes.beta == 0.0 and drakes.seed == 1
    assert drakes.batch_size == ft["num_groups"] * ft["num_generations"] and drakes.max_steps == ft["max_steps"]
    with pytest.raises(ConfigError, match="unknown method 'sepo-fast'"):
        bench_config("tiny", overrides={"methods": ["sepo-fast"]})
    with pytest.raises(ConfigError, match="unknown bench dna preset 'huge'"):
        bench_config("huge")
    assert set(DNA_BENCH_PRESETS) == {"tiny", "paper"}
