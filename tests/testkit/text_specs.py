"""Specs for text-shard runs, written as YAML and loaded as `mvlp` loads a user's, and Multi30K
(../shared/data/multi30k) as a Moses-style parallel corpus; shared with benchmarks/bench_text_shard.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mvlp_core.spec import PipelineSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]
MULTI30K_CANDIDATES = [ROOT / "shared", ROOT.parent / "shared", ROOT.parents[1] / "shared"]
MULTI30K: Path | None = next(
    (
        base / "data" / "multi30k"
        for base in MULTI30K_CANDIDATES
        if (base / "data" / "multi30k" / "train.en.gz").exists()
    ),
    None,
)


def text_spec(workdir: Path, text: dict[str, Any]) -> PipelineSpec:
    """A German-only cc3m spec with this `text` section, written to workdir/spec.yaml and loaded there."""
    path = workdir / "spec.yaml"
    spec = {"name": "text", "dataset": {"ref": "cc3m"}, "languages": ["de"], "translate": {"backend": "hf"}}
    path.write_text(yaml.safe_dump({**spec, "text": text}))
    return load_spec(path, workdir=workdir)


def multi30k() -> Path:
    """Multi30K's folder; where it is absent, an error that says where it was looked for."""
    if MULTI30K is None:
        raise FileNotFoundError(f"Multi30K not found under any of {MULTI30K_CANDIDATES} (data/multi30k)")
    return MULTI30K


def multi30k_corpus(**filters: Any) -> dict[str, Any]:
    """Multi30K train en-de as a `text.corpora` entry (Moses-style gz files, normalised dedup) with `filters`."""
    return {
        "name": "multi30k",
        "kind": "parallel",
        "format": "moses",
        "path": str(multi30k() / "train.{lang}.gz"),
        "pairs": ["en-de"],
        "dedup": "normalised",
        **filters,
    }
