"""``ModelConfig``: everything needed to rebuild a network and its diffusion process, plus named presets.

A config is plain data (JSON / YAML friendly); :func:`sepo.models.build_model` turns it into a
:class:`~sepo.diffusion.DiffusionModel`. Checkpoints store it verbatim in ``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from sepo.errors import ConfigError

__all__ = ["ModelConfig", "MODEL_PRESETS", "preset_config", "output_dim"]

BACKBONES = ("dna_cnn", "dit")
PROCESSES = ("masked", "uniform")
PARAMETERIZATIONS = ("subs", "denoiser", "score")


@dataclass
class ModelConfig:
    """Architecture + diffusion process of a model.

    Fields (backbone-specific ones are ignored by the other backbone but kept in the checkpoint):

    * ``backbone``: ``"dna_cnn"`` (dilated 1-D CNN, :mod:`sepo.models.dna_cnn`) or ``"dit"`` (diffusion
      transformer, :mod:`sepo.models.dit`).
    * ``process``: forward process, ``"masked"`` (absorbing, adds a ``[MASK]`` state with id
      ``vocab_size``) or ``"uniform"``.
    * ``parameterization``: how the network output is read: ``"subs"`` (MDLM SUBS denoiser, masked only),
      ``"denoiser"`` (clean-token posterior logits, uniform only) or ``"score"`` (SEDD log concrete score,
      either process).
    * ``vocab_size``: number of clean tokens ``V`` (4 for DNA; a tokenizer's size for text).
    * ``length``: maximum sequence length ``L`` the model accepts.
    * ``schedule``: noise schedule as a mapping ``{"name": ..., **kwargs}``, e.g.
      ``{"name": "loglinear", "eps": 1e-3}``; see :func:`sepo.diffusion.make_schedule`.
    * ``time_conditioned``: feed the total noise ``sigma_bar(t)`` to the network. Masked SUBS models do
      not need it (Zheng et al., 2024; Sahoo et al., 2024), and without it the cached ancestral sampler
      applies; uniform models should keep it on.
    * ``hidden``: width of the residual stream (CNN channels / transformer model dimension).
    * ``dropout``: dropout probability on each residual branch during training.
    * ``cond_dim``: width of the time embedding (sinusoidal features of ``sigma_bar`` -> MLP).
    * ``scale_by_sigma``: SEDD's output scaling for absorbing score models, subtracts
      ``log(exp(sigma_bar) - 1) + log(V)`` from the output so that a zero network gives the score of a
      uniform denoiser (Lou et al., 2024). Only with ``process="masked"`` and ``parameterization="score"``.
    * ``n_stacks`` (CNN): number of repeats of the dilation pattern.
    * ``dilations`` (CNN): dilation of each convolution inside one stack.
    * ``kernel_size`` (CNN): width of each convolution (odd).
    * ``n_layers`` (DiT): number of transformer blocks.
    * ``n_heads`` (DiT): attention heads; ``hidden / n_heads`` must be even (rotary embeddings).
    * ``mlp_ratio`` (DiT): MLP hidden width as a multiple of ``hidden``.
    """

    backbone: Literal["dna_cnn", "dit"] = "dna_cnn"
    process: Literal["masked", "uniform"] = "masked"
    parameterization: Literal["subs", "denoiser", "score"] = "subs"
    vocab_size: int = 4
    length: int = 200
    schedule: dict[str, Any] = field(default_factory=lambda: {"name": "loglinear", "eps": 1e-3})
    time_conditioned: bool = False
    hidden: int = 128
    dropout: float = 0.0
    cond_dim: int = 128
    scale_by_sigma: bool = False
    n_stacks: int = 4
    dilations: list[int] = field(default_factory=lambda: [1, 1, 4, 16, 64])
    kernel_size: int = 9
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: int = 4

    def __post_init__(self):
        def need(cond: bool, msg: str):
            if not cond:
                raise ValueError(msg)

        need(self.backbone in BACKBONES, f"backbone {self.backbone!r} is unknown; choose one of {BACKBONES}")
        need(self.process in PROCESSES, f"process {self.process!r} is unknown; choose one of {PROCESSES}")
        need(
            self.parameterization in PARAMETERIZATIONS,
            f"parameterization {self.parameterization!r} is unknown; choose one of {PARAMETERIZATIONS}",
        )
        need(
            not (self.parameterization == "subs" and self.process != "masked"),
            "parameterization 'subs' needs process 'masked'; use 'denoiser' or 'score' for the uniform process",
        )
        need(
            not (self.parameterization == "denoiser" and self.process != "uniform"),
            "parameterization 'denoiser' is for the uniform process; use 'subs' (or 'score') with 'masked'",
        )
        need(
            not (self.scale_by_sigma and (self.process, self.parameterization) != ("masked", "score")),
            "scale_by_sigma is SEDD's absorbing-score scaling; it needs process 'masked' and parameterization 'score'",
        )
        for name in ("vocab_size", "length", "hidden", "cond_dim", "n_stacks", "kernel_size", "n_layers", "n_heads", "mlp_ratio"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer, got {value!r}")
        need(self.vocab_size >= 2, f"vocab_size must be at least 2 clean tokens, got {self.vocab_size}")
        need(self.length >= 1, f"length must be a positive sequence length, got {self.length}")
        for name in ("hidden", "cond_dim", "n_stacks", "n_layers", "n_heads", "mlp_ratio"):
            need(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        need(
            self.kernel_size >= 1 and self.kernel_size % 2 == 1,
            f"kernel_size must be a positive odd number (keeps the length), got {self.kernel_size}",
        )
        need(
            isinstance(self.dilations, (list, tuple)) and len(self.dilations) > 0
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in self.dilations),
            f"dilations must be a non-empty list of positive integers, got {self.dilations!r}",
        )
        self.dilations = [int(d) for d in self.dilations]
        if self.backbone == "dit":
            need(
                self.hidden % self.n_heads == 0,
                f"hidden ({self.hidden}) must be divisible by n_heads ({self.n_heads})",
            )
            need(
                (self.hidden // self.n_heads) % 2 == 0,
                f"the head width hidden/n_heads = {self.hidden // self.n_heads} must be even for rotary embeddings",
            )
        need(
            isinstance(self.schedule, dict) and isinstance(self.schedule.get("name"), str),
            f"schedule must be a mapping with a 'name' (e.g. {{'name': 'loglinear', 'eps': 0.001}}), got {self.schedule!r}",
        )
        self.schedule = dict(self.schedule)
        from sepo.diffusion.schedules import make_schedule

        kwargs = {k: v for k, v in self.schedule.items() if k != "name"}
        try:
            make_schedule(self.schedule["name"], **kwargs)
        except TypeError as e:
            raise ValueError(f"schedule {self.schedule!r} has an unknown option ({e})") from None

    # --- derived quantities ---------------------------------------------------------------------
    @property
    def num_states(self) -> int:
        """States per position: ``V + 1`` for the masked process, ``V`` for the uniform one."""
        return self.vocab_size + (1 if self.process == "masked" else 0)

    @property
    def output_dim(self) -> int:
        """Network output width ``K`` (see :func:`output_dim`)."""
        return output_dim(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "model") -> "ModelConfig":
        """Validated construction from a mapping; raises :class:`~sepo.errors.ConfigError`."""
        from sepo.utils.config import from_dict

        return from_dict(cls, data, where=where)


def output_dim(cfg: ModelConfig) -> int:
    """``K``: ``V + 1`` for masked SUBS (the mask logit is ignored downstream), ``V`` for the uniform
    denoiser, ``num_states`` for score models."""
    if cfg.parameterization == "denoiser":
        return cfg.vocab_size
    return cfg.num_states


# Presets are ModelConfig keyword arguments. Parameter counts are asserted in tests/test_models.py.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # Small DNA CNN for 2-CPU-core runs (hidden 64, 2 stacks); 375,493 parameters; receptive field 1377 bp.
    "dna-tiny": dict(
        backbone="dna_cnn", process="masked", parameterization="subs", vocab_size=4, length=200,
        hidden=64, n_stacks=2, dilations=[1, 1, 4, 16, 64], kernel_size=9, cond_dim=64, dropout=0.0,
        time_conditioned=False,
    ),
    # The DNA CNN of the paper's DHS benchmark (hidden 128, 4 stacks of 5 kernel-9 convs, dilations
    # 1,1,4,16,64; as in DRAKES / Dirichlet flow matching); 2,974,853 parameters; receptive field 2753 bp.
    "dna-full": dict(
        backbone="dna_cnn", process="masked", parameterization="subs", vocab_size=4, length=200,
        hidden=128, n_stacks=4, dilations=[1, 1, 4, 16, 64], kernel_size=9, cond_dim=128, dropout=0.0,
        time_conditioned=False,
    ),
    # Small text DiT that trains on CPU in minutes (vocab_size is set from the tokenizer); 1,553,665
    # parameters at vocab_size 2048.
    "text-tiny": dict(
        backbone="dit", process="masked", parameterization="subs", vocab_size=2048, length=64,
        hidden=128, n_layers=4, n_heads=4, cond_dim=64, mlp_ratio=4, dropout=0.0, time_conditioned=False,
    ),
    # SEDD "small" (Lou et al., 2024): 12 blocks, width 768, 12 heads, cond 128, GPT-2 vocabulary;
    # 169,627,218 parameters (embeddings included).
    "sedd-small": dict(
        backbone="dit", process="masked", parameterization="score", vocab_size=50257, length=1024,
        hidden=768, n_layers=12, n_heads=12, cond_dim=128, mlp_ratio=4, dropout=0.1, time_conditioned=True,
        scale_by_sigma=True,
    ),
    # SEDD "medium" (the model fine-tuned in the SEPO paper's language experiment); 424,477,010 parameters.
    "sedd-medium": dict(
        backbone="dit", process="masked", parameterization="score", vocab_size=50257, length=1024,
        hidden=1024, n_layers=24, n_heads=16, cond_dim=128, mlp_ratio=4, dropout=0.1, time_conditioned=True,
        scale_by_sigma=True,
    ),
}


def preset_config(name: str, **overrides) -> ModelConfig:
    """``ModelConfig`` of preset ``name`` with ``overrides`` applied (``None`` values ignored).

    Switching a SUBS preset to ``process="uniform"`` without naming a parameterization picks
    ``"denoiser"`` and turns time conditioning on (a uniform model must know the noise level).
    Raises :class:`~sepo.errors.ConfigError` for an unknown preset or an invalid override.
    """
    if name not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(MODEL_PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    data = {**MODEL_PRESETS[name], **overrides}
    if data.get("process") == "uniform" and data.get("parameterization") == "subs" and "parameterization" not in overrides:
        data["parameterization"] = "denoiser"
        if "time_conditioned" not in overrides:
            data["time_conditioned"] = True
    return ModelConfig.from_dict(data, where=f"model preset {name!r}")
