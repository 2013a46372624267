"""SEDD / MDLM checkpoint conversion, checked against an independent reference forward of their DDiT.

The tests write small look-alike checkpoints in the published layouts (random weights, SEDD / MDLM
tensor names), load them through sepo, and compare with ``reference_ddit`` below, which is written from
the papers' description directly in terms of the original tensor names (explicit softmax attention,
explicit 2-D rotations, hand-written LayerNorm / GELU), sharing no code with ``sepo.models.dit``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from sepo.errors import CheckpointError
from sepo.models import convert_checkpoint, detect_layout, load_model, load_pretrained, save_model, build_model, ModelConfig

torch.set_num_threads(1)

EPS = 1e-3  # log-linear schedule of both papers


# ---------------------------------------------------------------------------- reference forward
def _layer_norm(x, weight):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * weight


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _linear(sd, name, x, bias=True):
    y = x @ sd[f"{name}.weight"].T
    return y + sd[f"{name}.bias"] if bias else y


def _rotate(x, positions):
    """x [B, L, H, d]: rotate the pair (x_j, x_{j + d/2}) by angle pos * 10000^(-2j/d)."""
    d = x.shape[-1]
    half = d // 2
    out = x.clone()
    for j in range(half):
        theta = positions * 10_000.0 ** (-2.0 * j / d)  # [L]
        c, s = torch.cos(theta)[None, :, None], torch.sin(theta)[None, :, None]
        a, b = x[..., j], x[..., j + half]
        out[..., j] = a * c - b * s
        out[..., j + half] = a * s + b * c
    return out


def reference_ddit(sd, x, sigma, *, n_heads, scale_by_sigma):
    """The SEDD / MDLM DDiT forward (eval mode) from the original tensor names. -> ``[B, L, K]``."""
    batch, length = x.shape
    h = sd["vocab_embed.embedding"][x]
    width = h.shape[-1]
    half = 128  # sinusoidal features of sigma, 256 = 128 cosines then 128 sines
    freqs = torch.tensor([math.exp(-math.log(10_000.0) * k / half) for k in range(half)])
    feats = torch.cat([torch.cos(sigma[:, None] * freqs), torch.sin(sigma[:, None] * freqs)], dim=-1)
    z = _linear(sd, "sigma_map.mlp.0", feats)
    c = torch.nn.functional.silu(_linear(sd, "sigma_map.mlp.2", z * torch.sigmoid(z)))
    positions = torch.arange(length, dtype=torch.float32)
    n_blocks = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    d = width // n_heads
    for i in range(n_blocks):
        p = f"blocks.{i}"
        mod = _linear(sd, f"{p}.adaLN_modulation", c)
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod[:, k * width:(k + 1) * width][:, None, :] for k in range(6))
        u = _layer_norm(h, sd[f"{p}.norm1.weight"]) * (1 + scale1) + shift1
        qkv = _linear(sd, f"{p}.attn_qkv", u, bias=False).reshape(batch, length, 3, n_heads, d)
        q, k, v = _rotate(qkv[:, :, 0], positions), _rotate(qkv[:, :, 1], positions), qkv[:, :, 2]
        scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d)
        attn = torch.einsum("bhij,bjhd->bihd", torch.softmax(scores, dim=-1), v).reshape(batch, length, width)
        h = h + gate1 * _linear(sd, f"{p}.attn_out", attn, bias=False)
        u = _layer_norm(h, sd[f"{p}.norm2.weight"]) * (1 + scale2) + shift2
        h = h + gate2 * _linear(sd, f"{p}.mlp.2", _gelu_tanh(_linear(sd, f"{p}.mlp.0", u)))
    shift, scale = _linear(sd, "output_layer.adaLN_modulation", c).chunk(2, dim=-1)
    out = _linear(sd, "output_layer.linear", _layer_norm(h, sd["output_layer.norm_final.weight"]) * (1 + scale[:, None]) + shift[:, None])
    if scale_by_sigma:
        out = out - torch.log(torch.exp(sigma) - 1)[:, None, None] - math.log(out.shape[-1] - 1)
    return out


def sigma_bar(t):
    return -torch.log(1 - (1 - EPS) * t)


# ----------------------------------------------------------------------------- look-alike files
def ddit_state(*, states, width, n_blocks, cond, seed, with_rotary=True):
    """Random tensors under SEDD / MDLM DDiT names (adaLN and read-out non-zero, unlike a fresh init)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.2, base=0.0):
        return base + scale * torch.randn(*shape, generator=g)

    sd = {
        "vocab_embed.embedding": rnd(states, width, scale=1.0),
        "sigma_map.mlp.0.weight": rnd(cond, 256), "sigma_map.mlp.0.bias": rnd(cond),
        "sigma_map.mlp.2.weight": rnd(cond, cond), "sigma_map.mlp.2.bias": rnd(cond),
    }
    for i in range(n_blocks):
        p = f"blocks.{i}"
        sd |= {
            f"{p}.norm1.weight": rnd(width, base=1.0), f"{p}.attn_qkv.weight": rnd(3 * width, width),
            f"{p}.attn_out.weight": rnd(width, width), f"{p}.norm2.weight": rnd(width, base=1.0),
            f"{p}.mlp.0.weight": rnd(4 * width, width), f"{p}.mlp.0.bias": rnd(4 * width),
            f"{p}.mlp.2.weight": rnd(width, 4 * width), f"{p}.mlp.2.bias": rnd(width),
            f"{p}.adaLN_modulation.weight": rnd(6 * width, cond), f"{p}.adaLN_modulation.bias": rnd(6 * width),
        }
    sd |= {
        "output_layer.norm_final.weight": rnd(width, base=1.0),
        "output_layer.linear.weight": rnd(states, width), "output_layer.linear.bias": rnd(states),
        "output_layer.adaLN_modulation.weight": rnd(2 * width, cond),
        "output_layer.adaLN_modulation.bias": rnd(2 * width),
    }
    if with_rotary:
        head = width // 4
        sd["rotary_emb.inv_freq"] = 1.0 / (10_000 ** (torch.arange(0, head, 2).float() / head))
    return sd


