"""qa: question–answer pairs for each downloaded sample's English caption (UniGen's CCQA3M).

Units are download shards. An item is one sample: it is output when at least one pair survives the
filters (up to `pairs_per_caption` rows in `NNNNN.parquet`: key, question, answer, generator),
otherwise it is one reject named after what went wrong: a problem of the model output as a whole
(empty_output, missing_tags, repetition, overlong_output) or else the most common reason its
candidate pairs were filtered for, or `no_candidates`.

Backends either return candidate pairs directly (`rules`) or generate text that is parsed here
(`hf`, `http`, `vllm`). Generated text is saved in batches inside a unit (`partial.PartialStore`),
so a resumed run re-asks the model only for captions it has not answered yet. The ray engine
(`ray_jobs.qa`, every backend) streams many units through one pool of workers: it generates for
every pending unit up front, saving into the same store, and the units then only parse and
filter (what its workers saved for `rules`, their candidates, it reads back itself: `parse`).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from mvlp_core import atomic, contract
from mvlp_core.spec import PipelineSpec, fingerprint_config
from mvlp_core.stage import LOCAL, Context, Needs, Stage, Work, local_or_ray
from mvlp_core.stages.qa.filters import Filtered, filter_pairs
from mvlp_core.stages.qa.parser import OUTPUT_REASONS, QAPair, parse_output
from mvlp_core.stages.qa.partial import PartialStore
from mvlp_core.stages.qa.prompt import QAPrompt
from mvlp_core.stages.qa.rules import RulesQuestioner

SAMPLES_RE = re.compile(r"^samples-(\d+)\.parquet$")
SCHEMA = pa.schema([(name, pa.string()) for name in ("key", "question", "answer", "generator")])
MODEL_BACKENDS = ("hf", "http", "vllm")
SaveFn = Callable[[str, list[str], list[str]], None]


class Questioner(Protocol):
    """`rules`-like backends define `candidates`; model backends define `generate` and `prefix`
    (text put back in front of the output before parsing, e.g. the prompt's final "Q:"), and may
    define `generate_units(todo, save)` (every pending unit's captions up front) and
    `parse(text) -> (pairs, problems) | None` (text they saved that is not model output)."""

    generator: str

    def load(self) -> None: ...


def make_backend(spec: PipelineSpec) -> Questioner:
    qa = spec.qa
    if qa.backend == "rules":
        return RulesQuestioner()
    section = getattr(qa, qa.backend)
    if section is None:
        raise contract.StageError(
            f"qa.{qa.backend}: required when qa.backend is '{qa.backend}' (model: name or path)"
        )
    # Imported here so that rules-only runs never pay for torch, transformers or httpx.
    if qa.backend == "hf":
        from mvlp_core.stages.qa.hf import HFQuestioner

        return HFQuestioner(section, qa_prompt(spec))
    if qa.backend == "http":
        from mvlp_core.stages.qa.http import HTTPQuestioner

        return HTTPQuestioner(section, qa_prompt(spec))
    raise contract.StageError(
        "qa.backend 'vllm' runs vLLM engines through Ray Data, on the qa stage's ray engine (its "
        "default for vllm; remove execution.engines.qa: local) on nodes with GPUs and ray[llm]; "
        "without GPUs use qa.backend=http (an OpenAI-compatible server) or hf"
    )


def qa_prompt(spec: PipelineSpec) -> QAPrompt:
    return QAPrompt(spec.qa.prompt, spec.qa.pairs_per_caption)


def config(spec: PipelineSpec) -> dict[str, Any]:
    """The config that determines output; a backend's section only counts when it is active."""
    section = fingerprint_config(spec.qa)
    for name in MODEL_BACKENDS:
        if spec.qa.backend != name:
            section.pop(name)
    if spec.qa.backend == "rules":
        section.pop("max_output_chars")  # rules write no text and read no prompt
        section.pop("prompt")
    return {"qa": section}


def shard_ids(download: Path) -> list[str]:
    return sorted(m[1] for p in download.iterdir() if (m := SAMPLES_RE.match(p.name)))


def read_unit(download: Path, unit: str) -> tuple[list[str], list[str]]:
    samples = pq.read_table(download / f"samples-{unit}.parquet", columns=["key", "caption"])
    captions = [c or "" for c in samples.column("caption").to_pylist()]
    return samples.column("key").to_pylist(), captions


def unique_captions(captions: list[str]) -> list[str]:
    return list(dict.fromkeys(c for c in captions if c.strip()))


def caption_reject(
    key: str, caption: str, result: Filtered, generator: str, problems: list[str] = ()
) -> contract.Reject:
    """One reject for a caption without a usable pair, named after its main failure."""
    output_problem = next((p for p in reversed(OUTPUT_REASONS) if p in problems), None)
    if output_problem:
        tally = ", ".join(f"{k}={v}" for k, v in Counter(r.reason for r in result.rejected).items())
        return contract.Reject(key, output_problem, f"{generator}: {tally or 'no pair parsed'}")
    if not result.rejected:
        detail = "empty caption" if not caption.strip() else f"{generator} produced no pair"
        return contract.Reject(key, "no_candidates", detail)
    counts = Counter(r.reason for r in result.rejected)
    reason = counts.most_common(1)[0][0]
    example = next(r for r in result.rejected if r.reason == reason)
    tally = ", ".join(f"{k}={v}" for k, v in counts.items())
    q, a = example.pair
    return contract.Reject(key, reason, f"{tally}; e.g. {q[:60]!r} -> {a[:40]!r}")


def generate_unit(
    backend: Any, unit: str, captions: list[str], store: PartialStore, batch: int
) -> dict[str, str]:
    """Generated text for every caption of a unit, resuming from and adding to the store."""
    done = store.load(unit)
    todo = [c for c in captions if c not in done]
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        texts = backend.generate(chunk)
        store.save(unit, chunk, texts)
        done.update(zip(chunk, texts))
    return done


def candidates_for(
    backend: Any, unit: str, captions: list[str], store: PartialStore, spec: PipelineSpec
) -> dict[str, tuple[list[QAPair], list[str]]]:
    """caption -> (candidate pairs, problems of the model output)."""
    if hasattr(backend, "candidates"):
        return {c: (pairs, []) for c, pairs in zip(captions, backend.candidates(captions))}
    texts = generate_unit(backend, unit, captions, store, spec.qa.checkpoint_every)
    # an engine whose workers save something other than model text (the ray engine's rules:
    # their candidates) reads it back itself; None: model text, parsed here
    own = getattr(backend, "parse", None) or (lambda _text: None)
    out = {}
    for caption in captions:
        out[caption] = own(texts[caption])
        if out[caption] is None:
            parsed = parse_output(backend.prefix + texts[caption], spec.qa.max_output_chars)
            out[caption] = (parsed.pairs, parsed.problems)
    return out


def plan(ctx: Context) -> Work:
    """Ask questions about the download stage's captions. The backend is the engine's (the ray
    engine's vLLM questioner) or the spec's; it loads in `before`, so a complete stage re-runs
    without touching a model."""
    spec, out_dir = ctx.spec, ctx.out_dir
    download = ctx.inputs["download"]
    backend = ctx.hook(spec) if ctx.hook else make_backend(spec)
    store = PartialStore(out_dir)
    keep = spec.qa.pairs_per_caption

    def before(pending: list[str]) -> None:
        backend.load()
        if hasattr(backend, "generate_units"):
            todo = {}
            for unit in pending:
                done = store.load(unit)
                captions = unique_captions(read_unit(download, unit)[1])
                todo[unit] = [c for c in captions if c not in done]
            backend.generate_units({u: c for u, c in todo.items() if c}, store.save)

    def process(unit: str) -> contract.UnitResult:
        sample_keys, captions = read_unit(download, unit)
        by_caption = candidates_for(backend, unit, unique_captions(captions), store, spec)
        rows: list[dict[str, str]] = []
        rejects: list[contract.Reject] = []
        filtered: Counter[str] = Counter()
        for key, caption in zip(sample_keys, captions):
            pairs, problems = by_caption.get(caption, ([], []))
            result = filter_pairs(caption, pairs)
            filtered.update(r.reason for r in result.rejected)
            filtered.update(problems)
            if not result.kept:
                rejects.append(caption_reject(key, caption, result, backend.generator, problems))
            rows += [
                {"key": key, "question": q, "answer": a, "generator": backend.generator}
                for q, a in result.kept[:keep]
            ]
        name = f"{unit}.parquet"
        atomic.write_parquet(out_dir / name, pa.Table.from_pylist(rows, schema=SCHEMA))
        answered = len(sample_keys) - len(rejects)
        return contract.UnitResult(
            files={name: answered},
            samples_in=len(sample_keys),
            samples_out=answered,
            rejects=rejects,
            extra={"pairs": len(rows), "filtered": dict(filtered)},
        )

    def finalize(_: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        store.clear()  # every unit is committed: the saved batches have done their job
        filtered: Counter[str] = Counter()
        for r in records:
            filtered.update(r["extra"]["filtered"])
        return {
            "pairs": sum(r["extra"]["pairs"] for r in records),
            "filtered": dict(sorted(filtered.items())),
            "generator": backend.generator,
        }

    return Work(shard_ids(download), process, before=before, finalize=finalize)


def default_engine(spec: PipelineSpec) -> str:
    return "ray" if spec.qa.backend == "vllm" else LOCAL


ENGINES = local_or_ray("ray_jobs.qa:questioner")


def checks(spec: PipelineSpec) -> list[str]:
    http = spec.qa.http
    if spec.qa.backend == "http" and http.api_key_env and not os.environ.get(http.api_key_env):
        return [f"qa.http.api_key_env names {http.api_key_env}, which is not set; export it"]
    return []


def needs(spec: PipelineSpec) -> Needs:
    qa = spec.qa
    if qa.backend == "vllm":
        v = qa.vllm
        return Needs(
            loads=(v.model,), resources=f"{v.concurrency} vLLM replica(s) x {v.gpus_per_replica} GPU(s)"
        )
    loads = (qa.hf.model,) if qa.backend == "hf" else ()
    if spec.execution.engines.get("qa", default_engine(spec)) == "ray":
        pool = qa.ray
        gpus = f" + {pool.num_gpus:g} GPU(s)" if pool.num_gpus else ""
        where = f"{pool.concurrency} Ray actor(s) x {pool.num_cpus:g} CPU(s){gpus} (qa.ray)"
    else:
        where = "this process"
    if qa.backend == "hf":
        return Needs(loads=loads, resources=f"{where} (a GPU when one is visible)")
    if qa.backend == "http":
        per = " each" if where != "this process" else ""
        return Needs(
            resources=f"{where}: {qa.http.concurrency} requests in flight{per} to {qa.http.base_url} "
            f"({qa.http.model})"
        )
    return Needs(resources=f"{where} (rules, no model)")


STAGE = Stage(
    "qa", ("download",), config, plan, ENGINES, default_engine=default_engine, checks=checks, needs=needs
)
