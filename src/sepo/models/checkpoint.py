"""Model directories: safetensors weights + JSON config, written crash-safely, loaded with validation.

Layout of a model directory::

    config.json          {"format": "sepo-model", "format_version": 1, "sepo_version": ..., "save_id": ...,
                          "model": ModelConfig fields, "vocab": {...}, "provenance": {...},
                          "ema": bool, "files": [extra file names]}
    model.safetensors    network weights (``model.net.state_dict()``)
    ema.safetensors      EMA weights, same keys (optional)
    <extra files>        e.g. ``tokenizer.json`` (optional)

Crash safety: every file is first written under a temporary name; the old weights are hard-linked to
backup names; the new files are renamed into place, ``config.json`` last (the commit point); then the
backups are removed. Each weights file carries the ``save_id`` of its save in its safetensors metadata,
so a reader that finds weights and config from different saves (a crash between two renames) falls back
to the backup matching ``config.json`` - the previous checkpoint - or reports the mismatch.

Every problem found while loading raises :class:`~sepo.errors.CheckpointError` with one line that says
what is wrong and what to do.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping

import torch

import sepo
from sepo.errors import CheckpointError, ConfigError

from .build import build_model
from .config import ModelConfig
from .ema import EMA

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "save_model",
    "load_model",
    "read_model_info",
    "is_sepo_model_dir",
]

FORMAT = "sepo-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
_RESERVED = {CONFIG_FILE, WEIGHTS_FILE, EMA_FILE}


# ------------------------------------------------------------------------------------------ saving
def _net_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.net.state_dict().items()}


def _ema_weights(model, ema_state) -> dict[str, torch.Tensor]:
    """Net-level EMA weights from an :class:`EMA` (built on ``model`` or ``model.net``) or a state dict
    (an EMA state dict, or weights keyed like ``model.net`` or ``model``)."""
    live = model.net.state_dict()
    if isinstance(ema_state, EMA):
        target = model.net if set(ema_state.shadow) <= set(live) else model
        state = ema_state.averaged_state_dict(target)
    elif isinstance(ema_state, Mapping):
        shadow = ema_state.get("shadow")
        state = dict(shadow) if isinstance(shadow, Mapping) else dict(ema_state)
    else:
        raise TypeError(f"ema_state must be an EMA or a state dict, got {type(ema_state).__name__}")
    if state and all(k.startswith("net.") for k in state):  # keyed like the DiffusionModel
        state = {k[len("net."):]: v for k, v in state.items()}
    state = {**{k: v for k, v in live.items() if k not in state}, **state}  # buffers from the live net
    if set(state) != set(live):
        diff = sorted(set(state) ^ set(live))[:3]
        raise ValueError(f"EMA weights do not match the model's parameters (they differ at {diff})")
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _check_vocab(vocab: dict | None, cfg: ModelConfig) -> None:
    if vocab is None:
        return
    if not isinstance(vocab, dict):
        raise ValueError(f"vocab must be a JSON-serialisable mapping, got {type(vocab).__name__}")
    alphabet = vocab.get("alphabet")
    if alphabet is not None and len(alphabet) != cfg.vocab_size:
        raise ValueError(f"vocab alphabet {alphabet!r} has {len(alphabet)} symbols but the model has vocab_size {cfg.vocab_size}")
    size = vocab.get("size")
    if size is not None and int(size) != cfg.vocab_size:
        raise ValueError(f"vocab size {size} differs from the model's vocab_size {cfg.vocab_size}")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def save_model(
    directory: str | os.PathLike,
    model,
    *,
    vocab: dict | None = None,
    ema_state: EMA | Mapping | None = None,
    provenance: dict | None = None,
    extra_files: Mapping[str, str | os.PathLike | bytes] | None = None,
) -> Path:
    """Write ``model`` (a :class:`~sepo.diffusion.DiffusionModel` with ``model.config``) to ``directory``.

    Args:
        directory: created if needed; other files in it (logs, training state) are left alone.
        model: built by :func:`sepo.models.build_model` (or loaded); its ``config`` is stored.
        vocab: how token ids map to symbols, e.g. ``{"alphabet": "ACGT"}`` or a tokenizer description
            (``{"tokenizer": "gpt2"}``); checked against ``vocab_size`` when it names an alphabet/size.
        ema_state: an :class:`EMA` (built on ``model`` or ``model.net``) or a state dict of EMA weights;
            written to ``ema.safetensors``. Without it a stale ``ema.safetensors`` is removed.
        provenance: free-form JSON (command, data, steps, seed, ...).
        extra_files: ``{name: source path or bytes}`` copied into the directory (e.g. ``tokenizer.json``).

    Returns the directory path. Crash-safe: see the module docstring.
    """
    from safetensors.torch import save_file

    cfg = getattr(model, "config", None)
    if not isinstance(cfg, ModelConfig):
        raise ValueError("save_model needs a model built by sepo.models.build_model (it reads model.config)")
    _check_vocab(vocab, cfg)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    extra_files = dict(extra_files or {})
    for name in extra_files:
        if name in _RESERVED or Path(name).name != name or name.startswith("."):
            raise ValueError(f"extra file name {name!r} is reserved or not a plain file name")

    save_id = uuid.uuid4().hex
    meta = {"format": FORMAT, "save_id": save_id}
    outputs: dict[str, Any] = {WEIGHTS_FILE: _net_state(model)}
    if ema_state is not None:
        outputs[EMA_FILE] = _ema_weights(model, ema_state)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sepo_version": sepo.__version__,
        "save_id": save_id,
        "model": cfg.to_dict(),
        "vocab": vocab,
        "provenance": provenance or {},
        "ema": ema_state is not None,
        "files": sorted(extra_files),
    }
    config_text = json.dumps(config, indent=2, default=str) + "\n"  # fail on bad JSON before writing

    old = _read_json(directory / CONFIG_FILE)
    if isinstance(old, dict) and old.get("format") != FORMAT:
        raise CheckpointError(
            f"'{directory / CONFIG_FILE}' exists and is not a sepo model config; save the model to another folder "
            "(or remove that file)"
        )
    old_id = old.get("save_id") if isinstance(old, dict) and isinstance(old.get("save_id"), str) else None
    temps: dict[str, Path] = {}
    backups: list[Path] = []
    try:
        # 1. everything under temporary names (a crash here leaves the old checkpoint untouched)
        for name, tensors in outputs.items():
            temps[name] = directory / f".{name}.{save_id}.tmp"
            save_file(tensors, str(temps[name]), metadata=meta)
        for name, source in extra_files.items():
            temps[name] = directory / f".{name}.{save_id}.tmp"
            if isinstance(source, (bytes, bytearray)):
                temps[name].write_bytes(bytes(source))
            else:
                shutil.copyfile(source, temps[name])
        temps[CONFIG_FILE] = directory / f".{CONFIG_FILE}.{save_id}.tmp"
        temps[CONFIG_FILE].write_text(config_text)
        # 2. keep the old weights reachable under their save id until the new config is committed
        if old_id is not None:
            for name in (WEIGHTS_FILE, EMA_FILE):
                if (directory / name).exists():
                    backup = directory / f".{name}.{old_id}.bak"
                    _link_or_copy(directory / name, backup)
                    backups.append(backup)
        # 3. rename into place, config.json last
        for name in [n for n in temps if n != CONFIG_FILE] + [CONFIG_FILE]:
            os.replace(temps[name], directory / name)
            del temps[name]
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    # 4. committed: drop the backups and a stale EMA file
    for backup in backups:
        backup.unlink(missing_ok=True)
    if ema_state is None:
        (directory / EMA_FILE).unlink(missing_ok=True)
    return directory


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # file systems without hard links
        shutil.copy2(src, dst)


# ----------------------------------------------------------------------------------------- loading
def is_sepo_model_dir(directory: str | os.PathLike) -> bool:
    """True if ``directory/config.json`` declares the sepo model format."""
    meta = _read_json(Path(directory) / CONFIG_FILE)
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def read_model_info(directory: str | os.PathLike) -> dict:
    """Read and validate ``config.json`` of a model directory (no weights). Returns the JSON with
    ``"model"`` turned into a :class:`ModelConfig`. Raises :class:`CheckpointError`."""
    d = Path(directory)
    if not d.exists():
        raise CheckpointError(
            f"model directory '{d}' not found; pass a folder written by `sepo pretrain` or save_model "
            "(it holds config.json and model.safetensors)"
        )
    if not d.is_dir():
        raise CheckpointError(f"'{d}' is a file, not a model directory; pass the folder that holds config.json and model.safetensors")
    path = d / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"'{d}' has no config.json, so it is not a sepo model directory; pass the --out folder of "
            "`sepo pretrain` (SEDD / MDLM checkpoints load with sepo.models.load_pretrained)"
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"'{path}' is not valid JSON ({e.msg} at line {e.lineno}); the checkpoint is corrupt: re-save or re-train it") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read '{path}' ({_first_line(e)}); check the file's permissions or re-save the model") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            f"'{d}' is not a sepo model (config.json format is {found!r}, expected {FORMAT!r}); "
            "SEDD / MDLM checkpoints load with sepo.models.load_pretrained"
        )
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"'{path}' has an invalid format_version {version!r}; the checkpoint is corrupt: re-save it")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"'{d}' was written by a newer sepo (format version {version}; this sepo {sepo.__version__} reads "
            f"up to {FORMAT_VERSION}); upgrade sepo to load it"
        )
    if not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"'{path}' has no 'model' section; the checkpoint is corrupt: re-save or re-train it")
    try:
        meta["model"] = ModelConfig.from_dict(meta["model"], where="model")
    except ConfigError as e:
        raise CheckpointError(f"'{path}' holds an invalid model config ({e}); fix the field or re-save the model") from None
    if meta.get("vocab") is not None and not isinstance(meta["vocab"], dict):
        raise CheckpointError(f"'{path}': 'vocab' must be a mapping, got {meta['vocab']!r}; re-save the model")
    return meta


def _read_weights(path: Path, d: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(
            f"'{d}' has config.json but no {path.name}; the save was interrupted or files were moved: re-save or re-train the model"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated / garbled files
        raise CheckpointError(f"'{path}' is not a readable safetensors file ({_first_line(e)}); the checkpoint is corrupt: re-save or re-train it") from None
    return tensors, metadata


def _weights_for_save(d: Path, name: str, save_id: str | None) -> tuple[dict[str, torch.Tensor], bool]:
    """Weights of file ``name`` written by save ``save_id``; falls back to the backup a save in progress
    keeps (returns ``recovered=True``)."""
    tensors, metadata = _read_weights(d / name, d)
    if save_id is None or metadata.get("save_id") in (None, save_id):
        return tensors, False
    backup = d / f".{name}.{save_id}.bak"
    if backup.is_file():
        tensors, metadata = _read_weights(backup, d)
        if metadata.get("save_id") == save_id:
            return tensors, True
    raise CheckpointError(
        f"'{d / name}' and config.json come from different saves (an interrupted save?); re-save the model or restore both files together"
    )


def _check_expected_vocab(meta: dict, expect_vocab: dict | None, d: Path) -> None:
    if expect_vocab is None:
        return
    stored = meta.get("vocab")
    if stored is None:
        raise CheckpointError(
            f"'{d}' records no vocabulary but {expect_vocab!r} is expected; load a model saved with its vocabulary (save_model(vocab=...))"
        )
    for key, want in expect_vocab.items():
        if stored.get(key) != want:
            raise CheckpointError(
                f"'{d}' was trained with vocabulary {key}={stored.get(key)!r} but {want!r} is needed; use a model trained for this task"
            )


def load_model(
    directory: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    use_ema: bool = True,
    expect_vocab: dict | None = None,
):
    """Load a model directory written by :func:`save_model`.

    Args:
        directory: the model folder.
        device: where to put the model.
        use_ema: load ``ema.safetensors`` when the checkpoint has one (else the raw weights).
        expect_vocab: keys the stored ``vocab`` must match, e.g. ``{"alphabet": "ACGT"}``.

    Returns ``(model, info)``: the :class:`~sepo.diffusion.DiffusionModel` in eval mode with
    ``model.config`` set, and ``info`` = config.json's content (``"model"`` as a :class:`ModelConfig`)
    plus ``path``, ``used_ema``, ``weights_file``, ``recovered`` (weights read from a backup left by
    an interrupted save) and ``extra_files`` (``{name: path}``).
    Raises :class:`~sepo.errors.CheckpointError` with a one-line explanation for any problem.
    """
    d = Path(directory)
    meta = read_model_info(d)
    _check_expected_vocab(meta, expect_vocab, d)
    cfg: ModelConfig = meta["model"]
    save_id = meta.get("save_id") if isinstance(meta.get("save_id"), str) else None
    name = EMA_FILE if use_ema and meta.get("ema") and (d / EMA_FILE).exists() else WEIGHTS_FILE
    tensors, recovered = _weights_for_save(d, name, save_id)

    model = build_model(cfg)
    expected = model.net.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        what = f"lacks tensor '{missing[0]}'" if missing else f"has an unknown tensor '{unexpected[0]}'"
        raise CheckpointError(
            f"'{d / name}' does not match its config.json ({what}; {len(missing)} missing, {len(unexpected)} unknown); "
            "the weights and config come from different models: re-save the model"
        )
    for key, value in expected.items():
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"'{d / name}' does not match its config.json: tensor '{key}' has shape {tuple(tensors[key].shape)}, "
                f"the config expects {tuple(value.shape)}; the weights and config come from different models: re-save the model"
            )
    model.net.load_state_dict(tensors)
    model.to(device)
    model.eval()
    info = dict(meta)
    info.update(
        path=str(d),
        used_ema=name == EMA_FILE,
        weights_file=str(d / name),
        recovered=recovered,
        extra_files={f: str(d / f) for f in meta.get("files") or [] if (d / f).is_file()},
    )
    return model, info
