"""Finished upstream stages, faked: a folder with one parquet of rows and a complete Manifest, what a
stage under test (or benchmarked) reads as its input; shared with benchmarks/bench_align.py."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mvlp_core import contract


def save_stage(folder: Path, name: str, file: str, rows: list[dict]) -> Path:
    """Write `rows` to folder/file and a Manifest of stage `name` saying all of them came out."""
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / file)
    contract.Manifest(
        stage=name,
        fingerprint=f"fp-{name}",
        files={},
        samples_in=len(rows),
        samples_out=len(rows),
        rejects={},
        seconds=0.0,
        units=1,
    ).save(folder)
    return folder
