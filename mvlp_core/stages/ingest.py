"""ingest: a URL list (tsv/csv/jsonl/parquet, local or fsspec URL) -> validated, deduplicated
parquet shards with stable keys.

Every record ends in a shard or in `_rejects.parquet` with a reason, so samples_in counts records
(not lines: a CSV record may span several; blank lines are not records). The readers
(`ingest_readers`) parse records in bounded memory and name what they cannot read:
`record_too_long`, `nul_byte`, `bad_encoding`, `malformed_row`, `unclosed_quote`,
`nesting_too_deep` (rejects without a key; the detail starts `row N (line L):`). Then, in order:

  bad_row_id        the id column is not a whole number >= 0 that fits a key (no key; `row N`)
  duplicate_id      an id seen before
  not_text, bad_encoding, nul_byte, lone_surrogate
                    the url or caption is a list/object, not UTF-8, holds a NUL (raw or
                    JSON-escaped alike) or an unpaired surrogate
  missing_url, empty_caption, caption_too_long (over ingest.max_caption_chars)
  url_*             the URL policy (mvlp_core.urlpolicy)
  duplicate         same url (or url+caption, per ingest.dedup) as an earlier row

Only a whole-file failure stops the run, as one `contract.StageError` line naming the file and
the fix (a missing, unreadable or corrupt file, an unreadable header, a column the spec names
that the file lacks): the flows never retry it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mvlp_core import atomic, contract, keys, readable, urlpolicy
from mvlp_core.seen import Seen, digest
from mvlp_core.spec import DatasetSpec, IngestSpec, PipelineSpec, fingerprint_config
from mvlp_core.stage import Context, Needs, Stage, Work
from mvlp_core.stages import ingest_readers as readers

SCHEMA = pa.schema(
    [("key", pa.string()), ("row", pa.int64()), *((c, pa.string()) for c in ("dataset", "url", "caption"))]
)
REJECTS = pa.schema([("key", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


BLOCK = 16_384  # records judged together: one vectorised search per block for ids and URLs


@dataclass
class _Judge:
    """The checks every record goes through, in order, with what duplicates are judged against:
    every earlier record, kept as 64-bit keys (`mvlp_core.seen`) rather than Python strings."""

    ds: DatasetSpec
    cfg: IngestSpec
    ids: Seen = field(default_factory=Seen)
    dedup: Seen = field(default_factory=Seen)

    def block(self, raws: list[readers.RawRow]) -> list[dict[str, Any] | contract.Reject]:
        """Each record's output row or reject, exactly as if judged one by one in order."""
        out: list[dict[str, Any] | contract.Reject | None] = [None] * len(raws)
        keyed = []
        for i, raw in enumerate(raws):
            if raw.error is not None:
                out[i] = contract.Reject(None, raw.error.reason, f"{raw.where}: {raw.error.detail}")
            elif isinstance(k := self._key(raw), contract.Reject):
                out[i] = k
            else:
                keyed.append((i, *k))
        if self.ds.id_column:  # without one, the row id is the record's index: never repeated
            earlier = self.ids.judge([row for _, _, row in keyed], [row for _, _, row in keyed])
            for (i, key, row), first in zip(keyed, earlier, strict=True):
                if first is not None:
                    out[i] = contract.Reject(key, "duplicate_id", f"row id {row} repeated")
        candidates = []
        for i, key, row in keyed:
            if out[i] is None:
                fields = self._fields(raws[i], key)
                if isinstance(fields, contract.Reject):
                    out[i] = fields
                else:
                    candidates.append((i, key, row, *fields))
        self._dedup(candidates, out)
        return out  # type: ignore[return-value] - every position is filled

    def _fields(self, raw: readers.RawRow, key: str) -> tuple[str, str] | contract.Reject:
        try:
            url = (readers.text_field(raw.record, self.ds.url_column) or "").strip()
            caption = " ".join((readers.text_field(raw.record, self.ds.caption_column) or "").split())
        except readers.BadRow as bad:
            return contract.Reject(key, bad.reason, bad.detail)
        problem = self._problem(url, caption)
        return contract.Reject(key, *problem) if problem else (url, caption)

    def _dedup(self, candidates: list[tuple[int, str, int, str, str]], out: list) -> None:
        how = self.cfg.dedup
        ids = [
            {"url": url, "url+caption": f"{url}\t{caption}"}.get(how) for _, _, _, url, caption in candidates
        ]
        if how == "none":
            earlier: list[int | None] = [None] * len(candidates)
        else:
            earlier = self.dedup.judge([digest(d) for d in ids], [row for _, _, row, _, _ in candidates])
        for (i, key, row, url, caption), first in zip(candidates, earlier, strict=True):
            if first is not None:
                out[i] = contract.Reject(key, "duplicate", f"same {how} as row {first}")
            else:
                out[i] = {"key": key, "row": row, "dataset": self.ds.name, "url": url, "caption": caption}

    def _key(self, raw: readers.RawRow) -> tuple[str, int] | contract.Reject:
        """(key, row id): the id column's value if the dataset has one, else the record's index."""
        column = self.ds.id_column
        try:
            row_id = readers.row_id(raw.record.get(column)) if column else raw.index
            return keys.make_key(self.ds.name, row_id), row_id
        except readers.BadRow as bad:
            return contract.Reject(None, "bad_row_id", f"{raw.where}: {column}: {bad.detail}")
        except ValueError as err:  # an id too large for a key
            return contract.Reject(None, "bad_row_id", f"{raw.where}: {err}")

    def _problem(self, url: str, caption: str) -> tuple[str, str] | None:
        if not url:
            return "missing_url", f"column {self.ds.url_column!r} empty or absent"
        if not caption:
            return "empty_caption", f"column {self.ds.caption_column!r} empty or absent"
        if len(caption) > self.cfg.max_caption_chars:
            return "caption_too_long", f"{len(caption)} > {self.cfg.max_caption_chars} chars"
        verdict = urlpolicy.check_url(url, self.cfg.url_policy)
        return (verdict[0], f"{url[:200]}: {verdict[1]}") if verdict else None


