"""CNN cell-type oracles for the DHS sites: the reward (oracle A) and the evaluator (oracle B).

Each oracle is a small convolutional classifier ``one-hot [B, 200, 4] -> 4 logits`` over the cell
lines ``(HepG2, K562, GM12878, hESC)`` trained with cross-entropy on its own chromosomes
(:mod:`sepo.tasks.dna.splits`). It plays the role of the paper's Enformer-based reward and ATAC
classifier (Zekri & Boullé 2025 §4.2; DRAKES, Wang et al. 2025), which cannot be downloaded here.

**Activity** (the continuous HepG2-specific score used as reward and as Pred-Activity) is the HepG2
log-odds

    activity(x) = logit_HepG2(x) - logsumexp_{c != HepG2} logit_c(x) = log p_HepG2(x) - log(1 - p_HepG2(x)),

with ``p = softmax(logits)``. It is unbounded in both directions, monotone in ``p_HepG2`` (so AUROC is
the same for either score), 0 exactly where HepG2 and "any other cell line" are equally likely, and
it does not saturate the way a probability does, so a policy gradient keeps getting signal.
``celltype_prob(x) = p_HepG2(x)``; the cell-type accuracy metric thresholds it at 0.5.

The scoring network is reverse-complement symmetric: in eval mode its logits average those of ``x``
and of ``rc(x)`` (DNA is double stranded; DeepSEA, Zhou & Troyanskaya 2015, averages both strands the
same way); training sees one random strand per sequence. ``rc`` of a one-hot
(or soft one-hot) input is a flip of both the position and the ACGT axes, so ``log_probs`` stays
differentiable in its input, which reward back-propagation baselines (DRAKES) rely on.

Files of a trained oracle (``out_dir``): ``oracle.safetensors`` (weights), ``oracle.json`` (architecture,
chromosome split, seed, data sha256, metrics, sha256 of the weights), ``metrics.jsonl`` (training log).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sepo.errors import CheckpointError, ConfigError, DataError
from sepo.utils.config import from_dict
from sepo.utils.io import atomic_path, write_json

from .data import CELL_LINES, DnaTable, load_dhs
from .metrics import auroc
from .splits import oracle_data, oracle_split

__all__ = [
    "HEPG2",
    "PRESETS",
    "CellTypeCNN",
    "Oracle",
    "OracleConfig",
    "evaluate_classifier",
    "fit_classifier",
    "hepg2_log_odds",
    "load_oracle",
    "save_oracle",
    "train_oracle",
]

HEPG2 = CELL_LINES.index("HepG2")
FORMAT = "sepo-dna-oracle"
FORMAT_VERSION = 1
WEIGHTS_FILE = "oracle.safetensors"
CONFIG_FILE = "oracle.json"


@dataclass
class OracleConfig:
    """Architecture and training of a cell-type oracle.

    Fields:
        channels: filters in every convolution.
        first_kernel: width (bp) of the first convolution, long enough to span a TF motif.
        kernel: width of the later convolutions (applied after pooling, so they see ``pool * kernel`` bp).
        layers: number of convolution layers (>= 1); layers after the second are dilated (2, 4, ...).
        pool: max-pool factor after the first convolution.
        hidden: width of the hidden layer of the classification head.
        dropout: dropout before and inside the head (training only).
        rc_average: in eval mode (all scoring), average the logits of the sequence and of its reverse
            complement, which makes every score strand-symmetric.
        epochs: passes over the training chromosomes.
        batch_size: sequences per optimisation step.
        lr: peak AdamW learning rate (linear warm-up over the first 5 % of steps, then cosine decay to 0).
        weight_decay: AdamW weight decay.
        rc_augment: train on a random strand of each sequence (reverse-complement augmentation), so the
            network learns both strands at the cost of one forward pass.
        max_steps: stop after this many optimisation steps (``None``: run all epochs); for quick tests.
        max_train: use at most this many training sequences (random subset; ``None``: all).
        eval_batch: sequences per forward pass when evaluating.
    """

    channels: int = 64
    first_kernel: int = 15
    kernel: int = 5
    layers: int = 2
    pool: int = 4
    hidden: int = 64
    dropout: float = 0.2
    rc_average: bool = True
    epochs: int = 6
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-2
    rc_augment: bool = True
    max_steps: int | None = None
    max_train: int | None = None
    eval_batch: int = 1024

    def __post_init__(self):
        for name in ("channels", "first_kernel", "kernel", "layers", "pool", "hidden", "epochs", "batch_size", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1 or null, got {self.max_steps}")
        if self.max_train is not None and self.max_train < 2:
            raise ValueError(f"max_train must be at least 2 or null, got {self.max_train}")

    def architecture(self) -> dict:
        keys = ("channels", "first_kernel", "kernel", "layers", "pool", "hidden", "dropout", "rc_average")
        return {k: getattr(self, k) for k in keys}


PRESETS: dict[str, dict] = {
    # ~3 min on 2 CPU cores; HepG2-vs-rest AUROC on chr1 measured in docs (>= 0.85 required).
    "tiny": {},
    # A GPU (or a patient CPU): wider, deeper, longer.
    "full": {"channels": 256, "first_kernel": 19, "layers": 4, "hidden": 256, "dropout": 0.3, "epochs": 30,
             "batch_size": 256, "lr": 1e-3},
}


def preset_config(preset: str, overrides: dict | None = None) -> OracleConfig:
    if preset not in PRESETS:
        raise ConfigError(f"unknown oracle preset {preset!r}; choose one of {', '.join(PRESETS)}")
    data = dict(PRESETS[preset])
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_dict(OracleConfig, data, where=f"oracle preset {preset!r}")


# --------------------------------------------------------------------------------------------------
# network


def reverse_complement_onehot(x: torch.Tensor) -> torch.Tensor:
    """``[B, L, 4]`` (soft) one-hot over ACGT -> its reverse complement (A<->T, C<->G is a flip of the
    channel axis in ACGT order)."""
    return x.flip(-2).flip(-1)


class CellTypeCNN(nn.Module):
    """``[B, L, 4]`` (soft) one-hot -> ``[B, 4]`` cell-type logits.

    conv(first_kernel) -> ReLU -> maxpool(pool) -> [conv(kernel, dilation) -> ReLU, residual] x (layers-1)
    -> concat(global max, global mean) -> dropout -> linear(hidden) -> ReLU -> dropout -> linear(4).
    """

    def __init__(self, cfg: OracleConfig, num_classes: int = len(CELL_LINES)):
        super().__init__()
        c = cfg.channels
        self.rc_average = cfg.rc_average
        self.first = nn.Conv1d(4, c, cfg.first_kernel, padding=cfg.first_kernel // 2)
        self.pool = nn.MaxPool1d(cfg.pool, ceil_mode=True)
        self.convs = nn.ModuleList()
        for i in range(cfg.layers - 1):
            dilation = 2**i  # 1, 2, 4, ...: the receptive field grows geometrically
            pad = dilation * (cfg.kernel // 2)
            self.convs.append(nn.Conv1d(c, c, cfg.kernel, padding=pad, dilation=dilation))
        self.norms = nn.ModuleList(nn.BatchNorm1d(c) for _ in range(cfg.layers - 1))
        self.head = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear(2 * c, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, num_classes),
        )

    def _strand(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(F.relu(self.first(x.transpose(1, 2))))
        for conv, norm in zip(self.convs, self.norms):
            h = h + F.relu(norm(conv(h)))  # residual: deeper presets train as easily as the tiny one
        pooled = torch.cat([h.amax(-1), h.mean(-1)], dim=-1)
        return self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.rc_average or self.training:
            return self._strand(x)  # training sees one strand (a random one with ``rc_augment``): half the cost
        # one batched pass over both strands (cheaper than two calls)
        both = self._strand(torch.cat([x, reverse_complement_onehot(x)], dim=0))
        fwd, rev = both.chunk(2, dim=0)
        return 0.5 * (fwd + rev)


def hepg2_log_odds(log_probs: torch.Tensor) -> torch.Tensor:
    """Activity from ``[B, 4]`` log-probabilities (differentiable): ``log p_H - log(1 - p_H)``.

    Computed as ``logit_H - logsumexp(other logits)``, which is the same quantity for log-softmax inputs
    and is stable even when ``p_H`` is within float precision of 0 or 1.
    """
    others = torch.cat([log_probs[:, :HEPG2], log_probs[:, HEPG2 + 1 :]], dim=1)
    return log_probs[:, HEPG2] - torch.logsumexp(others, dim=1)


def _check_tokens(tokens: torch.Tensor) -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype not in (torch.long, torch.int32, torch.int64):
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise DataError(f"oracle input must be a [batch, length] integer tensor of ACGT tokens, got {shape}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > 3):
        raise DataError("oracle input holds token ids outside 0..3 (A, C, G, T); unmask/decode sequences before scoring")


class Oracle(nn.Module):
    """A trained cell-type oracle. Every scoring method accepts tokens ``[B, L]`` long on any device.

    Attributes: ``net`` (:class:`CellTypeCNN`), ``config`` (:class:`OracleConfig`), ``meta`` (the provenance
    dict saved in ``oracle.json``; empty for an untrained oracle).
    """

    def __init__(self, config: OracleConfig, *, meta: dict | None = None):
        super().__init__()
        self.config = config
        self.net = CellTypeCNN(config)
        self.meta = dict(meta or {})

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: tokens ``[B, L]`` or (soft) one-hot ``[B, L, 4]`` -> logits ``[B, 4]`` (differentiable)."""
        if x.dim() == 2:
            _check_tokens(x)
            x = F.one_hot(x.to(self.device).long(), 4).float()
        elif x.dim() != 3 or x.shape[-1] != 4:
            raise DataError(f"oracle input must be tokens [B, L] or one-hot [B, L, 4], got shape {tuple(x.shape)}")
        return self.net(x.to(self.device, torch.float32))

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, 4]`` (soft) one-hot or ``[B, L]`` tokens -> ``[B, 4]`` log-probabilities over
        ``CELL_LINES``; differentiable in ``x`` (for reward back-propagation)."""
        return torch.log_softmax(self.logits(x), dim=-1)

    @torch.no_grad()
    def _batched(self, tokens: torch.Tensor, fn) -> torch.Tensor:
        _check_tokens(tokens)
        was_training = self.training
        self.eval()  # scores are always those of the strand-averaged network without dropout
        try:
            out = [fn(self.log_probs(chunk)) for chunk in tokens.split(self.config.eval_batch)]
        finally:
            self.train(was_training)
        return torch.cat(out).to(tokens.device) if out else torch.zeros(0, device=tokens.device)

    def activity(self, tokens: torch.Tensor) -> torch.Tensor:
        """HepG2 log-odds ``[B]`` (see module docstring) of tokens ``[B, L]``; no gradient."""
        return self._batched(tokens, hepg2_log_odds)

    def celltype_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """``p_HepG2`` ``[B]`` of tokens ``[B, L]``; no gradient."""
        return self._batched(tokens, lambda lp: lp[:, HEPG2].exp())

    def predict_log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Batched, gradient-free ``log_probs`` of tokens ``[B, L]`` -> ``[B, 4]``."""
        return self._batched(tokens, lambda lp: lp)


