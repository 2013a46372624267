"""An independent fluency model: an interpolated Kneser–Ney n-gram language model over BPE tokens.

Fluency of generated text is measured as its perplexity under a language model that shares nothing with the
diffusion model but the training sentences and the tokenizer: a left-to-right n-gram model with interpolated
Kneser–Ney smoothing (Kneser & Ney, 1995; the interpolated form and the discount estimate
``D = n1 / (n1 + 2 n2)`` of Chen & Goodman, 1998). For context ``h`` of order ``n``::

    p_n(w | h) = max(c_n(h w) - D_n, 0) / c_n(h ·)  +  D_n · N1+(h ·) / c_n(h ·) · p_{n-1}(w | h')

with ``h'`` the context without its first token, ``p_{n-1}`` used alone when ``h`` was never seen, raw counts
at the highest order and *continuation* counts (the number of distinct tokens seen to the left) below it,
ending in a uniform distribution over the vocabulary. Every ``p_n(· | h)`` sums to one exactly over the
vocabulary (tested), so perplexities are proper. Sentences start with ``order - 1`` begin-of-sentence symbols
(an id outside the vocabulary, context only) and end with the eos token, which the model predicts.

Fitting on the ~36 k training sentences (~1.1 M tokens) takes seconds in pure Python; scoring is a few
dictionary look-ups per token.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from functools import lru_cache
from typing import Iterable, Sequence

import torch

from sepo.errors import DataError

__all__ = ["KneserNeyLM", "default_lm"]


class KneserNeyLM:
    """Interpolated Kneser–Ney n-gram model over token ids ``0 … vocab_size-1``.

    Args:
        vocab_size: number of tokens ``V`` (the uniform floor is ``1/V``).
        eos_id: the end-of-sentence token, appended to every training sentence and predicted.
        order: the ``n`` of the n-grams (2 = bigram, 3 = trigram, ...).
    """

    def __init__(self, *, vocab_size: int, eos_id: int, order: int = 3):
        if order < 1:
            raise DataError(f"n-gram order must be >= 1, got {order}")
        if not 0 <= eos_id < vocab_size:
            raise DataError(f"eos_id {eos_id} is outside the vocabulary [0, {vocab_size})")
        self.vocab_size, self.eos_id, self.order = int(vocab_size), int(eos_id), int(order)
        self.bos = self.vocab_size  # context-only symbol
        self.counts: list[dict[tuple, int]] = []  # counts[n-1][(h..., w)] for n = 1..order
        self.context: list[dict[tuple, tuple[int, int]]] = []  # context[n-1][h] = (total, distinct followers)
        self.discounts: list[float] = []
        self.num_tokens = 0

    # ------------------------------------------------------------------ fitting
    def fit(self, sentences: Iterable[Sequence[int]]) -> "KneserNeyLM":
        """Count n-grams of ``sentences`` (each a sequence of ids, without eos) and set the discounts."""
        top: Counter = Counter()
        n, pad = self.order, [self.bos] * (self.order - 1)
        for sent in sentences:
            seq = pad + [int(t) for t in sent] + [self.eos_id]
            self.num_tokens += len(seq) - len(pad)
            for i in range(len(pad), len(seq)):
                top[tuple(seq[i - n + 1: i + 1])] += 1
        if not top:
            raise DataError("cannot fit an n-gram model on no sentences")
        levels = [top]
        for _ in range(n - 1):  # continuation counts: distinct left neighbours of each lower-order n-gram
            lower: Counter = Counter()
            for gram in levels[-1]:
                lower[gram[1:]] += 1
            levels.append(lower)
        self.counts = list(reversed(levels))  # counts[0] = unigrams ... counts[n-1] = the top order
        self.context, self.discounts = [], []
        for level in self.counts:
            ctx: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
            for gram, c in level.items():
                entry = ctx[gram[:-1]]
                entry[0] += c
                entry[1] += 1
            self.context.append({h: (t, k) for h, (t, k) in ctx.items()})
            of = Counter(level.values())
            n1, n2 = of.get(1, 0), of.get(2, 0)
            self.discounts.append(n1 / (n1 + 2 * n2) if n1 + n2 > 0 and n1 > 0 else 0.5)
        return self

    # ------------------------------------------------------------------ probabilities
    def prob(self, word: int, history: Sequence[int]) -> float:
        """``p(word | history)`` (only the last ``order - 1`` history tokens matter; pad with ``bos``)."""
        if not self.counts:
            raise DataError("the n-gram model is not fitted; call fit() first")
        k = self.order - 1
        hist = ([self.bos] * k + [int(t) for t in history[len(history) - k:]])[-k:] if k else []
        p = 1.0 / self.vocab_size
        for n in range(1, self.order + 1):  # build up from unigrams to the full context
            h = tuple(hist[len(hist) - (n - 1):]) if n > 1 else ()
            stats = self.context[n - 1].get(h)
            if stats is None:
                continue  # unseen context: keep the lower-order estimate
            total, types = stats
            d = self.discounts[n - 1]
            c = self.counts[n - 1].get(h + (int(word),), 0)
            p = max(c - d, 0.0) / total + d * types / total * p
        return p

    def sequence_log_prob(self, tokens: Sequence[int], *, start: int = 0) -> tuple[float, int]:
        """``(Σ log p, count)`` of ``tokens[start:]`` up to and including the first eos at or after ``start``,
        each token predicted from everything before it (the sentence start padded with ``bos``)."""
        tokens = [int(t) for t in tokens]
        logp, count = 0.0, 0
        for i in range(start, len(tokens)):
            logp += math.log(self.prob(tokens[i], tokens[:i]))
            count += 1
            if tokens[i] == self.eos_id:
                break
        return logp, count

    def perplexity(self, tokens: torch.Tensor, *, eos_id: int | None = None, start: int | Sequence[int] = 0) -> float:
        """Corpus perplexity ``exp(-Σ log p / Σ count)`` of the rows of ``tokens [N, L]``, scoring each row from
        ``start`` (an int or one per row, e.g. the prompt lengths) to its first eos (included)."""
        if eos_id is not None and eos_id != self.eos_id:
            raise DataError(f"the n-gram model's eos is {self.eos_id}, not {eos_id}")
        rows = tokens.tolist() if isinstance(tokens, torch.Tensor) else [list(r) for r in tokens]
        starts = [start] * len(rows) if isinstance(start, int) else list(start)
        total, count = 0.0, 0
        for row, s in zip(rows, starts):
            lp, c = self.sequence_log_prob(row, start=s)
            total += lp
            count += c
        if count == 0:
            raise DataError("no token to score (every row is empty after its start)")
        return math.exp(-total / count)


@lru_cache(maxsize=2)
def default_lm(order: int = 3) -> KneserNeyLM:
    """The text task's fluency model: a Kneser–Ney ``order``-gram model on every Brown ``train`` sentence
    (all lengths), tokenised with the task's corpus BPE. Built once per process (seconds)."""
    from .corpus import load_corpus
    from .pretrain import text_tokenizer

    tok = text_tokenizer()
    texts = load_corpus("train")
    encoded = [e.ids for e in tok._tok.encode_batch(texts, add_special_tokens=False)]
    return KneserNeyLM(vocab_size=tok.vocab_size, eos_id=tok.eos_id, order=order).fit(encoded)
