"""``sepo demo`` plumbing on a micro configuration: real phases (pretraining, two oracles, SEPO, sampling,
evaluation) shrunk to a few steps on a few hundred real DHS sequences. What is checked: the documented
files and keys, that the table reports the *evaluation* oracle on the saved samples, the acceptance
arithmetic, that a rerun reuses every phase, and that the oracle roles cannot be confused."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import torch
import yaml

from sepo import cli
from sepo.demo import (DEMO_METRICS, DemoConfig, RolloutMonitor, check_oracle_roles, ensure_oracle, run_demo)
from sepo.errors import ConfigError
from sepo.rl.rewards import Reward
from sepo.tasks.dna.data import encode, load_dhs, read_sequences
from sepo.tasks.dna.oracle import Oracle, OracleConfig, load_oracle

MICRO = {
    "pretrain": {"steps": 2, "batch_size": 8, "val_size": 16, "val_draws": 1, "warmup_steps": 1, "eval_every": 0,
                 "log_every": 1, "checkpoint_every": 0, "num_threads": 1, "model_overrides": {"hidden": 16, "n_stacks": 1}},
    "oracle": {"channels": 8, "hidden": 8, "max_steps": 3, "batch_size": 32},
    "finetune": {"max_steps": 2, "num_groups": 2, "num_generations": 4, "sampling_steps": 4, "kl_truncation_steps": 2,
                 "sepo_positions": 2, "save_every": 1},
    "num_samples": 12, "reference_size": 16, "elbo_step_samples": 2, "device": "cpu",
}


def micro_table(per_chrom: int = 30):
    """A few hundred real DHS sites: ``per_chrom`` from every chromosome plus 24 chr1 HepG2 reference sites."""
    full = load_dhs()
    rng = np.random.default_rng(0)
    keep = np.zeros(len(full), bool)
    for c in np.unique(full.chrom):
        idx = np.flatnonzero(full.chrom == c)
        keep[rng.choice(idx, min(len(idx), per_chrom), replace=False)] = True
    keep[np.flatnonzero((full.chrom == "chr1") & (full.cell_line == "HepG2"))[:24]] = True
    return full.subset(keep)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    lines: list[str] = []
    summary = run_demo(DemoConfig(**MICRO), out, progress=False, say=lines.append, table=micro_table())
    return out, summary, lines


def test_demo_writes_every_documented_file_and_key(demo_run):
    out, summary, lines = demo_run
    for name in ("summary.json", "summary.md", "curves.png", "activity_hist.png", "demo_config.yaml",
                 "pretrained/config.json", "oracle-A/oracle.json", "oracle-B/oracle.json", "finetune/model/config.json",
                 "finetune/metrics.jsonl", "samples/pretrained.fasta", "samples/sepo.fasta"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "summary.json").read_text())
    for model in ("pretrained", "sepo"):
        assert set(DEMO_METRICS) <= set(saved[model])
        assert all(isinstance(saved[model][k], float) for k in DEMO_METRICS)
    # one "[i/6] ..." start line and one end line per phase
    assert [ln.split("]")[0] for ln in lines if ln.startswith("[")] == [f"[{i}/6" for i in range(1, 7) for _ in (0, 1)]
    # the fine-tuning log has one record per iteration, with the evaluation oracle's reading and the clocks
    recs = [json.loads(ln) for ln in (out / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2]
    assert all({"reward_mean", "pred_activity", "wall_s", "cpu_s"} <= set(r) for r in recs)
    assert recs[1]["wall_s"] > recs[0]["wall_s"] > 0


def test_demo_table_is_the_evaluation_oracle_on_the_saved_samples(demo_run):
    out, summary, _ = demo_run
    oracle_b, oracle_a = load_oracle(out / "oracle-B"), load_oracle(out / "oracle-A")
    assert oracle_b.meta["split"] == "B" and oracle_a.meta["split"] == "A"
    for name in ("pretrained", "sepo"):
        _, seqs = read_sequences(out / "samples" / f"{name}.fasta")
        assert len(seqs) == MICRO["num_samples"]
        tokens = encode(seqs)
        act = oracle_b.activity(tokens).double()
        q1, med, q3 = torch.quantile(act, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
        assert summary[name]["pred_activity"] == pytest.approx(med, abs=1e-5)
        assert summary[name]["pred_activity_iqr"] == pytest.approx(q3 - q1, abs=1e-5)
        acc = float((oracle_b.celltype_prob(tokens) > 0.5).double().mean())
        assert summary[name]["celltype_acc"] == pytest.approx(acc)
        assert summary[name]["unique_frac"] == len(set(seqs)) / len(seqs)
        assert summary[name]["gc_frac"] == pytest.approx(sum(s.count("G") + s.count("C") for s in seqs) / (200 * len(seqs)))
    assert summary["reference"]["n"] == MICRO["reference_size"] and 0.0 < summary["reference"]["gc_frac"] < 1.0
    acc = summary["acceptance"]
    gain = summary["sepo"]["pred_activity"] - summary["pretrained"]["pred_activity"]
    assert acc["median_gain"] == pytest.approx(gain)
    assert acc["passed"] == (gain > summary["pretrained"]["pred_activity_iqr"] and summary["sepo"]["unique_frac"] >= 0.9)


def test_rerun_through_the_cli_reuses_every_phase(demo_run, tmp_path, capsys):
    out, summary, _ = demo_run
    stamp = (out / "finetune" / "model" / "model.safetensors").stat().st_mtime_ns
    config = tmp_path / "micro.yaml"
    config.write_text(yaml.safe_dump(MICRO))
    code = cli.main(["demo", "--out", str(out), "--config", str(config), "--device", "cpu", "--num-threads", "1",
                     "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    ends = [ln for ln in printed.splitlines() if ln.startswith("[") and " in " in ln and "..." not in ln]
    statuses = [ln.split(": ", 1)[1].rsplit(" in ", 1)[0] for ln in ends]
    assert statuses == ["reused", "A reused, B reused", "reused", "reused", "reused", "written"]
    assert (out / "finetune" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    again = json.loads((out / "summary.json").read_text())
    assert again["sepo"] == summary["sepo"] and again["pretrained"] == summary["pretrained"]
    assert "| pretrained |" in printed and "| sepo |" in printed


def _oracle(split, chroms):
    return Oracle(OracleConfig(channels=4, hidden=4), meta={"split": split, "chromosomes": {"train_chroms": chroms}})


def test_oracle_roles_cannot_be_confused(tmp_path, demo_run):
    a, b = _oracle("A", ["chr4", "chr6"]), _oracle("B", ["chr5", "chr7"])
    check_oracle_roles(a, b)  # disjoint: accepted
    with pytest.raises(ConfigError, match="same model"):
        check_oracle_roles(a, a)
    with pytest.raises(ConfigError, match="both oracles were trained on chromosome set A"):
        check_oracle_roles(a, _oracle("A", ["chr5"]))
    with pytest.raises(ConfigError, match="share training chromosomes \\(chr6\\)"):
        check_oracle_roles(a, _oracle("B", ["chr6", "chr9"]))
    out, _, _ = demo_run  # a folder holding oracle A is never taken for oracle B
    with pytest.raises(ConfigError, match="holds oracle 'A', not oracle B"):
        ensure_oracle(out / "oracle-A", "B")


class _GcOracle:
    """Stands in for an oracle: activity = number of G/C, p(HepG2) = 1 when activity > L/2."""

    def activity(self, tokens):
        return ((tokens == 1) | (tokens == 2)).sum(-1).float()

    def celltype_prob(self, tokens):
        return (self.activity(tokens) > tokens.shape[1] / 2).float()


def test_rollout_monitor_reads_the_eval_oracle_and_leaves_the_reward_alone():
    monitor = RolloutMonitor(_GcOracle(), wall_offset=10.0)
    reward = monitor.wrap_reward(Reward("a-count", lambda x: (x == 0).sum(-1).float()))
    tokens = torch.tensor([[0, 0, 1, 2], [1, 1, 2, 3], [0, 3, 3, 3]])
    assert reward(tokens).tolist() == [2.0, 0.0, 1.0]  # the training reward, unchanged
    rec = monitor.evaluate(None, 1)
    assert rec["pred_activity"] == statistics.median([2, 3, 0]) and rec["celltype_acc"] == pytest.approx(1 / 3)
    assert rec["unique_frac"] == 1.0 and rec["wall_s"] >= 10.0
    soft = monitor.wrap_soft_reward(lambda p: p[..., 0].sum(-1))
    probs = torch.nn.functional.one_hot(torch.tensor([[2, 2, 1, 1]]), 4).float()
    assert soft(probs).tolist() == [0.0]
    assert monitor.evaluate(None, 2)["pred_activity"] == 4.0  # the relaxed batch's argmax tokens were scored


def test_demo_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="num_samples must be at least 2"):
        DemoConfig(num_samples=1)
    with pytest.raises(ConfigError, match="elbo_step_samples"):
        DemoConfig(elbo_step_samples=0)
