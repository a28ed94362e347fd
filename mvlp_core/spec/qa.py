"""The qa stage's section: the questioner backends (rules, hf, an OpenAI-compatible endpoint, vLLM)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mvlp_core.spec.base import Strict, perf_only
from mvlp_core.spec.endpoint import EndpointSpec


class HFQASpec(Strict):
    model: str
    batch_size: int = Field(8, gt=0)
    max_new_tokens: int = Field(96, gt=0)


class HTTPQASpec(EndpointSpec):
    """The questioner behind an OpenAI-compatible endpoint."""

    model: str = Field(description="the model name the server serves")
    mode: Literal["chat", "completion"] = Field(
        "chat", description="chat: /chat/completions with few-shot turns; completion: raw prompt"
    )
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(128, gt=0)


class VLLMQASpec(Strict):
    """vLLM engines run by ray.data.llm on GPU workers (the qa stage's `ray` engine, `ray_jobs.qa`)."""

    model: str = Field(description="checkpoint name or path, readable by every GPU worker")
    mode: Literal["chat", "completion"] = "chat"
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(128, gt=0)
    concurrency: int = perf_only(1, gt=0, description="vLLM engine replicas")
    gpus_per_replica: int = perf_only(1, gt=0, description="tensor-parallel size of a replica")
    batch_size: int = perf_only(64, gt=0)
    max_model_len: int = perf_only(4096, gt=0)
    engine_kwargs: dict[str, Any] = perf_only({}, description="extra vLLM engine arguments")


class QARaySpec(Strict):
    """The actor pool the rules, hf and http backends run on with `execution.engines.qa: ray`
    (vllm sizes its own engines: qa.vllm.concurrency, gpus_per_replica)."""

    concurrency: int = perf_only(2, gt=0, le=1024, description="actors, each with one loaded backend")
    num_cpus: float = perf_only(1, gt=0, description="CPUs per actor")
    num_gpus: float = perf_only(0, ge=0, description="GPUs per actor (hf on GPU nodes: 1)")


class QASpec(Strict):
    backend: Literal["rules", "hf", "http", "vllm"] = "rules"
    pairs_per_caption: int = Field(
        1, gt=0, le=32, description="QA pairs asked for and kept per caption (UniGen's CCQA3M: 1)"
    )
    prompt: Literal["paper", "fewshot"] = Field(
        "paper",
        description="the model backends' prompt: paper (UniGen's instruction and its example in the "
        "<sentence>/<question>/<answer> pattern, one pair a caption) or fewshot (six Q:/A: worked "
        "examples, up to pairs_per_caption pairs)",
    )
    max_output_chars: int = Field(
        1500,
        gt=0,
        le=100_000,
        description="longer model outputs are truncated and counted as overlong_output",
    )
    checkpoint_every: int = perf_only(
        256, gt=0, description="captions per saved batch inside a unit (resume granularity)"
    )
    hf: HFQASpec | None = None
    http: HTTPQASpec | None = None
    vllm: VLLMQASpec | None = None
    ray: QARaySpec = perf_only(QARaySpec(), description="the ray engine's actor pool (not vllm's)")

    @model_validator(mode="after")
    def _prompt_fits_pairs(self) -> QASpec:
        if self.backend != "rules" and self.prompt == "paper" and self.pairs_per_caption != 1:
            raise ValueError(
                f"qa.prompt 'paper' asks for one question-answer pair a caption, as UniGen did; "
                f"for pairs_per_caption {self.pairs_per_caption} set qa.prompt: fewshot"
            )
        return self
