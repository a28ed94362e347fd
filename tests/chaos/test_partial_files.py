"""Partial files never count as output: each stage's output file, cut short with its unit record
absent (a writer killed before its commit) or present (damaged after it), is redone, never read."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from chaos_harness import live_spec, reject_pairs

from mvlp_core import atomic, contract, pipeline
from mvlp_core.imageserver import ImageServer

pytestmark = pytest.mark.chaos

CASES = [  # stage, output file, its unit
    ("ingest", "shard-00001.parquet", "00001"),
    ("download", "samples-00001.parquet", "00001"),
    ("download", "webdataset/00001.tar", "00001"),
    ("translate", "00001.parquet", "00001"),
    ("align", "fr-00000.parquet", "fr-00000"),  # align's units: chunks of align.chunk_size per language
    ("qa", "00001.parquet", "00001"),
    ("shard", "shard-00001-000.tar", "00001"),
]


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def tar_contents(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


@pytest.mark.parametrize("record", ["absent", "present"])
@pytest.mark.parametrize("stage, rel, unit", CASES, ids=[f"{s}-{r}" for s, r, _ in CASES])
def test_truncated_output_is_redone_never_read(
    stage: str, rel: str, unit: str, record: str, reference: Path, live: Path
) -> None:
    if live.exists():
        shutil.rmtree(live)
    shutil.copytree(reference, live)
    folder, path = live / stage, live / stage / rel
    (folder / contract.MANIFEST).unlink()
    record_path = folder / contract.UNITS_DIR / f"{unit}.json"
    if record == "absent":
        record_path.unlink()
        if rel.startswith("webdataset/"):  # img2dataset killed mid-tar: its stats never written
            (folder / "webdataset" / f"{unit}_stats.json").unlink()
    # a redone unit's record is written anew and renamed over the old one (a new file: the inode
    # number, which a file system may reuse once the old one is gone, or the write time differs);
    # its bytes can equal the old record's, timings included (both took 0.006 s)
    committed = _identity(record_path) if record == "present" else None
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])

    with ImageServer(live / "world", slow_seconds=5) as server:
        manifest = pipeline.run_stage(live_spec(live, server.url), stage)

    want = contract.Manifest.load(reference / stage)
    assert path.stat().st_size > len(whole) // 2, "the cut-short file was kept"
    assert manifest.files[rel]["sha256"] == atomic.sha256_file(path)
    assert (manifest.samples_in, manifest.samples_out, manifest.rejects) == (
        want.samples_in,
        want.samples_out,
        want.rejects,
    )
    assert reject_pairs(folder) == reject_pairs(reference / stage)
    if committed is not None:
        assert _identity(record_path) != committed, "the damaged unit was not redone"
    if stage == "align":  # eflomal is unseeded: the same pairs and words, links may differ
        got, ref = pq.read_table(path), pq.read_table(reference / stage / rel)
        assert got.column("key").to_pylist() == ref.column("key").to_pylist()
        assert got.column("words").to_pylist() == ref.column("words").to_pylist()
    elif rel.startswith("webdataset/"):  # img2dataset's tar headers carry write times
        assert tar_contents(path).keys() == tar_contents(reference / stage / rel).keys()
        got, ref = tar_contents(path), tar_contents(reference / stage / rel)
        assert {n: b for n, b in got.items() if n.endswith(".jpg")} == {
            n: b for n, b in ref.items() if n.endswith(".jpg")
        }
    else:
        assert path.read_bytes() == (reference / stage / rel).read_bytes()
