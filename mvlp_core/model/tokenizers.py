"""The two tokenizers UniGen needs: XLM-R style (SentencePiece unigram, multilingual) for the encoder
and GPT-2 style (byte-level BPE, English) for the decoder, with the task tokens added.

`tiny` trains both on the given texts so the synthetic world's six languages are covered; `base`
loads the real ones by name or path. Either way they are saved as ordinary HF tokenizer folders,
so `AutoTokenizer.from_pretrained(dir)` reloads them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mvlp_core.contract import StageError
from mvlp_core.spec import ModelSpec

TASK_TOKENS = {"trans": "[trans]", "cap": "[cap]", "qus": "[qus]", "match": "[match]"}
TASK_IDS = {"trans": 0, "cap": 1, "qus": 2, "match": 3}
ENCODER_DIR = "encoder_tokenizer"
DECODER_DIR = "decoder_tokenizer"
# words every decoder vocabulary must spell cheaply: [match] answers and IGLUE label words
LABEL_WORDS = ("yes", "no", "true", "false", "entailment", "neutral", "contradiction")


@dataclass
class Tokenizers:
    encoder: object  # XLMRobertaTokenizer (HF, SentencePiece unigram)
    decoder: object  # GPT2Tokenizer (HF, byte-level BPE), pad set, task tokens added

    def task_token_ids(self) -> list[int]:
        """Decoder ids of [trans], [cap], [qus], [match] in TASK_IDS order."""
        return [self.decoder.convert_tokens_to_ids(TASK_TOKENS[t]) for t in TASK_IDS]

    def save(self, out_dir: Path) -> None:
        self.encoder.save_pretrained(str(Path(out_dir) / ENCODER_DIR))
        self.decoder.save_pretrained(str(Path(out_dir) / DECODER_DIR))


def _train_sentencepiece(texts: list[str], vocab_size: int):
    import sentencepiece as spm
    from transformers import XLMRobertaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(Path(tmp) / "spm"),
            model_type="unigram",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=1.0,
            normalization_rule_name="identity",
            minloglevel=2,
        )
        sp = spm.SentencePieceProcessor(model_file=str(Path(tmp) / "spm.model"))
    # XLM-R's layout: <s> <pad> </s> <unk>, the pieces, <mask> last
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [
        (sp.id_to_piece(i), sp.get_score(i))
        for i in range(sp.get_piece_size())
        if not (sp.is_control(i) or sp.is_unknown(i))
    ]
    vocab.append(("<mask>", 0.0))
    return XLMRobertaTokenizer(vocab=vocab)


def _train_byte_bpe(texts: list[str], vocab_size: int):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    corpus = list(texts) + [" ".join(LABEL_WORDS)] * 50
    bpe.train_from_iterator(
        corpus, vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>"], show_progress=False
    )
    return GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def _prepare_decoder(tok) -> object:
    """Add the task tokens and a pad (= eos, as GPT-2 has none; padding is masked anyway)."""
    tok.add_special_tokens({"additional_special_tokens": list(TASK_TOKENS.values())})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def _load(name: str, what: str, field: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise StageError(
            f"cannot load the {what} tokenizer {name!r} ({type(err).__name__}: {err}); the model hub"
            f" is not reachable here: set model.{field} to a local checkpoint folder (one written by"
            " save_pretrained) or pre-populate the Hugging Face cache (HF_HOME)"
        ) from None


def build_tokenizers(spec: ModelSpec, texts: Iterable[str] | None, out_dir: Path) -> Tokenizers:
    """Train (random-init sizes) or load (base with pretrained weights) both tokenizers; save them
    under `out_dir`."""
    out_dir = Path(out_dir)
    if spec.random_init:
        texts = [t for t in (texts or []) if t and t.strip()]
        if not texts:
            raise StageError("trained tokenizers need training texts: pass the captions/questions/answers")
        encoder = _train_sentencepiece(texts, spec.dims.encoder_vocab_size)
        decoder = _train_byte_bpe(texts, spec.dims.decoder_vocab_size)
    else:
        encoder = _load(spec.text_encoder, "text encoder", "text_encoder")
        decoder = _load(spec.decoder, "decoder", "decoder")
    tokenizers = Tokenizers(encoder=encoder, decoder=_prepare_decoder(decoder))
    tokenizers.save(out_dir)
    return tokenizers


def load_tokenizers(folder: Path) -> Tokenizers:
    """Reload what `Tokenizers.save` wrote."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    encoder = AutoTokenizer.from_pretrained(str(folder / ENCODER_DIR))
    decoder = _prepare_decoder(AutoTokenizer.from_pretrained(str(folder / DECODER_DIR)))
    return Tokenizers(encoder=encoder, decoder=decoder)
