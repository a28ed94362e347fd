"""A canary API key against every path a server's answer takes into a message (secrets.yaml).

Each case runs the project's real HTTP clients (the OpenAI client, the translate stage's http
backend, the qa stage's questioner) against a local fake server that answers with the case's
bodies, and collects everything a run would show of it: the exception (str, repr, args, chain,
formatted traceback), every log record (the libraries' too: httpx logs each URL it requests) and
the rejects. No run of 8 of the key's characters may appear there; the case's `shows` pattern
must, so the answer did reach the message, redacted.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mvlp_core.contract import Reject
from mvlp_core.openai_http import EndpointConfig, OpenAIClient
from mvlp_core.spec import HTTPQASpec, HTTPTranslateSpec
from mvlp_core.stages.qa.http import HTTPQuestioner
from mvlp_core.stages.translate.http_backend import HTTPBackend
from tests.fakes.libretranslate_server import FakeLibreTranslate
from tests.fakes.openai_server import FakeOpenAI, Fault

CORPUS = yaml.safe_load((Path(__file__).parent / "secrets.yaml").read_text(encoding="utf-8"))
KEY: str = CORPUS["key"]
ENV = "MVLP_TEST_SECRETS_CANARY"
RUN = 8  # this many of the key's characters in a row identify it
CAPTION = "a dog runs on the beach"

_TOKENS = re.compile(r"<pad (?P<pad>\d+)>|<key\[:(?P<head>\d+)\]>|<key\[-(?P<tail>\d+):\]>|<key>")


def _render(body: str) -> str:
    """A case's body with its <pad N>, <key>, <key[:N]> and <key[-N:]> filled in."""

    def expand(token: re.Match) -> str:
        if token["pad"]:
            return "." * int(token["pad"])
        if token["head"]:
            return KEY[: int(token["head"])]
        return KEY[-int(token["tail"]) :] if token["tail"] else KEY

    return _TOKENS.sub(expand, body)


def _leaks(text: str) -> list[str]:
    return [KEY[i : i + RUN] for i in range(len(KEY) - RUN + 1) if KEY[i : i + RUN] in text]


def _shown(err: BaseException | None) -> str:
    """Everything a traceback or a log of `err` could show, chained exceptions included."""
    parts, e = [], err
    while e is not None:
        parts += [str(e), repr(e), *map(repr, e.args)]
        e = e.__cause__ or e.__context__
    return "\n".join(parts + (traceback.format_exception(err) if err else []))


def _endpoint(case: dict, url: str) -> dict[str, Any]:
    """The endpoint settings a spec would give: the key in the environment variable, or in the URL."""
    if case.get("userinfo"):
        url = url.replace("http://", f"http://user:{KEY}@", 1)
    key_env = None if case.get("userinfo") else ENV
    return {"base_url": url, "api_key_env": key_env, "max_retries": case.get("retries", 0), "backoff_base": 0}


def _client_call(method: str) -> Callable[[dict, str], Any]:
    def call(case: dict, url: str) -> Any:
        with OpenAIClient(EndpointConfig(model="fake-model", **_endpoint(case, url))) as client:
            if method == "chat":
                return client.chat([{"role": "user", "content": CAPTION}])
            return client.complete(CAPTION)

    return call


def _translate(protocol: str) -> Callable[[dict, str], Any]:
    def call(case: dict, url: str) -> Any:
        spec = HTTPTranslateSpec(protocol=protocol, model="fake-model", **_endpoint(case, url))
        backend = HTTPBackend(spec, ["de"])
        backend.load()
        return backend.translate(["bad-000000001"], [CAPTION], "de")

    return call


def _qa(mode: str) -> Callable[[dict, str], Any]:
    def call(case: dict, url: str) -> Any:
        return HTTPQuestioner(HTTPQASpec(model="fake-model", mode=mode, **_endpoint(case, url))).generate(
            [CAPTION]
        )

    return call


VIA: dict[str, Callable[[dict, str], Any]] = {
    "chat": _client_call("chat"),
    "complete": _client_call("complete"),
    "translate_openai": _translate("openai"),
    "translate_libre": _translate("libretranslate"),
    "qa_chat": _qa("chat"),
    "qa_completion": _qa("completion"),
}


@pytest.mark.parametrize("case", CORPUS["cases"], ids=[c["id"] for c in CORPUS["cases"]])
def test_the_key_never_shows(case: dict, monkeypatch, caplog) -> None:
    monkeypatch.setenv(ENV, KEY)
    fake = (FakeLibreTranslate if case["via"] == "translate_libre" else FakeOpenAI)(
        respond=lambda kind, body: "fine"
    )
    result, error = None, None
    with fake, caplog.at_level(logging.DEBUG):
        fake.inject(*(Fault.error(a["status"], body=_render(a["body"])) for a in case["answers"]))
        try:
            result = VIA[case["via"]](case, fake.url)
        except Exception as err:  # what the run would report
            error = err
    seen = "\n".join([_shown(error), caplog.text, repr(result)])
    assert not _leaks(seen), "the key shows"
    assert re.search(case["shows"], seen), "the answer never reached a message"
    if case["via"].startswith("translate"):
        assert isinstance(result[0], Reject) and result[0].reason == "http_error"
    assert fake.requests[0].headers.get("Authorization"), "the key (or the user:password) was sent"


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS["cases"]) >= 10
