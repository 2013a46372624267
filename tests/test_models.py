"""Backbones, ModelConfig validation, presets and build_model."""

from __future__ import annotations

import math

import pytest
import torch

from sepo.diffusion import diffusion_loss
from sepo.errors import ConfigError
from sepo.models import (
    MODEL_PRESETS,
    ModelConfig,
    build_model,
    count_parameters,
    preset_config,
    receptive_field,
)
from sepo.models.dit import apply_rotary, rotary_cos_sin

torch.set_num_threads(1)

TINY = {
    "dna_cnn": dict(backbone="dna_cnn", hidden=16, n_stacks=1, dilations=[1, 2], kernel_size=3, cond_dim=8, length=12),
    "dit": dict(backbone="dit", hidden=16, n_layers=2, n_heads=2, cond_dim=8, length=12),
}
COMBOS = [("masked", "subs"), ("masked", "score"), ("uniform", "denoiser"), ("uniform", "score")]


def tiny(backbone: str, process: str = "masked", parameterization: str = "subs", **kw) -> ModelConfig:
    return ModelConfig(**{**TINY[backbone], "process": process, "parameterization": parameterization, "vocab_size": 5, **kw})


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Replace every parameter (zero-initialised adaLN / read-out included) by N(0, 0.3^2) noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("backbone", ["dna_cnn", "dit"])
@pytest.mark.parametrize("process,parameterization", COMBOS)
def test_output_shapes_and_views(backbone, process, parameterization):
    cfg = tiny(backbone, process, parameterization, time_conditioned=True)
    model = build_model(cfg)
    randomize(model)
    assert model.config is cfg
    expected_k = {"subs": 6, "denoiser": 5}.get(parameterization, cfg.num_states)
    assert cfg.output_dim == expected_k
    x = torch.randint(0, cfg.num_states, (3, 10))
    t = torch.tensor([0.2, 0.5, 0.9])
    out = model.raw(x, t)
    assert out.shape == (3, 10, expected_k) and out.dtype == torch.float32
    log_d = model.log_denoiser(x, t)
    assert log_d.shape == (3, 10, 5)
    assert torch.allclose(log_d.logsumexp(-1), torch.zeros(3, 10), atol=1e-5)
    assert model.log_score(x, t).shape == (3, 10, cfg.num_states)
    assert model.network_passes == 9


def test_receptive_field_formula_matches_gradient_support():
    # kernel 3, dilations 1, 2 -> 1 + 2*1 + 2*2 = 7 positions; check the formula against autograd
    cfg = tiny("dna_cnn")
    model = build_model(cfg)
    assert model.net.receptive_field == receptive_field(kernel_size=3, dilations=[1, 2], n_stacks=1) == 7
    support = _gradient_support(model, length=12, position=6)
    assert support == list(range(3, 10))  # 6 +- 3


def _gradient_support(model, *, length: int, position: int) -> list[int]:
    captured = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["emb"] = output

    handle = model.net.embed.register_forward_hook(keep)
    x = torch.randint(0, model.num_states, (1, length), generator=torch.Generator().manual_seed(1))
    out = model.net(x, torch.zeros(1))
    handle.remove()
    out[0, position].sum().backward()
    grad = captured["emb"].grad[0].abs().sum(-1)
    return torch.nonzero(grad > 0).flatten().tolist()


def test_full_dna_preset_sees_the_whole_200bp_sequence():
    cfg = preset_config("dna-full")
    assert (cfg.hidden, cfg.n_stacks, cfg.dilations, cfg.kernel_size) == (128, 4, [1, 1, 4, 16, 64], 9)
    # 1 + 4 * 8 * (1 + 1 + 4 + 16 + 64) = 2753 >= 2 * 200 - 1: the first and last base see each other
    assert receptive_field(kernel_size=9, dilations=[1, 1, 4, 16, 64], n_stacks=4) == 2753
    model = build_model(cfg)
    assert model.net.receptive_field == 2753
    assert _gradient_support(model, length=200, position=0) == list(range(200))
    tiny_cfg = preset_config("dna-tiny")
    assert build_model(tiny_cfg).net.receptive_field == 1377 >= 2 * 200 - 1


