"""The model backends' plumbing without a model: the partial store that makes units resumable,
the http questioner against the fake server, and the vllm rows and config for ray.data.llm."""

from __future__ import annotations

import sys

import pytest

from mvlp_core import contract
from mvlp_core.spec import HTTPQASpec, VLLMQASpec
from mvlp_core.stages.qa.http import HTTPQuestioner
from mvlp_core.stages.qa.partial import PartialStore
from mvlp_core.stages.qa.prompt import CUE, EXAMPLES, SENTENCE, build_messages, build_prompt
from mvlp_core.stages.qa.vllm_rows import postprocess_row, preprocess_row, processor_config_kwargs
from tests.fakes.openai_server import FakeOpenAI, Fault


def test_partial_store_round_trip_and_clear(tmp_path):
    store = PartialStore(tmp_path)
    assert store.load("00000") == {} and store.batches("00000") == 0
    store.save("00000", ["a", "b"], ["ta", "tb"])
    store.save("00000", ["c"], ["tc"])
    store.save("00001", [], [])
    assert store.load("00000") == {"a": "ta", "b": "tb", "c": "tc"}
    assert store.batches("00000") == 2 and store.batches("00001") == 0
    with pytest.raises(ValueError):
        store.save("00000", ["d"], [])
    store.clear()
    assert store.load("00000") == {}


def test_prompt_asks_for_n_pairs_and_chat_turns_mirror_it():
    one, three = build_prompt("a cat"), build_prompt("a cat", 3)
    assert one.endswith(f"{SENTENCE} a cat\n{CUE}") and "Write one question" in one
    assert one.count("\nQ: ") == len(EXAMPLES) and three.count("\nQ: ") > len(EXAMPLES)
    messages = build_messages("a cat", 2)
    assert messages[0]["role"] == "system" and "up to 2 questions" in messages[0]["content"]
    assert messages[-1] == {"role": "user", "content": f"{SENTENCE} a cat"}
    assert [m["role"] for m in messages[1:3]] == ["user", "assistant"]
    assert messages[2]["content"].count("Q: ") == 2


@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_http_questioner_modes(mode):
    def respond(kind, body):
        assert kind == mode
        assert body["stop"] and body["temperature"] == 0.0 and body["max_tokens"] == 64
        last = body["messages"][-1]["content"] if kind == "chat" else body["prompt"]
        return f"echo {last.rsplit(SENTENCE, 1)[1].split(chr(10))[0].strip()}"

    with FakeOpenAI(respond=respond) as fake:
        spec = HTTPQASpec(base_url=fake.url, model="m", mode=mode, max_tokens=64, concurrency=3)
        q = HTTPQuestioner(spec, pairs=1)
        q.load()
        assert q.generate(["a cat", "a dog", "a cow"]) == ["echo a cat", "echo a dog", "echo a cow"]
    assert q.prefix == (CUE if mode == "completion" else "")
    assert q.generator == "http:m"


def test_http_questioner_stops_on_a_failing_caption():
    with FakeOpenAI() as fake:
        fake.fault_for = lambda body: Fault.error(400) if "boom" in str(body) else None
        spec = HTTPQASpec(base_url=fake.url, model="m", concurrency=2, backoff_base=0.0)
        q = HTTPQuestioner(spec)
        with pytest.raises(contract.StageError, match="HTTP 400"):
            q.generate(["a cat", "boom", "a dog"])


def test_vllm_config_kwargs_build_a_real_processor_config():
    spec = VLLMQASpec(
        model="/models/llama",
        concurrency=4,
        gpus_per_replica=2,
        batch_size=32,
        engine_kwargs={"gpu_memory_utilization": 0.8},
    )
    kwargs = processor_config_kwargs(spec)
    assert kwargs["engine_kwargs"]["tensor_parallel_size"] == 2
    llm = pytest.importorskip("ray.data.llm")
    config = llm.vLLMEngineProcessorConfig(**kwargs)
    assert (config.model_source, config.concurrency, config.batch_size) == ("/models/llama", 4, 32)
    assert config.engine_kwargs["gpu_memory_utilization"] == 0.8
    # two GPUs a replica: vLLM's engine actor asks for none and must see the node's
    assert config.runtime_env == {"env_vars": {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}}
    completion = processor_config_kwargs(VLLMQASpec(model="m", mode="completion"))
    assert completion["chat_template_stage"] is False and "runtime_env" not in completion  # one GPU


def test_vllm_pre_and_postprocess_rows():
    spec = VLLMQASpec(model="m", temperature=0.0, max_tokens=50)
    row = preprocess_row({"unit": "00001", "caption": "a cat"}, spec, 1)
    assert row["messages"] == build_messages("a cat", 1) and "prompt" not in row
    assert row["sampling_params"]["max_tokens"] == 50 and row["unit"] == "00001"
    raw = preprocess_row({"unit": "u", "caption": "a cat"}, spec.model_copy(update={"mode": "completion"}), 2)
    assert raw["prompt"] == build_prompt("a cat", 2) and "messages" not in raw
    out = postprocess_row({**row, "generated_text": "Q: x?\nA: y", "num_generated_tokens": 5})
    assert out == {"unit": "00001", "caption": "a cat", "text": "Q: x?\nA: y"}
    assert postprocess_row({"unit": "u", "caption": "c", "generated_text": None})["text"] == ""


def test_vllm_unavailable_names_the_fix(monkeypatch):
    qa_job = pytest.importorskip("ray_jobs.qa")
    if qa_job.importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(contract.StageError, match=r"ray\[llm\].*qa\.backend=http"):
        qa_job.VLLMQuestioner(VLLMQASpec(model="m")).load()
    monkeypatch.setitem(sys.modules, "ray.data.llm", None)  # an old Ray without ray.data.llm
    with pytest.raises(contract.StageError, match="needs ray.data.llm"):
        qa_job.require_vllm()


def test_fingerprint_holds_only_the_active_backend_and_what_changes_output():
    from mvlp_core.spec import PipelineSpec
    from mvlp_core.stages.qa.stage import config

    def spec(**qa):
        return PipelineSpec.model_validate(
            {"name": "t", "dataset": {"ref": "synthetic"}, "languages": ["de"], "qa": qa}
        )

    http = {"base_url": "http://a:1/v1", "model": "llama", "concurrency": 2}
    base = config(spec(backend="http", http=http, vllm={"model": "x"}))
    assert "vllm" not in base["qa"] and "hf" not in base["qa"] and base["qa"]["http"]["model"] == "llama"
    moved = {**http, "base_url": "http://b:2/v1", "concurrency": 16, "requests_per_second": 5}
    assert config(spec(backend="http", http=moved)) == base
    assert config(spec(backend="http", http={**http, "model": "qwen"})) != base
    assert config(spec(backend="http", http=http, pairs_per_caption=2)) != base
    vllm = config(spec(backend="vllm", vllm={"model": "m", "gpus_per_replica": 8}))
    assert vllm == config(spec(backend="vllm", vllm={"model": "m"}))
