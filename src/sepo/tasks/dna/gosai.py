"""Loader for the Gosai et al. MPRA table, the paper-scale DNA data (not downloadable here).

Gosai et al. (2023, "Machine-guided design of cell-type-targeting cis-regulatory elements") measured
~735k 200-bp enhancers by MPRA in three cell lines; DRAKES (Wang et al. 2025) and SEPO train their
generator and reward on it. The table is a CSV with a header and (at least) the columns

    seq,hepg2,k562,sknsh

``seq``: the 200-bp sequence over ACGT (any case); ``hepg2``, ``k562``, ``sknsh``: measured activities
(log2 fold change) in HepG2, K562 and SK-N-SH. Extra columns are ignored.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from sepo.errors import DataError

from .data import SEQ_LEN, encode

__all__ = ["GOSAI_CELL_LINES", "GOSAI_COLUMNS", "load_gosai_csv"]

GOSAI_CELL_LINES = ("hepg2", "k562", "sknsh")
GOSAI_COLUMNS = ("seq",) + GOSAI_CELL_LINES


def load_gosai_csv(path: str | Path, *, length: int = SEQ_LEN) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a Gosai-format CSV -> ``(tokens [N, length] long, activities [N, 3] float32)`` with activity
    columns in :data:`GOSAI_CELL_LINES` order.

    Raises :class:`DataError` with one line naming the file, the row (1 = first data row) and its line
    number for: a missing file or column, an empty table, a sequence of the wrong length or with a
    character other than A, C, G, T, or an activity that is not a finite number.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"Gosai table {str(p)!r} not found; expected a CSV with columns {','.join(GOSAI_COLUMNS)}")
    seqs: list[str] = []
    acts: list[list[float]] = []
    lines: list[int] = []
    with open(p, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in GOSAI_COLUMNS if c not in header]
        if missing:
            raise DataError(f"{p}: missing column(s) {', '.join(missing)}; the header must contain {','.join(GOSAI_COLUMNS)} (found: {','.join(header) or 'nothing'})")
        reader.fieldnames = header  # tolerate spaces around names in the header
        for row_no, row in enumerate(reader, start=1):
            where = f"{p}: row {row_no} (line {reader.line_num})"
            seq = (row.get("seq") or "").strip()
            if len(seq) != length:
                raise DataError(f"{where}: sequence has length {len(seq)}, expected {length} bp")
            if not seq.isascii():
                j = next(j for j, c in enumerate(seq) if not c.isascii())
                raise DataError(f"{where}: invalid character {seq[j]!r} at position {j + 1}; only A, C, G, T are allowed")
            values = []
            for col in GOSAI_CELL_LINES:
                raw = row.get(col)
                if raw is None or not raw.strip():
                    raise DataError(f"{where}: missing {col} activity; every row needs {','.join(GOSAI_COLUMNS)}")
                try:
                    v = float(raw)
                except (TypeError, ValueError):
                    raise DataError(f"{where}: {col} activity {raw!r} is not a number") from None
                if not math.isfinite(v):
                    raise DataError(f"{where}: {col} activity {raw!r} is not finite")
                values.append(v)
            seqs.append(seq)
            acts.append(values)
            lines.append(reader.line_num)
    if not seqs:
        raise DataError(f"{p}: no data rows after the header")
    # characters checked at once on the encoded array (fast on the 735k-row table): -1 marks non-ACGT
    tokens = encode(seqs)
    bad = (tokens < 0).any(1)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0, 0])
        col = int(torch.nonzero(tokens[row] < 0)[0, 0])
        raise DataError(f"{p}: row {row + 1} (line {lines[row]}): invalid character {seqs[row][col]!r} at position {col + 1}; only A, C, G, T are allowed")
    return tokens, torch.from_numpy(np.asarray(acts, dtype=np.float32))
