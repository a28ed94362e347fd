"""What the `vllm` backend hands ray.data.llm, as plain data (no ray, no vllm import here).

`ray_jobs.qa` builds `vLLMEngineProcessorConfig(**processor_config_kwargs(spec))` and
`build_processor(config, preprocess=..., postprocess=...)` from these functions, so everything but
the engine itself is testable on a machine without GPUs.
"""

from __future__ import annotations

from typing import Any

from mvlp_core.spec import VLLMQASpec
from mvlp_core.stages.qa.prompt import QAPrompt


def processor_config_kwargs(spec: VLLMQASpec) -> dict[str, Any]:
    """Keyword arguments of ray.data.llm.vLLMEngineProcessorConfig (Ray >= 2.49 API)."""
    engine = {
        "max_model_len": spec.max_model_len,
        "tensor_parallel_size": spec.gpus_per_replica,
        "enable_prefix_caching": True,  # every prompt shares the instruction and examples
        **spec.engine_kwargs,
    }
    kwargs: dict[str, Any] = {
        "model_source": spec.model,
        "engine_kwargs": engine,
        "concurrency": spec.concurrency,
        "batch_size": spec.batch_size,
        "chat_template_stage": spec.mode == "chat",  # completion mode sends the raw prompt
    }
    if engine["tensor_parallel_size"] * engine.get("pipeline_parallel_size", 1) > 1:
        # a replica of several GPUs runs vLLM's Ray executor: its engine actor asks Ray for no GPU
        # (its workers hold them) and must still see the node's, as Ray 2.60 leaves them by
        # default; the rest of the job hides GPUs from such actors (ray_jobs/connect.py)
        kwargs["runtime_env"] = {"env_vars": {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}}
    return kwargs


def sampling_params(spec: VLLMQASpec, prompt: QAPrompt) -> dict[str, Any]:
    return {"temperature": spec.temperature, "max_tokens": spec.max_tokens, "stop": prompt.stop}


def preprocess_row(row: dict[str, Any], spec: VLLMQASpec, prompt: QAPrompt) -> dict[str, Any]:
    """A (unit, caption) row -> the row ray.data.llm expects (messages or prompt)."""
    params = sampling_params(spec, prompt)
    out = {"unit": row["unit"], "caption": row["caption"], "sampling_params": params}
    if spec.mode == "chat":
        out["messages"] = prompt.messages(row["caption"])
    else:
        out["prompt"] = prompt.completion(row["caption"])
    return out


def postprocess_row(row: dict[str, Any]) -> dict[str, Any]:
    """The engine's row -> (unit, caption, text); a failed row yields empty text (a reject)."""
    return {"unit": row["unit"], "caption": row["caption"], "text": row.get("generated_text") or ""}
