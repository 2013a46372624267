"""Pretraining, its configuration, exact resume, the NELBO evaluator and k-mer statistics.

A small task (real DHS sequences cut to 16 bp, a 2-layer CNN of width 16) keeps every run to seconds.
"""

from __future__ import annotations

import collections
import itertools
import math
import random

import pytest
import torch
import yaml

from sepo.diffusion import DiffusionModel, make_process
from sepo.errors import CheckpointError, ConfigError
from sepo.models import load_model, load_train_state
from sepo.tasks.dna.kmers import kmer_correlation, kmer_counts, kmer_index, kmer_names, pearson
from sepo.train import PretrainConfig, TaskSpec, get_task, pretrain, register_task, resolve_config
from sepo.train.evaluate import nelbo_per_sequence, stratified_times, summarize_nelbo
from sepo.train.pretrain import BatchStream, lr_factor, run_status
from sepo.train.tasks import DNA_PRESETS
from sepo.utils.logging import read_jsonl

MINI_LEN = 16


def _mini_split(role: str) -> torch.Tensor:
    full = get_task("dna").load_split(role)
    n = {"train": 1024, "validation": 256, "test": 64}[role]
    return full[:n, :MINI_LEN].clone()


MINI_TASK = TaskSpec(
    name="dna-mini",
    description="first 16 bp of DHS sites (tests only)",
    vocab={"alphabet": "ACGT"},
    vocab_size=4,
    length=MINI_LEN,
    unit="base",
    load_split=_mini_split,
    presets={"tiny": {"model": "dna-tiny",
                      "model_overrides": {"length": MINI_LEN, "hidden": 16, "n_stacks": 1, "dilations": [1, 2]},
                      "steps": 6, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "ema_decay": 0.9, "eval_every": 3,
                      "val_size": 32, "val_draws": 1, "log_every": 1, "checkpoint_every": 2, "num_threads": 1}},
    write_samples=get_task("dna").write_samples,
    read_samples=get_task("dna").read_samples,
    encode_prefix=get_task("dna").encode_prefix,
)
register_task(MINI_TASK)


def mini_config(**overrides) -> PretrainConfig:
    return resolve_config(task="dna-mini", preset="tiny", overrides=overrides)


# ------------------------------------------------------------------------------------------ k-mers
def test_kmer_counts_match_brute_force_and_skip_invalid_windows():
    rng = random.Random(0)
    seqs = [[rng.randrange(4) for _ in range(23)] for _ in range(7)]
    seqs[2][5] = 4  # a mask token: the 3 windows through it are not counted
    tokens = torch.tensor(seqs)
    for k in (1, 2, 3):
        expected = collections.Counter()
        for s in seqs:
            for i in range(len(s) - k + 1):
                w = tuple(s[i:i + k])
                if all(0 <= v < 4 for v in w):
                    expected[w] += 1
        counts = kmer_counts(tokens, k)
        assert counts.shape == (4**k,)
        for idx, w in enumerate(itertools.product(range(4), repeat=k)):
            assert counts[idx] == expected[w]
    assert int(kmer_counts(tokens, 3).sum()) == 7 * 21 - 3


def test_kmer_names_order_and_hand_example():
    # "ACGTA": AC, CG, GT, TA once each
    counts = kmer_counts(torch.tensor([[0, 1, 2, 3, 0]]), 2)
    names = kmer_names(2)
    assert {names[i] for i in counts.nonzero().flatten().tolist()} == {"AC", "CG", "GT", "TA"}
    assert kmer_index(torch.tensor([[3, 3, 3]]), 3).item() == 63 and names[0] == "AA"


def test_pearson_hand_values():
    assert pearson(torch.tensor([1.0, 2, 3]), torch.tensor([2.0, 4, 6])) == pytest.approx(1.0)
    assert pearson(torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1])) == pytest.approx(-1.0)
    # x = (1, 2, 3, 4), y = (1, 3, 2, 4): cov = 4, var_x = var_y = 5 -> r = 0.8
    assert pearson(torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 3, 2, 4])) == pytest.approx(0.8)
    assert math.isnan(pearson(torch.ones(3), torch.tensor([1.0, 2, 3])))


def test_kmer_correlation_real_vs_shuffled_dna():
    test = get_task("dna").load_split("test")[:400]
    assert kmer_correlation(test, test) == pytest.approx(1.0)
    # another split of the same kind of DNA correlates highly; iid uniform bases do not
    assert kmer_correlation(get_task("dna").load_split("validation")[:400], test) > 0.95
    uniform = torch.randint(0, 4, (400, 200), generator=torch.Generator().manual_seed(0))
    assert kmer_correlation(uniform, test) < 0.5


