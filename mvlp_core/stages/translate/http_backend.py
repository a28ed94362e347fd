"""The `http` backend: a remote translator over HTTP, through the shared client (openai_http).

Two protocols: an OpenAI-compatible chat-completions endpoint (a vLLM or llama.cpp server, a
hosted LLM) asked to translate with a system prompt, and the LibreTranslate API (`POST /translate`,
languages checked against `GET /languages` before any unit runs). Retries with backoff, Retry-After,
the request-rate limit, timeouts and key redaction are the client's.

A request that still fails after its retries is judged by a health check of the server: if the
server answers, the failure belonged to that caption (a reject, reason `http_error`); if it does
not, the run stops with a StageError naming the URL (never the key).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from mvlp_core.contract import Reject
from mvlp_core.openai_http import EndpointConfig, EndpointError, OpenAIClient
from mvlp_core.spec import HTTPTranslateSpec
from mvlp_core.stages.translate.codes import codes, unsupported

FIELD = "translate.http"
QUOTES = {'"': '"', "“": "”", "«": "»", "「": "」", "'": "'"}


def _unquote(text: str) -> str:
    """LLMs often wrap the translation in quotes; drop one enclosing pair."""
    text = text.strip()
    if len(text) >= 2 and QUOTES.get(text[0]) == text[-1]:
        return text[1:-1].strip()
    return text


class HTTPBackend:
    def __init__(self, spec: HTTPTranslateSpec, languages: list[str]) -> None:
        self.spec = spec
        self.languages = list(languages)
        self._client: OpenAIClient | None = None
        self._libre_codes: dict[str, str] = {}

    def provenance(self, lang: str) -> str:
        if self.spec.protocol == "openai":
            return f"http:openai:{self.spec.model}"
        return "http:libretranslate"

    @property
    def client(self) -> OpenAIClient:
        if self._client is None:
            self._client = OpenAIClient(EndpointConfig.from_spec(self.spec, FIELD))
        return self._client

    def problems(self) -> list[str]:
        """The checks `mvlp plan` runs, sending nothing: `base_url` is an http(s) URL with a host,
        and the variable `api_key_env` names is set."""
        out = []
        try:
            url = urlsplit(self.spec.base_url)
            valid = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
        except ValueError:  # .port raises on a port that is not a number in range
            valid = False
        if not valid:
            shown = self.spec.base_url.rsplit("@", 1)[-1]  # never echo a user:key@
            out.append(
                f"{FIELD}.base_url: {shown!r} is not an http(s) URL with a host; give the server's "
                "address, e.g. http://127.0.0.1:8000/v1 (OpenAI-compatible) or "
                "http://127.0.0.1:5000 (LibreTranslate)"
            )
        name = self.spec.api_key_env
        if name and not os.environ.get(name, "").strip():
            out.append(
                f"{FIELD}.api_key_env: the environment variable {name} is not set or empty; export "
                f"{name}=<your key> before the run, or set {FIELD}.api_key_env to null for a "
                "server without authentication"
            )
        return out

    def load(self) -> None:
        """Check the server before any unit: the model for openai, the languages for LibreTranslate."""
        if self.spec.protocol == "openai":
            self.client.models()
            return
        listed = self.client.get("/languages")
        targets = _libre_targets(listed)
        for lang in self.languages:
            found = next((c for c in (codes(lang).libre, lang) if c in targets), None)
            if found is None:
                raise unsupported(
                    lang,
                    f"the LibreTranslate server {self.client.redact(self.client.base_url)}",
                    f"GET /languages lists no en->{codes(lang).libre} (targets: {sorted(targets)})",
                    "Install that language's model on the server (LT_LOAD_ONLY / --load-only) or "
                    "drop the language from `languages`",
                )
            self._libre_codes[lang] = found

    def _one(self, caption: str, lang: str) -> str:
        if self.spec.protocol == "openai":
            system = self.spec.prompt.replace("{language}", codes(lang).name)
            messages = [{"role": "system", "content": system}, {"role": "user", "content": caption}]
            return _unquote(
                self.client.chat(messages, temperature=self.spec.temperature, max_tokens=self.spec.max_tokens)
            )
        body: dict[str, Any] = {
            "q": caption,
            "source": "en",
            "format": "text",
            "target": self._libre_codes.get(lang, codes(lang).libre),
        }
        if self.spec.api_key_env:  # LibreTranslate takes its key in the body
            body["api_key"] = os.environ.get(self.spec.api_key_env, "").strip()
        data = self.client.post("/translate", body)
        text = data.get("translatedText")
        if not isinstance(text, str):
            url = self.client.redact(self.client.base_url)
            raise EndpointError(f"POST {url}/translate answered without translatedText")
        return text.strip()

    def translate(self, keys: list[str], captions: list[str], lang: str) -> list[str | Reject]:
        unique = list(dict.fromkeys(captions))

        def attempt(caption: str) -> str | EndpointError:
            try:
                return self._one(caption, lang)
            except EndpointError as err:
                return err

        with ThreadPoolExecutor(self.spec.concurrency) as pool:
            results = dict(zip(unique, pool.map(attempt, unique)))
        if any(isinstance(r, EndpointError) for r in results.values()):
            self._health_check()
        return [
            Reject(k, "http_error", self.client.excerpt(str(r), 300))
            if isinstance(r := results[c], EndpointError)
            else r
            for k, c in zip(keys, captions)
        ]

    def _health_check(self) -> None:
        """Raises the client's EndpointError (a StageError naming the URL) when the server is down."""
        if self.spec.protocol == "openai":
            self.client.models()
        else:
            self.client.get("/languages")


def _libre_targets(listed: Any) -> set[str]:
    """Target codes English translates into, from LibreTranslate's /languages list."""
    if not isinstance(listed, list):
        return set()
    entries = [e for e in listed if isinstance(e, dict)]
    english = next((e for e in entries if e.get("code") == "en"), None)
    if english and isinstance(english.get("targets"), list):
        return set(english["targets"])
    return {e.get("code") for e in entries} - {"en"}  # older servers: every pair exists
