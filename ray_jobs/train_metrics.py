"""Training metrics where the cluster's dashboards see them: Ray's metrics (Prometheus).

Rank 0 sets these gauges at each log step, beside `metrics.jsonl`; Ray's metrics agent on each
node exports them with a `ray_` prefix on the port Prometheus scrapes (infra/k8s scrapes every
Ray pod), so Grafana shows a run's loss per task, samples/s and MFU while it trains. Tagged by
`run` (pretrain.run_name) so runs sharing a cluster stay apart.
"""

from __future__ import annotations

from typing import Any

from ray.util.metrics import Gauge

PREFIX = "mvlp_train_"
# metrics.jsonl key -> gauge name and description
GAUGES = {
    "step": ("step", "optimizer steps done"),
    "lr": ("lr", "learning rate"),
    "samples_per_second": ("samples_per_second", "training samples per second, all workers"),
    "tokens_per_second": ("tokens_per_second", "target tokens per second, all workers"),
    "mfu": ("mfu", "model FLOPs utilisation against the device's dense bf16 peak"),
    "world": ("workers", "training workers"),
}


class TrainGauges:
    """Ray gauges for one training run: `set(metrics)` takes the loop's log-step dict."""

    def __init__(self, run: str) -> None:
        self.tags = {"run": run}
        self.gauges = {
            key: Gauge(PREFIX + name, description=text, tag_keys=("run",))
            for key, (name, text) in GAUGES.items()
        }
        self.loss = Gauge(
            PREFIX + "loss", description="training loss: total and per task", tag_keys=("run", "task")
        )

    def set(self, metrics: dict[str, Any]) -> None:
        for key, gauge in self.gauges.items():
            value = metrics.get(key)
            if isinstance(value, int | float):
                gauge.set(float(value), tags=self.tags)
        for key, value in metrics.items():
            if (key == "loss" or key.startswith("loss_")) and isinstance(value, int | float):
                task = "total" if key == "loss" else key.removeprefix("loss_")
                self.loss.set(float(value), tags={**self.tags, "task": task})
