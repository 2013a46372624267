"""A sentiment reward model learned from human ratings, fast enough for an RL loop on CPU.

The paper (Zekri & Boullé, 2025, §4.1) steers SEDD with a GPT-2 reward model trained on human preference data.
Offline, we learn the reward from the **reward part** of the 23,703 human-rated sentences (:mod:`.ratings`):
a ridge regression (Hoerl & Kennard, 1970) of the mean human rating (−4 … +4) on hashed n-gram features
(Weinberger et al., 2009, "feature hashing") — lower-cased word unigrams and bigrams plus character 3–5-grams
inside words (subword features as in fastText, Bojanowski et al., 2017), each row L2-normalised. The normal
equations are solved exactly (to a relative residual of 1e-6) by conjugate gradients on the sparse (scipy)
design matrix, so training is deterministic and takes seconds; the ridge strength is chosen on a validation slice of
the reward part, never on the test part. Scoring a sentence costs one sparse dot product (thousands of
sentences per second on one core).

Every scorer in the text task — this reward and the judges in :mod:`.judges` — is a :class:`TextScorer`:
``scorer(texts: list[str]) -> FloatTensor [B]``; ``scorer.on_tokens(tokenizer)`` scores id tensors ``[B, L]``
by decoding them first.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import zlib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from sepo.errors import CheckpointError, ConfigError, DataError, RewardError
from sepo.utils.io import atomic_dir, write_json

from . import assets
from .corpus import clean_text

if TYPE_CHECKING:  # pragma: no cover
    from .ratings import RatedSentences
    from .tokenizer import TextTokenizer


# ---------------------------------------------------------------- common scorer interface
def as_texts(texts) -> list[str]:
    """Validate a batch of texts: a list/tuple of str (a lone str is refused, it is almost always a bug)."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise DataError(f"a text scorer takes a list of strings, got {type(texts).__name__}")
    for t in texts:
        if not isinstance(t, str):
            raise DataError(f"a text scorer takes a list of strings, found a {type(t).__name__}")
    return list(texts)


class TextScorer:
    """Maps a batch of texts to one float each: ``scorer(texts) -> FloatTensor [B]``.

    Attributes:
        name: short identifier used in logs and results.
        role: ``"reward"`` (may guide training) or ``"judge"`` (evaluation only, never a training signal).
        provenance: how it was built (data digests, configuration, held-out metrics).
    """

    name = "scorer"
    role = "reward"
    provenance: dict

    def score(self, texts: list[str]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        texts = as_texts(texts)
        if not texts:
            return torch.zeros(0)
        out = torch.as_tensor(self.score(texts)).to(torch.float32)
        if out.shape != (len(texts),):
            raise RewardError(f"{self.name} returned shape {tuple(out.shape)} for {len(texts)} texts")
        if not torch.isfinite(out).all():
            raise RewardError(f"{self.name} returned NaN/inf for {int((~torch.isfinite(out)).sum())} texts")
        return out

    def on_tokens(self, tokenizer: "TextTokenizer", *, mask_text: str | None = None) -> "TokenScorer":
        """A callable scoring token ids ``[B, L]`` with this scorer, through ``tokenizer.decode`` (cut at eos)."""
        return TokenScorer(self, tokenizer, mask_text=mask_text)


class TokenScorer:
    """``fn(ids: LongTensor [B, L]) -> FloatTensor [B]``: decode each row, then score the texts."""

    def __init__(self, scorer: TextScorer, tokenizer: "TextTokenizer", *, mask_text: str | None = None):
        self.scorer, self.tokenizer, self.mask_text = scorer, tokenizer, mask_text
        self.name, self.role = scorer.name, scorer.role

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise DataError(f"token scorer expects a LongTensor [B, L], got {getattr(ids, 'shape', type(ids))}")
        texts = self.tokenizer.decode_batch(ids.cpu(), mask_text=self.mask_text)
        return self.scorer(texts).to(ids.device)


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def spearman(x, y) -> float:
    rank = lambda v: np.argsort(np.argsort(np.asarray(v), kind="stable"), kind="stable")  # noqa: E731
    return pearson(rank(x), rank(y))


def evaluate_scorer(scorer: TextScorer | Callable, data: "RatedSentences", *, baseline: float | None = None) -> dict:
    """Agreement of a scorer with human ratings: Pearson r, Spearman ρ, and (for scorers on the rating scale)
    MSE next to the MSE of always predicting ``baseline`` (e.g. the training mean)."""
    t = time.perf_counter()
    pred = scorer(data.texts).numpy()
    seconds = time.perf_counter() - t
    out = {"n": len(data), "pearson": pearson(pred, data.ratings), "spearman": spearman(pred, data.ratings),
           "sentences_per_s": len(data) / max(seconds, 1e-9)}
    if baseline is not None:
        out["mse"] = float(np.mean((pred - data.ratings) ** 2))
        out["baseline_mse"] = float(np.mean((baseline - data.ratings) ** 2))
    return out


# ---------------------------------------------------------------- hashed n-gram features
WEIGHTINGS = ("sqrt_l2", "binary")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]+|[:;]-?[()dp]")


