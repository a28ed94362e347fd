"""The qa stage's ray engine (`execution.engines.qa: ray`), for every backend the stage has.

One Ray Data pass streams every pending unit's captions through a pool of workers and saves what
they return unit by unit as batches arrive (the stage's `PartialStore`), so models load once per
run, not once per unit, and a killed run keeps what it finished; the units then only parse and
filter (`mvlp_core.stages.qa.stage`: units, filters, rejects and the manifest are the core
stage's, so the output is the local engine's).

- `vllm`: vLLM engines run by ray.data.llm (`qa.vllm.concurrency` replicas of
  `gpus_per_replica` GPUs). ray.data.llm and vLLM are imported only when the backend loads:
  neither installs on a machine without GPUs.
- `rules`, `hf`, `http`: an actor pool of `qa.ray.concurrency` actors (`qa.ray.num_cpus`,
  `num_gpus` each), each holding the backend the local engine would build, loaded once. Model
  backends return generated text; `rules` returns its candidate pairs, saved as JSON and read back
  as they were (`RayDataQuestioner.parse`). An `http` endpoint's key is read from its variable
  here and handed to the actors (not through the job's runtime_env, which the dashboard shows).

The captions go in as a dataset repartitioned into blocks of about one worker batch
(`input_dataset`), never fewer blocks than workers: a dataset built from one table is one block,
which Ray Data would hand to a single worker, the others idle until it is done.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from mvlp_core import contract
from mvlp_core.spec import PipelineSpec, VLLMQASpec
from mvlp_core.stages.qa.parser import QAPair
from mvlp_core.stages.qa.prompt import PAPER, QAPrompt
from mvlp_core.stages.qa.stage import make_backend, qa_prompt
from mvlp_core.stages.qa.vllm_rows import postprocess_row, preprocess_row, processor_config_kwargs
from ray_jobs.connect import connect

FIX = (
    "install Ray's LLM extra on the GPU nodes (pip install 'ray[llm]', which brings vLLM) or "
    "choose another backend: --set qa.backend=http (an OpenAI-compatible server, e.g. `vllm serve`"
    " or llama.cpp) or --set qa.backend=hf"
)
SaveFn = Callable[[str, list[str], list[str]], None]


def require_vllm() -> Any:
    """The ray.data.llm module, or a StageError that names the fix."""
    try:
        import ray.data.llm as llm
    except ImportError as err:
        raise contract.StageError(f"qa.backend=vllm needs ray.data.llm ({err}); {FIX}") from None
    if importlib.util.find_spec("vllm") is None:
        raise contract.StageError(f"qa.backend=vllm needs vLLM, which is not installed; {FIX}")
    return llm


def partitioning(rows: int, workers: int, batch_rows: int) -> tuple[int, int]:
    """(blocks, rows per batch) for `rows` captions on `workers` workers taking batches of at
    most `batch_rows`: batches small enough that every worker gets one from the start, a block
    per batch (map_batches would bundle smaller blocks into one call)."""
    batch = max(1, min(batch_rows, math.ceil(rows / max(1, workers))))
    return max(1, math.ceil(rows / batch)), batch


def input_dataset(todo: dict[str, list[str]], workers: int, batch_rows: int) -> tuple[Any, int]:
    """The (unit, caption) rows of `todo` as a Ray dataset in `partitioning`'s blocks, and the
    batch size that goes with them."""
    import pyarrow as pa
    import ray

    table = pa.table(
        {
            "unit": [u for u, caps in todo.items() for _ in caps],
            "caption": [c for caps in todo.values() for c in caps],
        }
    )
    blocks, batch = partitioning(table.num_rows, workers, batch_rows)
    return ray.data.from_arrow(table).repartition(blocks), batch


def _save_stream(out: Any, save: SaveFn, flush_rows: int) -> None:
    """Save (unit, caption, text) rows of `out` unit by unit as its batches arrive."""
    pending: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    try:
        for batch in out.iter_batches(batch_size=flush_rows, batch_format="pyarrow"):
            columns = (batch.column(c).to_pylist() for c in ("unit", "caption", "text"))
            for unit, caption, text in zip(*columns):
                pending[unit][0].append(caption)
                pending[unit][1].append(text)
            for unit, (caps, texts) in list(pending.items()):
                save(unit, caps, texts)
                del pending[unit]
    except contract.StageError:
        raise
    except Exception as err:  # Ray's wrappers of what failed in a worker
        raise _stage_error(err) from None


# how a project error raised in a worker reads in the text of the Ray error that reports it (an
# actor that died in __init__ keeps only the text)
_PROJECT_ERROR = re.compile(r"^mvlp_core\.[\w.]+Error: (.+)$", re.M)


def _stage_error(err: BaseException) -> contract.StageError:
    """The StageError a worker raised (a model that does not load, an endpoint that keeps
    failing), found in the exceptions Ray wraps it in or in their text; else one naming the
    failure."""
    seen, todo = set(), [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, contract.StageError):
            return contract.StageError(str(e))
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    said = _PROJECT_ERROR.findall(str(err))
    if said:
        return contract.StageError(said[-1])
    text = (str(err).strip().splitlines() or [""])[-1][:300]
    return contract.StageError(
        f"qa (ray): the Ray Data pass failed ({type(err).__name__}: {text}); re-run the stage: "
        "saved batches are kept"
    )


class VLLMQuestioner:
    def __init__(
        self,
        spec: VLLMQASpec,
        prompt: QAPrompt = PAPER,
        flush_rows: int = 256,
        pipeline: PipelineSpec | None = None,
    ) -> None:
        self.spec = spec
        self.prompt = prompt
        self.flush_rows = flush_rows
        self.generator = f"vllm:{spec.model}"
        self.prefix = prompt.cue if spec.mode == "completion" else ""
        self.pipeline = pipeline  # its execution section says which Ray to join
        self._llm: Any = None

    def load(self) -> None:
        self._llm = self._llm or require_vllm()
        if self.pipeline is not None:
            connect(self.pipeline)

    def build(self) -> Any:
        """The ray.data.llm processor: config, preprocess and postprocess from vllm_rows."""
        self.load()
        config = self._llm.vLLMEngineProcessorConfig(**processor_config_kwargs(self.spec))
        spec, prompt = self.spec, self.prompt
        return self._llm.build_processor(
            config,
            preprocess=lambda row: preprocess_row(row, spec, prompt),
            postprocess=postprocess_row,
        )

    def generate_units(self, todo: dict[str, list[str]], save: SaveFn) -> None:
        """One streaming pass over all pending captions; text saved per unit as it arrives."""
        if not todo:
            return
        ds, _ = input_dataset(todo, self.spec.concurrency, self.spec.batch_size)
        _save_stream(self.build()(ds), save, self.flush_rows)

    def generate(self, captions: list[str]) -> list[str]:
        """Captions the up-front pass did not return (rare): one more pass for just those."""
        got: dict[str, str] = {}
        self.generate_units({"_": captions}, lambda _u, caps, texts: got.update(zip(caps, texts)))
        return [got.get(c, "") for c in captions]


def _encode(pairs: list[QAPair]) -> str:
    return json.dumps([[p.question, p.answer] for p in pairs], ensure_ascii=False)


class QuestionerActor:
    """One backend per actor (the local engine's, from the spec), loaded once; a call answers a
    batch of (unit, caption) rows with (unit, caption, text)."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str]) -> None:
        os.environ.update(env)  # the endpoint's key, read from its variable by the driver
        self.backend = make_backend(PipelineSpec.model_validate(spec))
        self.backend.load()

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        captions = [c or "" for c in batch.column("caption").to_pylist()]
        if hasattr(self.backend, "candidates"):
            texts = [_encode(pairs) for pairs in self.backend.candidates(captions)]
        else:
            texts = self.backend.generate(captions)
        return pa.table({"unit": batch.column("unit"), "caption": captions, "text": texts})


class RayDataQuestioner:
    """The rules, hf and http backends on a Ray Data actor pool."""

    def __init__(self, spec: PipelineSpec, flush_rows: int = 256) -> None:
        self.spec = spec
        self.flush_rows = flush_rows
        local = make_backend(spec)  # built, not loaded: its name, prefix and kind
        self.generator = local.generator
        self.rules = hasattr(local, "candidates")
        self.prefix = "" if self.rules else local.prefix

    def load(self) -> None:
        connect(self.spec)

    def parse(self, text: str) -> tuple[list[QAPair], list[str]] | None:
        """The rules' candidates as the actor saved them; None for generated text (the stage
        parses that itself)."""
        if not self.rules:
            return None
        return [QAPair(q, a) for q, a in json.loads(text or "[]")], []

    def _env(self) -> dict[str, str]:
        http = self.spec.qa.http
        name = http.api_key_env if self.spec.qa.backend == "http" and http else None
        return {name: os.environ[name]} if name and name in os.environ else {}

    def generate_units(self, todo: dict[str, list[str]], save: SaveFn) -> None:
        """One streaming pass over all pending captions; text saved per unit as it arrives."""
        if not todo:
            return
        import ray

        from ray_jobs.connect import warn_if_pool_fills_cluster

        pool = self.spec.qa.ray
        warn_if_pool_fills_cluster("qa", pool.concurrency, pool.num_cpus)
        ds, batch = input_dataset(todo, pool.concurrency, self.spec.qa.checkpoint_every)
        out = ds.map_batches(
            QuestionerActor,
            fn_constructor_kwargs={
                "spec": self.spec.model_dump(mode="json", by_alias=True),
                "env": self._env(),
            },
            batch_size=batch,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=pool.concurrency),
            num_cpus=pool.num_cpus,
            num_gpus=pool.num_gpus or None,
        )
        _save_stream(out, save, self.flush_rows)

    def generate(self, captions: list[str]) -> list[str]:
        """Captions the up-front pass did not return (rare): one more pass for just those."""
        got: dict[str, str] = {}
        self.generate_units({"_": captions}, lambda _u, caps, texts: got.update(zip(caps, texts)))
        return [got.get(c, "") for c in captions]


def questioner(spec: PipelineSpec) -> VLLMQuestioner | RayDataQuestioner:
    """The questioner the qa stage uses on its ray engine (the default engine for qa.backend
    vllm): vLLM engines for vllm, an actor pool of the backend for the others."""
    if spec.qa.backend != "vllm":
        return RayDataQuestioner(spec)
    if spec.qa.vllm is None:
        raise contract.StageError(
            "qa.vllm: required when qa.backend is 'vllm' (model: name or path, readable by every GPU worker)"
        )
    return VLLMQuestioner(spec.qa.vllm, qa_prompt(spec), pipeline=spec)
