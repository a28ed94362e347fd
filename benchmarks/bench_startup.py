"""The fixed cost of `mvlp run`: a command's wall time less the work of the stage it ran, here
`mvlp demo --to ingest --force` on a workdir whose synthetic world exists (the ingest stage's own
seconds, from its manifest, are subtracted). Measured twice: with nothing running (the run starts
its own short-lived Prefect server) and with a Prefect server already up (as `mvlp ui` leaves one).
The baseline is the issue's budget for it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks._metrics import result
from flows.prefect_api import ShortLivedServer
from mvlp_core import contract

BUDGET_SECONDS = 5.0  # issue 22: a small run should not cost twice the tool it wraps


def _fixed_cost(workdir: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "flows.cli", "demo", "--workdir", str(workdir), "--to", "ingest", "--force"],
        check=True,
        capture_output=True,
        env=env,
    )
    wall = time.perf_counter() - t0
    return wall - contract.Manifest.load(workdir / "ingest").seconds


def run(runs: int = 3) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with tempfile.TemporaryDirectory(prefix="mvlp-bench-startup-") as tmp:
        workdir = Path(tmp) / "demo"
        _fixed_cost(workdir, env)  # the synthetic world, once
        alone = [_fixed_cost(workdir, env) for _ in range(runs)]
        t0 = time.perf_counter()
        server = ShortLivedServer(Path(tmp) / "server.log")
        try:
            server.wait(180)
            healthy = time.perf_counter() - t0
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"{server.url}/admin/version") as response:
                response.read()
            first_call = time.perf_counter() - t0
            served = [_fixed_cost(workdir, {**env, "PREFECT_API_URL": server.url}) for _ in range(runs)]
        finally:
            server.stop()
    note = "`mvlp demo --to ingest --force` wall time less the ingest stage's seconds; the demo spec's synthetic world"
    return [
        result(
            "run_fixed_cost",
            statistics.median(alone),
            "s",
            "budget",
            BUDGET_SECONDS,
            runs,
            False,
            note + "; no Prefect server running (the run starts its own). Where it goes: the"
            f" server alone (same command) answered its health check {healthy:.2f} s after its start"
            f" and its first routed call took {first_call:.2f} s (FastAPI builds its route table on"
            " the first request)",
        ),
        result(
            "run_fixed_cost_server_up",
            statistics.median(served),
            "s",
            "budget",
            BUDGET_SECONDS,
            runs,
            False,
            note + "; a Prefect server already running (as `mvlp ui` leaves one)",
        ),
    ]


if __name__ == "__main__":
    print(run(1))
