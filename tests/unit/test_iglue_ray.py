"""The iglue-eval ray engine asks Ray for the GPU the spec evaluates on: Ray hides every GPU from a
task that asks for none (CUDA_VISIBLE_DEVICES is set to the GPUs a task was given)."""

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

    def options(self, **options: Any) -> Any:
        asked = self

        class _Remote:
            def remote(self, spec: Any, model_dir: str, out_dir: str, name: str) -> str:
                asked.submitted.append((name, options))
                return name

        return _Remote()


def _submitted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *overrides: str) -> list[tuple[str, dict]]:
    import ray

    from ray_jobs import iglue_eval as engine

    asked = _Asked()
    monkeypatch.setattr(engine, "connect", lambda spec, num_cpus=None: None)
    monkeypatch.setattr(engine, "_unit", asked)
    monkeypatch.setattr(ray, "get", lambda refs: refs)
    spec = load_spec("demo", ["execution.engines={iglue-eval: ray}", *overrides], workdir=tmp_path)
    engine.run_units_with_ray(spec, str(tmp_path / "model"), str(tmp_path / "out"), NAMES)
    return asked.submitted


def test_units_on_a_gpu_ask_ray_for_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    submitted = _submitted(monkeypatch, tmp_path, "iglue.device=cuda")
    assert [name for name, _ in submitted[:2]] == ["xvnli.finetune", "marvl.finetune"]  # fine-tunes first
    assert [options for _, options in submitted] == [{"num_cpus": 1, "num_gpus": 1.0}] * 4

    halves = _submitted(monkeypatch, tmp_path, "iglue.device=cuda:0", "iglue.gpus_per_unit=0.5")
    assert {options["num_gpus"] for _, options in halves} == {0.5}  # two units share a GPU


def test_units_on_the_cpu_ask_for_no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    submitted = _submitted(monkeypatch, tmp_path)  # the demo evaluates on cpu
    assert len(submitted) == 4 and all(options.get("num_gpus", 0) == 0 for _, options in submitted)
