"""``sepo sample``: draw sequences from a trained model and write them to a file (FASTA for DNA)."""

from __future__ import annotations

import argparse

from sepo.errors import ConfigError, DataError

from . import add_command, add_device_argument, set_threads

NAME = "sample"
SAMPLER_CHOICES = ("auto", "ancestral", "ancestral_cached", "analytic", "euler", "tau_leaping")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_command(
        subparsers,
        NAME,
        help="sample sequences from a model (writes FASTA for DNA)",
        description="""
        Draw sequences from a model directory (written by `sepo pretrain`) by running its reverse
        diffusion process, and write them atomically to --out (FASTA for DNA models). The EMA weights
        are used when the model has them.

        Samplers: ancestral (exact reverse kernel of the discretised process, MDLM/D3PM), ancestral_cached
        (the same, reusing the network output while a sequence does not change; masked models without
        time input), analytic (SEDD's Tweedie step), euler and tau_leaping (first-order and first-jump
        steps of the reverse rates). auto picks ancestral_cached when it is exact for the model, else
        ancestral. --corrector-steps adds predictor-corrector (gradient-flow) steps after each step.
        --prefix fixes the first tokens of every sample (prompted generation).""",
        examples="""
        sepo sample --model runs/dna-tiny --n 64 --seed 0 --out runs/dna-tiny/samples.fasta
        sepo sample --model runs/dna-tiny --n 640 --sampler ancestral --steps 256 --float64 --out s.fasta
        sepo sample --model runs/dna-tiny --n 8 --prefix ACGTACGT --corrector-steps 1 --out prompted.fasta""",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory (the --out folder of `sepo pretrain`)")
    p.add_argument("--out", required=True, metavar="FILE", help="sample file to write (FASTA for DNA); replaced atomically")
    p.add_argument("--n", type=int, default=64, help="number of sequences to draw")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, model and options -> same samples)")
    p.add_argument("--sampler", choices=SAMPLER_CHOICES, default="auto", help="reverse-process sampler (see above)")
    p.add_argument("--steps", type=int, default=128, help="predictor steps from t=1 to t=0")
    p.add_argument("--corrector-steps", type=int, default=0, help="corrector steps after each predictor step (0: none)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per batch, bounds memory (default: all at once)")
    p.add_argument("--float64", action="store_true", help="draw tokens with float64 probabilities (avoids float32 sampling bias at many steps)")
    p.add_argument("--no-final-denoise", action="store_true", help="skip the final step that denoises every remaining position")
    p.add_argument("--prefix", default=None, metavar="TOKENS", help="fixed start of every sample, e.g. ACGT for DNA (default: none)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--task", default=None, help="task of the model (default: the one recorded in its checkpoint)")
    add_device_argument(p)
    p.add_argument("--num-threads", type=int, default=None, help="CPU threads for PyTorch (default: all available cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def pick_sampler(name: str, model) -> str:
    """``auto`` -> ``ancestral_cached`` when caching is exact (masked process, no time input), else ``ancestral``."""
    from sepo.diffusion import MaskedProcess

    if name != "auto":
        return name
    return "ancestral_cached" if isinstance(model.process, MaskedProcess) and not model.time_conditioned else "ancestral"


def run(args) -> int:
    import time

    import torch

    from sepo.diffusion import SamplerConfig, prefix_constraint, sample
    from sepo.models import load_model
    from sepo.train.tasks import task_for_model

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    set_threads(args.num_threads)
    from . import resolve_device

    device = resolve_device(args.device)
    model, info = load_model(args.model, device=device, use_ema=not args.no_ema)
    task = task_for_model(info, name=args.task)
    length = model.config.length
    try:
        cfg = SamplerConfig(name=pick_sampler(args.sampler, model), steps=args.steps, corrector_steps=args.corrector_steps,
                            final_denoise=not args.no_final_denoise, float64=args.float64)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    fixed = fixed_tokens = None
    if args.prefix:
        prefix = task.encode_prefix(args.prefix)
        if prefix.numel() > length:
            raise DataError(f"--prefix has {prefix.numel()} tokens but the model generates {length}; shorten it")
        fixed, fixed_tokens = prefix_constraint(prefix, args.n, length)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    t0 = time.time()
    try:
        out = sample(model, num_samples=args.n, length=length, config=cfg, generator=generator, device=device,
                     fixed=fixed, fixed_tokens=fixed_tokens, batch_size=args.batch_size, progress=not args.no_progress)
    except ValueError as e:  # e.g. a sampler that does not fit this model
        raise ConfigError(str(e)) from None
    tokens = out.x.cpu()
    if ((tokens < 0) | (tokens >= task.vocab_size)).any():
        left = int(((tokens < 0) | (tokens >= task.vocab_size)).sum())
        raise ConfigError(f"{left} positions are still noisy after sampling (--no-final-denoise with too few steps?); "
                          "drop --no-final-denoise or raise --steps")
    task.write_samples(args.out, tokens)
    print(f"wrote {args.n} samples of length {length} to {args.out} (sampler {cfg.name}, {cfg.steps} steps, "
          f"{out.network_passes} network passes, {time.time() - t0:.1f} s)")
    return 0
