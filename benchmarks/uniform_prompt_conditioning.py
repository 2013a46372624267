"""Does training a *uniform* diffusion model with a clean prompt prefix in a fraction of batches make prompted
sampling exact?  Measured in an exact world (L = 3, |V| = 3), with the Bayes-optimal denoiser of each training
mixture — what a perfect network would learn — so the answer does not depend on optimisation.

Training mixture: with probability ``f`` the prefix (position 1) is kept clean, otherwise every position is noised.
The optimal denoiser is ``p_f(x0 | x_t) ∝ p0(x0) [f q_clean(x_t | x0) + (1 - f) q(x_t | x0)]``. For each ``f`` we
report the total variation of the exact law of prompted sampling (x^1 clamped to 2, 64 ancestral steps) from the
true conditional ``p0(· | x^1 = 2)``, and of unprompted sampling from ``p0``.

    python benchmarks/uniform_prompt_conditioning.py
"""

from __future__ import annotations

import torch
from torch import nn

from sepo.diffusion import DiffusionModel, SamplerConfig, make_process
from sepo.tasks.toy.exact import _likelihoods, enumerate_states, exact_output_distribution, total_variation

L, V = 3, 3


class MixtureDenoiser(nn.Module):
    """Optimal denoiser of the training mixture (prefix clean with probability ``f``)."""

    def __init__(self, p0: torch.Tensor, process, f: float):
        super().__init__()
        self.process, self.f = process, f
        self.register_buffer("log_p0", p0.log())
        self.register_buffer("clean", enumerate_states(L, V), persistent=False)

    def forward(self, x_t, sigma_bar):
        alpha = torch.exp(-sigma_bar.to(torch.float64))
        lik = _likelihoods(self.process, x_t, self.clean, alpha)  # [B, N0, L]
        noisy = lik.prod(-1)
        clean_first = (x_t[:, None, 0] == self.clean[None, :, 0]).to(torch.float64) * lik[..., 1:].prod(-1)
        post = self.log_p0.exp()[None] * (self.f * clean_first + (1 - self.f) * noisy)
        post = post / post.sum(-1, keepdim=True)
        d = torch.einsum("bn,nlv->blv", post, nn.functional.one_hot(self.clean, V).to(post.dtype))
        return d.clamp_min(1e-300).log().float()


def main() -> None:
    g = torch.Generator().manual_seed(0)
    p0 = torch.softmax(1.5 * torch.randn(V**L, generator=g, dtype=torch.float64), 0)  # tests/conftest.random_p0
    process = make_process("uniform", V, "loglinear")
    clean = enumerate_states(L, V)
    cond = p0 * (clean[:, 0] == 2)
    cond = cond / cond.sum()
    cfg = SamplerConfig(name="ancestral", steps=64)
    print("| f (prefix clean in training) | TV prompted vs p0(.|x1=2) | TV unprompted vs p0 |")
    print("|---|---|---|")
    for f in (0.0, 0.1, 0.25, 0.5, 0.9, 1.0):
        model = DiffusionModel(MixtureDenoiser(p0, process, f), process, parameterization="denoiser", time_conditioned=True)
        prompted = exact_output_distribution(model, L, cfg, fixed=torch.tensor([True, False, False]),
                                             fixed_tokens=torch.tensor([2, 0, 0]))
        free = exact_output_distribution(model, L, cfg)
        print(f"| {f} | {total_variation(prompted, cond):.3f} | {total_variation(free, p0):.3f} |")


if __name__ == "__main__":
    main()
