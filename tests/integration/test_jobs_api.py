"""Stages submitted through the Ray Jobs API to a two-node cluster on this machine, with the command
a RayJob's entrypoint runs (`python -m ray_jobs STAGE --spec ...`, flows/job_client.py): the job
succeeds and the stage's output and manifest are what a run here writes. Pretrain only so far:
translate and qa through the Jobs API waited for CPUs on this 2-CPU cluster (Ray Data's read task
behind the actor pool) and are left for the cluster-path issue."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows import job_client
from mvlp_core import contract
from tests.integration.test_pretrain_ray import FAST, make_spec, write_inputs
from tests.testkit.ray_cluster import RayCluster, running

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data_specs/pipelines/demo.yaml"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    """Two nodes of one CPU each, the head with its dashboard (which serves the Jobs API)."""
    with running({"head_node": 1, "second_node": 1}, dashboard=True) as c, c.driver():
        yield c


def submit(cluster: RayCluster, command: str, name: str) -> list[job_client.JobStatus]:
    """Submit as a RayJob's submitter does and poll to the end; the statuses seen."""
    seen: list[job_client.JobStatus] = []
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    final = job_client.run_on_ray_cluster(
        cluster.jobs_address,
        command,
        name,
        on_status=seen.append,
        poll_seconds=1,
        timeout_seconds=900,
        runtime_env={"env_vars": {**cluster.env, "PATH": path}},  # `python`: this environment's
    )
    assert final.state == "SUCCEEDED" and seen[-1].state == "SUCCEEDED"
    return seen


@pytest.mark.slow  # a two-node cluster with its dashboard (the Jobs API) and a Ray Train run: ~1 min
def test_pretrain_through_the_jobs_api_on_two_nodes(cluster: RayCluster, tmp_path: Path) -> None:
    overrides = [*FAST, "text.corpora=[]", "pretrain.workers=2", "pretrain.max_steps=3"]
    spec = make_spec(tmp_path, "pretrain.workers=2", "pretrain.max_steps=3")
    write_inputs(spec)  # the shard and text-shard stages' outputs, as upstream jobs leave them
    command = job_client.entrypoint("pretrain", DEMO) + f" --workdir {tmp_path}"
    command += "".join(f" --set '{o}'" for o in overrides)
    submit(cluster, command, "mvlp-pretrain-jobs-api")
    manifest = contract.Manifest.load(tmp_path / "pretrain")
    assert manifest is not None and manifest.extra["step"] == 3
    assert (tmp_path / "pretrain" / "final" / "unigen.json").is_file()
