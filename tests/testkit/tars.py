"""The reference the tar writer is held to: members added with `tarfile` itself."""

from __future__ import annotations

import io
import tarfile

from mvlp_core.tarmember import member_info


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """`name` with `data` and the fixed fields every mvlp tar member has, written by tarfile."""
    tar.addfile(member_info(name, len(data)), io.BytesIO(data))
