"""Human ratings, the n-gram ridge reward model and the judges.

The reward model is fit on a small subset of the reward part (seconds) and must beat the trivial
predict-the-mean baseline on held-out sentences by a clear margin; the judges must agree with held-out human
ratings above stated thresholds (full-data numbers are in the module docstrings / the lead's report).
"""

import json

import numpy as np
import pytest
import torch

from sepo.errors import CheckpointError, ConfigError, DataError, RewardError
from sepo.tasks.text import assets
from sepo.tasks.text.judges import VaderJudge, fit_minilm_judge, load_minilm_judge, ridge_closed_form
from sepo.tasks.text.ratings import PARTS, load_ratings, part_of
from sepo.tasks.text.rewards import (NgramConfig, NgramRidgeReward, RewardConfig, TextScorer, evaluate_scorer, fit_reward,
                                     load_reward, ridge_cg)
from sepo.tasks.text.tokenizer import gpt2_tokenizer

POSITIVE = "This movie was wonderful, I loved every minute of it."
NEGATIVE = "This movie was awful, I hated every minute of it."


@pytest.fixture(scope="module")
def test_part():
    return load_ratings("test").take(1000, seed=0)


@pytest.fixture(scope="module")
def reward():
    # small and fast: 2,500 training sentences, 2**18 buckets, a fixed ridge strength
    cfg = RewardConfig(features=NgramConfig(log2_buckets=18), lambdas=(0.3,))
    return fit_reward(load_ratings("reward").take(2500, seed=0), config=cfg)


def test_ratings_parts_are_disjoint_and_cover_everything():
    everything = load_ratings("all")
    assert len(everything) == 23_619  # 23,703 rated lines; exact duplicate texts merged
    parts = {p: load_ratings(p) for p in PARTS}
    assert sum(len(v) for v in parts.values()) == len(everything)
    sets = [set(v.texts) for v in parts.values()]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert 0.13 < len(parts["test"]) / len(everything) < 0.17
    assert abs(len(parts["reward"]) - len(parts["judge"])) < 0.03 * len(everything)
    assert all(part_of(t) == "judge" for t in parts["judge"].texts[:500])
    assert everything.ratings.min() >= -4 and everything.ratings.max() <= 4
    assert set(everything.domains) == {"movie", "tweet", "product", "editorial"}
    with pytest.raises(DataError, match="part"):
        load_ratings("train")


def test_ridge_cg_solves_the_normal_equations():
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    X = sp.random(60, 40, density=0.2, random_state=1, format="csr")
    y = rng.normal(size=60)
    w = ridge_cg(X, y, 0.5, tol=1e-10)
    dense = X.toarray()
    exact = np.linalg.solve(dense.T @ dense + 0.5 * np.eye(40), dense.T @ y)
    np.testing.assert_allclose(w, exact, atol=1e-8)
    # the intercept version used by the judge: same as solving the centred problem
    Xd = rng.normal(size=(50, 5))
    wd, b = ridge_closed_form(Xd, Xd @ np.arange(5.0) + 3.0, 1e-9)
    np.testing.assert_allclose(wd, np.arange(5.0), atol=1e-6)
    assert abs(b - 3.0) < 1e-6


def test_ngram_features_are_normalised_hashes():
    f = NgramConfig(log2_buckets=12, word_ngrams=2, char_ngrams=(3,))
    ids = f.features("not good")
    assert len(ids) == 2 + 1 + (5 - 2) + (6 - 2)  # 2 words, 1 bigram, char 3-grams of <not> and <good>
    assert all(0 <= i < 4096 for i in ids) and ids == f.features("NOT  good")
    X = f.matrix(["not good", "", "great great great"])
    norms = np.sqrt(np.asarray(X.multiply(X).sum(1)).ravel())
    np.testing.assert_allclose(norms, [1.0, 0.0, 1.0])


def test_reward_beats_trivial_baseline_on_heldout(reward, test_part):
    m = evaluate_scorer(reward, test_part, baseline=reward.bias)
    assert m["pearson"] > 0.40  # measured 0.46 with 2,500 sentences; the full reward part gives 0.67
    assert m["mse"] < 0.85 * m["baseline_mse"]
    assert m["sentences_per_s"] > 200  # fast enough for an RL loop on CPU
    r = reward([POSITIVE, NEGATIVE])
    assert r.shape == (2,) and r.dtype == torch.float32 and r[0] > r[1] + 1.0


