"""shard: downloaded images + translations + alignments + QA -> training WebDataset tars.

Each sample is `KEY.jpg` + `KEY.json` (DESIGN.md's record schema). One unit per download shard:
it joins that shard's rows with the translate and QA files of the same shard and the alignment
rows of its keys (found through the row groups' key ranges), so memory holds one download shard,
never the dataset. A unit's keys, sorted, are cut into `shard-<unit>-<NNN>.tar` of
`shard.samples_per_shard`; tar headers have fixed mtime, owner and mode and records are compact
UTF-8 JSON (orjson), so the same stage inputs give byte-identical tars. Units are independent:
they run in worker processes (`shard.processes`, by default one per CPU; `mvlp_core/unit_pool.py`),
each holding one download shard.

An image whose original bytes hash (img2dataset's sha256) equal an earlier one's, in download
shard order then key order, is a `duplicate_image` reject naming the key that kept it.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from mvlp_core import contract, gcpause
from mvlp_core.atomic import atomic_path
from mvlp_core.cpus import available_cpus
from mvlp_core.keys import is_valid_key
from mvlp_core.spec import PipelineSpec, fingerprint_config
from mvlp_core.stage import Context, Needs, Shows, Stage, Work
from mvlp_core.stages.download import WDS_DIR, iter_images
from mvlp_core.tarmember import tar_file

SAMPLES = "samples-{}.parquet"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY  # links arrive as int32 arrays (_link_rows)


def _single_or_map(values: dict[str, str]) -> str | dict[str, str] | None:
    distinct = set(values.values())
    if not distinct:
        return None
    return distinct.pop() if len(distinct) == 1 else dict(sorted(values.items()))


@dataclass(frozen=True)
class _Group:
    """One row group of an alignment file and the range of keys it holds."""

    path: Path
    index: int
    first: str
    last: str


def _align_groups(align: Path, lang: str) -> list[_Group]:
    """The row groups of `lang`'s alignment files with their key ranges, from the files'
    statistics (no rows read)."""
    groups = []
    for path in sorted(align.glob(f"{lang}-[0-9]*.parquet")):
        meta = pq.ParquetFile(path).metadata
        column = meta.schema.names.index("key")
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(column).statistics
            if meta.row_group(i).num_rows and stats is not None and stats.has_min_max:
                groups.append(_Group(path, i, stats.min, stats.max))
    return groups


def _duplicate_images(download: Path, units: list[str]) -> dict[str, dict[str, str]]:
    """unit -> {key: the key whose identical image is kept}, over every download shard's sha256
    column, with the first in (unit, key) order kept. Holds 8 bytes a sample (the sha256's first
    64 bits; a clash among 3 million images has odds near 1 in 4 million) and re-reads the keys
    of the few units with duplicates."""
    digests = []
    for unit in units:
        keys, hashes = _hashes(download, unit)
        digests.append(np.array([int(h[:16], 16) for h in hashes], dtype=np.uint64))
    every = np.concatenate(digests) if digests else np.zeros(0, np.uint64)
    _, first, inverse = np.unique(every, return_index=True, return_inverse=True)
    losers = np.flatnonzero(first[inverse] != np.arange(len(every)))
    if not len(losers):
        return {}
    starts = np.cumsum([0] + [len(d) for d in digests])
    where = {}  # global position -> (unit, key), for the losers and the images they repeat
    wanted = set(losers.tolist()) | set(first[inverse[losers]].tolist())
    for u, unit in enumerate(units):
        inside = [i for i in wanted if starts[u] <= i < starts[u + 1]]
        if inside:
            keys, _ = _hashes(download, unit)
            where.update({i: keys[i - starts[u]] for i in inside})
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for i in losers.tolist():
        u = int(np.searchsorted(starts, i, side="right")) - 1
        out[units[u]][where[i]] = where[int(first[inverse[i]])]
    return dict(out)


def _hashes(download: Path, unit: str) -> tuple[list[str], list[str]]:
    """The keys of a download shard's images, sorted, with the sha256 img2dataset computed over
    each one's original bytes; empty when img2dataset wrote no hashes."""
    path = download / WDS_DIR / f"{unit}.parquet"
    if not path.exists() or "sha256" not in pq.read_schema(path).names:
        return [], []
    t = pq.read_table(path, columns=["mvlp_key", "status", "sha256"])
    t = t.filter(pc.and_(pc.equal(t["status"], "success"), pc.is_valid(t["sha256"])))
    t = t.sort_by("mvlp_key")
    return t.column("mvlp_key").to_pylist(), t.column("sha256").to_pylist()


