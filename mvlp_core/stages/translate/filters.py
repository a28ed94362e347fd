"""Quality filters every translation backend's output passes through; each failure is a reject.

MT systems fail in recognisable ways: nothing comes out, the source is copied through, the output
is cut short or runs on, the wrong language (script) comes out, or decoding loops on one phrase.
Each check returns a reject reason and a short detail, or None when the output passes.
"""

from __future__ import annotations

import re
import unicodedata

from mvlp_core.languages import script_of
from mvlp_core.spec import TranslateFilters

# Unicode name prefixes of the letters each script is written in. Japanese mixes kana and kanji;
# Korean text may carry hanja.
SCRIPT_LETTERS: dict[str, tuple[str, ...]] = {
    "latin": ("LATIN",),
    "cyrillic": ("CYRILLIC",),
    "greek": ("GREEK",),
    "arabic": ("ARABIC",),
    "bengali": ("BENGALI",),
    "tamil": ("TAMIL",),
    "hangul": ("HANGUL", "CJK UNIFIED"),
    "han": ("CJK UNIFIED",),
    "japanese": ("HIRAGANA", "KATAKANA", "CJK UNIFIED"),
}
# Scripts written without spaces between words: repetition is looked for in characters (_tokens).
UNSPACED = {"han", "japanese"}
_WORD = re.compile(r"\w+", re.UNICODE)
_UNSPACED_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[A-Za-z]+|\S")  # a number or Latin word, else a character


def script_share(text: str, script: str) -> float | None:
    """Share of the letters in `text` that belong to `script`; None when there are no letters."""
    prefixes = SCRIPT_LETTERS[script]
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return None
    hits = sum(1 for ch in letters if unicodedata.name(ch, "").startswith(prefixes))
    return hits / len(letters)


def repeated_ngram(tokens: list[str], max_repeats: int, max_n: int = 4) -> tuple[str, int] | None:
    """The first n-gram (n <= max_n) that occurs more than `max_repeats` times in a row."""
    for n in range(1, max_n + 1):
        for start in range(len(tokens) - n):
            gram = tokens[start : start + n]
            count = 1
            pos = start + n
            while tokens[pos : pos + n] == gram:
                count += 1
                pos += n
            if count > max_repeats:
                return " ".join(gram), count
    return None


def _tokens(text: str, script: str) -> list[str]:
    """Units a repetition is counted in: words, or in unspaced scripts each character, but a number
    (10000, 1,000,000) or a Latin word one unit as in spaced scripts (else '10000' is '0' x4)."""
    if script in UNSPACED:
        return [
            t.lower() for t in _UNSPACED_TOKEN.findall(text) if not unicodedata.category(t[0]).startswith("P")
        ]
    return [w.lower() for w in _WORD.findall(text)]


def check(source: str, output: str, lang: str, spec: TranslateFilters) -> tuple[str, str] | None:
    """(reason, detail) for the first filter `output` fails, or None when it passes them all."""
    out = output.strip()
    if not out:
        return "empty_output", ""
    script = script_of(lang)
    if spec.identical and out.casefold() == source.strip().casefold():
        return "identical_to_source", ""
    bounds = spec.length_ratio.get(script) or spec.length_ratio.get("default")
    src_chars = len(source.strip())
    if bounds and src_chars >= spec.ratio_min_source_chars:
        ratio = len(out) / src_chars
        if not bounds.min <= ratio <= bounds.max:
            return "length_ratio", f"{ratio:.2f} outside [{bounds.min}, {bounds.max}] ({script})"
    if spec.script_share > 0:
        share = script_share(out, script)
        if share is not None and share < spec.script_share:
            return "wrong_script", f"{share:.0%} {script} letters, need {spec.script_share:.0%}"
        if share is None and script != "latin":
            return "wrong_script", f"no letters; {script} expected"
    if spec.max_repeats:
        found = repeated_ngram(_tokens(out, script), spec.max_repeats)
        if found:
            return "repetition", f"{found[0]!r} x{found[1]}"
    return None