def _records(spec: PipelineSpec) -> Iterator[list[readers.RawRow]]:
    """The URL list's records in blocks of BLOCK, up to dataset.limit."""
    block: list[readers.RawRow] = []
    for n, raw in enumerate(readers.read_rows(spec.dataset.spec)):
        if spec.dataset.limit is not None and n >= spec.dataset.limit:
            break
        block.append(raw)
        if len(block) == BLOCK:
            yield block
            block = []
    if block:
        yield block


def partition(spec: PipelineSpec) -> Iterator[tuple[list[dict[str, Any]], list[contract.Reject]]]:
    """Each unit's accepted rows and rejects, in one pass over the list; a pure function of the spec
    and the list. A unit closes at ingest.shard_size rows, or as many rejects (so a long run of bad
    records is bounded too); there is always at least one unit."""
    size = spec.ingest.shard_size
    judge = _Judge(spec.dataset.spec, spec.ingest)
    rows: list[dict[str, Any]] = []
    rejects: list[contract.Reject] = []
    units = 0
    for block in _records(spec):
        for outcome in judge.block(block):
            (rejects if isinstance(outcome, contract.Reject) else rows).append(outcome)
            if len(rows) == size or len(rejects) == size:
                yield rows, rejects
                units += 1
                rows, rejects = [], []
    if rows or rejects or not units:
        yield rows, rejects


def config(spec: PipelineSpec) -> dict[str, Any]:
    ds = spec.dataset.spec
    return {
        "dataset": ds.model_dump(exclude={"description", "license"}),
        "limit": spec.dataset.limit,
        "ingest": fingerprint_config(spec.ingest),
        "source_id": readers.source_id(ds.url_list),
    }


def spool_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}-spool"


def plan(ctx: Context) -> Work:
    """Dedup judges every record against all earlier ones, so ingest is one sequential pass: it runs
    here, spooling each unit's rows and rejects as the unit fills; `process` commits a unit. The
    spool sits beside the stage folder, which the contract empties when it starts afresh."""
    spec, out_dir = ctx.spec, ctx.out_dir
    spool = spool_dir(out_dir)
    shutil.rmtree(spool, ignore_errors=True)
    spool.mkdir(parents=True)
    units = []
    for i, (rows, rejects) in enumerate(partition(spec)):
        unit = f"{i:05d}"
        atomic.write_parquet(spool / f"shard-{unit}.parquet", pa.Table.from_pylist(rows, schema=SCHEMA))
        atomic.write_parquet(
            spool / f"{unit}.rejects.parquet", pa.Table.from_pylist(list(map(vars, rejects)), schema=REJECTS)
        )
        units.append(unit)

    def process(unit: str) -> contract.UnitResult:
        name = f"shard-{unit}.parquet"
        rows = pq.read_metadata(spool / name).num_rows
        rejects = [contract.Reject(**r) for r in pq.read_table(spool / f"{unit}.rejects.parquet").to_pylist()]
        shutil.move(spool / name, out_dir / name)  # a rename unless the stage folder is its own volume
        return contract.UnitResult(
            files={name: rows}, samples_in=rows + len(rejects), samples_out=rows, rejects=rejects
        )

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        shutil.rmtree(spool)
        return {"source": spec.dataset.spec.url_list, "shard_size": spec.ingest.shard_size}

    return Work(units, process, finalize=finalize)


def checks(spec: PipelineSpec) -> list[str]:
    found = readable.problem(spec.dataset.spec.url_list, "URL list", "dataset.url_list in the dataset spec")
    return [found] if found else []


def needs(spec: PipelineSpec) -> Needs:
    return Needs(
        reads=(spec.dataset.spec.url_list,),
        resources="this process; memory bounded by a unit plus 16 bytes per accepted row",
    )


STAGE = Stage("ingest", deps=(), config=config, plan=plan, checks=checks, needs=needs)
