"""Chromosome splits of the DHS table: generator data, two oracles on disjoint chromosomes, the test set.

Splitting by chromosome (not at random) keeps near-identical neighbouring sites out of the held-out
sets, the standard practice for genomic models (e.g. Basenji, Kelley et al. 2018).

=========================  ===============================================================  =======
split                      chromosomes                                                      sites
=========================  ===============================================================  =======
``test`` (held out)        chr1 (``data_label == "test"``)                                   4,565
``generator``              ``data_label == "training"`` (all but chr1, chr2)                39,254
oracle A train             chr4 6 8 12 15 16 17 19 20 21                                    17,847
oracle A validation        chr2 (the table's own ``validation`` label)                       4,053
oracle B train             chr5 7 9 10 11 13 14 18 X Y                                      17,405
oracle B validation        chr3 22                                                           4,002
=========================  ===============================================================  =======

Oracle A is the **fine-tuning** oracle (its activity is the reward); oracle B is the **evaluation**
oracle, never seen during fine-tuning (the paper's protocol, Zekri & Boullé 2025 §4.2, following
DRAKES, Wang et al. 2025; unlike the reference code we keep the two oracles' data disjoint). The four
oracle chromosome sets are pairwise disjoint and together cover every non-test chromosome. How the
lists were chosen (frozen here so they never drift with the data): the validation sets are chr2 for A
(the table's validation label) and chr3 + chr22 for B (the same size, 4,002 sites); the remaining
chromosomes were assigned largest-first to whichever training set had fewer sites, which balances
them to within 3 % (17,847 vs 17,405 sites; 4,642 vs 4,133 HepG2 sites).

The generator trains on ``data_label == "training"``, which includes both oracles' chromosomes: the
pretrained model has seen the evaluation oracle's regions, as in the paper, but the fine-tuning
signal (oracle A) carries no information about oracle B's parameters or data beyond the genome itself.
chr1 enters no training set at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sepo.errors import DataError

from .data import DnaTable, load_dhs

__all__ = [
    "ORACLE_SPLITS",
    "TEST_CHROMS",
    "OracleSplit",
    "data_sha256",
    "generator_data",
    "heldout_data",
    "oracle_data",
    "oracle_split",
]

TEST_CHROMS: tuple[str, ...] = ("chr1",)


@dataclass(frozen=True)
class OracleSplit:
    """Chromosomes of one oracle.

    Fields:
        name: ``"A"`` (fine-tuning oracle) or ``"B"`` (evaluation oracle).
        role: what the oracle is used for, for logs and provenance.
        train_chroms: chromosomes whose sites train the oracle.
        val_chroms: chromosomes held out for model selection (best epoch) and reporting.
    """

    name: str
    role: str
    train_chroms: tuple[str, ...]
    val_chroms: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "role": self.role, "train_chroms": list(self.train_chroms),
                "val_chroms": list(self.val_chroms), "test_chroms": list(TEST_CHROMS)}


ORACLE_SPLITS: dict[str, OracleSplit] = {
    "A": OracleSplit(
        name="A",
        role="fine-tuning oracle (reward)",
        train_chroms=("chr4", "chr6", "chr8", "chr12", "chr15", "chr16", "chr17", "chr19", "chr20", "chr21"),
        val_chroms=("chr2",),
    ),
    "B": OracleSplit(
        name="B",
        role="evaluation oracle (never seen during fine-tuning)",
        train_chroms=("chr5", "chr7", "chr9", "chr10", "chr11", "chr13", "chr14", "chr18", "chrX", "chrY"),
        val_chroms=("chr3", "chr22"),
    ),
}


def oracle_split(name: str) -> OracleSplit:
    """The chromosome split of oracle ``"A"`` or ``"B"``."""
    key = str(name).upper()
    if key not in ORACLE_SPLITS:
        raise DataError(f"unknown oracle split {name!r}; choose A (fine-tuning oracle) or B (evaluation oracle)")
    return ORACLE_SPLITS[key]


def _chrom_mask(table: DnaTable, chroms: tuple[str, ...]) -> np.ndarray:
    return np.isin(table.chrom, np.asarray(chroms))


def oracle_data(name: str, part: str, *, table: DnaTable | None = None) -> DnaTable:
    """Sites of oracle ``name``'s ``part``: ``"train"``, ``"val"`` or ``"test"`` (chr1, shared by both).

    ``table`` defaults to the packaged DHS table; any :class:`DnaTable` with the same chromosome names works.
    """
    split = oracle_split(name)
    table = load_dhs() if table is None else table
    chroms = {"train": split.train_chroms, "val": split.val_chroms, "test": TEST_CHROMS}.get(part)
    if chroms is None:
        raise DataError(f"unknown oracle data part {part!r}; choose train, val or test")
    return table.subset(_chrom_mask(table, chroms))


def generator_data(*, table: DnaTable | None = None) -> DnaTable:
    """Generator training split: ``data_label == "training"`` (never chr1)."""
    table = load_dhs() if table is None else table
    return table.subset((table.split == "training") & ~_chrom_mask(table, TEST_CHROMS))


def heldout_data(*, table: DnaTable | None = None) -> DnaTable:
    """The held-out test split (chr1): reference sequences for metrics and the oracles' test AUROC."""
    table = load_dhs() if table is None else table
    return table.subset(_chrom_mask(table, TEST_CHROMS))


def data_sha256(*, table: DnaTable | None = None) -> str:
    """sha256 of the raw DHS table file (recorded in every oracle's provenance)."""
    table = load_dhs() if table is None else table
    return table.sha256
