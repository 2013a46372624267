"""The ``text`` task of ``sepo pretrain / sample / eval``: Brown-corpus sentences as fixed-length token rows.

Each sentence of the corpus (:mod:`.corpus`) is encoded with the corpus BPE (:func:`.tokenizer.corpus_bpe`,
2,048 tokens), followed by ``<|endoftext|>`` and right-padded with the same token to :data:`TEXT_LENGTH`
tokens (the GPT-2 / SEDD convention: one eos token is end-of-text *and* padding). Sentences that do not fit
with their eos are left out rather than truncated, so every training row is a whole sentence and a sample
ends where the model puts its first eos. Splits: ``train`` / ``validation`` are the corpus splits of the
same name, ``test`` is the corpus ``heldout`` split (whose prefixes are also the prompts of prompted
completion, :func:`.corpus.make_prompts`).

Sample files are plain text, one completion per line (cut at the first eos; line breaks inside a text are
written as spaces). Reading a sample file re-encodes each line, which gives the canonical BPE ids of the
text (a model may have produced a non-canonical segmentation of the same string).

Presets (:data:`TEXT_PRESETS`): ``tiny`` — the ``text-tiny`` DiT (4 blocks, width 128) at length 32,
4,800 steps of 64 sentences, about 15 minutes on 2 CPU cores; ``small`` — width 256, 6 blocks, for a GPU.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from pathlib import Path

import torch

from sepo.errors import DataError
from sepo.train.tasks import SPLIT_ROLES, TaskSpec
from sepo.utils.io import write_text

__all__ = ["TASK", "TEXT_LENGTH", "TEXT_VOCAB", "TEXT_PRESETS", "load_text_split", "tokenizer_for_vocab",
           "text_tokenizer", "distinct_n", "real_lengths", "nelbo_report"]

#: Tokens per row (text + eos + padding). 50 % of the Brown training sentences fit (median 31 tokens).
TEXT_LENGTH = 32
#: Vocabulary description stored in every text checkpoint (checked when a model is loaded for this task).
TEXT_VOCAB = {"tokenizer": "brown-bpe2048", "size": 2048, "eos_id": 0}
_ROLE_TO_SPLIT = {"train": "train", "validation": "validation", "test": "heldout"}


def text_tokenizer():
    """The task's tokenizer (the cached 2,048-token corpus BPE)."""
    from .tokenizer import corpus_bpe

    return corpus_bpe(vocab_size=TEXT_VOCAB["size"])


def tokenizer_for_vocab(vocab: dict | None):
    """The :class:`~sepo.tasks.text.tokenizer.TextTokenizer` a checkpoint's ``vocab`` description names:
    ``brown-bpe2048`` (this task) or ``gpt2`` (SEDD / MDLM checkpoints). :class:`DataError` otherwise."""
    from .tokenizer import gpt2_tokenizer

    name = (vocab or {}).get("tokenizer")
    if name == TEXT_VOCAB["tokenizer"]:
        tok = text_tokenizer()
    elif name == "gpt2":
        tok = gpt2_tokenizer()
    else:
        raise DataError(f"the model's vocabulary {vocab!r} names no known text tokenizer; use a model trained with "
                        f"`sepo pretrain --task text` ({TEXT_VOCAB['tokenizer']}) or a GPT-2 SEDD / MDLM checkpoint")
    size = (vocab or {}).get("size")
    if size is not None and int(size) != tok.vocab_size:
        raise DataError(f"the model's vocabulary has {size} tokens but tokenizer {name!r} has {tok.vocab_size}")
    return tok


@lru_cache(maxsize=8)
def _encoded(split: str, length: int) -> torch.Tensor:
    from .corpus import load_corpus

    tok = text_tokenizer()
    texts = load_corpus(split)
    lengths = tok.token_lengths(texts)
    keep = [t for t, n in zip(texts, lengths) if n + 1 <= length]
    if not keep:
        raise DataError(f"no {split} sentence fits in {length} tokens with its end-of-text token")
    return tok.encode_batch(keep, length)


def load_text_split(role: str, *, length: int = TEXT_LENGTH) -> torch.Tensor:
    """LongTensor ``[N, length]`` of the sentences of ``role`` (``train``, ``validation``, ``test``) that fit
    with their eos, eos-padded, in corpus order."""
    if role not in _ROLE_TO_SPLIT:
        raise DataError(f"unknown split {role!r}; choose one of {', '.join(SPLIT_ROLES)}")
    return _encoded(_ROLE_TO_SPLIT[role], int(length)).clone()


def _write_samples(path, tokens: torch.Tensor) -> None:
    tok = text_tokenizer()
    lines = [" ".join(t.splitlines()) for t in tok.decode_batch(tokens.cpu())]
    write_text(path, "".join(line + "\n" for line in lines))


def _read_samples(path) -> torch.Tensor:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"sample file {str(path)!r} not found; write one with `sepo sample --out FILE`")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines:
        raise DataError(f"sample file {str(path)!r} is empty; expected one text per line")
    tok = text_tokenizer()
    over = [(i, n) for i, n in enumerate(tok.token_lengths(lines), 1) if n > TEXT_LENGTH]
    for i, n in over:
        if n > 2 * TEXT_LENGTH:
            raise DataError(f"{path}:{i}: the text has {n} tokens but the text task's sequences hold {TEXT_LENGTH}; "
                            "expected one sample of this task per line")
    if over:
        # a model may write a non-canonical segmentation of a string (e.g. "lo" + "own") whose canonical BPE is a
        # token or two longer than the model's window: keep such samples, cut to the window, and say so
        warnings.warn(f"{path}: {len(over)} line(s) re-encode to more than {TEXT_LENGTH} tokens (first: line "
                      f"{over[0][0]}, {over[0][1]} tokens) and are cut to {TEXT_LENGTH}", stacklevel=2)
    return tok.encode_batch(lines, TEXT_LENGTH)


