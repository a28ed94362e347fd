"""The `http` backend against local servers speaking the OpenAI API and LibreTranslate, with
faults injected: 429 with Retry-After, 500, a timeout, malformed JSON, one caption that always
gets garbage, an unreachable server. The API key must be sent and must leak nowhere."""

from __future__ import annotations

import logging
import socket
import time

import pyarrow.parquet as pq
import pytest

from mvlp_core import contract
from mvlp_core.stages.translate import STAGE as TRANSLATE_STAGE
from tests.fakes.libretranslate_server import FakeLibreTranslate
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.integration.test_translate_stage import caption, make_spec, read_output

ENV = "MVLP_TEST_MT_KEY"
KEY = "sk-test-9f8e7d6c5b4a-SECRET"
BAD = caption(7)  # the caption the server always answers with garbage


def chat_translation(kind: str, body: dict) -> str:
    language = body["messages"][0]["content"].split(" into ")[1].split(".")[0]
    return f"«{language}: {body['messages'][-1]['content']}»"


def everything_written(out) -> str:
    parts = [(out / "_manifest.json").read_text(), str(contract.read_rejects(out).to_pylist())]
    parts += [str(pq.read_table(p).to_pylist()) for p in out.glob("*.parquet")]
    return "\n".join(parts)


def http_spec(url: str, protocol: str = "openai", **extra) -> dict:
    http = {
        "protocol": protocol,
        "base_url": url,
        "model": "fake-model",
        "api_key_env": ENV,
        "max_retries": 3,
        "backoff_base": 0.01,
        "timeout": 0.5,
        "concurrency": 4,
        **extra,
    }
    return {"backend": "http", "http": http}


def test_openai_endpoint_with_faults(tmp_path, download, monkeypatch, caplog):
    monkeypatch.setenv(ENV, KEY)
    fake = FakeOpenAI(
        respond=chat_translation,
        fault_for=lambda body: Fault.malformed() if body["messages"][-1]["content"] == BAD else None,
    )
    out = tmp_path / "translate"
    with fake, caplog.at_level(logging.DEBUG):
        fake.inject(
            Fault.rate_limited(retry_after="0.3"), Fault.error(500), Fault.delay(2.0), Fault.malformed()
        )
        started = time.monotonic()
        m = TRANSLATE_STAGE.run(make_spec(http_spec(fake.url)), {"download": download}, out)
        elapsed = time.monotonic() - started
    # 40 distinct captions x 2 languages = 80 requests, plus one per fault and per retry.
    assert m.samples_in == 80
    assert m.rejects == {"http_error": 2}  # BAD caption, in de and fr
    assert m.samples_out == 78
    table = read_output(out)
    first = table.to_pylist()[:2]
    assert [r["lang"] for r in first] == ["de", "fr"] and first[0]["key"] == first[1]["key"]
    assert first[0]["text"] == f"German: {caption(0)}" and first[1]["text"] == f"French: {caption(0)}"
    assert set(table.column("provenance").to_pylist()) == {"http:openai:fake-model"}
    requests = fake.completions()
    faults = [r.fault for r in requests if r.fault]
    assert [f.kind for f in faults[:4]] == ["status", "status", "delay", "malformed"]
    bad_tries = [r for r in requests if r.body["messages"][-1]["content"] == BAD]
    assert len(bad_tries) == 2 * 4  # 1 + 3 retries, per language
    assert len(requests) == 2 * 40 + 4 + len(bad_tries) - 2
    assert elapsed >= 0.3  # Retry-After was honoured
    assert all(r.headers.get("Authorization") == f"Bearer {KEY}" for r in fake.requests)
    rejects = contract.read_rejects(out).to_pylist()
    assert {r["detail"].split(";")[0] for r in rejects} == {"lang=de", "lang=fr"}
    assert all("malformed JSON" in r["detail"] for r in rejects)
    assert KEY not in everything_written(out) and KEY not in caplog.text
    assert "retry" in caplog.text  # the client logged its retries


def test_unreachable_endpoint_stops_the_stage(tmp_path, download, monkeypatch, caplog):
    monkeypatch.setenv(ENV, KEY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://user:{KEY}@127.0.0.1:{port}/v1"
    with caplog.at_level(logging.DEBUG), pytest.raises(contract.StageError) as err:
        TRANSLATE_STAGE.run(make_spec(http_spec(url, max_retries=1)), {"download": download}, tmp_path / "t")
    message = str(err.value)
    assert f"127.0.0.1:{port}/v1/models" in message and "failed after 2 attempt(s)" in message
    assert KEY not in message and KEY not in caplog.text
    assert err.value.__cause__ is None and contract.Manifest.load(tmp_path / "t") is None


def test_missing_key_variable(tmp_path, download, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with FakeOpenAI() as fake, pytest.raises(contract.StageError, match=f"{ENV} is not set"):
        TRANSLATE_STAGE.run(make_spec(http_spec(fake.url)), {"download": download}, tmp_path / "t")


def test_libretranslate(tmp_path, download, monkeypatch, caplog):
    monkeypatch.setenv(ENV, KEY)
    fake = FakeLibreTranslate(respond=lambda kind, body: f"[{body['target']}] {body['q']}")
    with fake, caplog.at_level(logging.DEBUG):
        fake.inject(Fault.rate_limited(retry_after="0"), Fault.error(503))
        spec = make_spec(http_spec(fake.url, protocol="libretranslate", model=None))
        m = TRANSLATE_STAGE.run(spec, {"download": download}, tmp_path / "t")
    assert (m.samples_in, m.samples_out, m.rejects) == (80, 80, {})
    texts = read_output(tmp_path / "t").column("text").to_pylist()
    assert {t.split("]")[0] for t in texts} == {"[de", "[fr"}
    posts = fake.translations()
    assert len(posts) == 80 + 2  # one per (caption, language), one per fault
    assert all(p.body["api_key"] == KEY and p.body["source"] == "en" for p in posts)
    assert KEY not in everything_written(tmp_path / "t") and KEY not in caplog.text
    assert m.extra["provenance"] == {"de": "http:libretranslate", "fr": "http:libretranslate"}


def test_libretranslate_without_the_language(tmp_path, download, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    with FakeLibreTranslate(targets=["de", "es"]) as fake, pytest.raises(contract.StageError) as err:
        spec = make_spec(http_spec(fake.url, protocol="libretranslate"))
        TRANSLATE_STAGE.run(spec, {"download": download}, tmp_path / "t")
    message = str(err.value)
    assert "French (fr)" in message and fake.url in message and "GET /languages" in message
    assert "drop the language" in message and KEY not in message
    assert not fake.translations()  # checked before any caption was sent