@lru_cache(maxsize=1 << 18)
def _char_hashes(word: str, lengths: tuple[int, ...], mask: int) -> tuple[int, ...]:
    """Hashed character n-grams of ``<word>`` (cached: word frequencies are Zipfian, so most lookups hit)."""
    w = f"<{word}>"
    return tuple(zlib.crc32(f"c{n}:{w[i:i + n]}".encode()) & mask for n in lengths for i in range(len(w) - n + 1))


@dataclass
class NgramConfig:
    """Hashed n-gram features.

    Fields:
        log2_buckets: the feature vector has ``2**log2_buckets`` entries (CRC-32 of each n-gram modulo that).
        word_ngrams: longest word n-gram (1 = unigrams only, 2 = unigrams + bigrams).
        char_ngrams: character n-gram lengths taken inside each ``<word>`` (empty: none).
        weighting: ``sqrt_l2`` — √(counts), L2-normalised per text: a linear model on it predicts a weighted
            *mean*, so adding neutral words drags any text toward the intercept ("dilution"; an RL policy
            exploits it by padding, measured in docs/text.md); ``binary`` — 1 for each n-gram present, not
            normalised: a linear model predicts ``b + Σ w`` over the *distinct* n-grams present, so repeating
            a word changes nothing and a word it has never seen adds exactly 0.
    """

    log2_buckets: int = 20
    word_ngrams: int = 2
    char_ngrams: tuple[int, ...] = (3, 4, 5)
    weighting: str = "sqrt_l2"

    def __post_init__(self):
        self.char_ngrams = tuple(int(n) for n in self.char_ngrams)
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        if not 8 <= self.log2_buckets <= 24:
            raise ConfigError(f"log2_buckets must be in [8, 24], got {self.log2_buckets}")
        if self.word_ngrams < 1 or any(n < 1 for n in self.char_ngrams):
            raise ConfigError("word_ngrams must be >= 1 and char n-gram lengths >= 1")

    @property
    def n_buckets(self) -> int:
        return 1 << self.log2_buckets

    def features(self, text: str) -> list[int]:
        """Bucket ids of one text's n-grams (with repeats)."""
        words = _WORD.findall(clean_text(text).lower())
        mask = self.n_buckets - 1
        ids = []
        for n in range(1, self.word_ngrams + 1):
            ids += [zlib.crc32(f"w{n}:{' '.join(words[i:i + n])}".encode()) & mask for i in range(len(words) - n + 1)]
        if self.char_ngrams:
            for w in words:
                ids += _char_hashes(w, self.char_ngrams, mask)
        return ids

    def matrix(self, texts: list[str]):
        """``scipy.sparse.csr_matrix`` float64 ``[N, n_buckets]``; row i = √(n-gram counts) of text i,
        L2-normalised (``sqrt_l2``), or 1 per distinct n-gram bucket (``binary``); an empty text is an
        all-zero row."""
        import scipy.sparse as sp

        indptr, cols, vals = [0], [], []
        for t in texts:
            ids, counts = np.unique(np.asarray(self.features(t), dtype=np.int64), return_counts=True)
            if self.weighting == "binary":
                v = np.ones(len(ids))
            else:
                v = np.sqrt(counts.astype(np.float64))
                v /= max(float(np.sqrt((v * v).sum())), 1e-12)
            cols.append(ids)
            vals.append(v)
            indptr.append(indptr[-1] + len(ids))
        col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        val = np.concatenate(vals) if vals else np.zeros(0)
        return sp.csr_matrix((val, col, np.asarray(indptr, dtype=np.int64)), shape=(len(texts), self.n_buckets))


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # not ``a @ b``: a multi-threaded BLAS ddot on short vectors can stall for ~50 ms on a busy machine
    return float(np.multiply(a, b).sum())


