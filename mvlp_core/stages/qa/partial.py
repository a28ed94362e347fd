"""Sub-unit progress for model backends: generated text saved batch by batch inside a unit.

A unit of CC3M is a download shard (thousands of captions, minutes to hours of LLM time), so a
killed run must not lose the batches it finished: each batch of (caption, text) rows is written
atomically to `_partial/UNIT/NNNNN.parquet` as soon as it is generated, and a resumed run reads them
back and asks the model only for the rest. The folder lives inside the stage folder, so a changed
fingerprint or `--force` (which reset the stage folder) discards generations of another config.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mvlp_core import atomic

PARTIAL_DIR = "_partial"
SCHEMA = pa.schema([("caption", pa.string()), ("text", pa.string())])


class PartialStore:
    """Generated text per caption for one stage folder, grouped by unit."""

    def __init__(self, out_dir: Path) -> None:
        self.root = Path(out_dir) / PARTIAL_DIR

    def load(self, unit: str) -> dict[str, str]:
        folder = self.root / unit
        done: dict[str, str] = {}
        for path in sorted(folder.glob("*.parquet")) if folder.exists() else []:
            table = pq.read_table(path)
            done.update(zip(table.column("caption").to_pylist(), table.column("text").to_pylist()))
        return done

    def save(self, unit: str, captions: list[str], texts: list[str]) -> None:
        if len(captions) != len(texts):
            raise ValueError(f"{len(captions)} captions but {len(texts)} generated texts")
        if not captions:
            return
        folder = self.root / unit
        folder.mkdir(parents=True, exist_ok=True)
        n = len(list(folder.glob("*.parquet")))
        table = pa.Table.from_pydict({"caption": captions, "text": texts}, schema=SCHEMA)
        atomic.write_parquet(folder / f"{n:05d}.parquet", table)

    def batches(self, unit: str) -> int:
        folder = self.root / unit
        return len(list(folder.glob("*.parquet"))) if folder.exists() else 0

    def clear(self) -> None:
        """Drop all partial text (after every unit is committed it is no longer needed)."""
        shutil.rmtree(self.root, ignore_errors=True)
