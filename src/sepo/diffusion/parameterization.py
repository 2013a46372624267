"""Two views of one reverse process: the clean-token denoiser and the concrete score.

* **Denoiser** ``D(x_t)_{i,v}``: probability that the clean token at position ``i`` is ``v`` given
  ``x_t``. For the masked process this is MDLM's SUBS parameterisation (Sahoo et al., 2024): the
  ``[MASK]`` logit is removed and unmasked positions carry their token over.
* **Concrete score** ``s(x_t)_{i,y} = p_t(x_t with x_t^i := y) / p_t(x_t)`` (SEDD, Lou et al., 2024),
  with ``s(x_t)_{i, x_t^i} = 1``.

For an interpolating process with marginal posterior ``D`` the two are linked exactly by

    s(x_t)_{i,y} = sum_v D(x_t)_{i,v} q_t(y | v) / q_t(x_t^i | v)

wherever ``q_t(x_t^i | v) > 0`` for every ``v``: at every position of the uniform process and at a masked
position, where it reads ``s_{i,v} = alpha_t / (1 - alpha_t) D_{i,v}`` (METHOD.md §1). At a *revealed*
position of the masked process the true ratios are not functions of ``D(x_t)`` (which is one-hot there);
they never matter, since the forward rate into a revealed token is zero (no reverse rate, no loss weight),
and we return the formula's values ``s_{i,[MASK]} = (1 - alpha_t)/alpha_t``, ``s_{i,v} = 0`` for other
clean ``v``, as a convention.

All functions work in log space; shapes: ``x_t [B, L]``, ``alpha [B]``, log-denoiser ``[B, L, V]``,
log-score ``[B, L, S]`` (``S = V + 1`` masked, ``S = V`` uniform).
"""

from __future__ import annotations

import torch

from .process import MaskedProcess, Process

NEG_INF = float("-inf")

__all__ = [
    "subs_log_denoiser",
    "log_score_from_log_denoiser",
    "log_denoiser_from_log_score",
]


def subs_log_denoiser(logits: torch.Tensor, x_t: torch.Tensor, mask_id: int) -> torch.Tensor:
    """MDLM SUBS: ``logits [B, L, V or V+1]`` -> log ``D [B, L, V]``.

    The ``[MASK]`` logit (if present) is dropped (``-inf``); unmasked positions get a one-hot on their
    own token (log 0 = ``-inf`` elsewhere) so the model can never change a revealed token.
    """
    vocab = mask_id
    log_d = torch.log_softmax(logits[..., :vocab].float(), dim=-1)
    unmasked = x_t != mask_id
    # no `if unmasked.any()`: that would make the host wait for the GPU on every call
    carry = torch.full_like(log_d, NEG_INF)
    carry.scatter_(-1, x_t.clamp(max=vocab - 1).unsqueeze(-1), 0.0)
    return torch.where(unmasked.unsqueeze(-1), carry, log_d)


def _alpha(alpha: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return alpha.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def log_score_from_log_denoiser(log_d: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, process: Process) -> torch.Tensor:
    """Concrete score implied by a denoiser (exact for the true marginal posterior). -> ``[B, L, S]``."""
    a = _alpha(alpha, log_d)  # [B,1,1]
    if isinstance(process, MaskedProcess):
        mask = process.mask_id
        masked = (x_t == mask).unsqueeze(-1)
        log_ratio = torch.log(a) - torch.log1p(-a)  # log alpha/(1-alpha)
        # masked position: s_v = alpha/(1-alpha) D_v, s_mask = 1
        at_mask = torch.cat([log_d + log_ratio, torch.zeros_like(log_d[..., :1])], dim=-1)
        # unmasked position w: s_mask = (1-alpha)/alpha, s_w = 1, other clean tokens 0
        at_clean = torch.full_like(at_mask, NEG_INF)
        at_clean[..., mask] = (-log_ratio).squeeze(-1).expand_as(at_clean[..., mask])
        at_clean.scatter_(-1, x_t.clamp(max=mask - 1).unsqueeze(-1), 0.0)
        return torch.where(masked, at_mask, at_clean)
    # uniform: s_y = alpha r_y + c sum_v r_v with r_v = D_v / q_t(x_t | v), c = (1 - alpha)/N
    n = process.vocab_size
    c = (1.0 - a) / n
    is_xt = torch.nn.functional.one_hot(x_t, n).bool()
    log_q_xt = torch.where(is_xt, torch.log(a + c), torch.log(c)).expand_as(log_d)
    log_r = log_d - log_q_xt
    log_sum_r = torch.logsumexp(log_r, dim=-1, keepdim=True)
    log_s = torch.logaddexp(torch.log(a) + log_r, torch.log(c) + log_sum_r)
    return torch.where(is_xt, torch.zeros_like(log_s), log_s)


def log_denoiser_from_log_score(log_s: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, process: Process) -> torch.Tensor:
    """Inverse of :func:`log_score_from_log_denoiser` -> log ``D [B, L, V]``.

    For an imperfect score the implied ``D`` is clipped at zero and renormalised (the masked case
    normalises ``s_v`` over clean ``v``, which is exact for a true score).
    """
    if isinstance(process, MaskedProcess):
        mask = process.mask_id
        log_d = torch.log_softmax(log_s[..., :mask].float(), dim=-1)
        return subs_log_denoiser(log_d, x_t, mask)  # carries revealed tokens over
    n = process.vocab_size
    a = _alpha(alpha, log_s)
    c = (1.0 - a) / n
    s = log_s.exp()
    is_xt = torch.nn.functional.one_hot(x_t, n).bool()
    q_xt = torch.where(is_xt, a + c, c)  # q_t(x_t | v) as a function of v
    # sum_v D_v = 1 fixes R = sum_v r_v: c R = sum_v s_v q_t(x_t|v) - alpha
    c_r = (s * q_xt).sum(-1, keepdim=True) - a
    d = ((s - c_r) * q_xt / a).clamp_min(0.0)
    d = d / d.sum(-1, keepdim=True).clamp_min(1e-30)
    return torch.log(d)
