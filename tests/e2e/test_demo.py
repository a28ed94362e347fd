"""The demo as a user runs it: `mvlp demo` in a subprocess, then its outputs, the no-op re-run,
and a SIGKILL during download followed by a re-run compared with an uninterrupted run."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from mvlp_core.keys import is_valid_key
from mvlp_core.stages.qa.filters import check
from mvlp_core.stages.qa.parser import QAPair

pytestmark = pytest.mark.timeout(
    1800
)  # the demo runs beside the rest of the suite (make test's two processes)

SAMPLES = 2000  # the demo's own size: what the IGLUE margins below were measured on
MVLP = [sys.executable, "-m", "flows.cli"]
ROOT = Path(__file__).resolve().parents[2]


def demo(workdir: Path, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [*MVLP, "demo", "--workdir", str(workdir), "--samples", str(SAMPLES), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **popen,
    )


def finish(proc: subprocess.Popen, timeout: float = 1700) -> str:
    """The demo's output once it ends; past `timeout` (inside the tests' 1,800 s) its whole process
    group is killed, so a hung run does not hold the cores for the rest of the suite."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    assert proc.returncode == 0, out[-3000:]
    return out


def records(workdir: Path) -> dict[str, dict]:
    """key -> {"jpg": bytes, "json": record} over every training shard."""
    out: dict[str, dict] = {}
    for tar_path in sorted((workdir / "shard").glob("shard-*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar:
                key, ext = m.name.split(".", 1)
                entry = out.setdefault(key, {})
                data = tar.extractfile(m).read()
                entry[ext] = json.loads(data) if ext == "json" else data
    return out


def status(workdir: Path) -> dict:
    res = subprocess.run(
        [*MVLP, "status", "--workdir", str(workdir), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(res.stdout)["stages"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("demo-ref")
    out = finish(demo(workdir))
    assert "Shards:" in out and "Text shards:" in out and "mvlp ui" in out
    assert all(f"Pretrain {m} ({m}):" in out for m in ("unigen", "wsmvlp", "ernie"))
    assert "IGLUE leaderboard" in out
    # a clean first run: mvlp's own progress and summary; the libraries' output in the named log
    assert "Traceback" not in out and "Error" not in out and "WARNING" not in out, out[-3000:]
    log = workdir / "logs" / "run.log"
    assert str(log) in out and log.stat().st_size > 0
    return workdir


def test_demo_outputs(reference: Path) -> None:
    stages = status(reference)
    assert all(s["state"] == "complete" for s in stages.values()), stages
    ingest, download, shard = stages["ingest"], stages["download"], stages["shard"]
    # the world holds SAMPLES good rows + 8 bad ones; each bad one is a reject with its reason
    assert ingest["samples_in"] == SAMPLES + 8
    assert ingest["rejects"] == {"duplicate": 1, "empty_caption": 1, "url_scheme": 1}
    assert download["rejects"] == {"http_404": 1, "http_500": 1, "image_decode_error": 2, "timeout": 1}
    assert download["samples_out"] == shard["samples_out"] == SAMPLES
    for s in stages.values():
        assert s["samples_in"] == s["samples_out"] + sum(s["rejects"].values())

    recs = records(reference)
    assert len(recs) == SAMPLES
    langs = {"en", "de", "fr", "cs", "ja", "zh"}
    for key, entry in recs.items():
        rec = entry["json"]
        assert is_valid_key(key) and rec["key"] == key
        assert set(rec["captions"]) == langs and all(rec["captions"].values())
        assert set(rec["words"]) == langs and set(rec["alignments"]) == langs - {"en"}
        for lang, links in rec["alignments"].items():
            assert all(
                0 <= i < len(rec["words"]["en"]) and 0 <= j < len(rec["words"][lang]) for i, j in links
            )
        assert rec["qa"] and all(
            isinstance(check(rec["captions"]["en"], QAPair(q["question"], q["answer"])), QAPair)
            for q in rec["qa"]
        )
        img = Image.open(io.BytesIO(entry["jpg"]))
        assert (rec["image"]["width"], rec["image"]["height"]) == img.size == (64, 64)
        assert rec["provenance"] == {
            "translate": "import:translations.tsv",
            "align": "eflomal:model3",
            "qa": "rules",
        }
    # text-shard: the world's corpora, each planted bad line rejected with its reason
    world = json.loads((reference / "world" / "world.json").read_text(encoding="utf-8"))
    corpora = [*world["text"]["parallel"].values(), *world["text"]["mono"].values()]
    text = stages["text-shard"]
    assert text["samples_out"] == sum(c["good"] for c in corpora)
    assert text["rejects"] == dict(sum((Counter(c["planted"]) for c in corpora), Counter()))
    assert set(text["sampling_weights"]["mono"]) == langs
    assert set(text["sampling_weights"]["parallel"]) == {f"en-{xx}" for xx in langs - {"en"}}
    tars = sorted((reference / "text-shard").glob("text-*.tar"))
    assert text["counts"]["streams"]["mono:zh"]["shards"][1] == tars[-1].name  # the last stream
    aer = stages["align"]["aer"]
    assert set(aer) == langs - {"en"}
    assert sum(aer.values()) / len(aer) < 0.15, aer
    assert max(aer.values()) < 0.25, aer


def test_demo_pretrain_loss_falls(reference: Path) -> None:
    from mvlp_core.model import family_of, load_model

    models = status(reference)["pretrain"]["models"]
    assert {n: m["family"] for n, m in models.items()} == {
        "unigen": "unigen",
        "wsmvlp": "wsmvlp",
        "ernie": "ernie",
    }
    steps = {"unigen": 1500, "wsmvlp": 600, "ernie": 1500}  # the demo's models entry sets its own max_steps
    for name, pre in models.items():
        assert pre["step"] == steps[name] and pre["loss_last"] < 0.75 * pre["loss_first"], (name, pre)
        assert pre["checkpoint"].endswith(f"checkpoint_{steps[name]:08d}")
        assert (reference / "pretrain" / name / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
        assert family_of(reference / "pretrain" / name / "final") == name
    unigen, ws = models["unigen"], models["wsmvlp"]
    # the contrastive loss leaves chance, ln(32) for 2 workers x 16 (it used to sit there)
    assert unigen["loss_itc"] < 0.6 * math.log(32), unigen
    assert load_model(reference / "pretrain" / "unigen" / "final") is not None
    # every objective of the weakly-supervised model is logged, and its image-text contrastive loss
    # leaves chance (2 ln 16: both directions' terms added, as Eq. 1; 2 workers x 8 images)
    assert {"loss_ucl_image", "loss_ucl_text", "loss_vlm", "loss_tlm", "loss_xmlm", "loss_itm"} <= set(ws), ws
    assert ws["loss_ucl_image"] < 0.8 * 2 * math.log(16), ws
    # ERNIE-UniX² trains one task a step: every task is logged over the run (a log window of 50
    # steps may miss one), and its generation tasks learn
    from mvlp_core.train import curves

    rows = curves.read_metrics(reference / "pretrain" / "ernie" / "metrics.jsonl")
    tasks = ("cmcl", "clcl", "itm", "mlm_image", "mlm_text", "plm", "vplm", "mt", "mmmt", "mmmt_mlm")
    logged = {t: [r[f"loss_{t}"] for r in rows if f"loss_{t}" in r] for t in tasks}
    assert all(logged.values()), {t: len(v) for t, v in logged.items()}
    for t in ("plm", "vplm", "mt", "mmmt"):
        assert logged[t][-1] < 0.6 * logged[t][0], (t, logged[t])


# Zero-shot points above chance UniGen must reach in the demo, on English and on the average of the
# other languages (IGLUE's headline). The demo's data differ from run to run (eflomal seeds itself
# from /dev/urandom) and about one draw in three leaves UniGen's contrastive loss stalled (final ITC
# 1.2-1.3 against 0.3); the bars sit under the worst such draw measured, so they catch a model that
# learned nothing (chance) or lost most of its gain, not a bad draw. Every measured run, and the
# tasks reported rather than asserted (XVNLI, MaRVL, xGQA's average) with why: docs/demo-figures.md.
MARGINS = {
    "xgqa": 8.0,
    "xflickrco": 15.0,
    "wit": 15.0,
}  # English, points above chance
AVG_MARGINS = {"xflickrco": 10.0, "wit": 8.0}  # the other languages
IGLUE_CHECKS = [
    pytest.param(task, which, id=f"{task}-{which}")
    for task in MARGINS
    for which in ("en", "avg")
    if which == "en" or task in AVG_MARGINS
]


@pytest.fixture(scope="module")
def iglue(reference: Path) -> dict:
    return status(reference)["iglue-eval"]


def test_demo_iglue_results_and_report(reference: Path, iglue: dict) -> None:
    ig = iglue
    assert ig["state"] == "complete" and set(ig["models"]) == {"unigen", "wsmvlp", "ernie"}
    for name, m in ig["models"].items():
        assert set(m["results"]) == {"xvnli", "xgqa", "marvl", "xflickrco", "wit"}, name
        assert all(len(r["zero-shot"]) >= 3 for r in m["results"].values()), m["results"]
    # IGLUE's layout: one row per model
    rows = (reference / "iglue-eval/tables/xvnli.zero-shot.accuracy.csv").read_text().splitlines()
    assert rows[0] == "model,en,cs,de,fr,ja,zh,avg"
    assert [r.split(",")[0] for r in rows[1:]] == ["unigen", "wsmvlp", "ernie"]
    report = (reference / "report/report.md").read_text(encoding="utf-8")
    assert "## Data" in report and "## Training" in report and "## IGLUE" in report
    assert "| task | metric | model | en | avg | chance |" in report
    assert "![IGLUE by model](iglue_bars.png)" in report and (reference / "report/iglue_bars.png").exists()
    assert all((reference / f"report/loss_curve-{n}.png").exists() for n in ("unigen", "wsmvlp", "ernie"))


@pytest.mark.parametrize(("task", "which"), IGLUE_CHECKS)
def test_demo_iglue_beats_chance(iglue: dict, task: str, which: str) -> None:
    res = iglue["models"]["unigen"]["results"][task]
    scores = res["zero-shot"]
    others = [v for lang, v in scores.items() if lang != "en"]
    score = scores["en"] if which == "en" else sum(others) / len(others)
    assert score >= res["chance"] + (MARGINS if which == "en" else AVG_MARGINS)[task], res


# The weakly-supervised model's English, the bar: 10 points above chance. Its other languages
# are reported as measured (README), not asserted.
@pytest.mark.parametrize("task", ["xvnli", "xgqa", "xflickrco"])
def test_demo_weakly_supervised_english_beats_chance(iglue: dict, task: str) -> None:
    res = iglue["models"]["wsmvlp"]["results"][task]
    assert res["zero-shot"]["en"] >= res["chance"] + 10.0, res


def test_noop_rerun(reference: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in reference.rglob("_manifest.json")}
    out = finish(demo(reference))
    assert "nothing to recompute" in " ".join(out.split())
    assert {p: p.stat().st_mtime_ns for p in reference.rglob("_manifest.json")} == before


@pytest.mark.slow  # a second demo run to the shards (~2 min); tests/chaos kills every stage the same way
def test_kill_during_download_then_resume(reference: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "killed"
    proc = demo(workdir, "--to", "shard")
    stats_dir = workdir / "download" / "webdataset"
    deadline = time.monotonic() + 300
    # kill once img2dataset has finished at least one shard but the stage is not complete
    while not list(stats_dir.glob("*_stats.json")):
        assert proc.poll() is None, "demo ended before download started"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not (workdir / "download" / "_manifest.json").exists()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finish(demo(workdir, "--to", "shard"))
    got, want = records(workdir), records(reference)
    assert sorted(got) == sorted(want)
    for key in want:
        a, b = got[key], want[key]
        assert a["jpg"] == b["jpg"], key
        assert a["json"]["captions"] == b["json"]["captions"]
        assert a["json"]["qa"] == b["json"]["qa"]
        assert a["json"]["source"] == b["json"]["source"]


def test_shards_are_reproducible(reference: Path, tmp_path: Path) -> None:
    from mvlp_core import pipeline

    spec = pipeline.load_saved_spec(reference)
    before = pipeline.stage_state(spec, "shard")
    first = {f: v["sha256"] for f, v in pipeline.run_stage(spec, "shard").files.items()}
    again = pipeline.run_stage(spec, "shard", force=True)
    assert {f: v["sha256"] for f, v in again.files.items()} == first
    assert pipeline.stage_state(spec, "shard")["samples_out"] == before["samples_out"]
