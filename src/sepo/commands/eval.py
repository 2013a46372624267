"""``sepo eval``: held-out NELBO (bits per token) of a model, and sample-quality metrics of a sample file."""

from __future__ import annotations

import argparse

from sepo.errors import ConfigError

from . import add_command, add_device_argument, set_threads

NAME = "eval"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_command(
        subparsers,
        NAME,
        help="held-out NELBO in bits per base, and sample metrics",
        description="""
        Estimate a model's negative evidence lower bound (NELBO) on a data split - for DNA the held-out
        chr1 test split - and report it in nats per sequence and in bits per token (bits per base for
        DNA; a uniform guess costs 2.0 bits per base). Masked SUBS models use MDLM's continuous-time
        NELBO, other models SEDD's score entropy; both upper-bound the negative log-likelihood.

        The estimate averages --draws noise levels per sequence, stratified over [0, 1] from a random
        offset (antithetic times), each with its own masking draw; the standard error over sequences
        is reported with it. With --samples FILE it also compares that sample file with the split
        (DNA: Pearson correlation of 3-mer counts). The result is printed and, with --json, written
        atomically to a JSON file.""",
        examples="""
        sepo eval --model runs/dna-tiny --split test --json runs/dna-tiny/eval.json
        sepo eval --model runs/dna-tiny --samples runs/dna-tiny/samples.fasta --json eval.json
        sepo eval --model runs/dna-tiny --split validation --draws 16 --max-sequences 1000""",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory (the --out folder of `sepo pretrain`)")
    p.add_argument("--split", choices=["train", "validation", "test"], default="test", help="data split to evaluate on")
    p.add_argument("--json", default=None, metavar="FILE", help="write the results to this JSON file (default: print only)")
    p.add_argument("--samples", default=None, metavar="FILE", help="sample file (FASTA for DNA) to compare with the split (default: none)")
    p.add_argument("--draws", type=int, default=4, help="noise levels per sequence in the NELBO estimate")
    p.add_argument("--max-sequences", type=int, default=0, help="evaluate the first N sequences of the split only (0: all)")
    p.add_argument("--batch-size", type=int, default=256, help="sequences per forward pass")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise levels and masks")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--task", default=None, help="task of the model (default: the one recorded in its checkpoint)")
    add_device_argument(p)
    p.add_argument("--num-threads", type=int, default=None, help="CPU threads for PyTorch (default: all available cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    import json
    import time

    import torch

    from sepo.models import load_model
    from sepo.train.evaluate import nelbo_per_sequence, summarize_nelbo
    from sepo.train.tasks import task_for_model
    from sepo.utils.io import write_json

    for name in ("draws", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_sequences < 0:
        raise ConfigError(f"--max-sequences must be >= 0, got {args.max_sequences}")
    set_threads(args.num_threads)
    from . import resolve_device

    device = resolve_device(args.device)
    model, info = load_model(args.model, device=device, use_ema=not args.no_ema)
    task = task_for_model(info, name=args.task)
    samples = task.read_samples(args.samples) if args.samples else None  # validate before the long part
    if samples is not None and samples.shape[1] != task.length:
        raise ConfigError(f"{args.samples}: samples have length {samples.shape[1]}, the task's sequences {task.length}")
    tokens = task.load_split(args.split)
    if args.max_sequences:
        tokens = tokens[: args.max_sequences]
    t0 = time.time()
    generator = torch.Generator(device=device).manual_seed(args.seed)
    per_seq = nelbo_per_sequence(model, tokens, draws=args.draws, batch_size=args.batch_size, generator=generator,
                                 device=device, progress=not args.no_progress, desc=f"NELBO ({args.split})")
    result = {
        "model": str(args.model),
        "task": task.name,
        "split": args.split,
        **summarize_nelbo(per_seq, length=task.length, unit=task.unit),
        "bound": "mdlm_nelbo" if model.parameterization == "subs" else "score_entropy",
        "draws": args.draws,
        "seed": args.seed,
        "weights": "ema" if info.get("used_ema") else "raw",
        "seconds": round(time.time() - t0, 2),
    }
    nelbo_report = task.extra.get("nelbo_report")  # task-specific readings of the bound (text: perplexity)
    if nelbo_report is not None:
        result.update(nelbo_report(tokens, per_seq))
    if samples is not None:
        result["samples"] = {"path": str(args.samples), "num_samples": int(samples.shape[0]),
                             **task.sample_metrics(samples, tokens)}
    if args.json:
        write_json(args.json, result)
    print(json.dumps(result, indent=2))
    return 0
