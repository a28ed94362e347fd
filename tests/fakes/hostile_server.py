"""A loopback HTTP server that misbehaves on purpose, byte by byte, for the fetch guard's tests.

http.server cannot drip a status line or stall between header bytes, so this one answers with raw
bytes on the socket: the request's path names what it does (`_routes`), e.g. `/drip-body` sends a
sound header and then the body one byte per `tick`. `/file/NAME` serves what `add_file` registered
(images crafted by the tests), `/redirect?to=URL` redirects, `/slow-redirect-N` redirects to
N+1 after two ticks (to an image after hop 8). Every drip is finite (`DRIP_BYTES` ticks, seconds
in all) and ends when the server stops, so a client that does not give up is told apart from one
that does by what it returns, not by a hang.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import parse_qs, urlsplit

PAUSE = None  # in a route's output: wait one tick
DRIP_BYTES = 60  # a drip sends this many bytes, a tick apart, then closes
IMAGE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"

Output = Iterable[bytes | None]


def _drip(data: bytes) -> Iterator[bytes | None]:
    """`data` one byte per tick."""
    for i in range(len(data)):
        yield PAUSE
        yield data[i : i + 1]


def _informational(status: bytes, count: int) -> bytes:
    """`count` informational (1xx) responses, each with a header."""
    return (b"HTTP/1.1 " + status + b"\r\nLink: </a.css>; rel=preload\r\n\r\n") * count


def _image(server: HostileServer) -> bytes:
    """A whole 200 answer with the server's good.jpg."""
    body = server.files["good.jpg"][1]
    return IMAGE_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body


def _routes(server: HostileServer) -> dict[str, Callable[[], Output]]:
    """Path -> what the server sends there (bytes, or PAUSE for one tick)."""
    filler = b"a" * DRIP_BYTES
    return {
        "/drip-status": lambda: _drip(b"HTTP/1.1 200 OK" + filler),
        "/drip-headers": lambda: [b"HTTP/1.1 200 OK\r\n", *_drip(b"X-Slow: " + filler)],
        "/drip-header-lines": lambda: [
            b"HTTP/1.1 200 OK\r\n",
            *(piece for _ in range(DRIP_BYTES) for piece in (PAUSE, b"X-Slow: a\r\n")),
        ],
        "/drip-body": lambda: [IMAGE_HEAD + b"Content-Length: 100000\r\n\r\n", *_drip(filler)],
        "/drip-body-unsized": lambda: [IMAGE_HEAD + b"\r\n", *_drip(filler)],
        "/drip-chunked": lambda: [
            IMAGE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n",
            *(piece for _ in range(DRIP_BYTES) for piece in (PAUSE, b"1\r\na\r\n")),
        ],
        "/stall-then-drip-body": lambda: [
            IMAGE_HEAD + b"Content-Length: 100000\r\n\r\n",
            *[PAUSE] * 5,
            *_drip(filler),
        ],
        "/continue-slowly": lambda: (
            piece
            for _ in range(DRIP_BYTES)
            for piece in (PAUSE, PAUSE, PAUSE, _informational(b"100 Continue", 1))
        ),
        "/continue-flood": lambda: [_informational(b"100 Continue", 1000)],
        "/processing-flood": lambda: [_informational(b"102 Processing", 11)],
        "/early-hints-flood": lambda: [_informational(b"103 Early Hints", 11)],
        "/ten-continues-then-image": lambda: [_informational(b"100 Continue", 10), _image(server)],
        "/early-hints-then-image": lambda: [_informational(b"103 Early Hints", 1), _image(server)],
        "/continue-with-many-headers": lambda: [
            b"HTTP/1.1 100 Continue\r\n" + b"X-Many: a\r\n" * 101 + b"\r\n",
            _image(server),
        ],
        "/long-status-line": lambda: [b"HTTP/1.1 200 " + b"O" * 70_000 + b"\r\n\r\n"],
        "/long-header-line": lambda: [b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"],
        "/many-headers": lambda: [b"HTTP/1.1 200 OK\r\n" + b"X-Many: a\r\n" * 101 + b"\r\n"],
        "/silent": lambda: [PAUSE] * (DRIP_BYTES * 4),
        "/half-status-then-silent": lambda: [b"HTTP/1.1 2", *[PAUSE] * (DRIP_BYTES * 4)],
        "/redirect-to-drip": lambda: [
            b"HTTP/1.1 302 Found\r\nLocation: /drip-body\r\nContent-Length: 0\r\n\r\n"
        ],
    }


class HostileServer:
    """Serve `_routes` on a free loopback port in background threads; use as a context manager.

    `tick` is the pause between dripped bytes: short enough that no per-read timeout fires,
    long enough that a drip outlasts a deadline of a fraction of a second.
    """

    def __init__(self, tick: float = 0.05) -> None:
        self.tick = tick
        self.files: dict[str, tuple[str, bytes]] = {}
        self.port = 0
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def add_file(self, name: str, body: bytes, content_type: str = "application/octet-stream") -> str:
        """Serve `body` at /file/NAME; returns its URL."""
        self.files[name] = (content_type, body)
        return f"{self.url}file/{name}"

    def request_counts(self) -> dict[str, int]:
        """Requests received per path (without the query string)."""
        with self._lock:
            return dict(self._counts)

    def __enter__(self) -> HostileServer:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # ends every pause at once
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        for thread in self._threads:
            thread.join()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:  # the listener was closed: stopping
                return
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                self._answer(conn, self._read_path(conn))
            except OSError:  # the client gave up (as it should) or the request was cut
                pass

    def _read_path(self, conn: socket.socket) -> str:
        conn.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                raise ConnectionError("request cut short")
            head += chunk
        return head.split(b" ", 2)[1].decode("latin-1")

    def _answer(self, conn: socket.socket, target: str) -> None:
        parts = urlsplit(target)
        with self._lock:
            self._counts[parts.path] += 1
        for piece in self._output(parts.path, parse_qs(parts.query)):
            if piece is PAUSE:
                if self._stopping.wait(self.tick):
                    return
            else:
                conn.sendall(piece)

    def _output(self, path: str, query: dict[str, list[str]]) -> Output:
        if path.startswith("/file/") and path[6:] in self.files:
            content_type, body = self.files[path[6:]]
            head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            return [head % (content_type.encode(), len(body)) + body]
        if path == "/redirect":
            location = query.get("to", ["/"])[0].encode()
            return [b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"]
        if path.startswith("/slow-redirect-"):  # /slow-redirect-N: two ticks, then a hop to N+1
            hop = int(path.rsplit("-", 1)[1])
            location = b"/file/good.jpg" if hop >= 8 else b"/slow-redirect-%d" % (hop + 1)
            return [
                PAUSE,
                PAUSE,
                b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n",
            ]
        route = _routes(self).get(path)
        return route() if route else [b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"]
