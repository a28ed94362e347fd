"""download through real img2dataset against the loopback image server (and a scripted one for
X-Robots-Tag opt-outs, busy answers and per-host connections)."""

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
from tests.fakes.scripted_server import ScriptedServer

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
    # img2dataset's logger process (forked, download_logger.py) writes its totals to the stage's log
    assert f"count: {ingest.samples_out}" in (tmp / "download" / "img2dataset.log").read_text()
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


def _ingest_and_download(tmp_path, name: str, rows: list[tuple[str, str]], overrides: list[str]):
    """Ingest a caption/url list of `rows` as dataset `name` and download it (timeout 5 s)."""
    (tmp_path / "urls.tsv").write_text(
        "caption\turl\n" + "".join(f"{c}\t{u}\n" for c, u in rows), encoding="utf-8"
    )
    dataset = {"name": name, "url_list": str(tmp_path / "urls.tsv"), "format": "tsv"}
    spec = load_spec(
        "demo", [f"dataset.spec={json.dumps(dataset)}", "download.timeout=5", *overrides], tmp_path
    )
    INGEST_STAGE.run(spec, {}, tmp_path / "ingest")
    return DOWNLOAD_STAGE.run(spec, {"ingest": tmp_path / "ingest"}, tmp_path / "download")


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
        m = _ingest_and_download(
            tmp_path,
            "guard",
            rows,
            [f"ingest.url_policy.allowed_ports=[{server.port}]", f"download.max_response_bytes={1 << 20}"],
        )
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


GOOD = (Path(__file__).parents[1] / "badinput" / "images" / "good.jpg").read_bytes()


def test_opt_outs_busy_hosts_and_per_host_connections(tmp_path: Path) -> None:
    """img2dataset's four threads against one host allowed one connection: X-Robots-Tag opt-outs
    (unaddressed, or addressed to the configured token) are `opt_out`, one addressed to another
    crawler is not; a 429 is asked again after its Retry-After (img2dataset's own retries off),
    a host still 503 after `busy_retries` is `http_503`."""
    image = (200, {"Content-Type": "image/jpeg"}, GOOD)
    with ScriptedServer(hold_for_company=0.2) as server:
        rows = [(f"good {i}", server.script(f"/good-{i}.jpg", image)) for i in range(4)]
        for name, header in [
            ("noai", "noai"),
            ("addressed", "MVLPbot: noimageai"),
            ("otherbot", "otherbot: noai"),
        ]:
            answer = (200, {"Content-Type": "image/jpeg", "X-Robots-Tag": header}, GOOD)
            rows.append((name, server.script(f"/{name}.jpg", answer)))
        rows.append(("busy", server.script("/busy.jpg", (429, {"Retry-After": "1"}, b"later"), image)))
        rows.append(("down", server.script("/down.jpg", (503, {"Retry-After": "0"}, b"down"))))
        settings = ["retries=0", "processes=1", "threads=4", "per_host_connections=1", "busy_retries=2"]
        settings.append("user_agent_token=mvlpbot")
        m = _ingest_and_download(tmp_path, "polite", rows, [f"download.{x}" for x in settings])
        busy = [at for at, _ in server.requests("/busy.jpg")]
        down = server.requests("/down.jpg")
        agent = server.requests("/good-0.jpg")[0][1]["User-Agent"]
    assert m.samples_in == 9 and m.samples_out == 6
    by_key = {r["key"]: r["reason"] for r in contract.read_rejects(tmp_path / "download").to_pylist()}
    assert by_key == {
        "polite-000000004": "opt_out",
        "polite-000000005": "opt_out",
        "polite-000000008": "http_503",
    }
    assert len(busy) == 2 and busy[1] - busy[0] >= 1.0  # asked again after its Retry-After
    assert len(down) == 3  # the first answer and busy_retries more
    assert server.max_active == 1  # four threads, one connection at a time
    assert "(compatible; mvlpbot; " in agent
