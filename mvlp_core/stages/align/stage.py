"""The align stage: tokenize English and translated captions, align them with eflomal in chunks.

eflomal learns its statistics from the corpus it is given, so aligning a 3M-caption stage in
small independent batches would align each batch nearly blind, and aligning it in one call would
take one process and no resume. The stage does what eflomal's priors exist for: a first pass
learns priors (from `align.prior_corpus`, or from up to `align.prior_pairs` of the stage's own
pairs), written once and atomically under `priors/`; then units — chunks of `align.chunk_size`
pairs of one language — align independently with those priors, in a process pool of
`align.workers`, each committed on its own so a killed run resumes at the next chunk and reuses
the priors. A language that fits in one chunk has all its statistics in that chunk: it aligns in
one call with no first pass (unless a prior corpus or priors file adds outside statistics).
"""

from __future__ import annotations

import functools
import itertools
import math
import multiprocessing
import os
import time
from collections import defaultdict
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mvlp_core import atomic, contract, dictionary, gcpause, unit_pool
from mvlp_core.languages import LANGUAGES
from mvlp_core.spec import AlignSpec, PipelineSpec, PriorCorpus, fingerprint_config
from mvlp_core.stage import Context, Needs, Shows, Stage, Work
from mvlp_core.stages.align.aer import AlignmentScore, combine, score
from mvlp_core.stages.align.eflomal_runner import (
    MAX_TOKENS,
    align_corpus,
    check_priors,
    learn_priors,
)
from mvlp_core.stages.align.gold import GoldPair, load_gold, project
from mvlp_core.stages.align.symmetrize import Link
from mvlp_core.stages.align.tokenize import Token, tokenize

NAME = "align"
PRIORS_DIR = "priors"
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

_DICTIONARY_COLUMNS = ("words_en", "words", "links")
ROW_GROUP = 2048  # rows per row group of an output file
Row = tuple[str, str | None, str | None]  # key, English caption (None: missing), xx text


def priors_path(align: AlignSpec, lang: str) -> Path | None:
    """The user's priors file for `lang` when `align.priors` names one, else None."""
    if align.priors in ("learn", "none"):
        return None
    return Path(align.priors.replace("{lang}", lang))


def _check(spec: PipelineSpec) -> None:
    unknown = [lang for lang in spec.languages if lang not in LANGUAGES or lang == "en"]
    if unknown:
        raise contract.StageError(
            f"{NAME}: cannot tokenize languages {unknown}; set languages to codes from "
            f"mvlp_core.languages ({', '.join(code for code in LANGUAGES if code != 'en')})"
        )
    align = spec.align
    if align.gold and not Path(align.gold).is_file():
        raise contract.StageError(
            f"{NAME}: gold alignments {align.gold} not found; fix align.gold or remove it"
        )
    if align.prior_corpus and align.priors != "learn":
        raise contract.StageError(
            f"{NAME}: align.prior_corpus is only read when align.priors is 'learn' "
            f"(it is {align.priors!r}); set one or the other"
        )
    for lang, corpus in align.prior_corpus.items():
        absent = [p for p in (corpus.src, corpus.tgt) if not Path(p).is_file()]
        if lang not in spec.languages or absent:
            what = f"files {absent} not found" if absent else f"{lang} is not in languages"
            raise contract.StageError(f"{NAME}: align.prior_corpus.{lang}: {what}; fix it")
    for lang in spec.languages:
        path = priors_path(align, lang)
        if path is None:
            continue
        if not path.is_file():
            raise contract.StageError(
                f"{NAME}: priors file {path} for {lang} not found; align.priors must be learn, "
                "none or the path of an eflomal priors file ({lang} stands for the language)"
            )
        try:
            check_priors(path)
        except ValueError as err:
            raise contract.StageError(f"{NAME}: {err}; fix align.priors") from None


def config(spec: PipelineSpec) -> dict[str, Any]:
    _check(spec)
    config = {"align": fingerprint_config(spec.align), "languages": spec.languages}
    config["versions"] = {name: metadata.version(name) for name in _VERSIONED}
    if spec.align.gold:
        config["gold_sha256"] = atomic.sha256_file(Path(spec.align.gold))
    inputs = {lang: [c.src, c.tgt] for lang, c in spec.align.prior_corpus.items()}
    for lang in spec.languages:
        path = priors_path(spec.align, lang)
        if path is not None:
            inputs[lang] = [str(path)]
    config["prior_sha256"] = {
        lang: [atomic.sha256_file(Path(p)) if Path(p).is_file() else None for p in paths]
        for lang, paths in sorted(inputs.items())
    }
    return config


