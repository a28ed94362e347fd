"""Training metrics reach Prometheus through Ray's metrics agent: rank 0's gauges (loss per task,
samples/s, MFU, step) are served on the node's metrics export port, where the cluster scrapes."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # a Ray node with its metrics agent: ~15 s to start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def test_rank_zero_gauges_are_exported_for_prometheus() -> None:
    port = _free_port()
    ray.init(
        num_cpus=1,
        include_dashboard=True,
        log_to_driver=False,
        _metrics_export_port=port,
        _system_config={"metrics_report_interval_ms": 200},
    )
    try:

        @ray.remote
        def rank_zero() -> None:
            from ray_jobs.train_metrics import TrainGauges

            TrainGauges("cc3m-base").set(
                {
                    "step": 500,
                    "loss": 4.25,
                    "loss_cap": 2.5,
                    "loss_itc": 1.75,
                    "samples_per_second": 850.0,
                    "mfu": 0.31,
                }
            )

        ray.get(rank_zero.remote())
        wanted = ("ray_mvlp_train_loss{", 'task="cap"', "2.5")
        text = ""
        for _ in range(150):  # Ray's agent exports on its own interval: wait for the series, not a time
            text = _scrape(port)
            if any(all(w in line for w in wanted) for line in text.splitlines()):
                break
            time.sleep(0.2)
        lines = [line for line in text.splitlines() if line.startswith("ray_mvlp_train_")]
        assert any(all(w in line for w in wanted) and 'run="cc3m-base"' in line for line in lines), lines
        assert any(line.startswith("ray_mvlp_train_mfu{") and line.endswith(" 0.31") for line in lines), lines
        assert any(line.startswith("ray_mvlp_train_step{") and line.endswith(" 500.0") for line in lines), (
            lines
        )
        assert any('task="total"' in line and line.endswith(" 4.25") for line in lines), lines
    finally:
        ray.shutdown()