def ridge_cg(X, y: np.ndarray, lam: float, *, tol: float = 1e-6, max_iter: int = 1000) -> np.ndarray:
    """Solve ``(XᵀX + λI) w = Xᵀy`` by conjugate gradients (Hestenes & Stiefel, 1952) with sparse ``X``.

    ``X``: ``scipy.sparse`` CSR ``[N, D]``, ``y``: ``[N]`` float64 (centred by the caller). Returns ``w [D]``.
    CG runs on the columns that occur in ``X`` only (the solution is exactly 0 elsewhere), which makes its
    vector operations several times cheaper with hashed features. Stops when ``‖residual‖ ≤ tol·‖Xᵀy‖``;
    raises :class:`RewardError` if that takes more than ``max_iter`` iterations.
    """
    if lam <= 0:
        raise DataError(f"ridge strength must be > 0, got {lam}")
    used = np.flatnonzero(X.getnnz(axis=0))
    Xc = X[:, used].tocsr()
    XT = Xc.T.tocsr()
    y = np.asarray(y, dtype=np.float64)
    b = XT @ y
    w = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rs = _dot(r, r)
    target = tol**2 * _dot(b, b)
    for _ in range(max_iter + 1):
        if rs <= target:
            full = np.zeros(X.shape[1])
            full[used] = w
            return full
        Ap = XT @ (Xc @ p) + lam * p
        alpha = rs / _dot(p, Ap)
        w += alpha * p
        r -= alpha * Ap
        rs_new = _dot(r, r)
        p = r + (rs_new / rs) * p
        rs = rs_new
    raise RewardError(f"ridge conjugate gradients did not converge in {max_iter} iterations (λ={lam})")


# ---------------------------------------------------------------- the reward model
RATING_RANGE = (-4.0, 4.0)  # the scale of the human ratings (Hutto & Gilbert 2014)
@dataclass
class RewardConfig:
    """How the n-gram ridge reward is trained.

    Fields:
        features: the hashed n-gram features (:class:`NgramConfig`).
        lambdas: candidate ridge strengths; the one with the best Pearson r on the validation slice wins.
        validation_fraction: share of the training sentences held back to pick the ridge strength (then the
            model is refitted on all of them).
        seed: seed of that validation draw.
    """

    features: NgramConfig = field(default_factory=NgramConfig)
    lambdas: tuple[float, ...] = (0.1, 0.3, 1.0)
    validation_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.features, dict):
            self.features = NgramConfig(**self.features)
        self.lambdas = tuple(float(v) for v in self.lambdas)
        if not self.lambdas or min(self.lambdas) <= 0:
            raise ConfigError(f"lambdas must be positive, got {self.lambdas}")
        if len(self.lambdas) > 1 and not 0 < self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


class NgramRidgeReward(TextScorer):
    """Predicted mean human rating of each text: ``clip(w · φ(text) + b, -4, 4)``.

    The clip keeps predictions on the raters' −4 … +4 scale: a linear model on ``binary`` features would
    otherwise reward stuffing ever more favoured words without bound, far outside anything it was fit on.

    Args:
        weights: float32 ``[2**log2_buckets]``; bias: the intercept; features: the :class:`NgramConfig`.
    """

    role = "reward"

    def __init__(self, weights: torch.Tensor, bias: float, *, features: NgramConfig, name: str = "ngram-ridge",
                 provenance: dict | None = None):
        if weights.shape != (features.n_buckets,):
            raise CheckpointError(f"reward weights have shape {tuple(weights.shape)}, expected ({features.n_buckets},)")
        self.weights = weights.to(torch.float32)
        self._w = self.weights.numpy().astype(np.float64)
        self.bias = float(bias)
        self.features = features
        self.name = name
        self.provenance = dict(provenance or {})

    def score(self, texts: list[str]) -> torch.Tensor:
        raw = self.features.matrix(texts) @ self._w + self.bias
        return torch.from_numpy(np.clip(raw, *RATING_RANGE)).to(torch.float32)

    def save(self, folder: str | Path) -> Path:
        """``reward.safetensors`` (weights, bias) + ``reward.json`` (features, provenance), written atomically."""
        from safetensors.torch import save_file

        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            save_file({"weights": self.weights.contiguous(), "bias": torch.tensor([self.bias], dtype=torch.float64)},
                      str(tmp / "reward.safetensors"))
            write_json(tmp / "reward.json", {"kind": "ngram-ridge", "name": self.name,
                                             "features": asdict(self.features), "provenance": self.provenance})
        return folder


