"""The ``sepo`` command line: framework, help texts, the pretrain -> sample -> eval flow, and bad input.

Every run goes through ``sepo.cli.main([...])`` in-process; the model is a width-8 one-layer CNN and
the runs take a few steps, so the whole file stays within seconds of compute.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from sepo import __version__, cli
from sepo.tasks.dna.data import read_sequences

TINY_MODEL = "model_overrides: {hidden: 8, n_stacks: 1, dilations: [1, 4]}\n"
TINY_RUN = TINY_MODEL + ("steps: 3\nbatch_size: 4\nwarmup_steps: 1\nval_size: 8\nval_draws: 1\neval_every: 0\n"
                         "checkpoint_every: 0\nlog_every: 1\nnum_threads: 1\n")


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-step DNA model trained through the CLI, shared by the tests below."""
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.yaml"
    config.write_text(TINY_RUN)
    code = cli.main(["pretrain", "--task", "dna", "--preset", "tiny", "--config", str(config), "--out", str(root / "run"),
                     "--no-progress", "--seed", "1"])
    assert code == 0
    return root


# -------------------------------------------------------------------------------------- framework
def test_version_and_top_level_help(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"sepo {__version__}"
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for word in ("pretrain", "sample", "eval", "quickstart", "sepo pretrain --task dna --preset tiny"):
        assert word in out
    code, _, err = run_cli(capsys)  # no command: usage on stderr
    assert code == 2 and "usage: sepo" in err


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", ["pretrain", "sample", "eval"])
def test_every_option_is_explained_with_its_default(capsys, command):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    assert "examples:" in out and f"sepo {command} " in out.split("examples:")[1]
    description = out.split("options:")[0]
    assert len(description.split()) > 40  # a real paragraph, not a one-liner
    sub = _subparsers(cli.build_parser())[command]
    for action in sub._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        assert action.help and len(action.help) > 10, action.option_strings
        assert action.option_strings[-1] in out
        if action.default not in (None, argparse.SUPPRESS, False) or action.required:
            continue
        if action.default is None and action.nargs != 0:  # options without a fixed default say what happens
            assert "default" in action.help, action.option_strings
    # options with a value default show it
    for action in sub._actions:
        if action.option_strings and action.default not in (None, argparse.SUPPRESS) and not isinstance(action.default, bool):
            assert "(default:" in sub.formatter_class("x")._get_help_string(action), action.option_strings


def test_missing_module_is_skipped_and_broken_module_reports_itself(capsys, monkeypatch, tmp_path):
    (tmp_path / "broken_demo.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "incomplete_demo.py").write_text("def run(args):\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, "sepo.commands.not_written_yet", "broken_demo", "incomplete_demo"])
    parser = cli.build_parser()
    names = set(_subparsers(parser))
    assert {"pretrain", "sample", "eval", "broken_demo", "incomplete_demo"} <= names and "not_written_yet" not in names
    code, _, err = run_cli(capsys, "broken_demo")
    assert_one_line_error(code, err, "command 'broken_demo' is unavailable", "boom at import")
    code, _, err = run_cli(capsys, "incomplete_demo")
    assert_one_line_error(code, err, "command 'incomplete_demo' is unavailable", "lacks add_parser")
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "pretrain" in out


def test_keyboard_interrupt_exits_130_and_debug_shows_tracebacks(capsys, monkeypatch, tmp_path):
    import sepo.commands.sample as sample_cmd

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(sample_cmd, "run", interrupted)
    code, _, err = run_cli(capsys, "sample", "--model", "x", "--out", "y")
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    monkeypatch.undo()
    code, _, err = run_cli(capsys, "--debug", "sample", "--model", tmp_path / "none", "--out", tmp_path / "s.fa")
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: model directory")


