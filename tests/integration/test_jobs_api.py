"""Stages submitted through the Ray Jobs API to a two-node cluster on this machine, with the command
a RayJob's entrypoint runs (`python -m ray_jobs STAGE --spec ...`, flows/job_client.py): the job
succeeds and the stage's output and manifest are what a run here writes: translate and qa (Ray Data
actor pools, output byte-identical to the in-process engine's), pretrain (Ray Train, DDP over
both nodes) and iglue-eval (one Ray task per unit)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows import job_client
from mvlp_core import contract
from mvlp_core.spec import load_spec
from mvlp_core.stages.qa import STAGE as QA_STAGE
from mvlp_core.stages.translate import STAGE as TRANSLATE_STAGE
from tests.integration.test_iglue_stage import SMALL, save_micro_unigen
from tests.integration.test_pretrain_ray import FAST, make_spec, write_inputs
from tests.integration.test_qa_http import world_captions, write_download
from tests.integration.test_qa_ray import write_spec as write_qa_spec
from tests.integration.test_translate_ray import write_spec as write_translate_spec
from tests.testkit.ray_cluster import RayCluster, running

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data_specs/pipelines/demo.yaml"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    """Two nodes of two logical CPUs each (a stage's actor pool and Ray Data's read tasks both
    need some), the head with its dashboard (which serves the Jobs API)."""
    with running({"head_node": 2, "second_node": 2}, dashboard=True) as c, c.driver():
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
        # `python`: this environment's; a variable connect() sets too, which ray.init must not
        # set again in a submitted job (Ray refuses to merge the two)
        runtime_env={"env_vars": {**cluster.env, "PATH": path, "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1"}},
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


def _same_as_local(
    stage, spec_file: Path, workdir: Path, inputs: dict[str, Path], engine: str
) -> contract.Manifest:
    """The job's manifest; the same stage run here with the local engine wrote the same bytes."""
    by_job = contract.Manifest.load(workdir / engine)
    spec = load_spec(spec_file, [f"execution.engines={{{engine}: local}}"], workdir)
    local = stage.run(spec, inputs, workdir / "local")
    assert by_job.fingerprint == local.fingerprint and by_job.files == local.files
    assert (by_job.samples_in, by_job.samples_out, by_job.rejects) == (
        local.samples_in,
        local.samples_out,
        local.rejects,
    )
    return by_job


@pytest.mark.slow  # a Ray Data actor pool on the two-node cluster: ~1 min
def test_translate_through_the_jobs_api(cluster: RayCluster, tmp_path: Path, download: Path) -> None:
    spec_file = write_translate_spec(tmp_path, concurrency=2)
    submit(cluster, f"{job_client.entrypoint('translate', spec_file)} --workdir {tmp_path}", "mvlp-translate")
    manifest = _same_as_local(TRANSLATE_STAGE, spec_file, tmp_path, {"download": download}, "translate")
    assert manifest.units == 2 and manifest.samples_out > 0 and sum(manifest.rejects.values()) > 0


@pytest.mark.slow  # a Ray Data actor pool on the two-node cluster: ~1 min
def test_qa_through_the_jobs_api(cluster: RayCluster, tmp_path: Path) -> None:
    download = write_download(tmp_path)
    spec_file = write_qa_spec(tmp_path, {"backend": "rules", "pairs_per_caption": 2})
    submit(cluster, f"{job_client.entrypoint('qa', spec_file)} --workdir {tmp_path}", "mvlp-qa")
    manifest = _same_as_local(QA_STAGE, spec_file, tmp_path, {"download": download}, "qa")
    n = sum(len(c) for c in world_captions())
    assert manifest.samples_in == n == manifest.samples_out + sum(manifest.rejects.values())


@pytest.mark.slow  # a fine-tune and two test units as Ray tasks on the two-node cluster: ~1 min
def test_iglue_eval_through_the_jobs_api(cluster: RayCluster, tmp_path: Path) -> None:
    from mvlp_core import pipeline
    from mvlp_core.synth import write_world

    write_world(tmp_path / "world", 12, 0)
    save_micro_unigen(tmp_path, tmp_path)
    overrides = [*SMALL, "execution.engines={iglue-eval: ray}", "iglue.workers=2", "iglue.tasks=[xvnli]"]
    command = job_client.entrypoint("iglue-eval", DEMO) + f" --workdir {tmp_path}"
    command += "".join(f" --set '{o}'" for o in overrides)
    submit(cluster, command, "mvlp-iglue-eval")
    manifest = contract.Manifest.load(tmp_path / "iglue-eval")
    assert set(manifest.extra["results"]) == {"xvnli"} and manifest.units == 1 + 2  # fine-tune, en, de
    assert set(manifest.extra["results"]["xvnli"]["zero-shot"]) == {"en", "de"}
    spec = load_spec(DEMO, overrides, tmp_path)
    state = pipeline.stage_state(spec, "iglue-eval")
    assert state["state"] == "complete", state.get("stale_because")  # the job's stage, seen from here
