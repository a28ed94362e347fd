"""iglue-eval: the pretrained model (``pretrain/final/``) on IGLUE's tasks x settings x languages.

Units (``mvlp_core.eval.units``): one English fine-tune per task, then one test per (task,
setting, language). On the local engine each unit runs here, one after the other; on the ray
engine (``ray_jobs.iglue_eval.run_units_with_ray``) the pending units run first as Ray tasks, each
writing its result file, and the units then only read them. Outputs: ``results.json``, CSV tables
``tables/<task>.<setting>.<metric>.csv`` (``model,en,<langs>,avg``), ``iglue_bars.png``, per-unit
``results/`` and ``predictions/`` (VOLTA's formats, scoreable with ``mvlp eval score``); the
manifest extra holds ``{"results": {task: {setting: {lang: score}, "metric", "chance"}}}``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mvlp_core import atomic, contract
from mvlp_core.spec import PipelineSpec, fingerprint_config
from mvlp_core.stage import Context, Figure, Shows, Stage, Table, Work, local_or_ray

MODEL_DIR = "final"
CHART = "iglue_bars.png"

UnitsFn = Callable[[PipelineSpec, str, str, list[str]], None]


def config(spec: PipelineSpec) -> dict[str, Any]:
    return {"iglue": fingerprint_config(spec.iglue)}


def plan(ctx: Context) -> Work:
    # the models load only when evaluation runs: listing or checking stages stays fast
    from mvlp_core.eval import tables
    from mvlp_core.eval.units import Unit, compute_unit, read_result
    from mvlp_core.eval.units import plan as plan_units

    spec, out_dir = ctx.spec, ctx.out_dir
    units_fn: UnitsFn | None = ctx.hook
    if spec.iglue.root is None:
        raise contract.StageError(
            "iglue-eval: iglue.root is not set; point it at a folder laid out like IGLUE's datasets/ "
            "(annotations) and set iglue.image_roots for the images"
        )
    model_dir = ctx.inputs["pretrain"] / MODEL_DIR
    if not model_dir.exists():
        raise contract.StageError(f"iglue-eval: no model at {model_dir}; re-run pretrain (it writes final/)")
    units = [u.name for u in plan_units(spec.iglue)]

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

    return Work(units, process, before=before, finalize=finalize)


def result_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task x setting: metric, chance, then the score of each language."""
    rows = []
    for task, by_setting in results.items():
        for setting, scores in by_setting.items():
            if setting not in ("metric", "chance"):
                rows.append(
                    {
                        "task": task,
                        "setting": setting,
                        "metric": by_setting["metric"],
                        "chance": by_setting["chance"],
                        **scores,
                    }
                )
    return rows


def _score(result: dict[str, Any], lang: str) -> str:
    """Zero-shot score of one language, or with lang "avg" the average without English."""
    scores = result.get("zero-shot", {})
    if lang == "avg":
        others = [v for k, v in scores.items() if k != "en"]
        return f"{sum(others) / len(others):.1f}" if others else "-"
    return f"{scores[lang]:.1f}" if lang in scores else "-"


def shows(spec: PipelineSpec, folder: Path, state: dict[str, Any]) -> Shows:
    results = state.get("results", {})
    headline = "; ".join(
        f"{task} {r['metric']} {_score(r, 'en')} / {_score(r, 'avg')} ({r['chance']})"
        for task, r in results.items()
    )
    return Shows(
        lines=(
            "IGLUE (zero-shot, English / avg of the other languages; chance): "
            f"{headline}; tables {folder / 'tables'}",
        ),
        tables=(
            Table(
                "iglue-eval-results",
                "iglue-eval: headline score per task, setting and language (chance beside it)",
                result_rows(results),
            ),
        ),
        figures=(Figure("iglue-eval-bars", f"IGLUE per language ({spec.name})", folder / CHART),),
    )


ENGINES = local_or_ray("ray_jobs.iglue_eval:run_units_with_ray")
STAGE = Stage("iglue-eval", ("pretrain",), config, plan, ENGINES, shows=shows)
