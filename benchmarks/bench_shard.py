"""shard stage throughput vs `cp` of the same bytes (the disk's limit on this machine).

The stage joins download, translate, align and qa outputs per key, reads each image out of
img2dataset's tars, writes `KEY.jpg` + `KEY.json`, hashes and fsyncs; `cp` only copies the
finished tars.
The two alternate, one pair after another, and the ratio is the median of the pairs' ratios: this
VM's speed drifts within minutes, which a ratio of two medians taken minutes apart would carry.
One more run of the stage, timed by phase, says where its time goes.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from benchmarks._metrics import result
from benchmarks._world import run_stages, served_run
from mvlp_core import atomic, contract, pipeline, tarmember
from mvlp_core.cpus import available_cpus
from mvlp_core.spec import ShardSpec
from mvlp_core.stages import shard

SAMPLES = 1500
SIZES = {64: 90, 224: 95}  # image side -> JPEG quality: the demo's, and production's
PRODUCTION_UNIT = 1000  # ingest.shard_size's library default: samples per download shard (unit)
PAIRS = 7  # stage and cp, alternating (each about a second)
POOLED_UNITS = 32  # production units for the worker-process rows: enough to repay the workers' start
# (owner, attribute, label): what the phase breakdown times, each phase less the phases inside it
PHASES = [
    (shard._Joined, "__init__", "join of the upstream parquet files"),
    (shard, "iter_images", "reading img2dataset's tars"),
    (tarmember.TarWriter, "add", "tar headers and member lists"),
    (tarmember.TarWriter, "_flush", "writing and hashing tar pieces"),
    (shard._Joined, "record", "building records"),
    (shard.orjson, "dumps", "records to JSON"),
    (atomic, "_fsync_file", "fsync of files"),
    (contract, "_commit_unit", "unit commits (rejects, unit records)"),
    (contract, "_reset", "emptying the stage folder"),
    (shard, "_duplicate_images", "duplicate-image scan"),
]


@contextlib.contextmanager
def timed_phases(
    phases: list[tuple[Any, str, str]], clock: Callable[[], float] = time.perf_counter
) -> Iterator[dict[str, float]]:
    """Seconds spent in each of `phases` ((owner, attribute, label): the function timed) while
    the block runs, a phase called inside another counted in the inner one only."""
    spent: dict[str, float] = defaultdict(float)
    inner: list[float] = []  # per open phase: seconds its nested phases took

    def timed(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            inner.append(0.0)
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                took = clock() - t0
                spent[label] += took - inner.pop()
                if inner:
                    inner[-1] += took

        return wrapper

    with contextlib.ExitStack() as stack:
        for owner, name, label in phases:
            stack.enter_context(mock.patch.object(owner, name, timed(getattr(owner, name), label)))
        yield spent


def _copy(tars: list[Path], dest: Path) -> float:
    """Seconds to `cp` the tars into an empty `dest` and `sync` its file system."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    t0 = time.perf_counter()
    subprocess.run(["cp", *map(str, tars), str(dest)], check=True)
    subprocess.run(["sync", "-f", str(dest)], check=True)
    return time.perf_counter() - t0


