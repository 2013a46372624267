"""Reverse-process samplers, each written as a sequence of per-position transition kernels.

Every sampler is a *plan* (a list of :class:`Step`) and a *kernel*: given the current state ``x [B, L]``
and a step, :func:`kernel_probs` returns per-position probabilities ``[B, L, S]`` of the next token.
Positions move independently given ``x``. The same kernel is used to draw samples
(:func:`sample`), to score a recorded trajectory (:func:`step_log_prob`, used by the trajectory
policy-gradient estimator) and to propagate exact distributions in tiny worlds
(:mod:`sepo.tasks.toy.exact`). One definition, three uses: what we test is what we run.

Samplers (``SamplerConfig.name``):

* ``ancestral``  exact reverse kernel of the discretised process with the denoiser plugged in for
  ``p(x_0 | x_t)`` (D3PM / MDLM "ddpm" sampler);
* ``ancestral_cached``  the same kernel, reusing each sequence's network output until one of its
  tokens changes (masked process with a time-independent denoiser only; MDLM's caching);
* ``analytic``  SEDD's Tweedie tau-leaping with the concrete score;
* ``euler``  first-order step of the reverse rates ``Q_t(y -> x) s(x)_y`` (SEDD's Euler);
* ``tau_leaping``  exponential ("first jump") step of the same rates: at most one jump per position,
  ``P(stay) = exp(-h R)``, always a valid distribution.

``corrector_steps > 0`` appends, after every predictor step, steps of the generator ``Q_t + Q̄_t``
(forward plus reverse rates), which leaves ``p_t`` invariant: the paper's "gradient flow"
(a discrete gradient flow of ``KL(. || p_t)``; Zekri & Boullé 2025, reconstructed), also a
predictor-corrector sampler in the sense of Campbell et al. (2022).
``final_denoise`` ends with a step that draws every remaining position from the denoiser.
``float64`` draws categories with float64 cumulative sums (float32 Gumbel draws measurably cool the
distribution: Zheng et al., 2024, "Masked diffusion models are secretly time-agnostic masked models
and exploit inaccurate categorical sampling").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sepo.utils.random import rand

from .model import DiffusionModel
from .process import MaskedProcess

__all__ = [
    "SamplerConfig",
    "Step",
    "SampleOutput",
    "SAMPLERS",
    "plan_steps",
    "kernel_probs",
    "sample_categorical",
    "sample",
    "step_log_prob",
    "reverse_kernel",
    "prefix_constraint",
]

SAMPLERS = ("ancestral", "ancestral_cached", "analytic", "euler", "tau_leaping")


@dataclass
class SamplerConfig:
    """How to run the reverse process.

    Attributes:
        name: one of ``ancestral``, ``ancestral_cached``, ``analytic``, ``euler``, ``tau_leaping``.
        steps: number of predictor steps on the uniform grid ``1 -> min_t``.
        corrector_steps: corrector (gradient-flow) steps after each predictor step; 0 disables.
        corrector_step_size: time step ``h`` of each corrector step; ``None`` uses the predictor step.
        final_denoise: end with one step drawing every still-noisy position from the denoiser.
        min_t: last time of the predictor grid (before the final denoising step).
        float64: draw categories in float64 (recommended at many steps; see module docstring).
    """

    name: str = "ancestral"
    steps: int = 128
    corrector_steps: int = 0
    corrector_step_size: float | None = None
    final_denoise: bool = True
    min_t: float = 1e-5
    float64: bool = False

    def __post_init__(self):
        if self.name not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.name!r}; choose one of {', '.join(SAMPLERS)}")
        if int(self.steps) < 1:
            raise ValueError(f"sampler steps must be >= 1, got {self.steps}")
        if int(self.corrector_steps) < 0:
            raise ValueError(f"corrector_steps must be >= 0, got {self.corrector_steps}")
        if not 0.0 <= self.min_t < 1.0:
            raise ValueError(f"min_t must be in [0, 1), got {self.min_t}")
        if self.corrector_step_size is not None and self.corrector_step_size <= 0:
            raise ValueError(f"corrector_step_size must be > 0, got {self.corrector_step_size}")
        if self.corrector_steps > 0 and self.min_t <= 0.0:
            # the last corrector runs at t = min_t, where the scores of noisy states are 0 or infinite
            raise ValueError("corrector steps need min_t > 0 (they run at the end of each predictor step); e.g. min_t=1e-5")


@dataclass(frozen=True)
class Step:
    """One kernel application: ``predict`` (t -> s), ``correct`` (at time t, step h) or ``denoise``."""

    kind: str
    t: float
    s: float
    h: float
    index: int


@dataclass
class SampleOutput:
    """``x [B, L]`` final tokens; ``trajectory`` the states before each step plus the last (if kept)."""

    x: torch.Tensor
    steps: list[Step]
    trajectory: list[torch.Tensor] | None = None
    network_passes: int = 0
    extras: dict = field(default_factory=dict)


def plan_steps(cfg: SamplerConfig) -> list[Step]:
    """The list of kernel steps the sampler applies, in order."""
    grid = torch.linspace(1.0, cfg.min_t, cfg.steps + 1, dtype=torch.float64).tolist()
    steps: list[Step] = []
    for k in range(cfg.steps):
        t, s = grid[k], grid[k + 1]
        steps.append(Step("predict", t, s, t - s, len(steps)))
        h = cfg.corrector_step_size if cfg.corrector_step_size is not None else t - s
        for _ in range(cfg.corrector_steps):
            steps.append(Step("correct", s, s, h, len(steps)))
    if cfg.final_denoise:
        steps.append(Step("denoise", cfg.min_t, 0.0, cfg.min_t, len(steps)))
    return steps


# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------
def _scalar(v: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(v), dtype=torch.float32, device=x.device)


def _onehot(x: torch.Tensor, num_states: int, dtype=torch.float32) -> torch.Tensor:
    return torch.nn.functional.one_hot(x, num_states).to(dtype)


def _pad_clean(p_clean: torch.Tensor, num_states: int) -> torch.Tensor:
    """Pad ``[B, L, V]`` clean-token probabilities with zeros up to ``S`` states."""
    extra = num_states - p_clean.shape[-1]
    return torch.nn.functional.pad(p_clean, (0, extra)) if extra else p_clean


def reverse_kernel(process, x: torch.Tensor, d: torch.Tensor, t: float, s: float) -> torch.Tensor:
    """``p(x_s | x_t) = sum_v d(v) q(x_s | x_t, x_0 = v)`` per position, for clean-token probabilities
    ``d [B, L, V]``. With ``d = onehot(x_0)`` this is the exact forward posterior ``q(x_s | x_t, x_0)``;
    with ``d = D_theta(x_t)`` it is the ancestral kernel. Returns ``[B, L, S]``.
    """
    a_t = float(process.alpha(torch.tensor(t, dtype=torch.float64)))
    a_s = float(process.alpha(torch.tensor(s, dtype=torch.float64)))
    if isinstance(process, MaskedProcess):
        # masked position: unmask to v w.p. (a_s - a_t)/(1 - a_t) d_v, stay masked w.p. (1 - a_s)/(1 - a_t)
        p_unmask = (a_s - a_t) / (1.0 - a_t)
        probs = torch.cat([p_unmask * d, torch.full_like(d[..., :1], (1.0 - a_s) / (1.0 - a_t))], dim=-1)
        return torch.where((x == process.mask_id).unsqueeze(-1), probs, _onehot(x, process.num_states, probs.dtype))
    # uniform: p(y) ∝ P_{s->t}(y, x_t) [a_s w(y) + (1 - a_s)/N sum_v w(v)],  w(v) = d_v / q_t(x_t | v)
    n = process.vocab_size
    c_t = (1.0 - a_t) / n
    is_x = _onehot(x, n, d.dtype)
    w = d / (c_t + a_t * is_x)
    a = a_t / a_s
    back = a * is_x + (1.0 - a) / n  # P_{s->t}(y, x_t) as a function of y
    probs = back * (a_s * w + (1.0 - a_s) / n * w.sum(-1, keepdim=True))
    return probs / probs.sum(-1, keepdim=True)


def ancestral_probs(model: DiffusionModel, x: torch.Tensor, t: float, s: float, log_d: torch.Tensor | None = None) -> torch.Tensor:
    """Discretised reverse kernel with ``D_theta(x_t)`` in place of ``p(x_0 | x_t)``. ``[B, L, S]``."""
    if log_d is None:
        log_d = model.log_denoiser(x, _scalar(t, x))
    return reverse_kernel(model.process, x, log_d.exp(), t, s)


def analytic_probs(model: DiffusionModel, x: torch.Tensor, t: float, s: float) -> torch.Tensor:
    """SEDD's analytic (Tweedie) step: ``p(y) ∝ P_{s->t}(y, x_t) [P_{s->t}^{-1} applied to s(x_t)]_y``."""
    proc = model.process
    score = model.log_score(x, _scalar(t, x)).exp()
    a = float(proc.alpha(torch.tensor(t, dtype=torch.float64)) / proc.alpha(torch.tensor(s, dtype=torch.float64)))
    pi = proc.limit(x.device, score.dtype)
    # P^{-1} = (1/a) I - ((1 - a)/a) 1 pi^T, applied as a row vector to the score
    stag = score / a - (1.0 - a) / a * pi * score.sum(-1, keepdim=True)
    back = a * _onehot(x, proc.num_states, score.dtype) + (1.0 - a) * pi[x].unsqueeze(-1)
    probs = (back * stag).clamp_min(0.0)
    return probs / probs.sum(-1, keepdim=True).clamp_min(1e-30)


