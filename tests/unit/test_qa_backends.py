"""The model backends' plumbing without a model: the partial store that makes units resumable,
the http questioner against the fake server, and the vllm rows and config for ray.data.llm."""

from __future__ import annotations

import sys

import pytest

from mvlp_core import contract
from mvlp_core.spec import HTTPQASpec, VLLMQASpec
from mvlp_core.stages.qa.http import HTTPQuestioner
from mvlp_core.stages.qa.partial import PartialStore
from mvlp_core.stages.qa.prompt import (
    CUE,
    EXAMPLES,
    PAPER_INSTRUCTION,
    SENTENCE,
    QAPrompt,
    build_messages,
    build_prompt,
)
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


def test_paper_prompt_is_unigens_pattern_verbatim():
    """UniGen §3.2: the instruction, then `<sentence> … <question> … <answer> …` and the next
    `<sentence>`; a completion model continues after the caption's `<question>`."""
    assert PAPER_INSTRUCTION == (
        "Extract accurate and important information to form a question-answer pair exactly from the "
        "sentence following the pattern, avoid using yes/no answers:"
    )
    paper = QAPrompt()
    assert paper.completion("a cat\non  a mat") == (
        f"{PAPER_INSTRUCTION}\n<sentence> a worker sits on a bench in front of a group of young "
        "people. <question> What is the worker in front of? <answer> young people. "
        "<sentence> a cat on a mat <question>"
    )
    assert (paper.cue, paper.stop) == ("<question>", [" <sentence>", "\n<sentence>"])
    assert paper.messages("a cat") == [
        {"role": "system", "content": PAPER_INSTRUCTION},
        {
            "role": "user",
            "content": "<sentence> a worker sits on a bench in front of a group of young people.",
        },
        {"role": "assistant", "content": "<question> What is the worker in front of? <answer> young people."},
        {"role": "user", "content": "<sentence> a cat"},
    ]
    few = QAPrompt("fewshot", 3)
    assert (few.completion("a cat"), few.messages("a cat")) == (
        build_prompt("a cat", 3),
        build_messages("a cat", 3),
    )
    assert few.cue == CUE and few.stop == [f"\n{SENTENCE}", f"\n\n{SENTENCE}"]
    with pytest.raises(ValueError, match="one pair a caption, not 2: use fewshot"):
        QAPrompt("paper", 2)


def test_spec_refuses_the_paper_prompt_with_several_pairs_for_a_model():
    from pydantic import ValidationError

    from mvlp_core.spec import QASpec

    with pytest.raises(ValidationError, match="for pairs_per_caption 3 set qa.prompt: fewshot"):
        QASpec(backend="hf", hf={"model": "m"}, pairs_per_caption=3)
    assert QASpec(backend="hf", hf={"model": "m"}, pairs_per_caption=3, prompt="fewshot").prompt == "fewshot"
    assert QASpec(backend="rules", pairs_per_caption=3).prompt == "paper"  # rules read no prompt


def _caption_in(text: str) -> str:
    """The caption a prompt (either style, completion or the last chat turn) asks about."""
    last = text.rsplit("<sentence>", 1)[-1] if "<sentence>" in text else text.rsplit(SENTENCE, 1)[1]
    return last.split("\n")[0].removesuffix("<question>").strip()


@pytest.mark.parametrize("style", ["paper", "fewshot"])
@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_http_questioner_modes(mode, style):
    prompt = QAPrompt(style)

    def respond(kind, body):
        assert kind == mode
        assert body["stop"] == prompt.stop and body["temperature"] == 0.0 and body["max_tokens"] == 64
        last = body["messages"][-1]["content"] if kind == "chat" else body["prompt"]
        assert last == (
            prompt.messages(_caption_in(last))[-1]["content"]
            if kind == "chat"
            else prompt.completion(_caption_in(last))
        )
        return f"echo {_caption_in(last)}"

    with FakeOpenAI(respond=respond) as fake:
        spec = HTTPQASpec(base_url=fake.url, model="m", mode=mode, max_tokens=64, concurrency=3)
        q = HTTPQuestioner(spec, prompt)
        q.load()
        assert q.generate(["a cat", "a dog", "a cow"]) == ["echo a cat", "echo a dog", "echo a cow"]
    assert q.prefix == (prompt.cue if mode == "completion" else "")
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
    row = preprocess_row({"unit": "00001", "caption": "a cat"}, spec, QAPrompt())
    assert row["messages"] == QAPrompt().messages("a cat") and "prompt" not in row
    assert row["sampling_params"]["max_tokens"] == 50 and row["unit"] == "00001"
    assert row["sampling_params"]["stop"] == [" <sentence>", "\n<sentence>"]
    completion = spec.model_copy(update={"mode": "completion"})
    raw = preprocess_row({"unit": "u", "caption": "a cat"}, completion, QAPrompt("fewshot", 2))
    assert raw["prompt"] == build_prompt("a cat", 2) and "messages" not in raw
    assert raw["sampling_params"]["stop"] == [f"\n{SENTENCE}", f"\n\n{SENTENCE}"]
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
    assert config(spec(backend="http", http=http, prompt="fewshot")) != base
    two = config(spec(backend="http", http=http, pairs_per_caption=2, prompt="fewshot"))
    assert two != config(spec(backend="http", http=http, prompt="fewshot"))
    assert "prompt" not in config(spec(backend="rules"))["qa"]  # rules read no prompt
    vllm = config(spec(backend="vllm", vllm={"model": "m", "gpus_per_replica": 8}))
    assert vllm == config(spec(backend="vllm", vllm={"model": "m"}))
