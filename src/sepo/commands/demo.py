"""``sepo demo``: the README's main job (see :mod:`sepo.demo`)."""

from __future__ import annotations

import argparse

from sepo.errors import ConfigError

from . import add_command, add_device_argument, set_threads

NAME = "demo"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_command(
        subparsers,
        NAME,
        help="the main job: pretrain a tiny DNA model, train two oracles, fine-tune with SEPO, before/after table",
        description="""
        The paper's DNA experiment end to end, sized for 2 CPU cores (about 15 minutes on an idle machine):
          1. pretrain a tiny masked DNA diffusion model on real DHS sites (or reuse --base);
          2. train oracle A (the fine-tuning reward) and oracle B (evaluation only) on disjoint chromosomes;
          3. sample the pretrained model and evaluate it with oracle B;
          4. fine-tune it with SEPO toward oracle A's HepG2 activity;
          5. sample the fine-tuned model and evaluate it the same way;
          6. write summary.json, summary.md and plots into --out and print the before/after table
             (Pred-Activity, cell-type accuracy, 3-mer and motif correlation, App-Log-Lik, diversity).

        Every phase prints one progress line and is reused when its output is complete, so running the
        same command again continues an interrupted demo (or just prints the table again). Settings: a
        YAML file (--config) of DemoConfig fields (sepo.demo), then --set FIELD=VALUE; for example
        --set finetune.max_steps=40 or --set num_samples=256.""",
        examples="""
        sepo demo --out runs/demo
        sepo demo --out runs/demo --base runs/dna-tiny          # reuse a pretrained model
        sepo demo --out runs/demo-gpu --device cuda --set finetune.max_steps=200""",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder: every artifact and plot goes here")
    p.add_argument("--base", metavar="DIR", default=None, help="use this pretrained DNA model instead of pretraining one (default: pretrain into OUT/pretrained, or reuse it)")
    p.add_argument("--config", metavar="YAML", default=None, help="YAML file of DemoConfig fields (default: none, the defaults of sepo.demo.DemoConfig)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="set a DemoConfig field (dotted keys reach finetune.*, pretrain.*, oracle.*), repeatable (default: none)")
    add_device_argument(p)
    p.add_argument("--num-threads", type=int, default=None, help="CPU threads for PyTorch (default: all available cores)")
    p.add_argument("--force", action="store_true", help="delete a previous demo in --out and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (the phase lines are still printed)")
    return p


def parse_sets(items: list[str]) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}`` (values parsed as YAML)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects FIELD=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run(args) -> int:
    from sepo.demo import DemoConfig, clear_demo_dir, run_demo
    from sepo.utils.config import from_dict, load_yaml, merge_overrides

    data = load_yaml(args.config) if args.config else {}
    data = merge_overrides(data, parse_sets(args.set))
    if args.base is not None:
        data["base"] = args.base
    data["device"] = args.device
    cfg = from_dict(DemoConfig, data, where="demo config")
    set_threads(args.num_threads)
    if args.force:
        clear_demo_dir(args.out)
    run_demo(cfg, args.out, progress=not args.no_progress)
    return 0
