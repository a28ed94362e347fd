"""The iglue-eval ray engine asks Ray for the GPU the spec evaluates on (Ray hides every GPU from a
task that asks for none: CUDA_VISIBLE_DEVICES is set to the GPUs a task was given), submits the
costliest fine-tunes first and makes each test unit wait on its own task's fine-tune only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mvlp_core.spec import load_spec

NAMES = ["xvnli.zero-shot.de", "xvnli.finetune", "marvl.finetune", "marvl.zero-shot.en"]


class _Asked:
    """Stands in for the ``_unit`` Ray remote function: records the options and names submitted."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, dict[str, Any]]] = []
        self.after: dict[str, Any] = {}
        self.connected: list[int | None] = []  # num_cpus given to connect (a local Ray's size)

    def options(self, **options: Any) -> Any:
        asked = self

        class _Remote:
            def remote(self, spec: Any, model_dir: str, out_dir: str, name: str, after: Any = None) -> str:
                asked.submitted.append((name, options))
                asked.after[f"{out_dir}:{name}"] = after
                return f"{out_dir}:{name}"

        return _Remote()


def _asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *overrides: str, models: int = 1, node_cpus: float = 16
) -> _Asked:
    import ray

    from mvlp_core.eval.selection import ModelUnits
    from ray_jobs import iglue_eval as engine

    asked = _Asked()
    monkeypatch.setattr(engine, "connect", lambda spec, num_cpus=None: asked.connected.append(num_cpus))
    nodes = [
        {"Alive": True, "Resources": {"CPU": node_cpus, "GPU": 1.0}},
        {"Alive": True, "Resources": {"CPU": 32.0}},  # no GPU: never the node a GPU unit lands on
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
    ]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    monkeypatch.setattr(engine, "_unit", asked)
    monkeypatch.setattr(ray, "get", lambda refs: refs)
    spec = load_spec("demo", ["execution.engines={iglue-eval: ray}", *overrides], workdir=tmp_path)
    engine.run_units_with_ray(
        [ModelUnits(spec, str(tmp_path / "model"), f"out{i}", NAMES) for i in range(models)]
    )
    return asked


def _submitted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *overrides: str, node_cpus: float = 16
) -> list[tuple[str, dict]]:
    return _asked(monkeypatch, tmp_path, *overrides, node_cpus=node_cpus).submitted


def test_units_on_a_gpu_ask_ray_for_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked = _asked(monkeypatch, tmp_path, "iglue.device=cuda", "iglue.workers=2")
    submitted = asked.submitted
    assert {name for name, _ in submitted[:2]} == {"xvnli.finetune", "marvl.finetune"}  # fine-tunes first
    # a CPU and one for each of the 4 fine-tuning loader processes (the GPU default), tests too, so
    # that a local Ray of workers x 5 CPUs runs `workers` units of any kind at a time
    assert [o for _, o in submitted] == [{"num_cpus": 5, "num_gpus": 1.0}] * 4
    assert asked.connected == [2 * 5]
    lean = _submitted(monkeypatch, tmp_path, "iglue.device=cuda", "iglue.loader_workers=0")
    assert [options for _, options in lean] == [{"num_cpus": 1, "num_gpus": 1.0}] * 4
    small = _submitted(monkeypatch, tmp_path, "iglue.device=cuda", node_cpus=2)
    assert [o["num_cpus"] for _, o in small] == [
        2
    ] * 4  # no more than the GPU node has: it would wait forever
    cpu = _submitted(monkeypatch, tmp_path, "iglue.loader_workers=40", node_cpus=2)
    assert [o["num_cpus"] for _, o in cpu] == [32] * 4  # on the CPU any node will do: the largest

    halves = _submitted(monkeypatch, tmp_path, "iglue.device=cuda:0", "iglue.gpus_per_unit=0.5")
    assert {options["num_gpus"] for _, options in halves} == {0.5}  # two units share a GPU ...
    assert [o["num_cpus"] for _, o in halves] == [3] * 4  # ... and its CPUs: 2 loader processes each


def test_units_on_the_cpu_ask_for_no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    submitted = _submitted(monkeypatch, tmp_path)  # the demo evaluates on cpu
    assert len(submitted) == 4 and all(options.get("num_gpus", 0) == 0 for _, options in submitted)


def test_costliest_fine_tunes_first_and_tests_wait_on_their_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two models' units in one submission: the demo's MaRVL fine-tune (12 epochs x 960 items)
    before XVNLI's (12 x 720), both models' fine-tunes before any test, and each test unit's
    dependency is its own model's fine-tune of its own task."""
    asked = _asked(monkeypatch, tmp_path, models=2)
    names = [name for name, _ in asked.submitted]
    assert names[:4] == ["marvl.finetune", "marvl.finetune", "xvnli.finetune", "xvnli.finetune"]
    assert asked.after == {
        "out0:marvl.finetune": None,
        "out1:marvl.finetune": None,
        "out0:xvnli.finetune": None,
        "out1:xvnli.finetune": None,
        "out0:xvnli.zero-shot.de": "out0:xvnli.finetune",
        "out1:xvnli.zero-shot.de": "out1:xvnli.finetune",
        "out0:marvl.zero-shot.en": "out0:marvl.finetune",
        "out1:marvl.zero-shot.en": "out1:marvl.finetune",
    }
