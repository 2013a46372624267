"""DRAKES reward back-propagation, proved in an exact world (L = 3, V = 3, tabular masked denoiser) and on a
tiny DNA CNN (the input-gradient pathway).

What is checked: the straight-through Gumbel draw is exact in value and has the Gumbel-softmax gradient; the
relaxed rollout is an exact sample of the model; gradients reach only the last ``truncation_steps`` steps;
training raises the exact expected reward and, with ``beta > 0``, keeps the exact KL to the pretrained
output law small; resuming an interrupted run reproduces the uninterrupted one bit for bit.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sepo.baselines import DrakesConfig, DrakesTrainer, relaxed_rollout, straight_through_gumbel
from sepo.diffusion import DiffusionModel, SamplerConfig
from sepo.errors import CheckpointError, ConfigError
from sepo.guidance import table_soft_reward
from sepo.tasks.toy.exact import exact_output_distribution, state_index, total_variation
from sepo.tasks.toy.world import ToyWorldConfig, make_toy_world

L, V, STEPS = 3, 3, 4  # 4 predictor steps + the final denoising step = 5 plan steps


@pytest.fixture(scope="module")
def world():
    return make_toy_world(ToyWorldConfig(length=L, vocab_size=V, sampling_steps=STEPS))


@pytest.fixture(scope="module")
def soft(world):
    return table_soft_reward(world.reward_table, V, L)


def exact_law(model) -> torch.Tensor:
    with torch.no_grad():
        return exact_output_distribution(model, L, SamplerConfig(steps=STEPS)).double()


def kl(p, q) -> float:
    m = p > 0
    return float((p[m] * (p[m] / q[m]).log()).sum())


def test_straight_through_gumbel_is_exact_and_differentiable():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.3, -1.0, 1.2, 0.0], requires_grad=True)
    probs = torch.softmax(logits, -1).masked_fill(torch.tensor([False, False, False, True]), 0.0)
    probs = probs / probs.sum()
    idx, y = straight_through_gumbel(probs.expand(40000, 4), 0.7, g)
    assert torch.equal(y.detach(), nn.functional.one_hot(idx, 4).float())  # exactly one-hot in value
    assert (idx != 3).all()  # zero-probability states are never drawn
    freq = torch.bincount(idx, minlength=4).double() / idx.numel()
    assert torch.allclose(freq, probs.detach().double(), atol=0.01)
    # the backward pass is that of softmax((log p + g)/τ): its rows sum to a constant, so the gradient of sum(y) vanishes
    y.sum().backward()
    assert torch.allclose(logits.grad, torch.zeros(4), atol=1e-4)
    logits.grad = None
    _, y1 = straight_through_gumbel(torch.softmax(logits, -1)[None], 0.7, torch.Generator().manual_seed(1))
    y1[0, 2].backward()
    assert logits.grad.abs().sum() > 0


def test_relaxed_rollout_is_an_exact_sample(world):
    """Forward values are the model's sampler (no-gradient steps and straight-through steps alike)."""
    out = relaxed_rollout(world.model, batch_size=4000, length=L, sampler=SamplerConfig(steps=STEPS), truncation_steps=2,
                          temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.probs.detach(), nn.functional.one_hot(out.tokens, V).float())
    emp = torch.bincount(state_index(out.tokens, V), minlength=V**L).double() / 4000
    assert total_variation(emp, exact_law(world.model)) < 0.05  # measured 0.02


