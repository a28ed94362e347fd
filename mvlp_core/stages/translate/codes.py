"""Each target language's name in every backend's vocabulary.

One row per language mvlp handles (IGLUE's 20 and the CC6L five): the Helsinki-NLP OPUS-MT model
that translates English into it (a pair model, or a multi-target model steered by a `>>xxx<<`
token), its NLLB-200 (FLORES-200) code, its M2M-100 token, its LibreTranslate code and the plain
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
    opus_token: str | None  # target token a multi-target OPUS model needs, e.g. >>por<<
    flores: str  # NLLB-200
    m2m: str  # M2M-100 language token
    libre: str  # LibreTranslate


def _row(
    lang: str, opus: str | None = None, token: str | None = None, flores: str = "", libre: str | None = None
) -> Codes:
    return Codes(
        name=LANGUAGES[lang][0],
        opus=opus or f"opus-mt-en-{lang}",
        opus_token=token,
        flores=flores,
        m2m=f"__{lang}__",
        libre=libre or lang,
    )


TABLE: dict[str, Codes] = {
    "ar": _row("ar", flores="arb_Arab"),
    "bg": _row("bg", flores="bul_Cyrl"),
    "bn": _row("bn", "opus-mt-en-inc", ">>ben<<", "ben_Beng"),
    "cs": _row("cs", flores="ces_Latn"),
    "da": _row("da", flores="dan_Latn"),
    "de": _row("de", flores="deu_Latn"),
    "el": _row("el", flores="ell_Grek"),
    "es": _row("es", flores="spa_Latn"),
    "et": _row("et", flores="est_Latn"),
    "fr": _row("fr", flores="fra_Latn"),
    "id": _row("id", flores="ind_Latn"),
    "ja": _row("ja", "opus-mt-en-jap", flores="jpn_Jpan"),
    "ko": _row("ko", "opus-mt-tc-big-en-ko", flores="kor_Hang"),
    "pt": _row("pt", "opus-mt-en-ROMANCE", ">>pt<<", "por_Latn", libre="pt"),
    "ru": _row("ru", flores="rus_Cyrl"),
    "sw": _row("sw", flores="swh_Latn"),
    "ta": _row("ta", "opus-mt-en-dra", ">>tam<<", "tam_Taml"),
    "tr": _row("tr", "opus-mt-tc-big-en-tr", flores="tur_Latn"),
    "vi": _row("vi", flores="vie_Latn"),
    "zh": _row("zh", flores="zho_Hans", libre="zh-Hans"),
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
