"""Crash-safe file writes: write under a temporary name, fsync, rename.

A killed process leaves at most a `*.tmp-*` file (or folder) behind, never a half-written file
under a final name, so a resumed stage can trust every final name it finds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

TMP_MARK = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary(final: Path) -> Path:
    return final.with_name(f"{final.name}{TMP_MARK}{uuid.uuid4().hex[:8]}")


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success fsync it and rename it over `final`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(final)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(final: Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    with atomic_path(final) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_json(final: Path, obj: Any) -> None:
    with atomic_open(final, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def write_parquet(final: Path, table: pa.Table) -> None:
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp)


def copy_tree(src: Path, final: Path) -> None:
    """Copy folder `src` to `final` (which must not exist) under a temporary name, fsync, rename:
    a copy killed midway leaves a `*.tmp-*` folder, never a partial folder under the final name."""
    final = Path(final)
    tmp = _temporary(final)
    try:
        shutil.copytree(src, tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_file(f)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def remove_temporaries(folder: Path) -> int:
    """Delete leftovers of killed writers (files and folders) under `folder`; returns how many
    were removed."""
    removed = 0
    if folder.exists():
        for p in sorted(folder.rglob(f"*{TMP_MARK}*")):  # a folder before what it holds
            if p.is_dir():
                shutil.rmtree(p)
                removed += 1
            elif p.is_file():
                p.unlink()
                removed += 1
    return removed


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
