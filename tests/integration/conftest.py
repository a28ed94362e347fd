"""Fixtures shared by the translate integration tests (in-process, CTranslate2, HTTP, Ray)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mvlp_core import contract, keys
from tests.integration.test_translate_stage import caption


@pytest.fixture
def download(tmp_path: Path) -> Path:
    """Two download shards of 20 samples, with a valid manifest."""
    folder = tmp_path / "download"
    folder.mkdir()
    files = {}
    for shard in range(2):
        rows = range(shard * 20, shard * 20 + 20)
        name = f"samples-{shard:05d}.parquet"
        pq.write_table(
            pa.table(
                {
                    "key": [keys.make_key("cc3m", r) for r in rows],
                    "row": pa.array(list(rows), pa.int64()),
                    "caption": [caption(r) for r in rows],
                }
            ),
            folder / name,
        )
        files[name] = {"samples": 20, "sha256": "", "bytes": 0}
    contract.Manifest("download", "fp-download", files, 40, 40, {}, 0.0, 2).save(folder)
    return folder
