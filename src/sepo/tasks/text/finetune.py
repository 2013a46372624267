"""Fine-tuning a text diffusion model toward a learned reward: ``sepo finetune --task text``.

The paper's language experiment (Zekri & Boullé, 2025, §4.1) fine-tunes SEDD Medium on prompts against a
reward model learned from human preferences and evaluates completions of held-out prompts. Here, by default:

* **policy**: a text diffusion model (``sepo pretrain --task text``; or a SEDD / MDLM checkpoint, loaded by
  :func:`sepo.models.load_pretrained`, with the GPT-2 tokenizer);
* **prompts**: word-aligned prefixes of ``validation`` sentences for training and of ``heldout`` sentences for
  evaluation (:func:`~sepo.tasks.text.corpus.make_prompts`) — or one prompt per line of a text file, optionally
  in the "Human: … Assistant:" dialogue format of HH-RLHF (:func:`hh_format`); a GRPO group is the
  ``num_generations`` completions of one prompt;
* **reward**: the n-gram ridge model fit on the *reward* half of the human sentiment ratings
  (:func:`~sepo.tasks.text.rewards.default_reward`), or a Hugging Face sequence classifier (``hf:DIR``,
  :class:`~sepo.tasks.text.hf_reward.HFRewardModel`); it scores the decoded prompt + completion;
* **judges** (evaluation only, never a training signal): the MiniLM ridge judge fit on the disjoint *judge*
  half and the VADER lexicon (:mod:`~sepo.tasks.text.judges`). With ``monitor_judges`` the judges also score
  each iteration's rollouts *after* the update has been computed from the reward, so one sees whether the
  judges move with the reward; their values never enter the loss.

The run ends with an evaluation on ``eval_prompts`` held-out prompts: pretrained and fine-tuned completions
drawn with the same random numbers (a paired comparison), each judge's mean score and the fine-tuned model's
win rate against the pretrained completion of the same prompt (ties count one half).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from sepo.errors import CheckpointError, ConfigError, DataError
from sepo.rl.config import FinetuneConfig
from sepo.rl.rewards import Reward
from sepo.utils.config import from_dict
from sepo.utils.io import write_json

from .rewards import REWARD_KINDS

__all__ = ["TextOptions", "EosBlockedNet", "with_min_new_tokens", "repetition_rate", "unwrap", "PromptSet", "hh_format", "text_options", "check_base",
           "load_text_policy", "training_prompts", "evaluation_prompts", "text_reward", "default_judges",
           "complete", "win_rate", "score_completions", "finetune_text", "PROMPT_FORMATS"]

PROMPT_FORMATS = ("plain", "hh")


def hh_format(prompt: str, response: Optional[str] = None) -> str:
    """The Anthropic HH-RLHF dialogue format (Bai et al., 2022) the paper's prompts and reward model use:
    ``"\\n\\nHuman: {prompt}\\n\\nAssistant:"`` followed by ``" {response}"`` when a response is given."""
    if not isinstance(prompt, str) or (response is not None and not isinstance(response, str)):
        raise DataError("hh_format takes a prompt string and an optional response string")
    text = f"\n\nHuman: {prompt.strip()}\n\nAssistant:"
    return text if response is None else f"{text} {response.strip()}"


@dataclass
class TextOptions:
    """Text-specific settings of ``sepo finetune --task text`` (the ``text:`` section of its YAML config).

    Fields:
        reward: ``ngram`` (the n-gram ridge reward learned from the reward half of the human ratings, on
            binary word-n-gram features), ``ngram-l2`` (its first, padding-hackable version: √count L2-normalised
            word + character n-grams; see :func:`~sepo.tasks.text.rewards.reward_config`) or ``hf:DIR`` (a local
            Hugging Face ``AutoModelForSequenceClassification`` directory).
        reward_batch_size: texts per reward-model call (``hf:`` rewards).
        reward_max_length: longest input of an ``hf:`` reward model, in its own tokens (longer texts are cut).
        reward_label: output column of an ``hf:`` reward with several labels (``None``: a one-output model).
        prompt_format: ``plain`` (the prompt text as is) or ``hh`` ("Human: … Assistant:" dialogue).
        prompt_tokens: length of the corpus prompts (word-aligned sentence prefixes), in tokens.
        train_prompts: number of distinct training prompts (drawn with replacement, one per group).
        prompt_split: corpus split of the training prompts (``validation``: seen by neither pretraining nor
            the evaluation).
        prompts_file: a text file with one prompt per line, used instead of corpus prefixes for training
            (e.g. HH-RLHF prompts at paper scale).
        eval_prompts: number of held-out prompts of the final evaluation (0: no evaluation).
        eval_prompts_file: one evaluation prompt per line, instead of held-out corpus prefixes.
        eval_sampling_steps: sampler steps of the final evaluation, one evaluation per value (empty: the
            training ``sampling_steps``); the paper reports 128 and 1024.
        judges: score the final evaluation with the MiniLM and VADER judges.
        monitor_judges: also log the judges' mean score on each iteration's rollouts (evaluation only).
        eval_seed: seed of the evaluation draws (shared by the pretrained and the fine-tuned model).
        sequence_length: tokens per generated sequence, prompt included (``None``: the model's length; a shorter
            value saves compute with long-context checkpoints such as SEDD's 1,024).
        min_new_tokens: the end-of-text token is forbidden in the first this-many completion positions after every
            prompt (:func:`with_min_new_tokens`), for the policy, the reference and every evaluated model alike — Hugging
            Face's ``min_new_tokens``. Without it a policy can raise the reward by not generating at all
            (measured, docs/text.md). 0 disables it.
        repetition_penalty: ``λ``: the training reward becomes ``r(x) - λ · repetition_rate(x)``, the fraction of
            repeated tokens in the text before its end (:func:`repetition_rate`). A learned reward that can be
            raised by repeating a few favoured tokens (measured for the n-gram reward, docs/text.md) is then no
            longer maximised by repetition; the judges and the benchmark's reward column stay unpenalised.
            0 disables it.
    """

    reward: str = "ngram"
    reward_batch_size: int = 64
    reward_max_length: int = 512
    reward_label: Optional[int] = None
    prompt_format: str = "plain"
    prompt_tokens: int = 6
    train_prompts: int = 512
    prompt_split: str = "validation"
    prompts_file: Optional[str] = None
    eval_prompts: int = 64
    eval_prompts_file: Optional[str] = None
    eval_sampling_steps: list[int] = field(default_factory=list)
    judges: bool = True
    monitor_judges: bool = True
    eval_seed: int = 1234
    sequence_length: Optional[int] = None
    min_new_tokens: int = 16
    repetition_penalty: float = 0.0

    def __post_init__(self):
        if not (self.reward in REWARD_KINDS or self.reward.startswith("hf:")):
            raise ValueError(f"reward must be one of {', '.join(map(repr, REWARD_KINDS))} or 'hf:DIR', got {self.reward!r}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {self.prompt_format!r}")
        for name in ("reward_batch_size", "reward_max_length", "prompt_tokens", "train_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_new_tokens < 0:
            raise ValueError(f"min_new_tokens must be >= 0, got {self.min_new_tokens}")
        if not self.repetition_penalty >= 0:
            raise ValueError(f"repetition_penalty must be >= 0, got {self.repetition_penalty}")
        if self.eval_prompts < 0:
            raise ValueError(f"eval_prompts must be >= 0, got {self.eval_prompts}")
        if any(int(s) < 1 for s in self.eval_sampling_steps):
            raise ValueError(f"eval_sampling_steps must be positive, got {self.eval_sampling_steps}")
        if self.sequence_length is not None and self.sequence_length < 2:
            raise ValueError(f"sequence_length must be >= 2 (or null for the model's length), got {self.sequence_length}")
        if self.prompt_split not in ("train", "validation", "heldout"):
            raise ValueError(f"prompt_split must be train, validation or heldout, got {self.prompt_split!r}")


def text_options(data: dict | None = None) -> TextOptions:
    """Validated :class:`TextOptions` from a mapping (one-line :class:`ConfigError` on a bad field)."""
    return from_dict(TextOptions, data or {}, where="text options")


# ---------------------------------------------------------------- model and tokenizer
def check_base(base: str | Path | None) -> Path:
    """The base model folder, or a one-line error saying how to get one (checked before anything is written)."""
    if base is None:
        raise ConfigError("--base is required for --task text: pass a model folder (`sepo pretrain --task text "
                          "--preset tiny --out runs/text-tiny`, or downloaded SEDD / MDLM weights)")
    path = Path(base)
    if not path.is_dir():
        raise CheckpointError(f"no model at {str(path)!r}: pretrain one (`sepo pretrain --task text --preset tiny --out "
                              f"{path}`) or, for the paper-scale setup, download the SEDD Medium weights (config.json + "
                              f"pytorch_model.bin of louaaron/sedd-medium) into that folder; see docs/text.md")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{str(path)!r} has no config.json: it holds no model weights; download SEDD / MDLM "
                              f"weights (config.json + pytorch_model.bin / model.safetensors) there or pretrain a model")
    return path


def load_text_policy(base: str | Path, *, device: str = "cpu"):
    """``(model, info, tokenizer)`` for a sepo text model or a SEDD / MDLM checkpoint."""
    from sepo.models import load_pretrained

    from .pretrain import tokenizer_for_vocab

    path = check_base(base)
    model, info = load_pretrained(path, device=device, use_ema=True)
    tokenizer = tokenizer_for_vocab(info.get("vocab"))
    if model.vocab_size != tokenizer.vocab_size:
        raise CheckpointError(f"{path} has {model.vocab_size} tokens but its tokenizer {tokenizer.name} has "
                              f"{tokenizer.vocab_size}; this is not a text model")
    return model, info, tokenizer


#: log-odds by which a suppressed end-of-text token trails the likeliest token (see :class:`EosBlockedNet`)
EOS_MARGIN = 40.0


class EosBlockedNet(nn.Module):
    """``net(x_t, sigma_bar) -> [B, L, K]`` with the end-of-text output suppressed at the positions ``blocked``
    (``[L_max]`` bool): its logit / log-score there is set to the largest output of the *other* tokens (end of text
    and the mask state excluded) minus :data:`EOS_MARGIN` (a constant: no gradient), so its probability is below
    ``e^-40 ≈ 4e-18`` of the likeliest other token's, however confident the network is about end-of-text (a floor
    taken from the overall largest output, the first version, was end-of-text's own logit whenever it led by
    more than the margin, and a fine-tuned policy learned to end completions through the block) — never drawn
    in practice, yet positive, so that log-probabilities and the ``p log p`` terms of the KL
    keep finite gradients (an exact zero gives ``0 · log 0`` gradients of NaN). Works for every
    parameterisation (SUBS and denoiser logits, log concrete scores). The parameters are those of ``inner``."""

    def __init__(self, inner: nn.Module, *, eos_id: int, blocked: torch.Tensor, mask_id: int | None = None):
        super().__init__()
        self.inner = inner
        self.eos_id = int(eos_id)
        self.mask_id = None if mask_id is None else int(mask_id)
        self.register_buffer("blocked", blocked.to(torch.bool).clone(), persistent=False)

    def forward(self, x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        out = self.inner(x_t, sigma_bar)
        where = torch.zeros(out.shape[-1], dtype=torch.bool, device=out.device)
        where[self.eos_id] = True
        mask = self.blocked[: out.shape[1], None].to(out.device) & where[None, :]  # [L, K]
        excluded = where.clone()
        if self.mask_id is not None and self.mask_id < out.shape[-1]:
            excluded[self.mask_id] = True  # the mask state's raw output is discarded by the parameterisation
        floor = out.detach().masked_fill(excluded, float("-inf")).amax(-1, keepdim=True) - EOS_MARGIN
        return torch.where(mask, floor, out)


def with_min_new_tokens(model, *, eos_id: int, prompt_lengths, min_new_tokens: int):
    """A :class:`~sepo.diffusion.DiffusionModel` sharing ``model``'s parameters whose end-of-text token is
    forbidden at positions ``min(prompt_lengths) … max(prompt_lengths) + min_new_tokens - 1`` (``model`` itself
    if ``min_new_tokens == 0``), so that *every* completion has at least ``min_new_tokens`` tokens, whatever
    its prompt's length (the first version counted from the shortest prompt only, so completions of longer
    prompts had fewer forced tokens; corpus prompts all have the same length). Positions inside a longer
    prompt are clamped to the prompt by the sampler, so the block does not change them; the completions of
    shorter prompts are forced a few tokens longer (the prompts' length spread). :func:`unwrap` gives the plain
    model back (for saving)."""
    from sepo.diffusion import DiffusionModel

    if min_new_tokens <= 0:
        return model
    prompt_length, last_end = min(prompt_lengths), max(prompt_lengths) + min_new_tokens
    length = int(model.config.length)
    blocked = torch.zeros(length, dtype=torch.bool)
    blocked[prompt_length: last_end] = True
    net = model.net.inner if isinstance(model.net, EosBlockedNet) else model.net
    wrapped = DiffusionModel(EosBlockedNet(net, eos_id=eos_id, blocked=blocked,
                                           mask_id=getattr(model.process, "mask_id", None)), model.process,
                             parameterization=model.parameterization, time_conditioned=model.time_conditioned)
    wrapped.config = model.config
    return wrapped.to(next(net.parameters()).device).train(model.training)


def unwrap(model):
    """The plain model of a :func:`with_min_new_tokens` wrapper (parameters shared)."""
    from sepo.diffusion import DiffusionModel

    if not isinstance(model.net, EosBlockedNet):
        return model
    plain = DiffusionModel(model.net.inner, model.process, parameterization=model.parameterization,
                           time_conditioned=model.time_conditioned)
    plain.config = model.config
    return plain


# ---------------------------------------------------------------- prompts
@dataclass
class PromptSet:
    """Prompts as token ids (one ``LongTensor [P_i]`` each) and texts."""

    ids: list[torch.Tensor]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        return [int(p.numel()) for p in self.ids]

    def sampler(self) -> Callable:
        """``(generator, num_groups) -> list[LongTensor]``: one prompt per group, drawn with replacement."""

        def draw(generator: torch.Generator, num_groups: int) -> list[torch.Tensor]:
            idx = torch.randint(len(self.ids), (num_groups,), generator=generator)
            return [self.ids[i] for i in idx.tolist()]

        return draw


def _file_prompts(path: str, tokenizer, options: TextOptions, length: int, n: int | None) -> PromptSet:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"prompts file {str(p)!r} not found; give a text file with one prompt per line")
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"prompts file {str(p)!r} holds no prompt; write one prompt per line")
    texts = [hh_format(t) if options.prompt_format == "hh" else t for t in lines][: n or None]
    ids = []
    for i, t in enumerate(texts, 1):
        enc = tokenizer.encode(t)
        if not enc or len(enc) >= length:
            raise DataError(f"{p}:{i}: the prompt has {len(enc)} tokens; it must have 1 to {length - 1} for length {length}")
        ids.append(torch.tensor(enc, dtype=torch.long))
    return PromptSet(ids, texts)


def _corpus_prompts(n: int, split: str, tokenizer, options: TextOptions, length: int, seed: int) -> PromptSet:
    from .corpus import make_prompts

    if options.prompt_format == "hh":
        raise ConfigError("prompt_format 'hh' needs prompts_file / eval_prompts_file (dialogue prompts); corpus "
                          "prompts are sentence prefixes")
    if options.prompt_tokens >= length:
        raise ConfigError(f"prompt_tokens {options.prompt_tokens} leaves nothing to generate at length {length}")
    prompts = make_prompts(n, options.prompt_tokens, tokenizer, seed=seed, split=split)
    return PromptSet([row.clone() for row in prompts.ids], list(prompts.texts))


def training_prompts(tokenizer, options: TextOptions, *, length: int, seed: int = 0) -> PromptSet:
    """The pool of training prompts (a file, or ``validation`` sentence prefixes)."""
    if options.prompts_file:
        return _file_prompts(options.prompts_file, tokenizer, options, length, None)
    return _corpus_prompts(options.train_prompts, options.prompt_split, tokenizer, options, length, seed)


def evaluation_prompts(tokenizer, options: TextOptions, *, length: int, n: int | None = None, seed: int = 0) -> PromptSet:
    """Held-out evaluation prompts (a file, or ``heldout`` sentence prefixes; never used in training)."""
    n = options.eval_prompts if n is None else n
    if options.eval_prompts_file:
        return _file_prompts(options.eval_prompts_file, tokenizer, options, length, n)
    return _corpus_prompts(n, "heldout", tokenizer, options, length, seed)


# ---------------------------------------------------------------- reward and judges
def repetition_rate(ids: torch.Tensor, *, eos_id: int) -> torch.Tensor:
    """``ids [B, L]`` -> ``[B]``: ``1 - (distinct tokens) / (tokens)`` over each row's tokens before its first
    end-of-text (0 for a row without repeats, → 1 for one token repeated)."""
    out = torch.zeros(ids.shape[0])
    for i, row in enumerate(ids.tolist()):
        text = row[: row.index(eos_id)] if eos_id in row else row
        if text:
            out[i] = 1.0 - len(set(text)) / len(text)
    return out


def text_reward(spec: str, tokenizer, *, device: str = "cpu", batch_size: int = 64, max_length: int = 512,
                label: int | None = None, repetition_penalty: float = 0.0) -> Reward:
    """``ngram`` (default) or ``hf:DIR`` as a :class:`~sepo.rl.rewards.Reward` on token ids ``[B, L]``, minus
    ``repetition_penalty * repetition_rate`` when that is positive."""
    if spec in REWARD_KINDS:
        from .rewards import default_reward

        scorer = default_reward(spec)
    elif spec.startswith("hf:"):
        from .hf_reward import HFRewardModel

        scorer = HFRewardModel(spec[3:], device=device, batch_size=batch_size, max_length=max_length, label=label)
    else:
        raise ConfigError(f"unknown text reward {spec!r}; use {', '.join(map(repr, REWARD_KINDS))} or 'hf:DIR'")
    if getattr(scorer, "role", "reward") != "reward":
        raise ConfigError(f"{scorer.name} is a judge: judges evaluate and never guide training")
    score = scorer.on_tokens(tokenizer)
    if repetition_penalty <= 0:
        return Reward(scorer.name, score, batch_size=batch_size)

    def penalised(ids: torch.Tensor) -> torch.Tensor:
        return score(ids) - repetition_penalty * repetition_rate(ids, eos_id=tokenizer.eos_id)

    return Reward(f"{scorer.name}-rep{repetition_penalty:g}", penalised, batch_size=batch_size)


def default_judges() -> dict:
    """``{"minilm": MiniLM ridge judge, "vader": VADER}`` (evaluation only)."""
    from .judges import VaderJudge, default_minilm_judge

    return {"minilm": default_minilm_judge(progress=False), "vader": VaderJudge()}


# ---------------------------------------------------------------- completions and their scores
@torch.no_grad()
def complete(model, prompts: list[torch.Tensor], *, length: int, sampler, generator: torch.Generator,
             per_prompt: int = 1, batch_size: int | None = None) -> torch.Tensor:
    """``[len(prompts) * per_prompt, length]`` completions (prompt-major order); the sampler keeps each prompt
    fixed. ``sampler`` is a :class:`~sepo.diffusion.SamplerConfig`."""
    from sepo.rl.rollout import collect_rollouts

    out = collect_rollouts(model, sampler=sampler, num_groups=len(prompts), group_size=per_prompt, length=length,
                           generator=generator, prompts=prompts, batch_size=batch_size)
    return out.x.cpu()


def win_rate(scores: torch.Tensor, baseline: torch.Tensor) -> float:
    """Fraction of pairs where ``scores`` beats ``baseline`` (ties count one half)."""
    if scores.shape != baseline.shape or scores.numel() == 0:
        raise DataError(f"win rate needs two equally long non-empty score lists, got {tuple(scores.shape)} and "
                        f"{tuple(baseline.shape)}")
    return float(((scores > baseline).float() + 0.5 * (scores == baseline).float()).mean())


def score_completions(tokens: torch.Tensor, tokenizer, scorers: dict) -> dict[str, torch.Tensor]:
    """``{name: scores [N]}`` of the decoded texts (prompt + completion, cut at eos) under each scorer."""
    texts = tokenizer.decode_batch(tokens)
    return {name: scorer(texts) for name, scorer in scorers.items()}


class _RolloutJudges:
    """Scores the texts the reward last saw with the judges, for logging only (after the reward is computed)."""

    def __init__(self, reward: Reward, tokenizer, judges: dict):
        self.reward, self.tokenizer, self.judges = reward, tokenizer, judges
        self.last: torch.Tensor | None = None
        self.name = reward.name

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.reward(tokens)
        self.last = tokens.detach().cpu()
        return out

    def metrics(self) -> dict:
        if self.last is None:
            return {}
        scores = score_completions(self.last, self.tokenizer, self.judges)
        return {f"judge_{k}_rollout": float(v.mean()) for k, v in scores.items()}


def evaluate_against_base(policy, reference, prompts: PromptSet, tokenizer, *, length: int, sampler, seed: int,
                          reward: Reward | None, judges: dict) -> dict:
    """Paired evaluation: one pretrained and one fine-tuned completion per prompt, same random numbers."""
    out = {"prompts": len(prompts), "sampling_steps": sampler.steps}
    drawn = {}
    for name, model in (("pretrained", reference), ("finetuned", policy)):
        gen = torch.Generator().manual_seed(seed)
        drawn[name] = complete(model, prompts.ids, length=length, sampler=sampler, generator=gen)
    scorers = dict(judges)
    for name, tokens in drawn.items():
        scores = score_completions(tokens, tokenizer, scorers)
        if reward is not None:
            scores["reward"] = reward(tokens)
        drawn[name] = (tokens, scores)
    for key in drawn["finetuned"][1]:
        ft, pre = drawn["finetuned"][1][key], drawn["pretrained"][1][key]
        out[f"{key}_pretrained"] = float(pre.mean())
        out[f"{key}_finetuned"] = float(ft.mean())
        out[f"{key}_win_rate"] = win_rate(ft, pre)
    out["examples"] = [{"prompt": prompts.texts[i],
                        "pretrained": tokenizer.decode(drawn["pretrained"][0][i]),
                        "finetuned": tokenizer.decode(drawn["finetuned"][0][i])} for i in range(min(8, len(prompts)))]
    return out


# ---------------------------------------------------------------- the recipe
def finetune_text(cfg: FinetuneConfig, *, out: Path | None, base: str | Path | None, options: TextOptions | None = None,
                  reward: Reward | None = None, progress: bool = True, resume: bool = False,
                  evaluate: Callable | None = None, policy=None, tokenizer=None) -> dict:
    """Fine-tune ``base`` toward the text reward and return the run summary (also ``<out>/metrics.json``);
    the fine-tuned model goes to ``<out>/model``. ``policy``/``tokenizer`` may be passed pre-loaded (benchmarks)."""
    import copy

    from sepo.models import save_model
    from sepo.rl.loop import run_summary
    from sepo.rl.trainer import Trainer, weights_fingerprint

    from .pretrain import TEXT_VOCAB

    options = options or TextOptions()
    if policy is None:
        policy, info, tokenizer = load_text_policy(base, device=cfg.device)
        vocab = info.get("vocab")
    else:
        if tokenizer is None:
            raise ConfigError("finetune_text: pass the tokenizer together with a pre-loaded policy")
        vocab = {"tokenizer": tokenizer.name, "size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id}
    length = int(policy.config.length)
    if options.sequence_length is not None:
        if options.sequence_length > length:
            raise ConfigError(f"sequence_length {options.sequence_length} exceeds the model's maximum length {length}")
        length = int(options.sequence_length)
    prompts = training_prompts(tokenizer, options, length=length, seed=cfg.seed)
    if options.min_new_tokens and max(prompts.lengths()) + options.min_new_tokens >= length:
        raise ConfigError(f"min_new_tokens {options.min_new_tokens} leaves no room for the end of text after prompts of "
                          f"up to {max(prompts.lengths())} tokens at length {length}; lower it")
    policy = with_min_new_tokens(policy, eos_id=tokenizer.eos_id, prompt_lengths=prompts.lengths(),
                                 min_new_tokens=options.min_new_tokens)
    reward = reward or text_reward(options.reward, tokenizer, device=cfg.device, batch_size=options.reward_batch_size,
                                   max_length=options.reward_max_length, label=options.reward_label,
                                   repetition_penalty=options.repetition_penalty)
    judges = default_judges() if (options.judges or options.monitor_judges) else {}
    reference = copy.deepcopy(policy).eval()  # the pretrained model, with the same end-of-text constraint
    monitored = _RolloutJudges(reward, tokenizer, judges) if options.monitor_judges else None
    train_reward = Reward(reward.name, monitored) if monitored is not None else reward

    def log_extra(model, iteration):
        res = monitored.metrics() if monitored is not None else {}
        if evaluate is not None:
            res.update(evaluate(model, iteration))
        return res

    identity = {"path": str(base), "fingerprint": weights_fingerprint(policy)}
    trainer = Trainer(policy, reward=train_reward, config=cfg, length=length, out_dir=out, prompts=prompts.sampler(),
                      evaluate=log_extra if (monitored is not None or evaluate is not None) else None,
                      base_identity=identity, progress=progress, resume=resume)
    t0 = time.time()
    history = trainer.train()
    seconds = round(time.time() - t0, 2)
    summary = {**run_summary(trainer, history, task="text", base=base, seconds=seconds), "options": asdict(options)}
    if options.eval_prompts > 0 and (options.judges or options.eval_prompts_file):
        eval_prompts = evaluation_prompts(tokenizer, options, length=length)
        evals = []
        for steps in options.eval_sampling_steps or [cfg.sampling_steps]:
            sampler = cfg.sampler_config()
            sampler.steps = int(steps)
            evals.append(evaluate_against_base(trainer.policy, reference, eval_prompts, tokenizer, length=length,
                                               sampler=sampler, seed=options.eval_seed, reward=reward,
                                               judges=judges if options.judges else {}))
        summary["evaluation"] = evals
    if out is not None:
        save_model(out / "model", unwrap(trainer.policy), vocab=vocab,
                   provenance={**({"task": "text"} if vocab == TEXT_VOCAB else {}), "finetuned_from": identity, "reward": reward.name,
                               "estimator": cfg.estimator, "iterations": trainer.iteration})
        write_json(out / "metrics.json", summary)
    return summary
