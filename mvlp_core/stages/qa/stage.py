"""qa: question–answer pairs for each downloaded sample's English caption (UniGen's CCQA3M).

Units are download shards. An item is one sample: it is output when at least one pair survives the
filters (one row per pair in `NNNNN.parquet`: key, question, answer, generator), otherwise it is one
reject whose reason is the most common reason its candidates were filtered for, or `no_candidates`.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from mvlp_core import atomic, contract
from mvlp_core.spec import PipelineSpec, fingerprint_config
from mvlp_core.stages.qa.filters import Filtered, filter_pairs
from mvlp_core.stages.qa.parser import QAPair
from mvlp_core.stages.qa.rules import RulesQuestioner

STAGE = "qa"
SAMPLES_RE = re.compile(r"^samples-(\d+)\.parquet$")
SCHEMA = pa.schema(
    [(name, pa.string()) for name in ("key", "question", "answer", "generator")]
)


class Questioner(Protocol):
    generator: str

    def load(self) -> None: ...

    def candidates(self, captions: list[str]) -> list[list[QAPair]]: ...


def make_backend(spec: PipelineSpec) -> Questioner:
    if spec.qa.backend == "rules":
        return RulesQuestioner()
    if spec.qa.hf is None:
        raise contract.StageError("qa.hf: required when qa.backend is 'hf' (model: name or path)")
    # Imported here so that rules-only runs never pay for torch and transformers.
    from mvlp_core.stages.qa.hf import HFQuestioner

    return HFQuestioner(spec.qa.hf)


def fingerprint_inputs(spec: PipelineSpec) -> dict[str, Any]:
    """The config that determines output; the hf section only counts when it is the backend."""
    config = fingerprint_config(spec.qa)
    if spec.qa.backend != "hf":
        config.pop("hf")
    return config


def shard_ids(download: Path) -> list[str]:
    return sorted(m[1] for p in download.iterdir() if (m := SAMPLES_RE.match(p.name)))


def caption_reject(key: str, caption: str, result: Filtered, generator: str) -> contract.Reject:
    """One reject for a caption without a usable pair, named after its most common failure."""
    if not result.rejected:
        detail = "empty caption" if not caption.strip() else f"{generator} produced no pair"
        return contract.Reject(key, "no_candidates", detail)
    counts = Counter(r.reason for r in result.rejected)
    reason = counts.most_common(1)[0][0]
    example = next(r.pair for r in result.rejected if r.reason == reason)
    tally = ", ".join(f"{k}={v}" for k, v in counts.items())
    return contract.Reject(
        key, reason, f"{tally}; e.g. {example.question[:60]!r} -> {example.answer[:40]!r}"
    )


def run_qa(
    spec: PipelineSpec,
    inputs: dict[str, Path],
    out_dir: Path,
    *,
    force: bool = False,
    progress: contract.ProgressFn | None = None,
) -> contract.Manifest:
    """Ask questions about the download stage's captions (inputs = {"download": folder}).

    The backend loads in `before`, so a complete stage re-runs without touching a model.
    """
    download = Path(inputs["download"])
    out_dir = Path(out_dir)
    fp = contract.stage_fingerprint(
        STAGE, fingerprint_inputs(spec), {"download": download}, sys.modules[__package__]
    )
    backend = make_backend(spec)
    max_pairs = spec.qa.max_pairs

    def process(unit: str) -> contract.UnitResult:
        samples = pq.read_table(download / f"samples-{unit}.parquet", columns=["key", "caption"])
        sample_keys = samples.column("key").to_pylist()
        captions = [c or "" for c in samples.column("caption").to_pylist()]
        unique = list(dict.fromkeys(c for c in captions if c.strip()))
        by_caption = dict(zip(unique, backend.candidates(unique)))
        rows: list[dict[str, str]] = []
        rejects: list[contract.Reject] = []
        filtered: Counter[str] = Counter()
        for key, caption in zip(sample_keys, captions):
            result = filter_pairs(caption, by_caption.get(caption, []))
            filtered.update(r.reason for r in result.rejected)
            if not result.kept:
                rejects.append(caption_reject(key, caption, result, backend.generator))
            rows += [
                {"key": key, "question": q, "answer": a, "generator": backend.generator}
                for q, a in result.kept[:max_pairs]
            ]
        name = f"{unit}.parquet"
        atomic.write_parquet(out_dir / name, pa.Table.from_pylist(rows, schema=SCHEMA))
        answered = len(samples) - len(rejects)
        return contract.UnitResult(
            files={name: answered},
            samples_in=len(samples),
            samples_out=answered,
            rejects=rejects,
            extra={"pairs": len(rows), "filtered": dict(filtered)},
        )

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        filtered: Counter[str] = Counter()
        for r in records:
            filtered.update(r["extra"]["filtered"])
        return {
            "pairs": sum(r["extra"]["pairs"] for r in records),
            "filtered": dict(sorted(filtered.items())),
            "generator": backend.generator,
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
