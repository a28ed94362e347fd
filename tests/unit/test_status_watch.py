"""`mvlp status --watch`: a live table refreshed until every stage is terminal (or N refreshes),
from the workdir; the Ray job writing a stage; and the Ray job dashboard artifact's text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows import cli
from flows.job_client import JobStatus
from flows.submitted import is_submitted, status_markdown
from mvlp_core import joblock, pipeline
from mvlp_core.spec import load_spec
from mvlp_core.synth.world import ensure_world

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("run")
    spec = load_spec("demo", ["dataset.samples=8"], workdir)
    ensure_world(workdir / "world", 8, 0)
    pipeline.save_spec(spec)
    pipeline.run_stage(spec, "ingest")
    return workdir


def test_watch_stops_after_max_iterations(ingested: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "status",
            "--workdir",
            str(ingested),
            "--watch",
            "--max-iterations",
            "2",
            "--interval",
            "0.05",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "160", "PATH": ""},
    )
    assert out.returncode == 0, out.stderr
    assert "ingest" in out.stdout and "complete" in out.stdout and "missing" in out.stdout


def test_status_names_the_ray_job_writing_a_stage(ingested: Path, monkeypatch) -> None:
    """A stage whose Ray job holds its lock (one a killed run left running): `mvlp status` names
    the job, in the table's notes and in --json; once the job is gone, nothing is said."""
    import io

    from rich.console import Console
    from typer.testing import CliRunner

    printed = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=printed, width=200))
    runner = CliRunner()
    with joblock.holding(ingested, "download", "mvlp-download-demo-0ld0rph4"):
        shown = runner.invoke(cli.app, ["status", "--workdir", str(ingested)])
        as_json = runner.invoke(cli.app, ["status", "--workdir", str(ingested), "--json"])
    assert shown.exit_code == 0, shown.output
    assert "download is being written by Ray job mvlp-download-demo-0ld0rph4" in printed.getvalue()
    stages = json.loads(as_json.output)["stages"]
    assert stages["download"]["written_by"]["job"] == "mvlp-download-demo-0ld0rph4"
    assert "written_by" not in stages["ingest"]
    after = runner.invoke(cli.app, ["status", "--workdir", str(ingested), "--json"])
    assert "written_by" not in json.loads(after.output)["stages"]["download"]


def test_watch_stops_when_every_stage_is_terminal(monkeypatch) -> None:
    reads = iter(
        [
            ({"name": "run", "terminal": False}, {"ingest": {"state": "running"}}),
            (
                {"name": "run", "terminal": False},
                {"ingest": {"state": "completed"}, "download": {"state": "running"}},
            ),
            (
                {"name": "run", "terminal": True, "state_name": "Completed"},
                {"ingest": {"state": "completed"}, "download": {"state": "completed"}},
            ),
        ]
    )
    calls = []

    def read():
        calls.append(1)
        return next(reads)

    monkeypatch.setattr(cli.time, "sleep", lambda s: None)
    top = cli._watch(read, interval=1.0, max_iterations=None)
    assert len(calls) == 3 and top["state_name"] == "Completed"


def test_ray_job_artifact_links_the_dashboard() -> None:
    history = [
        JobStatus("mvlp-pretrain-demo-1", "PENDING", "Initializing"),
        JobStatus("mvlp-pretrain-demo-1", "FAILED", "Failed", "AppFailed exit code 1", "http://head:8265"),
    ]
    md = status_markdown("pretrain", "rayjob", history)
    assert "[Ray dashboard](http://head:8265)" in md
    assert "| 2 | FAILED | Failed | AppFailed exit code 1 |" in md


def test_only_stages_on_a_ray_engine_leave_the_process() -> None:
    spec = load_spec("demo", ["execution.submit=rayjob"])
    assert is_submitted(spec, "pretrain")  # its default engine is ray
    assert not is_submitted(spec, "shard")  # shard has only the local engine
    assert not is_submitted(spec, "translate")  # local unless execution.engines says ray
    assert is_submitted(
        load_spec("demo", ["execution.submit=rayjob", "execution.engines={translate: ray}"]), "translate"
    )
    assert not is_submitted(load_spec("demo"), "pretrain")  # submit: here