@dataclass(frozen=True)
class _Chunk:
    """About `chunk_size` pairs of one language: slices of the language's rows, sorted by key, of
    consecutive translate files (download shard order)."""

    lang: str
    sources: tuple[tuple[str, int, int], ...]  # (download shard id, start, stop)
    pairs: int


def _translate_files(translate: Path) -> list[Path]:
    paths = sorted(p for p in translate.glob("[0-9]*.parquet"))
    if not paths:
        raise contract.StageError(
            f"{NAME}: no translate output files in {translate}; re-run the upstream stage with --force"
        )
    return paths


def _read(path: Path, columns: list[str]) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, KeyError) as err:
        raise contract.StageError(
            f"{NAME}: cannot read columns {columns} from {path} ({err}); the upstream "
            "stage's output does not follow docs/stage-io.md: re-run it with --force"
        ) from None


def _keys_by_lang(path: Path) -> dict[str, list[str]]:
    """Each language's keys in one translate file, sorted (a key's rows stay in file order)."""
    t = _read(path, ["key", "lang"])
    out: dict[str, list[str]] = defaultdict(list)
    for key, lang in zip(t.column("key").to_pylist(), t.column("lang").to_pylist()):
        out[lang].append(key)
    return {lang: sorted(keys) for lang, keys in out.items()}


def _plan(spec: PipelineSpec, inputs: dict[str, Path]) -> dict[str, _Chunk]:
    """Units in language order: each language's rows, file by file (download shard order) and by
    key within a file, cut every `chunk_size` distinct keys (duplicates of a key stay in its
    chunk). Reads one file's keys at a time, never the captions. A language without rows still
    gets one (empty) unit, so its output file exists."""
    size = spec.align.chunk_size
    chunks: dict[str, list[list[tuple[str, int, int]]]] = {lang: [[]] for lang in spec.languages}
    distinct = dict.fromkeys(spec.languages, 0)
    for path in _translate_files(inputs["translate"]):
        for lang, keys in _keys_by_lang(path).items():
            if lang not in chunks:
                continue
            start = 0
            for i, key in enumerate(keys):
                if i and key == keys[i - 1]:
                    continue
                if distinct[lang] == size:
                    if i > start:
                        chunks[lang][-1].append((path.stem, start, i))
                    chunks[lang].append([])
                    distinct[lang], start = 0, i
                distinct[lang] += 1
            if keys:
                chunks[lang][-1].append((path.stem, start, len(keys)))
    units: dict[str, _Chunk] = {}
    for lang in spec.languages:
        for index, chunk in enumerate(chunks[lang]):
            units[f"{lang}-{index:05d}"] = _Chunk(lang, tuple(chunk), sum(b - a for _, a, b in chunk))
    return units


def _rows(translate: Path, download: Path, chunk: _Chunk) -> list[Row]:
    """The chunk's (key, English caption, translation) rows, sorted by key: one download shard's
    files at a time."""
    rows: list[Row] = []
    for source, start, stop in chunk.sources:
        t = _read(translate / f"{source}.parquet", ["key", "lang", "text"])
        t = t.filter(pc.equal(t["lang"], chunk.lang))
        pairs = sorted(zip(t.column("key").to_pylist(), t.column("text").to_pylist()), key=lambda r: r[0])
        pairs = pairs[start:stop]
        samples = download / f"samples-{source}.parquet"
        captions: dict[str, str] = {}
        if samples.exists():
            s = _read(samples, ["key", "caption"])
            captions = dict(zip(s.column("key").to_pylist(), s.column("caption").to_pylist()))
        rows.extend((key, captions.get(key), text) for key, text in pairs)
    return rows


class _Pair(NamedTuple):
    key: str
    en: str
    xx: str
    en_tokens: list[Token]
    xx_tokens: list[Token]


def _tokenized_pairs(lang: str, rows: list[Row]) -> tuple[list[_Pair], list[contract.Reject]]:
    """The rows (sorted by key) that eflomal can align; the others as rejects."""
    pairs: list[_Pair] = []
    rejects: list[contract.Reject] = []
    seen: set[str] = set()
    for key, en, text in rows:
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
    return pairs, rejects


@dataclass(frozen=True)
class _ChunkJob:
    chunk: _Chunk
    translate: Path
    download: Path
    out: Path
    rel: str
    model: int
    priors: Path | None
    gold: dict[str, GoldPair]  # the language's gold pairs by English sentence


