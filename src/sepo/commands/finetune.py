"""``sepo finetune``: SEPO fine-tuning (Algorithm 1) of a diffusion model toward a reward."""

from __future__ import annotations

import argparse

from sepo.errors import ConfigError

from . import add_command, set_threads

NAME = "finetune"

# CLI flag -> FinetuneConfig field (flags not given leave the preset / YAML value alone)
_FLAGS = {
    "estimator": str, "beta": float, "max_steps": int, "learning_rate": float, "num_generations": int,
    "num_groups": int, "num_iterations": int, "epsilon": float, "loss_type": str, "sampler": str,
    "sampling_steps": int, "corrector_steps": int, "kl_truncation_steps": int, "num_snis_samples": int,
    "sepo_positions": int, "seed": int,
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_command(
        subparsers,
        NAME,
        help="fine-tune a model toward a reward with policy gradients (SEPO)",
        description="""
        Algorithm 1 of Zekri & Boulle (2025): each iteration samples num_groups x num_generations sequences
        from the current model, scores them with the reward, standardises rewards within each group (GRPO
        advantages) and takes num_iterations epochs of the clipped policy-gradient loss, with a KL penalty
        (weight beta) to the frozen pretrained model along the sampler's last kl_truncation_steps steps.

        Estimators of the policy gradient (--estimator):
          sepo        concrete-score identity, local form: gradient of the model's pseudo-likelihood
                      (one pass per uniform-model sample; one pass per scored position for masked models)
          sepo-snis   the paper's self-normalised importance weights over Hamming neighbours (expensive)
          trajectory  exact log-probabilities of the sampler's own steps (DDPO-style; unbiased)
          elbo        Monte-Carlo ELBO in place of log-likelihood
        docs/estimators.md reports each one's measured bias and variance against the exact gradient.

        Tasks: toy (an exact world where the optimum pi_ref exp(r/beta)/Z is known: metrics.json reports the
        total variation reached), dna (a pretrained DNA model from `sepo pretrain`; rewards: gc, or
        oracle:DIR for the HepG2 activity of an oracle from `sepo oracle`), text (a text diffusion model from
        `sepo pretrain --task text`, or SEDD / MDLM weights; prompts are held-out sentence prefixes, a group is the
        completions of one prompt; reward: ngram, the model learned from the reward half of the human sentiment
        ratings, or hf:DIR, a local Hugging Face sequence classifier; the MiniLM and VADER judges only evaluate).
        Text-specific settings go in the YAML's `text:` section or --set text.FIELD=VALUE (docs/text.md).

        Configuration: a preset (--preset), then a YAML file (--config, any field of FinetuneConfig, see
        docs), then the flags below, then --set FIELD=VALUE. The run folder gets metrics.jsonl, TensorBoard
        logs (tb/), reward.png, the run state (state/, for --resume) and the fine-tuned model (model/).""",
        examples="""
        sepo finetune --task toy --estimator trajectory --beta 0.1 --seed 0 --out runs/toy-traj
        sepo finetune --task dna --base runs/dna-tiny --reward gc --preset tiny --out runs/dna-gc
        sepo finetune --task dna --base runs/dna-tiny --reward oracle:runs/oracle-A --out runs/dna-sepo --set sepo_positions=16
        sepo finetune --task dna --base runs/dna-tiny --reward gc --out runs/dna-gc --resume
        sepo finetune --task text --base runs/text-tiny --estimator trajectory --out runs/text-traj
        sepo finetune --task text --base models/sedd-medium --config configs/sedd_hh.yaml --out runs/sedd-hh""",
    )
    p.add_argument("--task", required=True, choices=("toy", "dna", "text"), help="what to fine-tune (see above)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (created; --resume continues it)")
    p.add_argument("--preset", default="tiny", help="preset of the task: toy: tiny; dna: tiny (2 CPU cores, minutes) or paper (GPU); text: tiny")
    p.add_argument("--config", metavar="YAML", default=None, help="YAML file of FinetuneConfig fields, applied over the preset")
    p.add_argument("--base", metavar="DIR", default=None, help="pretrained model directory (required for --task dna and text)")
    p.add_argument("--reward", default=None, help="dna: gc (default) or oracle:DIR; text: ngram (default) or hf:DIR (toy: its built-in reward table)")
    p.add_argument("--estimator", choices=("sepo", "sepo-snis", "trajectory", "elbo"), default=None,
                   help="policy-gradient estimator (default: the preset's, sepo)")
    p.add_argument("--beta", type=float, default=None, help="KL weight to the pretrained model")
    p.add_argument("--max-steps", type=int, default=None, help="iterations of Algorithm 1")
    p.add_argument("--learning-rate", type=float, default=None, help="Adam learning rate")
    p.add_argument("--num-generations", type=int, default=None, help="samples per group (B)")
    p.add_argument("--num-groups", type=int, default=None, help="groups per iteration (G)")
    p.add_argument("--num-iterations", type=int, default=None, help="epochs per batch (K)")
    p.add_argument("--epsilon", type=float, default=None, help="PPO clipping range")
    p.add_argument("--loss-type", choices=("sequence", "grpo", "dr_grpo"), default=None, help="ratio clipping per sequence or per unit")
    p.add_argument("--sampler", default=None, help="rollout sampler (ancestral, ancestral_cached, analytic, euler, tau_leaping)")
    p.add_argument("--sampling-steps", type=int, default=None, help="sampler steps per rollout (T)")
    p.add_argument("--corrector-steps", type=int, default=None, help="gradient-flow corrector steps per sampling step")
    p.add_argument("--kl-truncation-steps", type=int, default=None, help="the KL covers the last this-many steps")
    p.add_argument("--num-snis-samples", type=int, default=None, help="M for sepo-snis")
    p.add_argument("--sepo-positions", type=int, default=None, help="positions scored per sample by sepo on masked models")
    p.add_argument("--seed", type=int, default=None, help="random seed of the run")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="set any FinetuneConfig field, or text.FIELD for the text options (YAML syntax for the value), repeatable")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the config's, cpu)")
    p.add_argument("--num-threads", type=int, default=None, help="CPU threads for PyTorch (default: all cores; toy: 1)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--force", action="store_true", help="overwrite a finished run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _overrides(args) -> dict:
    import yaml

    out = {}
    for name in _FLAGS:
        v = getattr(args, name)
        if v is not None:
            out[name] = v
    if args.device is not None:
        out["device"] = args.device
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects FIELD=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run(args) -> int:
    import shutil
    from pathlib import Path

    from sepo.rl.recipes import finetune_config, run_finetune
    from sepo.utils.config import load_yaml, save_yaml

    yaml_data = dict(load_yaml(args.config)) if args.config else {}
    overrides = _overrides(args)
    task_options = None
    if args.task == "text":
        from sepo.tasks.text.finetune import check_base, text_options

        section = yaml_data.pop("text", None) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{args.config}: the 'text' section must be a mapping of text options")
        task_options = {**section, **{k[len("text."):]: overrides.pop(k) for k in list(overrides) if k.startswith("text.")}}
        if args.reward is not None:
            task_options["reward"] = args.reward
        text_options(task_options)  # validate before anything is loaded or written
    elif "text" in yaml_data or any(k.startswith("text.") for k in overrides):
        raise ConfigError("text options (the 'text' section, --set text.FIELD) are for --task text only")
    cfg = finetune_config(args.task, args.preset, yaml_data=yaml_data, overrides=overrides)
    if args.task == "text":
        check_base(args.base)
    set_threads(args.num_threads if args.num_threads is not None else (1 if args.task == "toy" else None))
    out = Path(args.out)
    state = out / "state"
    if args.resume and not (state / "trainer.pt").is_file():
        raise ConfigError(f"nothing to resume in {out}: no run state (state/trainer.pt); drop --resume to start a new run")
    if not args.resume and state.exists():
        if not args.force:
            raise ConfigError(f"{out} already holds a fine-tuning run; pass --resume to continue it or --force to start over")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(out / "finetune_config.yaml", cfg)
    reward = None
    if args.task == "dna":
        from sepo.rl.dna_recipe import dna_reward

        reward = dna_reward(args.reward or "gc")
    summary = run_finetune(args.task, cfg, out=out, base=args.base, reward=reward, progress=not args.no_progress,
                           resume=args.resume, task_options=task_options)
    shown = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    print("finetune done: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    for ev in summary.get("evaluation", []):
        parts = [f"{k}={v:.3g}" for k, v in ev.items() if isinstance(v, float)]
        print(f"held-out evaluation ({ev['prompts']} prompts, {ev['sampling_steps']} steps): " + ", ".join(parts))
    return 0
