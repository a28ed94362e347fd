"""iglue-eval: the pretrained model (``pretrain/final/``) on IGLUE's tasks x settings x languages.

Units (``mvlp_core.eval.selection``, run by ``mvlp_core.eval.units``): one English fine-tune per
task, then one test per (task, setting, language). On the local engine each unit runs here, one
after the other; on the ray engine (``ray_jobs.iglue_eval.run_units_with_ray``) every model's pending
units run first as Ray tasks (each asking for a GPU where iglue.device is one), each writing its result
file, and the units then only read them. Outputs: ``results.json``, CSV tables
``tables/<task>.<setting>.<metric>.csv`` (``model,en,<langs>,avg``), ``iglue_bars.png``, per-unit
``results/`` and ``predictions/`` (VOLTA's formats, scoreable with ``mvlp eval score``); the
manifest extra holds ``{"results": {task: {setting: {lang: score}, "metric", "chance"}}}`` and
``{"splits": {task: {setting: {lang: "dev"}}}}`` for the units that tested on a dev split, as IGLUE
publishes no test file there (``mvlp_core.eval.tasks``); tables and results say so too. Retrieval's
TR R@1, which IGLUE reports beside IR R@1, is ``{"secondary": {task: {setting: {lang: score}}}}``:
the leaderboard and ``mvlp status`` show both.

``checks`` (``mvlp plan``, and ``mvlp run`` before any stage) needs no model: iglue.root set and
present, every annotation file the selected units read (test files included: a missing one is never
replaced by a dev file), and each image folder they read present, not empty, and where it is a
download stage's output (WIT), finished. ``needs`` names what ``mvlp plan`` shows: the annotation
root and image folders read, and the units with the resources each asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mvlp_core import atomic, contract
from mvlp_core.eval import tables
from mvlp_core.eval.images import image_roots, is_download_output
from mvlp_core.eval.selection import ModelUnits, annotation_files, languages, plan_units, unit_resources
from mvlp_core.eval.tasks import IMAGE_FOLDERS
from mvlp_core.spec import IglueSpec, PipelineSpec, fingerprint_config
from mvlp_core.stage import Context, Figure, Needs, Shows, Stage, Table, Work, local_or_ray
from mvlp_core.stages.pretrain import model_dir

CHART = "iglue_bars.png"

UnitsFn = Callable[[list[ModelUnits]], None]  # every model's pending units, in one call


def config(spec: PipelineSpec) -> dict[str, Any]:
    """The iglue section each model is evaluated with: with `models`, each model's own (the shared
    section merged with its entry's `iglue`), so that changing one model's fine-tune re-runs it."""
    runs = spec.trained_models()
    if len(runs) == 1 and runs[0][0] is None:
        return {"iglue": fingerprint_config(spec.iglue)}
    return {"iglue": {name: fingerprint_config(sub.iglue) for name, sub in runs}}


def plan(ctx: Context) -> Work:
    # the models load only when evaluation runs: listing or checking stages stays fast
    from mvlp_core.eval.selection import Unit
    from mvlp_core.eval.units import compute_unit, read_result

    out_dir = ctx.out_dir
    units_fn: UnitsFn | None = ctx.hook
    problem = _root_problem(ctx.spec.iglue)
    if problem is not None:
        raise contract.StageError(f"iglue-eval: {problem}")
    runs = {name: sub for name, sub in ctx.spec.trained_models()}
    named = list(runs) != [None]
    models = {name: model_dir(ctx.inputs["pretrain"], name) for name in runs}
    for folder in models.values():
        if not folder.exists():
            raise contract.StageError(f"iglue-eval: no model at {folder}; re-run pretrain (it writes it)")
    per_model = [u.name for u in plan_units(ctx.spec.iglue)]
    units = [f"{name}/{u}" if named else u for name in runs for u in per_model]

    def split(unit: str) -> tuple[str | None, str, Path]:
        """A unit's model, its name within that model's units, and where that model's results go."""
        name, _, rest = unit.rpartition("/") if named else (None, "", unit)
        return name or None, rest, out_dir / name if name else out_dir

    def before(pending: list[str]) -> None:
        batches = []
        for name in runs:
            where = out_dir / name if name else out_dir
            todo = [split(n)[1] for n in pending if split(n)[0] == name]
            todo = [n for n in todo if read_result(where, n) is None]
            if todo:
                batches.append(ModelUnits(runs[name], str(models[name]), str(where), todo))
        if batches and units_fn is not None:
            units_fn(batches)

    def process(unit: str) -> contract.UnitResult:
        name, rest, where = split(unit)
        result = read_result(where, rest) or compute_unit(runs[name], str(models[name]), str(where), rest)
        rejects = [contract.Reject(r["key"], r["reason"], r["detail"]) for r in result["rejects"]]
        rel = str(Unit.parse(rest).result_path(Path(name or ".")))
        return contract.UnitResult(
            {rel: result["samples_out"]},
            result["samples_in"],
            result["samples_out"],
            rejects,
            {"score": result.get("score")},
        )

    def finalize(folder: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        by_model: dict[str | None, list[dict[str, Any]]] = {name: [] for name in runs}
        for r in records:
            name, rest, where = split(r["unit"])
            by_model[name].append(read_result(where, rest))
        if not named:
            return _write_outputs(folder, by_model[None], ctx.spec.name, ctx.spec.name)
        out = {
            name: _write_outputs(folder / name, results, name, f"{ctx.spec.name}: {name}")
            for name, results in by_model.items()
        }
        atomic.write_json(
            folder / "results.json", [{**r, "model": n} for n, rs in by_model.items() for r in rs]
        )
        merged: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for name, results in by_model.items():
            for key, rows in tables.table_rows(results, name).items():
                merged.setdefault(key, []).extend(rows)
        for (task, setting, metric), rows in merged.items():
            tables.write_csv(folder / "tables" / f"{task}.{setting}.{metric}.csv", rows)
        nested = {
            name: {"results": o["results"], "splits": o["splits"], "secondary": o["secondary"]}
            for name, o in out.items()
        }
        tables.leaderboard_chart(nested, folder / CHART, f"{ctx.spec.name}: IGLUE zero-shot by model")
        return {"models": nested, "chart": str(folder / CHART)}

    return Work(units, process, before=before, finalize=finalize)


def _write_outputs(folder: Path, results: list[dict[str, Any]], model: str, title: str) -> dict[str, Any]:
    """One model's results.json, CSV tables and per-language chart under `folder`."""
    atomic.write_json(folder / "results.json", results)
    for (task, setting, metric), rows in tables.table_rows(results, model).items():
        tables.write_csv(folder / "tables" / f"{task}.{setting}.{metric}.csv", rows)
    tables.bar_chart(results, folder / CHART, f"{title}: IGLUE")
    return {
        "results": tables.nested(results),
        "splits": tables.splits(results),
        "secondary": tables.secondary(results),
        "chart": str(folder / CHART),
    }


def result_rows(results: dict[str, Any], splits: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task x setting: metric, chance, the score of each language, and which languages
    were scored on a dev split (IGLUE has no test file there)."""
    rows = []
    for task, by_setting in results.items():
        for setting, scores in by_setting.items():
            if setting not in ("metric", "chance"):
                row = {
                    "task": task,
                    "setting": setting,
                    "metric": by_setting["metric"],
                    "chance": by_setting["chance"],
                    **scores,
                }
                label = tables.split_label(splits.get(task, {}).get(setting, {}))
                rows.append({**row, "split": label} if label else row)
    return rows


def _score(result: dict[str, Any], lang: str, splits: dict[str, Any]) -> str:
    """Zero-shot score of one language, or with lang "avg" the average without English; a score
    from a dev split says so."""
    scores, dev = result.get("zero-shot", {}), splits.get("zero-shot", {})
    if lang == "avg":
        others = [v for k, v in scores.items() if k != "en"]
        on_dev = " (dev)" if any(k != "en" for k in dev) else ""
        return f"{sum(others) / len(others):.1f}{on_dev}" if others else "-"
    return f"{scores[lang]:.1f}{' (dev)' if lang in dev else ''}" if lang in scores else "-"


def shows(spec: PipelineSpec, folder: Path, state: dict[str, Any]) -> Shows:
    if "models" in state:
        return _leaderboard_shows(spec, folder, state["models"])
    results, splits = state.get("results", {}), state.get("splits", {})
    parts = []
    for task, r in results.items():
        on = splits.get(task, {})
        text = f"{task} {r['metric']} {_score(r, 'en', on)} / {_score(r, 'avg', on)} ({r['chance']})"
        also = state.get("secondary", {}).get(task)  # TR R@1 beside retrieval's IR R@1
        if also and "zero-shot" in also:
            text += f", {tables.SECONDARY[task]} {_score(also, 'en', on)} / {_score(also, 'avg', on)}"
        parts.append(text)
    headline = "; ".join(parts)
    return Shows(
        lines=(
            "IGLUE (zero-shot, English / avg of the other languages; chance): "
            f"{headline}; tables {folder / 'tables'}",
        ),
        tables=(
            Table(
                "iglue-eval-results",
                "iglue-eval: headline score per task, setting and language (chance beside it)",
                result_rows(results, splits),
            ),
        ),
        figures=(Figure("iglue-eval-bars", f"IGLUE per language ({spec.name})", folder / CHART),),
    )


def leaderboard(models: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task, metric and model: zero-shot English, the other languages' average, chance
    (the headline's; retrieval's TR R@1 rows follow its IR R@1 rows, as IGLUE reports both)."""
    rows = []
    tasks = dict.fromkeys(t for m in models.values() for t in m["results"])
    for task in tasks:
        second: list[dict[str, Any]] = []
        for name, m in models.items():
            r, splits = m["results"].get(task), m["splits"].get(task, {})
            if r is None:
                continue
            row = {"task": task, "metric": r["metric"], "model": name}
            rows.append(
                {**row, "en": _score(r, "en", splits), "avg": _score(r, "avg", splits), "chance": r["chance"]}
            )
            also = m.get("secondary", {}).get(task)  # absent from manifests written before it was
            if also and "zero-shot" in also:
                row["metric"] = tables.SECONDARY[task]
                second.append(
                    {
                        **row,
                        "en": _score(also, "en", splits),
                        "avg": _score(also, "avg", splits),
                        "chance": r["chance"],  # 1 / images either way: an image's captions share its chance
                    }
                )
        rows += second
    return rows


def _leaderboard_shows(spec: PipelineSpec, folder: Path, models: dict[str, Any]) -> Shows:
    rows = leaderboard(models)
    by_task: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        by_task.setdefault((row["task"], row["metric"]), []).append(row)
    lines = [
        "IGLUE leaderboard (zero-shot, English / avg of the other languages; chance), tables "
        f"{folder / 'tables'}:"
    ]
    for (task, metric), rs in by_task.items():
        lines.append(
            f"  {task} {metric} ({rs[0]['chance']}): "
            + ", ".join(f"{r['model']} {r['en']} / {r['avg']}" for r in rs)
        )
    figures = [Figure("iglue-eval-leaderboard", f"IGLUE by model ({spec.name})", folder / CHART)]
    figures += [
        Figure(f"iglue-eval-bars-{n}", f"IGLUE per language ({n})", folder / n / CHART) for n in models
    ]
    return Shows(
        lines=tuple(lines),
        tables=(Table("iglue-eval-leaderboard", "iglue-eval: zero-shot scores by task and model", rows),),
        figures=tuple(figures),
    )


def _root_problem(cfg: IglueSpec) -> str | None:
    if cfg.root is None:
        return (
            "iglue.root is not set; point it at a folder laid out like IGLUE's datasets/ "
            "(annotations) and set iglue.image_roots for the images"
        )
    if not Path(cfg.root).is_dir():
        return f"iglue.root {cfg.root} is not a folder; fix the path or fetch IGLUE's datasets/ there"
    return None


def _folder_problem(kind: str, folder: Path) -> str | None:
    """Why an image folder cannot serve its images (None when it can)."""
    if not folder.is_dir():
        return "is missing"
    if next(folder.iterdir(), None) is None:
        return "is empty"
    if kind == "wit" and any(folder.glob("samples-*.parquet")) and not is_download_output(folder):
        return "is a download stage's output without its manifest (unfinished): run that download to the end"
    return None


def _image_folders(cfg: IglueSpec) -> dict[str, Path]:
    """Folder kind -> image folder, for the kinds the selected tasks read (iglue.root set); MaRVL's
    own folder only where a language besides English (NLVR2's) is tested."""
    roots = image_roots(str(cfg.root), cfg.image_roots)
    return {
        kind: roots[kind]
        for task in cfg.tasks
        for kind in IMAGE_FOLDERS[task]
        if kind != "marvl" or languages(cfg, task) != ["en"]
    }


def _image_problems(cfg: IglueSpec) -> list[str]:
    """Each image folder a selected task reads: present, not empty, and a finished download."""
    problems = []
    for kind, folder in _image_folders(cfg).items():
        why = _folder_problem(kind, folder)
        if why is not None:
            readers = ", ".join(t for t in cfg.tasks if kind in IMAGE_FOLDERS[t])
            fetch = " (WIT's: the output folder of a download of data_specs/datasets/wit-test.yaml)"
            problems.append(
                f"image folder {kind} {folder} {why}; it holds the images {readers} read: "
                f"put them there or point iglue.image_roots.{kind} at them{fetch if kind == 'wit' else ''}"
            )
    return problems


def checks(spec: PipelineSpec) -> list[str]:
    """What evaluation needs that is missing, one line each naming the cause and the fix, before
    any model loads: [] when everything is in place."""
    cfg = spec.iglue
    sizes = _image_size_problems(spec)
    problem = _root_problem(cfg)
    if problem is not None:
        return [problem, *sizes]
    missing = [f"{n.what} missing at {n.path}; {n.fix}" for n in annotation_files(cfg) if not n.path.exists()]
    return missing + _image_problems(cfg) + sizes


def _image_size_problems(spec: PipelineSpec) -> list[str]:
    """An `iglue.image_size` a model cannot read, found before it is pretrained: UniGen's image
    encoder reads its own size only, the ViT's a multiple of its patch."""
    problems = []
    for name, sub in spec.trained_models():
        size, model = sub.iglue.image_size, sub.model
        who = f"models[{name}]" if name else "the model"
        if size is None:
            continue
        if model.family == "unigen" and size != model.image_size:
            fix = (
                "set image_size in the iglue of the models that read other sizes, not the shared section"
                if name
                else "leave iglue.image_size unset"
            )
            problems.append(
                f"iglue.image_size {size}: {who} is UniGen, whose image encoder reads {model.image_size} px "
                f"only; {fix}"
            )
        elif model.family != "unigen" and size % model.dims.patch_size:
            problems.append(
                f"iglue.image_size {size}: {who}'s ViT reads multiples of its patch ({model.dims.patch_size} px)"
            )
    return problems


def needs(spec: PipelineSpec) -> Needs:
    """The annotation root and the image folders read, and the units with what each asks for: a Ray
    task per unit (1 CPU and one per fine-tuning loader process, plus iglue.gpus_per_unit GPUs when
    iglue.device is a GPU) on the ray engine, else this process, one unit after another."""
    cfg = spec.iglue
    if cfg.root is None:
        return Needs(resources="nothing until iglue.root is set")
    units = plan_units(cfg) if Path(cfg.root).is_dir() else []
    count = f"{len(units)} units" if units else "its units"
    reads = tuple(dict.fromkeys([str(cfg.root), *map(str, _image_folders(cfg).values())]))
    loaders = cfg.loader_processes()
    cache = f"up to {cfg.image_cache_mb} MiB of decoded images per unit" + (
        f" and as much in each of its {loaders} loader processes" if loaders else ""
    )
    if (spec.execution.engines.get(STAGE_NAME) or "local") == "ray":
        asks = unit_resources(cfg)
        each = f"{asks['num_cpus']} CPU" + (f" + {asks['num_gpus']:g} GPU" if asks["num_gpus"] else "")
        where = f"{count} as Ray tasks x ({each}), fine-tunes first, up to {cfg.workers} at a time"
    else:
        where = f"this process ({cfg.device}), {count} one after another"
    return Needs(reads=reads, resources=f"{where}; {cache}")


STAGE_NAME = "iglue-eval"
ENGINES = local_or_ray("ray_jobs.iglue_eval:run_units_with_ray")
STAGE = Stage(STAGE_NAME, ("pretrain",), config, plan, ENGINES, shows=shows, checks=checks, needs=needs)
