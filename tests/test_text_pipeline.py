"""The text task end to end at toy scale: data rows, prompted completion with every sampler (masked and
uniform), the Kneser–Ney fluency model (hand-computed values), pretrain -> eval -> sample through the CLI,
fine-tuning with GRPO groups = completions of one prompt, and the benchmark's statistics.

Models are 1-layer DiTs of width 32 over the real 2,048-token corpus BPE; runs take a few steps.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from sepo import cli
from sepo.diffusion import SamplerConfig, prefix_constraint, sample
from sepo.errors import ConfigError, DataError
from sepo.models import build_model, load_model, preset_config
from sepo.tasks.text.corpus import load_corpus, make_prompts
from sepo.tasks.text.lm_baseline import KneserNeyLM
from sepo.tasks.text.pretrain import (TASK, TEXT_LENGTH, distinct_n, load_text_split, nelbo_report, real_lengths,
                                      text_tokenizer)

torch.set_num_threads(1)

TINY_NET = dict(hidden=32, n_layers=1, n_heads=2, cond_dim=16, length=TEXT_LENGTH)
TINY_RUN = ("model_overrides: {hidden: 32, n_layers: 1, n_heads: 2, cond_dim: 16, length: 32}\n"
            "steps: 3\nbatch_size: 8\nwarmup_steps: 1\nval_size: 16\nval_draws: 1\neval_every: 0\n"
            "checkpoint_every: 0\nlog_every: 1\nnum_threads: 1\n")


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *fragments):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def tok():
    return text_tokenizer()


def tiny_model(process: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(preset_config("text-tiny", process=process, **TINY_NET))
    with torch.no_grad():  # random, non-trivial outputs (the zero-initialised read-out would give uniform logits)
        for p in model.net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


# ------------------------------------------------------------------------------------------ data rows
def test_rows_are_whole_sentences_then_eos_padding(tok):
    rows = load_text_split("validation")
    sentences = set(load_corpus("validation"))
    assert rows.shape[1] == TEXT_LENGTH and 500 < rows.shape[0] < len(sentences)
    for row in rows[:200]:
        n = int(real_lengths(row[None], tok.eos_id)[0])
        assert (row[n - 1:] == tok.eos_id).all() and (row[: n - 1] != tok.eos_id).all()  # text, eos, padding
        assert tok.decode(row) in sentences
    with pytest.raises(DataError, match="unknown split"):
        load_text_split("dev")


def test_sample_files_round_trip_and_bad_prefixes(tmp_path, tok):
    rows = load_text_split("test")[:5]
    TASK.write_samples(tmp_path / "s.txt", rows)
    lines = (tmp_path / "s.txt").read_text().splitlines()
    assert lines == [tok.decode(r) for r in rows]
    assert torch.equal(TASK.read_samples(tmp_path / "s.txt"), rows)  # corpus rows are canonical BPE
    assert TASK.encode_prefix("  The jury said ").tolist() == tok.encode("The jury said")
    with pytest.raises(DataError, match="empty"):
        TASK.encode_prefix("   ")
    with pytest.raises(DataError, match="at most 31"):
        TASK.encode_prefix("word " * 40)
    (tmp_path / "long.txt").write_text("ok\n" + "word " * 80 + "\n")
    with pytest.raises(DataError, match="long.txt:2"):
        TASK.read_samples(tmp_path / "long.txt")
    # a model's own sample can re-encode a little past the window (non-canonical segmentation): kept, cut, warned
    (tmp_path / "over.txt").write_text("ok\n" + "word " * 33 + "\n")
    assert len(tok.encode("word " * 33)) > 32
    with pytest.warns(UserWarning, match="line 2"):
        got = TASK.read_samples(tmp_path / "over.txt")
    assert got.shape == (2, 32) and (got[1] != tok.eos_id).all()


def test_distinct_n_lengths_and_perplexity_bound_by_hand():
    x = torch.tensor([[5, 6, 5, 6, 0, 0], [5, 6, 7, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    assert real_lengths(x, 0).tolist() == [5, 4, 6]
    # bigrams before eos: (5,6),(6,5),(5,6) | (5,6),(6,7) | (1,2),(2,3),(3,4),(4,5),(5,6) -> 7 distinct of 10
    assert distinct_n(x, 2, eos_id=0) == pytest.approx(7 / 10)
    assert distinct_n(x, 1, eos_id=0) == pytest.approx(7 / 13)
    assert distinct_n(x, 2, eos_id=0, start=2) == pytest.approx(3 / 4)  # (5,6) | none | (3,4),(4,5),(5,6)
    rep = nelbo_report(x, torch.tensor([10.0, 20.0, 30.0]), eos_id=0)
    assert rep["perplexity_bound"] == pytest.approx(math.exp(60.0 / 15.0))


# ------------------------------------------------------------------------------------------ Kneser-Ney
def test_kneser_ney_matches_hand_computed_values():
    # corpus: [1 2], [1 3], [2]; eos 0, bos 4; bigrams (4,1)x2 (1,2) (2,0)x2 (1,3) (3,0) (4,2)
    lm = KneserNeyLM(vocab_size=4, eos_id=0, order=2).fit([[1, 2], [1, 3], [2]])
    # continuation counts: 0:2, 1:1, 2:2, 3:1 (6 in all, 4 types); D1 = 2/(2+2*2) = 1/3; D2 = 4/(4+2*2) = 1/2
    assert lm.discounts == pytest.approx([1 / 3, 1 / 2])
    assert [lm.prob(w, [0]) for w in range(4)] == pytest.approx([1 / 3, 1 / 6, 1 / 3, 1 / 6])  # (0,) unseen: unigrams
    # sentence start, context (bos,): (bos,1) x2, (bos,2) x1 -> 3 in all, 2 types
    assert [lm.prob(w, []) for w in range(4)] == pytest.approx([1 / 9, 1.5 / 3 + 1 / 18, 0.5 / 3 + 1 / 9, 1 / 18])
    assert lm.prob(2, [1]) == pytest.approx(0.5 / 2 + 0.5 * 2 / 2 * (1 / 3))  # 5/12
    assert lm.prob(0, [1]) == pytest.approx(0.5 * (1 / 3))
    assert lm.prob(1, [3, 0]) == pytest.approx(1 / 6)  # context (0,) never seen: the unigram estimate
    lp, n = lm.sequence_log_prob([1, 2, 0, 3], start=1)
    assert n == 2 and lp == pytest.approx(math.log(5 / 12) + math.log(lm.prob(0, [2])))


def test_kneser_ney_is_normalised_for_every_context():
    g = torch.Generator().manual_seed(0)
    sents = [torch.randint(1, 12, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist() for _ in range(60)]
    lm = KneserNeyLM(vocab_size=14, eos_id=0, order=3).fit(sents)  # tokens 12, 13 never occur
    for hist in ([], [3], [3, 5], sents[0][:2], [13, 12], [0, 0]):
        assert sum(lm.prob(w, hist) for w in range(14)) == pytest.approx(1.0, abs=1e-12)
    seen = torch.tensor([s + [0] * (10 - len(s)) for s in sents[:20]])
    scrambled = torch.randint(1, 14, (20, 10), generator=g)
    assert lm.perplexity(seen) < 0.5 * lm.perplexity(scrambled)


# ------------------------------------------------------------------------------------------ prompted completion
@pytest.mark.parametrize("process, samplers", [
    ("masked", ["ancestral", "ancestral_cached", "analytic", "euler", "tau_leaping"]),
    ("uniform", ["ancestral", "analytic", "euler", "tau_leaping"]),
])
def test_every_sampler_keeps_held_out_prompts_fixed(process, samplers, tok):
    model = tiny_model(process)
    prompts = make_prompts(3, 5, tok, seed=1)
    assert all(s.startswith(p) for p, s in zip(prompts.texts, prompts.sentences))
    fixed, tokens = prefix_constraint(prompts.ids.repeat_interleave(2, 0), 6, TEXT_LENGTH)
    for name in samplers:
        for corrector in ([0, 1] if name == "euler" else [0]):
            cfg = SamplerConfig(name=name, steps=4, corrector_steps=corrector)
            out = sample(model, num_samples=6, length=TEXT_LENGTH, config=cfg, fixed=fixed, fixed_tokens=tokens,
                         generator=torch.Generator().manual_seed(0)).x
            assert torch.equal(out[:, :5], prompts.ids.repeat_interleave(2, 0)), (name, corrector)
            assert ((out >= 0) & (out < tok.vocab_size)).all()
            assert not torch.equal(out[0, 5:], out[1, 5:]) or not torch.equal(out[2, 5:], out[3, 5:])  # it samples
            texts = tok.decode_batch(out)
            assert all(t.startswith(p) for t, p in zip(texts, [p for p in prompts.texts for _ in range(2)]))


@pytest.mark.parametrize("process", ["masked", "uniform"])
def test_min_new_tokens_forbids_early_eos_and_nothing_else(process, tok):
    from sepo.tasks.text.finetune import unwrap, with_min_new_tokens

    model = tiny_model(process, seed=2)
    with torch.no_grad():  # make eos likely everywhere, so that the constraint has something to forbid
        model.net.output.linear.weight.mul_(0.05)  # milder logits (std ~0.3) ...
        model.net.output.linear.bias[tok.eos_id] += 8.0  # ... and eos the likeliest token (p ~ 0.6)
    wrapped = with_min_new_tokens(model, eos_id=tok.eos_id, prompt_lengths=[5], min_new_tokens=6)
    # prompts of 3 and 5 tokens: eos blocked from the end of the shorter to 6 positions past the longer, so the
    # completion of *each* prompt has >= 6 tokens (the first version blocked 3..8 only: 4 tokens after the 5-token one)
    spread = with_min_new_tokens(model, eos_id=tok.eos_id, prompt_lengths=[5, 3, 5], min_new_tokens=6)
    assert spread.net.blocked.nonzero().squeeze(-1).tolist() == list(range(3, 11))
    assert unwrap(wrapped).net is model.net and set(dict(wrapped.named_parameters())) == {f"net.inner.{k}" for k, _ in model.net.named_parameters()}
    x = torch.randint(1, tok.vocab_size, (4, TEXT_LENGTH), generator=torch.Generator().manual_seed(0))
    if process == "masked":
        x[:, 8:] = model.process.mask_id
    t = torch.full((4,), 0.5)
    with torch.no_grad():
        plain, blocked = model.log_denoiser(x, t).exp(), wrapped.log_denoiser(x, t).exp()
    free = [i for i in range(TEXT_LENGTH) if not 5 <= i < 11]
    assert torch.allclose(plain[:, free], blocked[:, free], atol=1e-6)
    if process == "masked":
        assert (blocked[:, 8:11, tok.eos_id] < 1e-15).all() and (plain[:, 8:11, tok.eos_id] > 0.01).all()
        renorm = plain[:, 8:11] / (1 - plain[:, 8:11, tok.eos_id:tok.eos_id + 1])
        renorm[..., tok.eos_id] = 0
        assert torch.allclose(blocked[:, 8:11], renorm, atol=1e-5)
    fixed, tokens = prefix_constraint(x[:, :5], 4, TEXT_LENGTH)
    out = sample(wrapped, num_samples=4, length=TEXT_LENGTH, config=SamplerConfig(name="ancestral", steps=6),
                 fixed=fixed, fixed_tokens=tokens, generator=torch.Generator().manual_seed(1)).x
    ref = sample(model, num_samples=4, length=TEXT_LENGTH, config=SamplerConfig(name="ancestral", steps=6),
                 fixed=fixed, fixed_tokens=tokens, generator=torch.Generator().manual_seed(1)).x
    assert not (out[:, 5:11] == tok.eos_id).any() and (ref[:, 5:11] == tok.eos_id).any()
    if process == "masked":
        # a network *certain* of end-of-text (its logit 200 above every other) must still be blocked: the floor
        # is taken from the other tokens (the first version took it from the overall maximum, eos itself)
        with torch.no_grad():
            model.net.output.linear.bias[tok.eos_id] += 200.0
            certain, blocked = model.log_denoiser(x, t).exp(), wrapped.log_denoiser(x, t).exp()
        assert (certain[:, 8:11, tok.eos_id] > 0.999).all() and (blocked[:, 8:11, tok.eos_id] < 1e-15).all()


# ------------------------------------------------------------------------------------------ CLI flow
@pytest.fixture(scope="module")
def text_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    (root / "tiny.yaml").write_text(TINY_RUN)
    for process in ("masked", "uniform"):
        code = cli.main(["pretrain", "--task", "text", "--config", str(root / "tiny.yaml"), "--process", process,
                         "--out", str(root / process), "--no-progress"])
        assert code == 0
    return root


def test_pretrain_eval_sample_through_the_cli(capsys, text_runs, tok):
    root = text_runs
    _, info = load_model(root / "masked")
    assert info["vocab"] == TASK.vocab and info["provenance"]["task"] == "text"
    assert info["model"].length == TEXT_LENGTH and info["model"].vocab_size == 2048
    _, uinfo = load_model(root / "uniform")
    assert uinfo["model"].process == "uniform"
    code, out, _ = run_cli(capsys, "eval", "--model", root / "masked", "--split", "test", "--max-sequences", "24",
                           "--draws", "1", "--no-progress")
    assert code == 0
    res = json.loads(out)
    n_real = real_lengths(load_text_split("test")[:24], tok.eos_id).sum().item()
    assert res["perplexity_bound"] == pytest.approx(math.exp(res["nelbo_nats_per_seq"] * 24 / n_real), rel=1e-6)
    assert res["bits_per_token"] == pytest.approx(res["nelbo_nats_per_seq"] / (32 * math.log(2)), rel=1e-6)
    for process in ("masked", "uniform"):
        path = root / f"{process}.txt"
        code, _, err = run_cli(capsys, "sample", "--model", root / process, "--n", "3", "--steps", "4",
                               "--prefix", "The jury said", "--out", path, "--no-progress")
        assert code == 0, err
        lines = path.read_text().splitlines()
        assert len(lines) == 3 and all(line.startswith("The jury said") for line in lines)
    code, _, err = run_cli(capsys, "sample", "--model", root / "masked", "--n", "2", "--prefix", " ", "--out",
                           root / "x.txt", "--no-progress")
    one_line_error(code, err, "--prefix is empty")


# ------------------------------------------------------------------------------------------ fine-tuning
def test_finetune_groups_are_completions_of_one_prompt(text_runs, tok):
    from sepo.rl.recipes import finetune_config
    from sepo.rl.rewards import Reward
    from sepo.tasks.text.finetune import TextOptions, finetune_text, training_prompts

    seen = []

    def record(tokens):
        seen.append(tokens.clone())
        return (tokens[:, 5:] == 5).float().sum(-1)  # any reward; the test looks at what the policy generated

    options = TextOptions(prompt_tokens=5, train_prompts=6, eval_prompts=0, judges=False, monitor_judges=False)
    pool = {tuple(p.tolist()) for p in training_prompts(tok, options, length=TEXT_LENGTH).ids}
    for estimator in ("sepo", "trajectory"):
        cfg = finetune_config("text", "tiny", overrides=dict(estimator=estimator, max_steps=2, num_groups=3,
                                                             num_generations=2, sampling_steps=4, sepo_positions=2,
                                                             trajectory_steps=2, kl_truncation_steps=2,
                                                             kl_sample_steps=1, num_iterations=1))
        seen.clear()
        out = text_runs / f"ft-{estimator}"
        summary = finetune_text(cfg, out=out, base=text_runs / "masked", options=options,
                                reward=Reward("count", record), progress=False)
        assert summary["iterations"] == 2 and len(seen) == 2
        for batch in seen:
            groups = batch.view(3, 2, TEXT_LENGTH)
            for g in groups:
                assert torch.equal(g[0, :5], g[1, :5]) and tuple(g[0, :5].tolist()) in pool
        model, info = load_model(out / "model")
        assert info["vocab"] == TASK.vocab and (out / "metrics.jsonl").is_file()
        assert all(torch.isfinite(p).all() for p in model.parameters())  # (an exact-zero eos once gave NaN grads)
        assert not torch.equal(model.net.output.linear.weight, load_model(text_runs / "masked")[0].net.output.linear.weight)


def test_finetune_cli_validates_before_writing(capsys, tmp_path):
    code, _, err = run_cli(capsys, "finetune", "--task", "text", "--base", tmp_path / "nope", "--out", tmp_path / "o")
    one_line_error(code, err, "no model at", "sepo pretrain --task text")
    assert not (tmp_path / "o").exists()
    code, _, err = run_cli(capsys, "finetune", "--task", "text", "--base", tmp_path, "--set", "text.reward=vader",
                           "--out", tmp_path / "o")
    one_line_error(code, err, "reward must be one of 'ngram', 'ngram-l2' or 'hf:DIR'")
    with pytest.raises(ConfigError, match="unknown field 'promt_tokens'"):
        from sepo.tasks.text.finetune import text_options

        text_options({"promt_tokens": 3})


def test_repetition_penalty_counts_repeats_before_eos_by_hand(tok):
    from sepo.tasks.text.finetune import repetition_rate, text_reward, text_options

    eos = tok.eos_id
    ids = torch.tensor([[5, 6, 7, 8, eos, 5, 5, 5],    # no repeat before eos (padding after it ignored)
                        [5, 5, 6, 5, eos, eos, eos, eos],  # 4 tokens, 2 distinct -> 1 - 2/4
                        [9, 9, 9, 9, 9, 9, 9, 9],     # no eos: the whole row, 1 distinct of 8
                        [eos, 5, 5, 5, 5, 5, 5, 5]])  # empty text -> 0
    assert torch.allclose(repetition_rate(ids, eos_id=eos), torch.tensor([0.0, 0.5, 7 / 8, 0.0]))
    plain = text_reward("ngram", tok)
    penalised = text_reward("ngram", tok, repetition_penalty=2.0)
    assert penalised.name == plain.name + "-rep2"
    assert torch.allclose(penalised(ids), plain(ids) - 2.0 * torch.tensor([0.0, 0.5, 7 / 8, 0.0]), atol=1e-6)
    with pytest.raises(ConfigError, match="repetition_penalty"):
        text_options({"repetition_penalty": -1})


# ------------------------------------------------------------------------------------------ benchmark statistics
def test_bench_summary_and_acceptance_rule():
    from sepo.bench.text import acceptance, summarize_runs

    def run(w_minilm, w_vader, d2):
        return {"reward": 0.0, "perplexity": 1.0, "elbo_bits": 1.0, "distinct1": 0.5, "distinct2": d2,
                "completion_tokens": 10.0, "judge_reward": {"minilm": 0.0, "vader": 0.0},
                "win_rate": {"minilm": w_minilm, "vader": w_vader}, "ties": {"minilm": 0.0, "vader": 0.1}}

    pre = summarize_runs([run(0.5, 0.5, 0.60), run(0.48, 0.52, 0.62), run(0.52, 0.5, 0.58)], num_prompts=100)
    good = summarize_runs([run(0.70, 0.66, 0.55), run(0.72, 0.64, 0.56), run(0.68, 0.65, 0.54)], num_prompts=100)
    assert good["win_rate"]["minilm"]["mean"] == pytest.approx(0.70)
    assert good["win_rate"]["minilm"]["std"] == pytest.approx(0.02)
    assert good["win_rate"]["minilm"]["se_prompts"] == pytest.approx(math.sqrt(0.7 * 0.3 / 300))
    acc = acceptance({"pretrained": pre, "sepo": good})
    assert acc["met"] and acc["distinct2_ratio"]["value"] == pytest.approx(0.55 / 0.60)
    collapsed = summarize_runs([run(0.9, 0.9, 0.40)] * 3, num_prompts=100)  # wins, but lost a third of its diversity
    acc = acceptance({"pretrained": pre, "sepo": collapsed})
    assert acc["win_rate_minilm"]["met"] and not acc["distinct2_ratio"]["met"] and not acc["met"]
    noisy = summarize_runs([run(0.8, 0.6, 0.6), run(0.5, 0.6, 0.6), run(0.6, 0.6, 0.6)], num_prompts=100)
    acc = acceptance({"pretrained": pre, "sepo": noisy})  # minilm 0.633 ± 0.153: SE 0.088 over seeds -> not met
    assert not acc["win_rate_minilm"]["met"] and acc["win_rate_vader"]["met"]


def test_bench_text_smoke_writes_every_file_and_reuses_runs(text_runs, tok, monkeypatch):
    from sepo.bench import text as bench
    from sepo.tasks.text import lm_baseline

    small_lm = KneserNeyLM(vocab_size=tok.vocab_size, eos_id=tok.eos_id).fit(
        [tok.encode(t) for t in load_corpus("train")[:300]])
    monkeypatch.setattr(lm_baseline, "default_lm", lambda order=3: small_lm)  # the full fit takes ~10-25 s
    cfg = bench.text_bench_config("smoke", eval_prompts=4, samples_shown=2)
    out = text_runs / "bench"
    logs = []
    result = bench.run_text_bench(cfg, out=out, base=str(text_runs / "masked"), log=logs.append, progress=False)
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["methods"]) == {"pretrained", "sepo", "trajectory"}
    for name, m in saved["methods"].items():
        for key in ("perplexity", "distinct2", "elbo_bits"):
            assert len(m[key]["values"]) == 2 and m[key]["std"] >= 0
        assert set(m["judge_reward"]) == set(m["win_rate"]) == {"minilm", "vader"}
        assert all(0 <= v <= 1 for w in m["win_rate"].values() for v in w["values"])
    assert set(saved["acceptance"]) == {"sepo", "trajectory"} and "met" in saved["acceptance"]["sepo"]
    for f in ("results.md", "samples.md", "win_rate.png", "judge_reward.png"):
        assert (out / f).is_file()
    assert saved["human_reference"]["perplexity"] < saved["methods"]["pretrained"]["perplexity"]["mean"]
    logs.clear()
    again = bench.run_text_bench(cfg, out=out, base=str(text_runs / "masked"), log=logs.append, progress=False)
    assert sum("reusing the finished run" in line for line in logs) == 4
    assert again["methods"]["sepo"]["win_rate"] == result["methods"]["sepo"]["win_rate"]
