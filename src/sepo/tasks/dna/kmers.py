"""k-mer statistics of token sequences and the k-mer correlation used to judge generated DNA.

The "3-mer Pearson correlation" of DRAKES (Wang et al., 2025, Table 1) compares the 3-mer count
vector of generated sequences with that of real held-out sequences; a model that reproduces local
sequence composition scores close to 1. Counts are pooled over all sequences and all windows.
"""

from __future__ import annotations

import torch

__all__ = ["kmer_index", "kmer_counts", "pearson", "kmer_correlation", "kmer_names"]


def kmer_index(tokens: torch.Tensor, k: int, *, vocab_size: int = 4) -> torch.Tensor:
    """Index of every length-``k`` window, read as a base-``vocab_size`` number (first token most
    significant). ``tokens [N, L]`` long -> ``[N, L - k + 1]`` long; a window holding a token outside
    ``0 .. vocab_size - 1`` (a mask, an ``N``) gets index ``-1``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if tokens.dim() == 1:
        tokens = tokens.unsqueeze(0)
    n, length = tokens.shape
    if length < k:
        return torch.zeros(n, 0, dtype=torch.long, device=tokens.device)
    windows = tokens.unfold(1, k, 1)  # [N, L-k+1, k]
    valid = ((windows >= 0) & (windows < vocab_size)).all(-1)
    weights = vocab_size ** torch.arange(k - 1, -1, -1, device=tokens.device)
    idx = (windows.clamp(0, vocab_size - 1) * weights).sum(-1)
    return torch.where(valid, idx, torch.full_like(idx, -1))


def kmer_counts(tokens: torch.Tensor, k: int, *, vocab_size: int = 4) -> torch.Tensor:
    """Pooled counts of every k-mer over all sequences and windows: ``[N, L]`` -> ``[vocab_size**k]``
    (int64). Windows containing an out-of-vocabulary token are not counted."""
    idx = kmer_index(tokens, k, vocab_size=vocab_size).reshape(-1)
    idx = idx[idx >= 0]
    return torch.bincount(idx.cpu(), minlength=vocab_size**k)


def kmer_names(k: int, alphabet: str = "ACGT") -> list[str]:
    """Labels matching :func:`kmer_counts`' order, e.g. ``["AAA", "AAC", ...]``."""
    names = [""]
    for _ in range(k):
        names = [n + c for n in names for c in alphabet]
    return names


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two equal-length vectors (float64). ``nan`` if either is constant."""
    x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"pearson: vectors of different lengths {x.numel()} and {y.numel()}")
    xc, yc = x - x.mean(), y - y.mean()
    denom = (xc.square().sum() * yc.square().sum()).sqrt()
    if denom == 0:
        return float("nan")
    return float((xc * yc).sum() / denom)


def kmer_correlation(generated: torch.Tensor, reference: torch.Tensor, *, k: int = 3, vocab_size: int = 4) -> float:
    """Pearson correlation between the pooled k-mer counts of two sets of sequences ``[N, L]``, ``[M, L']``.

    Counts are compared as raw vectors; Pearson is invariant to scaling, so different set sizes are fine.
    """
    return pearson(kmer_counts(generated, k, vocab_size=vocab_size), kmer_counts(reference, k, vocab_size=vocab_size))
