"""ingest: a URL list (tsv/csv/jsonl/parquet, local or fsspec URL) -> validated, deduplicated
parquet shards with stable keys.

Every input row ends in a shard or in `_rejects.parquet` with a reason: undecodable bytes,
malformed rows, missing fields, URL policy violations and duplicates never vanish silently.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from mvlp_core import atomic, contract, keys, urlpolicy
from mvlp_core.spec import DatasetSpec, PipelineSpec, fingerprint_config
from mvlp_core.stage import Context, Stage, Work

SCHEMA = pa.schema(
    [("key", pa.string()), ("row", pa.int64()), *((c, pa.string()) for c in ("dataset", "url", "caption"))]
)


@dataclass
class RawRow:
    """One data row as read; `error` set when the row could not be parsed at all."""

    index: int
    record: dict[str, Any] | None = None
    error: tuple[str, str] | None = None


def _open_binary(location: str) -> io.BufferedReader:
    try:
        return fsspec.open(location, "rb", compression="infer").open()
    except FileNotFoundError:
        raise contract.StageError(
            f"ingest: URL list {location} not found; check dataset.url_list in the dataset spec "
            "(for the synthetic world, run `mvlp synth` or `mvlp demo` first)"
        ) from None


def _decode_line(raw: bytes) -> tuple[str | None, tuple[str, str] | None]:
    if b"\x00" in raw:
        return None, ("nul_byte", "row contains NUL bytes")
    try:
        return raw.decode("utf-8").rstrip("\r\n"), None
    except UnicodeDecodeError as err:
        return None, ("bad_encoding", f"not UTF-8: {err.reason} at byte {err.start}")


def _read_delimited(ds: DatasetSpec, f: io.BufferedReader) -> Iterator[RawRow]:
    delimiter = "\t" if ds.format == "tsv" else ","
    columns = ds.columns
    index = 0
    for line_no, raw in enumerate(f):
        text, error = _decode_line(raw)
        if line_no == 0 and ds.header:
            if error:
                raise contract.StageError(f"ingest: header of {ds.url_list} unreadable: {error[1]}")
            columns = next(csv.reader([text], delimiter=delimiter))
            continue
        if text is not None and not text.strip():
            continue
        if columns is None:
            raise contract.StageError(
                f"ingest: dataset {ds.name} has header: false but no `columns`; list the column names"
            )
        if error:
            yield RawRow(index, error=error)
        else:
            fields = text.split("\t") if delimiter == "\t" else next(csv.reader([text], delimiter=","))
            if len(fields) != len(columns):
                yield RawRow(
                    index,
                    error=("malformed_row", f"{len(fields)} fields, expected {len(columns)}"),
                )
            else:
                yield RawRow(index, record=dict(zip(columns, fields)))
        index += 1


def _read_jsonl(f: io.BufferedReader) -> Iterator[RawRow]:
    index = 0
    for raw in f:
        text, error = _decode_line(raw)
        if text is not None and not text.strip():
            continue
        if error is None:
            try:
                record = json.loads(text)
                if not isinstance(record, dict):
                    error = ("malformed_row", "JSON line is not an object")
            except json.JSONDecodeError as err:
                error = ("malformed_row", f"invalid JSON: {err.msg}")
        yield RawRow(index, error=error) if error else RawRow(index, record=record)
        index += 1


def _read_parquet(f: io.BufferedReader) -> Iterator[RawRow]:
    index = 0
    for batch in pq.ParquetFile(f).iter_batches(batch_size=10_000):
        for record in batch.to_pylist():
            yield RawRow(index, record=record)
            index += 1


def read_rows(ds: DatasetSpec) -> Iterator[RawRow]:
    """Every data row of the URL list in order, parsed or with the reason it could not be."""
    with _open_binary(ds.url_list) as f:
        if ds.format in ("tsv", "csv"):
            yield from _read_delimited(ds, f)
        elif ds.format == "jsonl":
            yield from _read_jsonl(f)
        else:
            yield from _read_parquet(f)


def source_id(location: str) -> str:
    """Content identity of the URL list: sha256 for local files, size+etag/mtime for remote ones."""
    fs, path = fsspec.core.url_to_fs(location)
    if not fs.exists(path):
        _open_binary(location)  # raises the StageError with the fix
    if isinstance(fs, LocalFileSystem):
        return atomic.sha256_file(Path(path))
    info = fs.info(path)
    return hashlib.sha256(
        json.dumps({k: str(info.get(k)) for k in ("size", "ETag", "etag", "mtime", "LastModified")}).encode()
    ).hexdigest()


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

    def accept(self, row: dict[str, Any]) -> None:
        self.rows[self._current()].append(row)

    def reject(self, key: str | None, reason: str, detail: str) -> None:
        self.rejects[self._current()].append(contract.Reject(key, reason, detail))


def _value(record: dict[str, Any], column: str) -> str | None:
    value = record.get(column)
    return None if value is None else str(value)


def partition(spec: PipelineSpec) -> _Shards:
    """Validate, deduplicate and key every row; pure function of the spec and the URL list."""
    ds = spec.dataset.spec
    cfg = spec.ingest
    shards = _Shards(cfg.shard_size)
    seen_urls: dict[str, int] = {}
    seen_rows: set[int] = set()
    for n, raw in enumerate(read_rows(ds)):
        if spec.dataset.limit is not None and n >= spec.dataset.limit:
            break
        if raw.error:
            shards.reject(None, raw.error[0], f"row {raw.index}: {raw.error[1]}")
            continue
        rec = raw.record
        row_id: int = raw.index
        if ds.id_column:
            try:
                row_id = int(rec.get(ds.id_column))
            except (TypeError, ValueError):
                shards.reject(
                    None, "bad_row_id", f"row {raw.index}: {ds.id_column}={rec.get(ds.id_column)!r}"
                )
                continue
        try:
            key = keys.make_key(ds.name, row_id)
        except ValueError as err:
            shards.reject(None, "bad_row_id", f"row {raw.index}: {err}")
            continue
        if row_id in seen_rows:
            shards.reject(key, "duplicate_id", f"row id {row_id} repeated")
            continue
        seen_rows.add(row_id)
        url = (_value(rec, ds.url_column) or "").strip()
        caption = " ".join((_value(rec, ds.caption_column) or "").split())
        if not url:
            shards.reject(key, "missing_url", f"column {ds.url_column!r} empty or absent")
            continue
        if not caption:
            shards.reject(key, "empty_caption", f"column {ds.caption_column!r} empty or absent")
            continue
        if len(caption) > cfg.max_caption_chars:
            shards.reject(key, "caption_too_long", f"{len(caption)} > {cfg.max_caption_chars} chars")
            continue
        verdict = urlpolicy.check_url(url, cfg.url_policy)
        if verdict:
            shards.reject(key, verdict[0], f"{url[:200]}: {verdict[1]}")
            continue
        dedup_id = {"url": url, "url+caption": f"{url}\t{caption}", "none": None}[cfg.dedup]
        if dedup_id is not None:
            if dedup_id in seen_urls:
                shards.reject(key, "duplicate", f"same {cfg.dedup} as row {seen_urls[dedup_id]}")
                continue
            seen_urls[dedup_id] = row_id
        shards.accept({"key": key, "row": row_id, "dataset": ds.name, "url": url, "caption": caption})
    return shards


def config(spec: PipelineSpec) -> dict[str, Any]:
    ds = spec.dataset.spec
    return {
        "dataset": ds.model_dump(exclude={"description", "license"}),
        "limit": spec.dataset.limit,
        "ingest": fingerprint_config(spec.ingest),
        "source_id": source_id(ds.url_list),
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
