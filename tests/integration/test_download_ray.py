"""The download stage's ray engine (ray_jobs.download): img2dataset's shards as Ray tasks, each
fetching through the fetch guard installed in the worker process that runs it.

- On one local Ray (fast): every request of a shard goes through the guard in the Ray worker, a
  redirect hop included; the worker's urllib is its own again after the shard; a node that cannot
  see the stage folder stops the stage with the fix; and the stage on the ray engine fetches its
  shards there, each unit recording the node that fetched it.
- The stage on a real two-node cluster (slow): both nodes fetch, the guard holds on each (redirects
  to a private address and to a port the policy refuses are rejected with the policy's reason in
  the shards of both nodes, and never reach their target), the stage contract holds (every sample
  out or rejected with its reason, the same output as the local engine), and a re-run does nothing.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mvlp_core import contract, fetchguard
from mvlp_core.imageserver import ImageServer
from mvlp_core.spec import UrlPolicy, load_spec
from mvlp_core.stages.download import STAGE as DOWNLOAD_STAGE
from mvlp_core.stages.ingest import STAGE as INGEST_STAGE
from mvlp_core.synth.world import ensure_world

REPO = Path(__file__).resolve().parents[2]


class Fetcher:
    """A stand-in for img2dataset's Downloader: fetches its shard's "file" (a URL here) with
    `urllib.request.urlopen`, as img2dataset does, and writes what happened, and in which
    process, to `output_folder/<shard>.json`."""

    def __init__(self, output_folder: str) -> None:
        self.output_folder = output_folder

    def __call__(self, row: tuple[int, str]) -> tuple[bool, tuple[int, str]]:
        shard, url = row
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                got = f"{answer.status} {len(answer.read())} bytes"
        except OSError as err:
            got = str(err)
        Path(self.output_folder, f"{shard}.json").write_text(json.dumps({"got": got, "pid": os.getpid()}))
        return True, row


def _urllib_state() -> tuple[bool, int, int]:
    """In a Ray worker: whether urlopen is urllib's own, the guard's count, the pid."""
    return urllib.request.urlopen is fetchguard._URLLIB_URLOPEN, fetchguard.requests_seen(), os.getpid()


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of one CPU (one worker process) for this module's fast tests."""
    import ray

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(REPO))  # workers import this checkout
        mp.delenv("RAY_ADDRESS", raising=False)
        if ray.is_initialized():
            ray.shutdown()
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        # pytest imported this module from its folder, which the workers cannot: send Fetcher and
        # the probe by value
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        try:
            yield ray
        finally:
            ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
            ray.shutdown()


def test_each_ray_task_fetches_through_the_guard_and_leaves_urllib_as_it_was(tmp_path, local_ray) -> None:
    from ray_jobs import download as engine

    ray = local_ray
    ensure_world(tmp_path / "world", 2, 0)
    out = tmp_path / "out"
    out.mkdir()
    spec = load_spec("demo", [], tmp_path)
    with ImageServer(tmp_path / "world") as server, ImageServer(tmp_path / "world") as secret:
        policy = UrlPolicy(allow_loopback=True, allowed_ports=[server.port])
        guard = (policy, 1 << 20, 10_000_000, None, fetchguard.NO_LIMITS)
        shards = [
            (0, f"{server.url}images/000000.jpg"),
            (1, f"{server.url}bad/redirect?to={secret.url}images/000001.jpg"),
            (2, f"{server.url}bad/redirect?to=http://10.0.0.1/x.jpg"),
            (3, f"{secret.url}images/000001.jpg"),
        ]
        fetched_on: dict[int, str] = {}
        engine.distributor(spec, guard, fetched_on)(1, Fetcher(str(out)), iter(shards), 0, 1)
        served = server.request_counts()
        assert secret.request_counts() == {}  # neither the hop nor the listed URL reached it
    got = {i: json.loads((out / f"{i}.json").read_text()) for i in range(4)}
    assert got[0]["got"].startswith("200 ")
    assert "mvlp url policy: url_port" in got[1]["got"]
    assert "mvlp url policy: url_private 10.0.0.1" in got[2]["got"]
    assert "mvlp url policy: url_port" in got[3]["got"]
    assert served == {"/images/000000.jpg": 1, "/bad/redirect": 2}
    node = ray.get_runtime_context().get_node_id()
    assert fetched_on == dict.fromkeys(range(4), node)

    # The worker that fetched (one CPU: one worker) runs the next task with urllib as it was.
    own, seen, pid = ray.get(ray.remote(_urllib_state).remote())
    assert {g["pid"] for g in got.values()} == {pid}
    assert own and seen == 0

    # A node that cannot see the stage folder stops the stage with the fix, before fetching.
    with pytest.raises(contract.StageError, match="cannot see the stage folder .*shared volume"):
        engine.distributor(spec, guard, {})(1, Fetcher(str(tmp_path / "elsewhere")), iter(shards[:1]), 0, 1)