def write_sedd(d, *, tokens=11, width=32, n_heads=4, n_blocks=2, cond=16, seed=0, graph="absorb", edit=None):
    d.mkdir(parents=True, exist_ok=True)
    sd = ddit_state(states=tokens + 1, width=width, n_blocks=n_blocks, cond=cond, seed=seed)
    config = {
        "ngpus": 8, "tokens": tokens,
        "training": {"batch_size": 512, "ema": 0.9999},
        "graph": {"type": graph, "file": "data", "report_all": False},
        "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20},
        "model": {"name": "small", "type": "ddit", "hidden_size": width, "cond_dim": cond, "length": 16,
                  "n_blocks": n_blocks, "n_heads": n_heads, "scale_by_sigma": True, "dropout": 0.1},
    }
    if edit:
        edit(config, sd)
    (d / "config.json").write_text(json.dumps(config))
    torch.save(sd, d / "pytorch_model.bin")
    return sd


def write_mdlm(d, *, vocab_with_mask=12, width=32, n_heads=4, n_blocks=2, cond=16, seed=1, time_conditioning=False):
    d.mkdir(parents=True, exist_ok=True)
    sd = ddit_state(states=vocab_with_mask, width=width, n_blocks=n_blocks, cond=cond, seed=seed, with_rotary=False)
    config = {
        "architectures": ["MDLM"], "model_type": "mdlm", "return_dict": False,
        "auto_map": {"AutoConfig": "configuration_mdlm.MDLMConfig", "AutoModelForMaskedLM": "modeling_mdlm.MDLM"},
        "vocab_size": vocab_with_mask, "model_length": 16, "hidden_dim": width, "cond_dim": cond,
        "n_blocks": n_blocks, "n_heads": n_heads, "dropout": 0.1, "time_conditioning": time_conditioning,
        "torch_dtype": "float32", "transformers_version": "4.38.2",
    }
    (d / "config.json").write_text(json.dumps(config))
    save_file({f"backbone.{k}": v.contiguous() for k, v in sd.items()}, str(d / "model.safetensors"))
    return sd


def inputs(states, mask_id, *, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, mask_id, (3, 10), generator=g)
    x[torch.rand(3, 10, generator=g) < 0.5] = mask_id
    return x, torch.tensor([0.15, 0.5, 0.95])