class Recorder(nn.Module):
    """Wraps a network and keeps every output (with its gradient after backward)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.outputs = net, []

    def forward(self, x, sigma_bar):
        out = self.net(x, sigma_bar)
        if out.requires_grad:
            out.retain_grad()
        self.outputs.append(out)
        return out


@pytest.mark.parametrize("truncation", [2, 3, 5])
def test_gradient_flows_only_through_the_last_truncation_steps(world, soft, truncation):
    rec = Recorder(copy.deepcopy(world.model.net))
    model = DiffusionModel(rec, world.model.process, parameterization="subs", time_conditioned=False)
    out = relaxed_rollout(model, batch_size=256, length=L, sampler=SamplerConfig(steps=STEPS), truncation_steps=truncation,
                          temperature=1.0, generator=torch.Generator().manual_seed(0))
    soft(out.probs).sum().backward()
    assert len(rec.outputs) == STEPS + 1 and out.grad_steps == list(range(STEPS + 1 - truncation, STEPS + 1))
    for k, o in enumerate(rec.outputs):
        if k in out.grad_steps:
            assert o.grad is not None, k
            # the final denoising step (k = STEPS) finds no mask left at t = 1e-5, so its gradient is 0
            assert k == STEPS or o.grad.abs().sum() > 0, k
        else:
            assert not o.requires_grad, k


def _train(world, soft, *, beta, steps=40, out_dir=None, resume=False, seed=0):
    model = copy.deepcopy(world.model)
    cfg = DrakesConfig(beta=beta, truncation_steps=STEPS + 1, learning_rate=0.1, batch_size=32, max_steps=steps,
                       sampling_steps=STEPS, max_grad_norm=0.0, seed=seed, save_every=100)
    trainer = DrakesTrainer(model, soft_reward=soft, config=cfg, length=L, out_dir=out_dir, progress=False, resume=resume)
    trainer.train()
    return model, trainer


def test_drakes_raises_reward_and_the_kl_keeps_it_close(world, soft):
    """Exact E[r] / KL(π_θ || π_ref) after 40 iterations: pretrained 0.419 / 0; beta = 0: 0.928 / 2.23;
    beta = 0.3: 0.562 / 0.144 (its truncated path KL levels off at 0.23 while beta = 0 climbs to 2.4)."""
    r = world.reward_table.double()
    pi_ref = exact_law(world.model)
    free, trainer0 = _train(world, soft, beta=0.0)
    held, trainer1 = _train(world, soft, beta=0.3)
    pi0, pi1 = exact_law(free), exact_law(held)
    assert trainer0.history[0]["kl"] == 0.0 and trainer1.history[0]["kl"] == 0.0  # starts at the reference
    base = float(pi_ref @ r)
    assert float(pi0 @ r) > base + 0.4 and float(pi1 @ r) > base + 0.05, (base, float(pi0 @ r), float(pi1 @ r))
    assert kl(pi1, pi_ref) < 0.3 and kl(pi1, pi_ref) < kl(pi0, pi_ref) / 5, (kl(pi1, pi_ref), kl(pi0, pi_ref))
    for h in trainer1.history:
        assert set(h) >= {"reward_mean", "kl", "grad_norm", "seconds", "network_passes"}


def test_resume_reproduces_the_uninterrupted_run(world, soft, tmp_path):
    full, _ = _train(world, soft, beta=0.1, steps=4, out_dir=tmp_path / "a")
    _train(world, soft, beta=0.1, steps=2, out_dir=tmp_path / "b")
    resumed, trainer = _train(world, soft, beta=0.1, steps=4, out_dir=tmp_path / "b", resume=True)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert trainer.iteration == 4 and (tmp_path / "b" / "state" / "policy.safetensors").is_file()
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 4
    with pytest.raises(CheckpointError, match="beta"):
        _train(world, soft, beta=0.2, steps=4, out_dir=tmp_path / "b", resume=True)


def test_prompt_positions_and_config_errors(world, soft):
    model = copy.deepcopy(world.model)
    cfg = DrakesConfig(beta=0.1, truncation_steps=2, batch_size=64, max_steps=1, sampling_steps=STEPS)
    trainer = DrakesTrainer(model, soft_reward=soft, config=cfg, length=L, fixed=torch.tensor([False, True, False]),
                            fixed_tokens=torch.tensor([0, 1, 0]), progress=False)
    out = relaxed_rollout(model, batch_size=64, length=L, sampler=cfg.sampler_config(), truncation_steps=2, temperature=1.0,
                          generator=trainer.generator, fixed=trainer.fixed, fixed_tokens=trainer.fixed_tokens)
    assert (out.tokens[:, 1] == 1).all() and len(set(out.tokens[:, 0].tolist())) > 1
    trainer.train()
    for bad in ({"beta": -1.0}, {"truncation_steps": 0}, {"gumbel_temperature": 0.0}, {"sampler": "beam"}):
        with pytest.raises(ConfigError):
            DrakesConfig(**bad)


def test_gradient_through_network_inputs_on_a_dna_cnn():
    """With an embedding input layer the relaxed state also feeds the network: same samples, more gradient."""
    from sepo.models import build_model

    torch.manual_seed(0)
    model = build_model(dict(backbone="dna_cnn", process="masked", parameterization="subs", vocab_size=4, length=8,
                             hidden=8, n_stacks=1, dilations=[1, 2], kernel_size=3, cond_dim=8))
    gc_soft = lambda p: (p[..., 1] + p[..., 2]).mean(-1)  # noqa: E731 - soft GC content (C = 1, G = 2)

    def grads(input_gradient, truncation):
        m = copy.deepcopy(model)
        # min_t = 0.3 leaves masks for the final denoising step, so even truncation = 1 carries gradient
        out = relaxed_rollout(m, batch_size=16, length=8, sampler=SamplerConfig(steps=6, min_t=0.3), truncation_steps=truncation,
                              temperature=1.0, generator=torch.Generator().manual_seed(0), input_gradient=input_gradient)
        reward = gc_soft(out.probs)
        reward.sum().backward()
        return out, reward.detach(), torch.cat([p.grad.reshape(-1) for p in m.parameters() if p.grad is not None])

    a, ra, ga = grads(False, 3)
    b, rb, gb = grads(True, 3)
    assert b.input_gradient and not a.input_gradient
    assert torch.equal(a.tokens, b.tokens) and torch.equal(ra, rb)  # identical forward values
    assert not torch.allclose(ga, gb)  # the input pathway adds gradient
    _, _, g1a = grads(False, 1)
    _, _, g1b = grads(True, 1)
    assert g1a.abs().sum() > 0 and torch.allclose(g1a, g1b)  # with one step the input state carries no gradient yet


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_generator_drives_cuda_runs_reproducibly(world, soft):
    """Guided samplers and DRAKES draw their noise from the caller's generator wherever it lives, so a CPU
    generator gives the same tokens on CUDA as on the CPU (up to rare float-rounding flips)."""
    from sepo.guidance import generate

    gpu = copy.deepcopy(world.model).cuda()
    for method in ("cg", "smc", "tds"):
        outs = []
        for model in (world.model, gpu):
            tokens, _ = generate(method, model, n=500, length=L, reward=world.reward(), soft_reward=soft,
                                 sampler=SamplerConfig(steps=STEPS), generator=torch.Generator().manual_seed(0))
            outs.append(tokens.cpu())
        assert (outs[0] == outs[1]).all(-1).float().mean() > 0.98, method
    rollouts = [relaxed_rollout(m, batch_size=256, length=L, sampler=SamplerConfig(steps=STEPS), truncation_steps=3,
                                temperature=1.0, generator=torch.Generator().manual_seed(0)) for m in (world.model, gpu)]
    assert (rollouts[0].tokens == rollouts[1].tokens.cpu()).all(-1).float().mean() > 0.98
    model = copy.deepcopy(world.model)
    cfg = DrakesConfig(beta=0.1, truncation_steps=3, batch_size=16, max_steps=2, sampling_steps=STEPS, device="cuda")
    trainer = DrakesTrainer(model, soft_reward=soft, config=cfg, length=L, progress=False)
    history = trainer.train()
    assert next(model.parameters()).is_cuda and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    moved = any(not torch.equal(a.cpu(), b) for a, b in zip(model.state_dict().values(), world.model.state_dict().values()))
    assert moved and history[0]["kl"] == 0.0
