"""translate: each selected sample's English caption in every target language.

Units are download shards. An item is one (selected sample, language) pair: it ends either as a
row of `NNNNN.parquet` (key, lang, text, provenance) or as a reject whose detail names the language.

The stage is split DataTrove-style into steps (`select_unit`, `translate_records`, `write_unit`)
and an executor that runs them: in-process here, or a Ray actor pool (ray_jobs.translate), which
hands `run_translate` its own `executor`. Both commit units through the same contract, so the
output, the manifest and resuming are the same whichever ran.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from mvlp_core import atomic, contract, keys
from mvlp_core.spec import PipelineSpec, TranslateFilters, fingerprint_config
from mvlp_core.stages.translate import filters
from mvlp_core.stages.translate.import_backend import ImportBackend, import_path

STAGE = "translate"
SAMPLES_RE = re.compile(r"^samples-(\d+)\.parquet$")
SCHEMA = pa.schema(
    [("key", pa.string()), ("lang", pa.string()), ("text", pa.string()), ("provenance", pa.string())]
)
BACKEND_SECTIONS = ("import_", "hf", "ctranslate2", "http")


class Backend(Protocol):
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


def fingerprint_inputs(spec: PipelineSpec) -> dict[str, Any]:
    """The config that determines output: only the active backend's section, plus the import
    file's content hash so that editing the file recomputes the stage."""
    config = fingerprint_config(spec.translate)
    config["languages"] = list(spec.languages)
    active = "import_" if spec.translate.backend == "import" else spec.translate.backend
    for section in BACKEND_SECTIONS:
        if section != active:
            del config[section]
    if active == "import_":
        config["import_sha256"] = atomic.sha256_file(import_path(spec.translate.import_))
    return config


def shard_ids(download: Path) -> list[str]:
    return sorted(m[1] for p in download.iterdir() if (m := SAMPLES_RE.match(p.name)))


def samples_path(download: Path, unit: str) -> Path:
    return Path(download) / f"samples-{unit}.parquet"


def is_selected(key: str, fraction: float) -> bool:
    return keys.in_fraction(key, fraction, salt=STAGE)


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


def run_translate(
    spec: PipelineSpec,
    inputs: dict[str, Path],
    out_dir: Path,
    *,
    force: bool = False,
    progress: contract.ProgressFn | None = None,
    executor: Executor | None = None,
) -> contract.Manifest:
    """Translate the download stage's captions (inputs = {"download": folder}) into `out_dir`.

    The executor starts (and loads models) only when units are pending, so a complete stage
    re-runs without touching a model, a server or the import file.
    """
    download = Path(inputs["download"])
    out_dir = Path(out_dir)
    fp = contract.stage_fingerprint(
        STAGE, fingerprint_inputs(spec), {"download": download}, sys.modules[__package__]
    )
    languages = list(spec.languages)
    provenance = {lang: make_backend(spec).provenance(lang) for lang in languages}
    start = executor or local_executor(spec, download)
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

    return contract.run_units(
        STAGE,
        out_dir,
        fp,
        shard_ids(download),
        process,
        force=force,
        progress=progress,
        before=lambda pending: running.append(start(pending)),
        finalize=finalize,
    )
