"""Model directories (save / load / crash safety / every error), EMA, training state and exact resume."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

import sepo.models.checkpoint as checkpoint_module
from sepo.diffusion import diffusion_loss
from sepo.errors import CheckpointError
from sepo.models import (
    EMA,
    ModelConfig,
    build_model,
    capture_rng_state,
    load_model,
    load_train_state,
    restore_rng_state,
    save_model,
    save_train_state,
)

torch.set_num_threads(1)

CNN = dict(backbone="dna_cnn", hidden=16, n_stacks=1, dilations=[1, 2], kernel_size=3, cond_dim=8, length=12, vocab_size=4)
DIT = dict(backbone="dit", hidden=16, n_layers=2, n_heads=2, cond_dim=8, length=12, vocab_size=4, time_conditioned=True)
DNA = {"alphabet": "ACGT"}


def make(kw=CNN, seed=0, **extra):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(**{**kw, **extra}))
    with torch.no_grad():  # non-zero everywhere so outputs depend on every tensor
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def outputs(model):
    x = torch.randint(0, model.num_states, (3, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return model.raw(x, torch.tensor([0.1, 0.5, 0.9]))


def one_line_error(fn, *phrases):
    with pytest.raises(CheckpointError) as err:
        fn()
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text, text
    for phrase in phrases:
        assert phrase in text, text
    return text


# ------------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("kw", [CNN, DIT], ids=["dna_cnn", "dit"])
def test_round_trip_gives_identical_outputs_and_metadata(tmp_path, kw):
    model = make(kw, scale_by_sigma=False)
    save_model(tmp_path / "m", model, vocab=DNA, provenance={"steps": 3}, extra_files={"notes.txt": b"hello"})
    loaded, info = load_model(tmp_path / "m", expect_vocab=DNA)
    assert loaded.config == model.config
    assert torch.equal(outputs(loaded), outputs(model))
    assert not loaded.training
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["format"] == "sepo-model" and meta["format_version"] == 1 and meta["model"]["hidden"] == 16
    assert info["vocab"] == DNA and info["provenance"] == {"steps": 3} and info["used_ema"] is False
    assert open(info["extra_files"]["notes.txt"], "rb").read() == b"hello"
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors", "notes.txt"]


def test_ema_weights_are_saved_and_chosen(tmp_path):
    model = make()
    ema = EMA(model, decay=0.5)
    live = outputs(model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-1.0)
    ema.update(model)  # shadow = 0.5 * old + 0.5 * (-old) = 0
    save_model(tmp_path / "m", model, vocab=DNA, ema_state=ema)
    raw, info = load_model(tmp_path / "m", use_ema=False)
    assert torch.equal(outputs(raw), outputs(model)) and not info["used_ema"]
    averaged, info = load_model(tmp_path / "m")
    assert info["used_ema"]
    for p in averaged.net.parameters():
        assert p.abs().max() == 0
    assert not torch.equal(outputs(averaged), live)
    # saving again without EMA removes the stale file
    save_model(tmp_path / "m", model, vocab=DNA)
    assert not (tmp_path / "m" / "ema.safetensors").exists()
    assert load_model(tmp_path / "m")[1]["used_ema"] is False


def test_ema_state_dict_keyed_like_the_diffusion_model_is_accepted(tmp_path):
    model = make()
    ema = EMA(model.net, decay=0.9)
    state = {f"net.{k}": v * 0 for k, v in ema.averaged_state_dict(model.net).items()}
    save_model(tmp_path / "m", model, ema_state=state)
    loaded, _ = load_model(tmp_path / "m")
    assert all(p.abs().max() == 0 for p in loaded.net.parameters())
    # EMA.state_dict() of an EMA built on the DiffusionModel (what a training loop holds)
    on_model = EMA(model, decay=0.9)
    for v in on_model.shadow.values():
        v.fill_(0.25)
    save_model(tmp_path / "m", model, ema_state=on_model.state_dict())
    loaded, info = load_model(tmp_path / "m")
    assert info["used_ema"] and all(torch.all(p == 0.25) for p in loaded.net.parameters())


def test_ema_update_copy_store_restore():
    model = make()
    ema = EMA(model, decay=0.9)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for n, p in model.named_parameters():
        assert torch.allclose(ema.shadow[n], 0.9 * before[n] + 0.1 * (before[n] + 1.0), atol=1e-6)
    ema.store(model)
    ema.copy_to(model)
    assert all(torch.equal(p, ema.shadow[n]) for n, p in model.named_parameters())
    ema.restore(model)
    assert all(torch.equal(p, before[n] + 1.0) for n, p in model.named_parameters())
    other = EMA(model, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.9 and other.num_updates == 1
    assert all(torch.equal(other.shadow[n], ema.shadow[n]) for n in ema.shadow)
    with pytest.raises(ValueError, match="decay must be in"):
        EMA(model, decay=1.0)
    with pytest.raises(ValueError, match="different model"):
        ema.update(make(DIT))


# --------------------------------------------------------------------------------- crash safety
def _only_model_files(d):
    return sorted(f for f in os.listdir(d) if not f.startswith("."))


def test_crash_while_writing_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    old = make(seed=0)
    save_model(tmp_path / "m", old, vocab=DNA)
    expected = outputs(old)
    import safetensors.torch

    real_save = safetensors.torch.save_file

    def crash_mid_file(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:  # leave a truncated temporary file behind, then die
            f.truncate(100)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_mid_file)
    with pytest.raises(KeyboardInterrupt):
        save_model(tmp_path / "m", make(seed=1), vocab=DNA)
    monkeypatch.undo()
    loaded, info = load_model(tmp_path / "m")
    assert torch.equal(outputs(loaded), expected) and not info["recovered"]
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]  # no temporary left


def test_crash_between_renames_falls_back_to_the_previous_save(tmp_path, monkeypatch):
    old, new = make(seed=0), make(seed=1)
    save_model(tmp_path / "m", old, vocab=DNA)
    real_replace = os.replace

    def crash_before_config(src, dst):
        if str(dst).endswith("config.json"):
            raise KeyboardInterrupt("simulated crash before the commit")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", crash_before_config)
    with pytest.raises(KeyboardInterrupt):
        save_model(tmp_path / "m", new, vocab=DNA)
    monkeypatch.undo()
    # model.safetensors already holds the new weights, config.json is the old one: the backup wins
    loaded, info = load_model(tmp_path / "m")
    assert info["recovered"] is True
    assert torch.equal(outputs(loaded), outputs(old))
    # the next successful save commits and cleans up
    save_model(tmp_path / "m", new, vocab=DNA)
    loaded, info = load_model(tmp_path / "m")
    assert torch.equal(outputs(loaded), outputs(new)) and not info["recovered"]
    assert os.listdir(tmp_path / "m") and all(not f.startswith(".") for f in os.listdir(tmp_path / "m"))


def test_weights_from_another_save_without_backup_are_reported(tmp_path):
    save_model(tmp_path / "a", make(seed=0))
    save_model(tmp_path / "b", make(seed=1))
    os.replace(tmp_path / "b" / "model.safetensors", tmp_path / "a" / "model.safetensors")
    one_line_error(lambda: load_model(tmp_path / "a"), "come from different saves")


# ---------------------------------------------------------------------------------- load errors
def test_every_load_error_is_one_actionable_line(tmp_path):
    model = make()
    good = tmp_path / "good"
    save_model(good, model, vocab=DNA)

    one_line_error(lambda: load_model(tmp_path / "nope"), "not found", "sepo pretrain")
    (tmp_path / "file").write_text("x")
    one_line_error(lambda: load_model(tmp_path / "file"), "is a file")
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: load_model(tmp_path / "empty"), "has no config.json", "load_pretrained")

    def variant(name, edit_config=None, weights=None):
        d = tmp_path / name
        d.mkdir()
        text = (good / "config.json").read_text()
        meta = json.loads(text)
        if edit_config is not None:
            result = edit_config(meta)
            text = result if isinstance(result, str) else json.dumps(meta)
        (d / "config.json").write_text(text)
        if weights != "missing":
            (d / "model.safetensors").write_bytes(weights if weights is not None else (good / "model.safetensors").read_bytes())
        return d

    one_line_error(lambda: load_model(variant("badjson", lambda m: "{not json")), "not valid JSON", "corrupt")
    one_line_error(lambda: load_model(variant("foreign", lambda m: m.update(format="other"))), "not a sepo model", "load_pretrained")
    one_line_error(lambda: load_model(variant("newer", lambda m: m.update(format_version=7))), "newer sepo", "upgrade sepo")
    one_line_error(lambda: load_model(variant("badver", lambda m: m.update(format_version="one"))), "invalid format_version")
    one_line_error(lambda: load_model(variant("nomodel", lambda m: m.pop("model"))), "has no 'model' section")
    one_line_error(
        lambda: load_model(variant("badcfg", lambda m: m["model"].update(kernel_size=4))), "invalid model config", "kernel_size"
    )
    one_line_error(lambda: load_model(variant("noweights", weights="missing")), "no model.safetensors", "interrupted")
    one_line_error(lambda: load_model(variant("garbage", weights=b"\x00garbage" * 10)), "not a readable safetensors file", "corrupt")
    truncated = (good / "model.safetensors").read_bytes()[:-50]
    one_line_error(lambda: load_model(variant("truncated", weights=truncated)), "not a readable safetensors file")
    one_line_error(
        lambda: load_model(variant("shape", lambda m: m["model"].update(hidden=32))),
        "tensor 'embed.weight' has shape (5, 16), the config expects (5, 32)",
    )
    one_line_error(
        lambda: load_model(variant("depth", lambda m: m["model"].update(n_stacks=2))), "lacks tensor 'norms.2.weight'"
    )
    one_line_error(
        lambda: load_model(good, expect_vocab={"alphabet": "ACGU"}), "vocabulary alphabet='ACGT' but 'ACGU' is needed"
    )
    save_model(tmp_path / "novocab", model)
    one_line_error(lambda: load_model(tmp_path / "novocab", expect_vocab=DNA), "records no vocabulary")


def test_save_rejects_inconsistent_inputs(tmp_path):
    model = make()
    with pytest.raises(ValueError, match="has 5 symbols but the model has vocab_size 4"):
        save_model(tmp_path / "m", model, vocab={"alphabet": "ACGTN"})
    with pytest.raises(ValueError, match="build_model"):
        save_model(tmp_path / "m", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="reserved"):
        save_model(tmp_path / "m", model, extra_files={"config.json": b"{}"})
    with pytest.raises(ValueError, match="do not match"):
        save_model(tmp_path / "m", model, ema_state={"bogus": torch.zeros(1)})
    assert not (tmp_path / "m" / "config.json").exists()
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "mdlm"}')
    with pytest.raises(CheckpointError, match="is not a sepo model config; save the model to another folder"):
        save_model(tmp_path / "hf", model)
    assert (tmp_path / "hf" / "config.json").read_text() == '{"model_type": "mdlm"}'


# ------------------------------------------------------------------------ RNG and training state
def _draws():
    return (random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist(), torch.randn(2).tolist())


def test_rng_state_round_trip_in_memory_and_on_disk(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leave a cached gaussian in numpy's state
    state = capture_rng_state()
    first = _draws()
    restore_rng_state(state)
    assert _draws() == first
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_train_state(tmp_path / "ts.pt", optimizer=opt, step=4, rng_state=state, extra={"epoch": 2})
    _draws()
    payload = load_train_state(tmp_path / "ts.pt", optimizer=opt)
    assert payload["step"] == 4 and payload["extra"] == {"epoch": 2}
    assert _draws() == first
    assert torch.load(tmp_path / "ts.pt", weights_only=True)["format"] == "sepo-train-state"


def _train(model, opt, sched, ema, steps, data):
    for _ in range(steps):
        x0 = data[torch.randint(0, data.shape[0], (4,))]
        loss = diffusion_loss(model, x0).mean()  # noise levels and masks from the global torch RNG
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema.update(model)


def _setup(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    return opt, sched, EMA(model, decay=0.8)


def test_resume_is_exact(tmp_path):
    data = torch.randint(0, 4, (16, 10), generator=torch.Generator().manual_seed(0))
    cfg = dict(CNN, dropout=0.2)  # dropout consumes the torch RNG too

    torch.manual_seed(0)
    straight = build_model(ModelConfig(**cfg)).train()
    opt, sched, ema = _setup(straight)
    _train(straight, opt, sched, ema, 6, data)

    torch.manual_seed(0)
    first = build_model(ModelConfig(**cfg)).train()
    opt, sched, ema = _setup(first)
    _train(first, opt, sched, ema, 3, data)
    save_model(tmp_path / "run", first, ema_state=ema)
    save_train_state(tmp_path / "run" / "train_state.pt", optimizer=opt, scheduler=sched, step=3, ema=ema)
    torch.manual_seed(12345)  # anything the interrupted process did afterwards must not matter
    del first, opt, sched, ema

    resumed, _ = load_model(tmp_path / "run", use_ema=False)
    resumed.train()
    opt, sched, ema = _setup(resumed)
    payload = load_train_state(tmp_path / "run" / "train_state.pt", optimizer=opt, scheduler=sched, ema=ema)
    assert payload["step"] == 3 and sched.last_epoch == 3
    _train(resumed, opt, sched, ema, 3, data)

    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    assert ema.num_updates == 6


def test_train_state_errors(tmp_path):
    model = make()
    opt = torch.optim.Adam(model.parameters())
    one_line_error(lambda: load_train_state(tmp_path / "missing.pt", optimizer=opt), "not found")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    one_line_error(lambda: load_train_state(tmp_path / "junk.pt", optimizer=opt), "unreadable", "corrupt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    one_line_error(lambda: load_train_state(tmp_path / "other.pt", optimizer=opt), "not a sepo training state")
    save_train_state(tmp_path / "ts.pt", optimizer=opt, step=1)
    other_opt = torch.optim.Adam(list(make(DIT).parameters()))
    one_line_error(lambda: load_train_state(tmp_path / "ts.pt", optimizer=other_opt), "does not fit the current optimizer")
    one_line_error(lambda: load_train_state(tmp_path / "ts.pt", optimizer=opt, ema=EMA(model)), "has no ema state")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_load_and_rng_state(tmp_path):
    model = make(DIT)
    save_model(tmp_path / "m", model)
    on_gpu, _ = load_model(tmp_path / "m", device="cuda")
    x = torch.randint(0, 5, (3, 10))
    with torch.no_grad():
        cpu = model.raw(x, torch.tensor([0.1, 0.5, 0.9]))
        gpu = on_gpu.raw(x.cuda(), torch.tensor([0.1, 0.5, 0.9], device="cuda"))
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-3)
    state = capture_rng_state()
    assert "cuda" in state
    first = torch.rand(4, device="cuda")
    restore_rng_state(state)
    assert torch.equal(torch.rand(4, device="cuda"), first)
