"""``FinetuneConfig``: every knob of SEPO fine-tuning (Algorithm 1), with TRL's names where they exist."""

from __future__ import annotations

from dataclasses import dataclass

from sepo.diffusion.sampling import SAMPLERS, SamplerConfig

from .advantages import ADVANTAGES
from .estimators import ESTIMATORS
from .loss import LOSS_TYPES

__all__ = ["FinetuneConfig"]


@dataclass
class FinetuneConfig:
    """Configuration of :class:`sepo.rl.trainer.Trainer`.

    Algorithm 1 (Zekri & Boullé 2025): for ``s = 1..max_steps``: sample ``num_groups * num_generations``
    sequences from ``π_θold``; reward; advantages; ``num_iterations`` epochs of the clipped loss; ``θ_old ← θ``.

    Attributes:
        estimator: policy-gradient estimator: ``sepo`` (default), ``sepo-snis``, ``trajectory``, ``elbo``.
        max_steps: number of Algorithm-1 iterations ``S`` (rollout + update rounds).
        num_generations: samples per group ``B`` (completions per prompt in prompted generation).
        num_groups: groups per iteration ``G``; the batch is ``G * B`` samples.
        num_iterations: epochs ``K`` over each batch (TRL's name; GRPO's μ). With ``K = 1`` and one minibatch the
            update is on-policy: the old log-probabilities are the update's own, detached, and their separate
            no-grad pass is skipped.
        minibatch_size: samples per gradient step within an epoch; ``None`` = the whole batch (one step per epoch).
        learning_rate: Adam learning rate (peak value of the schedule).
        lr_scheduler_type: ``constant``, ``linear`` (to 0 at ``max_steps``) or ``cosine`` (to 0), per iteration.
        warmup_steps: iterations of linear warm-up before the schedule.
        adam_betas: Adam ``(beta1, beta2)``.
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping threshold (``0`` disables).
        epsilon: PPO clipping range ``ε`` (ratios clipped to ``[1-ε, 1+ε]``).
        loss_type: ``sequence`` (one ratio per sample, default), ``grpo`` (per-unit ratios, length-normalised)
            or ``dr_grpo`` (per-unit ratios, constant normaliser; also disables std scaling).
        dual_clip: ``c > 1``: the objective of a negative advantage is bounded below by ``c A`` (dual-clip PPO),
            so a runaway ratio cannot blow up the loss (``None``: plain PPO clipping).
        max_nonfinite_iterations: an update whose loss or gradient is NaN/inf is skipped (the weights stay as
            they were); this many consecutive iterations with only skipped updates stop the run with an error.
        advantage: ``group`` (GRPO), ``batch``, ``leave_one_out`` (RLOO) or ``none``.
        scale_rewards: divide advantages by the (group/batch) reward std. Forced off by ``loss_type=dr_grpo``.
        beta: weight of the KL to the reference model (``0`` disables the KL and its passes).
        kl_truncation_steps: the KL covers the last this-many sampler steps (``None``: all steps).
        kl_sample_steps: evaluate the KL at this many of the truncated steps per iteration, drawn uniformly
            without replacement and reweighted so the KL and its gradient stay unbiased (``None``: all of
            them; default 2). Saves network passes: ``kl_truncation_steps`` -> this many per sample and evaluation.
        kl_in_reward: subtract ``beta * KL_path`` (old policy, per sample) from the reward, which adds the
            score-function half of the KL gradient (see :mod:`sepo.rl.kl`).
        ref_sync_every: copy the policy into the reference every this-many iterations; ``0`` (default) keeps
            the frozen pretrained model, which is what the KL is meant to anchor to (METHOD.md §5.5).
        entropy_coef: weight of an entropy bonus on the policy's kernels at the KL steps.
        sampler: sampler used for the rollouts (``ancestral``, ``ancestral_cached``, ``analytic``, ``euler``,
            ``tau_leaping``).
        sampling_steps: predictor steps per rollout ``T``.
        corrector_steps: corrector ("gradient flow") steps after each predictor step.
        num_snis_samples: ``M``, Monte-Carlo draws per candidate likelihood for ``sepo-snis``.
        snis_neighbours: Hamming neighbours per sample for ``sepo-snis`` (``None``: all ``L (|V|-1)``).
        sepo_positions: positions scored per sample for ``sepo`` on masked models (default 4: an unbiased
            random subset, rescaled; ``None``: all positions). Passes per sample per epoch = this number.
        sepo_time: time at which ``sepo`` reads the model's scores (``None``: where ``alpha_t = 1 - 1/L``).
        trajectory_steps: steps scored per sample for ``trajectory`` (``None``: all steps that carry ``θ``).
        elbo_samples: Monte-Carlo draws per sample for ``elbo``.
        rollout_batch_size: sample rollouts in chunks of this size (bounds memory); ``None``: all at once.
        seed: seed of the run's random generator (rollouts, estimator noise, minibatch order).
        save_every: checkpoint every this-many iterations (and always at the end).
        log_every: log metrics every this-many iterations.
        device: ``cpu`` or ``cuda``.
    """

    estimator: str = "sepo"
    max_steps: int = 100
    num_generations: int = 8
    num_groups: int = 8
    num_iterations: int = 2
    minibatch_size: int | None = None
    learning_rate: float = 1e-4
    lr_scheduler_type: str = "constant"
    warmup_steps: int = 0
    adam_betas: list[float] | None = None
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    epsilon: float = 0.2
    loss_type: str = "sequence"
    dual_clip: float | None = 3.0
    max_nonfinite_iterations: int = 3
    advantage: str = "group"
    scale_rewards: bool = True
    beta: float = 0.05
    kl_truncation_steps: int | None = 10
    kl_sample_steps: int | None = 2
    kl_in_reward: bool = True
    ref_sync_every: int = 0
    entropy_coef: float = 0.0
    sampler: str = "ancestral"
    sampling_steps: int = 128
    corrector_steps: int = 0
    num_snis_samples: int = 4
    snis_neighbours: int | None = None
    sepo_positions: int | None = 4
    sepo_time: float | None = None
    trajectory_steps: int | None = None
    elbo_samples: int = 4
    rollout_batch_size: int | None = None
    seed: int = 0
    save_every: int = 10
    log_every: int = 1
    device: str = "cpu"

    def __post_init__(self):
        def positive(name, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if v is None or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v}")

        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        for name in ("max_steps", "num_generations", "num_groups", "num_iterations", "sampling_steps",
                     "num_snis_samples", "elbo_samples", "save_every", "log_every", "max_nonfinite_iterations"):
            positive(name)
        for name in ("minibatch_size", "snis_neighbours", "sepo_positions", "trajectory_steps",
                     "kl_truncation_steps", "kl_sample_steps", "rollout_batch_size"):
            positive(name, allow_none=True)
        if self.lr_scheduler_type not in ("constant", "linear", "cosine"):
            raise ValueError(f"lr_scheduler_type must be constant, linear or cosine, got {self.lr_scheduler_type!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 < self.epsilon < 1:
            raise ValueError(f"epsilon must be in (0, 1), got {self.epsilon}")
        if self.beta < 0 or self.entropy_coef < 0 or self.max_grad_norm < 0 or self.weight_decay < 0:
            raise ValueError("beta, entropy_coef, max_grad_norm and weight_decay must be >= 0")
        if self.dual_clip is not None and self.dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1 (or null to disable), got {self.dual_clip}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage must be one of {', '.join(ADVANTAGES)}, got {self.advantage!r}")
        if self.advantage in ("group", "leave_one_out") and self.num_generations < 2:
            raise ValueError(f"advantage={self.advantage!r} needs num_generations >= 2 (samples per group)")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.corrector_steps < 0 or self.ref_sync_every < 0:
            raise ValueError("corrector_steps and ref_sync_every must be >= 0")
        if self.adam_betas is not None and len(self.adam_betas) != 2:
            raise ValueError(f"adam_betas must be two numbers, got {self.adam_betas}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.minibatch_size is not None and self.minibatch_size > self.batch_size:
            raise ValueError(f"minibatch_size {self.minibatch_size} exceeds the batch of {self.batch_size} samples")

    @property
    def batch_size(self) -> int:
        return self.num_groups * self.num_generations

    @property
    def effective_scale_rewards(self) -> bool:
        return self.scale_rewards and self.loss_type != "dr_grpo"

    def sampler_config(self) -> SamplerConfig:
        return SamplerConfig(name=self.sampler, steps=self.sampling_steps, corrector_steps=self.corrector_steps)

    def estimator_options(self) -> dict:
        return {k: getattr(self, k) for k in ("sepo_positions", "sepo_time", "num_snis_samples", "snis_neighbours",
                                              "trajectory_steps", "elbo_samples")}
