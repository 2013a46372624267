"""Real regulatory DNA that installs offline, plus sequence-file I/O with strict validation.

The default corpus is the ENCODE DNase-I hypersensitive-site table shipped inside the PyPI package
``dnadiffusion==0.0.0.dev0`` (see ``../shared/docs/DATA.md``): 47,872 hg38 sites of 200 bp, each specific
to one of HepG2, K562, GM12878, hESC. Its ``data_label`` column gives the splits used everywhere:
``training`` (39,254 rows), ``validation`` (chr2, 4,053) and ``test`` (chr1, 4,565).

We read the file; we never import the package (its import pulls unrelated dependencies).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from sepo.errors import DataError

ALPHABET = "ACGT"
SEQ_LEN = 200
CELL_LINES = ("HepG2", "K562", "GM12878", "hESC")
DHS_FILE = "K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt"
SPLITS = ("training", "validation", "test")

_LUT = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate(ALPHABET):
    _LUT[ord(_c)] = _i
    _LUT[ord(_c.lower())] = _i


@dataclass
class DnaTable:
    """Columns of the DHS table as arrays (one entry per site)."""

    sequences: list[str]
    chrom: np.ndarray  # str, e.g. "chr14"
    cell_line: np.ndarray  # one of CELL_LINES
    split: np.ndarray  # "training" | "validation" | "test"
    signal: np.ndarray  # float, total DHS signal
    source: str
    sha256: str

    def __len__(self) -> int:
        return len(self.sequences)

    def subset(self, mask: np.ndarray) -> "DnaTable":
        idx = np.flatnonzero(mask)
        return DnaTable([self.sequences[i] for i in idx], self.chrom[idx], self.cell_line[idx], self.split[idx],
                        self.signal[idx], self.source, self.sha256)

    def tokens(self) -> torch.Tensor:
        return encode(self.sequences)


def dhs_path() -> Path:
    """Location of the packaged DHS table; a clear error if the package is missing."""
    try:
        root = importlib.resources.files("dnadiffusion")
    except ModuleNotFoundError:
        raise DataError(
            "the DHS data package is not installed; run: pip install --no-deps 'dnadiffusion==0.0.0.dev0' "
            "(or `make install`)"
        ) from None
    path = Path(str(root / "data" / DHS_FILE))
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall with pip install --no-deps --force-reinstall 'dnadiffusion==0.0.0.dev0'")
    return path


def _cell_line(tag: str) -> str:
    for c in CELL_LINES:
        if tag.startswith(c):
            return c
    raise DataError(f"unknown cell-line tag {tag!r} in the DHS table")


@lru_cache(maxsize=2)
def load_dhs(path: str | None = None) -> DnaTable:
    """Read the DHS table (cached). Validates every sequence (200 bp over ACGT)."""
    p = Path(path) if path else dhs_path()
    raw = p.read_bytes()
    rows = list(csv.DictReader(raw.decode().splitlines(), delimiter="\t"))
    if not rows:
        raise DataError(f"{p} holds no records")
    seqs = [r["sequence"].upper() for r in rows]
    validate_sequences(seqs, length=SEQ_LEN, source=str(p))
    return DnaTable(
        sequences=seqs,
        chrom=np.array([r["chr"] for r in rows]),
        cell_line=np.array([_cell_line(r["TAG"]) for r in rows]),
        split=np.array([r["data_label"] for r in rows]),
        signal=np.array([float(r["total_signal"]) for r in rows]),
        source=str(p),
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def dhs_split(split: str) -> DnaTable:
    """``training`` (generator training data), ``validation`` (chr2) or ``test`` (chr1)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    table = load_dhs()
    return table.subset(table.split == split)


def encode(seqs: list[str]) -> torch.Tensor:
    """``["ACGT...", ...]`` (equal lengths, validated) -> ``[N, L]`` long tokens."""
    if not seqs:
        return torch.zeros(0, 0, dtype=torch.long)
    arr = np.frombuffer("".join(seqs).encode("ascii"), dtype=np.uint8).reshape(len(seqs), -1)
    return torch.from_numpy(_LUT[arr])


def decode(tokens: torch.Tensor) -> list[str]:
    """``[N, L]`` tokens in ``0..3`` -> strings; any other id (e.g. a left-over mask) becomes ``N``."""
    lut = np.array(list(ALPHABET + "N"))
    t = tokens.detach().cpu().numpy()
    t = np.where((t >= 0) & (t < 4), t, 4)
    return ["".join(row) for row in lut[t]]


def validate_sequences(seqs: list[str], *, length: int | None = SEQ_LEN, source: str = "input", names: list[str] | None = None) -> None:
    """Raise :class:`DataError` naming the first bad record (non-ACGT character or wrong length)."""
    if not seqs:
        raise DataError(f"{source}: no sequences found; expected FASTA records or one sequence per line")
    for k, s in enumerate(seqs):
        label = names[k] if names else f"record {k + 1}"
        if length is not None and len(s) != length:
            raise DataError(f"{source}: {label} has length {len(s)}, expected {length}; trim or pad sequences to {length} bp")
        bad = next((j for j, c in enumerate(s) if c not in "ACGTacgt"), None)
        if bad is not None:
            raise DataError(f"{source}: {label} has invalid character {s[bad]!r} at position {bad + 1}; only A, C, G, T are allowed")


def read_sequences(path: str | Path, *, length: int | None = SEQ_LEN) -> tuple[list[str], list[str]]:
    """Read FASTA (``>name`` lines) or plain text (one sequence per line). Returns ``(names, seqs)``."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"sequence file {str(p)!r} not found")
    text = p.read_text(errors="replace")
    names, seqs = [], []
    if text.lstrip().startswith(">"):
        cur = None
        for line in text.splitlines():
            line = line.strip()
            if line.startswith(">"):
                names.append(line[1:].strip() or f"record {len(names) + 1}")
                seqs.append("")
                cur = len(seqs) - 1
            elif line and cur is not None:
                seqs[cur] += line
    else:
        for line in text.splitlines():
            if line.strip():
                seqs.append(line.strip())
                names.append(f"line {len(seqs)}")
    validate_sequences(seqs, length=length, source=str(p), names=names)
    return names, [s.upper() for s in seqs]


def write_fasta(path: str | Path, seqs: list[str], *, names: list[str] | None = None, width: int = 0) -> None:
    """Write FASTA atomically (``width`` > 0 wraps lines)."""
    from sepo.utils.io import write_text

    names = names or [f"seq{i}" for i in range(len(seqs))]
    lines = []
    for n, s in zip(names, seqs):
        lines.append(f">{n}")
        if width > 0:
            lines.extend(s[i : i + width] for i in range(0, len(s), width))
        else:
            lines.append(s)
    write_text(path, "\n".join(lines) + "\n")
