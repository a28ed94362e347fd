"""Word links mapped to subword tokens of tokenizers the test trains itself."""

import io

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mvlp_core.stages.align.subwords import (
    token_links,
    token_offsets,
    word_spans,
    words_to_tokens,
)
from mvlp_core.stages.align.tokenize import tokenize

CORPUS = [
    "two red dogs run on the beach.",
    "zwei rote Hunde laufen am Strand.",
    "a blue circle above a green square",
    "ein blauer Kreis über einem grünen Quadrat",
    "Grüße aus Köln, sagte der Hund.",
    "两个红色的狗在海滩上跑。",
] * 10


@pytest.fixture(scope="module")
def sentencepiece_model():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=70, model_type="bpe", minloglevel=2
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    """A BPE `tokenizers` model wrapped as a fast HF tokenizer, saved and loaded by path."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=80, special_tokens=["[UNK]", "[CLS]", "[SEP]"])
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")]
    )
    folder = tmp_path_factory.mktemp("tok")
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    ).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def pieces_of(text, offsets, tokens):
    return ["".join(text[s:e] for s, e in (offsets[t] for t in ts)).strip() for ts in tokens]


@pytest.mark.parametrize(
    "lang,text",
    [
        ("de", "Grüße aus Köln, sagte der Hund."),
        ("zh", "两个红色的狗在海滩上跑。"),
        ("en", "two red dogs run on the beach."),
    ],
)
def test_every_word_maps_to_the_tokens_that_spell_it(sentencepiece_model, hf_tokenizer, lang, text):
    words = [w for w, _, _ in tokenize(text, lang)]
    for tokenizer in (sentencepiece_model, hf_tokenizer):
        tokens = words_to_tokens(text, words, tokenizer)
        offsets = token_offsets(text, tokenizer)
        assert all(tokens), (tokenizer, words, tokens)
        # the tokens of a word cover exactly that word (pieces never straddle mvlp's words here)
        assert pieces_of(text, offsets, tokens) == words


def test_special_tokens_belong_to_no_word(hf_tokenizer, sentencepiece_model):
    text = "zwei rote Hunde"
    tokens = words_to_tokens(text, text.split(), hf_tokenizer)
    ids = hf_tokenizer(text)["input_ids"]
    assert ids[0] == hf_tokenizer.cls_token_id and ids[-1] == hf_tokenizer.sep_token_id
    assert 0 not in sum(tokens, []) and len(ids) - 1 not in sum(tokens, [])
    assert tokens[0][0] == 1
    sp_tokens = words_to_tokens(text, text.split(), sentencepiece_model)
    assert min(sum(sp_tokens, [])) >= 1  # <s> first


def test_word_links_become_token_links(sentencepiece_model):
    en, de = "two red dogs", "zwei rote Hunde"
    en_tokens = words_to_tokens(en, en.split(), sentencepiece_model, add_special_tokens=False)
    de_tokens = words_to_tokens(de, de.split(), sentencepiece_model, add_special_tokens=False)
    links = token_links([(0, 0), (2, 2)], en_tokens, de_tokens)
    assert links == sorted(
        {(a, b) for a in en_tokens[0] for b in de_tokens[0]}
        | {(a, b) for a in en_tokens[2] for b in de_tokens[2]}
    )
    assert not any(a in en_tokens[1] for a, _ in links)


def test_words_not_from_the_text_are_an_error():
    with pytest.raises(ValueError, match="'cats' not found"):
        word_spans("two dogs", ["two", "cats"])
    with pytest.raises(TypeError, match="no token offsets"):
        token_offsets("x", object())