# --------------------------------------------------------------------------------------------------
# training


def _labels(table: DnaTable) -> torch.Tensor:
    """Cell-line indices ``[N]`` (positions in ``CELL_LINES``) of the table's sites."""
    index = {c: i for i, c in enumerate(CELL_LINES)}
    return torch.as_tensor(np.array([index[c] for c in table.cell_line], dtype=np.int64))


@torch.no_grad()
def evaluate_classifier(oracle: Oracle, tokens: torch.Tensor, labels: torch.Tensor) -> dict:
    """Held-out metrics of ``oracle`` on tokens ``[N, L]`` with cell-line labels ``[N]`` (indices of CELL_LINES).

    ``auroc_hepg2``: AUROC of the activity score for HepG2 vs the other three lines; ``acc``: 4-class
    accuracy (argmax); ``acc_hepg2``: accuracy of the binary decision ``p_HepG2 > 0.5``; ``loss``: mean
    cross-entropy; ``activity_hepg2`` / ``activity_other``: mean activity of HepG2 / non-HepG2 sites.
    """
    lp = oracle.predict_log_probs(tokens).cpu()  # eval mode inside
    labels = labels.cpu()
    act = hepg2_log_odds(lp)
    is_h = labels == HEPG2
    return {
        "n": int(labels.numel()),
        "loss": float(F.nll_loss(lp, labels)),
        "auroc_hepg2": auroc(act, is_h),
        "acc": float((lp.argmax(-1) == labels).float().mean()),
        "acc_hepg2": float(((lp[:, HEPG2].exp() > 0.5) == is_h).float().mean()),
        "activity_hepg2": float(act[is_h].mean()) if is_h.any() else float("nan"),
        "activity_other": float(act[~is_h].mean()) if (~is_h).any() else float("nan"),
    }


