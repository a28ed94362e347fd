"""The qa stage with the http backend end to end: the real client against the local OpenAI-compatible
server, on the synthetic world's captions, with faults injected and a run killed mid-unit."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mvlp_core import contract, keys
from mvlp_core.spec import PipelineSpec
from mvlp_core.stages.qa import STAGE as QA_STAGE
from mvlp_core.stages.qa.partial import PARTIAL_DIR, PartialStore
from mvlp_core.stages.qa.prompt import PAPER_QUESTION, PAPER_SENTENCE, SENTENCE
from mvlp_core.stages.qa.rules import questions
from mvlp_core.synth.grammar import English, random_scene
from tests.fakes.openai_server import FakeOpenAI, Fault

SHARDS, PER_SHARD = 3, 10
ENV = "MVLP_TEST_QA_KEY"
CANARY = "sk-canary-qa-0a1b2c3d"


def world_captions() -> list[list[str]]:
    rng, english = random.Random(7), English()
    captions = [english.text(random_scene(rng)) for _ in range(SHARDS * PER_SHARD)]
    return [captions[i * PER_SHARD : (i + 1) * PER_SHARD] for i in range(SHARDS)]


@pytest.fixture
def download(tmp_path: Path) -> Path:
    return write_download(tmp_path)


def write_download(workdir: Path) -> Path:
    """A download stage of the synthetic world's captions, three shards, under `workdir`."""
    folder = workdir / "download"
    folder.mkdir()
    files = {}
    for shard, captions in enumerate(world_captions()):
        rows = [shard * 100 + i for i in range(len(captions))]
        name = f"samples-{shard:05d}.parquet"
        table = pa.table({"key": [keys.make_key("synth", r) for r in rows], "caption": captions})
        pq.write_table(table, folder / name)
        files[name] = {"samples": len(captions), "sha256": "", "bytes": 0}
    n = SHARDS * PER_SHARD
    contract.Manifest("download", "fp-dl", files, n, n, {}, 0.0, SHARDS).save(folder)
    return folder


def prompt_text(body: dict) -> str:
    return body["messages"][-1]["content"] if "messages" in body else body["prompt"]


def paper_style(body: dict) -> bool:
    return PAPER_SENTENCE in prompt_text(body)


def caption_of(body: dict) -> str:
    text = prompt_text(body)
    if paper_style(body):
        return text.rsplit(f"{PAPER_SENTENCE} ", 1)[1].removesuffix(f" {PAPER_QUESTION}")
    return text.rsplit(f"{SENTENCE} ", 1)[1].split("\n", 1)[0]


STYLE = ("clean", "chatter", "yes_no", "hallucinated", "loop")


def style(caption: str) -> str:
    return STYLE[sum(map(ord, caption)) % len(STYLE)]


def llm(kind: str, body: dict) -> str:
    """A model with habits: most answers are good, some are the usual failures; it answers in
    the pattern its prompt shows (UniGen's <question>/<answer> or Q:/A:)."""
    caption = caption_of(body)
    q, a = questions(caption)[0]
    text = {
        "clean": f"Q: {q}\nA: {a}",
        "chatter": f"Sure! Here is one:\n**Q:** {q}\n**A:** {a}\nLet me know if you need more.",
        "yes_no": f"Q: Is there a {caption.split()[-1]}?\nA: Yes.",
        "hallucinated": f"Q: What is the man holding next to the {caption.split()[-1]}?\nA: {a}",
        "loop": f"Q: {q}\nA: {a} {a} {a}\n" * 4,
    }[style(caption)]
    cue = "Q:"
    if paper_style(body):
        cue, text = (
            PAPER_QUESTION,
            text.replace("**", "").replace("Q: ", "<question> ").replace("\nA: ", " <answer> "),
        )
    return text[len(cue) :] if kind == "completion" else text


EXPECTED_REJECT = {"yes_no": "yes_no_answer", "hallucinated": "hallucinated_entity", "loop": "repetition"}


