"""Tiny MarianMT checkpoints built from a config, with a SentencePiece vocabulary trained on the
given sentences, saved to a folder and loaded back through the production `from_pretrained` path."""

from __future__ import annotations

import json
from pathlib import Path


def build_tiny_marian(
    folder: Path,
    sentences: list[str],
    favour: str | None = None,
    *,
    d_model: int = 16,
    layers: int = 1,
    vocab_size: int = 120,
    seed: int = 0,
    extra_tokens: tuple[str, ...] = (),
    eos_bias: float = 0.0,
) -> Path:
    """A random MarianMT. `favour` biases the output: "eos" (every output empty) or a word piece
    such as "▁a" (every output that piece repeated), so outcomes are deterministic; None leaves
    the random model as it is (and drops the forced EOS, so greedy decoding is plain argmax);
    a negative `eos_bias` makes its outputs longer."""
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    folder.mkdir(parents=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "spm"),
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    for token in (*extra_tokens, "<pad>"):
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    for name in ("source.spm", "target.spm"):
        (folder / name).write_bytes((folder / "spm.model").read_bytes())
    tokenizer = MarianTokenizer(
        source_spm=str(folder / "source.spm"),
        target_spm=str(folder / "target.spm"),
        vocab=str(folder / "vocab.json"),
    )
    pad, eos = vocab["<pad>"], vocab["</s>"]
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=4 if d_model >= 64 else 2,
        decoder_attention_heads=4 if d_model >= 64 else 2,
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        max_position_embeddings=256,
        pad_token_id=pad,
        eos_token_id=eos,
        decoder_start_token_id=pad,
        forced_eos_token_id=eos if favour else None,
    )
    torch.manual_seed(seed)
    model = MarianMTModel(config)
    with torch.no_grad():
        model.final_logits_bias[0, eos] = eos_bias
        if favour:
            model.final_logits_bias[0, eos if favour == "eos" else vocab[favour]] = 100.0
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    for name in ("corpus.txt", "spm.model", "spm.vocab"):
        (folder / name).unlink()
    return folder
