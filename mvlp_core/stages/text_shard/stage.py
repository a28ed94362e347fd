"""text-shard: parallel and monolingual corpora -> `text-NNNNN.tar` WebDataset shards of
`KEY.json` records, with per-language counts and sampling weights in the manifest.

Units are consecutive chunks of `samples_per_shard` input lines of one stream (a corpus language or
pair), numbered in spec order; each unit writes one tar, so a tar holds one stream and the
manifest's `counts.streams` maps each stream to its tar range. Every input line ends in a tar or
as a reject: encoding_error, malformed_line, below_min_score, empty, identical_sides, too_short,
too_long, length_ratio, duplicate (checked in that order).

Dedup is per stream, first occurrence wins: each unit stores the 64-bit hashes of the lines it
kept (`_units/NNNNN.dedup.npy`), and a unit is checked against the hashes of the stream's earlier
units, so a resumed or re-run unit decides exactly as it did the first time.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mvlp_core import atomic, contract, readable, sampling
from mvlp_core.sampling import canonical_pair
from mvlp_core.spec import PipelineSpec, fingerprint_config
from mvlp_core.stage import Context, Needs, Shows, Stage, Work
from mvlp_core.stages.text_shard import filters
from mvlp_core.stages.text_shard.readers import (
    BadLine,
    Cursor,
    Stream,
    count_lines,
    parse,
    source_id,
    streams,
)
from mvlp_core.tarmember import tar_file


@dataclass(frozen=True)
class Unit:
    stream: Stream
    index: int  # position among the stream's units
    start: int  # first input line (0-based row)
    end: int


Line = tuple[int, tuple[str, ...], float | None]  # (row, texts per side, score)


def config(spec: PipelineSpec) -> dict[str, Any]:
    """Output-determining config: the text section and each corpus file's identity (see
    `readers.source_id`)."""
    section = fingerprint_config(spec.text)
    section["corpora"] = [c.model_dump() for c in spec.text.corpora]
    return {"text": section, "sources": {f: source_id(f) for s in streams(spec) for f in s.files}}


def plan_units(spec: PipelineSpec) -> list[Unit]:
    per = spec.text.samples_per_shard
    units = []
    for stream in streams(spec):
        n = count_lines(stream)
        units += [Unit(stream, i, lo, min(lo + per, n)) for i, lo in enumerate(range(0, n, per))]
    return units


def record(stream: Stream, key: str, texts: tuple[str, ...], score: float | None) -> dict[str, Any]:
    parallel = len(texts) == 2
    return {
        "key": key,
        "kind": stream.kind,
        "src_lang": stream.langs[0],
        "src": texts[0],
        "tgt_lang": stream.langs[1] if parallel else None,
        "tgt": texts[1] if parallel else None,
        "score": score,
        "corpus": stream.corpus.name,
    }


class _Seen:
    """The dedup hashes of a stream's earlier units, kept sorted in memory while units run in
    order and rebuilt from the units' `.dedup.npy` files when a run resumes."""

    def __init__(self, out_dir: Path, units: list[Unit], names: list[str]):
        self.out_dir, self.units, self.names = out_dir, units, names
        self.at: tuple[str, int] | None = None  # (stream id, index of the next unit)
        self.hashes = np.empty(0, dtype=np.uint64)

    def path(self, i: int) -> Path:
        return self.out_dir / contract.UNITS_DIR / f"{self.names[i]}.dedup.npy"

    def before(self, i: int) -> np.ndarray:
        unit = self.units[i]
        if self.at != (unit.stream.id, unit.index):
            first = i - unit.index
            parts = []
            for j in range(first, i):
                if not self.path(j).exists():
                    raise contract.StageError(
                        f"text-shard: dedup hashes of unit {self.names[j]} are missing "
                        f"({self.path(j)}); re-run with --force"
                    )
                parts.append(np.load(self.path(j)))
            self.hashes = np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)
        return self.hashes

    def commit(self, i: int, kept: np.ndarray) -> None:
        kept = np.sort(kept)
        with atomic.atomic_open(self.path(i), "wb") as f:
            np.save(f, kept)
        self.hashes = np.insert(self.hashes, np.searchsorted(self.hashes, kept), kept)
        unit = self.units[i]
        self.at = (unit.stream.id, unit.index + 1)


