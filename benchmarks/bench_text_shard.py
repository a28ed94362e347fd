"""text-shard throughput on real text: Multi30K en–de train (29,000 line pairs, Moses-style gz
files) through the whole stage (decode, filters, normalised dedup, tars, rejects, manifest)
against a bare sharder that only reads both files and writes one `KEY.json` per pair into a tar,
so the ratio is the cost of the stage's checks and bookkeeping."""

from __future__ import annotations

import io
import json
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks._metrics import result
from mvlp_core import pipeline
from mvlp_core.stages.text_shard.readers import open_binary
from tests.testkit.text_specs import multi30k, multi30k_corpus, text_spec


def _stage(workdir: Path) -> tuple[float, int]:
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = multi30k_corpus(min_words=3, max_words=40, max_length_ratio=2.0)
    spec = text_spec(workdir, {"samples_per_shard": 10000, "corpora": [corpus]})
    t0 = time.perf_counter()
    manifest = pipeline.run_stage(spec, "text-shard", force=True)
    return time.perf_counter() - t0, manifest.samples_in


def _bare(data: Path, workdir: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    with (
        open_binary(str(data / "train.en.gz")) as en,
        open_binary(str(data / "train.de.gz")) as de,
        tarfile.open(workdir / "bare.tar", "w") as tar,
    ):
        for n, (a, b) in enumerate(zip(en, de), 1):
            rec = {"key": f"m-{n:010d}", "src": a.decode().strip(), "tgt": b.decode().strip()}
            data_ = json.dumps(rec, ensure_ascii=False).encode()
            info = tarfile.TarInfo(f"m-{n:010d}.json")
            info.size = len(data_)
            tar.addfile(info, io.BytesIO(data_))
    return time.perf_counter() - t0, n


def run(runs: int = 3) -> list[dict]:
    data = multi30k()
    stage, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            seconds, lines = _stage(Path(tmp) / f"s{i}")
            stage.append(lines / seconds)
            seconds, lines = _bare(data, Path(tmp))
            bare.append(lines / seconds)
    value, base = statistics.median(stage), statistics.median(bare)
    baseline = "bare sharder (read both gz files, one KEY.json per pair into a tar)"
    notes = "29,000 pairs; stage includes planning pass, filters, normalised dedup, rejects parquet, manifest"
    return [result("text-shard Multi30K en-de lines/s", value, "lines/s", baseline, base, runs, True, notes)]
