"""The language table covers every supported language for every backend; model templates fill;
multi-target OPUS-MT models get the target token their own vocabulary has for each language."""

from __future__ import annotations

import pytest
from transformers import M2M100Tokenizer, NllbTokenizer

from mvlp_core.contract import StageError
from mvlp_core.languages import CC6L, LANGUAGES
from mvlp_core.stages.translate.codes import TABLE, model_name
from mvlp_core.stages.translate.seq2seq import Steering, opus_target, steering, token_batches

FIELD = "translate.hf.model"

IGLUE = {
    "ar",
    "bn",
    "bg",
    "da",
    "de",
    "el",
    "en",
    "es",
    "et",
    "fr",
    "id",
    "ja",
    "ko",
    "pt",
    "ru",
    "sw",
    "ta",
    "tr",
    "vi",
    "zh",
}


def test_table_covers_iglue_and_cc6l():
    assert IGLUE - {"en"} <= set(TABLE) and set(CC6L) <= set(TABLE)
    assert len(TABLE) == 20 and set(TABLE) == set(LANGUAGES) - {"en"}
    assert TABLE["ja"].flores == "jpn_Jpan" and TABLE["zh"].m2m == "__zh__"
    assert TABLE["pt"].opus == "opus-mt-en-ROMANCE" and TABLE["de"].opus == "opus-mt-en-de"
    assert TABLE["zh"].opus_targets == ("cmn_Hans", "zho_Hans", "zh_Hans", "cmn", "zho", "zh")
    assert TABLE["sw"].name == "Swahili" and TABLE["zh"].libre == "zh-Hans"


def test_model_templates():
    assert model_name("Helsinki-NLP/{opus}", "ta") == "Helsinki-NLP/opus-mt-en-dra"
    assert model_name("/models/mt-en-{lang}", "de") == "/models/mt-en-de"


def test_m2m_steering_and_a_language_the_checkpoint_lacks(tmp_path):
    import json

    import sentencepiece as spm

    corpus = tmp_path / "c.txt"
    corpus.write_text("a red circle above a blue square\n" * 20)
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tmp_path / "sp"),
        vocab_size=30,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    vocab = {p: i for i, p in enumerate(["<s>", "<pad>", "</s>", "<unk>", "▁a", "▁red"])}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    tok = M2M100Tokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "sp.model"), language_codes="m2m100")
    assert steering(tok, "ja", "m2m", FIELD) == Steering(target_token="__ja__") and tok.src_lang == "en"
    nllb = NllbTokenizer()
    with pytest.raises(StageError) as err:
        steering(_Without(nllb, {"swh_Latn", "__sw__"}), "sw", "facebook/nllb-200-distilled-600M", FIELD)
    message = str(err.value)
    assert "Swahili (sw)" in message and "facebook/nllb-200-distilled-600M" in message
    assert "Helsinki-NLP/opus-mt-en-sw" in message and "translate.hf.models.sw" in message


# Target tokens as the real checkpoints spell them (their vocab.json), cut to a few each.
EN_ZH = [">>cmn<<", ">>cmn_Hans<<", ">>cmn_Hant<<", ">>lzh<<", ">>yue_Hans<<", ">>yue_Hant<<", ">>zho_Hant<<"]
EN_AR = [">>afb<<", ">>apc<<", ">>ara<<", ">>arq<<", ">>ary<<", ">>arz<<"]
EN_VI = [">>vie<<", ">>vie_Hani<<"]
EN_MUL = [
    ">>ben<<",
    ">>jpn<<",
    ">>jpn_Hani<<",
    ">>jpn_Hira<<",
    ">>kor_Hang<<",
    ">>kor<<",
    ">>por<<",
    ">>tam<<",
]
ROMANCE = [">>es<<", ">>fr<<", ">>it<<", ">>pt<<", ">>pt_br<<", ">>ro<<"]


@pytest.mark.parametrize(
    ("tokens", "lang", "token"),
    [
        (EN_ZH, "zh", ">>cmn_Hans<<"),  # Simplified, never the Traditional >>cmn_Hant<<
        (EN_ZH[:1] + EN_ZH[2:], "zh", ">>cmn<<"),  # no script-specific token: the bare code
        (EN_AR, "ar", ">>ara<<"),
        (EN_VI, "vi", ">>vie<<"),
        (EN_MUL, "ja", ">>jpn<<"),  # not the kanji-only >>jpn_Hani<<
        (EN_MUL, "ko", ">>kor_Hang<<"),
        (EN_MUL, "bn", ">>ben<<"),
        (EN_MUL, "pt", ">>por<<"),
        (ROMANCE, "pt", ">>pt<<"),
        ([">>DEU<<"], "de", ">>DEU<<"),  # whatever case the vocabulary uses
        (ROMANCE, "zh", None),
    ],
)
def test_the_target_token_is_read_from_the_model_vocabulary(tokens, lang, token):
    assert opus_target(tokens, lang) == token


class _Without:
    """A tokenizer view that lacks some tokens, as a checkpoint trained without a language would."""

    def __init__(self, tok, missing: set[str]) -> None:
        self._tok, self._missing, self.unk_token_id = tok, missing, tok.unk_token_id
        self.src_lang = tok.src_lang

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.unk_token_id if token in self._missing else self._tok.convert_tokens_to_ids(token)


def test_token_batches_respect_the_budget():
    lengths = [5, 30, 7, 12, 12, 3, 40]
    batches = token_batches(lengths, budget=36)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert batches[0] == [6]  # longer than the budget: alone
    for b in batches[1:]:
        assert len(b) * max(lengths[i] for i in b) <= 36
    assert token_batches([4] * 10, 16) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
