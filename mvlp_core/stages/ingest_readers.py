"""Reading a URL list for ingest: a file's bytes -> records, parsed or with why they cannot be.

Records, not lines, in bounded memory (one block of the file and one record at a time):

- tsv: a record is a line, its fields split at every tab, no quoting (as CC3M and CC12M publish
  them); the header, if any, is read like a CSV header with a tab delimiter.
- csv: RFC 4180 as the csv module reads it: a field that starts with a quote may hold the
  delimiter, doubled quotes and line breaks, so one record may span several lines.
- jsonl: a record is a line holding one JSON object.
- parquet: read in batches of `PARQUET_BATCH_ROWS`, only the url, caption and id columns; text
  columns as bytes, so that invalid UTF-8 is a reject, not a crash.

Text formats: the line ending is the file's first one (LF, CRLF or CR alone); a UTF-8 byte-order
mark at the start is dropped; blank lines are skipped and not counted; the header is the first
non-blank record.

Per-record reasons (`BadRow.reason`; ingest rejects the record, without a key):
  record_too_long   a record over MAX_RECORD_BYTES (128 KiB): read through, never held whole
  nul_byte          a NUL byte in the record
  bad_encoding      bytes that are not UTF-8
  malformed_row     wrong number of fields, a CSV syntax error, invalid JSON, JSON not an object
  unclosed_quote    a CSV quoted field still open at the end of the file (it took the rest of it)
  nesting_too_deep  JSON nested deeper than MAX_JSON_DEPTH
Per-field reasons (`text_field`, `row_id`; ingest rejects the record under its key):
  nul_byte          a NUL in the url or caption (JSON-escaped as \\u0000, or in a parquet value)
  bad_encoding      a binary or string parquet value that is not UTF-8
  lone_surrogate    an unpaired UTF-16 surrogate in the url or caption (a JSON \\ud800 escape)
  not_text          the url or caption is a list or an object
  bad_row_id        an id that is not a whole number >= 0: missing, bool, fractional, non-finite,
                    negative, other text (ingest adds ids too large for a key)
A whole-file failure raises `contract.StageError`, one line naming the file and the fix (never
retried: a retry cannot fix it): missing, a directory or unreadable; UTF-16/UTF-32; an unreadable
header; no url, caption or id column; header: false without `columns`; corrupt parquet, gzip, xz.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import json
import lzma
import math
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from mvlp_core import atomic, contract, storage, textbytes
from mvlp_core.spec import DatasetSpec

MAX_RECORD_BYTES = 128 * 1024  # far above any real URL + caption; also the csv module's field limit
MAX_JSON_DEPTH = 64  # a URL-list object is 1-3 deep; far deeper ones hit RecursionError, stack-dependent
BLOCK_BYTES = 64 * 1024
PARQUET_BATCH_ROWS = 10_000

_DELIMITERS = {"tsv": "\t", "csv": ","}
_WIDE_BOMS = (codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)  # UTF-32 LE starts as 16 LE
_DECODE_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError, pa.ArrowException)
_SURROGATE = re.compile("[\ud800-\udfff]")
_ID_DIGITS = re.compile(r"\s*[+-]?\d+\s*", re.ASCII)
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")
_TEXT_AS_BINARY = {
    pa.string(): pa.binary(),
    pa.large_string(): pa.large_binary(),
    pa.string_view(): pa.binary_view(),
}


class BadRow(Exception):
    """A record or field that cannot be used: `reason` (short snake_case) and a one-line `detail`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class RawRow:
    """One record as read: its 0-based index among the data records, the line it starts on (text
    formats), and its fields by column name, or why it could not be parsed."""

    index: int
    line: int | None = None
    record: dict[str, Any] | None = None
    error: BadRow | None = None

    @property
    def where(self) -> str:
        """How a reject without a key names the record: `row 3 (line 5)`."""
        return f"row {self.index}" if self.line is None else f"row {self.index} (line {self.line})"


