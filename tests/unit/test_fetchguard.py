"""The fetch guard: every request and redirect hop is checked where it is fetched, ends by
its deadline, and keeps to its host's limits (connections, rate, Retry-After).

All traffic stays on 127.0.0.1: private and link-local targets are refused before any connection,
which the tests check by giving the opener a resolver that records what it was asked. Slow and
malformed answers come from tests/fakes/hostile_server.py; the corpus of them, and of crafted
images, is tests/badinput/hostile_fetch.yaml.
"""

from __future__ import annotations

import email.utils
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mvlp_core import fetchguard
from mvlp_core.fetchguard import BLOCK_PHRASE, Blocked
from mvlp_core.imageserver import ImageServer
from mvlp_core.spec import UrlPolicy
from tests.fakes.hostile_server import HostileServer
from tests.fakes.scripted_server import ScriptedServer


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
        fetchguard.uninstall()
    assert urllib.request.urlopen is fetchguard._URLLIB_URLOPEN  # urllib's own again


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


# --- politeness: per-host connections and rate, busy answers retried after their Retry-After ---

LOOPBACK = UrlPolicy(allow_loopback=True)
IMAGE = (200, {"Content-Type": "image/jpeg"}, GOOD)


def _busy(status: int, retry_after: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return status, headers, b"busy, come back later\n"


class Waits:
    """The guard's `wait_until`, waiting no time: records each wait as (the seconds it would
    have slept, the time.monotonic() its request was to start at, how many requests the server
    had seen of `path` then)."""

    def __init__(self, server: ScriptedServer | None = None, path: str = "") -> None:
        self.server, self.path = server, path
        self.calls: list[tuple[float, float, int]] = []

    def __call__(self, when: float) -> None:
        seen = len(self.server.requests(self.path)) if self.server else 0
        self.calls.append((when - time.monotonic(), when, seen))


NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("1", 1.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("Sat, 01 Mar 2025 12:00:30 GMT", 30.0),  # IMF-fixdate
        ("Saturday, 01-Mar-25 12:01:00 GMT", 60.0),  # RFC 850
        ("Sat Mar  1 12:00:05 2025", 5.0),  # asctime: GMT
        ("Sat, 01 Mar 2025 13:00:30 +0100", 30.0),  # an offset is honoured
        ("Fri, 28 Feb 2025 12:00:00 GMT", 0.0),  # past: at once
        (None, None),
        ("", None),
        ("-1", None),
        ("1.5", None),
        ("soon", None),
        ("\u0661", None),  # a non-ASCII digit is no delay-seconds
    ],
)
def test_retry_after_reads_seconds_and_http_dates(value: str | None, seconds: float | None) -> None:
    assert fetchguard.retry_after(value, now=NOW) == seconds


def test_a_429_is_asked_again_after_its_retry_after() -> None:
    """The second request is sent only after the guard waited the second the host asked for,
    counted from the first answer (recorded, not slept)."""
    with ScriptedServer() as srv:
        url = srv.script("/busy.jpg", _busy(429, "1"), IMAGE)
        waits = Waits(srv, "/busy.jpg")
        limits = fetchguard.HostLimits(busy_retries=2, max_retry_after=5)
        assert _fetch(fetchguard.opener(LOOPBACK, limits=limits, wait_until=waits), url) == GOOD
        (first_at, _), (_, second_headers) = srv.requests("/busy.jpg")
    (_, _, seen0), (_, starts_at, seen) = waits.calls  # the guard waits before each request
    assert (seen0, seen) == (0, 1)  # the second wait came between the two requests
    assert starts_at >= first_at + 1.0  # and ends a second after the 429 was sent, at the earliest
    assert "User-Agent" in second_headers  # the same request, asked again


def test_a_host_still_busy_after_busy_retries_is_an_http_error() -> None:
    """Without a Retry-After the guard backs off 1 s, then 2 s; then the 503 is the answer."""
    with ScriptedServer() as srv:
        url = srv.script("/down.jpg", _busy(503))
        waits = Waits(srv, "/down.jpg")
        limits = fetchguard.HostLimits(busy_retries=2, max_retry_after=5)
        with pytest.raises(urllib.error.HTTPError) as err:
            _fetch(fetchguard.opener(LOOPBACK, limits=limits, wait_until=waits, deadline_seconds=60), url)
        arrivals = [at for at, _ in srv.requests("/down.jpg")]
    assert err.value.code == 503 and len(arrivals) == 3
    (_, _, seen0), (_, first, seen1), (_, second, seen2) = waits.calls
    assert (seen0, seen1, seen2) == (0, 1, 2)
    assert first >= arrivals[0] + 1.0 and second >= arrivals[1] + 2.0


def test_an_http_date_in_the_past_is_retried_at_once() -> None:
    with ScriptedServer() as srv:
        url = srv.script("/busy.jpg", _busy(503, email.utils.formatdate(0, usegmt=True)), IMAGE)
        limits = fetchguard.HostLimits(busy_retries=1, max_retry_after=5)
        assert _fetch(fetchguard.opener(LOOPBACK, limits=limits), url) == GOOD
        assert len(srv.requests("/busy.jpg")) == 2


