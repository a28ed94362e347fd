"""A loopback HTTP server that answers each path from a script, and records what it was asked,
for the download politeness tests (X-Robots-Tag opt-outs, 429/503 with Retry-After, per-host
connection and rate limits, requests that must never be sent).

`script(path, *answers)` serves `answers` to the requests of `path` in turn (the last one again
once they run out); an answer is `(status, headers, body)`. What it records, all under one lock:

- `requests(path)`: each request of the path, `(time.monotonic() when its headers arrived, its
  headers)`, in order (the same clock the fetch guard waits on, in the same process);
- `connections`: every connection accepted, whatever was sent on it;
- `max_active`: the most requests it was answering at once. A request counts from its headers'
  arrival until just before the last byte of its answer's header block is written, so two
  requests counted at once were both open at the client too (it cannot have had the first
  answer's headers yet, let alone closed it).

`hold_for_company` makes each request wait, before it is answered, until `company` requests are
being answered at once or that many seconds have passed: a client that opens that many connections
in parallel shows it at once in `max_active`; one that keeps to fewer pays the wait per request.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Answer = tuple[int, dict[str, str], bytes]
NOT_SCRIPTED: Answer = (404, {"Content-Type": "text/plain"}, b"not scripted\n")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        owner = self.server.owner
        status, headers, body = owner._arrive(urlsplit(self.path).path, dict(self.headers))
        try:
            head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
            head += [f"{k}: {v}" for k, v in {"Content-Length": str(len(body)), **headers}.items()]
            head.append("Connection: close")
            raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
            owner._hold()
            self.wfile.write(raw[:-1])
        finally:
            owner._leave()
        self.wfile.write(raw[-1:] + body)  # the client has no answer before this byte
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ScriptedServer

    def process_request(self, request, client_address) -> None:
        self.owner._connected()
        super().process_request(request, client_address)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client hanging up mid-answer (a guard closing a response unread) is routine."""


class ScriptedServer:
    """Serve scripted answers on a free 127.0.0.1 port in a background thread (a context manager)."""

    def __init__(self, hold_for_company: float = 0.0, company: int = 2) -> None:
        self.hold_for_company, self.company = hold_for_company, company
        self._lock = threading.Condition()
        self._scripts: dict[str, list[Answer]] = {}
        self._requests: dict[str, list[tuple[float, dict[str, str]]]] = defaultdict(list)
        self.connections = 0
        self.active = 0
        self.max_active = 0
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def script(self, path: str, *answers: Answer) -> str:
        """Serve `answers` to `path` in turn; returns the path's URL."""
        with self._lock:
            self._scripts[path] = list(answers)
        return self.url + path.lstrip("/")

    def requests(self, path: str) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self._requests[path])

    def _connected(self) -> None:
        with self._lock:
            self.connections += 1

    def _arrive(self, path: str, headers: dict[str, str]) -> Answer:
        with self._lock:
            seen = self._requests[path]
            seen.append((time.monotonic(), headers))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self._lock.notify_all()
            answers = self._scripts.get(path) or [NOT_SCRIPTED]
            return answers[min(len(seen), len(answers)) - 1]

    def _hold(self) -> None:
        if self.hold_for_company:
            with self._lock:
                self._lock.wait_for(lambda: self.active >= self.company, self.hold_for_company)

    def _leave(self) -> None:
        with self._lock:
            self.active -= 1
