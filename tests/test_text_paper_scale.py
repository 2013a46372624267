"""The paper-scale language path on small look-alikes written here: a Hugging Face GPT-2 sequence classifier as
the reward, the "Human: … Assistant:" format, configs/sedd_hh.yaml, a SEDD checkpoint with the GPT-2
vocabulary fine-tuned end to end, and the cost of the ``sepo`` estimator at |V| = 50,258.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sepo import cli
from sepo.errors import CheckpointError, ConfigError
from sepo.models import ModelConfig, build_model
from sepo.rl.estimators import SepoEstimator
from sepo.rl.rollout import Rollout
from sepo.diffusion import SamplerConfig
from sepo.tasks.text.finetune import hh_format, text_options, text_reward
from sepo.tasks.text.tokenizer import GPT2_VOCAB_SIZE, SEDD_MASK_ID, gpt2_tokenizer

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers", reason="the hf extra (pip install 'sepo[hf]') is not installed")


@pytest.fixture(scope="module")
def gpt2_classifier(tmp_path_factory, transformers):
    """A tiny random GPT-2-architecture classifier (1 layer, width 16) with the real GPT-2 tokenizer, saved locally."""
    from sepo.tasks.text import assets

    d = tmp_path_factory.mktemp("gpt2-reward")
    encoder, merges = assets.gpt2_files()
    tok = transformers.GPT2TokenizerFast(vocab=str(encoder), merges=str(merges))
    assert tok("hello world")["input_ids"] == [31373, 995]  # the exact GPT-2 ids
    tok.save_pretrained(str(d))
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=128, vocab_size=GPT2_VOCAB_SIZE,
                                  num_labels=1, pad_token_id=50256)
    model = transformers.GPT2ForSequenceClassification(cfg).eval()
    model.save_pretrained(str(d))
    return d, tok, model


def test_hh_prompt_format():
    assert hh_format("How do I bake bread?") == "\n\nHuman: How do I bake bread?\n\nAssistant:"
    assert hh_format(" Hi ", "Hello there. ") == "\n\nHuman: Hi\n\nAssistant: Hello there."


def test_hf_reward_matches_an_unbatched_forward(gpt2_classifier):
    from sepo.tasks.text.hf_reward import HFRewardModel

    d, tok, model = gpt2_classifier
    texts = [hh_format("Is the weather nice?", "Yes, it is a lovely sunny day."), "short", hh_format("Why?"),
             "A much longer text " * 5]
    reward = HFRewardModel(d, batch_size=3, max_length=64)
    got = reward(texts)
    with torch.no_grad():  # one text at a time: no padding at all
        want = torch.stack([model(**tok(t, return_tensors="pt")).logits[0, 0] for t in texts])
    assert got.shape == (4,) and torch.allclose(got, want, atol=1e-5)
    assert reward.role == "reward" and reward.provenance["architecture"] == "GPT2ForSequenceClassification"
    # through token ids of the GPT-2 BPE (the SEDD vocabulary): decode, then score
    g2 = gpt2_tokenizer()
    ids = g2.encode_batch(texts[:2], 24)
    on_ids = text_reward(f"hf:{d}", g2, batch_size=2, max_length=64)(ids)
    assert torch.allclose(on_ids, reward(g2.decode_batch(ids)), atol=1e-6)


def test_hf_reward_errors_are_one_line(tmp_path, gpt2_classifier, transformers):
    from sepo.tasks.text.hf_reward import HFRewardModel

    with pytest.raises(CheckpointError, match="no Hugging Face model"):
        HFRewardModel(tmp_path / "absent")
    d, tok, _ = gpt2_classifier
    two = tmp_path / "two-labels"
    tok.save_pretrained(str(two))
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=64, vocab_size=GPT2_VOCAB_SIZE, num_labels=2)
    transformers.GPT2ForSequenceClassification(cfg).save_pretrained(str(two))
    with pytest.raises(ConfigError, match="has 2 outputs; pass label=K"):
        HFRewardModel(two)
    assert HFRewardModel(two, label=1)(["good"]).shape == (1,)


# ------------------------------------------------------------------------------------------ configs/sedd_hh.yaml
def _sedd_yaml():
    from sepo.utils.config import load_yaml

    return dict(load_yaml(ROOT / "configs" / "sedd_hh.yaml"))


def test_sedd_hh_config_is_valid_and_states_the_paper_setup():
    from sepo.rl.recipes import finetune_config

    data = _sedd_yaml()
    options = text_options(data.pop("text"))
    cfg = finetune_config("text", "tiny", yaml_data=data)
    assert cfg.max_steps == 7000 and cfg.sampling_steps == 128 and cfg.estimator == "sepo" and cfg.device == "cuda"
    assert options.eval_sampling_steps == [128, 1024] and options.eval_prompts == 153
    assert options.prompt_format == "hh" and options.reward.startswith("hf:")


def test_finetune_with_sedd_config_and_no_weights_fails_in_one_line(capsys, tmp_path):
    code = cli.main(["finetune", "--task", "text", "--base", str(tmp_path / "sedd-medium"), "--config",
                     str(ROOT / "configs" / "sedd_hh.yaml"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "SEDD Medium weights" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs" / "sedd_hh.yaml").read_text().replace("sampling_steps: 128", "sampling_step: 128"))
    code = cli.main(["finetune", "--task", "text", "--base", str(tmp_path), "--config", str(bad), "--out", str(tmp_path / "run")])
    assert code == 2 and "did you mean 'sampling_steps'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ SEDD look-alike, end to end
_SEPO_TO_SEDD = [("embed.weight", "vocab_embed.embedding"), ("noise_embed.mlp", "sigma_map.mlp"),
                 ("norm_attn", "norm1"), ("qkv", "attn_qkv"), ("proj", "attn_out"), ("norm_mlp", "norm2"),
                 ("fc1", "mlp.0"), ("fc2", "mlp.2"), ("output.norm", "output_layer.norm_final"),
                 ("output.linear", "output_layer.linear"), ("output.modulation", "output_layer.adaLN_modulation"),
                 ("modulation", "adaLN_modulation")]


def write_sedd_lookalike(d: Path) -> None:
    """A 1-block, width-16 SEDD checkpoint over the GPT-2 vocabulary (mask 50257), in SEDD's published layout."""
    cfg = ModelConfig(backbone="dit", process="masked", parameterization="score", vocab_size=GPT2_VOCAB_SIZE, length=48,
                      hidden=16, n_layers=1, n_heads=2, cond_dim=16, time_conditioned=True, scale_by_sigma=True)
    torch.manual_seed(1)
    state = {}
    for key, value in build_model(cfg).net.state_dict().items():
        for a, b in _SEPO_TO_SEDD:
            if a in key:
                key = key.replace(a, b)
                break
        state[key] = value + 0.1 * torch.randn_like(value)
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({
        "tokens": GPT2_VOCAB_SIZE, "graph": {"type": "absorb"}, "noise": {"type": "loglinear"},
        "model": {"type": "ddit", "hidden_size": 16, "cond_dim": 16, "length": 48, "n_blocks": 1, "n_heads": 2,
                  "scale_by_sigma": True, "dropout": 0.1}}))
    torch.save(state, d / "pytorch_model.bin")


