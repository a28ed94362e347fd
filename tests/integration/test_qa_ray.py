"""The qa stage's ray engine (ray_jobs.qa) with the backends that run here: `rules` and `http` (the
fake OpenAI-compatible server) through the Ray job entrypoint, `python -m ray_jobs qa`, on a local
Ray Data actor pool: the same files, rejects and figures as the in-process stage. The captions go
in repartitioned, so every worker has a block from the start."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from mvlp_core import contract
from mvlp_core.spec import load_spec
from mvlp_core.stages.qa import STAGE as QA_STAGE
from tests.fakes.openai_server import FakeOpenAI
from tests.integration import test_qa_http
from tests.integration.test_qa_http import CANARY, ENV, llm, world_captions

REPO = Path(__file__).resolve().parents[2]
download = test_qa_http.download  # the fixture: three download shards of the synthetic world's captions


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of two CPUs: two actors of half a CPU each, and room for Ray Data's tasks."""
    import ray

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(REPO))  # workers import this checkout
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.delenv(ENV, raising=False)  # workers get the endpoint key from the driver, not from here
        if ray.is_initialized():
            ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.mark.parametrize(
    ("rows", "workers", "batch_rows", "expected"),
    [
        (30, 2, 256, (2, 15)),  # fewer rows than a batch: one block per worker
        (30, 3, 4, (8, 4)),  # a block per batch
        (1, 4, 256, (1, 1)),  # never more blocks than rows
        (10_000, 2, 256, (40, 256)),
    ],
)
def test_partitioning(rows, workers, batch_rows, expected) -> None:
    from ray_jobs.qa import partitioning

    assert partitioning(rows, workers, batch_rows) == expected


def test_input_is_repartitioned_for_every_worker(local_ray) -> None:
    from ray_jobs.qa import input_dataset

    todo = {"00000": [f"caption {i}" for i in range(20)], "00001": [f"caption {i}" for i in range(20, 30)]}
    table = pa.table({"unit": ["00000"] * 30, "caption": [f"c{i}" for i in range(30)]})
    assert local_ray.data.from_arrow(table).materialize().num_blocks() == 1  # what it would be

    ds, batch = input_dataset(todo, workers=2, batch_rows=256)
    blocks = ds.materialize()
    assert (blocks.num_blocks(), batch) == (2, 15)
    assert sorted(blocks.to_pandas().itertuples(index=False, name=None)) == sorted(
        (u, c) for u, caps in todo.items() for c in caps
    )
    assert input_dataset(todo, workers=3, batch_rows=4)[0].materialize().num_blocks() == 8


def test_a_pool_that_fills_the_cluster_is_named_in_the_log(local_ray, caplog) -> None:
    """Two actors of one CPU on two CPUs leave none for Ray Data's reads: the job would wait."""
    from ray_jobs.connect import warn_if_pool_fills_cluster

    assert warn_if_pool_fills_cluster("qa", 2, 0.5) is None  # this module's pools: room to read
    message = warn_if_pool_fills_cluster("translate", 2, 1)
    assert message is not None and "takes 2 of the cluster's 2 CPUs" in message
    assert "translate.ray.concurrency" in message and message in caplog.text


