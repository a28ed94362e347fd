"""The translate stage's ray engine: a Ray Data actor pool (`execution.engines.translate: ray`).

The download stage's caption parquet streams through `map_batches` into a pool of actors, each
holding one loaded backend (a model on its GPU, or an HTTP client); actor calls carry about
`translate.ray.batch_tokens` source tokens, and the backends batch by tokens inside. Results
stream back to the driver, which commits each unit through the stage contract as soon as all of
its (sample, language) items have arrived, so a killed job resumes at unit granularity and the
output and manifest are exactly the in-process stage's (same fingerprint: the engine is not part
of it). Ray is joined or started by `ray_jobs.connect`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from mvlp_core import contract
from mvlp_core.spec import PipelineSpec
from mvlp_core.stages.translate.stage import (
    Executor,
    Item,
    UnitItems,
    is_selected,
    make_backend,
    samples_path,
    translate_records,
)
from ray_jobs.connect import connect, warn_if_pool_fills_cluster

UNIT_RE = re.compile(r"samples-(\d+)\.parquet$")
CHARS_PER_TOKEN = 4  # a subword token is ~4 characters of English


class TranslateActor:
    """One backend per actor, loaded once; a call translates a batch into every language."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = PipelineSpec.model_validate(spec)
        self.backend = make_backend(self.spec)
        self.backend.load()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        keys, captions, units = list(batch["key"]), list(batch["caption"]), list(batch["unit"])
        unit_of = dict(zip(keys, units))
        out: dict[str, list[Any]] = defaultdict(list)
        for lang in self.spec.languages:
            for item in translate_records(self.backend, self.spec.translate.filters, keys, captions, lang):
                reject = item.reject or contract.Reject(None, "", "")
                for column, value in (
                    ("unit", unit_of[item.key]),
                    ("key", item.key),
                    ("lang", lang),
                    ("text", item.text),
                    ("reason", reject.reason),
                    ("detail", reject.detail),
                ):
                    out[column].append(value)
        return dict(out)


def _selected(spec: PipelineSpec) -> Callable[[pa.Table], pa.Table]:
    fraction = spec.translate.sample_fraction

    def select(batch: pa.Table) -> pa.Table:
        mask = [is_selected(k, fraction) for k in batch.column("key").to_pylist()]
        units = [UNIT_RE.search(p)[1] for p in batch.column("path").to_pylist()]
        return batch.append_column("unit", pa.array(units, pa.string())).filter(pa.array(mask))

    return select


def _batch_rows(spec: PipelineSpec, first: Path) -> int:
    """Rows per actor call so that a call carries about `ray.batch_tokens` source tokens."""
    captions = pq.read_table(first, columns=["caption"]).column("caption").to_pylist()
    mean_tokens = 2 + sum(len(c or "") for c in captions) / max(1, len(captions)) / CHARS_PER_TOKEN
    return max(1, int(spec.translate.ray.batch_tokens / mean_tokens))


def ray_executor(spec: PipelineSpec, download: Path) -> Executor:
    def start(pending: list[str]) -> Callable[[str], UnitItems]:
        connect(spec)
        paths = [samples_path(download, u) for u in pending]
        selected = {
            u: sum(
                is_selected(k, spec.translate.sample_fraction)
                for k in pq.read_table(p, columns=["key"]).column("key").to_pylist()
            )
            for u, p in zip(pending, paths)
        }
        expected = {u: n * len(spec.languages) for u, n in selected.items()}
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # units arrive in order: bounded buffering
        cfg = spec.translate.ray
        warn_if_pool_fills_cluster("translate", cfg.concurrency, cfg.num_cpus)
        ds = ray.data.read_parquet([str(p) for p in paths], include_paths=True)
        ds = ds.select_columns(["key", "caption", "path"])
        ds = ds.map_batches(_selected(spec), batch_format="pyarrow")
        ds = ds.map_batches(
            TranslateActor,
            fn_constructor_kwargs={"spec": spec.model_dump(mode="json", by_alias=True)},
            batch_size=_batch_rows(spec, paths[0]),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
            num_cpus=cfg.num_cpus,
            num_gpus=cfg.num_gpus or None,
        )
        rows = iter(ds.iter_rows())
        buffers: dict[str, list[Item]] = defaultdict(list)

        def unit_items(unit: str) -> UnitItems:
            while len(buffers[unit]) < expected[unit]:
                try:
                    r = next(rows)
                except StopIteration:
                    raise contract.StageError(
                        f"translate (ray): the job ended with {len(buffers[unit])} of "
                        f"{expected[unit]} items of unit {unit}; re-run to resume, with --force "
                        "if it persists"
                    ) from None
                reject = contract.Reject(r["key"], r["reason"], r["detail"]) if r["reason"] else None
                buffers[r["unit"]].append(Item(r["key"], r["lang"], r["text"], reject))
            return UnitItems(selected[unit], buffers.pop(unit))

        return unit_items

    return start
