"""The translate stage on a real local Ray Data actor pool (ray_jobs.translate): same output,
fingerprint and manifest as the in-process stage, and a Ray-made stage counts as complete."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from mvlp_core import contract
from mvlp_core.spec import load_spec
from mvlp_core.stages.translate import STAGE as TRANSLATE_STAGE
from tests.integration.test_translate_stage import read_output, write_import

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def local_ray(monkeypatch):
    import ray

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # workers import this checkout
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def write_spec(tmp_path: Path, concurrency: int) -> Path:
    """A spec translating the imported table (rows skipped and empty: rejects) on the ray engine."""
    path = tmp_path / "cc6l.tsv"
    write_import(path, skip={3}, empty_fr={5})
    spec_file = tmp_path / "spec.yaml"
    translate = {
        "backend": "import",
        "sample_fraction": 0.8,
        "import": {"path": str(path)},
        "ray": {"concurrency": concurrency, "batch_tokens": 60},
    }
    spec = {
        "name": "t",
        "dataset": {"ref": "synthetic"},
        "languages": ["de", "fr"],
        "execution": {"engines": {"translate": "ray"}},
        "translate": translate,
    }
    spec_file.write_text(yaml.safe_dump(spec))
    return spec_file


@pytest.mark.slow  # Ray start-up and two actor-pool runs: ~1-3 min on 2 busy cores
def test_ray_job_matches_the_in_process_stage(tmp_path, download, local_ray):
    from ray_jobs import entrypoint

    spec_file = write_spec(tmp_path, concurrency=1)
    assert entrypoint.main(["translate", "--spec", str(spec_file), "--workdir", str(tmp_path)]) == 0
    out = tmp_path / "translate"
    by_ray = contract.Manifest.load(out)

    spec = load_spec(spec_file, ["execution.engines={translate: local}"], tmp_path)
    local = TRANSLATE_STAGE.run(spec, {"download": download}, tmp_path / "local")
    assert by_ray.fingerprint == local.fingerprint
    assert by_ray.files == local.files  # same bytes (sha256) per unit file
    assert (by_ray.samples_in, by_ray.samples_out, by_ray.rejects) == (
        local.samples_in,
        local.samples_out,
        local.rejects,
    )
    assert by_ray.extra == local.extra and by_ray.units == 2
    assert sum(by_ray.rejects.values()) > 0  # rejects travel through the actors too
    assert (
        contract.read_rejects(out)
        .sort_by("key")
        .equals(contract.read_rejects(tmp_path / "local").sort_by("key"))
    )
    assert read_output(out).num_rows == by_ray.samples_out > 0

    # The Ray-made stage is complete for the in-process engine too: nothing is redone.
    mtime = (out / "_manifest.json").stat().st_mtime_ns
    TRANSLATE_STAGE.run(spec, {"download": download}, out)
    assert (out / "_manifest.json").stat().st_mtime_ns == mtime
    # A lost unit is recomputed alone by the Ray job (resume at unit granularity).
    (out / "_units" / "00001.json").unlink()
    (out / "_manifest.json").unlink()
    kept = pq.read_table(out / "00000.parquet")
    assert entrypoint.main(["translate", "--spec", str(spec_file), "--workdir", str(tmp_path)]) == 0
    assert contract.Manifest.load(out).files == local.files
    assert pq.read_table(out / "00000.parquet").equals(kept)
