"""DNA metrics and the JASPAR motif scanner, on hand-computable inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from sepo.errors import DataError
from sepo.tasks.dna.data import decode, encode, load_dhs
from sepo.tasks.dna.metrics import (
    METRIC_KEYS,
    app_log_lik,
    auroc,
    celltype_accuracy,
    diversity,
    evaluate_sequences,
    kmer_corr,
    kmer_counts,
    motif_corr,
    pearson,
    pred_activity,
    rankdata,
    reference_profile,
    spearman,
    top_hepg2_reference,
)
from sepo.tasks.dna.motifs import MotifSet, hit_mask, log_odds, motif_hits, scan_scores

RC = str.maketrans("ACGT", "TGCA")


def revcomp(s: str) -> str:
    return s.translate(RC)[::-1]


def random_seqs(n: int, length: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join("ACGT"[k] for k in rng.integers(0, 4, length)) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# statistics


def test_rankdata_pearson_spearman_by_hand():
    assert rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x = [1, 2, 3, 4], y = [1, 3, 2, 4]: sum dx*dy = 4, sum dx^2 = sum dy^2 = 5, so r = 0.8
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 10, 100, 1000], [1, 3, 2, 4]) == pytest.approx(0.8)  # ranks only
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_auroc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(scores, labels) == pytest.approx(brute)
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0


# ---------------------------------------------------------------------------------------------
# k-mers, diversity


def test_kmer_counts_by_hand_and_identical_sets_correlate_perfectly():
    tokens = encode(["ACGTAC"])
    counts = kmer_counts(tokens, 2)
    expected = torch.zeros(16, dtype=torch.long)
    for km in ["AC", "CG", "GT", "TA", "AC"]:
        expected["ACGT".index(km[0]) * 4 + "ACGT".index(km[1])] += 1
    assert torch.equal(counts, expected)
    seqs = encode(random_seqs(20, 200, seed=1))
    assert kmer_corr(seqs, seqs) == pytest.approx(1.0)
    assert kmer_corr(seqs, torch.cat([seqs, seqs])) == pytest.approx(1.0)  # set size does not matter
    other = encode(["A" * 100 + "C" * 100] * 3)
    assert kmer_corr(seqs, other) < 0.5


def test_diversity_by_hand():
    same = encode(["ACGT" * 50] * 5)
    assert diversity(same) == (0.0, 0.2)
    a = "A" * 200
    b = "C" * 3 + "A" * 197  # 3 mismatches with a
    c = "C" * 10 + "A" * 190  # 10 with a, 7 with b
    ham, uniq = diversity(encode([a, b, c]), chunk=2)
    assert ham == pytest.approx((3 + 10 + 7) / 3)
    assert uniq == 1.0


def test_tokens_with_masks_are_rejected():
    with pytest.raises(DataError, match="outside 0..3"):
        diversity(torch.full((2, 10), 4))


# ---------------------------------------------------------------------------------------------
# oracle-based metrics


class FixedOracle:
    """Returns preset activities (the metric code must only use ``activity`` / ``celltype_prob``)."""

    def __init__(self, values):
        self.values = torch.as_tensor(values, dtype=torch.float32)

    def activity(self, tokens):
        return self.values[: tokens.shape[0]]

    def celltype_prob(self, tokens):
        return torch.sigmoid(self.activity(tokens))  # log-odds -> probability


def test_pred_activity_median_iqr_and_celltype_accuracy_by_hand():
    tokens = torch.zeros(4, 200, dtype=torch.long)
    oracle = FixedOracle([4.0, 1.0, -3.0, 2.0])
    median, iqr = pred_activity(oracle, tokens)
    assert median == pytest.approx(1.5)
    # sorted [-3, 1, 2, 4]: q25 = -3 + 0.75 * 4 = 0, q75 = 2 + 0.25 * 2 = 2.5
    assert iqr == pytest.approx(2.5)
    assert celltype_accuracy(oracle, tokens) == 0.75  # sigmoid > 0.5 <=> activity > 0


# ---------------------------------------------------------------------------------------------
# motifs


def consensus_matrix(consensus: str, n: float = 100.0) -> np.ndarray:
    m = np.zeros((4, len(consensus)))
    for j, c in enumerate(consensus):
        m["ACGT".index(c), j] = n
    return m


def test_log_odds_with_pseudocount_by_hand():
    w = log_odds(consensus_matrix("AC", n=10.0))
    assert w[0, 0] == pytest.approx(math.log((10.2 / 10.8) / 0.25))
    assert w[1, 0] == pytest.approx(math.log((0.2 / 10.8) / 0.25))


def test_scan_scores_match_a_direct_loop_on_both_strands():
    rng = np.random.default_rng(3)
    mats = [rng.integers(0, 20, (4, w)).astype(float) for w in (3, 5, 9)]
    motifs = MotifSet.from_counts(mats, p_value=0.05)
    seqs = random_seqs(2, 30, seed=4)
    scores = scan_scores(encode(seqs), motifs)
    W = motifs.scores
    for n, s in enumerate(seqs):
        rcs = revcomp(s)
        for m, length in enumerate(motifs.lengths.tolist()):
            for p in range(30):
                if p > 30 - length:
                    assert scores[n, m, 0, p] == -math.inf and scores[n, m, 1, p] == -math.inf
                    continue
                fwd = sum(int(W[m, "ACGT".index(s[p + j]), j]) for j in range(length))
                # reverse strand, site covering forward p..p+l-1: the motif read on the reverse complement
                window = rcs[30 - p - length : 30 - p]
                rev = sum(int(W[m, "ACGT".index(window[j]), j]) for j in range(length))
                assert scores[n, m, 0, p] == fwd and scores[n, m, 1, p] == rev


def test_threshold_is_the_exact_background_p_value_cut():
    mat = np.array([[8, 1, 0], [1, 6, 2], [1, 2, 1], [0, 1, 7]], dtype=float)
    p = 0.1
    motifs = MotifSet.from_counts([mat], p_value=p)
    all_3mers = ["".join(t) for t in itertools.product("ACGT", repeat=3)]
    scores = scan_scores(encode(all_3mers), motifs)[:, 0, 0, 0]  # each 3-mer once, forward
    thr = float(motifs.thresholds[0])
    assert float((scores >= thr).double().mean()) <= p
    assert float((scores >= thr - 1).double().mean()) > p  # the smallest such threshold


def test_planted_motif_hits_exact_positions_and_counts():
    consensus = "TGACGTTA"  # not a palindrome: its reverse complement is TAACGTCA
    motifs = MotifSet.from_counts([consensus_matrix(consensus), consensus_matrix("GGGCCC")], ids=["m0", "m1"])
    # a strong 8-bp motif reaches p <= 1e-4 only with the exact consensus (1 + 24 one-mismatch 8-mers
    # are 3.8e-4 of all 8-mers): the threshold lies above the best one-mismatch score
    best = int(motifs.max_scores()[0])
    one_mismatch = best - int(motifs.scores[0, :, 0].max() - motifs.scores[0, :, 0].min())
    assert one_mismatch < int(motifs.thresholds[0]) <= best
    np.random.default_rng(5)
    seqs = []
    for i in range(6):
        s = list(random_seqs(1, 200, seed=100 + i)[0])
        s[10:18] = consensus
        s[60:68] = revcomp(consensus)
        s[192:200] = consensus  # at the very end: the last valid start
        seqs.append("".join(s))
    hits = hit_mask(encode(seqs), motifs)
    for n, s in enumerate(seqs):
        fwd = {p for p in range(193) if s[p : p + 8] == consensus}
        rev = {p for p in range(193) if s[p : p + 8] == revcomp(consensus)}
        assert {10, 192} <= fwd and 60 in rev
        assert set(torch.nonzero(hits[n, 0, 0]).flatten().tolist()) == fwd
        assert set(torch.nonzero(hits[n, 0, 1]).flatten().tolist()) == rev
        # the 6-bp motif cannot reach p <= 1e-4, so only exact GGGCCC (a palindrome: both strands) counts
        six = {p for p in range(195) if s[p : p + 6] == "GGGCCC"}
        assert set(torch.nonzero(hits[n, 1, 0]).flatten().tolist()) == six
        assert set(torch.nonzero(hits[n, 1, 1]).flatten().tolist()) == six
    counts = motif_hits(encode(seqs), motifs, batch_size=4)
    assert torch.equal(counts, hits.sum((2, 3)))
    assert bool((counts[:, 0] >= 3).all())


def test_motif_corr_identical_sets_is_one_and_reversed_profile_is_minus_one():
    motifs = MotifSet.from_counts([consensus_matrix(c) for c in ("ACGTTA", "GGATCC", "TTTAAA", "CAGCTG")], p_value=1e-3)
    gen = encode(random_seqs(30, 200, seed=6))
    assert motif_corr(gen, gen, motifs=motifs) == pytest.approx(1.0)
    gen_hits = motif_hits(gen, motifs).sum(0)
    assert len(set(gen_hits.tolist())) > 1
    # average ranks of -x are the mirror of those of x, ties included: Spearman exactly -1
    assert motif_corr(gen, motifs=motifs, ref_hits=-gen_hits) == pytest.approx(-1.0)


def test_jaspar_2024_core_vertebrates_load_and_cache(tmp_path, monkeypatch):
    from sepo.tasks.dna import motifs as motifs_mod

    monkeypatch.setenv("SEPO_CACHE_DIR", str(tmp_path))
    ids, names, mats = motifs_mod.jaspar_counts()
    assert len(ids) == 879 and len(set(ids)) == 879
    arnt = ids.index("MA0004.1")
    assert names[arnt] == "Arnt" and mats[arnt][:, 0].tolist() == [4.0, 16.0, 0.0, 0.0]
    assert list(tmp_path.glob("jaspar/*.safetensors"))
    ids2, names2, mats2 = motifs_mod.jaspar_counts()  # from the cache
    assert ids2 == ids and names2 == names and all(np.array_equal(a, b) for a, b in zip(mats, mats2))
    cached = next(tmp_path.glob("jaspar/*.safetensors"))
    cached.write_bytes(b"garbage")  # a corrupt cache is rebuilt, not trusted
    ids3, _, mats3 = motifs_mod.jaspar_counts()
    assert ids3 == ids and np.array_equal(mats3[arnt], mats[arnt]) and cached.stat().st_size > 1000
    with pytest.raises(DataError, match="not in the installed pyjaspar"):
        motifs_mod.jaspar_counts("JASPAR1999", use_cache=False)


# ---------------------------------------------------------------------------------------------
# likelihood, reference, one-call evaluation


def test_app_log_lik_matches_exact_elbo_median():
    from sepo.diffusion.process import make_process
    from sepo.tasks.toy.exact import exact_elbo, exact_model

    torch.manual_seed(0)
    length, steps = 2, 3
    log_p0 = torch.log_softmax(2 * torch.randn(4**length, dtype=torch.float64), 0)
    model = exact_model(log_p0, make_process("masked", 4), length)
    x0 = torch.tensor([[0, 1], [3, 3], [1, 2]])
    exact = float(torch.stack([exact_elbo(model, x, steps=steps) for x in x0]).median())
    # measured spread of one estimate with 1000 draws: std 0.05 (all terms) / 0.06 (2 of 4 terms)
    full = app_log_lik(model, x0, steps=steps, step_samples=None, num_samples=1000, batch_size=4096,
                       generator=torch.Generator().manual_seed(1))
    assert full == pytest.approx(exact, abs=0.2)
    sub = app_log_lik(model, x0, steps=steps, step_samples=2, num_samples=1000, batch_size=4096,
                      generator=torch.Generator().manual_seed(2))
    assert sub == pytest.approx(exact, abs=0.25)  # a per-sequence subset of steps stays unbiased
    with pytest.raises(DataError, match="step_samples"):
        app_log_lik(model, x0, steps=steps, step_samples=9)


def test_top_hepg2_reference_takes_the_strongest_chr1_hepg2_sites():
    table = load_dhs()
    ref = top_hepg2_reference(50)
    on_chr1 = (table.chrom == "chr1") & (table.cell_line == "HepG2")
    signal = table.signal[on_chr1]
    seq_index = {s: i for i, s in enumerate(np.array(table.sequences)[on_chr1])}
    chosen = [seq_index[s] for s in decode(ref)]
    assert len(set(chosen)) == 50
    assert signal[chosen].min() >= np.delete(signal, chosen).max()
    with pytest.raises(DataError, match="reference size"):
        top_hepg2_reference(10**6)


def test_evaluate_sequences_reports_every_metric_consistently():
    motifs = MotifSet.from_counts([consensus_matrix(c) for c in ("ACGTTA", "GGATCC", "TTTAAGCA")], p_value=1e-3)
    gen = encode(random_seqs(8, 200, seed=7))
    oracle = FixedOracle([3.0, -1.0, 0.5, 2.0, -2.0, 1.0, 4.0, 0.0])
    out = evaluate_sequences(gen, eval_oracle=oracle, reference=gen, motifs=motifs)
    assert tuple(out) == METRIC_KEYS
    assert out["pred_activity"] == pytest.approx(0.75) and out["celltype_acc"] == pytest.approx(5 / 8)
    assert out["kmer3_corr"] == pytest.approx(1.0) and out["motif_corr"] == pytest.approx(1.0)
    assert out["app_log_lik"] is None and out["unique_frac"] == 1.0
    assert out["diversity_hamming"] == pytest.approx(diversity(gen)[0])
    profile = reference_profile(gen, motifs=motifs)
    assert evaluate_sequences(gen, eval_oracle=oracle, reference=profile, motifs=motifs) == out
