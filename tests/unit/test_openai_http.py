"""The OpenAI-compatible client against a local fake server: calls, faults, retries, key redaction."""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import traceback
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from mvlp_core.contract import StageError
from mvlp_core.openai_http import (
    EndpointConfig,
    EndpointError,
    OpenAIClient,
    RateLimiter,
    parse_retry_after,
    redact_secret,
)
from tests.fakes.openai_server import FakeOpenAI, Fault

CANARY = "sk-canary-7f3a9c1e5b2d4f60"
ENV = "MVLP_TEST_OPENAI_KEY"


@pytest.fixture()
def server():
    with FakeOpenAI(respond=lambda kind, body: f"{kind}:ok") as fake:
        yield fake


@pytest.fixture()
def key(monkeypatch):
    monkeypatch.setenv(ENV, CANARY)
    return CANARY


def make(server, sleeps=None, **kw) -> OpenAIClient:
    cfg = dict(
        base_url=server.url,
        model="fake-model",
        api_key_env=ENV,
        timeout=2.0,
        max_retries=3,
        backoff_base=0.001,
        backoff_max=0.004,
        field="qa.http",
    )
    cfg.update(kw)
    sleep = sleeps.append if sleeps is not None else time.sleep
    return OpenAIClient(EndpointConfig(**cfg), sleep=sleep, rng=random.Random(0))


def all_text(err: BaseException) -> str:
    """Everything a traceback or a log of `err` could show, chained exceptions included."""
    parts, seen, e = [], set(), err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts += [str(e), repr(e), *map(repr, e.args)]
        e = e.__cause__ or e.__context__
    return "\n".join(parts + traceback.format_exception(err))


def test_chat_sends_model_messages_params_and_bearer_key(server, key):
    with make(server) as client:
        text = client.chat([{"role": "user", "content": "hi"}], temperature=0.0, max_tokens=7)
    assert text == "chat:ok"
    (req,) = server.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["Authorization"] == f"Bearer {CANARY}"
    assert req.body == {
        "model": "fake-model",
        "temperature": 0.0,
        "max_tokens": 7,
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_complete_and_models(server, key):
    with make(server, default_params={"temperature": 0.2}) as client:
        assert client.complete("Q:", max_tokens=3) == "completion:ok"
        assert client.models() == ["fake-model"]
    post, get = server.requests
    assert (post.path, get.path, get.method) == ("/v1/completions", "/v1/models", "GET")
    assert post.body == {"model": "fake-model", "temperature": 0.2, "max_tokens": 3, "prompt": "Q:"}


def test_no_key_env_sends_no_authorization(server):
    with make(server, api_key_env=None) as client:
        client.chat([{"role": "user", "content": "x"}])
    assert "Authorization" not in server.requests[0].headers


def test_missing_key_variable_is_a_run_error_naming_the_variable(monkeypatch, server):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(EndpointError, match=rf"qa\.http\.api_key_env.*{ENV} is not set"):
        make(server)
    assert issubclass(EndpointError, StageError)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(server, key, status):
    server.inject(Fault.error(status, retry_after="7"), Fault.error(status, retry_after="0.5"))
    sleeps: list[float] = []
    with make(server, sleeps) as client:
        assert client.chat([{"role": "user", "content": "x"}]) == "chat:ok"
    assert sleeps == [7.0, 0.5]
    assert len(server.completions()) == 3


def test_retry_after_is_capped(server, key):
    server.inject(Fault.rate_limited(retry_after="3600"))
    sleeps: list[float] = []
    with make(server, sleeps, max_retry_after=2.0) as client:
        client.chat([{"role": "user", "content": "x"}])
    assert sleeps == [2.0]


def test_retry_after_http_date():
    now = time.time()
    date = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=30))
    assert 28 <= parse_retry_after(date, now=now) <= 31
    assert parse_retry_after("garbage") is None and parse_retry_after(None) is None


@pytest.mark.parametrize(
    "fault",
    [Fault.error(500), Fault.error(502), Fault.rate_limited(None), Fault.malformed(), Fault.drop()],
    ids=["500", "502", "429-no-header", "malformed-json", "connection-drop"],
)
def test_retryable_faults_then_success(server, key, fault):
    server.inject(fault, fault)
    sleeps: list[float] = []
    with make(server, sleeps) as client:
        assert client.chat([{"role": "user", "content": "x"}]) == "chat:ok"
    assert len(server.completions()) == 3
    assert len(sleeps) == 2 and all(0 < s <= 0.004 for s in sleeps)


def test_timeout_is_retried(server, key):
    server.inject(Fault.delay(5.0))
    sleeps: list[float] = []
    with make(server, sleeps, timeout=0.1) as client:
        assert client.complete("x") == "completion:ok"
    assert len(server.completions()) == 2 and len(sleeps) == 1  # the delayed try was cut and retried