def _one_size(size: int, quality: int, runs: int, samples: int = SAMPLES, unit: int | None = None) -> dict:
    """The demo world's units (ingest.shard_size 64), or with `unit` production's: download shards
    of `unit` samples and the library's tar size (shard.samples_per_shard 1,000)."""
    with tempfile.TemporaryDirectory(prefix="mvlp-bench-shard-") as tmp:
        work = Path(tmp)
        overrides = [
            # the demo world's units get tars of 500; production's the library's defaults (the demo
            # spec sets shard.samples_per_shard to 100, so it is set back to the library's here)
            *(
                [f"ingest.shard_size={unit}", f"shard.samples_per_shard={ShardSpec().samples_per_shard}"]
                if unit
                else ["shard.samples_per_shard=500"]
            ),
            f"dataset.limit={samples}",
            f"download.image_size={size}",
            f"download.encode_quality={quality}",
        ]
        with served_run(work, samples, overrides) as spec:
            run_stages(spec, ["ingest", "download", "translate", "align", "qa", "shard"])
            tars = sorted((work / "shard").glob("shard-*.tar"))

            def stage() -> float:
                t0 = time.perf_counter()
                pipeline.run_stage(spec, "shard", force=True)
                return time.perf_counter() - t0

            pairs = [(stage(), _copy(tars, work / "copy")) for _ in range(max(runs, PAIRS))]
            with timed_phases(PHASES) as spent:
                total = stage()
        units = len(list((work / "download").glob("samples-*.parquet")))
        size_mb = sum(t.stat().st_size for t in tars) / 2**20
    stage_s = statistics.median(s for s, _ in pairs)
    cp_s = statistics.median(c for _, c in pairs)
    phases = ", ".join(f"{label} {1000 * s:.0f}" for label, s in sorted(spent.items(), key=lambda x: -x[1]))
    name = "shard_vs_cp" if size == 64 else f"shard_vs_cp_{size}px"
    return result(
        f"{name}_{unit}_per_unit" if unit else name,
        size_mb / stage_s,
        "MB/s",
        "cp + sync of the same tars",
        size_mb / cp_s,
        len(pairs),
        True,
        f"{samples} samples, {size} px JPEG (quality {quality}; the synthetic world's images, upscaled"
        f" where {size} > 96), {size_mb:.1f} MB of tars, 5 languages, QA; {units} download shards"
        f" (the stage's units), {len(tars)} tars; stage {stage_s:.2f} s, cp {cp_s:.3f} s (medians);"
        f" ratio: median of {len(pairs)} alternating pairs; one run by phase ({total * 1000:.0f} ms):"
        f" {phases}, the rest {1000 * (total - sum(spent.values())):.0f} ms",
        ratio=statistics.median(c / s for s, c in pairs),
    )


def _processes(runs: int, units: int = POOLED_UNITS) -> list[dict]:
    """The stage with its units in worker processes (shard.processes: one per CPU here) against
    the same stage in one process and against `cp` + `sync`, alternating, on production units."""
    workers = available_cpus()
    with tempfile.TemporaryDirectory(prefix="mvlp-bench-shard-") as tmp:
        work = Path(tmp)
        overrides = [
            f"ingest.shard_size={PRODUCTION_UNIT}",
            f"shard.samples_per_shard={ShardSpec().samples_per_shard}",
            f"dataset.limit={units * PRODUCTION_UNIT}",
            "download.image_size=224",
            "download.encode_quality=95",
        ]
        with served_run(work, units * PRODUCTION_UNIT, overrides) as spec:
            run_stages(spec, ["ingest", "download", "translate", "align", "qa", "shard"])
            tars = sorted((work / "shard").glob("shard-*.tar"))

            def stage(processes: int) -> float:
                shard_spec = spec.shard.model_copy(update={"processes": processes})
                t0 = time.perf_counter()
                pipeline.run_stage(spec.model_copy(update={"shard": shard_spec}), "shard", force=True)
                return time.perf_counter() - t0

            triples = [(stage(1), stage(workers), _copy(tars, work / "copy")) for _ in range(max(runs, 3))]
        size_mb = sum(t.stat().st_size for t in tars) / 2**20
    one, pooled, cp = (statistics.median(t[i] for t in triples) for i in range(3))
    notes = (
        f"{units * PRODUCTION_UNIT} samples, 224 px JPEG (quality 95), {size_mb:.0f} MB of tars, {units}"
        f" download shards of {PRODUCTION_UNIT} (the stage's units); {workers} worker processes (one per"
        f" CPU) against one process: {pooled:.2f} s and {one:.2f} s, cp + sync {cp:.3f} s (medians of"
        f" {len(triples)} alternating triples); a worker takes about 0.4 s to start (its imports)"
    )
    return [
        result(
            f"shard_{workers}_processes_vs_1",
            pooled,
            "s",
            "the stage in one process",
            one,
            len(triples),
            False,
            notes,
            ratio=statistics.median(t[1] / t[0] for t in triples),
        ),
        result(
            f"shard_vs_cp_224px_{units}_units_{workers}_processes",
            size_mb / pooled,
            "MB/s",
            "cp + sync of the same tars",
            size_mb / cp,
            len(triples),
            True,
            notes,
            ratio=statistics.median(t[2] / t[1] for t in triples),
        ),
    ]


def run(runs: int = 3) -> list[dict]:
    rows = [_one_size(size, quality, runs) for size, quality in SIZES.items()]
    return [
        *rows,
        _one_size(224, 95, runs, samples=3 * PRODUCTION_UNIT, unit=PRODUCTION_UNIT),
        *_processes(runs),
    ]


if __name__ == "__main__":
    print(_one_size(224, 95, 3, samples=3 * PRODUCTION_UNIT, unit=PRODUCTION_UNIT))
    print(_processes(3))
