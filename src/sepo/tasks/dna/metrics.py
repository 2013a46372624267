"""The paper's DNA metrics on token tensors ``[N, L]`` (ids 0..3 = A, C, G, T), all vectorised.

Mapping to the paper's table (Zekri & Boullé 2025, Table 2; DRAKES, Wang et al. 2025, §6.2):

* ``pred_activity``: median (and IQR) of the *evaluation* oracle's activity (HepG2 log-odds).
* ``celltype_acc``: fraction with ``p_HepG2 > 0.5`` under the evaluation oracle (stands for ATAC-Acc).
* ``kmer3_corr``: Pearson correlation of 3-mer counts (summed over each set) with the reference set.
* ``motif_corr``: Spearman correlation of JASPAR motif hit counts (summed over each set) with the
  reference set (:mod:`sepo.tasks.dna.motifs` defines hits).
* ``app_log_lik``: median ELBO (nats per sequence) under the pretrained model.
* ``diversity_hamming``: mean pairwise Hamming distance (positions out of ``L``); ``unique_frac``:
  fraction of distinct sequences.

The reference set is the top held-out HepG2 sites by DHS signal on chr1 (:func:`top_hepg2_reference`),
the analogue of DRAKES' "top 0.1 % HepG2 activity" sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sepo.errors import DataError

__all__ = [
    "METRIC_KEYS",
    "REFERENCE_SIZE",
    "ReferenceProfile",
    "app_log_lik",
    "auroc",
    "celltype_accuracy",
    "diversity",
    "evaluate_sequences",
    "kmer_corr",
    "kmer_counts",
    "motif_corr",
    "pearson",
    "pred_activity",
    "rankdata",
    "reference_profile",
    "spearman",
    "top_hepg2_reference",
]

METRIC_KEYS = ("pred_activity", "pred_activity_iqr", "celltype_acc", "kmer3_corr", "motif_corr", "app_log_lik",
               "diversity_hamming", "unique_frac")
REFERENCE_SIZE = 640  # as many reference sites as generated samples per seed in the benchmark


# --------------------------------------------------------------------------------------------------
# statistics


def _as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def rankdata(x) -> np.ndarray:
    """1-based ranks with ties given their average rank (``[N]`` -> ``[N]`` float64)."""
    x = _as_float64(x)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # rank of the last member of each tie group
    return (upper - (counts - 1) / 2.0)[inverse]


def pearson(a, b) -> float:
    """Pearson correlation of two equal-length vectors; ``nan`` when either is constant."""
    a, b = _as_float64(a), _as_float64(b)
    if a.shape != b.shape or a.size < 2:
        raise DataError(f"correlation needs two vectors of the same length >= 2, got {a.size} and {b.size}")
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman(a, b) -> float:
    """Spearman rank correlation (Pearson of average ranks, so ties are handled); ``nan`` if constant."""
    return pearson(rankdata(a), rankdata(b))


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney U / (n_pos n_neg)); ties
    count one half. ``nan`` when one class is empty."""
    s = _as_float64(scores)
    y = _as_float64(labels) > 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# --------------------------------------------------------------------------------------------------
# sequence-set metrics


def _check_tokens(tokens: torch.Tensor, what: str = "tokens") -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        raise DataError(f"{what} must be a [N, L] tensor of ACGT token ids")
    if tokens.numel() == 0:
        raise DataError(f"{what} is empty; need at least one sequence")
    if int(tokens.min()) < 0 or int(tokens.max()) > 3:
        raise DataError(f"{what} holds ids outside 0..3 (A, C, G, T); unmask/decode sequences first")
    return tokens.long().cpu()


