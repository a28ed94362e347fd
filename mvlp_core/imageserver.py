"""A local HTTP image host for the synthetic world, with deliberately broken routes.

The download stage is exercised for real (img2dataset over loopback) without internet: files under
``root`` are served by path, and ``/bad/*`` returns each failure a crawler meets in CC3M-style lists
(404, 500, corrupt JPEG, HTML instead of an image, a server slower than the client's timeout, a
redirect to any `?to=` URL, a body that never ends, a connection dropped mid-body).
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import Image

CORRUPT_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"".join(
    hashlib.sha256(bytes([i])).digest() for i in range(64)
)
NOT_AN_IMAGE = b"<!doctype html><html><body><h1>Not an image</h1></body></html>\n"


def _placeholder_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (200, 120, 40)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests and the demo's logs stay clean."""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self.server.owner._count(path)
        if path == "/bad/redirect":
            self.send_response(302)
            self.send_header("Location", parse_qs(parts.query).get("to", ["/"])[0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/bad/endless.jpg":
            self._send_endless()
        elif path == "/bad/drop-mid-body.jpg":
            body = self.server.owner._slow_body
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif path == "/bad/404.jpg":
            self._send(404, b"not found\n", "text/plain")
        elif path == "/bad/500.jpg":
            self._send(500, b"internal server error\n", "text/plain")
        elif path == "/bad/corrupt.jpg":
            self._send(200, CORRUPT_JPEG, "image/jpeg")
        elif path == "/bad/not-an-image.jpg":
            self._send(200, NOT_AN_IMAGE, "text/html; charset=utf-8")
        elif path == "/bad/slow.jpg":
            if self.server.owner._stopping.wait(self.server.owner.slow_seconds):
                self.close_connection = True  # stopping: drop the client instead of answering
            else:
                self._send(200, self.server.owner._slow_body, "image/jpeg")
        else:
            self._serve_file(path)

    def _send_endless(self) -> None:
        """A body with no declared length that never ends (until the server stops)."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        self.close_connection = True
        chunk = b"\xff" * 65536
        while not self.server.owner._stopping.is_set():
            self.wfile.write(chunk)

    def _serve_file(self, path: str) -> None:
        root = self.server.owner.root
        target = (root / path.lstrip("/")).resolve()
        if not target.is_relative_to(root):
            self._send(403, b"forbidden\n", "text/plain")
        elif not target.is_file():
            self._send(404, b"not found\n", "text/plain")
        else:
            content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            self._send(200, target.read_bytes(), content_type)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's listen backlog is 5: a download's threads (processes x threads, 16 in the demo)
    # connecting at once overflow it, and each dropped SYN is retried after TCP's initial 1 s
    request_queue_size = 128
    owner: ImageServer

    def handle_error(self, request: object, client_address: object) -> None:
        """A client hanging up (a crawler giving up on /bad/slow.jpg) is routine, not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ImageServer:
    """Serve ``root`` on a free loopback port in a background thread; use as a context manager.

    ``slow_seconds`` is how long ``/bad/slow.jpg`` stalls before answering; stopping the server
    cuts the stall short, so shutdown never waits for it.
    """

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0, slow_seconds: float = 5.0) -> None:
        self.root = Path(root).resolve()
        self.host, self.slow_seconds = host, slow_seconds
        self._requested_port = self.port = port
        self._slow_body = _placeholder_jpeg()
        self._stopping = threading.Event()
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("ImageServer is not running; call start() or use it in a with block")
        return f"http://{self.host}:{self.port}/"

    def start(self) -> ImageServer:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self._requested_port), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        # a short poll interval keeps stop() quick: shutdown() waits for the loop's next poll
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="mvlp-imageserver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _count(self, path: str) -> None:
        with self._lock:
            self._counts[path] += 1

    def request_counts(self) -> dict[str, int]:
        """Requests received per URL path (decoded, without the query string)."""
        with self._lock:
            return dict(self._counts)