# ------------------------------------------------------------------------------ pretrain/sample/eval
def test_pretrain_sample_eval_flow(capsys, trained):
    run = trained / "run"
    for name in ("config.json", "model.safetensors", "ema.safetensors", "train_state.pt", "metrics.jsonl", "loss.png",
                 "pretrain_config.yaml", "train_summary.json"):
        assert (run / name).is_file(), name
    code, out, _ = run_cli(capsys, "sample", "--model", run, "--n", 5, "--steps", 8, "--seed", 3,
                           "--out", trained / "a.fasta", "--no-progress")
    assert code == 0 and "wrote 5 samples" in out
    names, seqs = read_sequences(trained / "a.fasta")
    assert len(seqs) == 5 and all(len(s) == 200 and set(s) <= set("ACGT") for s in seqs)
    # same seed -> same file; another seed -> other sequences
    run_cli(capsys, "sample", "--model", run, "--n", 5, "--steps", 8, "--seed", 3, "--out", trained / "b.fasta", "--no-progress")
    run_cli(capsys, "sample", "--model", run, "--n", 5, "--steps", 8, "--seed", 4, "--out", trained / "c.fasta", "--no-progress")
    assert (trained / "a.fasta").read_text() == (trained / "b.fasta").read_text() != (trained / "c.fasta").read_text()

    code, out, _ = run_cli(capsys, "eval", "--model", run, "--split", "test", "--max-sequences", 24, "--draws", 2,
                           "--samples", trained / "a.fasta", "--json", trained / "eval.json", "--no-progress")
    assert code == 0
    result = json.loads((trained / "eval.json").read_text())
    assert json.loads(out) == result
    assert result["split"] == "test" and result["num_sequences"] == 24 and result["bound"] == "mdlm_nelbo"
    assert 1.0 < result["bits_per_base"] < 3.0 and result["bits_per_base_stderr"] > 0
    assert result["nelbo_nats_per_seq"] == pytest.approx(result["bits_per_base"] * 200 * 0.6931471805599453)
    assert result["samples"]["num_samples"] == 5 and -1.0 <= result["samples"]["kmer3_pearson"] <= 1.0


@pytest.mark.parametrize("sampler", ["ancestral", "analytic", "euler", "tau_leaping"])
def test_every_sampler_honours_the_prefix(capsys, trained, sampler):
    out_file = trained / f"p_{sampler}.fasta"
    code, _, err = run_cli(capsys, "sample", "--model", trained / "run", "--n", 3, "--steps", 4, "--sampler", sampler,
                           "--corrector-steps", 1 if sampler == "euler" else 0, "--prefix", "acgtTTGA", "--float64",
                           "--out", out_file, "--no-progress")
    assert code == 0, err
    _, seqs = read_sequences(out_file)
    assert len(seqs) == 3 and all(s.startswith("ACGTTTGA") and len(s) == 200 for s in seqs)


def test_refuses_to_overwrite_a_finished_run(capsys, trained):
    code, _, err = run_cli(capsys, "pretrain", "--out", trained / "run", "--no-progress")
    assert_one_line_error(code, err, "holds a finished run", "--force")
    code, out, _ = run_cli(capsys, "pretrain", "--out", trained / "run", "--resume", "--no-progress")
    assert code == 0 and "nothing to do" in out


# ------------------------------------------------------------------------------------------ bad input
def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("content, fragments", [
    (">s1\n" + "ACGT" * 50 + "\n>s2\n" + "ACGN" * 50 + "\n", ["s2 has invalid character 'N' at position 4", "only A, C, G, T"]),
    (">s1\n" + "ACGT" * 10 + "\n", ["s1 has length 40, expected 200"]),
    ("\n\n", ["no sequences found"]),
])
def test_bad_sample_files(capsys, trained, content, fragments):
    bad = _write(trained / "bad.fasta", content)
    out_json = trained / "never.json"
    code, out, err = run_cli(capsys, "eval", "--model", trained / "run", "--samples", bad, "--json", out_json, "--no-progress")
    assert_one_line_error(code, err, *fragments)
    assert not out_json.exists() and out == ""


def test_unknown_task_and_preset_and_unavailable_task(capsys, tmp_path):
    code, _, err = run_cli(capsys, "pretrain", "--task", "protein", "--out", tmp_path / "x")
    assert_one_line_error(code, err, "unknown task 'protein'", "dna")
    code, _, err = run_cli(capsys, "pretrain", "--task", "dna", "--preset", "huge", "--out", tmp_path / "x")
    assert_one_line_error(code, err, "unknown preset 'huge'", "tiny, full")
    from sepo.train.tasks import _REGISTERED

    if "text" not in _REGISTERED:
        try:
            __import__("sepo.tasks.text.pretrain")
        except ModuleNotFoundError:
            code, _, err = run_cli(capsys, "pretrain", "--task", "text", "--out", tmp_path / "x")
            assert_one_line_error(code, err, "task 'text' is not available yet")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("text, fragments", [
    ("bach_size: 8\n", ["unknown field 'bach_size'", "did you mean 'batch_size'"]),
    ("steps: ten\n", ["steps: expected an integer", "'ten'"]),
    ("ema_decay: 1.5\n", ["ema_decay must be in [0, 1)"]),
    ("model_overrides: {hiden: 8}\n", ["unknown field 'hiden'"]),
    ("- a list\n", ["must hold a mapping"]),
    ("steps: [1\n", ["not valid YAML"]),
])
def test_bad_config_files(capsys, tmp_path, text, fragments):
    config = _write(tmp_path / "bad.yaml", text)
    code, _, err = run_cli(capsys, "pretrain", "--config", config, "--out", tmp_path / "run", "--no-progress")
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "run").exists()


