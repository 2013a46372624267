"""Load published SEDD and MDLM checkpoints into sepo's :class:`~sepo.models.dit.DiT` (no remote code).

Both papers train the same "DDiT" transformer (see :mod:`sepo.models.dit`), so conversion is a renaming
of tensors plus a translation of the training config:

* **SEDD** (Lou et al., 2024; the layout of the ``louaaron/sedd-*`` releases): ``config.json`` holds the
  Hydra training config (``model.hidden_size / n_blocks / n_heads / cond_dim / length / scale_by_sigma``,
  ``graph.type``, ``noise.type``, ``tokens``) and ``pytorch_model.bin`` a pickled state dict, read with
  ``torch.load(weights_only=True)``. Absorbing graph over the GPT-2 vocabulary: 50257 tokens + ``[MASK]``
  at id 50257. The network outputs log concrete scores -> ``parameterization="score"``, ``process="masked"``,
  time-conditioned on the total noise ``sigma_bar``, with SEDD's ``scale_by_sigma`` output scaling.
* **MDLM** (Sahoo et al., 2024; the Hugging Face ``kuleshov-group/mdlm-owt`` layout): ``config.json`` with
  ``model_type: "mdlm"``, ``vocab_size`` (mask included, mask last), ``hidden_dim``, ``n_blocks``,
  ``n_heads``, ``cond_dim``, ``model_length``, ``time_conditioning``; ``model.safetensors`` with
  ``backbone.*`` tensors. SUBS logits -> ``parameterization="subs"``.

Both use the log-linear schedule with ``eps = 1e-3`` unless the config says otherwise.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from sepo.errors import CheckpointError

from .build import build_model
from .checkpoint import FORMAT, load_model, save_model
from .config import ModelConfig

__all__ = [
    "detect_layout",
    "load_pretrained",
    "load_sedd",
    "load_mdlm",
    "sedd_model_config",
    "mdlm_model_config",
    "ddit_state_to_sepo",
    "convert_checkpoint",
]

GPT2_TOKENS = 50257  # GPT-2 BPE vocabulary; SEDD / MDLM put [MASK] at id 50257

# DDiT tensor names (SEDD / MDLM) -> sepo DiT tensor names
_RENAMES = [
    (r"vocab_embed\.embedding", "embed.weight"),
    (r"sigma_map\.mlp\.(0|2)\.(weight|bias)", r"noise_embed.mlp.\1.\2"),
    (r"blocks\.(\d+)\.norm1\.weight", r"blocks.\1.norm_attn.weight"),
    (r"blocks\.(\d+)\.attn_qkv\.weight", r"blocks.\1.qkv.weight"),
    (r"blocks\.(\d+)\.attn_out\.weight", r"blocks.\1.proj.weight"),
    (r"blocks\.(\d+)\.norm2\.weight", r"blocks.\1.norm_mlp.weight"),
    (r"blocks\.(\d+)\.mlp\.0\.(weight|bias)", r"blocks.\1.fc1.\2"),
    (r"blocks\.(\d+)\.mlp\.2\.(weight|bias)", r"blocks.\1.fc2.\2"),
    (r"blocks\.(\d+)\.adaLN_modulation\.(weight|bias)", r"blocks.\1.modulation.\2"),
    (r"output_layer\.norm_final\.weight", "output.norm.weight"),
    (r"output_layer\.linear\.(weight|bias)", r"output.linear.\1"),
    (r"output_layer\.adaLN_modulation\.(weight|bias)", r"output.modulation.\1"),
]
_ROTARY = "rotary_emb.inv_freq"  # a recomputable buffer; checked, not loaded


# ------------------------------------------------------------------------------------- utilities
def _dir(path: str | os.PathLike) -> Path:
    d = Path(path)
    if not d.exists():
        raise CheckpointError(f"checkpoint directory '{d}' not found; pass a folder holding config.json and the weights")
    if not d.is_dir():
        raise CheckpointError(f"'{d}' is a file; pass the checkpoint folder (config.json + weights), not a single file")
    return d


def _read_config(d: Path) -> dict | None:
    path = d / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"'{path}' is not valid JSON ({msg}); re-download or re-create the checkpoint's config") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"'{path}' must hold a JSON object, got {type(data).__name__}")
    return data


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return list(f.keys())
    except Exception:
        return []


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__


def detect_layout(path: str | os.PathLike) -> str:
    """``"sepo"``, ``"sedd"`` or ``"mdlm"`` for a checkpoint directory; :class:`CheckpointError` otherwise."""
    d = _dir(path)
    cfg = _read_config(d) or {}
    if cfg.get("format") == FORMAT:
        return "sepo"
    if (d / "pytorch_model.bin").is_file() and isinstance(cfg.get("model"), dict) and "graph" in cfg:
        return "sedd"
    if (d / "model.safetensors").is_file() and (
        cfg.get("model_type") == "mdlm" or any(k.startswith("backbone.") for k in _safetensors_keys(d / "model.safetensors"))
    ):
        return "mdlm"
    raise CheckpointError(
        f"'{d}' is not a recognised checkpoint: expected a sepo model (config.json with format 'sepo-model'), "
        "a SEDD checkpoint (config.json with model/graph/noise + pytorch_model.bin) or an MDLM checkpoint "
        "(config.json with model_type 'mdlm' + model.safetensors)"
    )


def _need(cfg: dict, key: str, where: str, kind=int):
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise CheckpointError(f"{where}: field '{key}' must be {'an integer' if kind is int else kind.__name__}, got {value!r}")
    return value


def _vocab_info(vocab_size: int) -> dict:
    vocab: dict[str, Any] = {"size": vocab_size, "mask_id": vocab_size}
    if vocab_size == GPT2_TOKENS:
        vocab["tokenizer"] = "gpt2"
    return vocab


def _schedule_from_noise(noise: dict | None, where: str) -> dict:
    noise = noise or {"type": "loglinear"}
    kind = noise.get("type", "loglinear")
    if kind == "loglinear":
        return {"name": "loglinear", "eps": float(noise.get("eps", 1e-3))}
    if kind == "geometric":
        return {"name": "geometric", "sigma_min": float(noise["sigma_min"]), "sigma_max": float(noise["sigma_max"])}
    raise CheckpointError(f"{where}: noise type {kind!r} is not supported; sepo converts 'loglinear' and 'geometric'")


# --------------------------------------------------------------------------------- config mapping
def sedd_model_config(raw: dict, *, where: str = "SEDD config.json") -> ModelConfig:
    """ModelConfig for SEDD training config ``raw`` (absorbing graph only)."""
    model = raw.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{where}: no 'model' section (hidden_size, n_blocks, n_heads, cond_dim); is this a SEDD checkpoint?")
    if model.get("type", "ddit") != "ddit":
        raise CheckpointError(f"{where}: model type {model.get('type')!r} is not supported; sepo converts SEDD's 'ddit' transformer")
    graph = raw.get("graph") or {}
    if graph.get("type") != "absorb":
        raise CheckpointError(
            f"{where}: graph type {graph.get('type')!r} is not supported; sepo converts absorbing-graph ('absorb') SEDD checkpoints"
        )
    tokens = raw.get("tokens", GPT2_TOKENS)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 2:
        raise CheckpointError(f"{where}: 'tokens' must be the vocabulary size (e.g. 50257), got {tokens!r}")
    try:
        return ModelConfig(
            backbone="dit", process="masked", parameterization="score", vocab_size=tokens,
            length=int(model.get("length", 1024)), hidden=_need(model, "hidden_size", where),
            n_layers=_need(model, "n_blocks", where), n_heads=_need(model, "n_heads", where),
            cond_dim=_need(model, "cond_dim", where), mlp_ratio=4, dropout=float(model.get("dropout", 0.1)),
            time_conditioned=True, scale_by_sigma=bool(model.get("scale_by_sigma", True)),
            schedule=_schedule_from_noise(raw.get("noise"), where),
        )
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None


def mdlm_model_config(raw: dict, *, where: str = "MDLM config.json") -> ModelConfig:
    """ModelConfig for a Hugging Face MDLM config (``vocab_size`` counts the final ``[MASK]`` id)."""
    vocab_with_mask = _need(raw, "vocab_size", where)
    if vocab_with_mask < 3:
        raise CheckpointError(f"{where}: vocab_size {vocab_with_mask} is too small (it includes the mask token)")
    try:
        return ModelConfig(
            backbone="dit", process="masked", parameterization="subs", vocab_size=vocab_with_mask - 1,
            length=int(raw.get("model_length", 1024)), hidden=_need(raw, "hidden_dim", where),
            n_layers=_need(raw, "n_blocks", where), n_heads=_need(raw, "n_heads", where),
            cond_dim=_need(raw, "cond_dim", where), mlp_ratio=4, dropout=float(raw.get("dropout", 0.1)),
            time_conditioned=bool(raw.get("time_conditioning", False)),
            schedule=_schedule_from_noise(raw.get("noise"), where),
        )
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None


# --------------------------------------------------------------------------------- weight mapping
def ddit_state_to_sepo(state: dict[str, torch.Tensor], *, prefix: str = "", where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename a DDiT state dict (SEDD names, after stripping ``prefix``) to sepo DiT names.

    The rotary ``inv_freq`` buffer is dropped after checking it has the base-10000 frequencies sepo
    recomputes. Unknown tensors raise :class:`CheckpointError`.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key[len(prefix):] if prefix and key.startswith(prefix) else key
        if name.startswith("module."):  # saved from DistributedDataParallel
            name = name[len("module."):]
        if name == _ROTARY:
            d = 2 * value.numel()
            expected = 1.0 / (10_000.0 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
            if not torch.allclose(value.float(), expected, rtol=1e-5):
                raise CheckpointError(f"{where}: rotary frequencies differ from base 10000; this DDiT variant is not supported")
            continue
        for pattern, replacement in _RENAMES:
            if re.fullmatch(pattern, name):
                out[re.sub(pattern, replacement, name)] = value
                break
        else:
            raise CheckpointError(f"{where}: unexpected tensor '{key}'; is this a SEDD / MDLM DDiT checkpoint?")
    return out


def _infer_mlp_ratio(state: dict[str, torch.Tensor], hidden: int, where: str) -> int:
    fc1 = state.get("blocks.0.fc1.weight")
    if fc1 is None:
        return 4
    if fc1.shape[0] % hidden:
        raise CheckpointError(f"{where}: MLP width {fc1.shape[0]} is not a multiple of hidden size {hidden}")
    return fc1.shape[0] // hidden


def _load_into(cfg: ModelConfig, state: dict[str, torch.Tensor], where: str, device):
    from dataclasses import replace

    cfg = replace(cfg, mlp_ratio=_infer_mlp_ratio(state, cfg.hidden, where))
    model = build_model(cfg)
    expected = model.net.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"{where}: tensor for '{missing[0]}' is missing ({len(missing)} missing); the checkpoint is incomplete or of another architecture")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{where}: tensor '{key}' has shape {tuple(state[key].shape)} but config.json implies {tuple(value.shape)}; "
                "config.json and the weights do not belong together"
            )
    model.net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    model.to(device)
    model.eval()
    return model


# ---------------------------------------------------------------------------------------- loaders
def load_sedd(path: str | os.PathLike, *, device: str | torch.device = "cpu"):
    """Load a SEDD checkpoint directory -> ``(model, info)`` (see module docstring)."""
    d = _dir(path)
    raw = _read_config(d)
    if raw is None:
        raise CheckpointError(f"'{d}' has no config.json; a SEDD checkpoint needs its training config next to pytorch_model.bin")
    cfg = sedd_model_config(raw, where=f"'{d / 'config.json'}'")
    weights = d / "pytorch_model.bin"
    if not weights.is_file():
        raise CheckpointError(f"'{d}' has no pytorch_model.bin; download the SEDD weights into this folder")
    try:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) pickles cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"'{weights}' is not a readable PyTorch state dict ({_first_line(e)}); re-download it") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # a training snapshot {"model", "ema", "step"}
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"'{weights}' does not hold a state dict of tensors; re-download the SEDD weights")
    where = f"'{weights}'"
    model = _load_into(cfg, ddit_state_to_sepo(state, where=where), where, device)
    info = {"layout": "sedd", "path": str(d), "model": model.config, "vocab": _vocab_info(cfg.vocab_size),
            "source_config": raw, "used_ema": False}
    return model, info


def load_mdlm(path: str | os.PathLike, *, device: str | torch.device = "cpu"):
    """Load an MDLM (Hugging Face layout) checkpoint directory -> ``(model, info)``."""
    from safetensors.torch import load_file

    d = _dir(path)
    raw = _read_config(d)
    if raw is None:
        raise CheckpointError(f"'{d}' has no config.json; an MDLM checkpoint needs its config.json next to model.safetensors")
    cfg = mdlm_model_config(raw, where=f"'{d / 'config.json'}'")
    weights = d / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"'{d}' has no model.safetensors; download the MDLM weights into this folder")
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as e:
        raise CheckpointError(f"'{weights}' is not a readable safetensors file ({_first_line(e)}); re-download it") from None
    where = f"'{weights}'"
    if not any(k.startswith("backbone.") for k in state):
        raise CheckpointError(f"{where} has no 'backbone.*' tensors; is this an MDLM DIT checkpoint?")
    model = _load_into(cfg, ddit_state_to_sepo(state, prefix="backbone.", where=where), where, device)
    info = {"layout": "mdlm", "path": str(d), "model": model.config, "vocab": _vocab_info(cfg.vocab_size),
            "source_config": raw, "used_ema": False}
    return model, info


def load_pretrained(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    use_ema: bool = True,
    expect_vocab: dict | None = None,
):
    """Load any supported checkpoint directory (sepo / SEDD / MDLM, see :func:`detect_layout`).

    Returns ``(model, info)`` with ``info["layout"]`` naming the layout. ``expect_vocab`` entries must
    match the checkpoint's vocabulary description (e.g. ``{"tokenizer": "gpt2"}``).
    """
    layout = detect_layout(path)
    if layout == "sepo":
        model, info = load_model(path, device=device, use_ema=use_ema, expect_vocab=expect_vocab)
        info["layout"] = "sepo"
        return model, info
    model, info = (load_sedd if layout == "sedd" else load_mdlm)(path, device=device)
    for key, want in (expect_vocab or {}).items():
        if info["vocab"].get(key) != want:
            raise CheckpointError(
                f"'{path}' ({layout}) has vocabulary {key}={info['vocab'].get(key)!r} but {want!r} is needed; use a matching checkpoint"
            )
    return model, info


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, device: str | torch.device = "cpu") -> Path:
    """Convert a SEDD / MDLM (or sepo) checkpoint directory into a sepo model directory at ``dst``."""
    model, info = load_pretrained(src, device=device)
    provenance = {"converted_from": str(src), "layout": info["layout"]}
    return save_model(dst, model, vocab=info.get("vocab"), provenance=provenance)
