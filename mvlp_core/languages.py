"""The languages mvlp handles: IGLUE's 20 plus the CC6L set, with the facts stages need about each."""

from __future__ import annotations

# code -> (English name, script). Script picks the word tokenizer and the script check.
LANGUAGES: dict[str, tuple[str, str]] = {
    "en": ("English", "latin"),
    "ar": ("Arabic", "arabic"),
    "bg": ("Bulgarian", "cyrillic"),
    "bn": ("Bengali", "bengali"),
    "cs": ("Czech", "latin"),
    "da": ("Danish", "latin"),
    "de": ("German", "latin"),
    "el": ("Greek", "greek"),
    "es": ("Spanish", "latin"),
    "et": ("Estonian", "latin"),
    "fr": ("French", "latin"),
    "id": ("Indonesian", "latin"),
    "ja": ("Japanese", "japanese"),
    "ko": ("Korean", "hangul"),
    "pt": ("Portuguese", "latin"),
    "ru": ("Russian", "cyrillic"),
    "sw": ("Swahili", "latin"),
    "ta": ("Tamil", "tamil"),
    "tr": ("Turkish", "latin"),
    "vi": ("Vietnamese", "latin"),
    "zh": ("Chinese", "han"),
}
SUPPORTED_LANGUAGES: tuple[str, ...] = tuple(LANGUAGES)
CC6L = ("de", "fr", "cs", "ja", "zh")


def script_of(lang: str) -> str:
    try:
        return LANGUAGES[lang][1]
    except KeyError:
        raise ValueError(f"unknown language {lang!r}; allowed: {', '.join(SUPPORTED_LANGUAGES)}") from None
