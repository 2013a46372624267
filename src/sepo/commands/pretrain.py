"""``sepo pretrain``: train a discrete diffusion model on a task's training split."""

from __future__ import annotations

import argparse

from sepo.errors import CheckpointError

from . import add_command, add_device_argument

NAME = "pretrain"


def add_parser(subparsers) -> argparse.ArgumentParser:
    from sepo.train.tasks import DNA_PRESETS, task_names

    tiny = DNA_PRESETS["tiny"]

    p = add_command(
        subparsers,
        NAME,
        help="pretrain a diffusion model on real data (DNA)",
        description="""
        Pretrain a discrete diffusion model on the training split of a task. A masked model is trained
        with MDLM's continuous-time NELBO, a uniform one (--process uniform) with SEDD's score entropy.
        Settings come from the task's preset (--preset), then a YAML file (--config, any field of
        PretrainConfig: see configs/pretrain_dna_tiny.yaml), then the options below.

        The --out folder becomes a model directory (config.json + safetensors weights, EMA weights
        included) that `sepo sample` and `sepo eval` read, plus metrics.jsonl, TensorBoard logs (tb/),
        loss.png, pretrain_config.yaml and train_state.pt. Checkpoints are written atomically every
        checkpoint_every steps; --resume continues an interrupted run exactly where its last checkpoint
        left it (optimizer, learning-rate schedule, EMA, data order and random state restored).

        Presets for --task dna: tiny (a few minutes on 2 CPU cores) and full (the paper-scale dilated
        CNN, for a GPU). For --task text: tiny (a 1.6 M-parameter DiT, 4,800 steps, about 15 minutes on 2 CPU cores)
        and small (a wider DiT, for a GPU).""",
        examples="""
        sepo pretrain --task dna --preset tiny --out runs/dna-tiny
        sepo pretrain --task dna --preset tiny --process uniform --out runs/dna-tiny-uniform
        sepo pretrain --task dna --preset full --device cuda --out runs/dna-full
        sepo pretrain --task text --preset tiny --out runs/text-tiny
        sepo pretrain --out runs/dna-full --resume      # continue after an interruption""",
    )
    p.add_argument("--task", default=None, help=f"what to train on: {', '.join(task_names())} (default: dna, or the config file's task)")
    p.add_argument("--preset", default=None, help="task preset giving every setting a starting value: dna: tiny or full; text: tiny or small "
                        "(default: tiny)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder to create (it becomes the model directory)")
    p.add_argument("--config", metavar="FILE.yaml", default=None, help="YAML file of PretrainConfig fields overriding the preset (default: none, the preset as is)")
    p.add_argument("--process", choices=["masked", "uniform"], default=None,
                   help="forward process: masked (MDLM NELBO) or uniform (score entropy) (default: masked)")
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default: from the preset; dna tiny: {tiny['steps']})")
    p.add_argument("--batch-size", type=int, default=None, help=f"sequences per step (default: from the preset; dna tiny: {tiny['batch_size']})")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate of AdamW (default: from the preset; dna tiny: {tiny['lr']:g})")
    p.add_argument("--seed", type=int, default=None, help="seed of initialisation, data order and noise (default: 0)")
    add_device_argument(p)
    p.add_argument("--num-threads", type=int, default=None, help="CPU threads for PyTorch (default: all available cores)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--force", action="store_true", help="start over even if --out already holds a run (its files are replaced)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to stdout)")
    return p


def run(args) -> int:
    from pathlib import Path

    from sepo.train.pretrain import CONFIG_FILE, pretrain, resolve_config, run_status
    from sepo.train.tasks import get_task
    from sepo.utils.config import load_yaml

    if args.resume and args.force:
        raise CheckpointError("--resume and --force contradict each other; pass one of them")
    overrides = {
        "process": args.process,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "device": None if args.device == "auto" and args.resume else args.device,
        "num_threads": args.num_threads,
    }
    out = Path(args.out)
    base = None
    if args.resume:
        status, step, total = run_status(out)
        if status == "unstarted":
            raise CheckpointError(f"{str(out)!r} holds a run stopped before its first checkpoint; start it over with --force")
        if status not in ("unfinished", "finished"):
            raise CheckpointError(f"nothing to resume in {str(out)!r} (no {CONFIG_FILE} / train_state.pt); run without --resume to start")
        base = load_yaml(out / CONFIG_FILE)
        if args.preset is not None and args.preset != base.get("preset"):
            raise CheckpointError(f"--resume continues the saved run (preset {base.get('preset')!r}); drop --preset {args.preset}")
    cfg = resolve_config(task=args.task, preset=args.preset, config_file=args.config, overrides=overrides, base=base)
    summary = pretrain(cfg, out, resume=args.resume, force=args.force, progress=not args.no_progress)
    unit = next((k for k in summary if k.startswith("val_bits_per_")), "val_bits")
    val = summary.get(unit)
    shown = f"{val:.4f}" if isinstance(val, float) else "n/a"
    print(f"done: {summary['steps']} steps in {summary['wall_time_s']:.0f} s; validation NELBO {shown} "
          f"{unit.replace('val_', '').replace('_', ' ')} (EMA); model directory: {out}")
    suffix = get_task(cfg.task).sample_suffix  # .fasta for DNA, .txt for text
    print(f"next: sepo sample --model {out} --n 64 --out {out}/samples{suffix}")
    return 0
