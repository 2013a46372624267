"""Human sentiment ratings: the 23,703 sentences of Hutto & Gilbert (2014), each rated −4 … +4 by ~20 people.

C.J. Hutto and E. Gilbert, "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social Media
Text", ICWSM 2014. Four domains: 10,605 movie-review snippets, 4,200 tweets, 3,708 product-review snippets,
5,190 New York Times editorial snippets; the ``*_GroundTruth.txt`` files give ``id<TAB>mean<TAB>text``.

They stand in for the paper's human-preference data (HH-RLHF) — the reward model is *learned* from people's
judgements, as there. Every sentence gets one fixed **part** by a hash of its cleaned text (stable when other
sentences are added or removed):

* ``reward`` (≈42.5 %) — trains the reward model that guides fine-tuning;
* ``judge`` (≈42.5 %) — trains the learned judge, never seen by the reward model;
* ``test`` (15 %) — reported correlations only.

Exact duplicate texts (after cleaning) are merged into one sentence with their mean rating.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sepo.errors import DataError

from . import assets
from .corpus import clean_text, hash_unit

DOMAINS = {
    "movie": "movieReviewSnippets_GroundTruth.txt",
    "tweet": "tweets_GroundTruth.txt",
    "product": "amazonReviewSnippets_GroundTruth.txt",
    "editorial": "nytEditorialSnippets_GroundTruth.txt",
}
N_RAW = 23_703
PARTS = ("reward", "judge", "test")
TEST_FRACTION = 0.15
_SALT = "sepo-ratings-part-v1"


@dataclass
class RatedSentences:
    """Sentences with their mean human rating.

    Fields:
        texts: cleaned sentences (ASCII, single spaces).
        ratings: float32 array ``[N]``, mean rating in [−4, 4].
        domains: array ``[N]`` of ``movie | tweet | product | editorial``.
        part: which part these come from (``reward``, ``judge``, ``test`` or ``all``).
        sha256: digest of the four source files, for provenance.
    """

    texts: list[str]
    ratings: np.ndarray
    domains: np.ndarray
    part: str
    sha256: str

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, n: int | None, *, seed: int = 0) -> "RatedSentences":
        """A deterministic random subset of ``n`` sentences (all of them, shuffled, if ``n`` is None)."""
        order = np.random.default_rng(seed).permutation(len(self))
        if n is not None:
            if n > len(self):
                raise DataError(f"asked for {n} rated sentences but the {self.part!r} part has {len(self)}")
            order = order[:n]
        return RatedSentences([self.texts[i] for i in order], self.ratings[order], self.domains[order],
                              self.part, self.sha256)


def part_of(text: str) -> str:
    """The part a cleaned sentence belongs to: a function of the text alone."""
    u = hash_unit(text, salt=_SALT)
    if u < TEST_FRACTION:
        return "test"
    return "reward" if u < TEST_FRACTION + (1 - TEST_FRACTION) / 2 else "judge"


@lru_cache(maxsize=1)
def _load_all() -> RatedSentences:
    folder = assets.hutto_dir()
    digest = hashlib.sha256()
    merged: dict[str, list] = {}
    n_raw = 0
    for domain, filename in DOMAINS.items():
        path = folder / filename
        if not path.is_file():
            raise DataError(f"{path} is missing; {assets.FETCH_HINT} --force")
        raw = path.read_bytes()
        digest.update(raw)
        for line_no, line in enumerate(raw.decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise DataError(f"{path}:{line_no}: expected 3 tab-separated fields, got {len(fields)}")
            rating = float(fields[1])
            if not -4.0 <= rating <= 4.0:
                raise DataError(f"{path}:{line_no}: rating {rating} outside [-4, 4]")
            n_raw += 1
            text = clean_text(fields[2])
            if text:
                merged.setdefault(text, [domain, []])[1].append(rating)
    if n_raw != N_RAW:
        raise DataError(f"expected {N_RAW} rated sentences in {folder}, found {n_raw}; {assets.FETCH_HINT} --force")
    texts = list(merged)
    ratings = np.array([np.mean(merged[t][1]) for t in texts], dtype=np.float32)
    domains = np.array([merged[t][0] for t in texts])
    return RatedSentences(texts, ratings, domains, "all", digest.hexdigest())


def load_ratings(part: str = "all") -> RatedSentences:
    """Rated sentences of one part (``reward``, ``judge``, ``test``) or ``all`` of them, in file order."""
    data = _load_all()
    if part == "all":
        return data
    if part not in PARTS:
        raise DataError(f"unknown ratings part {part!r}; use one of {', '.join(PARTS)} or 'all'")
    keep = np.array([part_of(t) == part for t in data.texts])
    idx = np.flatnonzero(keep)
    return RatedSentences([data.texts[i] for i in idx], data.ratings[idx], data.domains[idx], part, data.sha256)