def make_spec(url: str, prompt: str = "paper", **http) -> PipelineSpec:
    section = {
        "base_url": url,
        "model": "fake-model",
        "api_key_env": ENV,
        "timeout": 0.5,
        "backoff_base": 0.001,
        "backoff_max": 0.01,
        "max_retries": 4,
        "concurrency": 3,
        **http,
    }
    return PipelineSpec.model_validate(
        {
            "name": "t",
            "dataset": {"ref": "synthetic"},
            "languages": ["de"],
            "qa": {"backend": "http", "checkpoint_every": 4, "prompt": prompt, "http": section},
        }
    )


@pytest.mark.parametrize(
    ("mode", "prompt"), [("chat", "paper"), ("completion", "paper"), ("completion", "fewshot")]
)
def test_http_backend_with_faults(tmp_path, download, monkeypatch, mode, prompt):
    monkeypatch.setenv(ENV, CANARY)
    captions = [c for shard in world_captions() for c in shard]
    with FakeOpenAI(respond=llm) as fake:
        fake.inject(
            Fault.rate_limited("0"),
            Fault.error(500),
            Fault.malformed(),
            Fault.drop(),
            Fault.delay(2.0),
            Fault.error(503, retry_after="0"),
        )
        m = QA_STAGE.run(make_spec(fake.url, prompt, mode=mode), {"download": download}, tmp_path / "qa")
        generation = fake.completions()

    assert m.samples_in == len(captions) == m.samples_out + sum(m.rejects.values())
    styles = Counter(style(c) for c in captions)
    want = Counter({EXPECTED_REJECT[s]: n for s, n in styles.items() if s in EXPECTED_REJECT})
    assert Counter(m.rejects) == want and m.samples_out == styles["clean"] + styles["chatter"]
    assert m.extra["generator"] == "http:fake-model"
    rows = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "qa").glob("0*.parquet"))])
    assert rows.num_rows == m.samples_out  # one pair per caption by default
    assert all(paper_style(r.body) == (prompt == "paper") for r in generation if r.body)
    faulted = [r for r in generation if r.fault is not None]
    assert len(faulted) == 6 and len(generation) == len(set(captions)) + 6
    assert all(r.headers["Authorization"] == f"Bearer {CANARY}" for r in generation)
    assert not (tmp_path / "qa" / PARTIAL_DIR).exists()
    manifest_text = (tmp_path / "qa" / "_manifest.json").read_text()
    assert CANARY not in manifest_text and CANARY not in str(
        contract.read_rejects(tmp_path / "qa").to_pylist()
    )


def test_killed_run_resumes_inside_a_unit(tmp_path, download, monkeypatch):
    monkeypatch.setenv(ENV, CANARY)
    shards = world_captions()
    victim = shards[1][6]  # in the second unit, after its first saved batches
    out = tmp_path / "qa"
    with FakeOpenAI(respond=llm) as fake:
        fake.fault_for = lambda body: Fault.error(401) if caption_of(body) == victim else None
        spec = make_spec(fake.url, concurrency=1)
        with pytest.raises(contract.StageError) as err:
            QA_STAGE.run(spec, {"download": download}, out)
    assert "HTTP 401" in str(err.value) and f"${ENV}" in str(err.value)
    assert CANARY not in str(err.value)
    saved = PartialStore(out).load("00001")
    assert set(saved) == set(shards[1][:4])  # the batch holding the victim was not saved
    assert (out / "00000.parquet").exists() and contract.Manifest.load(out) is None

    with FakeOpenAI(respond=llm) as fake:
        m = QA_STAGE.run(make_spec(fake.url, concurrency=1), {"download": download}, out)
        asked = [caption_of(r.body) for r in fake.completions()]
    assert sorted(asked) == sorted(set(shards[1][4:]) | set(shards[2]))  # nothing asked twice
    assert m.samples_in == SHARDS * PER_SHARD == m.samples_out + sum(m.rejects.values())
