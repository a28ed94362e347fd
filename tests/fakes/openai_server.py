"""A local server speaking the OpenAI HTTP API, for tests of the real client code.

It stands in for a paid or GPU-hosted endpoint (a vLLM or llama.cpp server, a hosted API) on
127.0.0.1 with an OS-chosen port. The test supplies `respond(kind, body) -> str` (kind is "chat"
or "completion"); every request is recorded with its headers; faults are injected per request,
either queued (`inject`, consumed in arrival order) or chosen by a function of the request body
(`fault_for`), so a test can fail exactly the captions it wants.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Respond = Callable[[str, dict[str, Any]], str]


@dataclass(frozen=True)
class Fault:
    kind: str  # "status", "delay", "malformed", "drop", "drip"
    status: int = 0
    retry_after: str | None = None
    seconds: float = 0.0
    body: str = ""

    @staticmethod
    def rate_limited(retry_after: str | None = "0") -> Fault:
        return Fault("status", 429, retry_after=retry_after, body='{"error": "rate limited"}')

    @staticmethod
    def error(status: int = 500, body: str = '{"error": "internal"}', retry_after=None) -> Fault:
        return Fault("status", status, retry_after=retry_after, body=body)

    @staticmethod
    def delay(seconds: float) -> Fault:
        return Fault("delay", seconds=seconds)

    @staticmethod
    def malformed() -> Fault:
        return Fault("malformed")

    @staticmethod
    def drop() -> Fault:
        return Fault("drop")

    @staticmethod
    def drip(seconds: float) -> Fault:
        """A sound answer sent one byte every `seconds`, status line and headers included."""
        return Fault("drip", seconds=seconds)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    fault: Fault | None = None


def echo(kind: str, body: dict[str, Any]) -> str:
    if kind == "chat":
        return body["messages"][-1]["content"]
    return body["prompt"]


@dataclass
class FakeOpenAI:
    """Use as a context manager; `url` is the base URL ending in /v1."""

    respond: Respond = echo
    model: str = "fake-model"
    fault_for: Callable[[dict[str, Any]], Fault | None] | None = None
    requests: list[Recorded] = field(default_factory=list)
    _queue: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each request takes the next one (requests after the queue succeed)."""
        with self._lock:
            self._queue.extend(faults)

    def completions(self) -> list[Recorded]:
        """Recorded generation requests (chat and completions), faulted ones included."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("completions")]

    def _next_fault(self, body: dict[str, Any] | None) -> Fault | None:
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
        return self.fault_for(body or {}) if self.fault_for else None

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # wakes delayed handlers at once
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                self._send(400, b'{"error": "request body is not JSON"}')
                return
            fault = fake._next_fault(body) if method == "POST" else None
            with fake._lock:
                fake.requests.append(Recorded(method, self.path, dict(self.headers.items()), body, fault))
            if fault is not None:
                if fault.kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault.kind == "malformed":
                    self._send(200, b'{"choices": [{"message": {"content": "unterminated')
                    return
                if fault.kind == "status":
                    extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    self._send(fault.status, fault.body.encode(), extra)
                    return
                if fault.kind == "delay" and fake._stop.wait(fault.seconds):
                    return
                if fault.kind == "drip":
                    self._drip(fault.seconds, method, body)
                    return
            self._answer(method, body)

        def _drip(self, seconds: float, method: str, body: dict[str, Any] | None) -> None:
            """The answer `_answer` gives, written a byte at a time (until the server stops)."""
            real, answer = self.wfile, io.BytesIO()
            self.wfile = answer
            self._answer(method, body)
            self.wfile, data = real, answer.getvalue()
            self.close_connection = True
            for i in range(len(data)):
                if fake._stop.wait(seconds):
                    return
                try:
                    real.write(data[i : i + 1])
                except OSError:  # the client gave up, as it should
                    return

        def _answer(self, method: str, body: dict[str, Any] | None) -> None:
            path = self.path.split("?")[0]
            if method == "GET" and path == "/v1/models":
                data = {"object": "list", "data": [{"id": fake.model, "object": "model"}]}
            elif method == "POST" and path == "/v1/chat/completions":
                text = fake.respond("chat", body)
                message = {"role": "assistant", "content": text}
                data = _completion("chat.completion", {"index": 0, "message": message}, body)
            elif method == "POST" and path == "/v1/completions":
                text = fake.respond("completion", body)
                data = _completion("text_completion", {"index": 0, "text": text}, body)
            else:
                self._send(404, json.dumps({"error": f"no route {method} {path}"}).encode())
                return
            self._send(200, json.dumps(data).encode())

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

    return Handler


def _completion(obj: str, choice: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    choice["finish_reason"] = "stop"
    return {
        "id": "cmpl-fake",
        "object": obj,
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [choice],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
