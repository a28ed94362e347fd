"""A loopback stand-in for the Hugging Face Hub's file API, enough for the real `huggingface_hub`
client's `hf_hub_download`: HEAD/GET `/{repo}/resolve/{revision}/{filename}` answer with the
X-Repo-Commit, ETag and Content-Length headers the client checks, and a missing repo or file with
the 404 error codes it turns into RepositoryNotFoundError / RemoteEntryNotFoundError. Every
request is logged, so a test can tell which files a loader fetched.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

COMMIT = hashlib.sha1(b"fake hub commit").hexdigest()  # one commit: every revision resolves to it


class FakeHub(ThreadingHTTPServer):
    """Serves `repos` (repo id -> folder) on 127.0.0.1; `requests` lists (method, repo, file)."""

    daemon_threads = True

    def __init__(self, repos: dict[str, Path]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos = repos
        self.requests: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fetched(self, repo: str) -> set[str]:
        """The files of `repo` whose bodies were sent (GET)."""
        with self.lock:
            return {f for method, r, f in self.requests if method == "GET" and r == repo}


class _Handler(BaseHTTPRequestHandler):
    server: FakeHub

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        repo, sep, rest = unquote(self.path.split("?")[0]).lstrip("/").partition("/resolve/")
        filename = rest.partition("/")[2]
        with self.server.lock:
            self.server.requests.append((self.command, repo, filename))
        folder = self.server.repos.get(repo)
        if not sep or folder is None:
            return self._missing("RepoNotFound")
        path = folder / filename
        if not filename or not path.is_file():
            return self._missing("EntryNotFound")
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _missing(self, code: str) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        """Quiet: the request log is `FakeHub.requests`."""


@contextmanager
def serving(repos: dict[str, Path]) -> Iterator[FakeHub]:
    """A FakeHub answering on a background thread for the `with` block."""
    hub = FakeHub(repos)
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        hub.shutdown()
        hub.server_close()
        thread.join()