def _align_chunk(job: _ChunkJob) -> contract.UnitResult:
    """Read, tokenize, align and write one chunk (in a pool worker when align.workers > 1)."""
    with gcpause.paused():
        return _align_rows(job)


def _align_rows(job: _ChunkJob) -> contract.UnitResult:
    lang, rows = job.chunk.lang, _rows(job.translate, job.download, job.chunk)
    gold = {en: job.gold[en] for _, en, _ in rows if en in job.gold}
    pairs, rejects = _tokenized_pairs(lang, rows)
    en_words = [[t for t, _, _ in p.en_tokens] for p in pairs]
    xx_words = [[t for t, _, _ in p.xx_tokens] for p in pairs]
    started = time.perf_counter()
    try:
        links = align_corpus(en_words, xx_words, model=job.model, priors=job.priors)
    except RuntimeError as err:
        raise contract.StageError(f"{NAME} {job.rel}: {err}") from None
    seconds = time.perf_counter() - started
    columns = {
        "key": [p.key for p in pairs],
        "words_en": en_words,
        "words": xx_words,
        "links": _links_column(links),
    }
    with atomic.atomic_path(job.out / job.rel) as tmp:  # small row groups: shard reads by key range
        pq.write_table(pa.table(columns, schema=OUTPUT_SCHEMA), tmp, row_group_size=ROW_GROUP)
    extra: dict[str, Any] = {"lang": lang, "eflomal_seconds": round(seconds, 3)}
    if gold:
        extra.update(_gold_counts(pairs, links, gold))
    return contract.UnitResult(
        files={job.rel: len(pairs)},
        samples_in=len(rows),
        samples_out=len(pairs),
        rejects=rejects,
        extra=extra,
    )


def _links_column(links: list[list[Link]]) -> pa.Array:
    """Per pair its [i, j] links as the output's list<list<int32>> column, built from one flat
    array (converting ~10 small Python lists per pair one by one costs 4x as long)."""
    flat = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(links)), dtype=np.int32)
    pairs = pa.ListArray.from_arrays(pa.array(np.arange(0, len(flat) + 1, 2, dtype=np.int32)), pa.array(flat))
    per_pair = np.zeros(len(links) + 1, dtype=np.int32)
    np.cumsum([len(sent) for sent in links], out=per_pair[1:])
    return pa.ListArray.from_arrays(pa.array(per_pair), pairs)


@dataclass(frozen=True)
class _PriorsJob:
    lang: str
    path: Path
    model: int
    sample: tuple[_Chunk, ...] = ()  # chunks of the stage itself to sample pairs from
    limit: int = 0
    translate: Path | None = None
    download: Path | None = None
    corpus: PriorCorpus | None = None


def _corpus_pairs(lang: str, corpus: PriorCorpus) -> tuple[list[list[str]], list[list[str]]]:
    def words(line: str, code: str) -> list[str]:
        if corpus.pretokenized:
            return line.split()
        return [t for t, _, _ in tokenize(line, code)]

    src_words, tgt_words = [], []
    with open(corpus.src, encoding="utf-8") as src, open(corpus.tgt, encoding="utf-8") as tgt:
        for s, t in islice(zip(src, tgt), corpus.limit):
            s_words, t_words = words(s, "en"), words(t, lang)
            if 0 < len(s_words) <= MAX_TOKENS and 0 < len(t_words) <= MAX_TOKENS:
                src_words.append(s_words)
                tgt_words.append(t_words)
    return src_words, tgt_words