def test_preset_parameter_counts_match_docs():
    counts = {name: count_parameters(build_model(preset_config(name)).net) for name in ("dna-tiny", "dna-full", "text-tiny")}
    assert counts == {"dna-tiny": 375_493, "dna-full": 2_974_853, "text-tiny": 1_553_665}
    # 20 convs of 128 x 128 x 9 (+ bias) dominate the full CNN
    assert counts["dna-full"] - 20 * (128 * 128 * 9 + 128) == 23_173
    # the DiT count in closed form, checked on text-tiny, then evaluated at SEDD-small's shape
    assert dit_parameter_count(preset_config("text-tiny")) == counts["text-tiny"]
    assert dit_parameter_count(preset_config("sedd-small")) == 169_627_218


def dit_parameter_count(cfg: ModelConfig) -> int:
    h, c, s, r = cfg.hidden, cfg.cond_dim, cfg.num_states, cfg.mlp_ratio
    block = 2 * h + 3 * h * h + h * h + (r * h * h + r * h) + (r * h * h + h) + (6 * c * h + 6 * h)
    head = h + (2 * c * h + 2 * h) + (h * cfg.output_dim + cfg.output_dim)
    return s * h + (256 * c + c) + (c * c + c) + cfg.n_layers * block + head


@pytest.mark.parametrize("backbone", ["dna_cnn", "dit"])
def test_time_conditioning_on_changes_outputs_and_off_does_not(backbone):
    x = torch.randint(0, 6, (2, 10), generator=torch.Generator().manual_seed(0))
    for conditioned in (True, False):
        model = build_model(tiny(backbone, time_conditioned=conditioned))
        randomize(model)
        model.eval()
        a = model.net(x, torch.full((2,), 0.05))
        b = model.net(x, torch.full((2,), 3.0))
        if conditioned:
            assert (a - b).abs().max() > 1e-3
        else:
            assert torch.equal(a, b)
    assert not hasattr(build_model(tiny("dna_cnn", time_conditioned=False)).net, "time_proj")


@pytest.mark.parametrize("backbone", ["dna_cnn", "dit"])
@pytest.mark.parametrize("process,parameterization", [("masked", "subs"), ("uniform", "score")])
def test_gradients_reach_every_parameter(backbone, process, parameterization):
    model = build_model(tiny(backbone, process, parameterization, time_conditioned=True))
    randomize(model)
    model.train()
    x0 = torch.randint(0, 5, (4, 10), generator=torch.Generator().manual_seed(2))
    loss = diffusion_loss(model, x0, generator=torch.Generator().manual_seed(3)).mean()
    assert torch.isfinite(loss)
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


def test_fresh_dit_is_adaln_zero_and_scale_by_sigma_gives_calibrated_score():
    # zero read-out + SEDD scaling: score at a masked position = alpha / ((1 - alpha) V) per clean token,
    # i.e. the score of a uniform denoiser (METHOD.md s1: s = alpha/(1-alpha) D with D = 1/V)
    cfg = tiny("dit", "masked", "score", time_conditioned=True, scale_by_sigma=True)
    model = build_model(cfg)
    x = torch.full((2, 6), 5)
    x[:, 0] = 1
    t = torch.tensor([0.3, 0.8])
    assert torch.equal(model.raw(torch.zeros_like(x), t)[..., 0], model.raw(torch.zeros_like(x), t)[..., 1])
    log_s = model.log_score(x, t)
    alpha = 1.0 - (1.0 - 1e-3) * t
    expected = torch.log(alpha / ((1.0 - alpha) * 5))
    assert torch.allclose(log_s[:, 1:, :5], expected[:, None, None].expand(2, 5, 5), atol=1e-5)
    assert torch.allclose(model.log_denoiser(x, t)[:, 1:].exp(), torch.full((2, 5, 5), 0.2), atol=1e-6)