def _encode_prefix(text: str) -> torch.Tensor:
    text = text.strip()
    if not text:
        raise DataError("--prefix is empty; give the start of a sentence, e.g. --prefix 'The jury said'")
    ids = text_tokenizer().encode(text)
    if len(ids) >= TEXT_LENGTH:
        raise DataError(f"--prefix has {len(ids)} tokens; the text model generates {TEXT_LENGTH} in all, so use "
                        f"at most {TEXT_LENGTH - 1}")
    return torch.tensor(ids, dtype=torch.long)


# ---------------------------------------------------------------- metrics
def real_lengths(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """``[N]`` tokens up to and including the first eos (``L`` for a row without one)."""
    is_eos = tokens == eos_id
    first = torch.where(is_eos.any(-1), is_eos.float().argmax(-1), torch.full_like(tokens[:, 0], tokens.shape[1] - 1))
    return first + 1


def distinct_n(tokens: torch.Tensor, n: int, *, eos_id: int, start: int = 0) -> float:
    """Distinct-n (Li et al., 2016): distinct n-grams / all n-grams over a batch ``[N, L]``, counting the
    tokens from ``start`` up to (excluding) each row's first eos. 0 when there is no n-gram."""
    grams, total = set(), 0
    ends = (real_lengths(tokens, eos_id) - (tokens == eos_id).any(-1).long()).tolist()
    for row, end in zip(tokens.tolist(), ends):
        seq = row[start:end]
        for i in range(len(seq) - n + 1):
            grams.add(tuple(seq[i:i + n]))
            total += 1
    return len(grams) / total if total else 0.0


def _sample_metrics(samples: torch.Tensor, reference: torch.Tensor) -> dict:
    eos = TEXT_VOCAB["eos_id"]
    lengths = real_lengths(samples, eos).float()
    out = {"distinct1": distinct_n(samples, 1, eos_id=eos), "distinct2": distinct_n(samples, 2, eos_id=eos),
           "reference_distinct2": distinct_n(reference[: samples.shape[0]], 2, eos_id=eos),
           "mean_tokens": float(lengths.mean()), "ended_fraction": float((samples == eos).any(-1).float().mean())}
    from .lm_baseline import default_lm

    lm = default_lm()
    out["lm_perplexity"] = lm.perplexity(samples, eos_id=eos)
    out["reference_lm_perplexity"] = lm.perplexity(reference, eos_id=eos)
    return out


def nelbo_report(tokens: torch.Tensor, per_sequence: torch.Tensor, *, eos_id: int = TEXT_VOCAB["eos_id"]) -> dict:
    """Perplexity bound per *text* token: ``exp(Σ NELBO / Σ real tokens)``, real tokens = the text and its eos.

    The NELBO also pays for the padding positions, so this upper-bounds the perplexity of the model's
    text-plus-eos stream (``bits_per_token`` divides by all ``L`` positions instead)."""
    n_real = real_lengths(tokens, eos_id).double().sum()
    return {"perplexity_bound": math.exp(float(per_sequence.double().sum() / n_real)),
            "text_tokens_per_sequence": float(n_real / tokens.shape[0])}


#: Pretraining presets of the text task (PretrainConfig fields).
TEXT_PRESETS: dict[str, dict] = {
    # text-tiny DiT at length 32: 1.55 M parameters; 0.18 s per step on 2 idle CPU cores (two threads: 4,800 steps
    # in 860 s). 4,800 steps, not 1,200: validation 4.68 (4.62 for the resumed run benchmarked) instead of 5.54
    # bits/token, and only on the longer-trained model did fine-tuning raise both judges on every seed (docs/text.md)
    "tiny": {
        "model": "text-tiny",
        "model_overrides": {"length": TEXT_LENGTH},
        "steps": 4800,
        "batch_size": 64,
        "lr": 2e-3,
        "warmup_steps": 100,
        "weight_decay": 0.0,
        "grad_clip": 1.0,
        "ema_decay": 0.995,
        "eval_every": 400,
        "val_size": 512,
        "val_draws": 2,
        "log_every": 50,
        "checkpoint_every": 400,
    },
    # a wider DiT for a GPU (a few minutes there)
    "small": {
        "model": "text-tiny",
        "model_overrides": {"length": TEXT_LENGTH, "hidden": 256, "n_layers": 6, "n_heads": 4, "cond_dim": 128},
        "steps": 20_000,
        "batch_size": 256,
        "lr": 1e-3,
        "warmup_steps": 1_000,
        "weight_decay": 0.0,
        "grad_clip": 1.0,
        "ema_decay": 0.9995,
        "eval_every": 2_000,
        "val_size": 0,
        "val_draws": 4,
        "log_every": 100,
        "checkpoint_every": 2_000,
    },
}

TASK = TaskSpec(
    name="text",
    description="Brown corpus sentences (≤ 31 BPE tokens + eos), 2,048-token corpus BPE; test = held-out split",
    vocab=dict(TEXT_VOCAB),
    vocab_size=TEXT_VOCAB["size"],
    length=TEXT_LENGTH,
    unit="token",
    load_split=load_text_split,
    presets=TEXT_PRESETS,
    write_samples=_write_samples,
    read_samples=_read_samples,
    encode_prefix=_encode_prefix,
    sample_metrics=_sample_metrics,
    sample_suffix=".txt",
    extra={"tokenizer": text_tokenizer, "nelbo_report": nelbo_report},
)
