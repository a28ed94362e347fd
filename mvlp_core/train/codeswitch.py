"""Code-switching for M³P: replace a fraction of an English caption's words with translations.

Translations come from the mined bilingual dictionaries (`dictionary-<lang>.tsv`, any caption)
or from a caption's own alignments (its `words` and `alignments`: the xx words linked to each
English word, in xx order). Several languages may be given; each replaced word picks one of the
languages that can translate it, so one caption mixes languages as in M³P. The choice is a pure
function of (seed, key): re-running a training epoch with the same seed switches the same words.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvlp_core.dictionary import Entry, read_tsv

# en word (lowercased) -> [(translation, weight)]
Table = dict[str, list[tuple[str, float]]]


@dataclass(frozen=True)
class Switched:
    words: list[str]
    replaced: list[tuple[int, str, str]]  # (English word index, language, translation)


def table_from_entries(entries: Iterable[Entry]) -> Table:
    table: Table = defaultdict(list)
    for e in entries:
        table[e.en].append((e.xx, e.prob))
    return dict(table)


def load_dictionaries(align_dir: Path, languages: Sequence[str]) -> dict[str, Table]:
    """The dictionaries the align stage wrote, as translation tables per language."""
    return {
        lang: table_from_entries(read_tsv(Path(align_dir) / f"dictionary-{lang}.tsv")) for lang in languages
    }


def tables_from_record(record: Mapping[str, Any]) -> dict[str, Table]:
    """Translation tables from one training record's own alignments (DESIGN.md schema): English
    word -> the xx words linked to it, joined in xx order."""
    words_en = record["words"]["en"]
    tables: dict[str, Table] = {}
    for lang, links in record.get("alignments", {}).items():
        linked: dict[int, list[int]] = defaultdict(list)
        for i, j in links:
            linked[i].append(j)
        words_xx = record["words"][lang]
        tables[lang] = {}
        for i, js in linked.items():
            phrase = " ".join(words_xx[j] for j in sorted(set(js)))
            tables[lang].setdefault(words_en[i].lower(), []).append((phrase, 1.0))
    return tables


def code_switch(
    words: Sequence[str], tables: Mapping[str, Table], *, ratio: float, seed: int, key: str
) -> Switched:
    """Replace round(ratio * len(words)) of the translatable words (fewer if fewer can be
    translated); a translation is drawn by its weight from a randomly chosen language."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"ratio must be within [0, 1], got {ratio}")
    rng = random.Random(f"mvlp-codeswitch:{seed}:{key}")
    options = {i: [lang for lang in sorted(tables) if w.lower() in tables[lang]] for i, w in enumerate(words)}
    candidates = [i for i, langs in options.items() if langs]
    chosen = sorted(rng.sample(candidates, min(len(candidates), round(ratio * len(words)))))
    out = list(words)
    replaced = []
    for i in chosen:
        lang = rng.choice(options[i])
        translations, weights = zip(*tables[lang][words[i].lower()])
        translation = rng.choices(translations, weights=weights)[0]
        out[i] = translation
        replaced.append((i, lang, translation))
    return Switched(out, replaced)