def excerpt(value: object, limit: int = 60) -> str:
    """repr() of a value, cut to `limit` characters, for one-line details and messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the file ------------------------------------------------------------------------------------


def _not_found(location: str) -> contract.StageError:
    return contract.StageError(
        f"ingest: URL list {location} not found; check dataset.url_list in the dataset spec "
        "(for the synthetic world, run `mvlp synth` or `mvlp demo` first)"
    )


def _unreadable(location: str, why: str) -> contract.StageError:
    return contract.StageError(f"ingest: URL list {location} {why}; set dataset.url_list to a readable file")


def source_id(location: str) -> str:
    """Content identity of the URL list: sha256 for local files, size+etag/mtime for remote ones."""
    fs, path = fsspec.core.url_to_fs(location)
    if isinstance(fs, LocalFileSystem):
        if not fs.exists(path):
            raise _not_found(location)
        if fs.isdir(path):
            raise _unreadable(location, "is a directory")
        try:
            return atomic.sha256_file(Path(path))
        except PermissionError:
            raise _unreadable(location, "cannot be read (permission denied)") from None
    info = storage.info(location, "ingest: URL list")  # a StageError for credentials, access, bucket
    if info is None:
        raise _not_found(location)
    if info.get("type") == "directory":
        raise _unreadable(location, "is a directory")
    return hashlib.sha256(
        json.dumps({k: str(info.get(k)) for k in ("size", "ETag", "etag", "mtime", "LastModified")}).encode()
    ).hexdigest()


def _one_line(err: BaseException) -> str:
    """An exception as one short line (pyarrow's messages span several)."""
    return " ".join(f"{type(err).__name__}: {err}".split())[:200]


@contextmanager
def _open(ds: DatasetSpec) -> Iterator[BinaryIO]:
    """The URL list's bytes (decompressed by extension), streamed (an s3:// or gs:// object with
    ranged reads); a corrupt file is a StageError naming it, and so is a remote one that no retry
    can reach (credentials, access, no bucket: `storage.errors`).

    Decoding errors of a local file are deterministic whatever their type; a remote file's OSError
    may be the network, so it propagates and the flow retries it."""
    location = ds.url_list
    try:
        f = storage.open_input(location, compression="infer", what="ingest: URL list")
    except FileNotFoundError:
        raise _not_found(location) from None
    except (IsADirectoryError, PermissionError) as err:
        raise _unreadable(location, f"cannot be opened ({_one_line(err)})") from None
    local = isinstance(fsspec.core.url_to_fs(location)[0], LocalFileSystem)
    corrupt = (*_DECODE_ERRORS, OSError) if local else _DECODE_ERRORS
    with f:
        try:
            yield f
        except corrupt as err:
            raise contract.StageError(
                f"ingest: URL list {location} is corrupt or truncated ({_one_line(err)}); "
                f"re-create or re-download it, and check that dataset.format ({ds.format}) is its format"
            ) from None


# --- text formats: bytes -> records --------------------------------------------------------------


def _start(f: BinaryIO, location: str) -> tuple[bytes, bytes]:
    """The first block without a UTF-8 byte-order mark, and the file's line ending: b"\\n" (LF and
    CRLF; a CR before it is stripped with the record) or b"\\r" (CR alone), whichever comes first."""
    block = f.read(BLOCK_BYTES)
    if block.startswith(_WIDE_BOMS):
        raise contract.StageError(
            f"ingest: URL list {location} is UTF-16 or UTF-32 (it starts with that byte-order mark); "
            "convert it to UTF-8, e.g. iconv -f UTF-16 -t UTF-8"
        )
    block = block.removeprefix(codecs.BOM_UTF8)
    if block.endswith(b"\r"):
        block += f.read(1)  # so that a CRLF split by the block boundary is seen whole
    cr, lf = block.find(b"\r"), block.find(b"\n")
    cr_alone = cr != -1 and (lf == -1 or cr < lf) and block[cr + 1 : cr + 2] != b"\n"
    return block, b"\r" if cr_alone else b"\n"


def _lines(f: BinaryIO, block: bytes, newline: bytes) -> Iterator[bytes | None]:
    """Physical lines without the line ending; None for a line over MAX_RECORD_BYTES, which is read
    through to its end but never held whole."""
    rest, skipping = b"", False
    while block:
        parts = (rest + block).split(newline)
        rest = parts.pop()
        for part in parts:
            yield None if skipping or len(part) > MAX_RECORD_BYTES else part
            skipping = False
        if skipping or len(rest) > MAX_RECORD_BYTES:
            rest, skipping = b"", True
        block = f.read(BLOCK_BYTES)
    if skipping or rest:
        yield None if skipping else rest


def _too_long(first: int | None = None, last: int | None = None) -> BadRow:
    """A record over the cap; `first`/`last` name the lines of a CSV record that spans several."""
    lines = f" (lines {first}-{last})" if first != last else ""
    return BadRow("record_too_long", f"record over {MAX_RECORD_BYTES} bytes{lines}, the reader's cap")


def _line_records(lines: Iterable[tuple[int, bytes | None]]) -> Iterator[tuple[int, bytes | BadRow]]:
    """tsv and jsonl: every line is a record."""
    for number, line in lines:
        yield number, _too_long() if line is None else line


def _quote_open(line: bytes, open_: bool) -> bool:
    """Whether a CSV quoted field is open at the end of `line`, given whether one was at its start.

    As the csv module reads it: a quote opens a field only at the field's start; inside one, a
    doubled quote is a literal quote and a single one closes it (the rest of the field is literal)."""
    pos = 0
    while True:
        if open_:
            end = line.find(b'"', pos)
            if end == -1:
                return True
            if line[end + 1 : end + 2] == b'"':
                pos = end + 2
            else:
                open_, pos = False, end + 1
        elif pos == 0 and line.startswith(b'"'):
            open_, pos = True, 1
        else:
            start = line.find(b',"', pos)
            if start == -1:
                return False
            open_, pos = True, start + 2


def _csv_records(
    lines: Iterable[tuple[int, bytes | None]], newline: bytes
) -> Iterator[tuple[int, bytes | BadRow]]:
    """RFC 4180 records: a line break inside a quoted field continues the record. A record over
    MAX_RECORD_BYTES is read through to its end without being held; a line over it ends its record
    (its quotes are not scanned)."""
    open_, start, size, parts = False, 0, 0, []
    for number, line in lines:
        if not open_:
            start, size, parts = number, 0, []
        if line is None:
            open_ = False
            yield start, _too_long(start, number)
            continue
        open_ = _quote_open(line, open_)
        size += len(line) + (len(newline) if number > start else 0)
        if size > MAX_RECORD_BYTES:
            parts = None
        elif parts is not None:
            parts.append(line)
        if not open_:
            yield start, _too_long(start, number) if parts is None else newline.join(parts)
    if open_:
        yield start, BadRow("unclosed_quote", "a quoted field opened in this record never closes")


def _decode(raw: bytes) -> str:
    """A record's text; BadRow for a NUL byte (checked first, as a NUL is valid UTF-8) or bad UTF-8."""
    try:
        return textbytes.utf8(raw, "row contains NUL bytes")
    except textbytes.NotText as err:
        raise BadRow("nul_byte" if err.kind == "nul" else "bad_encoding", err.detail) from None


def _texts(records: Iterable[tuple[int, bytes | BadRow]]) -> Iterator[tuple[int, str | BadRow]]:
    """Records decoded, without their line ending; blank ones dropped (they are not counted)."""
    for number, raw in records:
        if isinstance(raw, BadRow):
            yield number, raw
            continue
        try:
            text = _decode(raw.rstrip(b"\r\n"))
        except BadRow as bad:
            yield number, bad
            continue
        if text.strip():
            yield number, text


def _rows(
    texts: Iterable[tuple[int, str | BadRow]], parse: Callable[[str], dict[str, Any]]
) -> Iterator[RawRow]:
    """The data records numbered from 0, each parsed into fields by `parse` (BadRow: unparseable)."""
    for index, (line, text) in enumerate(texts):
        if isinstance(text, BadRow):
            yield RawRow(index, line, error=text)
            continue
        try:
            record = parse(text)
        except BadRow as bad:
            yield RawRow(index, line, error=bad)
            continue
        yield RawRow(index, line, record=record)


# --- text formats: records -> fields ---------------------------------------------------------------


def _require_columns(ds: DatasetSpec, columns: list[str], source: str) -> None:
    """A URL list without the columns the dataset spec names is a spec or file error, not N rejects."""
    wanted = [c for c in (ds.url_column, ds.caption_column, ds.id_column) if c]
    missing = [c for c in wanted if c not in columns]
    if missing:
        has = ", ".join(excerpt(c, 40) for c in columns[:12]) + (", ..." if len(columns) > 12 else "")
        raise contract.StageError(
            f"ingest: the {source} of {ds.url_list} has no column {', '.join(map(repr, missing))} "
            f"(it has {has or 'none'}); set dataset.url_column, caption_column and id_column to its names"
        )


def _header(ds: DatasetSpec, line: int, text: str | BadRow) -> list[str]:
    """The column names; a header that cannot be read makes the whole file unusable."""
    if isinstance(text, BadRow):
        why = text.detail
    else:
        try:
            return next(csv.reader([text], delimiter=_DELIMITERS[ds.format]))
        except csv.Error as err:
            why = str(err)
    raise contract.StageError(
        f"ingest: header of {ds.url_list} (line {line}) is unreadable ({why}); save the file as "
        "UTF-8 text with one header line, or set header: false and list its columns"
    )


def _split_csv(text: str) -> list[str]:
    """One RFC 4180 record's fields (quoted line breaks and doubled quotes resolved)."""
    try:
        return next(csv.reader([text]))
    except csv.Error as err:
        raise BadRow("malformed_row", f"CSV: {err}") from None


def _read_delimited(ds: DatasetSpec, texts: Iterator[tuple[int, str | BadRow]]) -> Iterator[RawRow]:
    """tsv and csv records as {column: field}; the columns come from the header or the spec."""
    columns = ds.columns
    if ds.header:
        first = next(texts, None)
        if first is None:
            return
        columns = _header(ds, *first)
    _require_columns(ds, columns, "header" if ds.header else "dataset.columns")
    split = _split_csv if ds.format == "csv" else (lambda text: text.split("\t"))

    def parse(text: str) -> dict[str, Any]:
        fields = split(text)
        if len(fields) != len(columns):
            raise BadRow("malformed_row", f"{len(fields)} fields, expected {len(columns)}")
        return dict(zip(columns, fields))

    yield from _rows(texts, parse)


def _json_depth(text: str) -> int:
    """How deep the JSON text nests (brackets inside strings do not count); cheap for flat records."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0
    depth = deepest = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if bracket.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _json_object(text: str) -> dict[str, Any]:
    """One JSON line as a dict; its depth is checked first, so the parser never recurses deep."""
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise BadRow("nesting_too_deep", f"JSON nested {depth} levels deep, over {MAX_JSON_DEPTH}")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadRow("malformed_row", f"invalid JSON: {err.msg}") from None
    except ValueError as err:  # an integer too long to convert
        raise BadRow("malformed_row", f"invalid JSON: {err}") from None
    if not isinstance(record, dict):
        raise BadRow("malformed_row", "JSON line is not an object")
    return record


# --- parquet -------------------------------------------------------------------------------------


def _python_values(array: pa.Array) -> list[Any]:
    """A column's values as Python objects, text as bytes (arrow does not check that strings in a
    parquet file are UTF-8; decoding them here makes a bad one a reject instead of a crash)."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if array.type in _TEXT_AS_BINARY:
        array = array.cast(_TEXT_AS_BINARY[array.type])
    return array.to_pylist()


