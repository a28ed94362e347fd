"""Line filters (length, ratio, identical sides, score) and the dedup hash.

Lengths are in words: whitespace-separated for space-delimited scripts; for Japanese and
Chinese, written without spaces, the align stage's words (MeCab, jieba: `align/tokenize.py`)
less punctuation. Counted in characters, a Japanese sentence is about 2.5 times its English
word count, so `max_length_ratio: 2.5` rejected half of good en–ja pairs; in words, one
`min_words`/`max_words`/`max_length_ratio` works across en–ja and en–zh pairs as across en–de.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata

from mvlp_core.languages import script_of
from mvlp_core.spec import TextCorpusSpec
from mvlp_core.stages.align.tokenize import tokenize

UNSPACED_SCRIPTS = ("japanese", "han")
_DIGITS = re.compile(r"\d")


def length(text: str, lang: str) -> int:
    """`text`'s words (see the module docstring)."""
    if script_of(lang) in UNSPACED_SCRIPTS:
        return sum(1 for word, _, _ in tokenize(text, lang) if not _is_punctuation(word))
    return len(text.split())


def _is_punctuation(word: str) -> bool:
    return all(unicodedata.category(ch)[0] in "PS" for ch in word)


@functools.cache
def _punctuation_to_space() -> dict[int, str]:
    """str.translate table: every Unicode punctuation (P*) and symbol (S*) character -> space.
    Built once from planes 0-1 (higher planes hold ideographs, tags and private use, no P/S);
    a `\\W` regex would also drop combining marks and so break Tamil or Bengali words."""
    return {cp: " " for cp in range(0x20000) if unicodedata.category(chr(cp))[0] in "PS"}


def normalise(text: str) -> str:
    """For `dedup: normalised` and identical-side checks: NFKC, case-folded, digits as 0,
    punctuation and symbols dropped, whitespace collapsed (CCNet-style)."""
    text = _DIGITS.sub("0", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(text.translate(_punctuation_to_space()).split())


def dedup_hash(langs: tuple[str, ...], texts: tuple[str, ...], mode: str) -> int:
    """64-bit hash of the line's identity; 8 bytes per kept line is what dedup holds in memory."""
    parts = texts if mode == "exact" else tuple(normalise(t) for t in texts)
    payload = "\x1f".join((*langs, *parts)).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "little")


def check(
    corpus: TextCorpusSpec, langs: tuple[str, ...], texts: tuple[str, ...], score: float | None
) -> tuple[str, str] | None:
    """(reason, detail) of the first filter the line fails, or None. Dedup comes after."""
    if corpus.min_score is not None and score < corpus.min_score:
        return "below_min_score", f"score {score} < {corpus.min_score}"
    for lang, text in zip(langs, texts):
        if not text:
            return "empty", f"{lang} side empty"
    if len(texts) == 2 and normalise(texts[0]) == normalise(texts[1]):
        return "identical_sides", f"{langs[0]} and {langs[1]} sides are the same text"
    lengths = [length(t, lang) for lang, t in zip(langs, texts)]
    for lang, text, n in zip(langs, texts, lengths):
        if n < corpus.min_words or len(text) < corpus.min_chars:
            return (
                "too_short",
                f"{lang}: {n} words, {len(text)} chars (min {corpus.min_words} words, {corpus.min_chars} chars)",
            )
        if (corpus.max_words is not None and n > corpus.max_words) or (
            corpus.max_chars is not None and len(text) > corpus.max_chars
        ):
            return (
                "too_long",
                f"{lang}: {n} words, {len(text)} chars (max {corpus.max_words} words, {corpus.max_chars} chars)",
            )
    if corpus.max_length_ratio is not None and len(lengths) == 2:
        ratio = max(lengths) / min(lengths)
        if ratio > corpus.max_length_ratio:
            return (
                "length_ratio",
                f"{lengths[0]}:{lengths[1]} words, ratio {ratio:.2f} > {corpus.max_length_ratio}",
            )
    return None