def _urls(tmp_path: Path, rows: list[tuple[str, str]], overrides: list[str]):
    (tmp_path / "urls.tsv").write_text("caption\turl\n" + "".join(f"{c}\t{u}\n" for c, u in rows))
    dataset = {"name": "rr", "url_list": str(tmp_path / "urls.tsv"), "format": "tsv"}
    return load_spec("demo", [f"dataset.spec={json.dumps(dataset)}", *overrides], tmp_path)


def _rows(server: ImageServer, secret: ImageServer, shards: int) -> list[tuple[str, str]]:
    """Per shard of 4: two images, a redirect to a private address, one to a refused port."""
    rows = []
    for s in range(shards):
        rows += [
            (f"image {2 * s}", f"{server.url}images/{2 * s:06d}.jpg"),
            (f"image {2 * s + 1}", f"{server.url}images/{2 * s + 1:06d}.jpg"),
            (f"private {s}", f"{server.url}bad/redirect?to=http://10.0.0.1/{s}.jpg"),
            (f"port {s}", f"{server.url}bad/redirect?to={secret.url}images/{s:06d}.jpg"),
        ]
    return rows


def _unit_records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((folder / contract.UNITS_DIR).glob("[0-9]*.json"))]


@pytest.mark.slow  # the default suite's time; the guard in Ray workers is tested above, the stage on two nodes below
def test_stage_on_the_ray_engine_fetches_in_ray_workers_and_records_nodes(tmp_path, local_ray) -> None:
    """`execution.engines.download: ray`: img2dataset's shards run as guarded Ray tasks (the
    refused hops are the guard's, in the Ray worker: the listed URLs pass the policy), and each
    unit records the node that fetched it."""
    from ray_jobs.engines import run_stage

    ensure_world(tmp_path / "world", 4, 0)
    with ImageServer(tmp_path / "world") as server, ImageServer(tmp_path / "world") as secret:
        overrides = [
            "ingest.shard_size=4",
            f"ingest.url_policy.allowed_ports=[{server.port}]",
            "download.threads=2",
            "execution.engines={download: ray}",
        ]
        spec = _urls(tmp_path, _rows(server, secret, 2), overrides)
        INGEST_STAGE.run(spec, {}, tmp_path / "ingest")
        m = run_stage(spec, "download")
        assert secret.request_counts() == {}
    assert (m.samples_in, m.samples_out, m.rejects) == (8, 4, {"url_port": 2, "url_private": 2})
    assert m.extra["fetch_guard_blocked"] == m.rejects
    node = local_ray.get_runtime_context().get_node_id()
    assert m.extra["units_by_node"] == {node: 2}
    assert [r["extra"]["node"] for r in _unit_records(tmp_path / "download")] == [node, node]


def _samples(folder: Path) -> list[dict]:
    return [r for f in sorted(folder.glob("samples-*.parquet")) for r in pq.read_table(f).to_pylist()]


