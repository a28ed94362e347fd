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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from mvlp_core import atomic, contract, keys, urlpolicy
from mvlp_core.spec import DatasetSpec, IngestSpec, PipelineSpec, fingerprint_config
from mvlp_core.stage import Context, Stage, Work
from mvlp_core.stages import ingest_readers as readers

SCHEMA = pa.schema(
    [("key", pa.string()), ("row", pa.int64()), *((c, pa.string()) for c in ("dataset", "url", "caption"))]
)


@dataclass
class _Shards:
    """Accepted rows grouped into fixed-size shards; each reject lands in the shard being filled."""

    size: int
    rows: list[list[dict[str, Any]]] = field(default_factory=lambda: [[]])
    rejects: list[list[contract.Reject]] = field(default_factory=lambda: [[]])

    def _current(self) -> int:
        if len(self.rows[-1]) == self.size:
            self.rows.append([])
            self.rejects.append([])
        return len(self.rows) - 1

    def add(self, outcome: dict[str, Any] | contract.Reject) -> None:
        i = self._current()
        if isinstance(outcome, contract.Reject):
            self.rejects[i].append(outcome)
        else:
            self.rows[i].append(outcome)


@dataclass
class _Checks:
    """The checks every record goes through, in order, with what duplicates are judged against."""

    ds: DatasetSpec
    cfg: IngestSpec
    seen_rows: set[int] = field(default_factory=set)
    seen: dict[str, int] = field(default_factory=dict)

    def outcome(self, raw: readers.RawRow) -> dict[str, Any] | contract.Reject:
        """The output row of a record, or why it is rejected."""
        if raw.error is not None:
            return contract.Reject(None, raw.error.reason, f"{raw.where}: {raw.error.detail}")
        keyed = self._key(raw)
        if isinstance(keyed, contract.Reject):
            return keyed
        key, row_id = keyed
        if row_id in self.seen_rows:
            return contract.Reject(key, "duplicate_id", f"row id {row_id} repeated")
        self.seen_rows.add(row_id)
        try:
            url = (readers.text_field(raw.record, self.ds.url_column) or "").strip()
            caption = " ".join((readers.text_field(raw.record, self.ds.caption_column) or "").split())
        except readers.BadRow as bad:
            return contract.Reject(key, bad.reason, bad.detail)
        problem = self._problem(url, caption) or self._duplicate(url, caption, row_id)
        if problem:
            return contract.Reject(key, *problem)
        return {"key": key, "row": row_id, "dataset": self.ds.name, "url": url, "caption": caption}

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

    def _duplicate(self, url: str, caption: str, row_id: int) -> tuple[str, str] | None:
        dedup_id = {"url": url, "url+caption": f"{url}\t{caption}", "none": None}[self.cfg.dedup]
        if dedup_id is None:
            return None
        if dedup_id in self.seen:
            return "duplicate", f"same {self.cfg.dedup} as row {self.seen[dedup_id]}"
        self.seen[dedup_id] = row_id
        return None


def partition(spec: PipelineSpec) -> _Shards:
    """Validate, deduplicate and key every record; pure function of the spec and the URL list."""
    shards = _Shards(spec.ingest.shard_size)
    checks = _Checks(spec.dataset.spec, spec.ingest)
    for n, raw in enumerate(readers.read_rows(spec.dataset.spec)):
        if spec.dataset.limit is not None and n >= spec.dataset.limit:
            break
        shards.add(checks.outcome(raw))
    return shards


def config(spec: PipelineSpec) -> dict[str, Any]:
    ds = spec.dataset.spec
    return {
        "dataset": ds.model_dump(exclude={"description", "license"}),
        "limit": spec.dataset.limit,
        "ingest": fingerprint_config(spec.ingest),
        "source_id": readers.source_id(ds.url_list),
    }


def plan(ctx: Context) -> Work:
    spec, out_dir = ctx.spec, ctx.out_dir
    shards = partition(spec)
    units = [f"{i:05d}" for i in range(len(shards.rows))]

    def process(unit: str) -> contract.UnitResult:
        i = int(unit)
        rows, rejects = shards.rows[i], shards.rejects[i]
        atomic.write_parquet(out_dir / f"shard-{unit}.parquet", pa.Table.from_pylist(rows, schema=SCHEMA))
        return contract.UnitResult(
            files={f"shard-{unit}.parquet": len(rows)},
            samples_in=len(rows) + len(rejects),
            samples_out=len(rows),
            rejects=rejects,
        )

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"source": spec.dataset.spec.url_list, "shard_size": spec.ingest.shard_size}

    return Work(units, process, finalize=finalize)


STAGE = Stage("ingest", deps=(), config=config, plan=plan)