def _reverse_rates(model: DiffusionModel, x: torch.Tensor, t: float) -> torch.Tensor:
    """Reverse rates ``Q_t(y -> x) s(x)_y`` for ``y != x`` (0 on the diagonal). ``[B, L, S]``."""
    proc = model.process
    tt = _scalar(t, x)
    score = model.log_score(x, tt).exp()
    rate_in = proc.forward_rate_into(x, tt).unsqueeze(-1)  # sigma(t) pi(x)
    return (rate_in * score).scatter(-1, x.unsqueeze(-1), 0.0)


def _euler_from_rates(rates: torch.Tensor, x: torch.Tensor, h: float) -> torch.Tensor:
    jump = (h * rates).clamp_min(0.0)
    total = jump.sum(-1, keepdim=True)
    jump = torch.where(total > 1.0, jump / total, jump)
    stay = (1.0 - jump.sum(-1, keepdim=True)).clamp_min(0.0)
    return jump.scatter(-1, x.unsqueeze(-1), stay)


def _first_jump_from_rates(rates: torch.Tensor, x: torch.Tensor, h: float) -> torch.Tensor:
    total = rates.sum(-1, keepdim=True)
    stay = torch.exp(-h * total)
    # -expm1 rather than 1 - stay: for small h * total (many steps) the float32 difference loses digits
    jump = -torch.expm1(-h * total) * rates / total.clamp_min(1e-30)
    return jump.scatter(-1, x.unsqueeze(-1), stay)


