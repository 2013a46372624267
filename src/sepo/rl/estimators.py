"""Policy-gradient estimators behind one interface.

Each estimator turns a rollout into per-sample *units* of log-probability ``logp [n, U]`` with weights
``w [n, U]`` such that ``sum_u w_u ∇ logp_u`` is its estimate of ``∇ log π_θ(x)`` at ``θ = θ_old``.
The trainer multiplies by the advantage and clips ratios ``exp(logp - old_logp)`` (per unit or per
sequence, see :mod:`sepo.rl.loss`). Random choices (positions, noise levels, neighbours) are drawn once
in :meth:`Estimator.prepare` and shared by ``θ_old`` and ``θ``, so ratios compare like with like.

* ``sepo`` — concrete-score policy gradient, local form (METHOD.md §2; Zekri & Boullé 2025). For each
  position ``i``, ``Σ_v s_θ(x)_{i,v} = 1/π_θ(x_i | x_{-i})``, so
  ``∇ log π_θ(x_i | x_{-i}) = -Σ_v q_{i,v} ∇ log s_θ(x)_{i,v}`` with ``q`` the model's own scores
  normalised per position — the gradient of the log pseudo-likelihood (Besag, 1975). Uniform models: one
  pass at ``x``. Masked models: ``π(x_i | x_{-i})`` is ``D_θ`` at ``x`` with position ``i`` masked, one pass
  per position; ``sepo_positions`` evaluates an unbiased random subset (rescaled). Exact when positions
  are independent under ``π_θ`` (or ``L = 1``); otherwise biased — measured in ``docs/estimators.md``.
* ``sepo-snis`` — the paper's global identity restricted to Hamming neighbours, with self-normalised
  importance weights: ``∇ log π(x) - Σ_{y ∈ C} q_y ∇ log π(y)``, ``C = {x} ∪ neighbours``, where each
  ``log π(y)`` is an ``M``-sample Monte-Carlo ELBO (common random numbers across candidates) and
  ``q ∝ π̂_old(y) / proposal(y)`` (detached). Costs ``(1 + #neighbours) * M`` passes per sample — the
  reference implementation's cost (METHOD.md §6), without its pitfalls (§5: no clamp on the target,
  the substituted position is the one scored, SUBS likelihoods rather than raw logits).
* ``trajectory`` — DDPO-style (Black et al., 2024): exact log-probabilities of the sampler's own steps,
  one unit per step. For masked SUBS models steps where nothing changed carry no ``θ`` and are skipped;
  ``trajectory_steps`` subsamples the remaining steps (rescaled, unbiased). Exact for the discretised
  sampler. (This is also the concrete-score identity applied at the noise levels the sampler visits.)
* ``elbo`` — Monte-Carlo ELBO surrogate (d1 / VRPO / SPG family: Zhao et al. 2025, Zhu et al. 2025):
  ``log π_θ(x) ≈ -NELBO`` with ``elbo_samples`` draws shared between ``θ`` and ``θ_old``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sepo.utils.random import rand

from sepo.diffusion.losses import mdlm_nelbo, score_entropy
from sepo.diffusion.model import DiffusionModel
from sepo.diffusion.process import MaskedProcess
from sepo.diffusion.sampling import step_log_prob

from .rollout import Rollout

__all__ = ["Estimator", "SepoEstimator", "SnisEstimator", "TrajectoryEstimator", "ElboEstimator", "make_estimator", "ESTIMATORS"]


@dataclass
class UnitLogProbs:
    """``logp [n, U]`` (with gradient when enabled) and weights ``w [n, U]`` (0 = padding)."""

    logp: torch.Tensor
    weight: torch.Tensor


class Estimator:
    name = "base"
    needs_trajectory = False

    def prepare(self, model: DiffusionModel, rollout: Rollout, generator: torch.Generator | None) -> UnitLogProbs:
        """Draw the shared noise into ``rollout.aux`` and return the old policy's units (no gradient)."""
        self.draw(model, rollout, generator)
        with torch.no_grad():
            return self.log_probs(model, rollout, torch.arange(rollout.size, device=rollout.x.device))

    def draw(self, model, rollout, generator) -> None:
        pass

    def log_probs(self, model: DiffusionModel, rollout: Rollout, idx: torch.Tensor) -> UnitLogProbs:
        raise NotImplementedError

    def passes_per_sample(self, rollout: Rollout) -> float:
        """Network passes per sample for one evaluation of :meth:`log_probs` (for reports)."""
        raise NotImplementedError


