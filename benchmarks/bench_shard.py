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
SIZES = {64: 90, 224: 95}  # image side -> JPEG quality: the demo's, and production's
PRODUCTION_UNIT = 1000  # ingest.shard_size's library default: samples per download shard (unit)


def _one_size(size: int, quality: int, runs: int, samples: int = SAMPLES, unit: int | None = None) -> dict:
    """The demo world's units (ingest.shard_size 64), or with `unit` production's: download shards
    of `unit` samples and the library's tar size (shard.samples_per_shard 1,000)."""
    with tempfile.TemporaryDirectory(prefix="mvlp-bench-shard-") as tmp:
        work = Path(tmp)
        overrides = [
            # the demo world's units get tars of 500; production's the library's defaults
            *([f"ingest.shard_size={unit}"] if unit else ["shard.samples_per_shard=500"]),
            f"dataset.limit={samples}",
            f"download.image_size={size}",
            f"download.encode_quality={quality}",
        ]
        with served_run(work, samples, overrides) as spec:
            run_stages(spec, ["ingest", "download", "translate", "align", "qa"])
            stage = median_seconds(lambda: pipeline.run_stage(spec, "shard", force=True), runs)
        tars = sorted((work / "shard").glob("shard-*.tar"))
        units = len(list((work / "download").glob("samples-*.parquet")))
        size_mb = sum(t.stat().st_size for t in tars) / 2**20

        def copy() -> None:
            dest = work / "copy"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            subprocess.run(["cp", *map(str, tars), str(dest)], check=True)
            subprocess.run(["sync", "-f", str(dest)], check=True)

        cp = median_seconds(copy, runs)
    name = "shard_vs_cp" if size == 64 else f"shard_vs_cp_{size}px"
    return result(
        f"{name}_{unit}_per_unit" if unit else name,
        size_mb / stage,
        "MB/s",
        "cp + sync of the same tars",
        size_mb / cp,
        runs,
        True,
        f"{samples} samples, {size} px JPEG (quality {quality}; the synthetic world's images, upscaled"
        f" where {size} > 96), {size_mb:.1f} MB of tars, 5 languages, QA; {units} download shards"
        f" (the stage's units); stage {stage:.2f} s, cp {cp:.3f} s",
    )


def run(runs: int = 3) -> list[dict]:
    rows = [_one_size(size, quality, runs) for size, quality in SIZES.items()]
    return [*rows, _one_size(224, 95, runs, samples=3 * PRODUCTION_UNIT, unit=PRODUCTION_UNIT)]