def corrector_probs(model: DiffusionModel, x: torch.Tensor, t: float, h: float) -> torch.Tensor:
    """One step of the generator ``Q_t + Q̄_t`` (rates ``sigma(t) [pi(y) + pi(x) s(x)_y]``), first-jump form."""
    proc = model.process
    rates = _reverse_rates(model, x, t)
    sigma = float(proc.schedule.sigma(torch.tensor(t, dtype=torch.float64)))
    fwd = (sigma * proc.limit(x.device, rates.dtype)).expand_as(rates).scatter(-1, x.unsqueeze(-1), 0.0)
    return _first_jump_from_rates(rates + fwd, x, h)


def denoise_probs(model: DiffusionModel, x: torch.Tensor, t: float) -> torch.Tensor:
    """Final step: every position drawn from ``D_theta(x_t)`` (revealed masked tokens carried over)."""
    return _pad_clean(model.log_denoiser(x, _scalar(t, x)).exp(), model.num_states)


def kernel_probs(
    model: DiffusionModel,
    x: torch.Tensor,
    step: Step,
    cfg: SamplerConfig,
    *,
    fixed: torch.Tensor | None = None,
    log_d: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-position next-token probabilities ``[B, L, S]`` for ``step``.

    ``fixed [B, L]`` bool marks positions that never move (prompt prefix, infilling context).
    ``log_d`` optionally supplies a cached denoiser output for ancestral steps.
    """
    if step.kind == "predict":
        if cfg.name in ("ancestral", "ancestral_cached"):
            probs = ancestral_probs(model, x, step.t, step.s, log_d)
        elif cfg.name == "analytic":
            probs = analytic_probs(model, x, step.t, step.s)
        elif cfg.name == "euler":
            probs = _euler_from_rates(_reverse_rates(model, x, step.t), x, step.h)
        else:
            probs = _first_jump_from_rates(_reverse_rates(model, x, step.t), x, step.h)
    elif step.kind == "correct":
        probs = corrector_probs(model, x, step.t, step.h)
    elif step.kind == "denoise":
        probs = denoise_probs(model, x, step.t) if log_d is None else _pad_clean(log_d.exp(), model.num_states)
    else:  # pragma: no cover
        raise ValueError(f"unknown step kind {step.kind!r}")
    if fixed is not None:
        probs = torch.where(fixed.unsqueeze(-1), _onehot(x, model.num_states, probs.dtype), probs)
    return probs


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None, *, float64: bool = False) -> torch.Tensor:
    """Draw one index per row of ``probs [..., S]`` by inverse CDF (exact; optionally in float64)."""
    dtype = torch.float64 if float64 else torch.float32
    p = probs.to(dtype)
    cdf = p.cumsum(-1)
    u = rand(p.shape[:-1] + (1,), generator=generator, device=p.device, dtype=dtype) * cdf[..., -1:]
    idx = (cdf <= u).sum(-1)
    # never land on a zero-probability state through rounding at the top end
    idx = idx.clamp(max=p.shape[-1] - 1)
    bad = p.gather(-1, idx.unsqueeze(-1)).squeeze(-1) <= 0
    # unconditional where (no `if bad.any()`): a data-dependent branch would stall a GPU loop every step
    return torch.where(bad, p.argmax(-1), idx)


def step_log_prob(model, x, x_next, step, cfg, *, fixed=None, log_d=None) -> torch.Tensor:
    """``log p_theta(x_next | x)`` of one kernel step, summed over positions -> ``[B]`` (with gradient)."""
    probs = kernel_probs(model, x, step, cfg, fixed=fixed, log_d=log_d)
    lp = probs.gather(-1, x_next.unsqueeze(-1)).squeeze(-1).clamp_min(1e-30).log()
    if fixed is not None:
        lp = lp.masked_fill(fixed, 0.0)
    return lp.sum(-1)


def _check_cacheable(model: DiffusionModel, cfg: SamplerConfig):
    if cfg.name == "ancestral_cached" and (not isinstance(model.process, MaskedProcess) or model.time_conditioned):
        raise ValueError(
            "sampler 'ancestral_cached' reuses network outputs, which is only exact for a masked model whose "
            "denoiser ignores time; use 'ancestral' for this model"
        )


def initial_state(model: DiffusionModel, num_samples: int, length: int, *, device=None, generator=None,
                  fixed_tokens: torch.Tensor | None = None, fixed: torch.Tensor | None = None) -> torch.Tensor:
    """Prior draw ``[num_samples, length]`` with fixed positions already in place."""
    x = model.process.sample_limit((num_samples, length), device=device, generator=generator)
    if fixed is not None:
        x = torch.where(fixed, fixed_tokens.to(device), x)
    return x


def prefix_constraint(prefix: torch.Tensor, num_samples: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a prompt ``prefix [P]`` or ``[B, P]`` into ``(fixed [B, L] bool, fixed_tokens [B, L])``."""
    prefix = torch.as_tensor(prefix, dtype=torch.long)
    if prefix.dim() == 1:
        prefix = prefix.expand(num_samples, -1)
    if prefix.shape[0] != num_samples or prefix.shape[1] > length:
        raise ValueError(f"prefix of shape {tuple(prefix.shape)} does not fit {num_samples} samples of length {length}")
    fixed = torch.zeros(num_samples, length, dtype=torch.bool)
    fixed[:, : prefix.shape[1]] = True
    tokens = torch.zeros(num_samples, length, dtype=torch.long)
    tokens[:, : prefix.shape[1]] = prefix
    return fixed, tokens


@torch.no_grad()
def sample(
    model: DiffusionModel,
    *,
    num_samples: int,
    length: int,
    config: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
    device=None,
    fixed: torch.Tensor | None = None,
    fixed_tokens: torch.Tensor | None = None,
    keep_trajectory: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
) -> SampleOutput:
    """Draw ``num_samples`` sequences of ``length`` tokens.

    Args:
        fixed, fixed_tokens: ``[num_samples, length]`` constraint (see :func:`prefix_constraint`). For the
            masked process this is exact conditioning (with the true denoiser the output law converges to
            ``p0(. | fixed tokens)``); for the uniform process it is only approximate, because the denoiser
            reads a clamped token as possibly noisy (TV ~0.13 from the conditional in a 3x3 exact world).
        keep_trajectory: keep the state before every step (needed by the trajectory estimator).
        batch_size: draw in chunks of this many sequences (bounds memory); ``None`` = all at once.
    Returns:
        :class:`SampleOutput` with ``x [num_samples, length]``.
    """
    cfg = config or SamplerConfig()
    _check_cacheable(model, cfg)
    device = device or _model_device(model)
    if fixed is not None:
        fixed, fixed_tokens = fixed.to(device), fixed_tokens.to(device)
    if batch_size is not None and batch_size < num_samples:
        outs = []
        for lo in range(0, num_samples, batch_size):
            hi = min(num_samples, lo + batch_size)
            outs.append(sample(model, num_samples=hi - lo, length=length, config=cfg, generator=generator, device=device,
                               fixed=None if fixed is None else fixed[lo:hi],
                               fixed_tokens=None if fixed is None else fixed_tokens[lo:hi],
                               keep_trajectory=keep_trajectory, progress=progress))
        traj = None
        if keep_trajectory:
            traj = [torch.cat([o.trajectory[k] for o in outs]) for k in range(len(outs[0].trajectory))]
        return SampleOutput(torch.cat([o.x for o in outs]), outs[0].steps, traj, sum(o.network_passes for o in outs))

    passes0 = model.network_passes
    steps = plan_steps(cfg)
    x = initial_state(model, num_samples, length, device=device, generator=generator, fixed=fixed, fixed_tokens=fixed_tokens)
    traj = [x] if keep_trajectory else None
    cache = None  # [B, L, V] log-denoiser per sequence, for ancestral_cached
    iterator = steps
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(steps, desc=f"sampling ({cfg.name})", leave=False)
    for step in iterator:
        log_d = None
        if cfg.name == "ancestral_cached" and step.kind in ("predict", "denoise"):
            cache = _refresh_cache(model, x, step.t, cache)
            log_d = cache[0]
        probs = kernel_probs(model, x, step, cfg, fixed=fixed, log_d=log_d)
        x_new = sample_categorical(probs, generator, float64=cfg.float64)
        if cache is not None:
            changed = (x_new != x).any(-1)
            cache = (cache[0], cache[1] | changed)
        x = x_new
        if keep_trajectory:
            traj.append(x)
    return SampleOutput(x, steps, traj, model.network_passes - passes0)


def _model_device(model: DiffusionModel) -> torch.device:
    """Device of the model's parameters, else of its buffers (a parameter-free net, e.g. an exact
    denoiser), else the CPU."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _refresh_cache(model, x, t, cache):
    """Recompute the denoiser only for sequences whose tokens changed since their last pass."""
    if cache is None:
        return model.log_denoiser(x, _scalar(t, x)), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    log_d, stale = cache
    if stale.any():
        idx = stale.nonzero().squeeze(-1)
        log_d = log_d.clone()
        log_d[idx] = model.log_denoiser(x[idx], _scalar(t, x[idx]))
    return log_d, torch.zeros_like(stale)