def test_missing_and_corrupt_checkpoints(capsys, trained, tmp_path):
    code, _, err = run_cli(capsys, "sample", "--model", tmp_path / "nowhere", "--out", tmp_path / "s.fasta")
    assert_one_line_error(code, err, "not found")
    import shutil

    corrupt = tmp_path / "corrupt"
    shutil.copytree(trained / "run", corrupt)
    (corrupt / "config.json").write_text("{not json")
    code, _, err = run_cli(capsys, "eval", "--model", corrupt, "--json", tmp_path / "e.json")
    assert_one_line_error(code, err, "not valid JSON")
    shutil.copy(trained / "run" / "config.json", corrupt / "config.json")
    data = (corrupt / "ema.safetensors").read_bytes()
    (corrupt / "ema.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "sample", "--model", corrupt, "--out", tmp_path / "s.fasta")
    assert_one_line_error(code, err, "ema.safetensors")
    assert not (tmp_path / "s.fasta").exists() and not (tmp_path / "e.json").exists()
    (corrupt / "train_state.pt").write_bytes(b"garbage")
    code, _, err = run_cli(capsys, "pretrain", "--out", corrupt, "--resume", "--no-progress")
    assert code == 2 and "Traceback" not in err and err.startswith("error: ")


def test_bad_sampling_options(capsys, trained, tmp_path):
    out_file = tmp_path / "s.fasta"
    code, _, err = run_cli(capsys, "sample", "--model", trained / "run", "--prefix", "ACGX", "--out", out_file)
    assert_one_line_error(code, err, "--prefix", "invalid character 'X'")
    code, _, err = run_cli(capsys, "sample", "--model", trained / "run", "--prefix", "A" * 201, "--out", out_file)
    assert_one_line_error(code, err, "201 tokens")
    code, _, err = run_cli(capsys, "sample", "--model", trained / "run", "--steps", 0, "--out", out_file)
    assert_one_line_error(code, err, "steps must be >= 1")
    code, _, err = run_cli(capsys, "sample", "--model", trained / "run", "--n", 0, "--out", out_file)
    assert_one_line_error(code, err, "--n must be >= 1")
    if not torch.cuda.is_available():
        code, _, err = run_cli(capsys, "sample", "--model", trained / "run", "--device", "cuda", "--out", out_file)
        assert_one_line_error(code, err, "CUDA is not available")
    code, _, err = run_cli(capsys, "sample", "--model", trained / "run", "--sampler", "nope", "--out", out_file)
    assert code == 2 and "invalid choice" in err
    assert not out_file.exists()


def test_resume_without_a_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "pretrain", "--out", tmp_path / "fresh", "--resume")
    assert_one_line_error(code, err, "nothing to resume")
    code, _, err = run_cli(capsys, "pretrain", "--out", tmp_path / "fresh", "--resume", "--force")
    assert_one_line_error(code, err, "contradict")


def test_uniform_model_through_the_cli(capsys, trained):
    run = trained / "uniform"
    code, _, err = run_cli(capsys, "pretrain", "--config", trained / "tiny.yaml", "--process", "uniform", "--steps", 1,
                           "--out", run, "--no-progress")
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())["model"]
    assert config["process"] == "uniform" and config["time_conditioned"]
    code, out, err = run_cli(capsys, "sample", "--model", run, "--n", 2, "--steps", 4, "--out", trained / "u.fasta", "--no-progress")
    assert code == 0 and "sampler ancestral," in out, err  # auto: no caching for a time-conditioned model
    assert len(read_sequences(trained / "u.fasta")[1]) == 2
    code, _, err = run_cli(capsys, "sample", "--model", run, "--sampler", "ancestral_cached", "--out", trained / "v.fasta")
    assert_one_line_error(code, err, "ancestral_cached", "use 'ancestral'")
    code, out, _ = run_cli(capsys, "eval", "--model", run, "--max-sequences", 8, "--draws", 1, "--no-progress")
    result = json.loads(out)
    assert code == 0 and result["bound"] == "score_entropy" and result["bits_per_base"] > 1.5
