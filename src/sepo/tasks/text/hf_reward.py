"""Hugging Face sequence classifiers as text rewards (the paper-scale path).

The paper (Zekri & Boullé, 2025, §4.1) scores SEDD's completions with a GPT-2-architecture reward model
trained on half of HH-RLHF: an ``AutoModelForSequenceClassification`` with one output (a scalar reward) whose
input is the "Human: … Assistant: …" dialogue (:func:`sepo.tasks.text.finetune.hh_format`).
:class:`HFRewardModel` loads such a model from a **local folder only** (``local_files_only=True``: nothing is
downloaded at run time; no ``trust_remote_code``), and scores batches of texts.

Needs the optional ``transformers`` dependency: ``pip install 'sepo[hf]'`` (or ``pip install transformers``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from sepo.errors import CheckpointError, ConfigError, DataError

from .rewards import TextScorer

__all__ = ["HFRewardModel", "HF_INSTALL"]

HF_INSTALL = "pip install 'sepo[hf]'  (transformers)"


def _transformers():
    try:
        import transformers
    except ModuleNotFoundError:
        raise ConfigError(f"Hugging Face reward models need the `transformers` package; run: {HF_INSTALL}") from None
    return transformers


class HFRewardModel(TextScorer):
    """Scalar reward of each text from a local ``AutoModelForSequenceClassification`` folder.

    Args:
        path: folder written by ``save_pretrained`` (``config.json``, weights, tokenizer files).
        device: where the model runs (``cpu``, ``cuda``).
        batch_size: texts per forward pass (sorted by length to limit padding).
        max_length: texts longer than this many of the model's tokens are truncated (keeping the *end*, where
            the response is, when ``truncation_side='left'``, the default here).
        label: output column to return for a classifier with several labels (e.g. the "positive" class of a
            sentiment model); ``None`` requires a one-output reward model.
        truncation_side: ``left`` (keep the end of the dialogue) or ``right``.
    Returns ``logits[:, label]`` (or the single logit), float32, one per text.
    """

    role = "reward"

    def __init__(self, path: str | Path, *, device: str | torch.device = "cpu", batch_size: int = 32,
                 max_length: int = 512, label: int | None = None, truncation_side: str = "left"):
        tf = _transformers()
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"no Hugging Face model at {str(folder)!r} (no config.json); save one there with "
                                  "save_pretrained(), or download the reward model into that folder first")
        if batch_size < 1 or max_length < 2:
            raise ConfigError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, {max_length}")
        if truncation_side not in ("left", "right"):
            raise ConfigError(f"truncation_side must be 'left' or 'right', got {truncation_side!r}")
        try:
            self.tokenizer = tf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.model = tf.AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise CheckpointError(f"cannot load the Hugging Face reward model in {str(folder)!r} ({first})") from None
        self.model.to(device).eval().requires_grad_(False)
        if self.tokenizer.pad_token is None:  # GPT-2 has none: pad with eos, as GPT-2 reward models do
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:  # GPT-2 classifiers find the last real token by the pad id
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.truncation_side = truncation_side
        n_out = int(self.model.config.num_labels)
        if label is None and n_out != 1:
            raise ConfigError(f"{folder} has {n_out} outputs; pass label=K (reward_label) to pick the reward column")
        if label is not None and not 0 <= label < n_out:
            raise ConfigError(f"label {label} is outside the model's {n_out} outputs")
        self.label = 0 if label is None else int(label)
        self.device = torch.device(device)
        self.batch_size, self.max_length = int(batch_size), int(max_length)
        self.name = f"hf:{folder.name}"
        self.provenance = {"path": str(folder), "architecture": type(self.model).__name__,
                           "num_labels": n_out, "label": self.label}

    @torch.no_grad()
    def score(self, texts: list[str]) -> torch.Tensor:
        out = torch.empty(len(texts))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for lo in range(0, len(texts), self.batch_size):
            idx = order[lo: lo + self.batch_size]
            batch = [texts[i] for i in idx]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            if enc["input_ids"].shape[1] == 0:
                raise DataError("the reward model's tokenizer produced no token for a batch of empty texts")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            logits = self.model(**enc).logits.float()
            out[torch.tensor(idx)] = logits[:, self.label].cpu()
        return out