# --------------------------------------------------------------------------------------- evaluator
def test_stratified_times_are_evenly_spaced_per_sequence():
    t = stratified_times(50, 4, generator=torch.Generator().manual_seed(0), t_min=1e-4)
    assert t.shape == (4, 50) and float(t.min()) >= 1e-4 and float(t.max()) <= 1.0
    u = (t - 1e-4) / (1 - 1e-4)
    gaps = torch.sort(u, dim=0).values.diff(dim=0)
    assert torch.allclose(gaps, torch.full_like(gaps, 0.25), atol=1e-5)


class _ConstantNet(torch.nn.Module):
    """Logits 0 everywhere: the SUBS denoiser is uniform over the 4 bases whatever the input."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, sigma_bar):
        return torch.zeros(*x.shape, 5) + 0 * self.dummy


def test_nelbo_of_a_uniform_denoiser_is_two_bits_per_base():
    """For a context-free uniform denoiser the NELBO integrand has the same expectation at every noise
    level: E[w(t) #masked] log 4 = (-alpha'_t / (1 - alpha_t)) (1 - alpha_t) L log 4 = (1 - eps) L log 4
    for the log-linear schedule, i.e. 2 (1 - eps) bits per base."""
    model = DiffusionModel(_ConstantNet(), make_process("masked", 4, "loglinear", eps=1e-3))
    x0 = torch.randint(0, 4, (1000, 50), generator=torch.Generator().manual_seed(1))
    per_seq = nelbo_per_sequence(model, x0, draws=16, batch_size=500, generator=torch.Generator().manual_seed(2))
    summary = summarize_nelbo(per_seq, length=50, unit="base")
    assert summary["num_sequences"] == 1000
    assert summary["bits_per_base"] == pytest.approx(2.0 * (1 - 1e-3), abs=4 * summary["bits_per_base_stderr"] + 1e-3)
    assert summary["bits_per_base_stderr"] < 0.007
    assert summary["nelbo_nats_per_seq"] == pytest.approx(summary["bits_per_base"] * 50 * math.log(2))


# ------------------------------------------------------------------------------------ configuration
def test_resolve_config_priority_preset_file_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 11\nlr: 1e-4\nmodel_overrides: {hidden: 24}\n")
    cfg = resolve_config(task="dna", preset="tiny", config_file=f, overrides={"lr": 5e-4, "seed": None})
    assert cfg.steps == 11 and cfg.lr == 5e-4 and cfg.model_overrides == {"hidden": 24}
    assert cfg.batch_size == DNA_PRESETS["tiny"]["batch_size"] and cfg.preset == "tiny" and cfg.seed == 0
    assert resolve_config(task="dna", preset="full").model == "dna-full"


@pytest.mark.parametrize("text, message", [
    ("stepz: 3\n", "unknown field 'stepz' (did you mean 'steps'?)"),
    ("steps: many\n", "steps: expected an integer"),
    ("lr: -1\n", "lr must be > 0"),
    ("process: absorbing\n", "process: 'absorbing' is not one of"),
])
def test_bad_config_fields_are_one_line_errors(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match="bad.yaml") as e:
        resolve_config(task="dna", config_file=f)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_shipped_yaml_configs_equal_the_presets():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    for preset in ("tiny", "full"):
        path = root / f"pretrain_dna_{preset}.yaml"
        assert resolve_config(task="dna", preset="tiny", config_file=path) == resolve_config(task="dna", preset=preset)
        assert yaml.safe_load(path.read_text())["preset"] == preset


def test_tasks_unknown_and_not_yet_available():
    with pytest.raises(ConfigError, match="unknown task 'protein'"):
        get_task("protein")
    try:
        get_task("text")
    except ConfigError as e:
        assert "not available yet" in str(e)
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        resolve_config(task="dna", preset="huge")


def test_lr_schedule_warmup_then_cosine_to_floor():
    cfg = PretrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert [lr_factor(s, cfg) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.55)  # half-way through the cosine: (1 + 0.1) / 2
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    const = PretrainConfig(steps=110, warmup_steps=10, lr_schedule="constant")
    assert lr_factor(50, const) == 1.0


def test_batch_stream_covers_each_epoch_and_replays_from_state():
    s = BatchStream(10, 3, seed=0)
    epoch = torch.cat([s.next() for _ in range(3)])
    assert len(set(epoch.tolist())) == 9  # 3 full batches, no repeats, the remainder dropped
    state = s.state_dict()
    ahead = [s.next() for _ in range(5)]
    t = BatchStream(10, 3, seed=123)
    t.load_state_dict(state)
    assert all(torch.equal(a, t.next()) for a in ahead)


# ------------------------------------------------------------------------------------------ training
def _params_of(out):
    state = load_train_state(out / "train_state.pt", restore_rng=False)
    return state["extra"]["model"], state["ema"]["shadow"], state["step"]


def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path):
    cfg = mini_config()
    straight = tmp_path / "straight"
    pretrain(cfg, straight, progress=False)

    broken = tmp_path / "broken"

    def interrupt(step):
        if step == 3:  # after the checkpoint of step 2 and one more step that is lost
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, broken, progress=False, on_step=interrupt)
    assert run_status(broken)[:2] == ("unfinished", 2)
    with pytest.raises(ConfigError, match="unfinished run .*--resume"):
        pretrain(cfg, broken, progress=False)
    pretrain(cfg, broken, resume=True, progress=False)

    p1, e1, s1 = _params_of(straight)
    p2, e2, s2 = _params_of(broken)
    assert s1 == s2 == cfg.steps
    assert p1.keys() == p2.keys() and all(torch.equal(p1[k], p2[k]) for k in p1)
    assert all(torch.equal(e1[k], e2[k]) for k in e1)
    # the logs hold each step once, as if never interrupted
    steps_logged = [r["step"] for r in read_jsonl(broken / "metrics.jsonl") if "train_loss" in r]
    assert steps_logged == list(range(1, cfg.steps + 1))
    # the out dir is a model directory whose EMA weights are the EMA shadow
    model, info = load_model(broken)
    assert info["used_ema"] and info["provenance"]["task"] == "dna-mini" and info["provenance"]["step"] == cfg.steps
    for name, value in model.net.state_dict().items():
        assert torch.equal(value, e2["net." + name])
    assert (broken / "loss.png").stat().st_size > 0 and (broken / "tb").is_dir()


def test_finished_run_is_not_overwritten_without_force(tmp_path):
    cfg = mini_config(steps=2)
    out = tmp_path / "run"
    pretrain(cfg, out, progress=False)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="finished run .*--force"):
        pretrain(cfg, out, progress=False)
    assert (out / "model.safetensors").read_bytes() == before
    summary = pretrain(cfg, out, resume=True, progress=False)  # nothing left to do
    assert summary["steps"] == 2 and (out / "model.safetensors").read_bytes() == before
    (out / "notes.txt").write_text("mine")
    pretrain(mini_config(steps=2, seed=5), out, force=True, progress=False)
    assert (out / "model.safetensors").read_bytes() != before and (out / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="lr differs"):
        pretrain(mini_config(steps=2, seed=5, lr=1.0), out, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        pretrain(cfg, tmp_path / "empty", resume=True, progress=False)


def test_training_lowers_validation_nelbo(tmp_path):
    kw = dict(eval_every=0, checkpoint_every=0, log_every=40, val_size=0, val_draws=4, batch_size=32, warmup_steps=5)
    init = pretrain(mini_config(steps=1, lr=1e-9, **kw), tmp_path / "init", progress=False)
    summary = pretrain(mini_config(steps=120, lr=1e-2, **kw), tmp_path / "run", progress=False)
    # both are validated with the same noise draws, so the difference is the model's doing: an
    # untrained net is a uniform guess (2 bits/base); 120 steps learn composition and short motifs
    assert init["val_bits_per_base"] - summary["val_bits_per_base"] > 0.025
    train = [r["train_bits_per_base"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "train_bits_per_base" in r]
    assert train[-1] < train[0]


def test_uniform_process_trains_with_score_entropy(tmp_path):
    out = tmp_path / "uniform"
    summary = pretrain(mini_config(process="uniform", steps=2), out, progress=False)
    model, info = load_model(out)
    assert model.process.kind == "uniform" and model.parameterization == "denoiser" and model.time_conditioned
    assert math.isfinite(summary["val_bits_per_base"]) and summary["val_bits_per_base"] > 0


def test_run_stopped_before_its_first_checkpoint(tmp_path):
    def interrupt(step):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        pretrain(mini_config(), out, progress=False, on_step=interrupt)
    assert run_status(out)[0] == "unstarted"
    with pytest.raises(ConfigError, match="before its first checkpoint; pass --force"):
        pretrain(mini_config(), out, progress=False)
    with pytest.raises(CheckpointError, match="before its first checkpoint"):
        pretrain(mini_config(), out, resume=True, progress=False)


def test_divergence_stops_before_a_checkpoint_is_written(tmp_path, monkeypatch):
    import importlib

    from sepo.train import TrainingError

    pretrain_module = importlib.import_module("sepo.train.pretrain")  # (sepo.train.pretrain is also the function)

    real_loss = pretrain_module.diffusion_loss
    monkeypatch.setattr(pretrain_module, "diffusion_loss", lambda *a, **k: real_loss(*a, **k) * float("nan"))
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="diverged by step 2 .*lower --lr"):
        pretrain(mini_config(log_every=5), out, progress=False)  # step 2 is the first checkpoint
    assert not (out / "train_state.pt").exists() and not (out / "model.safetensors").exists()
