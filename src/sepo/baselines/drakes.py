"""DRAKES: reward back-propagation through the sampler (Wang et al. 2025, "Fine-tuning discrete diffusion
models via reward optimization with applications to DNA and protein design").

Each iteration draws ``batch_size`` sequences with the model's sampler. The last ``truncation_steps``
kernel steps are drawn with the *straight-through Gumbel-softmax*: the forward value is the exact
Gumbel-max draw ``onehot(argmax(log p + g))`` (so the rollout is an exact sample of the model), and the
backward pass uses the relaxation ``softmax((log p + g) / τ)`` (``τ = gumbel_temperature``). Earlier
steps run without gradient. The relaxed one-hot state is carried along the steps as in DRAKES: at a
masked position the next state is ``c · X + (1 - c) · y`` with the copy flag ``c = 1 - X[MASK]`` (exactly 0
or 1 in value, differentiable), so a revealed token keeps the gradient of the step that revealed it; for
the uniform process every free position takes the new relaxed draw. The final relaxed sequence (its clean
columns, ``[B, L, V]``, one-hot in value) is fed to ``soft_reward`` and

    maximise  E[r(x_0)] - β · E[ Σ_{truncated steps k} Σ_i KL(p_θ(· | x_k)_i || p_ref(· | x_k)_i) ],

the closed-form per-step kernel KL to the frozen pretrained model along the sampled path (the same KL as
:mod:`sepo.rl.kl`; for masked ancestral steps it is ``p_unmask Σ_v D_θ log(D_θ / D_ref)`` at masked
positions). ``β = 0`` is "DRAKES w/o KL".

Gradient paths. The reward gradient reaches θ through every truncated step's kernel probabilities. Our
networks take token ids, so the relaxed state cannot be fed to them directly; when the network's input
layer is an ``nn.Embedding`` named ``embed`` (:class:`~sepo.models.DNACNN`, :class:`~sepo.models.DiT`)
and ``input_gradient`` is on, the embedding output is replaced by ``X @ W`` - identical in value to the
lookup ``W[x]`` because ``X`` is one-hot in value - so the gradient also flows through the network's
inputs, as in DRAKES (which feeds relaxed samples to the network). Differences to the reference code:
the forward samples are hard (straight-through) rather than soft relaxed sequences, and the reference
model's kernels in the KL receive no input gradient (only the policy side of the KL is differentiated).

Run state (``<out>/state/``, atomic): policy weights (safetensors), optimizer, the run's generator, the
global torch RNG, iteration counter, metrics history, the reference's fingerprint;
``DrakesTrainer(..., resume=True)`` continues bit-for-bit.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file
from torch import nn

from sepo.diffusion.model import DiffusionModel
from sepo.diffusion.process import MaskedProcess
from sepo.diffusion.sampling import SAMPLERS, SamplerConfig, initial_state, kernel_probs, plan_steps
from sepo.errors import CheckpointError, ConfigError, RewardError
from sepo.guidance.common import categorical, expand_constraint, model_device, uniform
from sepo.rl.loop import guarded_update, read_run_state, start_run, train_loop
from sepo.utils.io import atomic_dir, write_json
from sepo.utils.logging import MetricLogger

__all__ = ["DrakesConfig", "RelaxedRollout", "relaxed_rollout", "straight_through_gumbel", "kernel_kl", "DrakesTrainer"]


@dataclass
class DrakesConfig:
    """Configuration of :class:`DrakesTrainer`.

    Attributes:
        beta: weight of the truncated path KL to the frozen pretrained model (``0``: "DRAKES w/o KL").
        gumbel_temperature: temperature ``τ`` of the Gumbel-softmax relaxation used in the backward pass.
        truncation_steps: the last this-many sampler steps carry gradient (and the KL); earlier steps none.
        learning_rate: AdamW learning rate (constant).
        batch_size: sequences per iteration.
        max_steps: iterations (one gradient step each).
        sampler: sampler of the rollouts (``ancestral`` recommended; any kernel sampler works).
        sampling_steps: predictor steps per rollout.
        max_grad_norm: gradient clipping threshold (``0`` disables).
        weight_decay: AdamW weight decay.
        input_gradient: also back-propagate through the network's inputs when its input layer is an
            ``nn.Embedding`` named ``embed`` (see module docstring); ignored for other networks.
        seed: seed of the run's random generator (rollouts and Gumbel noise).
        save_every: checkpoint every this-many iterations (and at the end).
        log_every: log metrics every this-many iterations.
        device: ``cpu`` or ``cuda``.
    """

    beta: float = 0.05
    gumbel_temperature: float = 1.0
    truncation_steps: int = 10
    learning_rate: float = 1e-4
    batch_size: int = 16
    max_steps: int = 100
    sampler: str = "ancestral"
    sampling_steps: int = 128
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    input_gradient: bool = True
    seed: int = 0
    save_every: int = 10
    log_every: int = 1
    device: str = "cpu"

    def __post_init__(self):
        for name in ("truncation_steps", "batch_size", "max_steps", "sampling_steps", "save_every", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"drakes: {name} must be a positive integer, got {v!r}")
        if not self.beta >= 0:
            raise ConfigError(f"drakes: beta must be >= 0 (0 disables the KL), got {self.beta}")
        if not self.gumbel_temperature > 0:
            raise ConfigError(f"drakes: gumbel_temperature must be > 0, got {self.gumbel_temperature}")
        if not self.learning_rate > 0:
            raise ConfigError(f"drakes: learning_rate must be > 0, got {self.learning_rate}")
        if self.max_grad_norm < 0 or self.weight_decay < 0:
            raise ConfigError("drakes: max_grad_norm and weight_decay must be >= 0")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"drakes: sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.device not in ("cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"drakes: device must be 'cpu' or 'cuda', got {self.device!r}")

    def sampler_config(self) -> SamplerConfig:
        name = "ancestral" if self.sampler == "ancestral_cached" else self.sampler  # gradients need fresh passes
        return SamplerConfig(name=name, steps=self.sampling_steps)


# ----------------------------------------------------------------------------------------------------
# the relaxed rollout
# ----------------------------------------------------------------------------------------------------
def straight_through_gumbel(probs: torch.Tensor, temperature: float, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gumbel-max draw with a Gumbel-softmax backward pass.

    ``probs [..., S]`` -> ``(index [...], y [..., S])`` where ``y`` equals ``onehot(index)`` exactly in value
    and has the gradient of ``softmax((log probs + g) / temperature)``. Zero-probability states are never drawn.
    """
    logits = probs.clamp_min(1e-30).log()  # clamp: no 0 * inf = nan in the backward pass
    u = uniform(probs.shape, generator, probs.device).clamp_min(1e-300)
    noisy = logits.to(torch.float64) - torch.log(-torch.log(u))
    index = noisy.detach().masked_fill(probs.detach() <= 0, float("-inf")).argmax(-1)
    soft = torch.softmax(noisy / temperature, dim=-1).to(probs.dtype)
    hard = nn.functional.one_hot(index, probs.shape[-1]).to(probs.dtype)
    return index, hard + (soft - soft.detach())


