"""Task registry for pretraining, sampling and evaluation: a task name -> its data and defaults.

A :class:`TaskSpec` tells the generic trainer and the ``sepo`` commands everything task-specific: the
token vocabulary and sequence length, how to load a data split as tokens, the pretraining presets, how
to write and read sample files, and which sample-quality metrics to report.

Tasks are found lazily: :data:`TASK_LOCATIONS` maps a name to ``"module:attribute"``; the module is
imported only when the task is used, so a task whose module does not exist yet (``text``) gives a
clear "not available yet" error instead of breaking the others. Another part of sepo plugs in a task by
creating that module (exposing a ``TaskSpec``) or by calling :func:`register_task`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from sepo.errors import ConfigError, DataError

__all__ = ["TaskSpec", "TASK_LOCATIONS", "SPLIT_ROLES", "register_task", "get_task", "task_names", "DNA_TASK"]

#: Split roles every task provides: ``train`` (fit the model), ``validation`` (monitor), ``test`` (report).
SPLIT_ROLES = ("train", "validation", "test")


@dataclass
class TaskSpec:
    """Everything task-specific that pretraining, sampling and evaluation need.

    Attributes:
        name: task name used on the command line (``--task``).
        description: one line shown in help texts.
        vocab: how token ids map to symbols, stored in every checkpoint and required when a model is
            loaded for this task (DNA: ``{"alphabet": "ACGT"}``; text: a tokenizer description).
        vocab_size: number of clean tokens ``V``.
        length: sequence length in tokens.
        unit: what one token is, for reports (``"base"`` -> ``bits_per_base``).
        load_split: ``role -> LongTensor [N, length]`` for a role in :data:`SPLIT_ROLES`.
        presets: pretraining presets, ``name -> dict of PretrainConfig fields`` (``tiny``, ``full``, ...).
        write_samples: ``(path, tokens [N, length]) -> None``, writes a sample file atomically.
        read_samples: ``path -> LongTensor [N, length]``, validates the file (``DataError`` on bad input).
        sample_metrics: ``(samples [N, L], reference [M, L]) -> dict`` of quality metrics (may be empty).
        encode_prefix: ``text -> LongTensor [P]``, a user-given prompt as tokens (``DataError`` if invalid).
        sample_suffix: file extension of sample files (``.fasta``).
    """

    name: str
    description: str
    vocab: dict
    vocab_size: int
    length: int
    unit: str
    load_split: Callable[[str], torch.Tensor]
    presets: dict[str, dict]
    write_samples: Callable[[str | Path, torch.Tensor], None]
    read_samples: Callable[[str | Path], torch.Tensor]
    encode_prefix: Callable[[str], torch.Tensor]
    sample_metrics: Callable[[torch.Tensor, torch.Tensor], dict] = lambda samples, reference: {}
    sample_suffix: str = ".txt"
    extra: dict = field(default_factory=dict)

    def preset(self, name: str) -> dict:
        if name not in self.presets:
            raise ConfigError(f"unknown preset {name!r} for task {self.name!r}; choose one of {', '.join(self.presets)}")
        return dict(self.presets[name])


# --------------------------------------------------------------------------------------------
# DNA: the DHS table of sepo.tasks.dna.data
# --------------------------------------------------------------------------------------------
_DNA_ROLE_TO_SPLIT = {"train": "training", "validation": "validation", "test": "test"}


def _dna_load_split(role: str) -> torch.Tensor:
    from sepo.tasks.dna.data import dhs_split

    if role not in _DNA_ROLE_TO_SPLIT:
        raise DataError(f"unknown split {role!r}; choose one of {', '.join(SPLIT_ROLES)}")
    return dhs_split(_DNA_ROLE_TO_SPLIT[role]).tokens()


def _dna_write(path, tokens: torch.Tensor) -> None:
    from sepo.tasks.dna.data import decode, write_fasta

    write_fasta(path, decode(tokens), names=[f"sample{i}" for i in range(tokens.shape[0])])


def _dna_read(path) -> torch.Tensor:
    from sepo.tasks.dna.data import SEQ_LEN, encode, read_sequences

    _, seqs = read_sequences(path, length=SEQ_LEN)
    return encode(seqs)


def _dna_prefix(text: str) -> torch.Tensor:
    from sepo.tasks.dna.data import encode, validate_sequences

    text = text.strip().upper()
    validate_sequences([text], length=None, source="--prefix")
    return encode([text])[0]


def _dna_metrics(samples: torch.Tensor, reference: torch.Tensor) -> dict:
    from sepo.tasks.dna.kmers import kmer_correlation

    return {"kmer3_pearson": kmer_correlation(samples, reference, k=3)}


#: Pretraining presets for DNA. ``tiny`` is sized to finish in a few minutes on 2 CPU cores and still
#: beat 2 bits/base with samples whose 3-mer counts track real DNA; ``full`` is the paper-scale CNN
#: (hidden 128, 4 x 5 dilated convolutions; for a GPU).
DNA_PRESETS: dict[str, dict] = {
    # the dna-tiny CNN narrowed to width 48 and one stack of 5 dilated convolutions (~0.1 M parameters,
    # receptive field 689 bp); 300 steps of 64 sequences reach ~1.90 bits/base on validation
    "tiny": {
        "model": "dna-tiny",
        "model_overrides": {"hidden": 48, "n_stacks": 1},
        "steps": 300,
        "batch_size": 64,
        "lr": 3e-3,
        "warmup_steps": 30,
        "weight_decay": 0.0,
        "grad_clip": 1.0,
        "ema_decay": 0.99,
        "eval_every": 100,
        "val_size": 512,
        "val_draws": 2,
        "log_every": 25,
        "checkpoint_every": 100,
    },
    "full": {
        "model": "dna-full",
        "model_overrides": {},
        "steps": 100_000,
        "batch_size": 256,
        "lr": 3e-4,
        "warmup_steps": 2_500,
        "weight_decay": 0.0,
        "grad_clip": 1.0,
        "ema_decay": 0.9999,
        "eval_every": 5_000,
        "val_size": 0,
        "val_draws": 4,
        "log_every": 100,
        "checkpoint_every": 5_000,
    },
}

DNA_TASK = TaskSpec(
    name="dna",
    description="200-bp DNase-I hypersensitive sites (ENCODE, 4 cell lines); test split chr1, validation chr2",
    vocab={"alphabet": "ACGT"},
    vocab_size=4,
    length=200,
    unit="base",
    load_split=_dna_load_split,
    presets=DNA_PRESETS,
    write_samples=_dna_write,
    read_samples=_dna_read,
    encode_prefix=_dna_prefix,
    sample_metrics=_dna_metrics,
    sample_suffix=".fasta",
)

# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
#: Where each known task lives. ``text`` is provided by ``sepo.tasks.text.pretrain`` once it exists.
TASK_LOCATIONS: dict[str, str] = {
    "dna": "sepo.train.tasks:DNA_TASK",
    "text": "sepo.tasks.text.pretrain:TASK",
}
_REGISTERED: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> None:
    """Make ``spec`` available under ``spec.name`` (overrides :data:`TASK_LOCATIONS`)."""
    _REGISTERED[spec.name] = spec


def task_names() -> list[str]:
    return sorted(set(TASK_LOCATIONS) | set(_REGISTERED))


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` called ``name``; a one-line :class:`ConfigError` if unknown or not installed."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in TASK_LOCATIONS:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(task_names())}")
    module_name, _, attr = TASK_LOCATIONS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ConfigError(f"task {name!r} is not available yet in this version of sepo; use one of: "
                              f"{', '.join(n for n in task_names() if n != name)}") from None
        raise
    spec = getattr(module, attr, None)
    if not isinstance(spec, TaskSpec):
        raise ConfigError(f"task {name!r} is not available yet ({module_name} defines no TaskSpec {attr!r})")
    return spec


def task_for_model(info: dict, *, name: str | None = None) -> TaskSpec:
    """The task a loaded model belongs to: ``name`` if given (checked against the model's vocabulary),
    else the ``task`` recorded in its checkpoint ``info`` (:func:`sepo.models.load_model`), else the
    task whose vocabulary matches."""
    if name is not None:
        spec = get_task(name)
        vocab = info.get("vocab")
        if vocab is not None and vocab != spec.vocab:
            raise ConfigError(f"the model in {info.get('path', '?')!r} has vocabulary {vocab!r}, task {name!r} needs "
                              f"{spec.vocab!r}; use a model trained for {name!r}")
        return spec
    name = (info.get("provenance") or {}).get("task")
    if isinstance(name, str):
        return get_task(name)
    vocab = info.get("vocab")
    for candidate in task_names():
        try:
            spec = get_task(candidate)
        except ConfigError:
            continue
        if vocab and vocab == spec.vocab:
            return spec
    raise ConfigError(f"cannot tell which task the model in {info.get('path', '?')!r} is for (no task in its provenance, "
                      f"vocabulary {vocab!r} matches none of {', '.join(task_names())}); pass --task")