def test_dit_attention_is_bidirectional_and_rotary_is_relative():
    model = build_model(tiny("dit"))
    randomize(model)
    model.eval()
    x = torch.randint(0, 6, (1, 8), generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % 6
    out_x, out_y = model.net(x, torch.zeros(1)), model.net(y, torch.zeros(1))
    assert (out_x[0, 0] - out_y[0, 0]).abs().max() > 1e-4  # first position sees the last one
    # rotary: <R_i q, R_j k> depends on i - j only
    cos, sin = rotary_cos_sin(12, 8)
    q, k = torch.randn(8), torch.randn(8)
    rq = apply_rotary(q.expand(1, 1, 12, 8), cos, sin)[0, 0]
    rk = apply_rotary(k.expand(1, 1, 12, 8), cos, sin)[0, 0]
    assert torch.allclose(rq[2] @ rk[5], rq[6] @ rk[9], atol=1e-5)
    assert torch.allclose(rq[0], q)  # position 0 is not rotated
    assert not torch.allclose(rq[2] @ rk[5], rq[2] @ rk[6], atol=1e-3)


def test_too_long_input_is_rejected():
    for backbone in ("dna_cnn", "dit"):
        model = build_model(tiny(backbone))
        with pytest.raises(ValueError, match="exceeds the model's maximum length 12"):
            model.net(torch.zeros(1, 13, dtype=torch.long), torch.zeros(1))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(backbone="rnn"), "backbone 'rnn' is unknown"),
        (dict(process="uniform", parameterization="subs"), "'subs' needs process 'masked'"),
        (dict(process="masked", parameterization="denoiser"), "'denoiser' is for the uniform process"),
        (dict(parameterization="subs", scale_by_sigma=True), "scale_by_sigma"),
        (dict(backbone="dit", hidden=30, n_heads=4), "must be divisible by n_heads"),
        (dict(backbone="dit", hidden=12, n_heads=4), "must be even for rotary"),
        (dict(kernel_size=4), "kernel_size must be a positive odd number"),
        (dict(dilations=[]), "dilations must be a non-empty list"),
        (dict(vocab_size=1), "vocab_size must be at least 2"),
        (dict(dropout=1.0), "dropout must be in [0, 1)"),
        (dict(schedule={"name": "sqrt"}), "unknown noise schedule 'sqrt'"),
        (dict(schedule={"name": "loglinear", "epsilon": 0.1}), "unknown option"),
        (dict(schedule={"eps": 0.1}), "schedule must be a mapping with a 'name'"),
        (dict(hidden=0), "hidden must be at least 1"),
    ],
)
def test_invalid_configs_are_rejected_with_actionable_messages(overrides, message):
    with pytest.raises(ValueError) as err:
        ModelConfig(**overrides)
    assert message in str(err.value)
    # build_model on a mapping turns it into a one-line ConfigError
    with pytest.raises(ConfigError) as err:
        build_model(overrides)
    text = str(err.value)
    field = next(iter(overrides))
    assert (message in text or f"model.{field}: " in text) and "\n" not in text


def test_mapping_configs_check_names_and_types():
    with pytest.raises(ConfigError, match="did you mean 'n_heads'"):
        build_model({"backbone": "dit", "n_head": 4})
    with pytest.raises(ConfigError, match="expected an integer"):
        build_model({"hidden": "big"})
    model = build_model({**TINY["dit"], "vocab_size": 7})
    assert model.config.vocab_size == 7 and model.num_states == 8


def test_presets_and_overrides():
    assert set(MODEL_PRESETS) >= {"dna-tiny", "dna-full", "text-tiny", "sedd-small"}
    for name in MODEL_PRESETS:
        preset_config(name)  # every preset validates
    cfg = preset_config("dna-tiny", process="uniform")
    assert (cfg.parameterization, cfg.time_conditioned) == ("denoiser", True)
    cfg = preset_config("dna-tiny", process="uniform", parameterization="score", time_conditioned=False)
    assert (cfg.parameterization, cfg.time_conditioned) == ("score", False)
    assert preset_config("text-tiny", vocab_size=300, hidden=None).vocab_size == 300
    with pytest.raises(ConfigError, match="unknown model preset 'dna-huge'; choose one of dna-tiny"):
        preset_config("dna-huge")
    with pytest.raises(ConfigError, match="did you mean 'hidden'"):
        preset_config("dna-tiny", hiden=3)
    assert math.isclose(preset_config("sedd-small").dropout, 0.1)
