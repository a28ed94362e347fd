"""A stage added the way a contributor adds one: this module (a `Stage` descriptor) plus one line in
`mvlp_core.registry.STAGES` (tests/integration/test_flows.py adds that line with monkeypatch).

`caption-stats` reads the ingest shards and writes, per shard, the number of captions and their mean
length in words; captions shorter than `min_words` are rejected with a reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mvlp_core import atomic, contract
from mvlp_core.spec import PipelineSpec
from mvlp_core.stage import Context, Shows, Stage, Table, Work

MIN_WORDS = 3


def config(spec: PipelineSpec) -> dict[str, Any]:
    return {"min_words": MIN_WORDS, "dataset": spec.dataset.spec.name}


def plan(ctx: Context) -> Work:
    ingest = ctx.inputs["ingest"]
    units = sorted(p.stem.removeprefix("shard-") for p in ingest.glob("shard-*.parquet"))

    def process(unit: str) -> contract.UnitResult:
        rows = pq.read_table(ingest / f"shard-{unit}.parquet", columns=["key", "caption"]).to_pylist()
        kept = [r for r in rows if len(r["caption"].split()) >= MIN_WORDS]
        rejects = [
            contract.Reject(r["key"], "short_caption", f"{len(r['caption'].split())} words")
            for r in rows
            if r not in kept
        ]
        words = [len(r["caption"].split()) for r in kept]
        name = f"stats-{unit}.json"
        atomic.write_json(
            ctx.out_dir / name, {"captions": len(kept), "mean_words": sum(words) / max(1, len(words))}
        )
        return contract.UnitResult({name: len(kept)}, len(rows), len(kept), rejects)

    def finalize(folder: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"captions": sum(r["samples_out"] for r in records)}

    return Work(units, process, finalize=finalize)


def shows(spec: PipelineSpec, folder: Path, state: dict[str, Any]) -> Shows:
    per_shard = [
        {"shard": p.stem, **json.loads(p.read_text(encoding="utf-8"))}
        for p in sorted(folder.glob("stats-*.json"))
    ]
    return Shows(
        lines=(f"Caption stats: {state['captions']} captions of {MIN_WORDS}+ words in {folder}",),
        tables=(
            Table("caption-stats-shards", "caption-stats: captions and mean words per shard", per_shard),
        ),
    )


STAGE = Stage("caption-stats", deps=("ingest",), config=config, plan=plan, shows=shows)
