"""A small client for OpenAI-compatible HTTP APIs (vLLM, llama.cpp, TGI, hosted services).

Stages that call a remote model (translate, qa) need the same things from it: a key that never
leaks, timeouts, a request-rate limit shared by all worker threads, and retries that tell a
passing fault (429, 5xx, timeouts, dropped connections, malformed JSON) from a mistake that
retrying cannot fix (401, 404, 400). After the retries are spent the client raises
`EndpointError`, a run-level `StageError` whose message names the URL and the fix.

The API key is read from an environment variable whose NAME is configured; its value is
replaced by `***` in every message this module produces, and httpx exceptions are never chained
(their text and request objects could carry it).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from mvlp_core.contract import StageError
from mvlp_core.spec import EndpointSpec

log = logging.getLogger(__name__)

REDACTED = "***"


class EndpointError(StageError):
    """The endpoint failed for the run (retries spent, or a non-retryable answer)."""


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how to call the endpoint. `field` names the spec section in error messages."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    api_key_env: str | None = None
    timeout: float = 60.0
    connect_timeout: float = 10.0
    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 120.0
    requests_per_second: float | None = None
    default_params: Mapping[str, Any] = field(default_factory=dict)
    field: str = "http"

    @classmethod
    def from_spec(cls, spec: EndpointSpec, field: str, **default_params: Any) -> EndpointConfig:
        """The client settings of a spec's endpoint section (`field` names it in messages)."""
        return cls(
            base_url=spec.base_url,
            model=spec.model or "",
            api_key_env=spec.api_key_env,
            timeout=spec.timeout,
            connect_timeout=min(10.0, spec.timeout),
            max_retries=spec.max_retries,
            backoff_base=spec.backoff_base,
            backoff_max=spec.backoff_max,
            requests_per_second=spec.requests_per_second,
            default_params=default_params,
            field=field,
        )


