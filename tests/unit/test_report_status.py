"""The report stage over upstream manifests (data, training, IGLUE sections, figures copied and
linked relatively, no-op re-run), and `mvlp status --json` carrying iglue-eval's results."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from mvlp_core import contract, pipeline
from mvlp_core.spec import load_spec
from mvlp_core.stages.report import REPORT
from mvlp_core.stages.report import STAGE as REPORT_STAGE

RESULTS = {
    "xvnli": {"zero-shot": {"en": 61.5, "de": 48.25}, "metric": "accuracy", "chance": 33.33},
    "xflickrco": {"zero-shot": {"en": 40.0, "de": 30.0}, "metric": "ir_r1", "chance": 2.08},
}


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def run(tmp_path: Path):
    """A workdir whose upstream stages each hold a manifest (figures, extras as the stages write)."""
    spec = load_spec("demo", ["models=null"], workdir=tmp_path)
    pipeline.save_spec(spec)
    for i, name in enumerate(REPORT_STAGE.deps):
        folder = pipeline.stage_dir(spec, name)
        folder.mkdir(parents=True)
        extra: dict = {}
        if name == "pretrain":
            extra = {"step": 60, "loss_first": 26.3, "loss_last": 8.8, "samples_per_second": 24.4}
            (folder / "loss_curve.png").write_bytes(_png())
        if name == "iglue-eval":
            extra = {"results": RESULTS, "splits": {"xflickrco": {"zero-shot": {"de": "dev", "en": "test"}}}}
            (folder / "iglue_bars.png").write_bytes(_png())
            (folder / "tables").mkdir()
            (folder / "tables/xvnli.zero-shot.accuracy.csv").write_text(
                "model,en,de,avg\ndemo,61.5,48.25,48.25\n"
            )
        rejects = {"http_404": 1, "timeout": 2} if name == "download" else {}
        contract.Manifest(name, f"fp{i}", {}, 100, 100 - sum(rejects.values()), rejects, 1.5, 1, extra).save(
            folder
        )
    return spec


def test_report_collects_data_training_and_iglue(run) -> None:
    out = pipeline.stage_dir(run, "report")
    m = REPORT_STAGE.run(run, pipeline.inputs_for(run, "report"), out)
    text = (out / REPORT).read_text(encoding="utf-8")
    assert "| download | 100 | 97 | timeout: 2, http_404: 1 | 1.5 |" in text
    assert "| loss_last | 8.8 |" in text and "![pretrain loss](loss_curve.png)" in text
    assert "| xvnli | zero-shot | accuracy | 33.33 | 61.5 | 48.25 | 28.17 |  |" in text
    assert "| xflickrco | zero-shot | ir_r1 | 2.08 | 40 | 30 | 37.92 | dev: de |" in text  # scored on dev
    assert "### xvnli.zero-shot.accuracy" in text and "| demo | 61.5 | 48.25 | 48.25 |" in text
    assert "![IGLUE per language](iglue_bars.png)" in text
    assert (out / "loss_curve.png").read_bytes() == _png() and (out / "iglue_bars.png").exists()
    assert set(m.files) == {REPORT, "loss_curve.png", "iglue_bars.png"} and m.samples_in == 0
    assert pipeline.stage_state(run, "report")["state"] == "complete"
    assert REPORT_STAGE.run(run, pipeline.inputs_for(run, "report"), out).created == m.created


def test_report_needs_its_inputs(run) -> None:
    (pipeline.stage_dir(run, "iglue-eval") / contract.MANIFEST).unlink()
    with pytest.raises(contract.StageError, match="iglue-eval"):
        REPORT_STAGE.run(run, pipeline.inputs_for(run, "report"), pipeline.stage_dir(run, "report"))


def test_status_json_shows_iglue_results(run) -> None:
    res = CliRunner().invoke(app, ["status", "--workdir", str(run.workdir), "--json"])
    assert res.exit_code == 0, res.output
    stages = json.loads(res.output)["stages"]
    assert set(stages) == set(pipeline.names())  # sort_keys
    assert stages["iglue-eval"]["results"] == RESULTS
    assert stages["iglue-eval"]["results"]["xvnli"]["zero-shot"]["de"] == 48.25
    assert stages["report"]["state"] == "missing"