def _learn(job: _PriorsJob) -> dict[str, Any]:
    """The first pass: align the prior corpus (or a sample of the stage's pairs) once and write
    its priors atomically."""
    if job.corpus is not None:
        source, target = _corpus_pairs(job.lang, job.corpus)
        origin = f"prior_corpus {Path(job.corpus.src).name}"
    else:
        pairs, _ = _tokenized_pairs(job.lang, _sampled_rows(job))
        source = [[t for t, _, _ in p.en_tokens] for p in pairs]
        target = [[t for t, _, _ in p.xx_tokens] for p in pairs]
        origin = "stage pairs"
    if not source:
        raise contract.StageError(
            f"{NAME} {job.lang}: no alignable pairs to learn priors from ({origin}); "
            "give align.prior_corpus with text or set align.priors: none"
        )
    started = time.perf_counter()
    try:
        lexical = learn_priors(job.path, source, target, model=job.model)
    except RuntimeError as err:
        raise contract.StageError(f"{NAME} {job.lang} priors: {err}") from None
    return {
        "source": origin,
        "pairs": len(source),
        "lexical": lexical,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _sampled_rows(job: _PriorsJob) -> list[Row]:
    """Every k-th row of the language's chunks, spread over all of them (deterministic), read one
    chunk at a time: at most `limit` rows held."""
    assert job.translate is not None and job.download is not None
    step = max(1, math.ceil(sum(c.pairs for c in job.sample) / job.limit))
    out: list[Row] = []
    seen = 0
    for chunk in job.sample:
        rows = _rows(job.translate, job.download, chunk)
        out.extend(rows[(-seen) % step :: step])
        seen += len(rows)
    return out[: job.limit]


def plan(ctx: Context) -> Work:
    """Write `<lang>-<chunk>.parquet` (key, words_en, words, links) per chunk of every language,
    `priors/<lang>.priors` where priors were learned, and `dictionary-<lang>.tsv`.

    Pairs whose either side has no tokens are rejected (`empty_tokens`), as are pairs over
    eflomal's sentence length limit (`too_many_tokens`). With `align.gold` set, AER against the
    gold pairs found among the captions is reported per language in the manifest's `extra`.
    """
    spec, inputs, out_dir = ctx.spec, ctx.inputs, ctx.out_dir
    align = spec.align
    provenance = f"eflomal:model{align.model}"
    units = _plan(spec, inputs)
    chunks_of: dict[str, list[str]] = defaultdict(list)
    for unit, chunk in units.items():
        chunks_of[chunk.lang].append(unit)

    @functools.cache
    def gold_by_lang() -> dict[str, dict[str, GoldPair]]:
        try:
            entries = load_gold(Path(align.gold))
        except ValueError as err:
            raise contract.StageError(f"{NAME}: {err}; fix the file or remove align.gold") from None
        out: dict[str, dict[str, GoldPair]] = defaultdict(dict)
        for (lang, en), pair in entries.items():
            out[lang][en] = pair
        return out

    def priors_for(lang: str) -> tuple[Path | None, _PriorsJob | None]:
        """The priors file a language's chunks use, and the job that learns it if needed."""
        given = priors_path(align, lang)
        if given is not None or align.priors == "none":
            return given, None
        learned = out_dir / PRIORS_DIR / f"{lang}.priors"
        corpus = align.prior_corpus.get(lang)
        if corpus is not None:
            return learned, _PriorsJob(lang, learned, align.model, corpus=corpus)
        if len(chunks_of[lang]) > 1:
            chunks = tuple(units[u] for u in chunks_of[lang])
            return learned, _PriorsJob(
                lang, learned, align.model, chunks, align.prior_pairs, inputs["translate"], inputs["download"]
            )
        return None, None

    def job(unit: str) -> _ChunkJob:
        chunk = units[unit]
        gold = gold_by_lang().get(chunk.lang, {}) if align.gold else {}
        priors = priors_for(chunk.lang)[0]
        rel = f"{unit}.parquet"
        return _ChunkJob(
            chunk, inputs["translate"], inputs["download"], out_dir, rel, align.model, priors, gold
        )

    pool: ProcessPoolExecutor | None = None
    futures: dict[str, Future] = {}
    learned: dict[str, dict[str, Any]] = {}

    def before(pending: list[str]) -> None:
        """Learn the missing priors of the pending languages (a resumed run reuses those on
        disk), then queue the pending chunks on the pool."""
        nonlocal pool
        if align.workers > 1:
            pool = ProcessPoolExecutor(
                align.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=unit_pool.end_with,  # a worker ends when this process is killed
                initargs=(os.getpid(),),
            )
        langs = list(dict.fromkeys(units[u].lang for u in pending))
        jobs = [j for lang in langs if (j := priors_for(lang)[1]) and not j.path.exists()]
        results = pool.map(_learn, jobs) if pool else map(_learn, jobs)
        learned.update((j.lang, r) for j, r in zip(jobs, results))
        if pool:
            futures.update((u, pool.submit(_align_chunk, job(u))) for u in pending)

    def process(unit: str) -> contract.UnitResult:
        result = futures.pop(unit).result() if pool else _align_chunk(job(unit))
        lang = units[unit].lang
        if lang in learned:  # recorded with the language's first chunk committed after it
            result.extra["priors_learned"] = learned.pop(lang)
        return result

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "provenance": provenance,
            "symmetrize": align.symmetrize,
            "chunks": {lang: len(us) for lang, us in chunks_of.items()},
        }
        extra["priors"] = _priors_summary(records, {lang: priors_for(lang)[0] for lang in chunks_of})
        extra["dictionary"] = _write_dictionaries(out_dir, chunks_of, align)
        if align.gold:
            extra.update(_gold_summary(records))
        return extra

    def close() -> None:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    return Work(list(units), process, before=before, finalize=finalize, close=close)


