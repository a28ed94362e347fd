"""Tar members written the same way everywhere, so the same inputs give byte-identical tars."""

from __future__ import annotations

import io
import tarfile


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """A member with fixed mtime, owner and mode (no clock, user or umask leaks into the bytes)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))
