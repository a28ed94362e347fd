"""The fetch guard: every request and redirect hop is checked where it is fetched, and ends by
its deadline.

All traffic stays on 127.0.0.1: private and link-local targets are refused before any connection,
which the tests check by giving the opener a resolver that records what it was asked. Slow and
malformed answers come from tests/fakes/hostile_server.py; the corpus of them, and of crafted
images, is tests/badinput/hostile_fetch.yaml.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mvlp_core import fetchguard
from mvlp_core.fetchguard import BLOCK_PHRASE, Blocked
from mvlp_core.imageserver import ImageServer
from mvlp_core.spec import UrlPolicy
from tests.fakes.hostile_server import HostileServer


@pytest.fixture()
def server(tmp_path: Path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8jpeg-bytes")
    with ImageServer(tmp_path, slow_seconds=2) as srv:
        yield srv


def _fetch(opener: urllib.request.OpenerDirector, url: str | urllib.request.Request) -> bytes:
    with opener.open(url, timeout=5) as r:
        return r.read()


def _no_resolving(host: str, port: int) -> list[tuple]:
    raise AssertionError(f"{host} must be refused before it is resolved")


def test_allowed_request_is_fetched(server) -> None:
    assert (
        _fetch(fetchguard.opener(UrlPolicy(allow_loopback=True)), server.url + "images/a.jpg")
        == b"\xff\xd8jpeg-bytes"
    )
    assert server.request_counts()["/images/a.jpg"] == 1


def test_env_proxy_is_not_used(server, monkeypatch) -> None:
    """A proxy would resolve the names itself, out of the guard's reach."""
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens: using it would fail
    assert _fetch(fetchguard.opener(UrlPolicy(allow_loopback=True)), server.url + "images/a.jpg")


def test_redirect_hop_to_a_forbidden_port_is_refused(server, tmp_path: Path) -> None:
    with ImageServer(tmp_path) as secret:  # stands for an internal service
        policy = UrlPolicy(allow_loopback=True, allowed_ports=[server.port])
        target = secret.url + "images/a.jpg"
        with pytest.raises(Blocked) as err:
            _fetch(fetchguard.opener(policy), f"{server.url}bad/redirect?to={target}")
        assert err.value.reason == "url_port" and f"{BLOCK_PHRASE}: url_port" in str(err.value)
        assert secret.request_counts() == {}  # the internal service never saw a request
    assert server.request_counts()["/bad/redirect"] == 1


def test_redirect_hop_to_another_scheme_is_refused(server) -> None:
    with pytest.raises(Blocked) as err:
        _fetch(
            fetchguard.opener(UrlPolicy(allow_loopback=True)),
            f"{server.url}bad/redirect?to=ftp://example.org/a.jpg",
        )
    assert err.value.reason == "url_scheme"


def test_name_resolving_to_private_address_is_refused_without_connecting(monkeypatch) -> None:
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[tuple]:
        asked.append(host)  # what a rebinding DNS name would answer
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]

    def no_connect(*args):
        raise AssertionError("a private address must be refused before connecting")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    with pytest.raises(urllib.error.URLError) as err:
        _fetch(fetchguard.opener(UrlPolicy(), resolve=resolver), "http://innocent.example/x.jpg")
    assert asked == ["innocent.example"]
    assert "url_private innocent.example resolves to 10.1.2.3" in str(err.value)


def test_one_private_address_among_public_ones_is_refused() -> None:
    def resolver(host: str, port: int) -> list[tuple]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in ("93.184.216.34", "169.254.169.254")
        ]

    with pytest.raises(urllib.error.URLError) as err:
        _fetch(fetchguard.opener(UrlPolicy(), resolve=resolver), "https://mixed.example/x.jpg")
    assert f"{BLOCK_PHRASE}: url_link_local mixed.example resolves to 169.254.169.254" in str(err.value)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://169.254.169.254/latest/meta-data/", "url_link_local"),
        ("http://10.0.0.1/a.jpg", "url_private"),
        ("https://10.0.0.1/a.jpg", "url_private"),
        ("http://100.64.0.1/a.jpg", "url_private"),
        ("http://127.0.0.1./a.jpg", "url_loopback"),
        ("http://2130706433/a.jpg", "url_loopback"),
        ("http://[::ffff:a9fe:a9fe]/a.jpg", "url_link_local"),
    ],
)
def test_literal_addresses_are_refused_before_resolving(url: str, reason: str) -> None:
    with pytest.raises(Blocked) as err:
        _fetch(fetchguard.opener(UrlPolicy(), resolve=_no_resolving), url)
    assert err.value.reason == reason and f"{BLOCK_PHRASE}: {reason}" in str(err.value)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/a.jpg", "data:,x"])
