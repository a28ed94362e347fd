"""Word-level alignment links mapped onto the subword tokens a model actually sees (for UC²'s
co-masking of aligned words).

Records store `words` (mvlp's tokenization) and links over them; a trainer tokenizes the caption
text with its own tokenizer. Both sides are tied through character spans: the words are found
in order in the caption, every subword token carries character offsets (HF fast tokenizers and
`tokenizers` natively; sentencepiece as byte offsets, converted here), and a token belongs to
every word it overlaps. Special tokens and bare-whitespace pieces overlap no word.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Span = tuple[int, int]


def word_spans(text: str, words: Sequence[str]) -> list[Span]:
    """Character spans of `words` found left to right in `text`; ValueError if one is missing
    (the words do not come from this text)."""
    spans, pos = [], 0
    for word in words:
        start = text.find(word, pos)
        if start < 0:
            raise ValueError(f"word {word!r} not found in {text!r} after position {pos}")
        spans.append((start, start + len(word)))
        pos = start + len(word)
    return spans


def token_offsets(text: str, tokenizer: Any, *, add_special_tokens: bool = True) -> list[Span]:
    """Character offsets of the tokens `tokenizer` makes of `text`, in token order (special
    tokens as empty spans). Accepts HF fast tokenizers, `tokenizers.Tokenizer` and
    `sentencepiece.SentencePieceProcessor`."""
    if hasattr(tokenizer, "encode_as_pieces"):  # sentencepiece: byte offsets
        char_at = _byte_to_char(text)
        proto = tokenizer.encode(text, return_type="proto")
        spans = [(char_at[p.begin], char_at[p.end]) for p in proto.pieces]
        if add_special_tokens:
            if tokenizer.bos_id() >= 0:
                spans.insert(0, (0, 0))
            if tokenizer.eos_id() >= 0:
                spans.append((len(text), len(text)))
        return spans
    if getattr(tokenizer, "is_fast", False):  # transformers PreTrainedTokenizerFast
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
        return [tuple(span) for span in enc["offset_mapping"]]
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "get_vocab_size"):  # tokenizers
        return [tuple(span) for span in tokenizer.encode(text, add_special_tokens=add_special_tokens).offsets]
    raise TypeError(
        f"{type(tokenizer).__name__} gives no token offsets; use a fast HF tokenizer, "
        "a tokenizers.Tokenizer or a sentencepiece.SentencePieceProcessor"
    )


def _byte_to_char(text: str) -> list[int]:
    """char_at[b] = index of the character that UTF-8 byte offset b starts (or ends) in."""
    char_at = []
    for i, ch in enumerate(text):
        char_at.extend([i] * len(ch.encode("utf-8")))
    char_at.append(len(text))
    return char_at


def word_tokens(word_spans_: Sequence[Span], offsets: Sequence[Span]) -> list[list[int]]:
    """For each word, the indices of the tokens overlapping it."""
    return [[t for t, (ts, te) in enumerate(offsets) if ts < we and ws < te] for ws, we in word_spans_]


def words_to_tokens(text: str, words: Sequence[str], tokenizer: Any, **kw: Any) -> list[list[int]]:
    """Token indices per word of `words` (a record's `words[lang]`) in `tokenizer(text)`."""
    return word_tokens(word_spans(text, words), token_offsets(text, tokenizer, **kw))


def token_links(
    links: Iterable[Sequence[int]],
    src_tokens: Sequence[Sequence[int]],
    tgt_tokens: Sequence[Sequence[int]],
) -> list[tuple[int, int]]:
    """Word links (i, j) as token links: every token of word i with every token of word j."""
    return sorted({(a, b) for i, j in links for a in src_tokens[i] for b in tgt_tokens[j]})
