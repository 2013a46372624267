"""``sepo demo``: the paper's DNA protocol end to end on 2 CPU cores, and the pieces it shares with
``sepo bench dna``.

The demo (Zekri & Boullé 2025, §4.2, on the offline DHS data of :mod:`sepo.tasks.dna`) runs six phases,
each printed as one progress line and each reused when its output is already complete, so a rerun
(after an interruption, or to print the table again) continues where it stopped:

1. **pretrain** a tiny masked DNA diffusion model on the generator split (``sepo pretrain --preset
   tiny``; an unfinished run resumes exactly; ``base`` reuses an existing model directory);
2. **oracles**: oracle A (the fine-tuning reward) and oracle B (evaluation only), CNN cell-type
   classifiers trained on disjoint chromosome sets (:mod:`sepo.tasks.dna.splits`);
3. **sample + evaluate the pretrained model** with oracle B (:func:`evaluate_sequences`);
4. **fine-tune with SEPO** against oracle A (the ``tiny`` preset of ``FINETUNE_PRESETS["dna"]``; an
   interrupted run resumes bit for bit);
5. **sample + evaluate the fine-tuned model** exactly as in phase 3 (same seed, sampler, sample count);
6. **report**: ``summary.json``, ``summary.md``, plots, and the before/after table on stdout.

The fine-tuning oracle is never the evaluation oracle: :func:`check_oracle_roles` refuses an oracle B that
is oracle A (or was trained on chromosomes that overlap A's), the leak of the reference code (METHOD.md §5.1).

Shared with the benchmark: :func:`ensure_pretrained`, :func:`ensure_oracle`, :class:`DnaEvaluator` (every
metric of the paper's table on one set of samples), :class:`RolloutMonitor` (scores each fine-tuning batch
with the evaluation oracle too, for the Pred-Activity-against-iteration curves, at no network cost) and
:func:`sample_tokens`.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from sepo.errors import CheckpointError, ConfigError

__all__ = [
    "DEMO_METRICS",
    "DemoConfig",
    "DnaEvaluator",
    "RolloutMonitor",
    "check_oracle_roles",
    "demo_table",
    "ensure_oracle",
    "ensure_pretrained",
    "run_demo",
    "reference_stats",
    "sample_tokens",
    "versions",
]

#: ``summary.json`` keys reported for each model (the acceptance reads the first two and ``unique_frac``).
DEMO_METRICS = ("pred_activity", "pred_activity_iqr", "celltype_acc", "kmer3_corr", "motif_corr", "app_log_lik",
                "diversity_hamming", "unique_frac")


def _say(say: Callable[[str], None] | None, text: str) -> None:
    if say is not None:
        say(text)


def versions() -> dict:
    """Versions of the software that produced a result (recorded next to it)."""
    import numpy as np

    import sepo

    return {"sepo": sepo.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


# --------------------------------------------------------------------------------------------------
# assets: the pretrained model and the two oracles


def ensure_pretrained(out_dir: str | Path, *, preset: str = "tiny", overrides: dict | None = None,
                      device: str = "cpu", progress: bool = True) -> str:
    """Make ``out_dir`` a finished pretraining run of the DNA task; returns what was done.

    ``"reused"`` (already finished), ``"resumed"`` (continued an interrupted run from its last checkpoint)
    or ``"trained"`` (started from scratch). ``overrides`` are :class:`~sepo.train.PretrainConfig` fields
    over ``preset``. A folder that holds something other than a pretraining run is refused.
    """
    from sepo.train.pretrain import pretrain, resolve_config, run_status

    out = Path(out_dir)
    status, _, _ = run_status(out)
    if status == "finished":
        return "reused"
    if status == "foreign":
        raise ConfigError(f"{out} holds files that are not a pretraining run; remove them or pass an existing model with --base")
    cfg = resolve_config(task="dna", preset=preset, overrides={**(overrides or {}), "device": device})
    if status == "unfinished":
        pretrain(cfg, out, resume=True, progress=progress)
        return "resumed"
    pretrain(cfg, out, force=status == "unstarted", progress=progress)
    return "trained"


def _oracle_weights_sha(path: Path) -> str | None:
    try:
        return json.loads((path / "oracle.json").read_text()).get("weights_sha256")
    except (OSError, json.JSONDecodeError):
        return None


def ensure_oracle(out_dir: str | Path, split: str, *, preset: str = "tiny", overrides: dict | None = None,
                  seed: int = 0, device: str = "cpu", table=None, progress: bool = True):
    """Load the oracle of chromosome set ``split`` from ``out_dir``, training it first if needed.

    Returns ``(oracle, "reused" | "trained")``. A directory holding the oracle of the *other* split is
    refused (it would make the fine-tuning oracle the evaluation oracle). ``table`` replaces the packaged
    DHS table (tests).
    """
    from sepo.tasks.dna.oracle import load_oracle, train_oracle

    out = Path(out_dir)
    if (out / "oracle.json").is_file():
        try:
            oracle = load_oracle(out, device=device)
        except CheckpointError:
            oracle = None  # half-written or corrupt: train it again below
        if oracle is not None:
            if str(oracle.meta.get("split", "")).upper() != split.upper():
                raise ConfigError(f"{out} holds oracle {oracle.meta.get('split')!r}, not oracle {split}; "
                                  "use a separate folder for each oracle")
            return oracle, "reused"
    oracle = train_oracle(split, preset=preset, seed=seed, out_dir=out, overrides=overrides, table=table, device=device,
                          progress=progress, log_stdout=False)
    return oracle, "trained"


def check_oracle_roles(oracle_a, oracle_b) -> None:
    """Refuse an evaluation oracle that is the fine-tuning oracle or shares training chromosomes with it.

    The paper's protocol (and DRAKES's) evaluates with an oracle the fine-tuning never saw; the public
    reference code fine-tunes against the evaluation oracle itself (METHOD.md §5.1), which inflates every
    reward metric. Oracles without provenance (not trained by ``sepo oracle``) are accepted as given.
    """
    if oracle_a is oracle_b:
        raise ConfigError("the fine-tuning oracle and the evaluation oracle are the same model; pass oracle B for evaluation")
    ma, mb = getattr(oracle_a, "meta", {}) or {}, getattr(oracle_b, "meta", {}) or {}
    sa, sb = str(ma.get("split", "")).upper(), str(mb.get("split", "")).upper()
    if sa and sb and sa == sb:
        raise ConfigError(f"both oracles were trained on chromosome set {sa}; the evaluation oracle must be oracle B "
                          "(sepo oracle --split B), never the fine-tuning oracle's set")
    ca = set((ma.get("chromosomes") or {}).get("train_chroms") or [])
    cb = set((mb.get("chromosomes") or {}).get("train_chroms") or [])
    if ca & cb:
        raise ConfigError(f"the two oracles share training chromosomes ({', '.join(sorted(ca & cb))}); "
                          "train them on the disjoint sets of sepo.tasks.dna.splits")


def oracle_summary(oracle) -> dict:
    """Held-out metrics and provenance of an oracle, for reports."""
    meta = getattr(oracle, "meta", {}) or {}
    test = (meta.get("metrics") or {}).get("test") or {}
    return {"split": meta.get("split"), "role": meta.get("role"),
            "train_chroms": (meta.get("chromosomes") or {}).get("train_chroms"),
            "test_auroc_hepg2": test.get("auroc_hepg2"), "test_acc_hepg2": test.get("acc_hepg2"),
            "test_acc": test.get("acc"), "data_sha256": (meta.get("data") or {}).get("sha256"), "seed": meta.get("seed")}


# --------------------------------------------------------------------------------------------------
# sampling and evaluation


def sample_tokens(model, *, n: int, sampler, seed: int, batch_size: int | None = 256, progress: bool = False):
    """``n`` sequences ``[n, L]`` from ``model`` with ``sampler`` (a SamplerConfig) and a fresh generator
    seeded with ``seed``; returns ``(tokens, info)`` as :func:`sepo.guidance.generate` does."""
    from sepo.guidance import generate

    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return generate("pretrained", model, n=n, length=model.config.length, sampler=sampler, generator=gen,
                    batch_size=batch_size, progress=progress)


class DnaEvaluator:
    """Every metric of the paper's DNA table for a set of generated sequences.

    Args:
        eval_oracle: the evaluation oracle (oracle B): Pred-Activity and cell-type accuracy.
        pretrained: the pretrained :class:`~sepo.diffusion.model.DiffusionModel` (App-Log-Lik).
        reference: reference tokens ``[R, L]`` (default: the top ``reference_size`` held-out chr1 HepG2 sites
            by DHS signal, :func:`~sepo.tasks.dna.metrics.top_hepg2_reference`).
        reference_size: size of the default reference set.
        elbo_steps: steps of the ancestral sampler whose ELBO is App-Log-Lik (the benchmark's ``T``).
        elbo_step_samples: ELBO terms evaluated per sequence (unbiased subsample; ``None``: all).
        table: DHS table for the default reference (tests).
    Calling it with ``tokens [N, L]`` and a ``seed`` (for the ELBO's noise) returns the dict of
    :data:`sepo.tasks.dna.metrics.METRIC_KEYS` plus ``n``.
    """

    def __init__(self, *, eval_oracle, pretrained, reference: torch.Tensor | None = None, reference_size: int = 640,
                 elbo_steps: int = 128, elbo_step_samples: int | None = 16, table=None):
        from sepo.tasks.dna.metrics import reference_profile, top_hepg2_reference
        from sepo.tasks.dna.motifs import load_jaspar

        self.eval_oracle = eval_oracle
        self.pretrained = pretrained
        self.motifs = load_jaspar()
        ref = reference if reference is not None else top_hepg2_reference(reference_size, table=table)
        self.reference = ref.cpu()
        self.profile = reference_profile(ref, motifs=self.motifs)
        self.elbo_steps = int(elbo_steps)
        self.elbo_step_samples = elbo_step_samples

    def __call__(self, tokens: torch.Tensor, *, seed: int = 0) -> dict:
        from sepo.tasks.dna.metrics import evaluate_sequences

        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        metrics = evaluate_sequences(tokens.cpu(), eval_oracle=self.eval_oracle, pretrained_model=self.pretrained,
                                     reference=self.profile, motifs=self.motifs, elbo_steps=self.elbo_steps,
                                     elbo_step_samples=self.elbo_step_samples, generator=gen)
        return {**metrics, "gc_frac": gc_fraction(tokens), "n": int(tokens.shape[0])}


    def reference_row(self) -> dict:
        """:func:`reference_stats` of this evaluator's reference set."""
        return reference_stats(self.eval_oracle, self.reference)


def reference_stats(eval_oracle, reference: torch.Tensor) -> dict:
    """Pred-Activity (median, IQR), cell-type accuracy and GC content of reference sequences ``[R, L]`` themselves
    under the evaluation oracle: what real top HepG2 sites score, for orientation next to generated ones."""
    from sepo.tasks.dna.metrics import celltype_accuracy, pred_activity

    median, iqr = pred_activity(eval_oracle, reference)
    return {"pred_activity": median, "pred_activity_iqr": iqr, "celltype_acc": celltype_accuracy(eval_oracle, reference),
            "gc_frac": gc_fraction(reference), "n": int(reference.shape[0])}


def gc_fraction(tokens: torch.Tensor) -> float:
    """Fraction of G and C over all positions of ``[N, L]`` ACGT tokens (C = 1, G = 2): a composition check that
    shows when a reward is being maximised by shifting base composition rather than by sequence features."""
    tokens = tokens.cpu()
    return float(((tokens == 1) | (tokens == 2)).double().mean())


class RolloutMonitor:
    """Scores every batch the fine-tuning reward sees with the evaluation oracle as well.

    Each iteration of Algorithm 1 (and of DRAKES) draws its batch from the current policy, so the
    evaluation oracle's median activity on that batch is an unbiased reading of the policy's
    Pred-Activity at that iteration, with no extra network pass. The reading is only logged: it never
    reaches the loss, the advantages or any other training signal.

    ``wrap_reward`` / ``wrap_soft_reward`` return the reward unchanged in value; ``evaluate`` is the
    trainers' ``evaluate(policy, iteration)`` hook and returns ``pred_activity`` (median over the batch),
    ``celltype_acc``, ``unique_frac``, ``wall_s`` (seconds since the monitor started, plus ``offset``) and
    ``cpu_s`` (process CPU seconds, the same).
    """

    def __init__(self, eval_oracle, *, wall_offset: float = 0.0, cpu_offset: float = 0.0):
        self.eval_oracle = eval_oracle
        self._last: dict = {}
        self._t0 = time.perf_counter() - wall_offset
        self._c0 = time.process_time() - cpu_offset

    def record(self, tokens: torch.Tensor) -> None:
        tokens = tokens.detach().cpu().long()
        act = self.eval_oracle.activity(tokens).double()
        prob = self.eval_oracle.celltype_prob(tokens)
        self._last = {"pred_activity": float(act.median()), "celltype_acc": float((prob > 0.5).double().mean()),
                      "unique_frac": torch.unique(tokens, dim=0).shape[0] / tokens.shape[0]}

    def wrap_reward(self, reward):
        """A :class:`~sepo.rl.rewards.Reward` with the same values that also records each batch."""
        from sepo.rl.rewards import Reward

        def fn(tokens):
            values = reward(tokens)
            self.record(tokens)
            return values

        return Reward(reward.name, fn)

    def wrap_soft_reward(self, soft_reward):
        """A differentiable reward ``probs [B, L, 4] -> [B]`` (as DRAKES uses) that also records each batch;
        the relaxed sequences are one-hot in value, so ``argmax`` gives the sampled tokens."""

        def fn(probs):
            self.record(probs.detach().argmax(-1))
            return soft_reward(probs)

        fn.__name__ = getattr(soft_reward, "__name__", "soft_reward")
        return fn

    def evaluate(self, policy, iteration: int) -> dict:
        return {**self._last, "wall_s": round(time.perf_counter() - self._t0, 3),
                "cpu_s": round(time.process_time() - self._c0, 3)}


def resume_offsets(run_dir: Path) -> tuple[float, float]:
    """``(wall_s, cpu_s)`` of the last record in ``run_dir/metrics.jsonl`` (0 when there is none), so the
    clocks of a resumed run continue from where they stopped."""
    from sepo.utils.logging import read_jsonl

    path = Path(run_dir) / "metrics.jsonl"
    recs = read_jsonl(path) if path.is_file() else []
    recs = [r for r in recs if "wall_s" in r]
    return (float(recs[-1]["wall_s"]), float(recs[-1].get("cpu_s", 0.0))) if recs else (0.0, 0.0)


# --------------------------------------------------------------------------------------------------
# the demo


@dataclass
class DemoConfig:
    """Settings of ``sepo demo`` (YAML via ``--config``, single fields via ``--set``).

    Attributes:
        base: an existing pretrained DNA model directory to use instead of phase 1 (``None``: pretrain one
            into ``<out>/pretrained``, or reuse it when finished).
        pretrain_preset: pretraining preset of the DNA task (``tiny``: a few CPU minutes).
        pretrain: :class:`~sepo.train.PretrainConfig` fields over that preset.
        oracle_preset: oracle preset (:data:`sepo.tasks.dna.oracle.PRESETS`).
        oracle: :class:`~sepo.tasks.dna.oracle.OracleConfig` fields over that preset.
        oracle_seed: seed of both oracles' training.
        finetune_preset: preset of ``FINETUNE_PRESETS["dna"]`` for the SEPO phase.
        finetune: :class:`~sepo.rl.config.FinetuneConfig` fields over that preset (the estimator stays
            ``sepo`` unless set here).
        num_samples: sequences drawn from each model for the before/after table.
        sample_seed: seed of those draws (the same for both models).
        reference_size: held-out top-HepG2 sites the 3-mer and motif correlations compare against.
        elbo_step_samples: ELBO terms per sequence for App-Log-Lik (``None``: all ``T + 1``).
        device: ``cpu``, ``cuda`` or ``auto``.
    """

    base: str | None = None
    pretrain_preset: str = "tiny"
    pretrain: dict = field(default_factory=dict)
    oracle_preset: str = "tiny"
    oracle: dict = field(default_factory=dict)
    oracle_seed: int = 0
    finetune_preset: str = "tiny"
    finetune: dict = field(default_factory=dict)
    num_samples: int = 640
    sample_seed: int = 12345
    reference_size: int = 640
    elbo_step_samples: int | None = 8
    device: str = "cpu"

    def __post_init__(self):
        for name in ("num_samples", "reference_size"):
            if int(getattr(self, name)) < 2:
                raise ConfigError(f"demo: {name} must be at least 2, got {getattr(self, name)}")
        if self.elbo_step_samples is not None and self.elbo_step_samples < 1:
            raise ConfigError(f"demo: elbo_step_samples must be >= 1 or null, got {self.elbo_step_samples}")


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def demo_table(rows: dict[str, dict]) -> str:
    """Markdown table of the before/after metrics (``name -> metrics`` with :data:`DEMO_METRICS`)."""
    head = ("| model | Pred-Activity (median) | IQR | cell-type acc | 3-mer corr | motif corr | App-Log-Lik | "
            "Hamming div. | unique | GC |")
    lines = [head, "|" + "---|" * 10]
    for name, m in rows.items():
        gc = m.get("gc_frac")
        lines.append(f"| {name} | {_fmt(m['pred_activity'], 2)} | {_fmt(m['pred_activity_iqr'], 2)} | "
                     f"{100 * m['celltype_acc']:.1f} % | {_fmt(m['kmer3_corr'])} | {_fmt(m['motif_corr'])} | "
                     f"{_fmt(m['app_log_lik'], 1)} | {_fmt(m['diversity_hamming'], 1)} | {100 * m['unique_frac']:.1f} % | "
                     + ("–" if gc is None else f"{100 * gc:.1f} %") + " |")
    return "\n".join(lines)


def _acceptance(pre: dict, post: dict) -> dict:
    gain = post["pred_activity"] - pre["pred_activity"]
    ok_gain = gain > pre["pred_activity_iqr"]
    ok_div = post["unique_frac"] >= 0.9
    return {"median_gain": gain, "pretrained_iqr": pre["pred_activity_iqr"], "gain_exceeds_iqr": bool(ok_gain),
            "unique_frac": post["unique_frac"], "unique_frac_at_least_0.9": bool(ok_div), "passed": bool(ok_gain and ok_div)}


def _fingerprint(model) -> str:
    from sepo.rl.trainer import weights_fingerprint

    return weights_fingerprint(model)[:16]


def _evaluate_phase(name: str, model, *, out: Path, cfg: DemoConfig, sampler, evaluator_factory, eval_key: dict,
                    progress: bool) -> dict:
    """Sample ``model`` and evaluate it, or reuse ``eval/<name>.json`` when it was made from the same model,
    evaluation oracle and settings (``eval_key``)."""
    from sepo.tasks.dna.data import decode, write_fasta
    from sepo.utils.io import write_json

    path = out / "eval" / f"{name}.json"
    key = {**eval_key, "model": _fingerprint(model)}
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:
            saved = {}
        if saved.get("key") == key:
            metrics = dict(saved["metrics"])
            fasta = out / "samples" / f"{name}.fasta"
            if "gc_frac" not in metrics and fasta.is_file():  # evaluated before the GC column existed
                from sepo.tasks.dna.data import encode, read_sequences

                metrics["gc_frac"] = gc_fraction(encode(read_sequences(fasta)[1]))
            return {**metrics, "_status": "reused"}
    tokens, info = sample_tokens(model, n=cfg.num_samples, sampler=sampler, seed=cfg.sample_seed, progress=progress)
    write_fasta(out / "samples" / f"{name}.fasta", decode(tokens), names=[f"{name}_{i}" for i in range(len(tokens))])
    evaluator = evaluator_factory()
    metrics = evaluator(tokens, seed=cfg.sample_seed)
    activity = [round(v, 4) for v in evaluator.eval_oracle.activity(tokens).tolist()]  # for the histogram
    write_json(path, {"key": key, "metrics": metrics, "sampling": {k: v for k, v in info.items() if k != "options"},
                      "activity": activity})
    return {**metrics, "_status": "computed"}


def _plots(out: Path, run_dir: Path) -> list[str]:
    """``curves.png`` (train reward and eval Pred-Activity against iteration) and ``activity_hist.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sepo.utils.logging import read_jsonl, save_figure

    written = []
    recs = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    if recs:
        its = [r["step"] for r in recs]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
        axes[0].plot(its, [r["reward_mean"] for r in recs], label="reward (oracle A, train)")
        pts = [(r["step"], r["pred_activity"]) for r in recs if "pred_activity" in r]
        if pts:
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], label="Pred-Activity (oracle B, eval)")
        axes[0].set_xlabel("iteration")
        axes[0].set_ylabel("HepG2 log-odds")
        axes[0].legend(fontsize=8)
        axes[0].grid(alpha=0.3)
        wall = [r.get("wall_s") for r in recs]
        if all(w is not None for w in wall):
            axes[1].plot(wall, [r["reward_mean"] for r in recs], label="reward (oracle A, train)")
            if pts:
                axes[1].plot([r["wall_s"] for r in recs if "pred_activity" in r], [p[1] for p in pts],
                             label="Pred-Activity (oracle B, eval)")
            axes[1].set_xlabel("wall-clock (s)")
            axes[1].legend(fontsize=8)
            axes[1].grid(alpha=0.3)
        fig.suptitle("SEPO fine-tuning: reward and evaluation-oracle activity of each batch")
        fig.tight_layout()
        save_figure(fig, out / "curves.png")
        written.append("curves.png")
    acts = {}
    for name in ("pretrained", "sepo"):
        p = out / "eval" / f"{name}.json"
        if p.is_file():
            acts[name] = json.loads(p.read_text()).get("activity") or []
    if acts:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for name, values in acts.items():
            ax.hist(values, bins=40, alpha=0.55, label=name)
        ax.axvline(0.0, color="k", lw=0.8)
        ax.set_xlabel("evaluation-oracle (B) HepG2 log-odds")
        ax.set_ylabel("sequences")
        ax.legend()
        ax.set_title("activity of generated sequences, before and after SEPO")
        fig.tight_layout()
        save_figure(fig, out / "activity_hist.png")
        written.append("activity_hist.png")
    return written


def run_demo(cfg: DemoConfig, out: str | Path, *, progress: bool = True, say: Callable[[str], None] | None = print,
             table=None) -> dict:
    """Run (or continue) the demo into ``out`` and return the summary (also ``out/summary.json``).

    ``table`` replaces the packaged DHS table for the oracles and the reference set (tests).
    """
    from sepo.models import load_model
    from sepo.rl.dna_recipe import dna_reward
    from sepo.rl.recipes import finetune_config, run_finetune
    from sepo.tasks.dna.metrics import top_hepg2_reference
    from sepo.train.pretrain import resolve_device
    from sepo.utils.config import save_yaml, to_dict
    from sepo.utils.io import write_json, write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = str(resolve_device(cfg.device))
    ft_cfg = finetune_config("dna", cfg.finetune_preset, overrides={**cfg.finetune, "device": device})
    save_yaml(out / "demo_config.yaml", cfg)
    phases: dict[str, dict] = {}
    try:  # a rerun keeps what the phases it reuses cost when they actually ran
        previous = json.loads((out / "summary.json").read_text()).get("phases", {})
    except (OSError, json.JSONDecodeError):
        previous = {}
    total = 6
    t_all = time.perf_counter()

    def phase(i: int, title: str, fn):
        _say(say, f"[{i}/{total}] {title} ...")
        t0 = time.perf_counter()
        status = fn()
        sec = time.perf_counter() - t0
        phases[title] = {"status": status, "seconds": round(sec, 1)}
        if "reused" in str(status) and title in previous:
            prev = previous[title]
            phases[title]["when_run"] = prev.get("when_run") or {"status": prev.get("status"), "seconds": prev.get("seconds")}
        _say(say, f"[{i}/{total}] {title}: {status} in {sec:.0f} s")

    # 1. pretrained model
    model_dir = Path(cfg.base) if cfg.base else out / "pretrained"
    if cfg.base:
        phase(1, f"pretrained model {model_dir}", lambda: "given (--base)")
    else:
        phase(1, f"pretrain tiny DNA model -> {model_dir}",
              lambda: ensure_pretrained(model_dir, preset=cfg.pretrain_preset, overrides=cfg.pretrain, device=device,
                                        progress=progress))
    pretrained, info = load_model(model_dir, device=device, use_ema=True)
    if (info.get("vocab") or {}).get("alphabet") != "ACGT":
        raise ConfigError(f"{model_dir} is not a DNA model; pass a model trained with `sepo pretrain --task dna`")

    # 2. oracles
    oracles = {}

    def train_oracles():
        statuses = []
        for split in ("A", "B"):
            oracles[split], st = ensure_oracle(out / f"oracle-{split}", split, preset=cfg.oracle_preset, overrides=cfg.oracle,
                                               seed=cfg.oracle_seed, device=device, table=table, progress=progress)
            statuses.append(f"{split} {st}")
        check_oracle_roles(oracles["A"], oracles["B"])
        return ", ".join(statuses)

    phase(2, "oracles A (fine-tuning reward) and B (evaluation only)", train_oracles)
    for split in "AB":
        auc = oracle_summary(oracles[split])["test_auroc_hepg2"]
        _say(say, f"      oracle {split}: HepG2-vs-rest AUROC on held-out chr1 = {_fmt(auc)}")

    sampler = ft_cfg.sampler_config()
    evaluator: list[DnaEvaluator] = []

    def get_evaluator() -> DnaEvaluator:
        if not evaluator:
            evaluator.append(DnaEvaluator(eval_oracle=oracles["B"], pretrained=pretrained, reference_size=cfg.reference_size,
                                          elbo_steps=ft_cfg.sampling_steps, elbo_step_samples=cfg.elbo_step_samples,
                                          table=table))
        return evaluator[0]

    eval_key = {"eval_oracle": _oracle_weights_sha(out / "oracle-B"), "n": cfg.num_samples, "seed": cfg.sample_seed,
                "sampler": asdict(sampler), "reference_size": cfg.reference_size, "elbo_step_samples": cfg.elbo_step_samples}
    results: dict[str, dict] = {}

    def evaluate(name, model):
        def fn():
            results[name] = _evaluate_phase(name, model, out=out, cfg=cfg, sampler=sampler, evaluator_factory=get_evaluator,
                                            eval_key=eval_key, progress=progress)
            return results[name].pop("_status")

        return fn

    # 3. the pretrained model's samples
    phase(3, f"sample {cfg.num_samples} sequences from the pretrained model and evaluate them with oracle B",
          evaluate("pretrained", pretrained))

    # 4. SEPO fine-tuning
    run_dir = out / "finetune"
    ft_summary: dict = {}

    def finetune():
        done = (run_dir / "metrics.json").is_file() and (run_dir / "model" / "config.json").is_file()
        saved_cfg = run_dir / "finetune_config.yaml"
        if saved_cfg.is_file():
            from sepo.utils.config import load_yaml

            saved = {k: v for k, v in load_yaml(saved_cfg).items() if k != "device"}
            if saved != {k: v for k, v in to_dict(ft_cfg).items() if k != "device"}:
                raise ConfigError(f"{run_dir} holds a fine-tuning run with other settings; pass a new --out or --force")
        if done:
            ft_summary.update(json.loads((run_dir / "metrics.json").read_text()))
            return "reused"
        resume = (run_dir / "state" / "trainer.pt").is_file()
        run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(saved_cfg, ft_cfg)
        wall0, cpu0 = resume_offsets(run_dir) if resume else (0.0, 0.0)
        monitor = RolloutMonitor(oracles["B"], wall_offset=wall0, cpu_offset=cpu0)
        reward = monitor.wrap_reward(dna_reward(f"oracle:{out / 'oracle-A'}"))
        ft_summary.update(run_finetune("dna", ft_cfg, out=run_dir, base=model_dir, reward=reward, progress=progress,
                                       resume=resume, evaluate=monitor.evaluate))
        return "resumed" if resume else "trained"

    phase(4, f"fine-tune with SEPO against oracle A ({ft_cfg.max_steps} iterations of {ft_cfg.batch_size} samples, "
             f"estimator {ft_cfg.estimator}) -> {run_dir}", finetune)
    finetuned, _ = load_model(run_dir / "model", device=device, use_ema=True)

    # 5. the fine-tuned model's samples
    phase(5, f"sample {cfg.num_samples} sequences from the fine-tuned model and evaluate them with oracle B",
          evaluate("sepo", finetuned))

    # 6. report
    summary = {
        "pretrained": {k: results["pretrained"].get(k) for k in DEMO_METRICS + ("gc_frac",)},
        "sepo": {k: results["sepo"].get(k) for k in DEMO_METRICS + ("gc_frac",)},
        "acceptance": _acceptance(results["pretrained"], results["sepo"]),
        "reference": reference_stats(oracles["B"], top_hepg2_reference(cfg.reference_size, table=table)),
        "num_samples": cfg.num_samples,
        "oracles": {s: oracle_summary(oracles[s]) for s in "AB"},
        "finetune": {"config": to_dict(ft_cfg), "run": ft_summary, "dir": str(run_dir)},
        "model": str(model_dir),
        "phases": phases,
        "seconds": round(time.perf_counter() - t_all, 1),
        "config": to_dict(cfg),
        "machine": _machine(device),
        "versions": versions(),
    }

    def report():
        summary["plots"] = _plots(out, run_dir)
        write_json(out / "summary.json", summary)
        write_text(out / "summary.md", _summary_markdown(summary))
        return "written"

    phase(6, f"report -> {out}/summary.json, summary.md, curves.png, activity_hist.png", report)
    _say(say, "")
    _say(say, demo_table({"pretrained": summary["pretrained"], "sepo": summary["sepo"]}))
    acc = summary["acceptance"]
    _say(say, "")
    _say(say, f"SEPO moved the median evaluation-oracle activity by {acc['median_gain']:+.2f} "
              f"(pretrained IQR {acc['pretrained_iqr']:.2f}); unique fraction {100 * acc['unique_frac']:.1f} %: "
              + ("acceptance met." if acc["passed"] else "acceptance NOT met."))
    return summary


def _machine(device: str) -> dict:
    from sepo.bench.measure import machine_info

    return machine_info(device)


def _summary_markdown(summary: dict) -> str:
    acc = summary["acceptance"]
    ft = summary["finetune"]["config"]
    m = summary["machine"]
    load = m.get("load_average")
    lines = [
        "# sepo demo: SEPO fine-tuning of a tiny DNA diffusion model toward HepG2 activity", "",
        f"{summary['num_samples']} sequences per model, evaluated with oracle B (never seen during fine-tuning). "
        "Pred-Activity = median HepG2 log-odds of oracle B; cell-type acc = fraction with p(HepG2) > 0.5 under oracle B; "
        "3-mer / motif corr against the top held-out chr1 HepG2 sites; App-Log-Lik = median ELBO (nats) under the "
        "pretrained model.", "",
        demo_table({"pretrained": summary["pretrained"], "sepo": summary["sepo"]}), "",
        "For orientation, the {n} reference sites themselves (top held-out chr1 HepG2 DHS sites) under oracle B: "
        "Pred-Activity {pa:.2f} (IQR {iqr:.2f}), cell-type acc {ca:.1f} %, GC {gc:.1f} %.".format(
            n=summary["reference"]["n"], pa=summary["reference"]["pred_activity"], iqr=summary["reference"]["pred_activity_iqr"],
            ca=100 * summary["reference"]["celltype_acc"], gc=100 * summary["reference"]["gc_frac"]), "",
        f"Acceptance: median gain {acc['median_gain']:+.2f} vs pretrained IQR {acc['pretrained_iqr']:.2f} "
        f"({'met' if acc['gain_exceeds_iqr'] else 'not met'}); unique fraction {100 * acc['unique_frac']:.1f} % "
        f"({'>=' if acc['unique_frac_at_least_0.9'] else '<'} 90 %).", "",
        f"Fine-tuning: estimator `{ft['estimator']}`, {ft['max_steps']} iterations, batch {ft['num_groups']} groups x "
        f"{ft['num_generations']}, K = {ft['num_iterations']}, lr {ft['learning_rate']:g}, beta {ft['beta']:g}, "
        f"loss `{ft['loss_type']}`, {ft['sampling_steps']} sampling steps, sepo_positions {ft['sepo_positions']}, "
        f"KL over the last {ft['kl_truncation_steps']} steps.", "",
        "Oracles (HepG2-vs-rest AUROC on held-out chr1): "
        + ", ".join(f"{s} {_fmt(o['test_auroc_hepg2'])}" for s, o in summary["oracles"].items()) + ".", "",
        "Phases: " + "; ".join(f"{name}: {p['status']}, {p['seconds']:.0f} s"
                               + (f" (when run: {p['when_run']['status']}, {p['when_run']['seconds']:.0f} s)" if p.get("when_run") else "")
                               for name, p in summary["phases"].items()) + ".", "",
        f"Machine: {m['cpu']}, {m['cpu_cores_usable']} cores, torch {m['torch']}"
        + (f", load average {load[0]:.1f}" if load else "") + f"; total {summary['seconds']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def clear_demo_dir(out: str | Path) -> None:
    """Remove a previous demo's output folder (only one that a demo wrote: it holds ``demo_config.yaml``)."""
    out = Path(out)
    if not out.exists():
        return
    if not (out / "demo_config.yaml").is_file():
        raise ConfigError(f"{out} exists but was not written by `sepo demo` (no demo_config.yaml); choose another --out")
    shutil.rmtree(out)