def write_spec(tmp_path: Path, qa: dict) -> Path:
    path = tmp_path / "spec.yaml"
    spec = {
        "name": "t",
        "dataset": {"ref": "synthetic"},
        "languages": ["de"],
        "translate": {"backend": "import", "import": {"path": str(tmp_path / "unused.tsv")}},
        "execution": {"engines": {"qa": "ray"}},
        "qa": {**qa, "ray": {"concurrency": 2, "num_cpus": 0.5}},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def _job_and_local(tmp_path: Path, download: Path, qa: dict) -> tuple[contract.Manifest, contract.Manifest]:
    """The stage as a Ray job (the entrypoint, engine ray), then in this process (engine local)."""
    from ray_jobs import entrypoint

    spec_file = write_spec(tmp_path, qa)
    assert entrypoint.main(["qa", "--spec", str(spec_file), "--workdir", str(tmp_path)]) == 0
    by_ray = contract.Manifest.load(tmp_path / "qa")
    spec = load_spec(spec_file, ["execution.engines={qa: local}"], tmp_path)
    local = QA_STAGE.run(spec, {"download": download}, tmp_path / "local")
    assert by_ray.fingerprint == local.fingerprint  # the engine is not part of it
    assert by_ray.files == local.files  # the same bytes (sha256) per unit file
    assert (by_ray.samples_in, by_ray.samples_out, by_ray.rejects, by_ray.extra) == (
        local.samples_in,
        local.samples_out,
        local.rejects,
        local.extra,
    )
    assert (
        contract.read_rejects(tmp_path / "qa")
        .sort_by("key")
        .equals(contract.read_rejects(tmp_path / "local").sort_by("key"))
    )
    # the Ray-made stage is complete for the local engine too
    mtime = (tmp_path / "qa" / "_manifest.json").stat().st_mtime_ns
    QA_STAGE.run(spec, {"download": download}, tmp_path / "qa")
    assert (tmp_path / "qa" / "_manifest.json").stat().st_mtime_ns == mtime
    return by_ray, local


def test_rules_through_the_ray_job_match_the_local_engine(tmp_path, download, local_ray) -> None:
    by_ray, _ = _job_and_local(tmp_path, download, {"backend": "rules", "pairs_per_caption": 2})
    n = sum(len(c) for c in world_captions())
    assert by_ray.samples_in == n == by_ray.samples_out + sum(by_ray.rejects.values())
    assert by_ray.extra["generator"] == "rules" and by_ray.extra["pairs"] > by_ray.samples_out


@pytest.mark.slow  # the default suite's time: rules covers the Ray job path there
def test_http_through_the_ray_job_matches_the_local_engine(tmp_path, download, local_ray, monkeypatch):
    monkeypatch.setenv(ENV, CANARY)  # the driver's; the actors get it from the driver
    with FakeOpenAI(respond=llm) as fake:
        http = {"base_url": fake.url, "model": "fake-model", "api_key_env": ENV, "concurrency": 3}
        by_ray, _ = _job_and_local(
            tmp_path, download, {"backend": "http", "checkpoint_every": 4, "http": http}
        )
        asked = Counter(r.body.get("messages", [{}])[-1].get("content") for r in fake.completions())
        keys = {r.headers["Authorization"] for r in fake.completions()}
    captions = {c for shard in world_captions() for c in shard}
    assert len(asked) == len(captions) and set(asked.values()) == {2}  # once per engine
    assert keys == {f"Bearer {CANARY}"}
    assert by_ray.extra["generator"] == "http:fake-model" and sum(by_ray.rejects.values()) > 0
    assert CANARY not in (tmp_path / "qa" / "_manifest.json").read_text()


@pytest.mark.slow
def test_an_endpoint_that_does_not_answer_stops_the_pass_with_its_error(tmp_path, local_ray) -> None:
    """The actors load the backend (an http one asks the server for its models): what stops one
    there reaches the driver as the local engine's StageError, not as Ray's wrapper of it."""
    from ray_jobs.qa import questioner

    with FakeOpenAI(respond=llm) as fake:
        closed = fake.url  # a port nobody listens on once the server has stopped
    http = {"base_url": closed, "model": "m", "max_retries": 1, "backoff_base": 0.001, "timeout": 1}
    spec = load_spec(write_spec(tmp_path, {"backend": "http", "http": http}), [], tmp_path)
    asker = questioner(spec)
    asker.load()
    with pytest.raises(
        contract.StageError, match=r"^GET .*/models failed after 2 attempt.*Fix: check that the"
    ):
        asker.generate_units({"00000": ["a red circle above a blue square"]}, lambda *_: None)
