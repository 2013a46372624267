"""``sepo oracle``: train a DNA cell-type oracle (A: fine-tuning reward, B: evaluation) on its chromosomes."""

from __future__ import annotations

import argparse

from . import add_command, add_device_argument

NAME = "oracle"


def _split(value: str) -> str:
    v = value.strip().upper()
    if v not in ("A", "B"):
        raise argparse.ArgumentTypeError(f"invalid split {value!r}: choose A (fine-tuning oracle) or B (evaluation oracle)")
    return v


def add_parser(subparsers) -> argparse.ArgumentParser:
    from sepo.tasks.dna.oracle import PRESETS

    p = add_command(
        subparsers,
        NAME,
        help="train a DNA cell-type oracle (reward A or evaluator B)",
        description="""
        Train a CNN classifier of the four cell lines (HepG2, K562, GM12878, hESC) on the DHS sites of
        one chromosome split and save it as an oracle. Its activity score (the reward of fine-tuning
        and the Pred-Activity metric) is the HepG2 log-odds, logit_HepG2 - logsumexp(other logits).

        Oracle A (the fine-tuning oracle) trains on chr4 6 8 12 15 16 17 19 20 21 and selects its best
        epoch on chr2; oracle B (the evaluation oracle, never seen during fine-tuning) trains on
        chr5 7 9 10 11 13 14 18 X Y and selects on chr3 + chr22. chr1 is held out from both and from the
        generator; the oracle reports its HepG2-vs-rest AUROC and accuracy there and on its validation
        chromosomes.

        The --out folder receives oracle.safetensors (weights), oracle.json (architecture, chromosome
        split, seed, sha256 of the data table and of the weights, metrics) and metrics.jsonl (one line
        per epoch; TensorBoard logs in tb/). Presets: tiny (about 3 minutes on 2 CPU cores, AUROC about
        0.92 on chr1) and full (wider and deeper, for a GPU).""",
        examples="""
        sepo oracle --split A --preset tiny --seed 0 --out runs/oracle-A
        sepo oracle --split B --preset tiny --seed 0 --out runs/oracle-B
        sepo oracle --split B --preset full --device cuda --out runs/oracle-B-full""",
    )
    p.add_argument("--split", type=_split, required=True, metavar="{A,B}",
                   help="which oracle: A = fine-tuning oracle (reward), B = evaluation oracle (disjoint chromosomes)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="architecture and training schedule: tiny (CPU minutes) or full (GPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the oracle into (created; existing oracle files are replaced)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the training chromosomes (default: from the preset; tiny: 6)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per optimisation step (default: from the preset; tiny: 128)")
    p.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate (default: from the preset; tiny: 0.003)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimisation steps, for a quick check (default: all epochs)")
    p.add_argument("--max-train", type=int, default=None, help="train on a random subset of this many sites, for a quick check (default: all)")
    add_device_argument(p)
    p.add_argument("--num-threads", type=int, default=None, help="CPU threads for PyTorch (default: all available cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (per-epoch logs still go to stdout)")
    return p


def run(args) -> int:
    from sepo.tasks.dna.oracle import train_oracle

    from . import resolve_device, set_threads

    set_threads(args.num_threads)
    device = resolve_device(args.device)
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "max_steps": args.max_steps,
                 "max_train": args.max_train}
    oracle = train_oracle(args.split, preset=args.preset, seed=args.seed, out_dir=args.out, overrides=overrides,
                          device=device, progress=not args.no_progress)
    m = oracle.meta["metrics"]
    secs = oracle.meta["training"]["seconds"]
    print(f"oracle {args.split} ({oracle.meta['role']}) trained in {secs:.0f} s -> {args.out}")
    for part, label in (("test", "chr1 test"), ("val", "validation " + "+".join(oracle.meta["chromosomes"]["val_chroms"]))):
        r = m[part]
        print(f"  {label:<24} AUROC(HepG2 vs rest) {r['auroc_hepg2']:.3f}  accuracy {r['acc']:.3f}  "
              f"HepG2>0.5 accuracy {r['acc_hepg2']:.3f}  mean activity HepG2 {r['activity_hepg2']:+.2f} / other {r['activity_other']:+.2f}")
    return 0