def test_sedd_lookalike_finetunes_with_an_hf_reward_on_hh_prompts(tmp_path, gpt2_classifier):
    from sepo.rl.recipes import finetune_config
    from sepo.tasks.text.finetune import finetune_text

    base = tmp_path / "sedd"
    write_sedd_lookalike(base)
    (tmp_path / "prompts.txt").write_text("What is a good name for a cat?\nHow do I boil an egg?\n")
    d, _, _ = gpt2_classifier
    data = _sedd_yaml()
    section = data.pop("text")
    section.update(reward=f"hf:{d}", prompts_file=str(tmp_path / "prompts.txt"), eval_prompts_file=str(tmp_path / "prompts.txt"),
                   eval_prompts=2, eval_sampling_steps=[2, 3], sequence_length=24, reward_max_length=64)
    options = text_options(section)
    data.update(device="cpu", max_steps=1, num_groups=2, num_generations=2, sampling_steps=3, sepo_positions=2,
                kl_truncation_steps=2, kl_sample_steps=1, rollout_batch_size=None, warmup_steps=0)
    cfg = finetune_config("text", "tiny", yaml_data=data)
    summary = finetune_text(cfg, out=tmp_path / "run", base=base, options=options, progress=False)
    assert summary["iterations"] == 1 and summary["reward"] == f"hf:{d.name}"
    assert [e["sampling_steps"] for e in summary["evaluation"]] == [2, 3]
    examples = summary["evaluation"][0]["examples"]
    assert [e["prompt"] for e in examples] == [hh_format("What is a good name for a cat?"), hh_format("How do I boil an egg?")]
    assert all(e["finetuned"].startswith(e["prompt"]) and e["pretrained"].startswith(e["prompt"]) for e in examples)
    from sepo.models import load_model

    model, info = load_model(tmp_path / "run" / "model")
    assert info["vocab"]["tokenizer"] == "gpt2" and model.vocab_size == GPT2_VOCAB_SIZE
    assert "task" not in info["provenance"]  # a GPT-2 model is not the corpus-BPE `text` task


