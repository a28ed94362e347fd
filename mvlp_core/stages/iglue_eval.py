"""iglue-eval: the pretrained model (``pretrain/final/``) on IGLUE's tasks x settings x languages.

Units (``mvlp_core.eval.units``): one English fine-tune per task, then one test per (task,
setting, language). Who runs them is a parameter: ``units_fn(spec, model_dir, out_dir, names)``
runs a batch of pending units (each writes its result file); by default (None) each unit runs
here, one after the other, reporting progress as it goes; ``ray_jobs/iglue_eval.py`` passes one that fans them out as Ray tasks (the
Prefect flow picks it through ``flows/runners.py``). Outputs: ``results.json``, CSV tables
``tables/<task>.<setting>.<metric>.csv`` (``model,en,<langs>,avg``), ``iglue_bars.png``, per-unit
``results/`` and ``predictions/`` (VOLTA's formats, scoreable with ``mvlp eval score``); the
manifest extra holds ``{"results": {task: {setting: {lang: score}, "metric", "chance"}}}``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mvlp_core import atomic, contract
from mvlp_core.eval import tables
from mvlp_core.eval.units import Unit, compute_unit, plan, read_result
from mvlp_core.spec import PipelineSpec, fingerprint_config

DEPS = ("pretrain",)
MODEL_DIR = "final"
CHART = "iglue_bars.png"
CODE_MODULES = ("mvlp_core.eval",)  # fingerprinted with this module (pipeline.expected_fingerprint too)

UnitsFn = Callable[[PipelineSpec, str, str, list[str]], None]


def config(spec: PipelineSpec) -> dict[str, Any]:
    return {"iglue": fingerprint_config(spec.iglue)}


def run_iglue_eval(
    spec: PipelineSpec,
    inputs: dict[str, Path],
    out_dir: Path,
    *,
    force: bool = False,
    progress: contract.ProgressFn | None = None,
    units_fn: UnitsFn | None = None,
) -> contract.Manifest:
    out_dir = Path(out_dir)
    if "pretrain" not in inputs:
        raise contract.StageError(f"iglue-eval needs the pretrain output; inputs were {sorted(inputs)}")
    fp = contract.stage_fingerprint(
        "iglue-eval", config(spec), inputs, sys.modules[__name__], *(sys.modules[m] for m in CODE_MODULES)
    )
    model_dir = Path(inputs["pretrain"]) / MODEL_DIR
    if not model_dir.exists():
        raise contract.StageError(f"iglue-eval: no model at {model_dir}; re-run pretrain (it writes final/)")
    units = [u.name for u in plan(spec.iglue)]

    def before(pending: list[str]) -> None:
        todo = [n for n in pending if read_result(out_dir, n) is None]
        if todo and units_fn is not None:
            units_fn(spec, str(model_dir), str(out_dir), todo)

    def process(name: str) -> contract.UnitResult:
        result = read_result(out_dir, name) or compute_unit(spec, str(model_dir), str(out_dir), name)
        rejects = [contract.Reject(r["key"], r["reason"], r["detail"]) for r in result["rejects"]]
        rel = str(Unit.parse(name).result_path(Path(".")))
        return contract.UnitResult(
            {rel: result["samples_out"]},
            result["samples_in"],
            result["samples_out"],
            rejects,
            {"score": result.get("score")},
        )

    def finalize(folder: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        results = [read_result(folder, r["unit"]) for r in records]
        atomic.write_json(folder / "results.json", results)
        for (task, setting, metric), rows in tables.table_rows(results, spec.name).items():
            tables.write_csv(folder / "tables" / f"{task}.{setting}.{metric}.csv", rows)
        tables.bar_chart(results, folder / CHART, f"{spec.name}: IGLUE")
        return {"results": tables.nested(results), "chart": str(folder / CHART)}

    return contract.run_units(
        "iglue-eval",
        out_dir,
        fp,
        units,
        process,
        force=force,
        progress=progress,
        before=before,
        finalize=finalize,
    )