def test_other_schemes_are_not_opened(url: str) -> None:
    with pytest.raises(urllib.error.URLError, match="unknown url type"):
        _fetch(fetchguard.opener(UrlPolicy(), resolve=_no_resolving), url)


def test_endless_body_is_refused_at_the_byte_limit(server) -> None:
    with pytest.raises(Blocked) as err:
        _fetch(
            fetchguard.opener(UrlPolicy(allow_loopback=True), max_bytes=1 << 20),
            server.url + "bad/endless.jpg",
        )
    assert err.value.reason == "response_too_large"


BOMB = Path(__file__).parents[1] / "badinput" / "images" / "bomb.png"  # 157 bytes, 20000x20000


def test_declared_size_and_pixel_bombs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "bomb.png").write_bytes(BOMB.read_bytes())
    (tmp_path / "images" / "big.jpg").write_bytes(b"\xff\xd8" + b"\0" * 4096)
    with ImageServer(tmp_path) as srv:
        guarded = fetchguard.opener(UrlPolicy(allow_loopback=True), max_bytes=1024, max_pixels=10_000_000)
        with pytest.raises(Blocked) as bomb:
            _fetch(guarded, srv.url + "images/bomb.png")
        with pytest.raises(Blocked) as big:
            _fetch(guarded, srv.url + "images/big.jpg")
    assert bomb.value.reason == "image_too_large" and "> 10000000 pixels" in str(bomb.value)
    assert big.value.reason == "response_too_large" and "4098 bytes declared" in str(big.value)


def test_size_limits_hold_with_the_policy_off(tmp_path: Path) -> None:
    """`download.guard_fetch: false` drops the address checks, not the byte and pixel limits."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "bomb.png").write_bytes(BOMB.read_bytes())
    with ImageServer(tmp_path) as srv:
        with pytest.raises(Blocked) as bomb:
            _fetch(fetchguard.opener(None, max_pixels=10_000_000), srv.url + "images/bomb.png")
        assert (
            _fetch(fetchguard.opener(None, max_pixels=10**9), srv.url + "images/bomb.png")
            == BOMB.read_bytes()
        )
    assert bomb.value.reason == "image_too_large"


# --- the deadline: a request ends in time however slowly the server answers --------------------


GOOD = (Path(__file__).parents[1] / "badinput" / "images" / "good.jpg").read_bytes()


@pytest.fixture(scope="module")
def hostile():
    with HostileServer() as srv:
        srv.add_file("good.jpg", GOOD)  # the routes that end in an image send it
        yield srv


def test_default_deadline_is_a_multiple_of_the_request_timeout(hostile) -> None:
    """A body dripped a byte per tick never trips the per-read timeout; the deadline
    (DEADLINE_FACTOR x 0.5 s here) ends it."""
    guard = fetchguard.opener(UrlPolicy(allow_loopback=True))
    with pytest.raises(Blocked) as err:
        with guard.open(hostile.url + "drip-body", timeout=0.5) as response:
            response.read()
    assert err.value.reason == "timeout"
    assert f"within its {fetchguard.DEADLINE_FACTOR * 0.5:g} s deadline" in str(err.value)


def test_deadline_covers_every_redirect_hop(hostile) -> None:
    """Eight hops of 0.1 s each: each is quick, together they outlast a 0.5 s deadline."""
    guard = fetchguard.opener(UrlPolicy(allow_loopback=True), deadline_seconds=0.5)
    with pytest.raises(Blocked) as err:
        _fetch(guard, hostile.url + "slow-redirect-1")
    assert err.value.reason == "timeout"


def test_a_request_object_opened_again_gets_a_new_deadline(hostile) -> None:
    guard = fetchguard.opener(UrlPolicy(allow_loopback=True), deadline_seconds=1.0)
    request = urllib.request.Request(hostile.url + "file/good.jpg")
    assert _fetch(guard, request) == GOOD
    with pytest.raises(Blocked):  # outlasts the deadline: a second passes
        _fetch(guard, hostile.url + "drip-body")
    assert _fetch(guard, request) == GOOD


def test_install_keeps_the_download_stages_positional_call(hostile) -> None:
    """The stage passes (policy, max_response_bytes, max_image_pixels) as the pool's initargs."""
    try:
        fetchguard.install(UrlPolicy(allow_loopback=True), 1 << 20, 10_000_000)
        assert urllib.request.urlopen(hostile.url + "file/good.jpg", timeout=2).read() == GOOD
        fetchguard.install(UrlPolicy(allow_loopback=True), 1 << 20, 10_000_000, deadline_seconds=0.3)
        with pytest.raises(Blocked, match="within its 0.3 s deadline"):
            urllib.request.urlopen(hostile.url + "drip-body", timeout=2).read()
    finally:
        urllib.request.install_opener(None)