def _size(record: dict[str, Any]) -> int:
    """A parquet record's text and bytes, measured like a text record against MAX_RECORD_BYTES."""
    return sum(len(v) for v in record.values() if isinstance(v, str | bytes))


def _read_parquet(ds: DatasetSpec, f: BinaryIO) -> Iterator[RawRow]:
    """Parquet rows as {column: value}, only the columns ingest uses, one batch in memory at a time."""
    parquet = pq.ParquetFile(f)
    _require_columns(ds, parquet.schema_arrow.names, "schema")
    columns = list(dict.fromkeys(c for c in (ds.url_column, ds.caption_column, ds.id_column) if c))
    index = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        for values in zip(*(_python_values(batch.column(c)) for c in columns)):
            record = dict(zip(columns, values))
            too_long = _size(record) > MAX_RECORD_BYTES
            yield RawRow(index, error=_too_long()) if too_long else RawRow(index, record=record)
            index += 1


def read_rows(ds: DatasetSpec) -> Iterator[RawRow]:
    """Every data record of the URL list in order, parsed or with the reason it could not be."""
    if ds.format in _DELIMITERS and not ds.header and not ds.columns:
        raise contract.StageError(
            f"ingest: dataset {ds.name} ({ds.url_list}) has header: false but no `columns`; list the column names"
        )
    with _open(ds) as f:
        if ds.format == "parquet":
            yield from _read_parquet(ds, f)
            return
        block, newline = _start(f, ds.url_list)
        lines = enumerate(_lines(f, block, newline), start=1)
        records = _csv_records(lines, newline) if ds.format == "csv" else _line_records(lines)
        texts = _texts(records)
        if ds.format == "jsonl":
            yield from _rows(texts, _json_object)
        else:
            yield from _read_delimited(ds, texts)