# ------------------------------------------------------------------------------------------ SEDD
def test_sedd_checkpoint_matches_reference_score(tmp_path):
    sd = write_sedd(tmp_path / "sedd")
    assert detect_layout(tmp_path / "sedd") == "sedd"
    model, info = load_pretrained(tmp_path / "sedd")
    cfg = model.config
    assert (cfg.parameterization, cfg.process, cfg.vocab_size, cfg.hidden, cfg.n_layers, cfg.n_heads) == ("score", "masked", 11, 32, 2, 4)
    assert cfg.scale_by_sigma and cfg.time_conditioned and cfg.schedule == {"name": "loglinear", "eps": EPS}
    assert info["layout"] == "sedd" and info["vocab"] == {"size": 11, "mask_id": 11}
    x, t = inputs(12, 11)
    with torch.no_grad():
        ours = model.log_score(x, t)
        ref = reference_ddit(sd, x, sigma_bar(t), n_heads=4, scale_by_sigma=True)
    ref = ref.scatter(-1, x[..., None], 0.0)  # SEDD zeroes the log score of the current token
    assert ours.shape == ref.shape == (3, 10, 12)
    assert (ours - ref).abs().max() < 2e-5, (ours - ref).abs().max()
    assert ref.std() > 0.5  # the comparison is not between near-constant tensors


def test_sedd_gpt2_vocabulary_puts_mask_at_50257(tmp_path):
    sd = write_sedd(tmp_path / "sedd", tokens=50257, width=16, n_heads=2, n_blocks=1, cond=8,
                    edit=lambda cfg, sd: sd.__setitem__("rotary_emb.inv_freq", 1.0 / (10_000 ** (torch.arange(0, 8, 2).float() / 8))))
    model, info = load_pretrained(tmp_path / "sedd", expect_vocab={"tokenizer": "gpt2"})
    assert model.num_states == 50258 and model.process.mask_id == 50257
    assert info["vocab"] == {"size": 50257, "mask_id": 50257, "tokenizer": "gpt2"}
    x, t = inputs(50258, 50257)
    with torch.no_grad():
        ours = model.log_score(x, t)
        ref = reference_ddit(sd, x, sigma_bar(t), n_heads=2, scale_by_sigma=True).scatter(-1, x[..., None], 0.0)
    assert (ours - ref).abs().max() < 2e-5


def test_sedd_converts_to_a_sepo_directory_with_identical_outputs(tmp_path):
    write_sedd(tmp_path / "sedd")
    original, _ = load_pretrained(tmp_path / "sedd")
    convert_checkpoint(tmp_path / "sedd", tmp_path / "sepo")
    assert detect_layout(tmp_path / "sepo") == "sepo"
    converted, info = load_pretrained(tmp_path / "sepo")
    assert info["layout"] == "sepo" and info["provenance"]["layout"] == "sedd"
    x, t = inputs(12, 11)
    with torch.no_grad():
        assert torch.equal(converted.raw(x, t), original.raw(x, t))


def test_sedd_bad_inputs_give_one_line_errors(tmp_path):
    def check(d, *phrases):
        with pytest.raises(CheckpointError) as err:
            load_pretrained(d)
        assert "\n" not in str(err.value)
        for p in phrases:
            assert p in str(err.value), str(err.value)

    write_sedd(tmp_path / "uniform", graph="uniform")
    check(tmp_path / "uniform", "graph type 'uniform' is not supported")
    write_sedd(tmp_path / "shape", edit=lambda cfg, sd: cfg["model"].update(hidden_size=64))
    check(tmp_path / "shape", "has shape (12, 32) but config.json implies (12, 64)")
    write_sedd(tmp_path / "extra", edit=lambda cfg, sd: sd.__setitem__("blocks.0.lora.weight", torch.zeros(2)))
    check(tmp_path / "extra", "unexpected tensor 'blocks.0.lora.weight'")
    write_sedd(tmp_path / "missing", edit=lambda cfg, sd: sd.pop("blocks.1.norm2.weight"))
    check(tmp_path / "missing", "'blocks.1.norm_mlp.weight' is missing")
    write_sedd(tmp_path / "rotary", edit=lambda cfg, sd: sd["rotary_emb.inv_freq"].mul_(2))
    check(tmp_path / "rotary", "rotary frequencies differ")
    write_sedd(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "pytorch_model.bin").write_bytes(b"PK\x03\x04 truncated")
    check(tmp_path / "corrupt", "not a readable PyTorch state dict")
    write_sedd(tmp_path / "pickle")
    torch.save({"model": {"w": torch.zeros(1)}, "callback": PickledObject()}, tmp_path / "pickle" / "pytorch_model.bin")
    check(tmp_path / "pickle", "not a readable PyTorch state dict")  # weights_only refuses arbitrary objects
    write_sedd(tmp_path / "noisy", edit=lambda cfg, sd: cfg["noise"].update(type="cosine"))
    check(tmp_path / "noisy", "noise type 'cosine' is not supported")