class _Attempt(Exception):
    """One failed attempt: `retry` says whether another attempt may succeed."""

    def __init__(self, message: str, retry: bool, wait: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.wait = wait


class RateLimiter:
    """Spaces requests at least 1/rate seconds apart across all threads (no bursts)."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("requests_per_second must be > 0 (or None for no limit)")
        self.interval = 1.0 / rate if rate else 0.0
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval:
            return
        with self._lock:  # reserve a slot; sleep outside the lock so others can reserve theirs
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds, fractional allowed, or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _safe_url(url: str) -> str:
    """The URL without user:password@ (a key can hide there)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class OpenAIClient:
    """Thread-safe: one client serves every worker thread of a stage."""

    def __init__(
        self,
        config: EndpointConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._key = self._read_key()
        self._limiter = RateLimiter(config.requests_per_second)
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            transport=transport,
            trust_env=False,
        )

    def __repr__(self) -> str:
        return f"OpenAIClient({self.redact(_safe_url(self.base_url))!r}, model={self.config.model!r})"

    def _read_key(self) -> str | None:
        name = self.config.api_key_env
        if not name:
            return None
        key = os.environ.get(name, "")
        if not key.strip():
            raise EndpointError(
                f"{self.config.field}.api_key_env: the environment variable {name} is not set "
                f"or empty; export {name}=<your key> before the run, or set "
                f"{self.config.field}.api_key_env to null for a server without authentication"
            )
        return key.strip()

    def redact(self, text: str) -> str:
        """`text` with the API key (if any) replaced by ***."""
        text = str(text)
        return text.replace(self._key, REDACTED) if self._key else text

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- public calls -------------------------------------------------------------------------

    def chat(self, messages: Sequence[Mapping[str, str]], **params: Any) -> str:
        """The assistant message of /chat/completions (an empty string when it has none)."""
        body = {"model": self.config.model, **self.config.default_params, **params}
        body["messages"] = list(messages)
        data = self.post("/chat/completions", body, expect="chat")
        return data["choices"][0]["message"].get("content") or ""

    def complete(self, prompt: str, **params: Any) -> str:
        """The text of /completions for one prompt."""
        body = {"model": self.config.model, **self.config.default_params, **params}
        body["prompt"] = prompt
        data = self.post("/completions", body, expect="completion")
        return data["choices"][0].get("text") or ""

    def models(self) -> list[str]:
        """Model ids the server lists (GET /models): a cheap reachability check before a run."""
        data = self._with_retries("GET", "/models", None, expect="models")
        return [m.get("id", "") for m in data["data"] if isinstance(m, dict)]

    def post(self, path: str, body: Mapping[str, Any], expect: str = "") -> dict[str, Any]:
        return self._with_retries("POST", path, body, expect=expect)

    def get(self, path: str, expect: str = "any") -> Any:
        """GET `path` with the same retries; expect="any" accepts any JSON value (lists too)."""
        return self._with_retries("GET", path, None, expect=expect)

    # --- machinery ----------------------------------------------------------------------------

    def backoff(self, retry: int) -> float:
        """Exponential backoff with jitter: uniform in [d/2, d], d = base * 2**retry (capped)."""
        delay = min(self.config.backoff_max, self.config.backoff_base * 2**retry)
        with self._rng_lock:
            return delay * (0.5 + self._rng.random() / 2)

    def _with_retries(
        self, method: str, path: str, body: Mapping[str, Any] | None, expect: str
    ) -> dict[str, Any]:
        url = self.base_url + path
        attempts = self.config.max_retries + 1
        last = ""
        for attempt in range(attempts):
            try:
                return self._attempt(method, url, body, expect)
            except _Attempt as failure:
                last = str(failure)
                if not failure.retry:
                    raise EndpointError(
                        f"{method} {self.redact(_safe_url(url))} failed: {last}. {self._fix_for(last)}"
                    ) from None
                if attempt + 1 == attempts:
                    break
                wait = self.backoff(attempt)
                if failure.wait is not None:
                    wait = max(wait, min(failure.wait, self.config.max_retry_after))
                log.warning(
                    "%s %s: %s; retry %d/%d in %.2fs",
                    method,
                    self.redact(_safe_url(url)),
                    last,
                    attempt + 1,
                    self.config.max_retries,
                    wait,
                )
                self._sleep(wait)
        raise EndpointError(
            f"{method} {self.redact(_safe_url(url))} failed after {attempts} attempt(s); "
            f"last error: {last}. Fix: check that the server at {self.redact(_safe_url(self.base_url))} "
            f"is up and serves model {self.config.model!r} ({self.config.field}.base_url, "
            f"{self.config.field}.model), or raise {self.config.field}.max_retries / "
            f"{self.config.field}.timeout, or lower {self.config.field}.requests_per_second"
        )

    def _fix_for(self, message: str) -> str:
        f = self.config.field
        if message.startswith(("HTTP 401", "HTTP 403")):
            env = self.config.api_key_env
            return (
                f"Fix: the server refused the credentials; check the key in ${env}"
                if env
                else f"Fix: the server wants a key; set {f}.api_key_env to the NAME of an "
                "environment variable that holds it"
            )
        if message.startswith("HTTP 404"):
            return f"Fix: check {f}.base_url (it usually ends in /v1) and {f}.model"
        return f"Fix: check the request parameters in {f} against what the server accepts"

    def _attempt(self, method: str, url: str, body: Mapping[str, Any] | None, expect: str) -> dict[str, Any]:
        self._limiter.acquire()
        try:
            response = self._http.request(method, url, json=body)
        except httpx.TimeoutException as err:
            raise _Attempt(f"timed out ({type(err).__name__})", retry=True) from None
        except httpx.TransportError as err:
            raise _Attempt(
                f"connection failed ({type(err).__name__}: {self.redact(err)})", retry=True
            ) from None
        status = response.status_code
        if status >= 400:
            snippet = self.redact(response.text[:300]).replace("\n", " ")
            message = f"HTTP {status}: {snippet}"
            if status == 429 or status >= 500:
                wait = None
                if status in (429, 503):
                    wait = parse_retry_after(response.headers.get("retry-after"))
                raise _Attempt(message, retry=True, wait=wait)
            raise _Attempt(message, retry=False)
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            snippet = self.redact(response.text[:120]).replace("\n", " ")
            raise _Attempt(f"malformed JSON in the response: {snippet!r}", retry=True) from None
        if not _well_formed(data, expect):
            snippet = self.redact(json.dumps(data)[:160])
            raise _Attempt(f"unexpected response shape for {expect}: {snippet}", retry=True)
        return data


def _well_formed(data: Any, expect: str) -> bool:
    if expect == "any":
        return True
    if not isinstance(data, dict):
        return False
    if expect == "models":
        return isinstance(data.get("data"), list)
    if expect in ("chat", "completion"):
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return False
        if expect == "chat":
            return isinstance(choices[0].get("message"), dict)
        return "text" in choices[0]
    return True
