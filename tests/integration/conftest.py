"""Fixtures shared by the integration tests: the translate tests' download stage (in-process,
CTranslate2, HTTP, Ray), and a two-node Ray cluster on this machine (`two_node_ray`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mvlp_core import contract, keys
from tests.integration.test_translate_stage import caption
from tests.testkit.ray_cluster import RayCluster, running


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


@pytest.fixture(scope="module")
def two_node_ray() -> Iterator[RayCluster]:
    """A Ray cluster of two nodes on this machine, one CPU each (`ray start --head` with the
    resource `head_node`, `ray start --address` with `second_node`), this process its driver's
    environment (the cluster's token): pass `cluster.address` as execution.ray_address. Ray
    joined during the tests is shut down before the nodes stop; only this cluster's processes
    are ended (tests/testkit/ray_cluster.py)."""
    import ray

    if ray.is_initialized():  # an earlier test's local Ray: this process joins the cluster instead
        ray.shutdown()
    with running({"head_node": 1, "second_node": 1}) as cluster, cluster.driver():
        try:
            yield cluster
        finally:
            ray.shutdown()
