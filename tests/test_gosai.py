"""Loader of the Gosai et al. MPRA table format (seq, hepg2, k562, sknsh), on small files written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sepo.errors import DataError
from sepo.tasks.dna.data import decode
from sepo.tasks.dna.gosai import GOSAI_CELL_LINES, load_gosai_csv


def _seqs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join("ACGT"[k] for k in rng.integers(0, 4, 200)) for _ in range(n)]


def _write(path, header: str, rows: list[str]):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_loads_tokens_and_activities_in_column_order(tmp_path):
    seqs = _seqs(5)
    acts = np.round(np.random.default_rng(1).normal(size=(5, 3)), 4)
    # extra and reordered columns, lower-case sequence, scientific notation: all accepted
    rows = [f"{i},{a[2]},{s.lower() if i == 2 else s},{a[1]:.4e},{a[0]}" for i, (s, a) in enumerate(zip(seqs, acts))]
    path = _write(tmp_path / "gosai.csv", "id,sknsh,seq,k562,hepg2", rows)
    tokens, activities = load_gosai_csv(path)
    assert tokens.shape == (5, 200) and tokens.dtype == torch.long
    assert decode(tokens) == seqs
    assert activities.dtype == torch.float32 and activities.shape == (5, 3)
    assert np.allclose(activities.numpy(), acts, atol=1e-4)  # hepg2, k562, sknsh
    assert GOSAI_CELL_LINES == ("hepg2", "k562", "sknsh")


@pytest.mark.parametrize(
    "header, row, message",
    [
        ("seq,hepg2,k562", "{s},1,2", "missing column.*sknsh"),
        ("seq,hepg2,k562,sknsh", "{short},1,2,3", "row 2 \\(line 3\\): sequence has length 199, expected 200"),
        ("seq,hepg2,k562,sknsh", "{bad},1,2,3", "row 2 \\(line 3\\): invalid character 'N' at position 7"),
        ("seq,hepg2,k562,sknsh", "{uni},1,2,3", "row 2 \\(line 3\\): invalid character 'é' at position 1"),
        ("seq,hepg2,k562,sknsh", "{s},1,high,3", "row 2 \\(line 3\\): k562 activity 'high' is not a number"),
        ("seq,hepg2,k562,sknsh", "{s},nan,2,3", "row 2 \\(line 3\\): hepg2 activity 'nan' is not finite"),
        ("seq,hepg2,k562,sknsh", "{s},1,2", "row 2 \\(line 3\\): missing sknsh activity"),
    ],
)
def test_bad_rows_give_one_line_errors_naming_the_row(tmp_path, header, row, message):
    good, s = _seqs(2)
    bad = s[:6] + "N" + s[7:]
    cells = {"s": s, "short": s[:199], "bad": bad, "uni": "é" + s[1:]}
    rows = [f"{good},0.1,0.2,0.3" if header.count(",") == 3 else f"{good},0.1,0.2", row.format(**cells)]
    path = _write(tmp_path / "bad.csv", header, rows)
    with pytest.raises(DataError, match=message) as e:
        load_gosai_csv(path)
    assert "\n" not in str(e.value) and "bad.csv" in str(e.value)


def test_missing_or_empty_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_gosai_csv(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="no data rows"):
        load_gosai_csv(_write(tmp_path / "empty.csv", "seq,hepg2,k562,sknsh", []))
