"""The align stage: tokenize English and translated captions, align each language with eflomal.

Units are target languages, because eflomal learns its statistics from the whole corpus of a
language pair: one call per language over every translated pair of that language.
"""

from __future__ import annotations

import functools
import importlib
import time
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from mvlp_core import atomic, contract
from mvlp_core.languages import LANGUAGES
from mvlp_core.spec import PipelineSpec, fingerprint_config
from mvlp_core.stages.align.aer import score
from mvlp_core.stages.align.eflomal_runner import MAX_TOKENS, align_corpus
from mvlp_core.stages.align.gold import GoldPair, load_gold, project
from mvlp_core.stages.align.symmetrize import Link
from mvlp_core.stages.align.tokenize import Token, tokenize

STAGE = "align"
OUTPUT_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("words_en", pa.list_(pa.string())),
        ("words", pa.list_(pa.string())),
        ("links", pa.list_(pa.list_(pa.int32()))),
    ]
)
# Tokenizer dictionaries and the aligner change the output; their versions are part of the config.
_VERSIONED = ("eflomal", "jieba", "fugashi", "unidic-lite")


def _read(folder: Path, pattern: str, columns: list[str], **kw: Any) -> pa.Table:
    paths = sorted(p for p in folder.glob(pattern) if not p.name.startswith("_"))
    if not paths:
        raise contract.StageError(
            f"{STAGE}: no {pattern} files in {folder}; re-run the upstream stage with --force"
        )
    try:
        return pa.concat_tables(pq.read_table(p, columns=columns, **kw) for p in paths)
    except (pa.ArrowInvalid, KeyError) as err:
        raise contract.StageError(
            f"{STAGE}: cannot read columns {columns} from {folder}/{pattern} ({err}); the upstream "
            "stage's output does not follow docs/stage-io.md: re-run it with --force"
        ) from None


def _check(spec: PipelineSpec, inputs: dict[str, Path]) -> None:
    missing = [name for name in ("download", "translate") if name not in inputs]
    if missing:
        raise contract.StageError(
            f"{STAGE}: inputs lack {missing}; pass the folders of the download and translate stages"
        )
    unknown = [lang for lang in spec.languages if lang not in LANGUAGES or lang == "en"]
    if unknown:
        raise contract.StageError(
            f"{STAGE}: cannot tokenize languages {unknown}; set languages to codes from "
            f"mvlp_core.languages ({', '.join(code for code in LANGUAGES if code != 'en')})"
        )
    if spec.align.gold and not Path(spec.align.gold).is_file():
        raise contract.StageError(
            f"{STAGE}: gold alignments {spec.align.gold} not found; fix align.gold or remove it"
        )


def config(spec: PipelineSpec) -> dict[str, Any]:
    config = {**fingerprint_config(spec.align), "languages": spec.languages}
    config["versions"] = {name: metadata.version(name) for name in _VERSIONED}
    if spec.align.gold:
        config["gold_sha256"] = atomic.sha256_file(Path(spec.align.gold))
    return config


