"""``build_model``: ``ModelConfig`` -> ``DiffusionModel`` (network + forward process)."""

from __future__ import annotations

from torch import nn

from sepo.diffusion import DiffusionModel, make_process

from .config import ModelConfig
from .dit import DiT
from .dna_cnn import DNACNN

__all__ = ["build_model", "build_network", "count_parameters"]


def _as_config(cfg: ModelConfig | dict) -> ModelConfig:
    if isinstance(cfg, ModelConfig):
        return cfg
    if isinstance(cfg, dict):
        return ModelConfig.from_dict(cfg)
    raise TypeError(f"build_model needs a ModelConfig or a mapping, got {type(cfg).__name__}")


def build_network(cfg: ModelConfig) -> nn.Module:
    """The bare network ``net(x_t [B, L] long, sigma_bar [B]) -> [B, L, cfg.output_dim]``."""
    common = dict(
        num_states=cfg.num_states,
        out_dim=cfg.output_dim,
        hidden=cfg.hidden,
        cond_dim=cfg.cond_dim,
        dropout=cfg.dropout,
        time_conditioned=cfg.time_conditioned,
        scale_by_sigma=cfg.scale_by_sigma,
        length=cfg.length,
    )
    if cfg.backbone == "dna_cnn":
        return DNACNN(n_stacks=cfg.n_stacks, dilations=cfg.dilations, kernel_size=cfg.kernel_size, **common)
    return DiT(n_layers=cfg.n_layers, n_heads=cfg.n_heads, mlp_ratio=cfg.mlp_ratio, **common)


def build_model(cfg: ModelConfig | dict) -> DiffusionModel:
    """Build the :class:`~sepo.diffusion.DiffusionModel` described by ``cfg`` (freshly initialised).

    A mapping is validated first (:class:`~sepo.errors.ConfigError` on a bad field). The config is
    attached as ``model.config``.
    """
    cfg = _as_config(cfg)
    schedule = dict(cfg.schedule)
    process = make_process(cfg.process, cfg.vocab_size, schedule.pop("name"), **schedule)
    model = DiffusionModel(
        build_network(cfg), process, parameterization=cfg.parameterization, time_conditioned=cfg.time_conditioned
    )
    model.config = cfg
    return model


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