def shows(spec: PipelineSpec, folder: Path, state: dict[str, Any]) -> Shows:
    aer = state.get("aer")
    if not aer:
        return Shows()
    return Shows(lines=("Alignment AER vs gold: " + ", ".join(f"{k} {v:.3f}" for k, v in aer.items()),))


def checks(spec: PipelineSpec) -> list[str]:
    try:
        _check(spec)
    except contract.StageError as err:
        return [str(err).removeprefix(f"{NAME}: ")]
    return []


def needs(spec: PipelineSpec) -> Needs:
    corpora = [p for c in spec.align.prior_corpus.values() for p in (c.src, c.tgt)]
    return Needs(
        reads=tuple([*([spec.align.gold] if spec.align.gold else []), *corpora]),
        resources=f"{spec.align.workers} eflomal process(es), chunks of {spec.align.chunk_size} pairs",
    )


STAGE = Stage(
    NAME, deps=("download", "translate"), config=config, plan=plan, shows=shows, checks=checks, needs=needs
)


def _priors_summary(records: list[dict[str, Any]], paths: dict[str, Path | None]) -> dict[str, Any]:
    """Per language: the priors file its chunks used (its sha256) and how it was learned."""
    how = {
        r["extra"]["lang"]: r["extra"]["priors_learned"] for r in records if "priors_learned" in r["extra"]
    }
    summary: dict[str, Any] = {}
    for lang, path in paths.items():
        if path is None:
            summary[lang] = None
            continue
        summary[lang] = {"file": str(path), "sha256": atomic.sha256_file(path)}
        if lang in how:
            summary[lang].update(how[lang])
    return summary


def _write_dictionaries(out_dir: Path, chunks_of: dict[str, list[str]], align: AlignSpec) -> dict[str, int]:
    """`dictionary-<lang>.tsv` mined from all chunks of each language; returns entry counts."""
    sizes = {}
    for lang, units in chunks_of.items():
        tables = (
            pq.read_table(out_dir / f"{unit}.parquet", columns=list(_DICTIONARY_COLUMNS)) for unit in units
        )
        entries = dictionary.select(
            dictionary.count_links(tables),
            min_count=align.dictionary_min_count,
            min_prob=align.dictionary_min_prob,
        )
        sizes[lang] = dictionary.write_tsv(out_dir / f"dictionary-{lang}.tsv", entries)
    return sizes


def _gold_counts(pairs: list[_Pair], links: list[list[Link]], gold: dict[str, GoldPair]) -> dict[str, Any]:
    """Link counts against the gold pairs with the same English and xx text (a gold entry whose
    translation differs from ours cannot be mapped: counted, not scored)."""
    scored, mismatched = [], 0
    for pair, predicted in zip(pairs, links):
        entry = gold.get(pair.en)
        if entry is None:
            continue
        if entry.xx != pair.xx:
            mismatched += 1
            continue
        sure = project(entry, [(s, e) for _, s, e in pair.en_tokens], [(s, e) for _, s, e in pair.xx_tokens])
        scored.append((predicted, sure, sure))
    result = score(scored)
    return {
        "gold_pairs": len(scored),
        "gold_text_mismatch": mismatched,
        "gold_counts": [result.predicted, result.sure, result.hit_sure, result.hit_possible],
    }


def _gold_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """AER, precision and recall per language over all its chunks (counts summed)."""
    parts: dict[str, list[AlignmentScore]] = defaultdict(list)
    pairs: dict[str, int] = defaultdict(int)
    for r in records:
        extra = r["extra"]
        if extra.get("gold_pairs"):
            n_a, n_s, a_s, a_p = extra["gold_counts"]
            parts[extra["lang"]].append(AlignmentScore(0, 0, 0, n_a, n_s, a_s, a_p))
            pairs[extra["lang"]] += extra["gold_pairs"]
    totals = {lang: combine(scores) for lang, scores in parts.items()}
    return {
        "aer": {lang: round(s.aer, 4) for lang, s in totals.items()},
        "precision": {lang: round(s.precision, 4) for lang, s in totals.items()},
        "recall": {lang: round(s.recall, 4) for lang, s in totals.items()},
        "gold_pairs": dict(pairs),
    }
