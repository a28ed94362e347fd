"""Each target language's name in every backend's vocabulary.

One row per language mvlp handles (IGLUE's 20 and the CC6L five): the Helsinki-NLP OPUS-MT model
that translates English into it (a pair model, or a multi-target model steered by a `>>xxx<<`
token), the codes such a token may carry for it (read from each model's vocabulary, best first),
its NLLB-200 (FLORES-200) code, its M2M-100 token, its LibreTranslate code and the plain
English name used in LLM prompts. Whether a given model or server really covers a language is
checked when it loads (`unsupported`), not assumed from this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from mvlp_core.contract import StageError
from mvlp_core.languages import LANGUAGES


@dataclass(frozen=True)
class Codes:
    name: str  # English name, for LLM prompts
    opus: str  # Helsinki-NLP model name, e.g. opus-mt-en-de
    opus_targets: tuple[str, ...]  # what a multi-target OPUS model's >>xxx<< token may say, best first
    flores: str  # NLLB-200
    m2m: str  # M2M-100 language token
    libre: str  # LibreTranslate


def _targets(script: str, *codes: str) -> tuple[str, ...]:
    """The codes a multi-target OPUS-MT vocabulary may name a language by, best first: each code
    with the language's ISO 15924 script (`cmn_Hans`: Simplified, never `cmn_Hant`), then the bare
    codes (ISO 639-3 ones before the ISO 639-1 one)."""
    return tuple(f"{code}_{script}" for code in codes) + codes


def _row(
    lang: str,
    targets: tuple[str, ...],
    opus: str | None = None,
    flores: str = "",
    libre: str | None = None,
) -> Codes:
    return Codes(
        name=LANGUAGES[lang][0],
        opus=opus or f"opus-mt-en-{lang}",
        opus_targets=targets,
        flores=flores,
        m2m=f"__{lang}__",
        libre=libre or lang,
    )


TABLE: dict[str, Codes] = {
    "ar": _row("ar", _targets("Arab", "ara", "arb", "ar"), flores="arb_Arab"),
    "bg": _row("bg", _targets("Cyrl", "bul", "bg"), flores="bul_Cyrl"),
    "bn": _row("bn", _targets("Beng", "ben", "bn"), "opus-mt-en-inc", "ben_Beng"),
    "cs": _row("cs", _targets("Latn", "ces", "cze", "cs"), flores="ces_Latn"),
    "da": _row("da", _targets("Latn", "dan", "da"), flores="dan_Latn"),
    "de": _row("de", _targets("Latn", "deu", "ger", "de"), flores="deu_Latn"),
    "el": _row("el", _targets("Grek", "ell", "gre", "el"), flores="ell_Grek"),
    "es": _row("es", _targets("Latn", "spa", "es"), flores="spa_Latn"),
    "et": _row("et", _targets("Latn", "est", "ekk", "et"), flores="est_Latn"),
    "fr": _row("fr", _targets("Latn", "fra", "fre", "fr"), flores="fra_Latn"),
    "id": _row("id", _targets("Latn", "ind", "id"), flores="ind_Latn"),
    "ja": _row("ja", _targets("Jpan", "jpn", "ja"), "opus-mt-en-jap", "jpn_Jpan"),
    "ko": _row("ko", _targets("Hang", "kor", "ko"), "opus-mt-tc-big-en-ko", "kor_Hang"),
    "pt": _row("pt", _targets("Latn", "por", "pt"), "opus-mt-en-ROMANCE", "por_Latn"),
    "ru": _row("ru", _targets("Cyrl", "rus", "ru"), flores="rus_Cyrl"),
    "sw": _row("sw", _targets("Latn", "swh", "swa", "sw"), flores="swh_Latn"),
    "ta": _row("ta", _targets("Taml", "tam", "ta"), "opus-mt-en-dra", "tam_Taml"),
    "tr": _row("tr", _targets("Latn", "tur", "tr"), "opus-mt-tc-big-en-tr", "tur_Latn"),
    "vi": _row("vi", _targets("Latn", "vie", "vi"), flores="vie_Latn"),
    "zh": _row("zh", _targets("Hans", "cmn", "zho", "zh"), flores="zho_Hans", libre="zh-Hans"),
}
assert set(TABLE) == set(LANGUAGES) - {"en"}, "every supported target language needs a row"


def codes(lang: str) -> Codes:
    return TABLE[lang]


def model_name(template: str, lang: str) -> str:
    """Fill a model template: `{lang}` is our code (de), `{opus}` the OPUS-MT name (opus-mt-en-de)."""
    return template.replace("{lang}", lang).replace("{opus}", TABLE[lang].opus)


def unsupported(lang: str, model: str, looked_for: str, fix: str) -> StageError:
    """The error for a model or server that cannot produce `lang`: language, model, and the fix."""
    return StageError(f"translate: {model} cannot produce {LANGUAGES[lang][0]} ({lang}): {looked_for}. {fix}")
