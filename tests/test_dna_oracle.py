"""Chromosome splits and CNN cell-type oracles (training mechanics, scores, files)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sepo.errors import CheckpointError, DataError
from sepo.tasks.dna.data import CELL_LINES, DnaTable, decode, dhs_path, load_dhs
from sepo.tasks.dna.oracle import (
    HEPG2,
    Oracle,
    OracleConfig,
    evaluate_classifier,
    fit_classifier,
    hepg2_log_odds,
    load_oracle,
    train_oracle,
)
from sepo.tasks.dna.splits import (
    ORACLE_SPLITS,
    TEST_CHROMS,
    generator_data,
    heldout_data,
    oracle_data,
    oracle_split,
)

# ---------------------------------------------------------------------------------------------
# splits (real DHS table)


@pytest.fixture(scope="module")
def table():
    return load_dhs()


def test_oracle_chromosome_sets_are_pairwise_disjoint_and_cover_non_test_chromosomes(table):
    sets = [set(ORACLE_SPLITS[n].train_chroms) for n in "AB"] + [set(ORACLE_SPLITS[n].val_chroms) for n in "AB"]
    sets.append(set(TEST_CHROMS))
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            assert not sets[i] & sets[j], (i, j)
    assert set().union(*sets) == set(table.chrom.tolist())


def test_split_sizes_match_documentation_and_are_balanced(table):
    sizes = {(n, part): len(oracle_data(n, part, table=table)) for n in "AB" for part in ("train", "val", "test")}
    assert sizes[("A", "train")] == 17847 and sizes[("B", "train")] == 17405
    assert sizes[("A", "val")] == 4053 and sizes[("B", "val")] == 4002
    assert sizes[("A", "test")] == sizes[("B", "test")] == 4565
    assert len(generator_data(table=table)) == 39254
    # every class appears in every training set (balanced enough to learn all four)
    for n in "AB":
        lines = oracle_data(n, "train", table=table).cell_line
        assert all((lines == c).sum() > 2000 for c in CELL_LINES)


def test_chr1_never_enters_a_training_set(table):
    for n in "AB":
        for part in ("train", "val"):
            assert "chr1" not in set(oracle_data(n, part, table=table).chrom.tolist())
    assert "chr1" not in set(generator_data(table=table).chrom.tolist())
    test = heldout_data(table=table)
    assert set(test.chrom.tolist()) == {"chr1"} and set(test.split.tolist()) == {"test"}
    # the two oracles' training sites do not share a single sequence position
    a, b = oracle_data("A", "train", table=table), oracle_data("B", "train", table=table)
    assert not set(a.chrom.tolist()) & set(b.chrom.tolist())


def test_data_hash_is_sha256_of_the_table_file(table):
    assert table.sha256 == hashlib.sha256(dhs_path().read_bytes()).hexdigest()


def test_unknown_split_is_a_one_line_data_error():
    with pytest.raises(DataError, match="choose A"):
        oracle_split("C")
    with pytest.raises(DataError, match="train, val or test"):
        oracle_data("A", "everything")


# ---------------------------------------------------------------------------------------------
# scores


def _small_oracle(**kw) -> Oracle:
    torch.manual_seed(0)
    cfg = OracleConfig(channels=8, hidden=8, layers=2, first_kernel=5, **kw)
    return Oracle(cfg).eval()


def test_activity_is_hepg2_log_odds_and_prob_is_softmax():
    oracle = _small_oracle()
    tokens = torch.randint(0, 4, (6, 200), generator=torch.Generator().manual_seed(1))
    logits = oracle.logits(tokens)
    p = torch.softmax(logits.double(), -1)[:, HEPG2]
    assert torch.allclose(oracle.activity(tokens).double(), torch.log(p / (1 - p)), atol=1e-5)
    assert torch.allclose(oracle.celltype_prob(tokens).double(), p, atol=1e-6)
    # stable for extreme logits where p_H rounds to 1 in float32
    lp = torch.log_softmax(torch.tensor([[40.0, 0.0, 0.0, 0.0]]), -1)
    assert math.isclose(float(hepg2_log_odds(lp)), 40.0 - math.log(3.0), rel_tol=1e-5)


def test_scores_are_reverse_complement_symmetric():
    oracle = _small_oracle()
    tokens = torch.randint(0, 4, (5, 200), generator=torch.Generator().manual_seed(2))
    rc = (3 - tokens).flip(1)  # A<->T, C<->G in ACGT order, reversed
    assert decode(rc[:1])[0] == decode(tokens[:1])[0][::-1].translate(str.maketrans("ACGT", "TGCA"))
    assert torch.allclose(oracle.activity(tokens), oracle.activity(rc), atol=1e-5)


def test_log_probs_accepts_soft_onehot_and_is_differentiable():
    oracle = _small_oracle()
    tokens = torch.randint(0, 4, (3, 200), generator=torch.Generator().manual_seed(3))
    hard = F.one_hot(tokens, 4).float()
    assert torch.allclose(oracle.log_probs(hard), oracle.predict_log_probs(tokens), atol=1e-6)
    soft = torch.softmax(torch.randn(3, 200, 4), -1).requires_grad_(True)
    act = hepg2_log_odds(oracle.log_probs(soft)).sum()
    (grad,) = torch.autograd.grad(act, soft)
    assert grad.shape == soft.shape and grad.abs().sum() > 0


def test_masked_or_malformed_tokens_are_rejected():
    oracle = _small_oracle()
    with pytest.raises(DataError, match="outside 0..3"):
        oracle.activity(torch.full((2, 200), 4))
    with pytest.raises(DataError, match=r"\[batch, length\]"):
        oracle.activity(torch.zeros(200, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# training


def _planted_table(n_per_class: int, seed: int) -> DnaTable:
    """Synthetic DHS-like table on the chromosomes of the real splits (so train_oracle finds train / val /
    test sites). Strand-symmetric signals, as in real DNA (the oracle trains on random strands): HepG2
    sites are AT-rich, K562 sites GC-rich, and every line carries its own 8-bp motif."""
    rng = np.random.default_rng(seed)
    motifs = {"HepG2": "TGACGTCA", "K562": "GATAAGGC", "GM12878": "GGGAATTC", "hESC": "CATTGTTA"}
    composition = {"HepG2": [0.35, 0.15, 0.15, 0.35], "K562": [0.15, 0.35, 0.35, 0.15]}
    chroms = ["chr4", "chr6", "chr2", "chr5", "chr3", "chr1"]  # A train, A train, A val, B train, B val, test
    seqs, chrom, lines = [], [], []
    for c, m in motifs.items():
        probs = composition.get(c, [0.25] * 4)
        for i in range(n_per_class):
            s = ["ACGT"[b] for b in rng.choice(4, 200, p=probs)]
            pos = int(rng.integers(0, 192))
            s[pos : pos + 8] = m
            seqs.append("".join(s))
            chrom.append(chroms[i % len(chroms)])
            lines.append(c)
    n = len(seqs)
    return DnaTable(seqs, np.array(chrom), np.array(lines), np.array(["training"] * n), np.ones(n), "synthetic", "f" * 64)


def test_fit_classifier_learns_planted_signal_and_keeps_best_validation_epoch():
    table = _planted_table(60, seed=0)
    labels = torch.tensor([CELL_LINES.index(c) for c in table.cell_line])
    tokens = table.tokens()
    is_val = torch.from_numpy(np.isin(table.chrom, ["chr2", "chr3"]))
    cfg = OracleConfig(channels=16, hidden=16, first_kernel=9, epochs=8, batch_size=32, lr=1e-2, dropout=0.0)
    torch.manual_seed(0)
    oracle = Oracle(cfg)
    untrained = evaluate_classifier(oracle, tokens[is_val], labels[is_val])
    fit = fit_classifier(oracle, tokens[~is_val], labels[~is_val], val=(tokens[is_val], labels[is_val]), progress=False)
    val = evaluate_classifier(oracle, tokens[is_val], labels[is_val])
    assert val["auroc_hepg2"] > 0.95 and val["acc"] > 0.6
    assert val["loss"] < untrained["loss"] - 0.3
    assert val["activity_hepg2"] > val["activity_other"] + 2.0
    assert fit["steps"] == 8 * math.ceil(int((~is_val).sum()) / 32)
    assert fit["val"]["loss"] == pytest.approx(val["loss"])  # the kept parameters are the selected epoch's
    assert not oracle.training


def test_train_oracle_saves_provenance_and_reloads_identically(tmp_path):
    table = _planted_table(30, seed=1)
    out = tmp_path / "oracle-B"
    overrides = {"channels": 8, "hidden": 8, "first_kernel": 5, "max_steps": 4, "batch_size": 16}
    oracle = train_oracle("B", preset="tiny", seed=3, out_dir=out, overrides=overrides, table=table, progress=False,
                          tensorboard=False, log_stdout=False)
    doc = json.loads((out / "oracle.json").read_text())
    assert doc["data"]["sha256"] == "f" * 64 and doc["seed"] == 3 and doc["split"] == "B"
    assert doc["chromosomes"]["train_chroms"] == list(ORACLE_SPLITS["B"].train_chroms)
    assert doc["chromosomes"]["test_chroms"] == ["chr1"]
    assert doc["data"]["n_train"] == int(np.isin(table.chrom, ORACLE_SPLITS["B"].train_chroms).sum())
    assert doc["training"]["steps"] == 4
    assert set(doc["metrics"]) == {"val", "test"} and 0.0 <= doc["metrics"]["test"]["auroc_hepg2"] <= 1.0
    assert doc["config"]["channels"] == 8
    assert (out / "metrics.jsonl").read_text().count("\n") >= 2  # one epoch record + the final record
    loaded = load_oracle(out)
    tokens = table.tokens()[:7]
    assert torch.equal(loaded.activity(tokens), oracle.activity(tokens))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_load_oracle_errors_are_one_line_checkpoint_errors(tmp_path):
    oracle = _small_oracle()
    from sepo.tasks.dna.oracle import save_oracle

    good = tmp_path / "good"
    save_oracle(oracle, good)
    assert torch.equal(load_oracle(good).net.first.weight, oracle.net.first.weight)

    def expect(path, pattern):
        with pytest.raises(CheckpointError, match=pattern) as e:
            load_oracle(path)
        assert "\n" not in str(e.value)

    expect(tmp_path / "nope", "not found")
    import shutil

    def copy(name):
        d = tmp_path / name
        shutil.copytree(good, d)
        return d

    d = copy("nojson")
    (d / "oracle.json").unlink()
    expect(d, "oracle.json is missing")
    d = copy("badjson")
    (d / "oracle.json").write_text("{not json")
    expect(d, "corrupt")
    d = copy("noweights")
    (d / "oracle.safetensors").unlink()
    expect(d, "oracle.safetensors is missing")
    d = copy("otherrun")
    other = _small_oracle()
    torch.nn.init.normal_(other.net.first.weight)
    save_oracle(other, tmp_path / "other")
    shutil.copy(tmp_path / "other" / "oracle.safetensors", d / "oracle.safetensors")
    expect(d, "different runs")
    d = copy("garbage")
    (d / "oracle.safetensors").write_bytes(b"garbage")
    doc = json.loads((d / "oracle.json").read_text())
    doc.pop("weights_sha256")
    (d / "oracle.json").write_text(json.dumps(doc))
    expect(d, "corrupt")
    d = copy("arch")
    doc = json.loads((d / "oracle.json").read_text())
    doc["config"]["channels"] = 12
    (d / "oracle.json").write_text(json.dumps(doc))
    expect(d, "does not fit the architecture")
    d = copy("format")
    (d / "oracle.json").write_text(json.dumps({"format": "something-else"}))
    expect(d, "not a sepo DNA oracle")


def test_cli_help_lists_every_option_and_rejects_bad_split():
    import argparse

    from sepo.commands import oracle as cmd

    parser = argparse.ArgumentParser(prog="sepo")
    cmd.add_parser(parser.add_subparsers(dest="command"))
    sub = parser._subparsers._group_actions[0].choices["oracle"]
    text = sub.format_help()
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.dest} has no help"
            assert action.option_strings[-1] in text
    with pytest.raises(SystemExit):
        parser.parse_args(["oracle", "--split", "C"])
    args = parser.parse_args(["oracle", "--split", "a", "--out", "x"])
    assert args.split == "A"


def test_cli_trains_reports_and_saves_an_oracle(tmp_path, capsys, table):
    from sepo.cli import main

    out = tmp_path / "oracle-A"
    rc = main(["oracle", "--split", "A", "--max-steps", "2", "--max-train", "64", "--seed", "5", "--out", str(out),
               "--no-progress", "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "chr1 test" in printed and "validation chr2" in printed and "AUROC" in printed
    oracle = load_oracle(out)
    assert oracle.meta["training"]["steps"] == 2 and oracle.meta["data"]["n_train_used"] == 64
    assert oracle.meta["seed"] == 5 and oracle.meta["data"]["sha256"] == table.sha256
    assert main(["oracle", "--split", "A", "--max-train", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "max_train must be at least 2" in capsys.readouterr().err