# ------------------------------------------------------------------------------------------ sepo estimator cost
@pytest.mark.parametrize("process", ["masked", "uniform"])
def test_sepo_estimator_costs_one_pass_per_scored_unit_at_gpt2_vocabulary(process):
    """|V| = 50,257 tokens + mask = 50,258 states: the estimator's passes do not grow with |V|."""
    counts = {}
    for vocab in (5, GPT2_VOCAB_SIZE):
        cfg = ModelConfig(backbone="dit", process=process, parameterization="subs" if process == "masked" else "denoiser",
                          vocab_size=vocab, length=8, hidden=16, n_layers=1, n_heads=2, cond_dim=16,
                          time_conditioned=process == "uniform")
        torch.manual_seed(0)
        model = build_model(cfg)
        if process == "masked":
            assert model.num_states == (SEDD_MASK_ID + 1 if vocab == GPT2_VOCAB_SIZE else vocab + 1)
        x = torch.randint(0, vocab, (3, 8), generator=torch.Generator().manual_seed(1))
        fixed = torch.zeros(3, 8, dtype=torch.bool)
        fixed[:, :2] = True  # a 2-token prompt: 6 scored positions per sample
        ro = Rollout(x, 1, 3, SamplerConfig(steps=2), [], fixed=fixed, fixed_tokens=x)
        est = SepoEstimator(positions=None)
        est.draw(model, ro, torch.Generator().manual_seed(0))
        before = model.network_passes
        units = est.log_probs(model, ro, torch.arange(3))
        counts[vocab] = model.network_passes - before
        if process == "masked":  # each unit is log D(x with position i masked)_{i, x_i}, one masked position per pass
            pos = ro.aux["sepo_positions"]
            with torch.no_grad():
                for r in range(3):
                    for k in range(pos.shape[1]):
                        i = int(pos[r, k])
                        xm = x[r:r + 1].clone()
                        xm[0, i] = model.process.mask_id
                        ld = model.log_denoiser(xm, torch.zeros(1))[0, i, x[r, i]]
                        assert torch.allclose(units.logp[r, k], ld, atol=1e-5)
            assert set(pos.flatten().tolist()) <= set(range(2, 8))
    expected = 3 * 6 if process == "masked" else 3  # masked: per scored position; uniform: one pass per sample
    assert counts == {5: expected, GPT2_VOCAB_SIZE: expected}