class PickledObject:
    pass


# ------------------------------------------------------------------------------------------ MDLM
@pytest.mark.parametrize("time_conditioning", [False, True])
def test_mdlm_checkpoint_matches_reference_logits_and_subs(tmp_path, time_conditioning):
    sd = write_mdlm(tmp_path / "mdlm", time_conditioning=time_conditioning)
    assert detect_layout(tmp_path / "mdlm") == "mdlm"
    model, info = load_pretrained(tmp_path / "mdlm")
    cfg = model.config
    assert (cfg.parameterization, cfg.vocab_size, cfg.time_conditioned, cfg.scale_by_sigma) == ("subs", 11, time_conditioning, False)
    assert model.process.mask_id == 11 and info["layout"] == "mdlm"
    x, t = inputs(12, 11)
    sigma = sigma_bar(t) if time_conditioning else torch.zeros(3)  # MDLM zeroes sigma without time conditioning
    with torch.no_grad():
        logits = model.raw(x, t)
        ref = reference_ddit(sd, x, sigma, n_heads=4, scale_by_sigma=False)
        log_d = model.log_denoiser(x, t)
    assert (logits - ref).abs().max() < 2e-5
    # MDLM's SUBS: mask logit -> -inf, normalise, revealed tokens carried over
    ref_sub = ref.clone()
    ref_sub[..., 11] = -float("inf")
    ref_sub = ref_sub - ref_sub.logsumexp(-1, keepdim=True)
    revealed = x != 11
    carry = torch.full_like(ref_sub, -float("inf")).scatter(-1, x[..., None], 0.0)
    ref_sub = torch.where(revealed[..., None], carry, ref_sub)[..., :11]
    masked = ~revealed
    assert torch.allclose(log_d[masked], ref_sub[masked], atol=2e-5)
    assert torch.equal(log_d[revealed].argmax(-1), x[revealed])
    if not time_conditioning:
        with torch.no_grad():
            assert torch.equal(model.raw(x, t), model.raw(x, torch.full((3,), 0.01)))


def test_mdlm_errors_and_unknown_layouts(tmp_path):
    write_mdlm(tmp_path / "mdlm")
    bad = json.loads((tmp_path / "mdlm" / "config.json").read_text())
    bad["hidden_dim"] = "wide"
    (tmp_path / "mdlm" / "config.json").write_text(json.dumps(bad))
    with pytest.raises(CheckpointError, match="field 'hidden_dim' must be an integer"):
        load_pretrained(tmp_path / "mdlm")
    write_mdlm(tmp_path / "m2")
    (tmp_path / "m2" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_pretrained(tmp_path / "m2")
    write_mdlm(tmp_path / "m3")
    with pytest.raises(CheckpointError, match="vocabulary tokenizer=None but 'gpt2' is needed"):
        load_pretrained(tmp_path / "m3", expect_vocab={"tokenizer": "gpt2"})

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="not a recognised checkpoint: expected a sepo model"):
        load_pretrained(tmp_path / "other")
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(tmp_path / "absent")


def test_load_pretrained_dispatches_to_sepo_models(tmp_path):
    model = build_model(ModelConfig(backbone="dit", hidden=16, n_layers=1, n_heads=2, cond_dim=8, length=8, vocab_size=6))
    save_model(tmp_path / "s", model, vocab={"size": 6})
    loaded, info = load_pretrained(tmp_path / "s")
    assert info["layout"] == "sepo" and loaded.config == model.config
    assert load_model(tmp_path / "s")[0].config == model.config
