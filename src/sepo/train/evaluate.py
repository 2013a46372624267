"""Held-out likelihood bounds of a diffusion model: the continuous-time NELBO in nats and bits per token.

For a masked SUBS model the bound is MDLM's continuous-time NELBO (Sahoo et al., 2024, eq. 10); for
any other parameterisation it is SEDD's diffusion-weighted denoising score entropy (Lou et al., 2024,
eq. 8). Both upper-bound ``-log p_theta(x_0)`` (up to the prior term, ~0 for these schedules), so
``bits_per_token = NELBO / (L log 2)`` is an upper bound on the model's code length; a uniform guess
over ``V`` tokens costs ``log2 V`` (2 bits per base for DNA).

Estimator: for each sequence, ``draws`` noise levels stratified over ``[t_min, 1]`` from one uniform
offset ``u`` (``t_r = (u + r / draws) mod 1``; antithetic / low-discrepancy times as in MDLM), each
with its own masking draw; the per-sequence estimate is their mean, and the reported number is the
mean over sequences with its standard error.
"""

from __future__ import annotations

import math

import torch

from sepo.diffusion import DiffusionModel, diffusion_loss

__all__ = ["stratified_times", "nelbo_per_sequence", "summarize_nelbo"]


def stratified_times(num_sequences: int, draws: int, *, generator: torch.Generator | None = None, device=None,
                     t_min: float = 1e-4) -> torch.Tensor:
    """Times ``[draws, N]``: for each sequence, ``draws`` evenly spaced points from a random offset."""
    u = torch.rand(num_sequences, generator=generator, device=device)
    offsets = torch.arange(draws, device=device, dtype=u.dtype)[:, None] / draws
    return t_min + (1.0 - t_min) * ((u[None, :] + offsets) % 1.0)


@torch.no_grad()
def nelbo_per_sequence(model: DiffusionModel, tokens: torch.Tensor, *, draws: int = 4, batch_size: int = 256,
                       generator: torch.Generator | None = None, device=None, progress: bool = False,
                       desc: str = "NELBO") -> torch.Tensor:
    """Monte-Carlo NELBO of every sequence ``tokens [N, L]`` -> ``[N]`` (nats, float64, on CPU).

    ``generator`` must live on ``device`` (it drives the times and the noising). The model is put in
    eval mode for the call and left as it was.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    n = tokens.shape[0]
    out = torch.zeros(n, dtype=torch.float64)
    times = stratified_times(n, draws, generator=generator, device=device)
    chunks = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=desc, unit="batch", leave=False)
    try:
        for lo in chunks:
            hi = min(n, lo + batch_size)
            x0 = tokens[lo:hi].to(device=device, dtype=torch.long)
            acc = torch.zeros(hi - lo, dtype=torch.float64, device=device)
            for r in range(draws):
                acc += diffusion_loss(model, x0, generator=generator, t=times[r, lo:hi]).double()
            out[lo:hi] = (acc / draws).cpu()
    finally:
        model.train(was_training)
    return out


def summarize_nelbo(per_sequence: torch.Tensor, *, length: int, unit: str = "token") -> dict:
    """Mean NELBO (nats per sequence), its standard error, and the same in bits per ``unit``."""
    x = per_sequence.double()
    n = x.numel()
    mean = float(x.mean())
    sem = float(x.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    scale = 1.0 / (length * math.log(2.0))
    return {
        "nelbo_nats_per_seq": mean,
        "nelbo_nats_per_seq_stderr": sem,
        f"bits_per_{unit}": mean * scale,
        f"bits_per_{unit}_stderr": sem * scale,
        "num_sequences": n,
    }
