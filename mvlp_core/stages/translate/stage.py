"""translate: each selected sample's English caption in every target language.

Units are download shards. An item is one (selected sample, language) pair: it ends either as a
row of `NNNNN.parquet` (key, lang, text, provenance) or as a reject whose detail names the language.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from mvlp_core import atomic, contract, keys
from mvlp_core.spec import PipelineSpec, fingerprint_config
from mvlp_core.stages.translate.import_backend import ImportBackend, import_path

STAGE = "translate"
SAMPLES_RE = re.compile(r"^samples-(\d+)\.parquet$")
SCHEMA = pa.schema(
    [("key", pa.string()), ("lang", pa.string()), ("text", pa.string()), ("provenance", pa.string())]
)


class Backend(Protocol):
    def load(self) -> None: ...

    def provenance(self, lang: str) -> str: ...

    def translate(
        self, keys: list[str], captions: list[str], lang: str
    ) -> list[str | contract.Reject]: ...


def make_backend(spec: PipelineSpec) -> Backend:
    if spec.translate.backend == "import":
        return ImportBackend(spec.translate.import_, spec.languages)
    # Imported here so that import-only runs never pay for torch and transformers.
    from mvlp_core.stages.translate.hf_backend import HFBackend

    return HFBackend(spec.translate.hf, spec.languages)


def fingerprint_inputs(spec: PipelineSpec) -> dict[str, Any]:
    """The config that determines output: only the active backend's section, plus the import
    file's content hash so that editing the file recomputes the stage."""
    config = fingerprint_config(spec.translate)
    config["languages"] = list(spec.languages)
    if spec.translate.backend == "import":
        del config["hf"]
        config["import_sha256"] = atomic.sha256_file(import_path(spec.translate.import_))
    else:
        del config["import_"]
    return config


def shard_ids(download: Path) -> list[str]:
    return sorted(m[1] for p in download.iterdir() if (m := SAMPLES_RE.match(p.name)))


def run_translate(
    spec: PipelineSpec,
    inputs: dict[str, Path],
    out_dir: Path,
    *,
    force: bool = False,
    progress: contract.ProgressFn | None = None,
) -> contract.Manifest:
    """Translate the download stage's captions (inputs = {"download": folder}) into `out_dir`.

    Backends load in `before`, so a complete stage re-runs without touching a model or the file.
    """
    download = Path(inputs["download"])
    out_dir = Path(out_dir)
    fp = contract.stage_fingerprint(
        STAGE, fingerprint_inputs(spec), {"download": download}, sys.modules[__package__]
    )
    backend = make_backend(spec)
    languages = list(spec.languages)

    def process(unit: str) -> contract.UnitResult:
        samples = pq.read_table(download / f"samples-{unit}.parquet", columns=["key", "caption"])
        selected = [
            (k, c)
            for k, c in zip(samples.column("key").to_pylist(), samples.column("caption").to_pylist())
            if keys.in_fraction(k, spec.translate.sample_fraction, salt=STAGE)
        ]
        sel_keys = [k for k, _ in selected]
        sel_captions = [c for _, c in selected]
        rows: list[dict[str, str]] = []
        rejects: list[contract.Reject] = []
        per_language: dict[str, int] = {}
        for lang in languages:
            provenance = backend.provenance(lang)
            before = len(rows)
            for key, result in zip(sel_keys, backend.translate(sel_keys, sel_captions, lang)):
                if isinstance(result, contract.Reject):
                    detail = f"lang={lang}; {result.detail}" if result.detail else f"lang={lang}"
                    rejects.append(contract.Reject(key, result.reason, detail))
                else:
                    rows.append({"key": key, "lang": lang, "text": result, "provenance": provenance})
            per_language[lang] = len(rows) - before
        rows.sort(key=lambda r: (r["key"], r["lang"]))
        name = f"{unit}.parquet"
        atomic.write_parquet(out_dir / name, pa.Table.from_pylist(rows, schema=SCHEMA))
        return contract.UnitResult(
            files={name: len(rows)},
            samples_in=len(selected) * len(languages),
            samples_out=len(rows),
            rejects=rejects,
            extra={"selected": len(selected), "per_language": per_language},
        )

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "selected": sum(r["extra"]["selected"] for r in records),
            "languages": languages,
            "per_language": {
                lang: sum(r["extra"]["per_language"][lang] for r in records) for lang in languages
            },
            "provenance": {lang: backend.provenance(lang) for lang in languages},
        }

    return contract.run_units(
        STAGE,
        out_dir,
        fp,
        shard_ids(download),
        process,
        force=force,
        progress=progress,
        before=lambda _pending: backend.load(),
        finalize=finalize,
    )