def test_reward_interface_and_errors(reward):
    assert reward([]).shape == (0,)
    with pytest.raises(DataError, match="list of strings"):
        reward(POSITIVE)
    with pytest.raises(DataError, match="list of strings"):
        reward([POSITIVE, 3])

    class Broken(TextScorer):
        name = "broken"

        def __init__(self, out):
            self.out = out

        def score(self, texts):
            return self.out

    with pytest.raises(RewardError, match="NaN"):
        Broken(torch.tensor([float("nan")]))(["x"])
    with pytest.raises(RewardError, match="shape"):
        Broken(torch.zeros(3))(["x"])


def test_reward_on_tokens_matches_text(reward):
    tok = gpt2_tokenizer()
    texts = [POSITIVE, NEGATIVE, "Plain words."]
    ids = tok.encode_batch(texts, 24)
    assert torch.equal(reward.on_tokens(tok)(ids), reward(texts))
    with pytest.raises(DataError, match="LongTensor"):
        reward.on_tokens(tok)(ids[0])


def test_reward_save_load_round_trip(reward, tmp_path):
    reward.save(tmp_path / "rw")
    back = load_reward(tmp_path / "rw")
    texts = [POSITIVE, NEGATIVE, "Meh."]
    assert torch.equal(back(texts), reward(texts))
    assert back.provenance["n_train"] == 2500 and back.provenance["ratings_sha256"] == reward.provenance["ratings_sha256"]
    with pytest.raises(CheckpointError, match="reward.json"):
        load_reward(tmp_path / "missing")
    (tmp_path / "rw" / "reward.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_reward(tmp_path / "rw")


def test_fit_is_deterministic():
    data = load_ratings("reward").take(300, seed=3)
    cfg = RewardConfig(features=NgramConfig(log2_buckets=14), lambdas=(0.3, 1.0))
    a, b = fit_reward(data, config=cfg), fit_reward(data, config=cfg)
    assert torch.equal(a.weights, b.weights) and a.provenance["lambda"] == b.provenance["lambda"]
    assert set(a.provenance["validation_pearson"]) == {"0.3", "1.0"}
    with pytest.raises(ConfigError, match="lambdas"):
        RewardConfig(lambdas=(0.0,))
    with pytest.raises(ConfigError, match="log2_buckets"):
        NgramConfig(log2_buckets=40)
    with pytest.raises(DataError, match="at least 10"):
        fit_reward(data.take(5), config=cfg)


def test_vader_judge_agrees_with_humans(test_part):
    judge = VaderJudge()
    assert judge.role == "judge"
    scores = judge([POSITIVE, NEGATIVE, "The table is brown."])
    assert scores[0] > 0.5 and scores[1] < -0.5 and scores[2] == 0.0
    m = evaluate_scorer(judge, test_part)
    assert m["pearson"] > 0.45  # VADER's compound score vs mean human rating: 0.53 on the whole test part


minilm = pytest.mark.skipif(not assets.minilm_available(),
                            reason=f"MiniLM judge package absent: {assets.MINILM_INSTALL}")


@minilm
def test_minilm_encoder_matches_transformers_reference():
    transformers = pytest.importorskip("transformers", reason="transformers not installed (optional parity check)")
    from sepo.tasks.text.minilm import MiniLMEncoder

    folder = str(assets.minilm_dir())
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    texts = ["A man is playing a guitar.", "Short", "Punctuation, CAPITALS and numbers 123 -- all here!"]
    batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    ref = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)
    assert torch.allclose(MiniLMEncoder().encode(texts), ref, atol=1e-5)


