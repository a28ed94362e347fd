"""The loaders' direct backend tokenisation gives what the Hugging Face call it replaces gives,
for both kinds of tokenizer the families train (SentencePiece unigram, byte-level BPE), with
truncation, empty texts, one text, and Hugging Face calls before and after on the same backend."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mvlp_core.model.parts import fast_tokens
from mvlp_core.model.tokenizers import build_tokenizers
from mvlp_core.spec import ModelSpec

WORDS = "a red dog runs on the grass ein roter Hund läuft un chien rouge 两只 狗 černý pes".split()


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(300)]
    return build_tokenizers(ModelSpec(size="tiny"), texts, tmp_path_factory.mktemp("tok"))


def _batches() -> list[list[str]]:
    rng = random.Random(1)
    batches = [
        [" ".join(rng.choices(WORDS, k=rng.randint(0, 60))) for _ in range(rng.randint(1, 9))]
        for _ in range(40)
    ]
    return [*batches, [""], ["", "a"], ["x" * 500]]


@pytest.mark.parametrize("side", ["encoder", "decoder"])
def test_padded_ids_and_masks_match_the_hugging_face_call(tokenizers, side) -> None:
    tok = getattr(tokenizers, side)
    for texts in _batches():
        for max_length in (4, 16, 64):
            want = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
            ids, mask = fast_tokens.padded(tok, texts, max_length)
            np.testing.assert_array_equal(ids, want["input_ids"])
            np.testing.assert_array_equal(mask, want["attention_mask"])
            assert ids.dtype == want["input_ids"].dtype


def test_unpadded_and_special_tokens_match_the_hugging_face_call(tokenizers) -> None:
    enc, dec = tokenizers.encoder, tokenizers.decoder
    for texts in _batches():
        want = dec(texts, add_special_tokens=False, truncation=True, max_length=15)["input_ids"]
        got = fast_tokens.encodings(dec, texts, 15, pad=False, add_special_tokens=False)
        assert [e.ids for e in got] == want
        want = enc(texts, padding=True, truncation=True, max_length=20, return_special_tokens_mask=True)
        got = fast_tokens.encodings(enc, texts, 20, pad=True)
        assert [e.special_tokens_mask for e in got] == want["special_tokens_mask"]
    # our call leaves the backend truncating at 3 and unpadded: a later Hugging Face call still
    # gives its own answer
    texts = ["a red dog runs on the grass", "a"]
    before = dec(texts, padding=True)["input_ids"]
    fast_tokens.encodings(dec, texts, 3, pad=False, add_special_tokens=False)
    assert dec(texts, padding=True)["input_ids"] == before
    assert len(before[0]) > 3 and len(before[1]) == len(before[0])
