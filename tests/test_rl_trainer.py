"""The SEPO trainer: exact resume, failing rewards lose nothing, the CLI toy run, the DNA recipe plumbing."""

import json
import math

import pytest
import torch

from sepo.cli import main
from sepo.errors import RewardError
from sepo.rl.config import FinetuneConfig
from sepo.rl.rewards import Reward
from sepo.rl.trainer import Trainer
from sepo.tasks.toy.world import ToyWorldConfig, make_toy_world


def _cfg(**kw):
    base = dict(estimator="trajectory", max_steps=4, num_groups=2, num_generations=4, num_iterations=2,
                learning_rate=0.05, beta=0.1, kl_truncation_steps=3, sampling_steps=6, save_every=1, minibatch_size=4)
    base.update(kw)
    return FinetuneConfig(**base)


def _world():
    return make_toy_world(ToyWorldConfig(sampling_steps=6, seed=2))


@pytest.mark.parametrize("estimator", ["sepo", "trajectory", "elbo", "sepo-snis"])
def test_resume_is_exact(tmp_path, estimator):
    cfg = _cfg(estimator=estimator)
    w = _world()
    straight = Trainer(w.model, reward=w.reward(), config=cfg, length=3, out_dir=tmp_path / "a", progress=False)
    straight.train()

    w2 = _world()
    half = Trainer(w2.model, reward=w2.reward(), config=_cfg(estimator=estimator, max_steps=2), length=3,
                   out_dir=tmp_path / "b", progress=False)
    half.train()
    w3 = _world()  # a fresh process would rebuild the base model the same way
    resumed = Trainer(w3.model, reward=w3.reward(), config=cfg, length=3, out_dir=tmp_path / "b", progress=False, resume=True)
    assert resumed.iteration == 2
    resumed.train()
    for (k, a), (_, b) in zip(straight.policy.state_dict().items(), resumed.policy.state_dict().items()):
        assert torch.equal(a, b), k
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [1, 2, 3, 4]


def test_resume_refuses_a_different_base(tmp_path):
    w = _world()
    Trainer(w.model, reward=w.reward(), config=_cfg(max_steps=1), length=3, out_dir=tmp_path, progress=False).train()
    other = make_toy_world(ToyWorldConfig(sampling_steps=6, seed=3))
    with pytest.raises(Exception, match="fingerprint"):
        Trainer(other.model, reward=other.reward(), config=_cfg(), length=3, out_dir=tmp_path, progress=False, resume=True)


def test_nan_reward_stops_after_saving_state(tmp_path):
    w = _world()
    calls = {"n": 0}
    table = w.reward()

    def flaky(x):
        calls["n"] += 1
        r = table(x)
        if calls["n"] == 3:
            r[5] = float("nan")
        return r

    tr = Trainer(w.model, reward=Reward("flaky", flaky), config=_cfg(save_every=100), length=3, out_dir=tmp_path, progress=False)
    with pytest.raises(RewardError, match=r"'flaky'.*sample 5"):
        tr.train()
    # state as of the start of the failed (third) iteration, and the offending batch, are on disk
    state = torch.load(tmp_path / "state" / "trainer.pt", weights_only=False)
    assert state["iteration"] == 2
    assert torch.load(tmp_path / "failed_batch.pt")["tokens"].shape == (8, 3)
    # resuming with a fixed reward repeats iteration 3 from the same random state
    w2 = _world()
    again = Trainer(w2.model, reward=table, config=_cfg(save_every=100), length=3, out_dir=tmp_path, progress=False, resume=True)
    ref = Trainer(_world().model, reward=table, config=_cfg(save_every=100), length=3, out_dir=tmp_path / "ref", progress=False)
    again.train()
    ref.train()
    assert all(torch.equal(a, b) for a, b in zip(again.policy.state_dict().values(), ref.policy.state_dict().values()))


def test_toy_finetune_moves_toward_the_optimum(tmp_path):
    """A short CLI run: the exact TV to π_ref exp(r/β)/Z drops well below the pretrained model's."""
    out = tmp_path / "toy"
    code = main(["finetune", "--task", "toy", "--estimator", "trajectory", "--beta", "0.1", "--seed", "0", "--out", str(out),
                 "--max-steps", "40", "--sampling-steps", "12", "--no-progress"])
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["estimator"] == "trajectory"
    assert m["tv_to_optimum"] < 0.5 * m["tv_reference_to_optimum"]
    assert (out / "reward.png").stat().st_size > 1000
    assert (out / "state" / "policy.safetensors").is_file()