def kmer_counts(tokens: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Counts of every k-mer (overlapping, forward strand) summed over sequences: ``[N, L]`` -> ``[4^k]``
    long, indexed by the base-4 number of the k-mer (``AAA = 0``, ``AAC = 1``, ..., ``TTT = 63``).
    Validates the tokens, then counts with :func:`sepo.tasks.dna.kmers.kmer_counts`."""
    from .kmers import kmer_counts as _pooled_counts

    tokens = _check_tokens(tokens)
    if not 1 <= k <= tokens.shape[1]:
        raise DataError(f"k must be between 1 and the sequence length {tokens.shape[1]}, got {k}")
    return _pooled_counts(tokens, k)


def kmer_corr(gen: torch.Tensor, ref: torch.Tensor | None = None, *, k: int = 3, ref_counts: torch.Tensor | None = None) -> float:
    """Pearson correlation between the k-mer count vectors of ``gen`` and ``ref`` (or precomputed
    ``ref_counts``). Sets of different sizes compare fine: Pearson ignores the scale."""
    if ref_counts is None:
        if ref is None:
            raise DataError("kmer_corr needs reference sequences or their k-mer counts")
        ref_counts = kmer_counts(ref, k)
    return pearson(kmer_counts(gen, k), ref_counts)


def motif_corr(gen: torch.Tensor, ref: torch.Tensor | None = None, *, motifs=None, ref_hits: torch.Tensor | None = None) -> float:
    """Spearman correlation between per-motif hit counts (summed over each set) of ``gen`` and ``ref``
    (or precomputed ``ref_hits [M]``). ``motifs`` defaults to JASPAR2024 CORE vertebrates."""
    from .motifs import load_jaspar, motif_hits

    motifs = load_jaspar() if motifs is None else motifs
    if ref_hits is None:
        if ref is None:
            raise DataError("motif_corr needs reference sequences or their motif hit counts")
        ref_hits = motif_hits(_check_tokens(ref, "reference"), motifs).sum(0)
    return spearman(motif_hits(_check_tokens(gen), motifs).sum(0), ref_hits)


def pred_activity(oracle, tokens: torch.Tensor) -> tuple[float, float]:
    """``(median, IQR)`` of ``oracle.activity`` over the sequences (linear-interpolated quantiles)."""
    act = oracle.activity(_check_tokens(tokens)).double().cpu()
    q = torch.quantile(act, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return float(q[1]), float(q[2] - q[0])


def celltype_accuracy(oracle, tokens: torch.Tensor) -> float:
    """Fraction of sequences the oracle assigns to HepG2 with probability above 0.5."""
    return float((oracle.celltype_prob(_check_tokens(tokens)) > 0.5).double().mean())


def diversity(tokens: torch.Tensor, *, chunk: int = 1024) -> tuple[float, float]:
    """``(mean pairwise Hamming distance, unique fraction)`` of ``[N, L]`` tokens.

    The Hamming distance of every pair comes from one matrix product of one-hot encodings
    (``L - <onehot_i, onehot_j>``), in row chunks; the mean is over the ``N (N - 1) / 2`` unordered pairs
    (0 for a single sequence).
    """
    tokens = _check_tokens(tokens)
    n, length = tokens.shape
    unique = torch.unique(tokens, dim=0).shape[0] / n
    if n < 2:
        return 0.0, unique
    x = F.one_hot(tokens, 4).reshape(n, -1).float()  # matches are integers <= L: exact in float32
    total = 0.0
    for start in range(0, n, chunk):
        matches = x[start : start + chunk] @ x.T
        total += float((length - matches).double().sum())
    return total / (n * (n - 1)), unique  # each unordered pair was counted twice, the diagonal is 0


@torch.no_grad()
def app_log_lik(model, tokens: torch.Tensor, *, steps: int = 128, step_samples: int | None = 16, num_samples: int = 1,
                batch_size: int = 256, generator: torch.Generator | None = None) -> float:
    """Median ELBO (nats per sequence) of ``tokens [N, L]`` under ``model`` (the pretrained
    :class:`~sepo.diffusion.model.DiffusionModel`): :func:`sepo.diffusion.likelihood.elbo`, the bound of
    the ``steps``-step ancestral sampler, on ``batch_size`` rows (sequence draws) at a time.

    Cost control: each sequence evaluates its own random ``step_samples`` of the ``steps + 1`` terms
    (without replacement, rescaled: unbiased, independent across sequences), averaged over
    ``num_samples`` draws: ``N * num_samples * step_samples`` sequence passes in all (``None``: every
    term). The per-sequence noise is what a median over a few hundred sequences absorbs; raise
    ``step_samples`` / ``num_samples`` for precise per-sequence values.
    """
    from sepo.diffusion.likelihood import elbo, elbo_steps

    tokens = _check_tokens(tokens)
    if num_samples < 1:
        raise DataError(f"num_samples must be >= 1, got {num_samples}")
    n_terms = len(elbo_steps(steps))
    if step_samples is not None and not 1 <= step_samples <= n_terms:
        raise DataError(f"step_samples must be between 1 and steps + 1 = {n_terms} (or None), got {step_samples}")
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    was_training = model.training
    model.eval()  # no dropout in a likelihood
    rows = tokens.repeat_interleave(num_samples, dim=0)  # the draws of a sequence as extra rows: one batched pass
    try:
        values = [elbo(model, chunk.to(device), steps=steps, step_samples=step_samples, generator=generator).double().cpu()
                  for chunk in rows.split(batch_size)]
    finally:
        model.train(was_training)
    per_sequence = torch.cat(values).view(tokens.shape[0], num_samples).mean(1)
    return float(torch.quantile(per_sequence, 0.5))


# --------------------------------------------------------------------------------------------------
# reference and one-call evaluation


def top_hepg2_reference(n: int = REFERENCE_SIZE, *, table=None) -> torch.Tensor:
    """Tokens ``[n, 200]`` of the ``n`` held-out (chr1) HepG2 sites with the highest DHS signal
    (strongest first; ties broken by table order)."""
    from .data import encode
    from .splits import heldout_data

    test = heldout_data(table=table)
    idx = np.flatnonzero(test.cell_line == "HepG2")
    if n < 1 or n > len(idx):
        raise DataError(f"reference size must be between 1 and {len(idx)} (HepG2 sites on chr1), got {n}")
    order = idx[np.argsort(-test.signal[idx], kind="stable")[:n]]  # strongest first
    return encode([test.sequences[i] for i in order])


@dataclass
class ReferenceProfile:
    """Precomputed statistics of a reference set (reuse it across many evaluations).

    Fields:
        kmer3: ``[64]`` 3-mer counts summed over the reference sequences.
        motif_hits: ``[M]`` hit counts per motif summed over the reference sequences.
        size: number of reference sequences.
    """

    kmer3: torch.Tensor
    motif_hits: torch.Tensor
    size: int


def reference_profile(reference: torch.Tensor, *, motifs=None) -> ReferenceProfile:
    """3-mer and motif-hit profile of ``reference [N, L]`` tokens (``motifs`` defaults to JASPAR)."""
    from .motifs import load_jaspar, motif_hits

    reference = _check_tokens(reference, "reference")
    motifs = load_jaspar() if motifs is None else motifs
    return ReferenceProfile(kmer_counts(reference, 3), motif_hits(reference, motifs).sum(0), reference.shape[0])


def evaluate_sequences(
    tokens: torch.Tensor,
    *,
    eval_oracle,
    pretrained_model=None,
    reference: torch.Tensor | ReferenceProfile | None = None,
    motifs=None,
    elbo_steps: int = 128,
    elbo_step_samples: int | None = 16,
    generator: torch.Generator | None = None,
) -> dict:
    """Every metric of the DNA table for generated ``tokens [N, L]``.

    ``reference`` (tokens or a :class:`ReferenceProfile`) defaults to :func:`top_hepg2_reference`;
    ``app_log_lik`` is ``None`` without ``pretrained_model``. Returns a dict with :data:`METRIC_KEYS`.
    """
    from .motifs import load_jaspar

    tokens = _check_tokens(tokens)
    motifs = load_jaspar() if motifs is None else motifs
    if reference is None:
        reference = top_hepg2_reference()
    profile = reference if isinstance(reference, ReferenceProfile) else reference_profile(reference, motifs=motifs)
    median, iqr = pred_activity(eval_oracle, tokens)
    hamming, unique = diversity(tokens)
    return {
        "pred_activity": median,
        "pred_activity_iqr": iqr,
        "celltype_acc": celltype_accuracy(eval_oracle, tokens),
        "kmer3_corr": kmer_corr(tokens, ref_counts=profile.kmer3),
        "motif_corr": motif_corr(tokens, motifs=motifs, ref_hits=profile.motif_hits),
        "app_log_lik": None if pretrained_model is None else app_log_lik(
            pretrained_model, tokens, steps=elbo_steps, step_samples=elbo_step_samples, generator=generator),
        "diversity_hamming": hamming,
        "unique_frac": unique,
    }