class _RowGroups:
    """The alignment row groups a process read last, one per language: consecutive units' keys
    mostly fall in the same row group (2,048 rows, many download shards' worth), which is then
    read once, not once per unit. Memory: one row group per language."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[_Group, pa.Table, list[str] | None]] = {}

    def rows(self, lang: str, group: _Group, keys: list[str], wanted: pa.Array) -> pa.Table:
        """The group's rows of `keys` (sorted; `wanted` holds them): where the group's keys are
        sorted (the align stage writes them so), the slice between the first and the last key,
        filtered only if it holds keys of another unit (taking rows of list columns costs 10x
        a slice)."""
        held = self.last.get(lang)
        if held is None or held[0] != group:
            table = pq.ParquetFile(group.path).read_row_group(
                group.index, columns=["key", "words_en", "words", "links"]
            )
            column = _column(table, "key")
            in_order = all(a <= b for a, b in itertools.pairwise(column))
            held = self.last[lang] = (group, table, column if in_order else None)
        _, table, in_order = held
        if in_order is not None:
            start = bisect.bisect_left(in_order, keys[0])
            table = table.slice(start, bisect.bisect_right(in_order, keys[-1]) - start)
        mask = pc.is_in(table["key"], value_set=wanted)
        return table if pc.all(mask).as_py() in (True, None) else table.filter(mask)


def _column(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist()


def _read_columns(path: Path, names: list[str] | None = None) -> dict[str, list[Any]]:
    """A parquet file's columns (`names`, else all) as Python lists, column by column; a missing
    file reads as empty columns (a unit the upstream stage wrote nothing for)."""
    if not path.exists():
        return {name: [] for name in names or ["key"]}
    table = pq.read_table(path, columns=names)
    return {name: _column(table, name) for name in table.column_names}


def _link_rows(column: pa.ChunkedArray) -> list[Any]:
    """Each row's links, [[i, j], ...]: when every link is a pair and nothing is null, as a slice
    of one (links, 2) int32 array, which orjson writes as the same list of pairs (a Python list
    of two-int lists per row costs ~4 us a row to build); else as Python lists."""
    links = column.combine_chunks()
    if not len(links) or links.null_count or links.values.null_count or links.values.values.null_count:
        return links.to_pylist()
    outer = links.offsets.to_numpy()  # row r: pairs outer[r] to outer[r + 1] of links.values
    inner = links.values.offsets.to_numpy()[outer[0] : outer[-1] + 1]  # pair p: ints inner[p]...
    if not (np.diff(inner) == 2).all():
        return links.to_pylist()
    flat = links.values.values.to_numpy()[inner[0] : inner[-1]].reshape(-1, 2)
    starts = (outer - outer[0]).tolist()
    return [flat[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]


class _Joined:
    """What the upstream stages know about one download shard's keys, read column by column
    (a table's `to_pylist` builds a dict per row: most of the join's time)."""

    def __init__(
        self,
        inputs: dict[str, Path],
        unit: str,
        groups: dict[str, list[_Group]],
        provenance: dict,
        row_groups: _RowGroups,
    ) -> None:
        columns = _read_columns(inputs["download"] / SAMPLES.format(unit))
        self.samples = {
            key: dict(zip(columns, row, strict=True))
            for key, row in zip(columns["key"], zip(*columns.values(), strict=True), strict=True)
        }
        self.captions: dict[str, dict[str, str]] = defaultdict(dict)
        translated = _read_columns(inputs["translate"] / f"{unit}.parquet", ["key", "lang", "text"])
        for key, lang, text in zip(*translated.values(), strict=True):
            self.captions[key][lang] = text
        self.qa: dict[str, list[dict[str, str]]] = defaultdict(list)
        qa = _read_columns(inputs["qa"] / f"{unit}.parquet", ["key", "question", "answer", "generator"])
        for key, question, answer, generator in zip(*qa.values(), strict=True):
            self.qa[key].append({"question": question, "answer": answer, "generator": generator})
        self.words: dict[str, dict[str, list[str]]] = defaultdict(dict)
        self.links: dict[str, dict[str, Any]] = defaultdict(dict)
        keys = sorted(self.samples)
        first, last = (keys[0], keys[-1]) if keys else ("", "")
        wanted = pa.array(keys, pa.string())
        for lang, lang_groups in groups.items():
            for g in lang_groups:
                if g.last < first or g.first > last:
                    continue
                rows = row_groups.rows(lang, g, keys, wanted)
                seen = pa.array(list(self.words), pa.string())
                english = rows.filter(pc.invert(pc.is_in(rows["key"], value_set=seen)))
                for key, words_en in zip(_column(english, "key"), _column(english, "words_en"), strict=True):
                    self.words[key]["en"] = words_en  # the same in every language's rows: read once
                for key, words, links in zip(
                    _column(rows, "key"),
                    _column(rows, "words"),
                    _link_rows(rows.column("links")),
                    strict=True,
                ):
                    self.words[key][lang] = words
                    self.links[key][lang] = links
        self.languages = list(groups)
        self.provenance = provenance

    def record(self, key: str, jpg: bytes | memoryview, width: int, height: int) -> dict[str, Any]:
        s = self.samples[key]
        captions = {"en": s["caption"]}
        captions.update(
            {lang: self.captions[key][lang] for lang in self.languages if lang in self.captions[key]}
        )
        words = self.words.get(key, {})
        return {
            "key": key,
            "source": {"dataset": key.rsplit("-", 1)[0], "row": s["row"], "url": s["url"]},
            "image": {"width": width, "height": height, "sha256": hashlib.sha256(jpg).hexdigest()},
            "captions": captions,
            "words": {lang: words[lang] for lang in ["en", *self.languages] if lang in words},
            "alignments": {
                lang: self.links[key][lang] for lang in self.languages if lang in self.links.get(key, {})
            },
            "qa": self.qa.get(key, []),
            "provenance": self.provenance,
        }


def _size(sample: dict[str, Any], jpg: bytes | memoryview) -> tuple[int, int]:
    """(width, height) of a downloaded image: as the download stage recorded them (img2dataset's,
    of the image it wrote), else read from the JPEG's header. An image with no bytes, or no
    readable header where it is read, raises OSError."""
    if not jpg:
        raise OSError("no image bytes in the download tar")
    if sample.get("width") and sample.get("height"):
        return int(sample["width"]), int(sample["height"])
    with Image.open(io.BytesIO(jpg)) as img:
        return img.size


def _provenance(inputs: dict[str, Path]) -> dict[str, Any]:
    """Which model wrote each kind of derived text, from the upstream manifests (translate: the
    languages it wrote rows for)."""
    translate = contract.Manifest.load(inputs["translate"]).extra
    written = translate.get("per_language", {})
    return {
        "translate": _single_or_map(
            {lang: p for lang, p in translate.get("provenance", {}).items() if written.get(lang)}
        ),
        "align": contract.Manifest.load(inputs["align"]).extra.get("provenance"),
        "qa": contract.Manifest.load(inputs["qa"]).extra.get("generator"),
    }


def config(spec: PipelineSpec) -> dict[str, Any]:
    return {"shard": fingerprint_config(spec.shard), "languages": spec.languages}


def units_of(download: Path) -> list[str]:
    """The download shards, one shard unit each."""
    return sorted(p.name[len("samples-") : -len(".parquet")] for p in download.glob("samples-*.parquet"))


@dataclass
class _UnitWriter:
    """What the stage does for one unit (its tars), with what the plan computed for all of them;
    it pickles, so units can run in worker processes (`shard.processes`), each with its own
    alignment row-group cache."""

    inputs: dict[str, Path]
    out_dir: Path
    groups: dict[str, list[_Group]]
    duplicates: dict[str, dict[str, str]]
    provenance: dict[str, Any]
    samples_per_shard: int
    row_groups: _RowGroups = field(default_factory=_RowGroups, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "row_groups": _RowGroups()}  # a cache: each process its own

    def __call__(self, unit: str) -> contract.UnitResult:
        with gcpause.paused():
            return self._write(unit)

    def _write(self, unit: str) -> contract.UnitResult:
        joined = _Joined(self.inputs, unit, self.groups, self.provenance, self.row_groups)
        keys = sorted(joined.samples)
        repeats = self.duplicates.get(unit, {})
        rejects: list[contract.Reject] = []
        kept = []
        for k in keys:
            if not is_valid_key(k):  # member names come from keys: no '/', '..' or dots
                rejects.append(contract.Reject(k, "bad_key", "not dataset-NNNNNNNNN"))
            elif k in repeats:
                rejects.append(contract.Reject(k, "duplicate_image", f"same sha256 as {repeats[k]}"))
            else:
                kept.append(k)
        files: dict[str, int] = {}
        digests: dict[str, str] = {}
        multilingual = with_qa = 0
        read: dict[str, dict[str, memoryview]] = {}
        per = self.samples_per_shard
        for n, start in enumerate(range(0, len(kept), per)):
            chunk = kept[start : start + per]
            by_tar: dict[str, list[str]] = defaultdict(list)
            for k in chunk:
                by_tar[joined.samples[k]["tar"]].append(k)
            images: dict[str, bytes | memoryview] = {}
            for tar_name, tar_keys in by_tar.items():
                if tar_name not in read:  # a download tar holds the unit's images: read it once
                    read[tar_name] = iter_images(self.inputs["download"], tar_name)
                members = read[tar_name]
                for k in tar_keys:
                    images[k] = members.get(joined.samples[k]["member"], b"")
            name = f"shard-{unit}-{n:03d}.tar"
            written = 0
            with atomic_path(self.out_dir / name) as tmp, tar_file(tmp) as tar:
                for k in chunk:
                    jpg = images[k]
                    try:
                        width, height = _size(joined.samples[k], jpg)
                    except (UnidentifiedImageError, OSError) as err:
                        rejects.append(contract.Reject(k, "image_decode_error", str(err)[:200]))
                        continue
                    tar.add(f"{k}.jpg", jpg)
                    tar.add(f"{k}.json", orjson.dumps(joined.record(k, jpg, width, height), option=_NUMPY))
                    written += 1
                    multilingual += bool(joined.captions.get(k))
                    with_qa += bool(joined.qa.get(k))
            files[name] = written
            digests[name] = tar.sha256
        return contract.UnitResult(
            files=files,
            samples_in=len(keys),
            samples_out=sum(files.values()),
            rejects=rejects,
            extra={"multilingual": multilingual, "with_qa": with_qa},
            sha256=digests,
        )


def _processes(spec: PipelineSpec, units: int) -> int:
    """Worker processes for `units` units: `shard.processes`, or one per CPU this process may use
    and at most one per four units (a worker starts in about the time four 1,000-sample units
    take: its imports of pyarrow, numpy and Pillow)."""
    if spec.shard.processes is not None:
        return spec.shard.processes
    return max(1, min(available_cpus(), units // 4))


def plan(ctx: Context) -> Work:
    spec, inputs = ctx.spec, ctx.inputs
    units = units_of(inputs["download"])
    provenance = _provenance(inputs)
    writer = _UnitWriter(
        inputs,
        ctx.out_dir,
        {lang: _align_groups(inputs["align"], lang) for lang in spec.languages},
        _duplicate_images(inputs["download"], units),
        provenance,
        spec.shard.samples_per_shard,
    )

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        total = sum(r["samples_out"] for r in records) or 1
        return {
            "shards": sum(len(r["files"]) for r in records),
            "multilingual_fraction": round(sum(r["extra"]["multilingual"] for r in records) / total, 4),
            "qa_fraction": round(sum(r["extra"]["with_qa"] for r in records) / total, 4),
            "provenance": provenance,
        }

    return Work(units, writer, finalize=finalize, processes=_processes(spec, len(units)))


def shows(spec: PipelineSpec, folder: Path, state: dict[str, Any]) -> Shows:
    tars = len(list(folder.glob("shard-*.tar")))
    return Shows(lines=(f"Shards: {folder} ({tars} tars, {state['samples_out']} samples)",))


def needs(spec: PipelineSpec) -> Needs:
    n = spec.shard.processes
    if n is None:
        where = f"a worker process per CPU this process may use ({available_cpus()} here), one per four units"
    else:
        where = "this process" if n == 1 else f"{n} worker processes"
    return Needs(resources=f"{where}; memory bounded by one download shard a process")


STAGE = Stage(
    "shard",
    deps=("download", "translate", "align", "qa"),
    config=config,
    plan=plan,
    shows=shows,
    needs=needs,
)
