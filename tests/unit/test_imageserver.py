"""The local image host: serves files byte for byte, refuses traversal, and fails on purpose."""

from __future__ import annotations

import http.client
import io
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from mvlp_core.imageserver import ImageServer, _Handler, _Server


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "secret.txt").write_text("outside the root")
    served = tmp_path / "world"
    (served / "images").mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buf, format="JPEG")
    (served / "images" / "000001.jpg").write_bytes(buf.getvalue())
    return served


def get(url: str, timeout: float = 5.0) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def raw_get(server: ImageServer, path: str) -> tuple[int, bytes]:
    """Send the path exactly as written (urllib would not normalise it, but be explicit)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def decodes(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data)).load()
        return True
    except Exception:
        return False


def test_serves_files_byte_for_byte_and_counts_requests(root):
    with ImageServer(root) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/" and server.port > 0
        status, content_type, body = get(server.url + "images/000001.jpg")
        get(server.url + "images/000001.jpg")
        assert (status, content_type) == (200, "image/jpeg")
        assert body == (root / "images" / "000001.jpg").read_bytes()
        assert server.request_counts() == {"/images/000001.jpg": 2}


def test_refuses_paths_outside_the_root(root):
    with ImageServer(root) as server:
        for path in (
            "/../secret.txt",
            "/images/../../secret.txt",
            "/images/..%2f..%2fsecret.txt",
            "/%2e%2e/secret.txt",
        ):
            status, body = raw_get(server, path)
            assert status == 403 and b"outside" not in body, path
        assert get(server.url + "images/missing.jpg")[0] == 404
        assert get(server.url)[0] == 404


def test_bad_routes_fail_the_way_their_names_say(root):
    with ImageServer(root) as server:
        assert get(server.url + "bad/404.jpg")[0] == 404
        assert get(server.url + "bad/500.jpg")[0] == 500
        status, content_type, body = get(server.url + "bad/corrupt.jpg")
        assert (status, content_type) == (200, "image/jpeg")
        assert body.startswith(b"\xff\xd8\xff") and not decodes(body)
        status, content_type, body = get(server.url + "bad/not-an-image.jpg")
        assert status == 200 and content_type.startswith("text/html")
        assert b"<html>" in body and not decodes(body)


def test_slow_route_outlasts_a_short_client_timeout_and_stop_cuts_it_short(root):
    server = ImageServer(root, slow_seconds=3600).start()
    started = time.monotonic()
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        get(server.url + "bad/slow.jpg", timeout=0.5)
    assert time.monotonic() - started >= 0.5
    assert server.request_counts() == {"/bad/slow.jpg": 1}
    port = server.port
    server.stop()  # returns although the handler is still waiting out its hour
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_slow_route_answers_with_an_image_once_the_delay_is_over(root):
    with ImageServer(root, slow_seconds=0.6) as server:
        started = time.monotonic()
        status, content_type, body = get(server.url + "bad/slow.jpg", timeout=10)
        assert time.monotonic() - started >= 0.6
        assert (status, content_type) == (200, "image/jpeg") and decodes(body)


def test_each_server_gets_its_own_port_and_stops_listening(root):
    with ImageServer(root) as first, ImageServer(root) as second:
        assert first.port != second.port
        port = first.port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(RuntimeError, match="not running"):
        _ = ImageServer(root).url


def test_listen_queue_holds_a_downloads_burst_of_connections() -> None:
    """A download's threads (the demo's 2 processes x 8) connect at once while the server's
    threads are busy: socketserver's default backlog of 5 drops the other SYNs, and each such client
    waits out TCP's 1 s retransmit. Nothing accepts here, so only the listen queue holds them."""
    server = _Server(("127.0.0.1", 0), _Handler)
    clients = []
    try:
        for _ in range(32):
            client = socket.socket()
            client.settimeout(0.5)  # a dropped SYN is not answered before the 1 s retransmit
            client.connect(server.server_address)
            clients.append(client)
    finally:
        for client in clients:
            client.close()
        server.server_close()
    assert len(clients) == 32