def _time(model: DiffusionModel, length: int, t: float | None) -> float:
    """Default evaluation time: the noise level where one of ``L`` positions is corrupted on average."""
    if t is not None:
        return float(t)
    target = 1.0 - 1.0 / max(length, 2)
    lo, hi = 0.0, 1.0
    for _ in range(60):  # bisection on the monotone alpha(t)
        mid = 0.5 * (lo + hi)
        if float(model.process.alpha(torch.tensor(mid, dtype=torch.float64))) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class SepoEstimator(Estimator):
    """Local concrete-score identity (pseudo-likelihood gradient). See module docstring."""

    name = "sepo"

    def __init__(self, *, positions: int | None = None, time: float | None = None):
        if positions is not None and positions < 1:
            raise ValueError(f"sepo_positions must be >= 1 or None (all positions), got {positions}")
        self.positions = positions
        self.time = time

    def draw(self, model, rollout, generator):
        if not isinstance(model.process, MaskedProcess):
            return
        free = rollout.free_positions()
        n, L = free.shape
        n_free = free.sum(-1)
        m = int(n_free.max()) if self.positions is None else min(self.positions, int(n_free.max()))
        # random order of free positions per sample; the first m are evaluated (without replacement)
        keys = rand((n, L), generator=generator, device=free.device)
        keys = keys.masked_fill(~free, 2.0)
        order = keys.argsort(-1)[:, :m]  # [n, m]
        valid = torch.arange(m, device=free.device)[None, :] < n_free[:, None]
        weight = (n_free.float() / torch.clamp(n_free, max=m).clamp_min(1).float())[:, None] * valid.float()
        rollout.aux["sepo_positions"] = order
        rollout.aux["sepo_weight"] = weight

    def log_probs(self, model, rollout, idx):
        x = rollout.x[idx]
        t = _time(model, x.shape[1], self.time)
        if not isinstance(model.process, MaskedProcess):
            # one pass: log π(x_i | x_{-i}) = -log Σ_v s(x)_{i,v}  (s_{i,x_i} = 1)
            log_s = model.log_score(x, torch.full((x.shape[0],), t, device=x.device))
            logp = -torch.logsumexp(log_s, dim=-1)
            return UnitLogProbs(logp, rollout.free_positions()[idx].float())
        pos = rollout.aux["sepo_positions"][idx]  # [n, m]
        weight = rollout.aux["sepo_weight"][idx]
        n, m = pos.shape
        xm = x.repeat_interleave(m, 0)  # [n*m, L], one masked position per row
        flat_pos = pos.reshape(-1)
        rows = torch.arange(n * m, device=x.device)
        xm[rows, flat_pos] = model.process.mask_id
        log_d = model.log_denoiser(xm, torch.full((n * m,), t, device=x.device))
        true_tok = x.repeat_interleave(m, 0)[rows, flat_pos]
        logp = log_d[rows, flat_pos, true_tok].reshape(n, m)
        return UnitLogProbs(logp, weight)

    def passes_per_sample(self, rollout):
        if not isinstance(rollout.aux.get("sepo_positions"), torch.Tensor):
            return 1.0
        return float(rollout.aux["sepo_positions"].shape[1])


class TrajectoryEstimator(Estimator):
    """Exact step log-probabilities of the recorded trajectory, one unit per step."""

    name = "trajectory"
    needs_trajectory = True

    def __init__(self, *, steps: int | None = None):
        if steps is not None and steps < 1:
            raise ValueError(f"trajectory_steps must be >= 1 or None (all steps), got {steps}")
        self.steps = steps

    def draw(self, model, rollout, generator):
        traj = torch.stack(rollout.trajectory)  # [K+1, n, L]
        free = rollout.free_positions()
        changed = ((traj[1:] != traj[:-1]) & free[None]).any(-1).T  # [n, K]
        skip_static = isinstance(model.process, MaskedProcess) and model.parameterization == "subs"
        active = changed if skip_static else torch.ones_like(changed)
        n, K = active.shape
        n_active = active.sum(-1)
        k = int(n_active.max()) if self.steps is None else min(self.steps, max(int(n_active.max()), 1))
        k = max(k, 1)
        keys = rand((n, K), generator=generator, device=active.device)
        keys = keys.masked_fill(~active, 2.0)
        order = keys.argsort(-1)[:, :k]  # chosen step indices, [n, k]
        valid = torch.arange(k, device=active.device)[None, :] < n_active[:, None]
        weight = (n_active.float() / torch.clamp(n_active, max=k).clamp_min(1).float())[:, None] * valid.float()
        rollout.aux["traj_steps"] = order
        rollout.aux["traj_weight"] = weight

    def log_probs(self, model, rollout, idx):
        order = rollout.aux["traj_steps"][idx]
        weight = rollout.aux["traj_weight"][idx]
        n, k = order.shape
        logp = torch.zeros(n, k, device=rollout.x.device)
        fixed = rollout.fixed[idx] if rollout.fixed is not None else None
        for step_i in torch.unique(order[weight > 0]).tolist():
            rows, cols = ((order == step_i) & (weight > 0)).nonzero(as_tuple=True)
            b = idx[rows]
            x_t = rollout.trajectory[step_i][b]
            x_s = rollout.trajectory[step_i + 1][b]
            lp = step_log_prob(model, x_t, x_s, rollout.steps[step_i], rollout.sampler,
                               fixed=None if fixed is None else fixed[rows])
            logp = logp.index_put((rows, cols), lp)
        return UnitLogProbs(logp, weight)

    def passes_per_sample(self, rollout):
        w = rollout.aux["traj_weight"]
        return float((w > 0).sum()) / w.shape[0]


