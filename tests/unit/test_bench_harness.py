"""The benchmark harness: a benchmark this machine cannot run (a GPU one on CPU) keeps its earlier
figures instead of vanishing from BENCHMARKS.md, and a row measured elsewhere names its machine."""

from __future__ import annotations

import sys
import types

import pytest

from benchmarks import harness


def _row(name: str, module: str, machine: str = "box") -> dict:
    return {
        "name": name,
        "value": 2.0,
        "unit": "samples/s",
        "baseline": "b",
        "baseline_value": 1.0,
        "ratio": 2.0,
        "runs": 3,
        "higher_is_better": True,
        "notes": "n.",
        "date": "2026-12-04",
        "module": module,
        "machine": machine,
    }


def test_a_module_this_machine_cannot_run_is_skipped_and_keeps_its_rows(monkeypatch):
    gpu = types.ModuleType("benchmarks.bench_gpu_fake")
    gpu.available = lambda: "needs a CUDA GPU"
    gpu.run = lambda runs: (_ for _ in ()).throw(AssertionError("must not run"))
    cpu = types.ModuleType("benchmarks.bench_cpu_fake")
    cpu.run = lambda runs: [{k: v for k, v in _row("cpu_fig", "x").items() if k in harness.KEYS}]
    monkeypatch.setitem(sys.modules, gpu.__name__, gpu)
    monkeypatch.setitem(sys.modules, cpu.__name__, cpu)
    results, failures, skipped = harness.collect(["bench_gpu_fake", "bench_cpu_fake"], runs=1)
    assert skipped == {"bench_gpu_fake": "needs a CUDA GPU"} and not failures
    assert [r["name"] for r in results] == ["cpu_fig"] and results[0]["machine"] == harness.machine()
    previous = [
        _row("gpu_fig", "bench_gpu_fake", "NVIDIA H200"),
        _row("cpu_fig", "bench_cpu_fake"),
        _row("gone_fig", "bench_removed"),
    ]
    merged = harness.merge(previous, results, skipped, keep_all=False)
    assert [r["name"] for r in merged] == ["gpu_fig", "cpu_fig"]  # a full run drops what no module makes
    assert [r["name"] for r in harness.merge(previous, results, skipped, keep_all=True)] == [
        "gpu_fig",
        "gone_fig",
        "cpu_fig",
    ]


def test_rows_measured_elsewhere_name_their_machine_and_a_skip_without_rows_is_listed():
    text = harness.render(
        [_row("gpu_fig", "m", "NVIDIA H200"), _row("cpu_fig", "m", "box")],
        {},
        "box",
        {"m": "needs a CUDA GPU", "bench_tpu": "needs a TPU"},
    )
    gpu_line = next(line for line in text.splitlines() if line.startswith("| gpu_fig"))
    cpu_line = next(line for line in text.splitlines() if line.startswith("| cpu_fig"))
    assert "n; measured 2026-12-04 on NVIDIA H200 |" in gpu_line
    assert cpu_line.endswith("n; measured 2026-12-04 |")
    assert "Machine: box, unless a row names another." in text
    assert "| bench_tpu | skipped | – | – | – | – | needs a TPU |" in text and "| m | skipped" not in text


def test_every_module_is_written_as_it_finishes(monkeypatch, tmp_path):
    """A later module that hangs or is killed must not take the earlier figures with it."""
    monkeypatch.setattr(harness, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(harness, "REPORT", tmp_path / "BENCHMARKS.md")
    first = types.ModuleType("benchmarks.bench_first_fake")
    first.run = lambda runs: [{k: v for k, v in _row("first_fig", "x").items() if k in harness.KEYS}]
    second = types.ModuleType("benchmarks.bench_second_fake")

    seen_on_disk: list[bool] = []

    def killed(runs):
        results = tmp_path / "results.json"
        seen_on_disk.append(results.exists() and "first_fig" in results.read_text())
        raise KeyboardInterrupt  # a kill: not an error the harness reports and goes past

    second.run = killed
    monkeypatch.setitem(sys.modules, first.__name__, first)
    monkeypatch.setitem(sys.modules, second.__name__, second)
    monkeypatch.setattr(harness, "discover", lambda only: ["bench_first_fake", "bench_second_fake"])
    with pytest.raises(KeyboardInterrupt):
        harness.main(["--runs", "1"])
    assert seen_on_disk == [True]
    assert "| first_fig |" in (tmp_path / "BENCHMARKS.md").read_text()
