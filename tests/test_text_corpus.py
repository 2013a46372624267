"""Text corpus: Brown parsing and detokenisation, cleaning, hash splits (stable, disjoint), prompts.

Needs the raw data in the cache: `python -m sepo.tasks.text.fetch` (a missing corpus fails with that hint).
"""

import hashlib
import re

import pytest

from sepo.errors import DataError
from sepo.tasks.text import corpus
from sepo.tasks.text.corpus import (SPLITS, brown_sentences, clean_text, detokenize, hash_unit, is_sentence,
                                    load_corpus, make_prompts, split_of, strip_tags)
from sepo.tasks.text.tokenizer import gpt2_tokenizer


def test_strip_tags_and_detokenize_hand_example():
    line = "The/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' (/( twice/rb )/) ,/, and/cc 1/2/cd Jr./np ./."
    words = strip_tags(line)
    assert words == ["The", "jury", "said", "``", "no", "evidence", "''", "(", "twice", ")", ",", "and", "1/2",
                     "Jr.", "."]
    # quotes become ", punctuation attaches, Brown's doubled final period after "Jr." is dropped
    assert detokenize(words) == 'The jury said "no evidence" (twice), and 1/2 Jr.'
    assert detokenize(["It", "costs", "$", "5", ";", ";"]) == "It costs $5;"
    with pytest.raises(DataError, match="word/tag"):
        strip_tags("untagged words")


def test_clean_text_folds_to_ascii():
    assert clean_text("  Caf\u00e9 &amp; \u201cquotes\u201d \u2014 it\u2019s\tok\n") == 'Cafe & "quotes" -- it\'s ok'
    assert clean_text("``Hi'' \u2026") == '"Hi" ...'
    assert clean_text("\u4e2d\u6587") == ""
    with pytest.raises(DataError):
        clean_text(3)


def test_brown_corpus_is_complete_and_untagged():
    sentences = brown_sentences()
    assert len(sentences) == 57_340  # DATA.md's count: every sentence of the 500 files parsed
    assert sentences[0] == ('The Fulton County Grand Jury said Friday an investigation of Atlanta\'s recent primary '
                            'election produced "no evidence" that any irregularities took place.')
    tag = re.compile(r"[A-Za-z]/(at|nn|nns|vbd|jj|in|np|cc|rb)\b")
    assert not any(tag.search(s) for s in sentences[:5000])


def test_splits_are_disjoint_stable_and_hash_defined():
    splits = {s: load_corpus(s) for s in SPLITS}
    total = sum(len(v) for v in splits.values())
    assert 35_000 < total < 45_000
    assert 0.88 < len(splits["train"]) / total < 0.92
    for name, texts in splits.items():
        assert len(set(texts)) == len(texts), f"duplicates inside {name}"
        assert all(split_of(t) == name for t in texts)
        assert all(t.isascii() and is_sentence(t, min_words=5, max_words=40) for t in texts)
    seen = [set(v) for v in splits.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    # deterministic, and a sentence keeps its split when the filters change
    assert load_corpus("heldout") == splits["heldout"]
    short = load_corpus("validation", max_words=12)
    assert short and set(short) <= seen[1]
    # the hash is BLAKE2b of "salt\0text", independent of Python's per-process hash seed
    expect = int.from_bytes(hashlib.blake2b(b"s\x00abc", digest_size=8).digest(), "big") / 2.0**64
    assert hash_unit("abc", salt="s") == expect


def test_bad_corpus_arguments():
    with pytest.raises(DataError, match="split"):
        load_corpus("test")
    with pytest.raises(DataError, match="source"):
        load_corpus("train", sources=("wikipedia",))
    with pytest.raises(DataError, match="min_words"):
        load_corpus("train", min_words=10, max_words=5)


def test_missing_data_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SEPO_CACHE", str(tmp_path))
    corpus.brown_sentences.cache_clear()
    try:
        with pytest.raises(DataError, match="sepo.tasks.text.fetch"):
            corpus.brown_sentences()
    finally:
        monkeypatch.undo()
        corpus.brown_sentences.cache_clear()


def test_prompts_are_word_aligned_prefixes_of_heldout_sentences():
    tok = gpt2_tokenizer()
    p = make_prompts(16, 6, tok, seed=1)
    assert p.ids.shape == (16, 6) and p.ids.dtype.is_floating_point is False
    heldout = set(load_corpus("heldout"))
    for ids, text, sentence in zip(p.ids, p.texts, p.sentences):
        assert sentence in heldout
        assert tok.decode(ids) == text and sentence.startswith(text)
        assert sentence[len(text)] == " "  # the prompt ends at a word boundary
        assert len(tok.encode(sentence)) >= 6 + 4
    again = make_prompts(16, 6, tok, seed=1)
    assert again.sentences == p.sentences and (again.ids == p.ids).all()
    assert make_prompts(16, 6, tok, seed=2).sentences != p.sentences
    with pytest.raises(DataError, match="ask for fewer"):
        make_prompts(10**6, 6, tok)
    with pytest.raises(DataError):
        make_prompts(0, 6, tok)
