"""Backbones, model configs and presets, checkpoints, EMA, training state, and SEDD / MDLM converters.

* :class:`ModelConfig`, :data:`MODEL_PRESETS`, :func:`preset_config` - what a model is;
* :func:`build_model` - config -> :class:`~sepo.diffusion.DiffusionModel` (``model.config`` attached);
* :class:`DNACNN` (dilated CNN for DNA) and :class:`DiT` (diffusion transformer for text);
* :func:`save_model` / :func:`load_model` - crash-safe model directories (safetensors + JSON);
* :class:`EMA`, :func:`save_train_state` / :func:`load_train_state`, :func:`capture_rng_state` /
  :func:`restore_rng_state` - exact resume of pretraining;
* :func:`load_pretrained` - a sepo, SEDD or MDLM checkpoint directory -> model.
"""

from .build import build_model, build_network, count_parameters
from .checkpoint import is_sepo_model_dir, load_model, read_model_info, save_model
from .config import MODEL_PRESETS, ModelConfig, preset_config
from .convert import convert_checkpoint, detect_layout, load_mdlm, load_pretrained, load_sedd
from .dit import DiT
from .dna_cnn import DNACNN, receptive_field
from .ema import EMA
from .train_state import capture_rng_state, load_train_state, restore_rng_state, save_train_state

__all__ = [
    "DNACNN", "DiT", "EMA", "MODEL_PRESETS", "ModelConfig", "build_model", "build_network", "capture_rng_state",
    "convert_checkpoint", "count_parameters", "detect_layout", "is_sepo_model_dir", "load_mdlm", "load_model",
    "load_pretrained", "load_sedd", "load_train_state", "preset_config", "read_model_info",
    "receptive_field", "restore_rng_state", "save_model", "save_train_state",
]
