"""translate: each selected sample's English caption in every target language.

Units are download shards. An item is one (selected sample, language) pair: it ends either as a
row of `NNNNN.parquet` (key, lang, text, provenance) or as a reject whose detail names the language.

The stage is split DataTrove-style into steps (`select_unit`, `translate_records`, `write_unit`)
and an executor that runs them: in-process here (the local engine), or a Ray actor pool (the ray
engine, `ray_jobs.translate`). Both commit units through the same contract, so the output, the
manifest and resuming are the same whichever ran.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from mvlp_core import atomic, contract, keys
from mvlp_core.spec import PipelineSpec, TranslateFilters, fingerprint_config
from mvlp_core.stage import Context, Stage, Work, local_or_ray
from mvlp_core.stages.translate import filters
from mvlp_core.stages.translate.import_backend import ImportBackend, import_path

STAGE_NAME = "translate"
SAMPLES_RE = re.compile(r"^samples-(\d+)\.parquet$")
SCHEMA = pa.schema(
    [("key", pa.string()), ("lang", pa.string()), ("text", pa.string()), ("provenance", pa.string())]
)
BACKEND_SECTIONS = ("import_", "hf", "ctranslate2", "http")


class Backend(Protocol):
    def problems(self) -> list[str]: ...

    def load(self) -> None: ...

    def provenance(self, lang: str) -> str: ...

    def translate(self, keys: list[str], captions: list[str], lang: str) -> list[str | contract.Reject]: ...


@dataclass
class Item:
    """One (sample, language) outcome: `text`, or a reject."""

    key: str
    lang: str
    text: str | None = None
    reject: contract.Reject | None = None


@dataclass
class UnitItems:
    selected: int
    items: list[Item]


# pending units -> a function returning one unit's items (the executor's side of the stage).
Executor = Callable[[list[str]], Callable[[str], UnitItems]]


def make_backend(spec: PipelineSpec) -> Backend:
    """The configured backend; model libraries are imported only by the backend that needs them."""
    t = spec.translate
    if t.backend == "import":
        return ImportBackend(t.import_, spec.languages)
    if t.backend == "hf":
        from mvlp_core.stages.translate.hf_backend import HFBackend

        return HFBackend(t.hf, spec.languages)
    if t.backend == "ctranslate2":
        from mvlp_core.stages.translate.ct2_backend import CT2Backend

        return CT2Backend(t.ctranslate2, spec.languages)
    from mvlp_core.stages.translate.http_backend import HTTPBackend

    return HTTPBackend(t.http, spec.languages)


def config(spec: PipelineSpec) -> dict[str, Any]:
    """The config that determines output: only the active backend's section, plus the import
    file's content hash so that editing the file recomputes the stage."""
    section = fingerprint_config(spec.translate)
    active = "import_" if spec.translate.backend == "import" else spec.translate.backend
    for name in BACKEND_SECTIONS:
        if name != active:
            del section[name]
    out = {"translate": section, "languages": list(spec.languages)}
    if active == "http" and spec.translate.http.protocol == "libretranslate":
        out["libretranslate_server"] = spec.translate.http.base_url  # it names no model: the server does
    if active == "import_":
        out["import_sha256"] = atomic.sha256_file(import_path(spec.translate.import_))
    return out


def checks(spec: PipelineSpec) -> list[str]:
    """What `mvlp plan` can find wrong before any work, loading no model weights, one line per
    problem naming cause and fix: the import file readable; each language's model and tokenizer
    resolvable by path or name and holding a target token for it (hf, ctranslate2); the server's
    URL valid and its key's variable set (http)."""
    try:
        backend = make_backend(spec)
    except contract.StageError as err:  # e.g. no import file
        return [str(err)]
    return backend.problems()


def shard_ids(download: Path) -> list[str]:
    return sorted(m[1] for p in download.iterdir() if (m := SAMPLES_RE.match(p.name)))


def samples_path(download: Path, unit: str) -> Path:
    return Path(download) / f"samples-{unit}.parquet"


def is_selected(key: str, fraction: float) -> bool:
    return keys.in_fraction(key, fraction, salt=STAGE_NAME)