@minilm
def test_minilm_judge_fit_on_disjoint_half(tmp_path, test_part):
    from sepo.tasks.text.minilm import MiniLMEncoder

    enc = MiniLMEncoder()
    e = enc.encode(["A man is playing a guitar.", "A person plays the guitar.", "Stocks fell sharply today."])
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert e[0] @ e[1] > 0.7 > 0.2 > e[0] @ e[2]  # a paraphrase is far closer than an unrelated sentence
    train = load_ratings("judge").take(300, seed=0)
    assert not set(train.texts) & set(load_ratings("reward").texts)
    judge = fit_minilm_judge(train, encoder=enc, cache=False)
    held = test_part.take(150, seed=0)
    m = evaluate_scorer(judge, held, baseline=float(train.ratings.mean()))
    # 300 training sentences: r = 0.58-0.64 over subsets; the full judge part gives 0.68 on the whole test part
    assert judge.role == "judge" and m["pearson"] > 0.45
    assert m["mse"] < m["baseline_mse"]
    judge.save(tmp_path / "j")
    back = load_minilm_judge(tmp_path / "j", encoder=enc)
    assert torch.allclose(back(held.texts[:5]), judge(held.texts[:5]))
    meta = json.loads((tmp_path / "j" / "judge.json").read_text())
    meta["encoder_sha256"] = "0" * 64
    (tmp_path / "j" / "judge.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="another encoder"):
        load_minilm_judge(tmp_path / "j", encoder=enc)


def test_binary_features_are_one_per_distinct_ngram():
    f = NgramConfig(log2_buckets=12, word_ngrams=2, char_ngrams=(), weighting="binary")
    X = f.matrix(["great great great", "", "not good"])
    # "great great great": unigram {great} + bigram {great great} -> two distinct buckets, each 1
    assert sorted(X[0].data.tolist()) == [1.0, 1.0] and X[1].nnz == 0 and X[2].nnz == 3
    with pytest.raises(ConfigError, match="weighting"):
        NgramConfig(weighting="tfidf")


def test_binary_reward_cannot_be_raised_by_dilution_but_l2_can():
    """The hack found by the policy with the first reward (docs/text.md): appending neutral or unknown words
    drags an L2-normalised prediction toward the intercept. Hand-built weights make both cases exact."""
    for weighting, moved in (("sqrt_l2", True), ("binary", False)):
        f = NgramConfig(log2_buckets=10, word_ngrams=1, char_ngrams=(), weighting=weighting)
        w = torch.zeros(f.n_buckets)
        bad = f.features("awful")[0]
        w[bad] = -2.0
        r = NgramRidgeReward(w, 0.5, features=f)
        base, padded = r(["awful", "awful zzyzx qwrtp blorf"]).tolist()  # three words no weight knows
        repeated = r(["awful awful awful"]).item()
        if moved:
            assert base == pytest.approx(0.5 - 2.0) and padded == pytest.approx(0.5 - 2.0 / 2.0)  # 1/sqrt(4) of it
        else:
            assert base == padded == repeated == pytest.approx(0.5 - 2.0)


def test_reward_predictions_are_clipped_to_the_rating_scale():
    f = NgramConfig(log2_buckets=10, word_ngrams=1, char_ngrams=(), weighting="binary")
    w = torch.zeros(f.n_buckets)
    for word in ("great", "love", "best"):
        w[f.features(word)[0]] = 2.0
    r = NgramRidgeReward(w, 0.0, features=f)
    assert r(["great", "great love", "great love best"]).tolist() == [2.0, 4.0, 4.0]  # 6 -> clipped at 4


def test_named_rewards_and_their_specs():
    from sepo.tasks.text.finetune import TextOptions
    from sepo.tasks.text.rewards import reward_config

    assert reward_config("ngram").features.weighting == "binary" and reward_config("ngram").features.char_ngrams == ()
    assert reward_config("ngram-l2").features.weighting == "sqrt_l2"
    assert reward_config("ngram").digest() != reward_config("ngram-l2").digest()  # cached separately
    with pytest.raises(ConfigError, match="ngram-l2"):
        reward_config("ngram-l3")
    TextOptions(reward="ngram-l2")
    with pytest.raises(ValueError, match="ngram-l2"):
        TextOptions(reward="ngrams")


def test_binary_reward_round_trip_keeps_its_features(tmp_path):
    cfg = RewardConfig(features=NgramConfig(log2_buckets=12, char_ngrams=(), weighting="binary"), lambdas=(3.0,))
    r = fit_reward(load_ratings("reward").take(300, seed=1), config=cfg)
    r.save(tmp_path / "rw")
    back = load_reward(tmp_path / "rw")
    assert back.features == cfg.features
    texts = [POSITIVE, NEGATIVE, POSITIVE + " and and and"]
    assert torch.equal(back(texts), r(texts))