def _member(sorted_hashes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Which of `hashes` occur in `sorted_hashes` (vectorised binary search)."""
    if not len(sorted_hashes):
        return np.zeros(len(hashes), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_hashes, hashes), len(sorted_hashes) - 1)
    return sorted_hashes[pos] == hashes


def _filter(
    unit: Unit, lines: list[tuple[int, tuple[bytes, ...]]]
) -> tuple[list[Line], list[contract.Reject]]:
    """Lines that pass every filter but dedup, as (row, texts, score), and the rejects."""
    kept, rejects = [], []
    stream = unit.stream
    for row, raw in lines:
        try:
            texts, score = parse(stream, row, raw)
        except BadLine as bad:
            rejects.append(contract.Reject(stream.key(row), bad.reason, bad.detail))
            continue
        failed = filters.check(stream.corpus, stream.langs, texts, score)
        if failed:
            rejects.append(contract.Reject(stream.key(row), *failed))
        else:
            kept.append((row, texts, score))
    return kept, rejects


def _dedup(
    stream: Stream, candidates: list[Line], earlier: np.ndarray
) -> tuple[list[Line], list[contract.Reject], np.ndarray]:
    """First occurrences among `candidates` not in `earlier` (the stream's earlier units), the
    duplicate rejects, and the kept lines' hashes."""
    mode = stream.corpus.dedup
    hashes = np.array(
        [filters.dedup_hash(stream.langs, texts, mode) for _, texts, _ in candidates], dtype=np.uint64
    )
    out, rejects, first_row = [], [], {}
    for line, h, dup in zip(candidates, hashes.tolist(), _member(earlier, hashes).tolist()):
        if dup or h in first_row:
            where = f"row {first_row[h]}" if h in first_row else "an earlier shard of this stream"
            rejects.append(contract.Reject(stream.key(line[0]), "duplicate", f"same {mode} text as {where}"))
        else:
            first_row[h] = line[0]
            out.append(line)
    return out, rejects, np.array(list(first_row), dtype=np.uint64)


def plan(ctx: Context) -> Work:
    spec, out_dir = ctx.spec, ctx.out_dir
    units = plan_units(spec)
    names = [f"{i:05d}" for i in range(len(units))]
    cursor = Cursor()
    seen = _Seen(out_dir, units, names)

    def process(name: str) -> contract.UnitResult:
        i = int(name)
        unit = units[i]
        stream, mode = unit.stream, unit.stream.corpus.dedup
        lines = cursor.read(stream, unit.start, unit.end)
        candidates, rejects = _filter(unit, lines)
        out = candidates
        if mode != "none":
            out, duplicates, kept = _dedup(stream, candidates, seen.before(i))
            rejects += duplicates
        rejects.sort(key=lambda r: r.key)
        tar_name = f"text-{name}.tar"
        with atomic.atomic_path(out_dir / tar_name) as tmp, tar_file(tmp) as tar:
            for row, texts, score in out:
                key = stream.key(row)
                data = json.dumps(record(stream, key, texts, score), ensure_ascii=False).encode("utf-8")
                tar.add(f"{key}.json", data)
        if mode != "none":
            seen.commit(i, kept)
        return contract.UnitResult(
            files={tar_name: len(out)},
            samples_in=len(lines),
            samples_out=len(out),
            rejects=rejects,
            sha256={tar_name: tar.sha256},
        )

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        return summarise(spec, units, names, records)

    return Work(names, process, finalize=finalize, close=cursor.close)


def summarise(
    spec: PipelineSpec, units: list[Unit], names: list[str], records: list[dict[str, Any]]
) -> dict[str, Any]:
    """Counts per stream, per language (mono) and per pair (parallel), and the sampling weights."""
    per_stream: dict[str, dict[str, Any]] = {
        s.id: {"kind": s.kind, "langs": list(s.langs), "in": 0, "out": 0, "shards": []} for s in streams(spec)
    }
    for unit, name, rec in zip(units, names, records):
        entry = per_stream[unit.stream.id]
        entry["in"] += rec["samples_in"]
        entry["out"] += rec["samples_out"]
        entry["shards"].append(f"text-{name}.tar")
    for entry in per_stream.values():  # units of a stream are consecutive: a range says it all
        tars = entry.pop("shards")
        entry["shards"] = [tars[0], tars[-1]] if tars else []
    mono: Counter[str] = Counter()
    parallel: Counter[str] = Counter()
    for entry in per_stream.values():
        if entry["kind"] == "mono":
            mono[entry["langs"][0]] += entry["out"]
        else:
            parallel[canonical_pair(tuple(entry["langs"]))] += entry["out"]
    mono_counts, pair_counts = dict(sorted(mono.items())), dict(sorted(parallel.items()))
    alpha = spec.text.alpha
    return {
        "counts": {"mono": mono_counts, "parallel": pair_counts, "streams": per_stream},
        "alpha": alpha,
        "sampling_weights": {
            "mono": sampling.sampling_weights(mono_counts, alpha),
            "parallel": sampling.sampling_weights(pair_counts, alpha),
        },
    }


def shows(spec: PipelineSpec, folder: Path, state: dict[str, Any]) -> Shows:
    if not state.get("samples_in"):
        return Shows()
    tars = len(list(folder.glob("text-*.tar")))
    weights = "; ".join(
        f"{kind} " + ", ".join(f"{k} {q:.2f}" for k, q in state["sampling_weights"][kind].items())
        for kind in ("mono", "parallel")
        if state["sampling_weights"][kind]
    )
    return Shows(
        lines=(
            f"Text shards: {folder} ({tars} tars, {state['samples_out']} records); "
            f"sampling weights (alpha {state['alpha']}): {weights}",
        )
    )


def _files(spec: PipelineSpec) -> list[str]:
    return [f for s in streams(spec) for f in s.files]


def checks(spec: PipelineSpec) -> list[str]:
    return [p for f in _files(spec) if (p := readable.problem(f, "text corpus file", "text.corpora[].path"))]


def needs(spec: PipelineSpec) -> Needs:
    return Needs(reads=tuple(_files(spec)), resources="this process, memory bounded by a unit")


STAGE = Stage("text-shard", deps=(), config=config, plan=plan, shows=shows, checks=checks, needs=needs)
