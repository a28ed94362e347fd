"""download through real img2dataset against the loopback image server."""

from __future__ import annotations

import contextlib
import json
import math
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mvlp_core import contract
from mvlp_core.imageserver import ImageServer
from mvlp_core.spec import PipelineSpec, load_spec
from mvlp_core.stages.download import STAGE as DOWNLOAD_STAGE
from mvlp_core.stages.ingest import STAGE as INGEST_STAGE
from mvlp_core.synth.world import ensure_world

SAMPLES = 24


@contextlib.contextmanager
def served_demo(tmp_path: Path, *overrides: str) -> Iterator[PipelineSpec]:
    """The demo spec plus `overrides`, on SAMPLES images served on loopback with 4 s slow answers."""
    ensure_world(tmp_path / "world", SAMPLES, 3)
    with ImageServer(tmp_path / "world", slow_seconds=4) as server:
        mirror = json.dumps({"http://images.synthetic.mvlp/": server.url})
        settings = [f"dataset.samples={SAMPLES}", "download.timeout=2", f"download.mirrors={mirror}"]
        yield load_spec("demo", [*settings, *overrides], tmp_path)


@pytest.fixture()
def run(tmp_path: Path):
    with served_demo(tmp_path, "ingest.shard_size=10") as spec:
        ingest = INGEST_STAGE.run(spec, {}, tmp_path / "ingest")
        yield spec, tmp_path, ingest


def samples(folder: Path) -> list[dict]:
    return [r for f in sorted(folder.glob("samples-*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_download_maps_statuses_and_keys(run) -> None:
    spec, tmp, ingest = run
    m = DOWNLOAD_STAGE.run(spec, {"ingest": tmp / "ingest"}, tmp / "download")
    assert m.samples_in == ingest.samples_out
    assert m.samples_out == SAMPLES
    assert m.rejects == {"http_404": 1, "http_500": 1, "image_decode_error": 2, "timeout": 1}
    rows = samples(tmp / "download")
    assert sorted(r["key"] for r in rows) == [f"synthetic-{i:09d}" for i in range(SAMPLES)]
    for r in rows:  # our key travels through img2dataset into its tar
        with tarfile.open(tmp / "download" / r["tar"]) as tar:
            meta = json.load(tar.extractfile(r["member"].replace(".jpg", ".json")))
        assert meta["mvlp_key"] == r["key"] and meta["url"].endswith(r["url"].rsplit("/", 1)[1])


@pytest.mark.parametrize(
    "stats_kept, cut",
    [
        # a killed run: the unit never committed, img2dataset's tar is truncated, no stats file
        (False, 1000),
        # img2dataset finished the shard (its stats file exists) but the unit was not committed, and
        # the tar was cut short since: fetched again instead of read (or failing the stage)
        (True, 1536),
    ],
    ids=["unfinished", "finished-then-damaged"],
)
def test_partial_shard_is_redone_not_read(run, stats_kept: bool, cut: int) -> None:
    spec, tmp, _ = run
    out = tmp / "download"
    first = DOWNLOAD_STAGE.run(spec, {"ingest": tmp / "ingest"}, out)
    before = samples(out)
    (out / "_manifest.json").unlink()
    (out / contract.UNITS_DIR / "00001.json").unlink()
    if not stats_kept:
        (out / "webdataset" / "00001_stats.json").unlink()
    tar = out / "webdataset" / "00001.tar"
    tar.write_bytes(tar.read_bytes()[:cut])
    again = DOWNLOAD_STAGE.run(spec, {"ingest": tmp / "ingest"}, out)
    assert samples(out) == before
    assert again.samples_out == first.samples_out and again.rejects == first.rejects
    with tarfile.open(tar) as t:
        assert len([n for n in t.getnames() if n.endswith(".jpg")]) == 10


def test_fetch_guard_refuses_redirect_hops_and_cuts_endless_bodies(tmp_path: Path) -> None:
    """img2dataset follows redirects itself; the policy still holds on every hop it fetches."""
    ensure_world(tmp_path / "world", 2, 0)
    with ImageServer(tmp_path / "world") as server, ImageServer(tmp_path / "world") as secret:
        rows = [
            ("a good image", f"{server.url}images/000000.jpg"),
            ("a hop to an internal port", f"{server.url}bad/redirect?to={secret.url}images/000001.jpg"),
            ("a body that never ends", f"{server.url}bad/endless.jpg"),
            ("a connection dropped mid-body", f"{server.url}bad/drop-mid-body.jpg"),
        ]
        (tmp_path / "urls.tsv").write_text(
            "caption\turl\n" + "".join(f"{c}\t{u}\n" for c, u in rows), encoding="utf-8"
        )
        dataset = {"name": "guard", "url_list": str(tmp_path / "urls.tsv"), "format": "tsv"}
        spec = load_spec(
            "demo",
            [
                f"dataset.spec={json.dumps(dataset)}",
                "download.timeout=5",
                f"ingest.url_policy.allowed_ports=[{server.port}]",
                f"download.max_response_bytes={1 << 20}",
            ],
            tmp_path,
        )
        INGEST_STAGE.run(spec, {}, tmp_path / "ingest")
        m = DOWNLOAD_STAGE.run(spec, {"ingest": tmp_path / "ingest"}, tmp_path / "download")
    assert m.samples_in == 4 and m.samples_out == 1
    rejects = contract.read_rejects(tmp_path / "download").to_pylist()
    by_key = {r["key"]: r["reason"] for r in rejects}
    assert by_key["guard-000000001"] == "url_port"
    assert by_key["guard-000000002"] == "response_too_large"
    assert m.extra["fetch_guard_blocked"] == {"response_too_large": 1, "url_port": 1}
    assert secret.request_counts() == {}


@pytest.mark.timeout(300)
def test_more_shards_than_a_recycled_worker_pool_would_take(tmp_path: Path) -> None:
    """One worker, 15 shards: with img2dataset's recycling (5 shards a worker) the executor never
    replaced its worker (CPython gh-115634) and the stage hung after shard 5."""
    with served_demo(tmp_path, "ingest.shard_size=2", "download.processes=1") as spec:
        ingest = INGEST_STAGE.run(spec, {}, tmp_path / "ingest")
        m = DOWNLOAD_STAGE.run(spec, {"ingest": tmp_path / "ingest"}, tmp_path / "download")
    assert (
        len(list((tmp_path / "download" / "webdataset").glob("*_stats.json")))
        == math.ceil(ingest.samples_out / 2)
        > 5
    )
    assert m.samples_in == ingest.samples_out and m.samples_out == SAMPLES
