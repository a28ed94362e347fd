"""Tar members written the same way everywhere, so the same inputs give byte-identical tars.

Every member has mtime 0, mode 0644 and owner 0 with empty names: no clock, user or umask leaks
into the bytes. `TarWriter` writes the GNU-format tar `tarfile.open(..., "w",
format=GNU_FORMAT)` writes for such members, byte for byte (tests/unit/test_tarstream.py), without
`tarfile`'s per-member Python cost (a TarInfo, a dozen field encoders, a checksum over the header
in Python): a member is one header built from two format strings and one write of its data.
Names of 100 bytes or more take tarfile's own GNU long-name header.
"""

from __future__ import annotations

import contextlib
import hashlib
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mvlp_core.tarstream import checksum

BLOCK, RECORD = tarfile.BLOCKSIZE, tarfile.RECORDSIZE
# the fields after `size`: mtime 0, the checksum placeholder, regular file, no link name, GNU
# magic, empty owner names, no device numbers, no prefix (as tarfile writes them)
_AFTER_SIZE = b"%011o\0" % 0 + b" " * 8 + tarfile.REGTYPE + b"\0" * 100 + tarfile.GNU_MAGIC + b"\0" * 32 * 2
_BEFORE_SIZE = b"%07o\0" % 0o644 + b"%07o\0" % 0 * 2
_ZEROS = bytes(BLOCK)


def member_info(name: str, size: int) -> tarfile.TarInfo:
    """The TarInfo of such a member (what tarfile writes for it)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def member_header(name: str, size: int) -> bytes:
    """The GNU-format header block(s) of a member `name` of `size` bytes."""
    encoded = name.encode("utf-8")
    if len(encoded) >= 100 or size >= 8**11:
        return member_info(name, size).tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    head = encoded.ljust(100, b"\0") + _BEFORE_SIZE + b"%011o\0" % size + _AFTER_SIZE
    head = head.ljust(BLOCK, b"\0")
    return head[:148] + b"%06o\0" % checksum(head) + head[155:]  # its field holds 8 spaces now


class TarWriter:
    """Writes members to a binary file as `tarfile.open(..., "w", format=GNU_FORMAT)` would, and
    on `close` the end-of-archive blocks padded to tarfile's record size. Members are gathered
    and written (and hashed: `sha256`, so the stage need not read the file back) in pieces of
    `FLUSH` bytes, one write and one hash update per piece rather than three per member.
    The file itself is the caller's to close (`tar_file` opens and closes one)."""

    FLUSH = 1 << 20

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.offset = out, 0
        self._hash = hashlib.sha256()
        self._parts: list[bytes | memoryview] = []
        self._pending = 0

    def add(self, name: str, data: bytes | memoryview) -> None:
        header = member_header(name, len(data))
        pad = -len(data) % BLOCK
        self._parts += (header, data, _ZEROS[:pad])
        size = len(header) + len(data) + pad
        self.offset += size
        self._pending += size
        if self._pending >= self.FLUSH:
            self._flush()

    def _flush(self) -> None:
        piece = b"".join(self._parts)
        self._hash.update(piece)
        self.out.write(piece)
        self._parts, self._pending = [], 0

    def close(self) -> None:
        end = 2 * BLOCK
        self._parts.append(bytes(end + (-(self.offset + end) % RECORD)))
        self._flush()

    @property
    def sha256(self) -> str:
        """The sha256 of every byte written (the whole tar once closed)."""
        return self._hash.hexdigest()


@contextlib.contextmanager
def tar_file(path: Path) -> Iterator[TarWriter]:
    """A tar written to `path`, closed with its end-of-archive blocks when the block ends."""
    with open(path, "wb") as out:
        tar = TarWriter(out)
        yield tar
        tar.close()
