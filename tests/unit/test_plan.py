"""`mvlp plan`: each stage's engine, resources, inputs with sizes and models, then every check
that needs no compute, one line per problem; `mvlp run` refuses to start on the same problems."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from mvlp_core import contract, plan
from mvlp_core.pipeline import names
from mvlp_core.spec import load_spec
from mvlp_core.synth.world import write_world

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_world(tmp_path / "world", samples=30, seed=0)
    return tmp_path


def test_a_written_world_passes_and_every_stage_says_where_it_runs(workdir: Path) -> None:
    spec = load_spec("demo", workdir=workdir)
    assert plan.problems(spec, names()) == []
    shown = {s.name: s for s in (plan.stage_plan(spec, n) for n in names())}
    assert set(shown) == set(names())
    ingest_reads = shown["ingest"].reads
    assert ingest_reads == [
        f"{workdir / 'world' / 'urls.tsv'} ({plan.human((workdir / 'world' / 'urls.tsv').stat().st_size)})"
    ]
    assert "global batch 32" in shown["pretrain"].resources  # 2 workers x 16, the demo's
    assert shown["pretrain"].engine == "ray" and shown["ingest"].engine == "local"


def test_each_missing_input_is_one_line_naming_the_field(workdir: Path) -> None:
    (workdir / "world" / "text" / "mono.ja.txt").unlink()
    (workdir / "world" / "gold_alignments.jsonl").unlink()
    spec = load_spec("demo", workdir=workdir)
    found = plan.problems(spec, names())
    assert len(found) == 2, found
    assert any(
        line.startswith("text-shard:") and "mono.ja.txt" in line and "text.corpora" in line for line in found
    )
    assert any(line.startswith("align:") and "align.gold" in line for line in found)
    assert all("\n" not in line for line in found)
    with pytest.raises(contract.StageError, match=r"\(and 1 more: `mvlp plan SPEC` lists them\)"):
        plan.require(spec, names())
    plan.require(spec, ["ingest", "download"])  # the problems belong to other stages


def test_a_model_the_offline_cache_lacks_is_a_problem(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-cache")))
    spec = load_spec("demo", ["model.checkpoint=no-such-org/no-such-model"], workdir=workdir)
    assert plan.resolve_model("no-such-org/no-such-model")[0] is False
    found = plan.problems(spec, ["pretrain"])
    assert any("no-such-org/no-such-model" in line and "unigen.json" in line for line in found), found
    assert plan.resolve_model(str(workdir))[0] is True  # a local folder always resolves


def test_cli_lists_problems_and_exits_2(workdir: Path) -> None:
    (workdir / "world" / "urls.tsv").unlink()
    result = runner.invoke(app, ["plan", "demo", "--workdir", str(workdir), "--json"])
    assert result.exit_code == 2, result.output
    out = json.loads(result.output)
    assert [s["name"] for s in out["stages"]] == names()
    assert len(out["problems"]) == 1 and "dataset.url_list" in out["problems"][0]
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "plan",
            "demo",
            "--workdir",
            str(workdir),
            "--only",
            "text-shard",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert (
        "text-shard (missing): local engine" in ok.stdout and "All checks pass for 1 stage(s)." in ok.stdout
    )


def test_before_the_world_is_written_its_files_are_not_problems(tmp_path: Path) -> None:
    spec = load_spec("demo", workdir=tmp_path)
    assert plan.problems(spec, names()) == []
    assert "written by `mvlp run`" in plan.world_note(spec)
    elsewhere = load_spec("demo", ["align.gold=/nonexistent/gold.jsonl"], workdir=tmp_path)
    assert any("/nonexistent/gold.jsonl" in line for line in plan.problems(elsewhere, ["align"]))
