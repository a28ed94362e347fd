"""Corpus streams and their lines: WikiMatrix TSV, Moses line-aligned file pairs, plain lines.

A stream is one language (monolingual) or one pair (parallel) of one corpus. Files are read as
bytes, local or through fsspec (compression inferred from .gz/.xz/.bz2), one line at a time, so
no corpus is ever held in memory. Decoding and parsing happen per line: a bad line becomes a
reject, never a crash.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from mvlp_core import atomic, contract, storage, textbytes
from mvlp_core.spec import PipelineSpec, TextCorpusSpec

ROW_DIGITS = 10  # CC-100's larger languages have more than 10^9 lines
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Stream:
    corpus: TextCorpusSpec
    langs: tuple[str, ...]  # (lang,) for monolingual, (src, tgt) for parallel
    files: tuple[str, ...]  # moses: (src file, tgt file); otherwise one file

    @property
    def kind(self) -> str:
        return "mono" if self.corpus.kind == "monolingual" else "parallel"

    @property
    def id(self) -> str:
        return f"{self.corpus.name}:{'-'.join(self.langs)}"

    def key(self, row: int) -> str:
        """`<corpus>-<langs>-<row>`: stable, fixed width, dot-free (WebDataset splits at dots)."""
        return f"{self.corpus.name}-{''.join(self.langs)}-{row:0{ROW_DIGITS}d}"


def _fill(template: str, langs: tuple[str, ...], lang: str | None = None) -> str:
    out = template.replace("{pair}", "-".join(langs))
    if len(langs) == 2:
        out = out.replace("{src}", langs[0]).replace("{tgt}", langs[1])
    return out.replace("{lang}", lang) if lang else out


def streams(spec: PipelineSpec) -> list[Stream]:
    """Every stream of every corpus, in spec order (which fixes unit order and dedup order)."""
    out = []
    for corpus in spec.text.corpora:
        for name in corpus.languages or corpus.pairs:
            langs = tuple(name.split("-"))
            template = corpus.paths.get(name, corpus.path)
            if corpus.format == "moses":
                files = tuple(_fill(template, langs, lang) for lang in langs)
            else:
                files = (_fill(template, langs, langs[0] if len(langs) == 1 else None),)
            out.append(Stream(corpus, langs, files))
    return out


def _not_found(location: str, stream: Stream | None) -> contract.StageError:
    where = f"corpus {stream.corpus.name} ({stream.id})" if stream else "a text corpus"
    return contract.StageError(
        f"text-shard: {location} not found for {where}; fix text.corpora[].path/paths in the spec "
        "(for the demo world, run `mvlp demo` or `mvlp synth`, which write world/text/)"
    )


def open_binary(location: str, stream: Stream | None = None) -> IO[bytes]:
    """The file's bytes, decompressed by extension and streamed (an s3:// or gs:// object with
    ranged reads); a remote failure no retry can fix is a one-line StageError (`storage.errors`)."""
    try:
        return storage.open_input(location, compression="infer", what="text-shard: corpus file")
    except FileNotFoundError:
        raise _not_found(location, stream) from None


def source_id(location: str) -> str:
    """Content identity for the fingerprint: sha256 of a local file; size + ETag/mtime of a
    remote one (hashing terabytes of remote corpora on every status call is not affordable)."""
    fs, path = fsspec.core.url_to_fs(location)
    if isinstance(fs, LocalFileSystem):
        if not fs.exists(path):
            raise _not_found(location, None)
        return atomic.sha256_file(Path(path))
    info = storage.info(location, "text-shard: corpus file")  # a StageError for credentials, access, bucket
    if info is None:
        raise _not_found(location, None)
    keys = ("size", "ETag", "etag", "mtime", "LastModified", "md5Hash")
    return hashlib.sha256(json.dumps({k: str(info.get(k)) for k in keys}).encode()).hexdigest()


def _count(location: str, stream: Stream, limit: int | None) -> int:
    with open_binary(location, stream) as f:
        if limit is not None:
            return sum(1 for _ in itertools.islice(f, limit))
        n, last = 0, b"\n"
        while block := f.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
        return n + (last != b"\n")


def count_lines(stream: Stream) -> int:
    """Input lines of the stream (up to `limit`). Moses sides must agree: a line-count mismatch
    means the files are not aligned, and every pair after the first missing line would be wrong."""
    counts = [_count(f, stream, stream.corpus.limit) for f in stream.files]
    if len(set(counts)) > 1:
        raise contract.StageError(
            f"text-shard: {stream.id}: the Moses files are not line-aligned "
            f"({stream.files[0]}: {counts[0]} lines, {stream.files[1]}: {counts[1]}); "
            "fix the corpus (both sides must have one line per sentence pair) or set `limit`"
        )
    return counts[0]


class Cursor:
    """Reads line ranges of streams; consecutive ranges of one stream continue the open files,
    so a fresh run reads each file once and a resumed one skips ahead once."""

    def __init__(self) -> None:
        self.stream: Stream | None = None
        self.row = 0
        self.files: list[IO[bytes]] = []
        self.lines: Iterator[tuple[bytes, ...]] = iter(())

    def read(self, stream: Stream, start: int, end: int) -> list[tuple[int, tuple[bytes, ...]]]:
        if stream != self.stream or start < self.row:
            self.close()
            self.files = [open_binary(f, stream) for f in stream.files]
            self.lines = zip(*self.files)
            self.stream, self.row = stream, 0
        for _ in itertools.islice(self.lines, start - self.row):
            pass
        out = [(start + i, raw) for i, raw in enumerate(itertools.islice(self.lines, end - start))]
        if len(out) != end - start:
            raise contract.StageError(
                f"text-shard: {stream.id} ended at line {start + len(out)}, expected {end}; "
                "the file changed during the run: re-run the stage"
            )
        self.row = end
        return out

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.files, self.stream = [], None


class BadLine(Exception):
    """A line that cannot be read: `reason` is its reject reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def decode(raw: bytes, row: int) -> str:
    """One line as text: BOM dropped on the first line, CR/LF stripped, UTF-8 required."""
    if row == 0 and raw.startswith(BOM):
        raw = raw[len(BOM) :]
    try:
        return textbytes.utf8(raw.rstrip(b"\r\n"), "NUL byte in line")
    except textbytes.NotText as err:
        raise BadLine("encoding_error", err.detail) from None


def clean(text: str) -> str:
    """Whitespace runs (tabs, NBSP, ideographic spaces) become one space; ends trimmed."""
    return " ".join(text.split())


def parse(stream: Stream, row: int, raw: tuple[bytes, ...]) -> tuple[tuple[str, ...], float | None]:
    """(texts per side, score) of one input line; raises BadLine."""
    if stream.corpus.format == "wikimatrix":
        fields = decode(raw[0], row).split("\t")
        if len(fields) != 3:
            raise BadLine(
                "malformed_line", f"{len(fields)} tab-separated fields, expected 3 (score, src, tgt)"
            )
        try:
            score = float(fields[0])
        except ValueError:
            raise BadLine("malformed_line", f"score {fields[0][:40]!r} is not a number") from None
        if not math.isfinite(score):
            raise BadLine("malformed_line", f"score {fields[0]!r} is not finite")
        return (clean(fields[1]), clean(fields[2])), score
    return tuple(clean(decode(side, row)) for side in raw), None