# --- field values --------------------------------------------------------------------------------


def _checked_text(value: str, column: str) -> str:
    """`value` unless it holds a NUL or a lone surrogate: either would fail the parquet write or
    a later stage (a JSON `\\u0000` is the same NUL as a raw one)."""
    if "\x00" in value:
        raise BadRow("nul_byte", f"column {column!r} contains a NUL character")
    surrogate = _SURROGATE.search(value)
    if surrogate:
        code = f"U+{ord(surrogate.group()):04X}"
        raise BadRow(
            "lone_surrogate", f"column {column!r}: lone surrogate {code} at character {surrogate.start()}"
        )
    return value


def text_field(record: dict[str, Any], column: str) -> str | None:
    """The column's value as text, None when absent or null: bytes decoded as UTF-8, numbers and
    other scalars written with str(). BadRow for bytes that are not UTF-8, a NUL, a lone surrogate,
    or a list or object."""
    value = record.get(column)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadRow(
                "bad_encoding", f"column {column!r}: not UTF-8: {err.reason} at byte {err.start}"
            ) from None
    if isinstance(value, str):
        return _checked_text(value, column)
    if value is None:
        return None
    if isinstance(value, list | tuple | dict):
        kind = "an object" if isinstance(value, dict) else "a list"
        raise BadRow("not_text", f"column {column!r} holds {kind}, not text: {excerpt(value)}")
    return str(value)


def _whole_number(value: float | Decimal) -> int:
    """A float or decimal id as an int, refused when infinite, NaN or fractional (int() would truncate)."""
    finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
    if not finite:
        raise BadRow("bad_row_id", f"{excerpt(value)} is not finite")
    if value % 1:
        raise BadRow("bad_row_id", f"{excerpt(value)} is not a whole number")
    return int(value)


def row_id(value: object) -> int:
    """A record's id from its id column: a whole number >= 0 given as an int, a float or decimal
    without a fraction, or ASCII digits (text or bytes). BadRow otherwise: missing, a bool (True is
    not row 1), fractional (1.9 is not row 1), non-finite, negative, other text or types."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, bool) or value is None:
        raise BadRow("bad_row_id", f"{excerpt(value)} is not a number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float | Decimal):
        number = _whole_number(value)
    elif isinstance(value, str) and _ID_DIGITS.fullmatch(value):
        number = int(value)
    else:
        raise BadRow("bad_row_id", f"{excerpt(value)} is not an integer")
    if number < 0:
        raise BadRow("bad_row_id", f"{excerpt(value)} is negative")
    return number