def test_unexpected_shape_is_retried(key):
    calls = []

    def respond(kind, body):
        calls.append(1)
        return "fine"

    with FakeOpenAI(respond=respond) as fake:
        fake.inject(Fault.error(200, body='{"choices": []}'))
        with make(fake, []) as client:
            assert client.chat([{"role": "user", "content": "x"}]) == "fine"
    assert len(fake.completions()) == 2 and calls == [1]


@pytest.mark.parametrize(
    "status, fix",
    [(400, "request parameters"), (401, f"\\${ENV}"), (404, r"base_url \(it usually ends in /v1\)")],
)
def test_client_errors_are_not_retried(server, key, status, fix):
    server.inject(Fault.error(status, body='{"error": "nope"}'))
    sleeps: list[float] = []
    with make(server, sleeps) as client, pytest.raises(EndpointError) as info:
        client.chat([{"role": "user", "content": "x"}])
    assert len(server.completions()) == 1 and sleeps == []
    msg = str(info.value)
    assert f"{server.url}/chat/completions" in msg and f"HTTP {status}" in msg
    assert re.search(fix, msg)


def test_retries_exhausted_names_url_and_fix(server, key):
    server.inject(*[Fault.error(500)] * 4)
    sleeps: list[float] = []
    with make(server, sleeps, max_retries=3, backoff_base=0.001, backoff_max=1.0) as client:
        with pytest.raises(EndpointError) as info:
            client.chat([{"role": "user", "content": "x"}])
    msg = str(info.value)
    assert "after 4 attempt(s)" in msg and server.url in msg and "HTTP 500" in msg
    assert "qa.http.base_url" in msg and "qa.http.max_retries" in msg
    assert len(server.completions()) == 4
    # exponential with jitter: retry n waits in [base*2**n / 2, base*2**n]
    for n, s in enumerate(sleeps):
        assert 0.001 * 2**n / 2 <= s <= 0.001 * 2**n
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_unreachable_server_is_retried_then_fails(key):
    with FakeOpenAI() as fake:
        url = fake.url  # the port is free once the server is gone
    sleeps: list[float] = []
    client = OpenAIClient(
        EndpointConfig(base_url=url, model="m", api_key_env=ENV, max_retries=2, backoff_base=0.001),
        sleep=sleeps.append,
    )
    with client, pytest.raises(EndpointError, match="connection failed.*ConnectError") as info:
        client.chat([{"role": "user", "content": "x"}])
    assert url in str(info.value) and len(sleeps) == 2


def test_backoff_is_capped():
    client = OpenAIClient(EndpointConfig(backoff_base=1.0, backoff_max=8.0), rng=random.Random(1))
    waits = [client.backoff(n) for n in range(10)]
    assert all(0.5 * min(8, 2**n) <= w <= min(8, 2**n) for n, w in enumerate(waits))
    assert max(waits) <= 8.0
    client.close()


# --- the key never leaks ----------------------------------------------------------------------


def test_key_is_redacted_from_errors_logs_and_repr(server, key, caplog):
    echoing = f'{{"error": "bad key {CANARY}"}}'
    server.inject(Fault.error(500, body=echoing), Fault.error(401, body=echoing))
    with caplog.at_level(logging.DEBUG, logger="mvlp_core.openai_http"):
        with make(server, []) as client, pytest.raises(EndpointError) as info:
            client.chat([{"role": "user", "content": "x"}])
    assert CANARY not in all_text(info.value)
    assert "bad key ***" in str(info.value)
    assert caplog.records and "bad key ***" in caplog.text
    assert CANARY not in caplog.text
    assert CANARY not in repr(client)
    assert server.requests[0].headers["Authorization"].endswith(CANARY)  # it was really sent


def test_key_is_redacted_from_transport_errors_and_exhausted_retries(key, caplog):
    with FakeOpenAI() as fake:
        fake.inject(*[Fault.drop()] * 2, Fault.error(503, body=f"overloaded for {CANARY}"))
        with caplog.at_level(logging.DEBUG):
            with make(fake, [], max_retries=2) as client, pytest.raises(EndpointError) as info:
                client.complete("x")
    assert "after 3 attempt(s)" in str(info.value) and "overloaded for ***" in str(info.value)
    assert CANARY not in all_text(info.value) and CANARY not in caplog.text