def _nelbo_units(model: DiffusionModel, x: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-draw negative ELBO integrands for ``x [n, L]``, ``x_t [n, M, L]``, ``t [n, M]`` -> ``[n, M]``."""
    n, M, L = x_t.shape
    x0 = x[:, None, :].expand(n, M, L).reshape(n * M, L)
    loss = mdlm_nelbo if model.parameterization == "subs" else score_entropy
    return loss(model, x0, t.reshape(-1), x_t=x_t.reshape(n * M, L)).reshape(n, M)


def _draw_noise(model, x: torch.Tensor, M: int, generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Antithetic times and corrupted copies: ``x_t [n, M, L]``, ``t [n, M]`` and the keep mask ``[n, M, L]``."""
    n, L = x.shape
    u = rand((n, 1), generator=generator, device=x.device)
    t = 1e-4 + (1 - 1e-4) * ((u + torch.arange(M, device=x.device)[None] / M) % 1.0)
    x0 = x[:, None, :].expand(n, M, L).reshape(n * M, L)
    keep = rand((n * M, L), generator=generator, device=x.device) < model.process.alpha(t.reshape(-1))[:, None]
    noise = model.process.sample_limit((n * M, L), device=x.device, generator=generator)
    return torch.where(keep, x0, noise).reshape(n, M, L), t, keep.reshape(n, M, L)


class ElboEstimator(Estimator):
    """``log π(x) ≈ ELBO``: ``elbo_samples`` Monte-Carlo draws, shared between ``θ`` and ``θ_old``."""

    name = "elbo"

    def __init__(self, *, samples: int = 4):
        if samples < 1:
            raise ValueError(f"elbo_samples must be >= 1, got {samples}")
        self.samples = samples

    def draw(self, model, rollout, generator):
        x_t, t, _ = _draw_noise(model, rollout.x, self.samples, generator)
        if rollout.fixed is not None:  # prompt positions stay clean
            x_t = torch.where(rollout.fixed[:, None, :], rollout.x[:, None, :], x_t)
        rollout.aux["elbo_xt"], rollout.aux["elbo_t"] = x_t, t

    def log_probs(self, model, rollout, idx):
        neg = _nelbo_units(model, rollout.x[idx], rollout.aux["elbo_xt"][idx], rollout.aux["elbo_t"][idx])
        return UnitLogProbs(-neg, torch.full_like(neg, 1.0 / self.samples))

    def passes_per_sample(self, rollout):
        return float(self.samples)


class SnisEstimator(Estimator):
    """The paper's SNIS weights over Hamming neighbours (see module docstring). One unit per sample."""

    name = "sepo-snis"

    def __init__(self, *, samples: int = 4, neighbours: int | None = None):
        if samples < 1:
            raise ValueError(f"num_snis_samples must be >= 1, got {samples}")
        if neighbours is not None and neighbours < 1:
            raise ValueError(f"snis_neighbours must be >= 1 or None (all), got {neighbours}")
        self.samples = samples
        self.neighbours = neighbours

    def _candidates(self, model, rollout, generator):
        """``[n, C, L]`` candidates (``x`` first, then neighbours) and log proposal corrections ``[n, C]``."""
        x = rollout.x
        n, L = x.shape
        V = model.vocab_size
        free = rollout.free_positions()
        # all single substitutions (i, v) with v != x_i at free positions, enumerated as i * (V-1) + j
        total = L * (V - 1)
        k = total if self.neighbours is None else min(self.neighbours, total)
        keys = rand((n, total), generator=generator, device=x.device)
        pos_of = torch.arange(total, device=x.device) // (V - 1)
        keys = keys.masked_fill(~free[:, pos_of], 2.0)
        chosen = keys.argsort(-1)[:, :k]  # [n, k]
        n_valid = free[:, pos_of].sum(-1)  # neighbours available per sample
        pos = chosen // (V - 1)
        off = chosen % (V - 1)
        tok = (x.gather(1, pos) + 1 + off) % V  # every token but x_i
        cand = x[:, None, :].repeat(1, k + 1, 1)
        cand[:, 1:, :].scatter_(2, pos[..., None], tok[..., None])
        valid = torch.cat([torch.ones(n, 1, dtype=torch.bool, device=x.device),
                           torch.arange(k, device=x.device)[None] < n_valid[:, None]], 1)
        # uniform proposal over the neighbourhood: weight N/k on each sampled neighbour
        log_corr = torch.cat([torch.zeros(n, 1, device=x.device),
                              (n_valid.float() / torch.clamp(n_valid, max=k).clamp_min(1).float()).log()[:, None].expand(n, k)], 1)
        return cand, log_corr.masked_fill(~valid, float("-inf"))

    def draw(self, model, rollout, generator):
        cand, log_corr = self._candidates(model, rollout, generator)
        n, C, L = cand.shape
        # common random numbers: one noise draw per sample, reused for every candidate
        x_t, t, keep = _draw_noise(model, rollout.x, self.samples, generator)
        if isinstance(model.process, MaskedProcess):
            cand_t = torch.where(keep[:, None], cand[:, :, None, :], model.process.mask_id)  # [n, C, M, L]
        else:
            cand_t = torch.where(keep[:, None], cand[:, :, None, :], x_t[:, None])
        if rollout.fixed is not None:
            cand_t = torch.where(rollout.fixed[:, None, None, :], cand[:, :, None, :], cand_t)
        rollout.aux.update(snis_cand=cand, snis_cand_t=cand_t, snis_t=t, snis_log_corr=log_corr)
        with torch.no_grad():
            ll = self._candidate_loglik(model, rollout, torch.arange(n, device=rollout.x.device))
            rollout.aux["snis_q"] = torch.softmax(ll + log_corr, dim=-1)  # detached SNIS weights
            rollout.aux["snis_old_ll"] = ll

    def prepare(self, model, rollout, generator):
        # the old policy's candidate likelihoods were computed once in draw(); reuse them
        self.draw(model, rollout, generator)
        return self._surrogate(rollout.aux["snis_old_ll"], rollout.aux["snis_q"])

    def _candidate_loglik(self, model, rollout, idx):
        cand = rollout.aux["snis_cand"][idx]
        cand_t = rollout.aux["snis_cand_t"][idx]
        t = rollout.aux["snis_t"][idx]
        n, C, M, L = cand_t.shape
        neg = _nelbo_units(model, cand.reshape(n * C, L), cand_t.reshape(n * C, M, L), t.repeat_interleave(C, 0))
        return -neg.mean(-1).reshape(n, C)

    @staticmethod
    def _surrogate(ll: torch.Tensor, q: torch.Tensor) -> UnitLogProbs:
        """``log π̂(x) - Σ_y q_y log π̂(y)`` per sample as one unit."""
        surrogate = ll[:, 0] - (q * ll.masked_fill(q == 0, 0.0)).sum(-1)
        return UnitLogProbs(surrogate[:, None], torch.ones_like(surrogate[:, None]))

    def log_probs(self, model, rollout, idx):
        return self._surrogate(self._candidate_loglik(model, rollout, idx), rollout.aux["snis_q"][idx])

    def passes_per_sample(self, rollout):
        return float(rollout.aux["snis_cand_t"].shape[1] * self.samples)


ESTIMATORS = ("sepo", "sepo-snis", "trajectory", "elbo")


def make_estimator(name: str, **kw) -> Estimator:
    """Build an estimator by name with its options (see :class:`sepo.rl.config.FinetuneConfig`)."""
    if name == "sepo":
        return SepoEstimator(positions=kw.get("sepo_positions"), time=kw.get("sepo_time"))
    if name == "sepo-snis":
        return SnisEstimator(samples=kw.get("num_snis_samples", 4), neighbours=kw.get("snis_neighbours"))
    if name == "trajectory":
        return TrajectoryEstimator(steps=kw.get("trajectory_steps"))
    if name == "elbo":
        return ElboEstimator(samples=kw.get("elbo_samples", 4))
    raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
