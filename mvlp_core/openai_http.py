"""A small client for OpenAI-compatible HTTP APIs (vLLM, llama.cpp, TGI, hosted services).

Stages that call a remote model (translate, qa) need the same things from it: a key that never
leaks, timeouts, a request-rate limit shared by all worker threads, and retries that tell a
passing fault (429, 5xx, timeouts, dropped connections, malformed JSON) from a mistake that
retrying cannot fix (401, 404, 400). After the retries are spent the client raises
`EndpointError`, a run-level `StageError` whose message names the URL and the fix.

The API key is read from an environment variable whose NAME is configured; its value, and every
run of `PARTIAL_RUN` or more of its characters (what a cut leaves of it), is replaced by `***` in
every message this module produces, before any excerpt is cut (`OpenAIClient.excerpt`); httpx
exceptions are never chained (their text and request objects could carry it). A user:password@
in `base_url` is sent as basic auth, never as part of a URL (httpx logs the URLs it requests).

Each attempt has a wall-clock deadline (`EndpointConfig.deadline`, by default its `timeout`) over
connect, send and every read: httpx's timeouts bound each socket operation, so a server that
drips its answer a byte at a time would hold a worker forever. The client's transport gives every
socket wait at most what is left of the deadline; running out is a timeout (retried).
"""

from __future__ import annotations

import contextvars
import email.utils
import json
import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpcore
import httpx

from mvlp_core.contract import StageError
from mvlp_core.spec import EndpointSpec

log = logging.getLogger(__name__)

REDACTED = "***"
PARTIAL_RUN = 8  # this many of the key's characters in a row identify it: they are redacted too
SCAN_CHARS = 1 << 16  # an excerpt is redacted from this much of the text, then cut


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
    deadline: float | None = None  # seconds one attempt may take in all; None: `timeout`
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


def _userinfo_auth(url: str) -> httpx.BasicAuth | None:
    """The user:password@ of a URL as HTTP basic auth (what httpx would send for it), so that the
    URL httpx requests, and logs, carries none."""
    parts = urlsplit(url)
    if parts.username is None:
        return None
    return httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))


def redact_secret(text: str, secret: str | None) -> str:
    """`text` with every run of `PARTIAL_RUN` or more characters that occurs in `secret` (the
    whole secret, or what a cut left of it: a head, a tail) replaced by ***."""
    if not secret:
        return text
    n = min(PARTIAL_RUN, len(secret))
    grams = {secret[i : i + n] for i in range(len(secret) - n + 1)}
    if not any(gram in text for gram in grams):
        return text
    out, done = [], 0  # text[:done] is written out or redacted
    for start in range(len(text) - n + 1):
        if text[start : start + n] in grams:
            if start >= done:  # a new run
                out += [text[done:start], REDACTED]
            done = start + n
    return "".join(out) + text[done:]


# The deadline (time.monotonic() value) of the attempt in flight in this thread; a sync httpx
# request does all its socket work in the calling thread.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("mvlp_http_deadline", default=None)


def _bounded(timeout: float | None, expired: type[Exception]) -> float | None:
    """`timeout` cut to what is left of this thread's deadline; `expired` when none is left."""
    end = _DEADLINE.get()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise expired("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake waits at most until the deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sockets, connected and used within the deadline (`_DeadlineStream`)."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, bounded, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport (no proxy, no environment) on `_DeadlineBackend` sockets. httpx offers
    no hook for the network backend, so the connection pool it built is replaced by the same
    pool on that backend."""

    def __init__(self) -> None:
        super().__init__(trust_env=False)
        limits = httpx.Limits()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_DeadlineBackend(),
        )


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
        self.base_url = _safe_url(config.base_url.rstrip("/"))
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._key = self._read_key()
        self._limiter = RateLimiter(config.requests_per_second)
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        self._http = httpx.Client(
            auth=_userinfo_auth(config.base_url),
            headers=headers,
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            transport=transport or _DeadlineTransport(),
            trust_env=False,
        )

    def __repr__(self) -> str:
        return f"OpenAIClient({self.redact(self.base_url)!r}, model={self.config.model!r})"

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

    def redact(self, text: object) -> str:
        """`text` with the API key (if any), and any run of PARTIAL_RUN of its characters, as ***."""
        return redact_secret(str(text), self._key)

    def excerpt(self, text: str, limit: int) -> str:
        """At most `limit` characters of `text`, redacted before the cut (a cut through the key
        would leave a part the redaction no longer recognises as the key)."""
        return self.redact(text[:SCAN_CHARS])[:limit]

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
                        f"{method} {self.redact(url)} failed: {last}. {self._fix_for(last)}"
                    ) from None
                if attempt + 1 == attempts:
                    break
                wait = self.backoff(attempt)
                if failure.wait is not None:
                    wait = max(wait, min(failure.wait, self.config.max_retry_after))
                log.warning(
                    "%s %s: %s; retry %d/%d in %.2fs",
                    method,
                    self.redact(url),
                    last,
                    attempt + 1,
                    self.config.max_retries,
                    wait,
                )
                self._sleep(wait)
        raise EndpointError(
            f"{method} {self.redact(url)} failed after {attempts} attempt(s); "
            f"last error: {last}. Fix: check that the server at {self.redact(self.base_url)} "
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
        token = _DEADLINE.set(time.monotonic() + (self.config.deadline or self.config.timeout))
        try:
            response = self._http.request(method, url, json=body)
        except httpx.TimeoutException as err:
            raise _Attempt(f"timed out ({type(err).__name__})", retry=True) from None
        except httpx.TransportError as err:
            raise _Attempt(
                f"connection failed ({type(err).__name__}: {self.redact(err)})", retry=True
            ) from None
        finally:
            _DEADLINE.reset(token)
        status = response.status_code
        if status >= 400:
            snippet = self.excerpt(response.text, 300).replace("\n", " ")
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
            snippet = self.excerpt(response.text, 120).replace("\n", " ")
            raise _Attempt(f"malformed JSON in the response: {snippet!r}", retry=True) from None
        if not _well_formed(data, expect):
            snippet = self.excerpt(json.dumps(data), 160)
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
