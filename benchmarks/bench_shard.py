"""shard stage throughput vs `cp` of the same bytes (the disk's limit on this machine).

The stage joins download, translate, align and qa outputs per key, reads each image out of
img2dataset's tars, writes `KEY.jpg` + `KEY.json` and fsyncs; `cp` only copies the finished tars.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks._metrics import result
from benchmarks._world import median_seconds, run_stages, served_run
from mvlp_core import pipeline

SAMPLES = 1500


def run(runs: int = 3) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="mvlp-bench-shard-") as tmp:
        work = Path(tmp)
        with served_run(work, SAMPLES, [f"dataset.limit={SAMPLES}", "shard.samples_per_shard=500"]) as spec:
            run_stages(spec, ["ingest", "download", "translate", "align", "qa"])
            stage = median_seconds(lambda: pipeline.run_stage(spec, "shard", force=True), runs)
        tars = sorted((work / "shard").glob("shard-*.tar"))
        size_mb = sum(t.stat().st_size for t in tars) / 2**20

        def copy() -> None:
            dest = work / "copy"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            subprocess.run(["cp", *map(str, tars), str(dest)], check=True)
            subprocess.run(["sync", "-f", str(dest)], check=True)

        cp = median_seconds(copy, runs)
    return [
        result(
            "shard_vs_cp",
            size_mb / stage,
            "MB/s",
            "cp + sync of the same tars",
            size_mb / cp,
            runs,
            True,
            f"{SAMPLES} samples, {size_mb:.1f} MB of tars, 5 languages, QA",
        ),
    ]