def test_cli_config_errors_are_one_line(tmp_path, capsys):
    assert main(["finetune", "--task", "toy", "--out", str(tmp_path / "x"), "--set", "epsilom=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "did you mean 'epsilon'" in err and "\n" not in err
    assert main(["finetune", "--task", "toy", "--out", str(tmp_path / "x"), "--set", "num_iterations=0"]) == 2
    assert "num_iterations must be a positive integer" in capsys.readouterr().err
    assert main(["finetune", "--task", "dna", "--out", str(tmp_path / "y")]) == 2
    assert "--base is required" in capsys.readouterr().err
    assert main(["finetune", "--task", "toy", "--out", str(tmp_path / "z"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def _poison(trainer, bad_iterations):
    """Make the estimator's log-probabilities NaN during the given (1-based) iterations."""
    real = trainer.estimator.log_probs

    def log_probs(model, rollout, idx):
        units = real(model, rollout, idx)
        if trainer.iteration + 1 in bad_iterations:
            units.logp = units.logp * float("nan")
        return units

    trainer.estimator.log_probs = log_probs


def test_nonfinite_updates_are_skipped_and_leave_weights_intact(tmp_path):
    w = _world()
    tr = Trainer(w.model, reward=w.reward(), config=_cfg(max_steps=3), length=3, out_dir=None, progress=False)
    _poison(tr, {2})
    tr.step()
    after_first = {k: v.clone() for k, v in tr.policy.state_dict().items()}
    m = tr.step()
    assert m["skipped_updates"] == 4 and m["applied_updates"] == 0  # 2 epochs x 2 minibatches, all NaN
    assert all(torch.equal(after_first[k], v) for k, v in tr.policy.state_dict().items())
    m = tr.step()  # training goes on, and the weights are finite
    assert m["skipped_updates"] == 0 and m["applied_updates"] == 4 and math.isfinite(m["loss"])
    assert all(torch.isfinite(v).all() for v in tr.policy.state_dict().values())
    assert not all(torch.equal(after_first[k], v) for k, v in tr.policy.state_dict().items())


def test_persistent_nonfinite_updates_stop_with_one_line_error(tmp_path):
    from sepo.errors import TrainingError

    w = _world()
    tr = Trainer(w.model, reward=w.reward(), config=_cfg(max_steps=10, max_nonfinite_iterations=2, save_every=1),
                 length=3, out_dir=tmp_path, progress=False)
    _poison(tr, set(range(3, 11)))
    with pytest.raises(TrainingError, match="last 2 iterations") as err:
        tr.train()
    assert "\n" not in str(err.value)
    state = torch.load(tmp_path / "state" / "trainer.pt", weights_only=False)
    assert state["iteration"] == 3  # iteration 3 was all-NaN but harmless; the 4th stopped the run
    assert all(torch.isfinite(v).all() for v in tr.policy.state_dict().values())


@pytest.mark.parametrize("estimator", ["sepo", "trajectory", "elbo", "sepo-snis"])
def test_on_policy_single_step_skips_the_old_pass_and_changes_nothing(monkeypatch, estimator):
    """One epoch with one minibatch: the old log-probs are the update's own, detached. The weights after
    training must match the path that recomputes them in a separate no-grad pass, with fewer passes."""
    cfg = _cfg(estimator=estimator, num_iterations=1, minibatch_size=None, max_steps=3)

    def run(fast):
        if not fast:
            monkeypatch.setattr(Trainer, "_on_policy_single_step", lambda self, n: False)
        w = _world()
        tr = Trainer(w.model, reward=w.reward(), config=cfg, length=3, out_dir=None, progress=False)
        tr.train()
        monkeypatch.undo()
        return tr

    fast, slow = run(True), run(False)
    for (k, a), (_, b) in zip(fast.policy.state_dict().items(), slow.policy.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    assert all(h["ratio_mean"] == 1.0 for h in fast.history)
    fast_passes, slow_passes = (sum(h["network_passes"] for h in t.history) for t in (fast, slow))
    # sepo-snis computes the old likelihoods while drawing its candidates' SNIS weights: nothing to skip
    assert fast_passes == slow_passes if estimator == "sepo-snis" else fast_passes < slow_passes
    assert fast._on_policy_single_step(8) and not Trainer._on_policy_single_step(
        type("T", (), {"cfg": _cfg(num_iterations=2)})(), 8)