def _rejects(folder: Path) -> dict[str, str]:
    return {r["key"]: r["reason"] for r in contract.read_rejects(folder).to_pylist()}


@pytest.mark.slow  # two `ray start` nodes and img2dataset imported in each worker: ~1 min on 2 cores
def test_download_runs_across_two_nodes_with_the_guard_on_each(tmp_path, two_node_ray) -> None:
    import ray

    from ray_jobs import entrypoint

    shards = 4
    ensure_world(tmp_path / "world", 2 * shards, 0)
    with ImageServer(tmp_path / "world") as server, ImageServer(tmp_path / "world") as secret:
        settings = [
            "ingest.shard_size=4",
            f"ingest.url_policy.allowed_ports=[{server.port}]",
            "download.processes=2",  # shards in flight: one on each node
            "download.threads=2",
            "download.timeout=5",
            f"execution.ray_address={two_node_ray.address}",
        ]
        spec = _urls(tmp_path, _rows(server, secret, shards), settings)
        INGEST_STAGE.run(spec, {}, tmp_path / "ingest")
        dataset = {"name": "rr", "url_list": str(tmp_path / "urls.tsv"), "format": "tsv"}
        overrides = [f"dataset.spec={json.dumps(dataset)}", *settings, "execution.engines={download: ray}"]
        args = ["download", "--spec", "demo", "--workdir", str(tmp_path)]
        args += [a for o in overrides for a in ("--set", o)]
        assert entrypoint.main(args) == 0  # python -m ray_jobs download, the RayJob entrypoint
        nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        # the job's runtime environment (ray_jobs/connect.py): a task given no GPU sees none
        visible = ray.remote(num_cpus=0)(lambda: __import__("os").environ.get("CUDA_VISIBLE_DEVICES"))
        assert ray.get(visible.remote()) == ""
        assert secret.request_counts() == {}  # no refused hop reached its target

        out = tmp_path / "download"
        m = contract.Manifest.load(out)
        units = _unit_records(out)
        # both nodes fetched, and each unit says which
        by_node: dict[str, Counter] = defaultdict(Counter)
        for r in units:
            by_node[r["extra"]["node"]].update(r["extra"]["fetch_guard_blocked"])
        assert set(by_node) == set(nodes) and len(nodes) == 2
        assert {name for res in nodes.values() for name in res} >= {"head_node", "second_node"}
        assert sum(m.extra["units_by_node"].values()) == shards and len(m.extra["units_by_node"]) == 2
        # the guard refused both kinds of hop on each node, with the policy's reason
        for node, blocked in by_node.items():
            assert blocked["url_private"] >= 1 and blocked["url_port"] >= 1, (node, blocked)
        # the stage contract: every sample out or rejected, with its reason
        assert m.samples_in == 4 * shards == m.samples_out + sum(m.rejects.values())
        assert m.samples_out == 2 * shards
        assert m.rejects == {"url_private": shards, "url_port": shards}
        assert m.extra["fetch_guard_blocked"] == m.rejects
        details = contract.read_rejects(out).column("detail").to_pylist()
        assert all(fetchguard.BLOCK_PHRASE in d for d in details)

        # a re-run on either engine does nothing
        mtime = (out / "_manifest.json").stat().st_mtime_ns
        assert entrypoint.main(args) == 0
        assert DOWNLOAD_STAGE.run(spec, {"ingest": tmp_path / "ingest"}, out).fingerprint == m.fingerprint
        assert (out / "_manifest.json").stat().st_mtime_ns == mtime

        # only where shards are fetched changed: the local engine makes the same output
        local = DOWNLOAD_STAGE.run(spec, {"ingest": tmp_path / "ingest"}, tmp_path / "local")
    assert local.fingerprint == m.fingerprint
    assert (local.samples_in, local.samples_out, local.rejects) == (m.samples_in, m.samples_out, m.rejects)
    assert _samples(tmp_path / "local") == _samples(out)
    assert _rejects(tmp_path / "local") == _rejects(out)
    assert "units_by_node" not in local.extra
