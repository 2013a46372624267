"""Text task: real English sentences, tokenizers, a reward model learned from human ratings, and judges.

Data install (once): ``python -m sepo.tasks.text.fetch`` (see :mod:`.fetch`; ``--build`` also prepares the
tokenizer, reward model and MiniLM judge in the cache).

* :mod:`.corpus` — Brown corpus (+ optional fortunes) sentences, splits, prompts;
* :mod:`.tokenizer` — exact GPT-2 BPE and a small corpus BPE behind :class:`TextTokenizer`;
* :mod:`.ratings` — 23,703 human-rated sentences split into reward / judge / test parts;
* :mod:`.rewards` — the n-gram ridge reward model (:class:`TextScorer` interface);
* :mod:`.judges` — MiniLM + ridge judge and VADER judge (evaluation only);
* :mod:`.minilm` — all-MiniLM-L6-v2 in plain PyTorch; :mod:`.assets` — where everything lives.
"""

from .corpus import Prompts, clean_text, load_corpus, make_prompts
from .judges import MiniLMJudge, VaderJudge, default_minilm_judge, fit_minilm_judge, load_minilm_judge
from .ratings import RatedSentences, load_ratings
from .rewards import (NgramRidgeReward, RewardConfig, TextScorer, default_reward, evaluate_scorer, fit_reward,
                      load_reward)
from .tokenizer import TextTokenizer, corpus_bpe, gpt2_tokenizer, load_tokenizer, train_bpe

__all__ = [
    "MiniLMJudge", "NgramRidgeReward", "Prompts", "RatedSentences", "RewardConfig", "TextScorer", "TextTokenizer",
    "VaderJudge", "clean_text", "corpus_bpe", "default_minilm_judge", "default_reward", "evaluate_scorer",
    "fit_minilm_judge", "fit_reward", "gpt2_tokenizer", "load_corpus", "load_minilm_judge", "load_ratings",
    "load_reward", "load_tokenizer", "make_prompts", "train_bpe",
]