def select_unit(spec: PipelineSpec, download: Path, unit: str) -> tuple[list[str], list[str]]:
    """Keys and captions of the unit's samples that fall in `sample_fraction`."""
    samples = pq.read_table(samples_path(download, unit), columns=["key", "caption"])
    pairs = [
        (k, c)
        for k, c in zip(samples.column("key").to_pylist(), samples.column("caption").to_pylist())
        if is_selected(k, spec.translate.sample_fraction)
    ]
    return [k for k, _ in pairs], [c for _, c in pairs]


def translate_records(
    backend: Backend, checks: TranslateFilters, keys_: list[str], captions: list[str], lang: str
) -> list[Item]:
    """The backend's output for one language, each passed through the quality filters."""
    items = []
    for key, caption, result in zip(keys_, captions, backend.translate(keys_, captions, lang)):
        if isinstance(result, contract.Reject):
            items.append(Item(key, lang, reject=result))
            continue
        failed = filters.check(caption, result, lang, checks)
        if failed:
            items.append(Item(key, lang, reject=contract.Reject(key, failed[0], failed[1])))
        else:
            items.append(Item(key, lang, text=result.strip()))
    return items


def write_unit(
    out_dir: Path, unit: str, got: UnitItems, languages: list[str], provenance: dict[str, str]
) -> contract.UnitResult:
    """Write a unit's translations atomically; its rejects go to the contract."""
    rows: list[dict[str, str]] = []
    rejects: list[contract.Reject] = []
    per_language = dict.fromkeys(languages, 0)
    for item in got.items:
        if item.reject is not None:
            r = item.reject
            detail = f"lang={item.lang}; {r.detail}" if r.detail else f"lang={item.lang}"
            rejects.append(contract.Reject(item.key, r.reason, detail))
        else:
            rows.append(
                {"key": item.key, "lang": item.lang, "text": item.text, "provenance": provenance[item.lang]}
            )
            per_language[item.lang] += 1
    rows.sort(key=lambda r: (r["key"], r["lang"]))
    name = f"{unit}.parquet"
    atomic.write_parquet(Path(out_dir) / name, pa.Table.from_pylist(rows, schema=SCHEMA))
    return contract.UnitResult(
        files={name: len(rows)},
        samples_in=got.selected * len(languages),
        samples_out=len(rows),
        rejects=rejects,
        extra={"selected": got.selected, "per_language": per_language},
    )


def local_executor(spec: PipelineSpec, download: Path) -> Executor:
    """Units translated in this process, one after another, by one backend loaded once."""

    def start(_pending: list[str]) -> Callable[[str], UnitItems]:
        backend = make_backend(spec)
        backend.load()

        def unit_items(unit: str) -> UnitItems:
            sel_keys, captions = select_unit(spec, download, unit)
            items = []
            for lang in spec.languages:
                items += translate_records(backend, spec.translate.filters, sel_keys, captions, lang)
            return UnitItems(len(sel_keys), items)

        return unit_items

    return start


def plan(ctx: Context) -> Work:
    """Translate the download stage's captions into the stage folder. The executor is the engine's
    (`ray_jobs.translate.ray_executor` on the ray engine) or this process's; it starts, loading
    models, only when units are pending."""
    spec, out_dir = ctx.spec, ctx.out_dir
    download = ctx.inputs["download"]
    languages = list(spec.languages)
    provenance = {lang: make_backend(spec).provenance(lang) for lang in languages}
    start: Executor = (ctx.hook or local_executor)(spec, download)
    running: list[Callable[[str], UnitItems]] = []

    def process(unit: str) -> contract.UnitResult:
        return write_unit(out_dir, unit, running[0](unit), languages, provenance)

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "selected": sum(r["extra"]["selected"] for r in records),
            "languages": languages,
            "per_language": {
                lang: sum(r["extra"]["per_language"][lang] for r in records) for lang in languages
            },
            "provenance": provenance,
        }

    return Work(
        shard_ids(download),
        process,
        before=lambda pending: running.append(start(pending)),
        finalize=finalize,
    )


ENGINES = local_or_ray("ray_jobs.translate:ray_executor")
STAGE = Stage(STAGE_NAME, ("download",), config, plan, ENGINES, checks=checks)
