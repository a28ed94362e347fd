"""Reading WebDataset shards as a stream of samples without `tarfile`'s per-member Python cost.

`tarfile` builds a TarInfo per member through a dozen method calls (header fields one by one,
pax and sparse handling) and reads member data through a wrapper object; on shards of small
images that is most of the loader's time outside JPEG decoding. Here a member costs one 512-byte
read, a slice per field and one read of its data. What it reads: ustar/GNU/pax archives as tar
and webdataset write them: regular files, GNU long names ('L') and pax headers ('x': path and
size) for the next member, global pax headers and every other type (directories, links) skipped.
A header whose checksum does not add up, or a member cut short, raises `tarfile.ReadError`.

Grouping follows webdataset's `group_by_keys` (and so `wds.WebDataset`): key = the path up to the
first dot of the file name, extension = the rest, lower-cased; consecutive members with one key
are one sample; names like `__meta__` are skipped; a member repeating its sample's extension goes
to the caller's handler and is dropped.
"""

from __future__ import annotations

import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

BLOCK = 512
_SKIP_META = re.compile(r"__[^/]*__($|/)")
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_REGULAR = (b"0", b"\0", b"7")
_GNU_LONGNAME, _PAX, _PAX_GLOBAL = b"L", b"x", b"g"
_ZEROS = bytes(BLOCK)


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 when the top bit is set."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] & 0x40 else value
    text = field.rstrip(b"\0 ").lstrip(b" ")
    return int(text, 8) if text else 0


def checksum(header: bytes) -> int:
    """The ustar checksum of a 512-byte header: the sum of its bytes, the checksum field counted as
    eight spaces. The byte sum at C speed: zlib.adler32's low 16 bits are 1 + the byte sum mod
    65521, which is exact for 256 bytes (at most 65,280), so two halves give the whole sum."""
    halves = (zlib.adler32(header[:256]) & 0xFFFF) + (zlib.adler32(header[256:]) & 0xFFFF) - 2
    return halves - sum(header[148:156]) + 8 * 32


def _pax_records(data: bytes) -> dict[str, str]:
    """The "LEN key=value\\n" records of a pax extended header."""
    out, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        if length <= 0:
            raise tarfile.ReadError("pax header: bad record length")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class _BufferReader:
    """`read(n)` over bytes in memory, returning memoryview slices of them (no copy)."""

    def __init__(self, data: bytes) -> None:
        self.view, self.pos = memoryview(data), 0

    def read(self, n: int) -> memoryview:
        chunk = self.view[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk


def members_in(data: bytes) -> Iterator[tuple[str, memoryview]]:
    """(name, data) of each regular file of a whole tar held in `data`, each member's data a
    memoryview of `data`: one read of the file and no copy per member, where `members` reads
    each header and member from the stream."""
    return members(_BufferReader(data))


def members(stream: IO[bytes] | _BufferReader) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each regular file in the tar read sequentially from `stream` (memoryviews
    where `stream` is a `_BufferReader`)."""
    long_name: str | None = None
    pax: dict[str, str] = {}
    read = stream.read
    while True:
        header = bytes(read(BLOCK))  # the very object for a file's bytes; a copy of a view
        if len(header) < BLOCK:
            if header:
                raise tarfile.ReadError(f"truncated header ({len(header)} bytes)")
            return
        if header == _ZEROS:  # end-of-archive marker
            return
        if _number(header[148:156]) != checksum(header):
            raise tarfile.ReadError("bad checksum in a tar header: the shard is corrupt or not a tar")
        kind = header[156:157]
        size = int(pax["size"]) if "size" in pax else _number(header[124:136])
        data = read(size)
        pad = -size % BLOCK
        if len(data) != size or (pad and len(read(pad)) != pad):
            raise tarfile.ReadError(
                f"unexpected end of data in a tar member of {size} bytes (and its padding)"
            )
        if kind == _GNU_LONGNAME:
            long_name = bytes(data).rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        if kind == _PAX:  # only its path and size are read (webdataset's hold an mtime alone)
            data = bytes(data)
            pax = _pax_records(data) if b"path=" in data or b"size=" in data else {}
            continue
        if kind == _PAX_GLOBAL:
            continue
        name = pax.get("path") or long_name
        if name is None:
            name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            if header[257:262] == b"ustar" and header[345] != 0:
                prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                name = f"{prefix}/{name}"
        long_name, pax = None, {}
        if kind in _REGULAR:
            yield name, data


def samples(stream: IO[bytes], url: str, handler: Callable[[Exception], bool]) -> Iterator[dict[str, Any]]:
    """The samples of one shard, as webdataset groups them: {"__key__", "__url__", ext: bytes}. A
    member repeating its sample's extension goes to `handler` and is dropped (webdataset's way);
    a corrupt or cut-short archive raises `tarfile.ReadError` for the caller's handler, after the
    sample whose members were read before the fault."""
    current: dict[str, Any] | None = None
    try:
        for name, data in members(stream):
            if _SKIP_META.match(name):
                continue
            split = _KEY_EXT.match(name)
            if split is None:
                continue
            key, ext = split.group(1), split.group(2).lower()
            if current is None or key != current["__key__"]:
                if current is not None:
                    yield current
                current = {"__key__": key, "__url__": url}
            if ext in current:
                handler(ValueError(f"{name}: duplicate file name in {url} (sample {key!r} has two .{ext})"))
                continue
            current[ext] = data
    except Exception:  # a read error: the members read so far are the sample's (the loader checks it)
        if current is not None:
            yield current
        raise
    if current is not None:
        yield current
