"""JASPAR position weight matrices and vectorised motif scanning in torch (the Motif-corr metric).

**Matrices.** JASPAR2024 CORE vertebrates, latest version of each matrix (879 motifs), read from the
SQLite file shipped in the ``pyjaspar`` wheel (Fornes et al. 2020; Rauluseviciute et al. 2024). Reading
the database takes about a second, so the count matrices are cached in
``$SEPO_CACHE_DIR`` (default ``~/.cache/sepo``) ``/jaspar/<release>_<collection>_<tax>.safetensors`` and in
memory.

**Scores.** A count matrix ``c[b, j]`` (``N_j`` sites in column ``j``) becomes log-odds against a uniform
background with a total pseudocount ``0.8`` split evenly over the bases, the value recommended by
Nishida, Frith & Nakai (NAR 2009, "Pseudocounts for transcription factor binding sites"):

    w[b, j] = ln( (c[b, j] + 0.2) / (N_j + 0.8) / 0.25 )       (nats)

Each weight is rounded to a grid of ``resolution = 0.1`` nats and stored as an integer, so that scanning
is exact integer arithmetic (float32 convolutions of small integers) and the p-value threshold below is
exact *for the matrix we scan* (rounding moves a weight by at most 0.05 nats; MOODS and FIMO also
discretise scores to compute p-values).

**Threshold (what counts as a hit).** A window is a hit when its score reaches the smallest score whose
right-tail probability under the background (i.i.d. uniform bases) is at most ``p_value = 1e-4``: FIMO's
default (Grant, Bailey & Noble 2011). Unlike a fixed fraction of the maximum score, a p-value threshold
means the same thing for a 6-bp and a 20-bp motif (each fires about once per 10^4 random windows). The
null distribution of the score is computed exactly by dynamic programming over columns (the score is a
sum of independent per-column scores), for all motifs at once. Motifs too short to reach ``p_value``
even with their best match (length <= 6 at 1e-4, since ``4^-6 > 1e-4``) count only exact best matches.

**Scanning.** Both strands at every start position where the whole motif fits (``L - l + 1`` starts per
strand): the reverse strand is scanned with the reverse-complement matrix, and a reverse hit at start
``p`` covers forward positions ``p .. p + l - 1``. A palindromic site therefore counts once per strand.
Motifs are grouped by width so one ``conv1d`` scans a whole group.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sepo.errors import DataError

__all__ = [
    "MotifSet",
    "cache_dir",
    "hit_mask",
    "jaspar_counts",
    "load_jaspar",
    "log_odds",
    "motif_hits",
    "scan_scores",
    "score_thresholds",
]

DEFAULT_RELEASE = "JASPAR2024"
PSEUDOCOUNT = 0.8
P_VALUE = 1e-4
RESOLUTION = 0.1
_WIDTH_BUCKET = 4  # motifs are padded to a multiple of this width and scanned group by group


def cache_dir() -> Path:
    """``$SEPO_CACHE_DIR`` or ``$XDG_CACHE_HOME/sepo`` or ``~/.cache/sepo``."""
    if os.environ.get("SEPO_CACHE_DIR"):
        return Path(os.environ["SEPO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sepo"


def log_odds(counts: np.ndarray, *, pseudocount: float = PSEUDOCOUNT) -> np.ndarray:
    """Count matrix ``[4, l]`` (rows A, C, G, T) -> log-odds ``[4, l]`` in nats vs a uniform background."""
    counts = np.asarray(counts, dtype=np.float64)
    probs = (counts + pseudocount / 4.0) / (counts.sum(0, keepdims=True) + pseudocount)
    return np.log(probs / 0.25)


def score_thresholds(scores: torch.Tensor, lengths: torch.Tensor, *, p_value: float, block: int = 64) -> torch.Tensor:
    """Exact integer thresholds ``[M]`` for integer score matrices ``[M, 4, W]`` (zero-padded past ``lengths``).

    ``threshold[m] = min{s : P(S_m >= s) <= p_value}`` where ``S_m`` is the score of a uniform random
    window, or the maximum score when even that is more likely than ``p_value``. Dynamic programming
    over columns on the integer grid (the distribution of a sum of independent column scores),
    vectorised over blocks of motifs of similar score span.
    """
    s = scores.to(torch.long)
    col_min = s.amin(1)  # [M, W]
    shift = s - col_min[:, None, :]  # >= 0
    span = shift.amax(1).sum(-1)  # [M]: max - min score
    first = torch.empty_like(span)
    order = torch.argsort(span)
    for chunk in order.split(block):
        size = int(span[chunk].max()) + 1
        width = int(lengths[chunk].max())
        sh = shift[chunk, :, :width]
        dist = torch.zeros(len(chunk), size, dtype=torch.float64)
        dist[:, 0] = 1.0
        grid = torch.arange(size)
        for j in range(width):
            new = torch.zeros_like(dist)
            for b in range(4):
                # new[m, r] += dist[m, r - shift]: shift the whole row right by the base's score
                src = grid[None, :] - sh[:, b, j : j + 1]
                new += 0.25 * dist.gather(1, src.clamp_min(0)) * (src >= 0)
            dist = new
        tail = dist.flip(1).cumsum(1).flip(1)  # tail[m, r] = P(S - min >= r)
        ok = tail <= p_value
        # tail is non-increasing, so argmax finds the first r with tail <= p; none -> best score only
        first[chunk] = torch.where(ok.any(1), ok.to(torch.uint8).argmax(1), span[chunk])
    return torch.minimum(first, span) + col_min.sum(-1)


@dataclass
class MotifSet:
    """Integer log-odds matrices ready for scanning.

    Fields:
        ids: matrix ids (e.g. ``MA0004.1``), one per motif.
        names: transcription-factor names.
        scores: ``[M, 4, W]`` long, weights in units of ``resolution`` nats, zero past each motif's length.
        lengths: ``[M]`` long, motif widths.
        thresholds: ``[M]`` long, hit thresholds on the same integer scale.
        resolution: nats per integer score unit.
        p_value: background tail probability defining the thresholds.
        pseudocount: total pseudocount per column used for the log-odds.
    """

    ids: list[str]
    names: list[str]
    scores: torch.Tensor
    lengths: torch.Tensor
    thresholds: torch.Tensor
    resolution: float = RESOLUTION
    p_value: float = P_VALUE
    pseudocount: float = PSEUDOCOUNT

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_counts(cls, counts: list, *, ids: list[str] | None = None, names: list[str] | None = None,
                    pseudocount: float = PSEUDOCOUNT, p_value: float = P_VALUE, resolution: float = RESOLUTION) -> MotifSet:
        """Build from count (or probability) matrices, each ``[4, l]`` with rows A, C, G, T."""
        if not counts:
            raise DataError("no motif matrices given")
        mats = [np.asarray(c, dtype=np.float64) for c in counts]
        for i, c in enumerate(mats):
            if c.ndim != 2 or c.shape[0] != 4 or c.shape[1] < 1 or (c < 0).any():
                raise DataError(f"motif {i}: expected a non-negative [4, length] count matrix (rows A, C, G, T), got shape {c.shape}")
        width = max(c.shape[1] for c in mats)
        scores = torch.zeros(len(mats), 4, width, dtype=torch.long)
        for i, c in enumerate(mats):
            scores[i, :, : c.shape[1]] = torch.from_numpy(np.rint(log_odds(c, pseudocount=pseudocount) / resolution).astype(np.int64))
        lengths = torch.tensor([c.shape[1] for c in mats], dtype=torch.long)
        ids = list(ids) if ids is not None else [f"motif{i}" for i in range(len(mats))]
        names = list(names) if names is not None else list(ids)
        thresholds = score_thresholds(scores, lengths, p_value=p_value)
        return cls(ids, names, scores, lengths, thresholds, resolution, p_value, pseudocount)

    def max_scores(self) -> torch.Tensor:
        """Best achievable score ``[M]`` (integer scale)."""
        return self.scores.amax(1).sum(-1)


def _read_db(release: str, collection: str, tax_group: str) -> tuple[list[str], list[str], list[np.ndarray]]:
    try:
        from pyjaspar import jaspardb
    except ModuleNotFoundError:
        raise DataError("motif metrics need pyjaspar; run: pip install pyjaspar") from None
    import importlib.resources

    data = importlib.resources.files("pyjaspar") / "data"
    available = sorted(p.name[: -len(".sqlite")] for p in data.iterdir() if p.name.endswith(".sqlite"))
    if release not in available:  # pyjaspar only prints a warning for an unknown release
        raise DataError(f"JASPAR release {release!r} is not in the installed pyjaspar; choose one of {', '.join(available)}")
    db = jaspardb(release=release)
    motifs = db.fetch_motifs(collection=collection, tax_group=[tax_group], all_versions=False)
    if not motifs:
        raise DataError(f"JASPAR {release} has no {collection} {tax_group} matrices")
    ids = [m.matrix_id for m in motifs]
    names = [m.name for m in motifs]
    mats = [np.array([m.counts[b] for b in "ACGT"], dtype=np.float64) for m in motifs]
    return ids, names, mats


def jaspar_counts(release: str = DEFAULT_RELEASE, *, collection: str = "CORE", tax_group: str = "vertebrates",
                  use_cache: bool = True) -> tuple[list[str], list[str], list[np.ndarray]]:
    """``(ids, names, count matrices [4, l])`` of the latest version of every matrix, from the disk cache
    when present (a corrupt cache is rebuilt)."""
    from safetensors.torch import load_file, save_file

    from sepo.utils.io import atomic_path

    path = cache_dir() / "jaspar" / f"{release}_{collection}_{tax_group}.safetensors".replace(" ", "_")
    if use_cache and path.is_file():
        try:
            data = load_file(str(path))
            meta = json.loads((path.with_suffix(".json")).read_text())
            counts, lengths = data["counts"].numpy(), data["lengths"].tolist()
            if len(meta["ids"]) == len(lengths):
                return meta["ids"], meta["names"], [counts[i, :, :n] for i, n in enumerate(lengths)]
        except Exception:  # noqa: BLE001, S110 - any unreadable cache is disposable: rebuilt below
            pass
    ids, names, mats = _read_db(release, collection, tax_group)
    if use_cache:
        width = max(m.shape[1] for m in mats)
        padded = np.zeros((len(mats), 4, width))
        for i, m in enumerate(mats):
            padded[i, :, : m.shape[1]] = m
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(path.with_suffix(".json")) as tmp:
                tmp.write_text(json.dumps({"release": release, "collection": collection, "tax_group": tax_group,
                                           "ids": ids, "names": names}))
            with atomic_path(path) as tmp:
                save_file({"counts": torch.from_numpy(padded), "lengths": torch.tensor([m.shape[1] for m in mats])}, str(tmp))
        except OSError:  # read-only home: work without the cache
            pass
    return ids, names, mats


@lru_cache(maxsize=4)
def load_jaspar(release: str = DEFAULT_RELEASE, *, collection: str = "CORE", tax_group: str = "vertebrates",
                pseudocount: float = PSEUDOCOUNT, p_value: float = P_VALUE, resolution: float = RESOLUTION) -> MotifSet:
    """The JASPAR matrices as a :class:`MotifSet` (cached in memory and, for the counts, on disk)."""
    ids, names, mats = jaspar_counts(release, collection=collection, tax_group=tax_group)
    return MotifSet.from_counts(mats, ids=ids, names=names, pseudocount=pseudocount, p_value=p_value, resolution=resolution)


# --------------------------------------------------------------------------------------------------
# scanning


@lru_cache(maxsize=8)
def _groups(widths: tuple[int, ...]) -> list[tuple[int, list[int]]]:
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(widths):
        groups.setdefault(_WIDTH_BUCKET * math.ceil(w / _WIDTH_BUCKET), []).append(i)
    return sorted(groups.items())


def _onehot(tokens: torch.Tensor) -> torch.Tensor:
    if tokens.dim() != 2:
        raise DataError(f"motif scanning needs tokens [N, L], got shape {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > 3):
        raise DataError("motif scanning got token ids outside 0..3 (A, C, G, T); unmask/decode sequences first")
    return F.one_hot(tokens.long(), 4).float().transpose(1, 2)  # [N, 4, L]


def _group_scores(x: torch.Tensor, motifs: MotifSet):
    """Yield ``(motif indices [G], scores [N, G, 2, L], valid starts [G, L])`` group by group for one-hot
    ``x [N, 4, L]``. One ``conv1d`` per width group scans both strands of every motif in it."""
    n, _, length = x.shape
    scores = motifs.scores.float()
    rc = scores.flip(1)  # complement (ACGT -> TGCA); the column reversal is done per motif below
    lengths = motifs.lengths.tolist()
    for width, idx in _groups(tuple(lengths)):
        w = torch.zeros(2 * len(idx), 4, width)
        for k, i in enumerate(idx):
            li = lengths[i]
            w[k, :, :li] = scores[i, :, :li]
            w[len(idx) + k, :, :li] = rc[i, :, :li].flip(-1)
        s = F.conv1d(F.pad(x, (0, width - 1)), w)  # [N, 2G, L]; zero padding scores 0 past the end
        s = s.view(n, 2, len(idx), length).transpose(1, 2)  # [N, G, 2, L]
        valid = torch.arange(length)[None, :] <= (length - motifs.lengths[idx])[:, None]  # motif fits
        yield torch.tensor(idx), s, valid


def scan_scores(tokens: torch.Tensor, motifs: MotifSet) -> torch.Tensor:
    """Integer scores of every motif at every start on both strands: tokens ``[N, L]`` ->
    ``[N, M, 2, L]`` float (strand 0 forward, 1 reverse complement); starts where the motif does not fit
    (``p > L - l``) hold ``-inf``. Memory grows as ``N * M * 2 * L``: meant for inspecting a few
    sequences; :func:`motif_hits` counts hits of large sets in batches."""
    x = _onehot(tokens)
    out = torch.full((x.shape[0], len(motifs), 2, x.shape[2]), -math.inf)
    for idx, s, valid in _group_scores(x, motifs):
        out[:, idx] = s.masked_fill(~valid[None, :, None, :], -math.inf)
    return out


def hit_mask(tokens: torch.Tensor, motifs: MotifSet) -> torch.Tensor:
    """Boolean hits ``[N, M, 2, L]``: score at or above the motif's threshold (see module docstring)."""
    return scan_scores(tokens, motifs) >= motifs.thresholds.float()[None, :, None, None]


def motif_hits(tokens: torch.Tensor, motifs: MotifSet, *, batch_size: int = 64) -> torch.Tensor:
    """Hits per sequence and motif, both strands: tokens ``[N, L]`` -> ``[N, M]`` long (batched scan)."""
    x_all = _onehot(tokens.cpu())
    counts = torch.zeros(x_all.shape[0], len(motifs), dtype=torch.long)
    thresholds = motifs.thresholds.float()
    for start in range(0, x_all.shape[0], batch_size):
        x = x_all[start : start + batch_size]
        for idx, s, valid in _group_scores(x, motifs):
            hits = (s >= thresholds[idx][None, :, None, None]) & valid[None, :, None, :]
            counts[start : start + x.shape[0], idx] = hits.sum((2, 3))
    return counts