def kernel_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-position ``KL(p || q)`` ``[..., L]`` between kernel rows ``[..., L, S]`` (gradient through ``p``)."""
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q.clamp_min(1e-30))).sum(-1)


def _input_embedding(model: DiffusionModel) -> nn.Embedding | None:
    emb = getattr(model.net, "embed", None)
    if isinstance(emb, nn.Embedding) and emb.num_embeddings == model.num_states:
        return emb
    return None


@contextlib.contextmanager
def _relaxed_inputs(model: DiffusionModel, relaxed: torch.Tensor | None):
    """Within the block, the network's input embedding returns ``relaxed @ W`` (equal in value to ``W[x]``
    when ``relaxed`` is one-hot in value) so gradients reach ``relaxed``."""
    emb = _input_embedding(model) if relaxed is not None else None
    if emb is None:
        yield
        return

    def hook(module, inputs, output):
        if inputs[0].shape != relaxed.shape[:-1]:
            return output
        return relaxed.to(module.weight.dtype) @ module.weight

    handle = emb.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class RelaxedRollout:
    """One batch of relaxed rollouts.

    Attributes:
        probs: ``[B, L, V]`` straight-through one-hot of the final tokens (exactly one-hot in value).
        tokens: ``[B, L]`` the final tokens.
        kl: ``[B]`` truncated path KL to the reference (zeros without a reference), with gradient.
        grad_steps: indices of the plan steps that carried gradient.
        input_gradient: whether the gradient also flowed through the network's inputs.
    """

    probs: torch.Tensor
    tokens: torch.Tensor
    kl: torch.Tensor
    grad_steps: list[int]
    input_gradient: bool


def relaxed_rollout(
    policy: DiffusionModel,
    *,
    batch_size: int,
    length: int,
    sampler: SamplerConfig,
    truncation_steps: int,
    temperature: float,
    generator: torch.Generator | None = None,
    reference: DiffusionModel | None = None,
    fixed: torch.Tensor | None = None,
    fixed_tokens: torch.Tensor | None = None,
    input_gradient: bool = True,
) -> RelaxedRollout:
    """Sample ``batch_size`` sequences, keeping a differentiable relaxed path over the last ``truncation_steps``.

    ``fixed`` / ``fixed_tokens``: ``[B, L]`` prompt constraint (positions never move).
    """
    proc = policy.process
    masked = isinstance(proc, MaskedProcess)
    if masked and not sampler.final_denoise:
        raise ConfigError("drakes needs final_denoise=True for a masked model (the reward needs unmasked sequences)")
    device = model_device(policy)
    steps = plan_steps(sampler)
    first = len(steps) - min(int(truncation_steps), len(steps))
    x = initial_state(policy, batch_size, length, device=device, generator=generator, fixed=fixed, fixed_tokens=fixed_tokens)
    relaxed = nn.functional.one_hot(x, policy.num_states).float()
    free = torch.ones_like(x, dtype=torch.bool) if fixed is None else ~fixed
    kl = torch.zeros(batch_size, device=device)
    use_inputs = bool(input_gradient) and _input_embedding(policy) is not None
    for k, step in enumerate(steps):
        if k < first:
            with torch.no_grad():
                x = categorical(kernel_probs(policy, x, step, sampler, fixed=fixed), generator)
            relaxed = nn.functional.one_hot(x, policy.num_states).float()
            continue
        with _relaxed_inputs(policy, relaxed if use_inputs else None):
            probs = kernel_probs(policy, x, step, sampler, fixed=fixed)
        if reference is not None:
            with torch.no_grad():
                ref = kernel_probs(reference, x, step, sampler, fixed=fixed)
            kl = kl + (kernel_kl(probs, ref) * free).sum(-1)
        x, y = straight_through_gumbel(probs, temperature, generator)
        if masked:  # DRAKES's copy flag: a revealed token keeps the relaxed value (and gradient) it was revealed with
            keep = 1.0 - relaxed[..., proc.mask_id : proc.mask_id + 1]
            relaxed = keep * relaxed + (1.0 - keep) * y
        else:
            relaxed = torch.where(free.unsqueeze(-1), y, relaxed)
    return RelaxedRollout(relaxed[..., : proc.vocab_size], x, kl, list(range(first, len(steps))), use_inputs)


# ----------------------------------------------------------------------------------------------------
# trainer
# ----------------------------------------------------------------------------------------------------
_RESUME_FREE = ("max_steps", "save_every", "log_every", "device")  # may change on resume


class DrakesTrainer:
    """Fine-tune ``policy`` by reward back-propagation (DRAKES).

    Args:
        policy: the model to fine-tune (modified in place); a frozen copy is the KL reference.
        soft_reward: differentiable reward ``probs [B, L, V] -> [B]`` (equal to the reward on one-hot inputs).
        config: :class:`DrakesConfig`.
        length: sequence length ``L``.
        out_dir: run folder (metrics.jsonl, TensorBoard, reward.png, state/); ``None`` writes nothing.
        fixed, fixed_tokens: optional prompt constraint, ``[L]`` or ``[batch_size, L]``.
        evaluate: optional ``(policy, iteration) -> dict`` of extra metrics, called when logging.
        base_identity: description of the pretrained model stored with the run (fingerprint added).
        resume: continue the run saved in ``out_dir`` exactly.
    """

    def __init__(self, policy: DiffusionModel, *, soft_reward: Callable, config: DrakesConfig, length: int,
                 out_dir: str | Path | None = None, fixed: torch.Tensor | None = None, fixed_tokens: torch.Tensor | None = None,
                 evaluate: Callable | None = None, base_identity: dict | None = None, logger: MetricLogger | None = None,
                 progress: bool = True, resume: bool = False):
        if not isinstance(config, DrakesConfig):
            raise ConfigError(f"DrakesTrainer needs a DrakesConfig, got {type(config).__name__}")
        self.cfg = config
        self.policy = policy.to(config.device).eval()  # no dropout: the rollout is an exact sample of the model
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        if not trainable:
            raise ConfigError("the policy has no trainable parameters (all have requires_grad=False); unfreeze them")
        self.reference = copy.deepcopy(self.policy).requires_grad_(False).eval()
        self.soft_reward = soft_reward
        self.length = int(length)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        device = model_device(self.policy)
        self.fixed, self.fixed_tokens = expand_constraint(fixed, fixed_tokens, config.batch_size, self.length, 1, device)
        self.evaluate = evaluate
        self.optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        start_run(self, seed=config.seed, base_identity=base_identity, logger=logger, progress=progress, resume=resume)

    def _passes(self) -> int:
        return self.policy.network_passes + self.reference.network_passes

    def step(self) -> dict:
        """One iteration: relaxed rollout, reward, loss ``-mean r + β mean KL``, one optimizer step."""
        cfg = self.cfg
        t0, passes0 = time.perf_counter(), self._passes()
        rollout = relaxed_rollout(self.policy, batch_size=cfg.batch_size, length=self.length, sampler=cfg.sampler_config(),
                                  truncation_steps=cfg.truncation_steps, temperature=cfg.gumbel_temperature,
                                  generator=self.generator, reference=self.reference, fixed=self.fixed,
                                  fixed_tokens=self.fixed_tokens, input_gradient=cfg.input_gradient)
        rewards = self.soft_reward(rollout.probs)
        if rewards.shape != (cfg.batch_size,) or not torch.isfinite(rewards).all():
            raise RewardError(f"the differentiable reward returned shape {tuple(rewards.shape)} or non-finite values for a "
                              f"batch of {cfg.batch_size}; it must return one finite float per sample")
        loss = -rewards.mean() + cfg.beta * rollout.kl.mean()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        gn, applied = guarded_update(self.optimizer, params, loss, max_grad_norm=cfg.max_grad_norm)
        self.iteration += 1
        r = rewards.detach().float().cpu()
        metrics = {
            "iteration": self.iteration,
            "reward_mean": float(r.mean()),
            "reward_std": float(r.std(unbiased=False)),
            "reward_max": float(r.max()),
            "kl": float(rollout.kl.detach().mean()),
            "loss": float(loss.detach()),
            "grad_norm": gn,
            "applied_updates": int(applied),
            "skipped_updates": int(not applied),
            "network_passes": int(self._passes() - passes0),
            "seconds": round(time.perf_counter() - t0, 4),
        }
        self.history.append(metrics)
        return metrics

    def train(self) -> list[dict]:
        """Run until ``max_steps`` iterations; log, checkpoint and plot along the way."""
        label = "drakes" if self.cfg.beta > 0 else "drakes w/o KL"
        return train_loop(self, desc=label, postfix=("reward_mean", "kl"),
                          title=f"DRAKES (beta={self.cfg.beta:g}, truncation={self.cfg.truncation_steps})")

    # ------------------------------------------------------------------ state
    def save(self) -> Path:
        """Write ``<out>/state`` atomically."""
        target = self.out_dir / "state"
        with atomic_dir(target) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.policy.state_dict().items()}, str(tmp / "policy.safetensors"))
            torch.save({
                "format": "sepo-drakes-state",
                "iteration": self.iteration,
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": self.history,
                "config": asdict(self.cfg),
                "reference": self.base_identity,
            }, tmp / "trainer.pt")
        write_json(self.out_dir / "state.json", {"iteration": self.iteration, "reference": self.base_identity, "method": "drakes"})
        return target

    def _load_state(self) -> None:
        state, weights = read_run_state(self.out_dir, fmt="sepo-drakes-state", fingerprint=self.base_identity.get("fingerprint"),
                                        what="DRAKES run")
        saved, now = state["config"], asdict(self.cfg)
        changed = [k for k in now if k not in _RESUME_FREE and saved.get(k) != now[k]]
        if changed:
            raise CheckpointError(f"the saved run used {changed[0]}={saved.get(changed[0])!r}, not {now[changed[0]]!r}; "
                                  "resume with the same configuration (only max_steps, save_every, log_every, device may change)")
        self.policy.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.iteration = int(state["iteration"])
        self.history = list(state["history"])