def fit_classifier(
    oracle: Oracle,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    *,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    logger=None,
    progress: bool = True,
) -> dict:
    """Train ``oracle`` in place with cross-entropy on tokens ``[N, L]`` / labels ``[N]``.

    After every epoch (and at the end of a ``max_steps``-truncated run) the model is scored on ``val``;
    the parameters with the best validation HepG2 AUROC (ties: lower validation loss) are kept (early
    stopping without a patience knob).
    Returns ``{"steps", "epochs", "best_epoch", "val": metrics of the kept parameters}``.
    """
    from tqdm.auto import tqdm

    cfg = oracle.config
    device = oracle.device
    gen = torch.Generator().manual_seed(seed)
    n = tokens.shape[0]
    if cfg.max_train is not None and n > cfg.max_train:
        keep = torch.randperm(n, generator=gen)[: cfg.max_train]
        tokens, labels = tokens[keep], labels[keep]
        n = cfg.max_train
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    opt = torch.optim.AdamW(oracle.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, int(0.05 * total))

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    best = {"key": (-math.inf, -math.inf), "state": None, "epoch": 0, "val": None}
    step = 0
    bar = tqdm(total=total, desc=f"oracle {oracle.meta.get('split', '')}".strip(), disable=not progress, leave=False)
    epoch = 0
    while step < total:
        epoch += 1
        oracle.train()
        perm = torch.randperm(n, generator=gen)
        running, seen = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            if step >= total:
                break
            idx = perm[start : start + cfg.batch_size]
            x = F.one_hot(tokens[idx].to(device), 4).float()
            if cfg.rc_augment:
                flip = torch.rand(len(idx), generator=gen) < 0.5
                x = torch.where(flip.to(device)[:, None, None], reverse_complement_onehot(x), x)
            loss = F.cross_entropy(oracle.logits(x), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            running += float(loss.detach()) * len(idx)
            seen += len(idx)
            bar.update(1)
            bar.set_postfix(loss=f"{running / seen:.3f}")
        record = {"epoch": epoch, "train_loss": running / max(seen, 1), "lr": sched.get_last_lr()[0]}
        if val is not None:
            vm = evaluate_classifier(oracle, *val)
            record.update({f"val_{k}": v for k, v in vm.items() if k != "n"})
            key = (vm["auroc_hepg2"], -vm["loss"])  # ties in AUROC (e.g. a perfect 1.0) go to the lower loss
            if key > best["key"]:
                best = {"key": key, "epoch": epoch, "val": vm,
                        "state": {k: v.detach().clone() for k, v in oracle.state_dict().items()}}
        if logger is not None:
            logger.log(step, record)
    bar.close()
    if best["state"] is not None:
        oracle.load_state_dict(best["state"])
    oracle.eval()
    return {"steps": step, "epochs": epoch, "best_epoch": best["epoch"], "val": best["val"]}


def train_oracle(
    split: str = "A",
    *,
    preset: str = "tiny",
    seed: int = 0,
    out_dir: str | Path,
    overrides: dict | None = None,
    table: DnaTable | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    tensorboard: bool = True,
    log_stdout: bool = True,
) -> Oracle:
    """Train oracle ``split`` (``"A"`` fine-tuning, ``"B"`` evaluation) on its chromosomes and save it.

    Model selection uses the oracle's own validation chromosomes; the chr1 test split is scored once at
    the end. ``overrides`` change fields of the preset's :class:`OracleConfig`; ``table`` replaces the
    packaged DHS table (tests). Writes ``out_dir/{oracle.safetensors, oracle.json, metrics.jsonl}`` and
    returns the trained :class:`Oracle` (eval mode) whose ``meta`` holds the provenance and metrics.
    """
    from sepo.utils.logging import MetricLogger

    sp = oracle_split(split)
    cfg = preset_config(preset, overrides)
    table = load_dhs() if table is None else table
    train = oracle_data(sp.name, "train", table=table)
    val = oracle_data(sp.name, "val", table=table)
    test = oracle_data(sp.name, "test", table=table)
    for part, t in (("training", train), ("validation", val), ("test", test)):
        if len(t) == 0:
            raise DataError(f"oracle {sp.name} has no {part} sequences in {table.source}; the table needs the chromosomes of splits.py")
    torch.manual_seed(seed)
    oracle = Oracle(cfg, meta={"split": sp.name}).to(device)
    out_dir = Path(out_dir)
    t0 = time.time()
    with MetricLogger(out_dir, tensorboard=tensorboard, stdout=log_stdout) as logger:
        fit = fit_classifier(oracle, train.tokens(), _labels(train), val=(val.tokens(), _labels(val)), seed=seed,
                             logger=logger, progress=progress)
        seconds = time.time() - t0
        test_metrics = evaluate_classifier(oracle, test.tokens(), _labels(test))
        val_metrics = fit["val"] or evaluate_classifier(oracle, val.tokens(), _labels(val))
        logger.log(fit["steps"], {**{f"test_{k}": v for k, v in test_metrics.items()},
                                  **{f"final_val_{k}": v for k, v in val_metrics.items()}})
    oracle.meta = {
        "split": sp.name,
        "role": sp.role,
        "chromosomes": sp.to_dict(),
        "preset": preset,
        "seed": seed,
        "data": {"source": table.source, "sha256": table.sha256, "n_train": len(train), "n_val": len(val), "n_test": len(test),
                 "n_train_used": min(len(train), cfg.max_train or len(train))},
        "training": {"steps": fit["steps"], "epochs": fit["epochs"], "best_epoch": fit["best_epoch"],
                     "seconds": round(seconds, 2), "device": str(device), "torch": torch.__version__},
        "metrics": {"val": val_metrics, "test": test_metrics},
        "activity": "HepG2 log-odds: logit_HepG2 - logsumexp(other logits)",
        "cell_lines": list(CELL_LINES),
    }
    save_oracle(oracle, out_dir)
    return oracle


# --------------------------------------------------------------------------------------------------
# files


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_oracle(oracle: Oracle, out_dir: str | Path) -> None:
    """Write ``oracle.safetensors`` then ``oracle.json`` (which records the weights' sha256) atomically."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in oracle.net.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
        weights_sha = _sha256_file(tmp)
    doc = {"format": FORMAT, "version": FORMAT_VERSION, "config": asdict(oracle.config), **oracle.meta,
           "weights_sha256": weights_sha}
    write_json(out_dir / CONFIG_FILE, doc)


def load_oracle(path: str | Path, *, device: str | torch.device = "cpu") -> Oracle:
    """Load an oracle saved by :func:`train_oracle` (eval mode, parameters frozen).

    Raises :class:`CheckpointError` (one line) for a missing directory or file, corrupt JSON or weights,
    weights that belong to another run, or weights that do not fit the recorded architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(path)
    hint = f"train one with: sepo oracle --split A --out {d}"
    if not d.is_dir():
        raise CheckpointError(f"oracle directory {str(d)!r} not found; {hint}")
    cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path} is missing, so {d} is not a trained oracle; {hint}")
    try:
        doc = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is corrupt ({e.__class__.__name__}: {e}); retrain the oracle") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path} is not a sepo DNA oracle config (format {doc.get('format') if isinstance(doc, dict) else None!r}); {hint}")
    if doc.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path} has format version {doc.get('version')!r}, this sepo reads {FORMAT_VERSION}; retrain the oracle")
    try:
        cfg = from_dict(OracleConfig, doc.get("config"), where=str(cfg_path))
    except ConfigError as e:
        raise CheckpointError(f"invalid architecture in {e}") from None
    if not w_path.is_file():
        raise CheckpointError(f"{w_path} is missing; retrain the oracle ({hint})")
    if doc.get("weights_sha256") and _sha256_file(w_path) != doc["weights_sha256"]:
        raise CheckpointError(f"{w_path} does not match {cfg_path} (sha256 differs): the files come from different runs or were modified; retrain the oracle")
    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{w_path} is corrupt ({str(e).splitlines()[0] if str(e) else type(e).__name__}); retrain the oracle") from None
    meta = {k: v for k, v in doc.items() if k not in ("format", "version", "config", "weights_sha256")}
    oracle = Oracle(cfg, meta=meta)
    try:
        oracle.net.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).replace("\n", " ").replace("\t", " ")
        raise CheckpointError(f"{w_path} does not fit the architecture in {cfg_path}: {first[:300]}") from None
    oracle.requires_grad_(False)
    return oracle.to(device).eval()
