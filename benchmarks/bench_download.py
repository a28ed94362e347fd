"""download stage vs the raw img2dataset CLI: same URL list, same loopback server, same settings.

The stage adds its input files, the fetch guard (a policy-checking urllib opener in every worker),
the per-unit commit and the manifest; the target is at most 5% more wall time than the CLI. Three
comparisons, since the two start differently:
- cold: the stage in a fresh interpreter (`run_stage` alone, no Prefect) vs the whole CLI;
- warm: the stage in a process that has run it before (a flow worker, `mvlp run` over the whole
  DAG) vs the CLI less its start-up (interpreter and imports, measured as `img2dataset --help`);
- the warm stage with the guard's policy checks off, to show what they cost.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._metrics import result
from benchmarks._world import median_seconds, run_stages, served_run
from mvlp_core import pipeline
from mvlp_core.stages.download import INPUT_DIR

SAMPLES = 1500
_CLI = str(Path(sys.executable).parent / "img2dataset")


def _cli(spec, input_dir: Path, out: Path) -> None:
    d = spec.download
    shutil.rmtree(out, ignore_errors=True)
    args = {
        "url_list": input_dir,
        "input_format": "parquet",
        "url_col": "url",
        "caption_col": "caption",
        "output_folder": out,
        "output_format": "webdataset",
        "image_size": d.image_size,
        "resize_mode": d.resize_mode,
        "encode_quality": d.encode_quality,
        "encode_format": "jpg",
        "min_image_size": d.min_image_size,
        "timeout": d.timeout,
        "retries": d.retries,
        "processes_count": d.processes,
        "thread_count": d.threads,
        "number_sample_per_shard": spec.ingest.shard_size,
        "distributor": "multiprocessing",
        "extract_exif": False,
        "enable_wandb": False,
        "compute_hash": "sha256",
    }
    cmd = [_CLI, *(f"--{k}={v}" for k, v in args.items())]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})


def _cli_startup() -> None:
    """What the CLI spends before any work (interpreter, imports): the stage runs in a process
    that has paid it already, so the fair baseline is the CLI's time less this."""
    subprocess.run(
        [_CLI, "--help"], check=True, capture_output=True, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    )


def _stage_cold(spec_file: Path) -> None:
    code = (
        "import pickle, sys; from mvlp_core import pipeline; "
        "pipeline.run_stage(pickle.loads(open(sys.argv[1], 'rb').read()), 'download', force=True)"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(spec_file)],
        check=True,
        capture_output=True,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
    )


def run(runs: int = 3) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="mvlp-bench-download-") as tmp:
        work = Path(tmp)
        with served_run(work, SAMPLES, ["ingest.shard_size=500", f"dataset.limit={SAMPLES}"]) as spec:
            run_stages(spec, ["ingest"])
            download = work / "download"

            def stage(guard: bool) -> None:
                s = spec.model_copy(
                    update={"download": spec.download.model_copy(update={"guard_fetch": guard})}
                )
                pipeline.run_stage(s, "download", force=True)

            stage(True)  # warm-up; also writes the input files the CLI reads
            inputs = work / "cli-input"
            shutil.copytree(download / INPUT_DIR, inputs)
            cli = median_seconds(lambda: _cli(spec, inputs, work / "cli-out"), runs)
            startup = median_seconds(_cli_startup, runs)
            spec_file = work / "spec.pickle"
            spec_file.write_bytes(pickle.dumps(spec))
            cold = median_seconds(lambda: _stage_cold(spec_file), runs)
            guarded = median_seconds(lambda: stage(True), runs)
            unguarded = median_seconds(lambda: stage(False), runs)
    cores = os.cpu_count() or 1
    note = f"{SAMPLES} synthetic 96 px JPEGs from a loopback server, resized to 64 px"
    return [
        result(
            "download_vs_img2dataset",
            cold,
            "s",
            "img2dataset CLI",
            cli,
            runs,
            False,
            note + "; stage with the fetch guard, each run in a fresh interpreter like the CLI",
        ),
        result(
            "download_warm_vs_img2dataset",
            guarded,
            "s",
            "img2dataset CLI",
            cli,
            runs,
            False,
            note + "; stage with the fetch guard, in a process that ran it before",
        ),
        result(
            "download_vs_img2dataset_work",
            guarded,
            "s",
            "img2dataset CLI less its start-up",
            cli - startup,
            runs,
            False,
            note + f"; warm stage with the fetch guard; CLI start-up (`img2dataset --help`) {startup:.2f} s",
        ),
        result(
            "download_guard_off_vs_img2dataset",
            unguarded,
            "s",
            "img2dataset CLI less its start-up",
            cli - startup,
            runs,
            False,
            note + "; warm stage without the fetch guard's policy checks",
        ),
        result(
            "download_images_per_second_per_core",
            SAMPLES / guarded / cores,
            "images/s/core",
            "img2dataset CLI",
            SAMPLES / cli / cores,
            runs,
            True,
            note,
        ),
    ]