def test_the_deadline_holds_with_the_policy_off(hostile) -> None:
    guard = fetchguard.opener(None, deadline_seconds=0.3)
    with pytest.raises(Blocked) as err:
        _fetch(guard, hostile.url + "drip-headers")
    assert err.value.reason == "timeout"


def test_no_connect_is_attempted_once_the_deadline_has_passed(monkeypatch) -> None:
    def resolver(host: str, port: int) -> list[tuple]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    def no_connect(*args):
        raise AssertionError("the deadline has passed: no connect may start")

    monkeypatch.setattr(socket, "create_connection", no_connect)
    with pytest.raises(Blocked) as err:
        fetchguard.connect_checked(
            ("a.example", 80), 5, None, policy=UrlPolicy(), resolve=resolver, deadline=fetchguard.Deadline(0)
        )
    assert err.value.reason == "timeout"


@pytest.mark.parametrize(
    "path, reason",
    [
        ("continue-flood", "too_many_informational"),
        ("processing-flood", "too_many_informational"),
        ("long-header-line", "headers_too_large"),
        ("many-headers", "headers_too_large"),
    ],
)
def test_informational_and_header_caps(hostile, path: str, reason: str) -> None:
    with pytest.raises(Blocked) as err:
        _fetch(fetchguard.opener(UrlPolicy(allow_loopback=True)), hostile.url + path)
    assert err.value.reason == reason


def test_informational_responses_before_the_answer_are_skipped(hostile) -> None:
    guard = fetchguard.opener(UrlPolicy(allow_loopback=True))
    assert _fetch(guard, hostile.url + "early-hints-then-image") == GOOD
    assert _fetch(guard, hostile.url + "ten-continues-then-image") == GOOD


# --- what OpenCV decodes is sized before it is decoded --------------------------------------


def test_loopback_side_doors_are_refused_with_private_allowed() -> None:
    policy = UrlPolicy(allow_private=True)
    for url in (
        "http://0.0.0.0/",
        "http://0/",
        "http://[::]/",
        "http://[::ffff:0.0.0.0]/",
        "http://[::127.0.0.1]/",
    ):
        with pytest.raises(Blocked) as err:
            _fetch(fetchguard.opener(policy, resolve=_no_resolving), url)
        assert err.value.reason == "url_loopback", url


def test_a_name_resolving_to_zero_is_loopback() -> None:
    def resolver(host: str, port: int) -> list[tuple]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("0.0.0.0", port))]

    with pytest.raises(urllib.error.URLError, match="url_loopback zero.example resolves to 0.0.0.0"):
        _fetch(fetchguard.opener(UrlPolicy(allow_private=True), resolve=resolver), "http://zero.example/")


@pytest.mark.parametrize(
    "body, fmt",
    [
        (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 7 +X 9\n", "Radiance HDR"),
        (b"PF\n9 7\n-1\n", "PFM"),
        (b"P6\n# c\n9 7\n255\n", "PNM"),
        (b"P7\nWIDTH 9\nHEIGHT 7\nENDHDR\n", "PAM"),
    ],
)
def test_text_headers_are_sized_by_the_guard(body: bytes, fmt: str) -> None:
    assert fetchguard.opencv_format(body) == fmt
    assert fetchguard.image_size(body) == (9, 7)


def test_bodies_no_decoder_claims_pass_unsized() -> None:
    """HTML, text, an empty body: OpenCV decodes none of them, img2dataset rejects them itself."""
    for body in (b"<!doctype html><html></html>", b"", b"plain text that is long enough to be a signature"):
        assert fetchguard.opencv_format(body) is None
        fetchguard.check_image(body, 1)