def run_align(
    spec: PipelineSpec,
    inputs: dict[str, Path],
    out_dir: Path,
    *,
    force: bool = False,
    progress: contract.ProgressFn | None = None,
) -> contract.Manifest:
    """Write `<lang>.parquet` (key, words_en, words, links) for every language in the spec.

    Pairs whose either side has no tokens are rejected (`empty_tokens`), as are pairs over
    eflomal's sentence length limit (`too_many_tokens`). With `align.gold` set, AER against the
    gold pairs found among the captions is reported per language in the manifest's `extra`.
    """
    inputs = {name: Path(folder) for name, folder in inputs.items()}
    _check(spec, inputs)
    fp = contract.stage_fingerprint(
        STAGE, config(spec), inputs, importlib.import_module(__package__)
    )
    provenance = f"eflomal:model{spec.align.model}"

    @functools.cache
    def captions() -> dict[str, str]:
        table = _read(inputs["download"], "samples-*.parquet", ["key", "caption"])
        return dict(zip(table.column("key").to_pylist(), table.column("caption").to_pylist()))

    @functools.cache
    def gold() -> dict[tuple[str, str], GoldPair]:
        try:
            return load_gold(Path(spec.align.gold))
        except ValueError as err:
            fix = "fix the file or remove align.gold"
            raise contract.StageError(f"{STAGE}: {err}; {fix}") from None

    def process(lang: str) -> contract.UnitResult:
        table = _read(
            inputs["translate"], "*.parquet", ["key", "text"], filters=[("lang", "==", lang)]
        )
        pairs, rejects = _tokenized_pairs(lang, table, captions())
        en_words = [[t for t, _, _ in p.en_tokens] for p in pairs]
        xx_words = [[t for t, _, _ in p.xx_tokens] for p in pairs]
        started = time.perf_counter()
        try:
            links = align_corpus(en_words, xx_words, model=spec.align.model)
        except RuntimeError as err:
            raise contract.StageError(f"{STAGE} {lang}: {err}") from None
        seconds = time.perf_counter() - started
        rel = f"{lang}.parquet"
        columns = {
            "key": [p.key for p in pairs],
            "words_en": en_words,
            "words": xx_words,
            "links": [[list(link) for link in sent] for sent in links],
        }
        atomic.write_parquet(Path(out_dir) / rel, pa.table(columns, schema=OUTPUT_SCHEMA))
        extra: dict[str, Any] = {"provenance": provenance, "eflomal_seconds": round(seconds, 3)}
        if spec.align.gold:
            extra.update(_gold_scores(lang, pairs, links, gold()))
        return contract.UnitResult(
            files={rel: len(pairs)},
            samples_in=table.num_rows,
            samples_out=len(pairs),
            rejects=rejects,
            extra=extra,
        )

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        extra: dict[str, Any] = {"provenance": provenance, "symmetrize": spec.align.symmetrize}
        if spec.align.gold:
            for name in ("aer", "precision", "recall", "gold_pairs"):
                extra[name] = {r["unit"]: r["extra"][name] for r in records if name in r["extra"]}
        return extra

    return contract.run_units(
        STAGE, Path(out_dir), fp, spec.languages, process,
        force=force, progress=progress, finalize=finalize,
    )


class _Pair(NamedTuple):
    key: str
    en: str
    xx: str
    en_tokens: list[Token]
    xx_tokens: list[Token]


def _tokenized_pairs(
    lang: str, table: pa.Table, captions: dict[str, str]
) -> tuple[list[_Pair], list[contract.Reject]]:
    """The translated rows of one language that eflomal can align, sorted by key; the others
    as rejects."""
    pairs: list[_Pair] = []
    rejects: list[contract.Reject] = []
    seen: set[str] = set()
    for key, text in zip(table.column("key").to_pylist(), table.column("text").to_pylist()):
        en = captions.get(key)
        if key in seen:
            rejects.append(contract.Reject(key, "duplicate_pair", f"second {lang} row for key"))
            continue
        seen.add(key)
        if en is None:
            rejects.append(contract.Reject(key, "no_english_caption", "key not in download"))
            continue
        en_tokens, xx_tokens = tokenize(en, "en"), tokenize(text or "", lang)
        if not en_tokens or not xx_tokens:
            side = "en" if not en_tokens else lang
            rejects.append(contract.Reject(key, "empty_tokens", f"{side} text has no words"))
        elif max(len(en_tokens), len(xx_tokens)) > MAX_TOKENS:
            detail = f"eflomal aligns at most {MAX_TOKENS} words per sentence"
            rejects.append(contract.Reject(key, "too_many_tokens", detail))
        else:
            pairs.append(_Pair(key, en, text, en_tokens, xx_tokens))
    return sorted(pairs, key=lambda p: p.key), rejects


def _gold_scores(
    lang: str,
    pairs: list[_Pair],
    links: list[list[Link]],
    gold: dict[tuple[str, str], GoldPair],
) -> dict[str, Any]:
    """AER over the aligned pairs that have a gold entry with the same English and xx text
    (a gold entry whose translation differs from ours cannot be mapped: counted, not scored)."""
    scored, mismatched = [], 0
    for pair, predicted in zip(pairs, links):
        entry = gold.get((lang, pair.en))
        if entry is None:
            continue
        if entry.xx != pair.xx:
            mismatched += 1
            continue
        sure = project(
            entry, [(s, e) for _, s, e in pair.en_tokens], [(s, e) for _, s, e in pair.xx_tokens]
        )
        scored.append((predicted, sure, sure))
    out: dict[str, Any] = {"gold_pairs": len(scored), "gold_text_mismatch": mismatched}
    if scored:
        result = score(scored)
        out.update(
            aer=round(result.aer, 4),
            precision=round(result.precision, 4),
            recall=round(result.recall, 4),
        )
    return out