def test_userinfo_in_base_url_is_not_shown(key):
    with FakeOpenAI() as fake:
        host = fake.url.split("//")[1]
        url = f"http://user:{CANARY}@{host}"
        fake.inject(Fault.error(404))
        client = OpenAIClient(EndpointConfig(base_url=url, model="m"), sleep=lambda s: None)
        with client, pytest.raises(EndpointError) as info:
            client.chat([{"role": "user", "content": "x"}])
    assert CANARY not in all_text(info.value) and host in str(info.value)
    assert CANARY not in repr(client)


# --- rate limit -------------------------------------------------------------------------------


def test_rate_limiter_spaces_requests_on_a_fake_clock():
    now = [100.0]
    sleeps: list[float] = []

    def sleep(s):
        sleeps.append(round(s, 6))

    limiter = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.acquire()
    assert sleeps == [0.1, 0.2]
    now[0] += 10  # idle time does not build up a burst
    limiter.acquire()
    limiter.acquire()
    assert sleeps == [0.1, 0.2, 0.1]
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_rate_limit_holds_across_threads(server, key):
    rate, threads, per_thread = 200.0, 4, 5
    with make(server, requests_per_second=rate) as client:
        t0 = time.perf_counter()

        def work():
            for _ in range(per_thread):
                client.chat([{"role": "user", "content": "x"}])

        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - t0
    n = threads * per_thread
    assert len(server.completions()) == n
    assert elapsed >= (n - 1) / rate * 0.95


# --- the deadline: an attempt ends in time however slowly the server answers -------------------


def test_a_dripping_answer_is_cut_by_the_deadline_and_retried(server, key):
    """One byte per 50 ms never trips the 2 s read timeout; the 0.5 s deadline ends the attempt."""
    server.inject(Fault.drip(0.05))
    sleeps: list[float] = []
    with make(server, sleeps, timeout=2.0, deadline=0.5) as client:
        assert client.complete("x") == "completion:ok"
    assert len(server.completions()) == 2 and len(sleeps) == 1


def test_an_answer_dripping_on_every_attempt_fails_as_a_timeout(server, key):
    server.inject(Fault.drip(0.05), Fault.drip(0.05))
    with make(server, [], max_retries=1, timeout=2.0, deadline=0.3) as client:
        with pytest.raises(EndpointError, match=r"after 2 attempt\(s\); last error: timed out"):
            client.chat([{"role": "user", "content": "x"}])


def test_the_deadline_defaults_to_the_timeout(server, key):
    server.inject(Fault.drip(0.05))
    sleeps: list[float] = []
    with make(server, sleeps, timeout=0.4) as client:
        assert client.complete("x") == "completion:ok"
    assert len(sleeps) == 1


# --- partial keys: redacted before any cut, and wherever a cut left them ------------------------


@pytest.mark.parametrize(
    "text, shown",
    [
        (f"bad key {CANARY}!", "bad key ***!"),
        (f"key {CANARY[:12]}...", "key ***..."),  # a head, cut by the server
        (f"...{CANARY[-9:]} revoked", "...*** revoked"),  # a tail
        (f"[{CANARY[5:20]}]", "[***]"),  # any run of 8 or more
        (f"{CANARY}{CANARY} and {CANARY[:7]}", "****** and " + CANARY[:7]),  # 7 identify nothing
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_redact_secret(text, shown):
    assert redact_secret(text, CANARY) == shown
    assert redact_secret(text, None) == text


def _leaks(text: str) -> list[str]:
    """Every run of 8 of the canary's characters that `text` shows."""
    return [CANARY[i : i + 8] for i in range(len(CANARY) - 7) if CANARY[i : i + 8] in text]


CUTS = {  # the excerpt limit of each message, and an answer putting the canary at `at`
    "error status": (300, lambda at: httpx.Response(500, text="." * at + CANARY)),
    "malformed JSON": (120, lambda at: httpx.Response(200, text="{" + "." * (at - 1) + CANARY)),
    "unexpected shape": (160, lambda at: httpx.Response(200, json={"d": "." * (at - 7) + CANARY})),
}


@pytest.mark.parametrize("message", CUTS)
def test_a_key_straddling_the_excerpt_cut_never_shows(key, message, caplog):
    """The canary starts at every offset that puts the excerpt's cut inside it."""
    limit, answer = CUTS[message]
    for at in range(limit - len(CANARY) + 1, limit):
        transport = httpx.MockTransport(lambda request, at=at: answer(at))
        config = EndpointConfig(
            base_url="http://llm.example/v1", api_key_env=ENV, max_retries=1, backoff_base=0
        )
        with (
            caplog.at_level(logging.DEBUG),
            OpenAIClient(config, transport=transport, sleep=lambda s: None) as client,
        ):
            with pytest.raises(EndpointError) as info:
                client.chat([{"role": "user", "content": "x"}])
        assert not _leaks(all_text(info.value) + caplog.text), (message, at)
        caplog.clear()