def test_a_retry_after_past_the_limits_is_not_waited_and_holds_the_host_back() -> None:
    """A Retry-After longer than max_retry_after ends the request with the host's answer; the
    host is then asked nothing for max_retry_after, so a request whose deadline ends sooner is
    refused (host_busy) without a byte sent."""
    with ScriptedServer() as srv:
        busy = srv.script("/busy.jpg", _busy(429, "3600"))
        other = srv.script("/other.jpg", IMAGE)
        waits = Waits()
        limits = fetchguard.HostLimits(busy_retries=2, max_retry_after=30)
        guard = fetchguard.opener(LOOPBACK, limits=limits, wait_until=waits, deadline_seconds=10)
        with pytest.raises(urllib.error.HTTPError) as err:
            _fetch(guard, busy)
        with pytest.raises(Blocked) as held:
            _fetch(guard, other)
        assert srv.requests("/other.jpg") == [] and len(srv.requests("/busy.jpg")) == 1
    assert err.value.code == 429 and held.value.reason == "host_busy"
    assert len(waits.calls) == 1  # the first request's; the second was refused, not waited for


def test_a_retry_after_past_the_deadline_is_not_waited() -> None:
    with ScriptedServer() as srv:
        url = srv.script("/busy.jpg", _busy(503, "20"), IMAGE)
        limits = fetchguard.HostLimits(busy_retries=2, max_retry_after=60)
        with pytest.raises(urllib.error.HTTPError) as err:
            _fetch(fetchguard.opener(LOOPBACK, limits=limits, wait_until=Waits(), deadline_seconds=10), url)
        assert err.value.code == 503 and len(srv.requests("/busy.jpg")) == 1


@pytest.mark.parametrize("connections", [1, 2])
def test_per_host_connections_hold_across_threads(connections: int) -> None:
    """Six threads share one guard, as img2dataset's threads share the installed opener; the
    server holds each request until one more than the limit are open (or 0.2 s), so a guard
    that let more through would show it."""
    with ScriptedServer(hold_for_company=0.2, company=connections + 1) as srv:
        urls = [srv.script(f"/{i}.jpg", IMAGE) for i in range(6)]
        guard = fetchguard.opener(
            LOOPBACK, limits=fetchguard.HostLimits(connections=connections), deadline_seconds=60
        )
        bodies: list[bytes] = []
        threads = [threading.Thread(target=lambda u=u: bodies.append(_fetch(guard, u))) for u in urls]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert bodies == [GOOD] * 6 and srv.connections == 6
    assert srv.max_active == connections


def test_per_host_rate_spaces_request_starts() -> None:
    with ScriptedServer() as srv:
        url = srv.script("/a.jpg", IMAGE)
        waits = Waits()
        limits = fetchguard.HostLimits(requests_per_second=4)
        guard = fetchguard.opener(LOOPBACK, limits=limits, wait_until=waits, deadline_seconds=60)
        for _ in range(3):
            assert _fetch(guard, url) == GOOD
    starts = [at for _, at, _ in waits.calls]
    assert len(starts) == 3 and all(b - a >= 0.25 - 1e-9 for a, b in zip(starts, starts[1:]))


def test_a_request_that_cannot_get_a_connection_in_time_sends_nothing() -> None:
    with ScriptedServer() as srv:
        first, second = srv.script("/a.jpg", IMAGE), srv.script("/b.jpg", IMAGE)
        limits = fetchguard.HostLimits(connections=1)
        guard = fetchguard.opener(LOOPBACK, limits=limits, deadline_seconds=0.5)
        with guard.open(first, timeout=5) as held:  # open, not yet read: its connection is taken
            with pytest.raises(Blocked) as err:
                _fetch(guard, second)
            assert srv.requests("/b.jpg") == []
            assert held.read() == GOOD
        assert _fetch(guard, second) == GOOD  # read and closed: the connection is free again
    assert err.value.reason == "host_busy"


def test_refused_and_error_answers_give_their_connection_back() -> None:
    """With one connection per host, every way a response ends frees it: an error status (closed
    unread), a body refused by its declared size, a busy answer given up."""
    with ScriptedServer() as srv:
        missing = srv.script("/missing.jpg", (404, {}, b"no"))
        large = srv.script("/large.jpg", (200, {}, b"x" * 2048))
        busy = srv.script("/busy.jpg", _busy(503, "0"))
        good = srv.script("/good.jpg", IMAGE)
        limits = fetchguard.HostLimits(connections=1, busy_retries=1)
        guard = fetchguard.opener(LOOPBACK, max_bytes=1024, limits=limits, deadline_seconds=2)
        for _ in range(2):
            with pytest.raises(urllib.error.HTTPError):
                _fetch(guard, missing)
            with pytest.raises(Blocked, match="response_too_large"):
                _fetch(guard, large)
            with pytest.raises(urllib.error.HTTPError):
                _fetch(guard, busy)
        assert _fetch(guard, good) == GOOD
        assert len(srv.requests("/busy.jpg")) == 4


def test_an_opt_out_answer_is_closed_unread_and_frees_its_connection() -> None:
    """What img2dataset does with a refused image (X-Robots-Tag): closes the response after its
    headers. The guard reads none of its body (a bomb here) and frees the connection."""
    with ScriptedServer() as srv:
        bomb = srv.script("/bomb.png", (200, {"X-Robots-Tag": "noai"}, BOMB.read_bytes()))
        limits = fetchguard.HostLimits(connections=1)
        guard = fetchguard.opener(LOOPBACK, max_pixels=10_000, limits=limits, deadline_seconds=2)
        for _ in range(3):
            with guard.open(bomb, timeout=5) as response:
                assert response.headers["X-Robots-Tag"] == "noai"
        with pytest.raises(Blocked, match="image_too_large"):  # had it been read
            _fetch(guard, bomb)
