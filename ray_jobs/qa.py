"""The qa stage's ray engine: vLLM engines run by ray.data.llm (qa.backend vllm).

One Ray Data pass streams every pending unit's captions through `qa.vllm.concurrency` vLLM
replicas (`gpus_per_replica` GPUs each) and saves generated text unit by unit as batches arrive,
so the engines load once per run, not once per unit, and a killed run keeps what it finished.
Parsing, filtering, units and the manifest are the core stage's (`mvlp_core.stages.qa.stage`).
ray.data.llm and vLLM are imported only when the backend loads: neither installs on a machine
without GPUs.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from mvlp_core import contract
from mvlp_core.spec import PipelineSpec, VLLMQASpec
from mvlp_core.stages.qa.prompt import CUE
from mvlp_core.stages.qa.vllm_rows import postprocess_row, preprocess_row, processor_config_kwargs

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


class VLLMQuestioner:
    def __init__(self, spec: VLLMQASpec, pairs: int = 1, flush_rows: int = 256) -> None:
        self.spec = spec
        self.pairs = pairs
        self.flush_rows = flush_rows
        self.generator = f"vllm:{spec.model}"
        self.prefix = CUE if spec.mode == "completion" else ""
        self._llm: Any = None

    def load(self) -> None:
        self._llm = self._llm or require_vllm()

    def build(self) -> Any:
        """The ray.data.llm processor: config, preprocess and postprocess from vllm_rows."""
        self.load()
        config = self._llm.vLLMEngineProcessorConfig(**processor_config_kwargs(self.spec))
        spec, pairs = self.spec, self.pairs
        return self._llm.build_processor(
            config,
            preprocess=lambda row: preprocess_row(row, spec, pairs),
            postprocess=postprocess_row,
        )

    def generate_units(self, todo: dict[str, list[str]], save: SaveFn) -> None:
        """One streaming pass over all pending captions; text saved per unit as it arrives."""
        if not todo:
            return
        import pyarrow as pa
        import ray

        table = pa.table(
            {
                "unit": [u for u, caps in todo.items() for _ in caps],
                "caption": [c for caps in todo.values() for c in caps],
            }
        )
        out = self.build()(ray.data.from_arrow(table))
        pending: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
        for batch in out.iter_batches(batch_size=self.flush_rows, batch_format="pyarrow"):
            columns = (batch.column(c).to_pylist() for c in ("unit", "caption", "text"))
            for unit, caption, text in zip(*columns):
                pending[unit][0].append(caption)
                pending[unit][1].append(text)
            for unit, (caps, texts) in list(pending.items()):
                save(unit, caps, texts)
                del pending[unit]

    def generate(self, captions: list[str]) -> list[str]:
        """Captions the up-front pass did not return (rare): one more pass for just those."""
        got: dict[str, str] = {}
        self.generate_units({"_": captions}, lambda _u, caps, texts: got.update(zip(caps, texts)))
        return [got.get(c, "") for c in captions]


def questioner(spec: PipelineSpec) -> VLLMQuestioner:
    """The questioner the qa stage uses on its ray engine (the default engine for qa.backend vllm)."""
    if spec.qa.backend != "vllm" or spec.qa.vllm is None:
        raise contract.StageError(
            "the qa stage's ray engine runs qa.backend vllm; set qa.backend: vllm with qa.vllm.model, "
            "or run qa on the local engine (execution.engines.qa: local)"
        )
    return VLLMQuestioner(spec.qa.vllm, spec.qa.pairs_per_caption)