def load_reward(folder: str | Path) -> NgramRidgeReward:
    """Load a reward saved by :meth:`NgramRidgeReward.save`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, weights_path = folder / "reward.json", folder / "reward.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"{folder} has no reward.json + reward.safetensors; train one with fit_reward()")
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(weights_path))
    except Exception as e:  # corrupt JSON or safetensors header
        raise CheckpointError(f"cannot read the reward in {folder} ({type(e).__name__}: {e}); retrain it") from None
    if meta.get("kind") != "ngram-ridge":
        raise CheckpointError(f"{meta_path} is a {meta.get('kind')!r} model, not an ngram-ridge reward")
    return NgramRidgeReward(tensors["weights"], float(tensors["bias"][0]), features=NgramConfig(**meta["features"]),
                            name=meta.get("name", "ngram-ridge"), provenance=meta.get("provenance"))


def fit_reward(data: "RatedSentences", *, config: RewardConfig | None = None, test: "RatedSentences | None" = None,
               name: str = "ngram-ridge") -> NgramRidgeReward:
    """Fit the n-gram ridge reward on ``data`` (normally ``load_ratings("reward")``); if ``test`` is given its
    held-out metrics go into the provenance."""
    config = config or RewardConfig()
    if len(data) < 10:
        raise DataError(f"need at least 10 rated sentences to fit a reward, got {len(data)}")
    t0 = time.perf_counter()
    X = config.features.matrix(data.texts)
    y = data.ratings.astype(np.float64)
    lam, val_r = config.lambdas[0], {}
    if len(config.lambdas) > 1:
        order = np.random.default_rng(config.seed).permutation(len(data))
        n_val = max(2, int(round(config.validation_fraction * len(data))))
        val, fit = np.sort(order[:n_val]), np.sort(order[n_val:])
        mu = y[fit].mean()
        for candidate in config.lambdas:
            w = ridge_cg(X[fit], y[fit] - mu, candidate)
            val_r[candidate] = pearson(X[val] @ w + mu, y[val])
        lam = max(val_r, key=val_r.get)
    mu = float(y.mean())
    w = ridge_cg(X, y - mu, lam)
    provenance = {
        "trained_on": f"human sentiment ratings (Hutto & Gilbert 2014), part {data.part!r}",
        "ratings_sha256": data.sha256, "n_train": len(data), "lambda": lam,
        "validation_pearson": {str(k): v for k, v in val_r.items()}, "config": asdict(config),
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    reward = NgramRidgeReward(torch.from_numpy(w).to(torch.float32), mu, features=config.features, name=name,
                              provenance=provenance)
    if test is not None:
        reward.provenance["metrics"] = {"test_part": test.part, **evaluate_scorer(reward, test, baseline=mu)}
    return reward


def reward_config(kind: str = "ngram") -> RewardConfig:
    """The :class:`RewardConfig` of a named text reward.

    * ``ngram`` (default) — word unigrams + bigrams, ``binary`` presence features, no character n-grams: the
      prediction is the intercept plus one weight per distinct n-gram present, so padding, repeating and
      unknown (e.g. glued) words cannot move it by dilution. Held-out Pearson r ≈ 0.63 on the test part.
    * ``ngram-l2`` — the first version: + character 3-5-grams, √count L2-normalised features (r ≈ 0.67). A
      policy raised it by padding completions with function words and glued out-of-vocabulary tokens, which
      the judges did not reward (docs/text.md, "Reward hacking and the reward's features").
    """
    if kind == "ngram":
        return RewardConfig(features=NgramConfig(char_ngrams=(), weighting="binary"), lambdas=(1.0, 3.0, 10.0))
    if kind == "ngram-l2":
        return RewardConfig()
    raise ConfigError(f"unknown n-gram reward {kind!r}; choose one of {', '.join(REWARD_KINDS)}")


REWARD_KINDS = ("ngram", "ngram-l2")


def default_reward(kind: str = "ngram", *, config: RewardConfig | None = None) -> NgramRidgeReward:
    """A text reward (:func:`reward_config` of ``kind``, or ``config``): fit on the whole ``reward`` part once,
    then loaded from the cache (``$SEPO_CACHE/text/derived/rewards``). Its provenance holds the held-out
    ``test`` metrics."""
    from .ratings import load_ratings

    config = config or reward_config(kind)
    name = "ngram-ridge" if kind == "ngram" else f"{kind}-ridge"
    data = load_ratings("reward")
    folder = assets.derived_dir("rewards") / f"{name}-{data.sha256[:12]}-{config.digest()[:12]}"
    if (folder / "reward.json").is_file():
        return load_reward(folder)
    reward = fit_reward(data, config=config, test=load_ratings("test"), name=name)
    reward.save(folder)
    return reward
