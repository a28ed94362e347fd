"""The fetch guard: every request and redirect hop is checked where it is fetched.

All traffic stays on 127.0.0.1: private and link-local targets are refused before any connection,
which the tests check by giving the proxy a resolver that records what it was asked.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mvlp_core.fetchguard import BLOCK_PHRASE, FetchGuard
from mvlp_core.imageserver import ImageServer
from mvlp_core.spec import UrlPolicy


@pytest.fixture()
def server(tmp_path: Path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8jpeg-bytes")
    with ImageServer(tmp_path, slow_seconds=2) as srv:
        yield srv


def _opener(guard: FetchGuard) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({"http": guard.url, "https": guard.url}))


def _fetch(guard: FetchGuard, url: str) -> bytes:
    with _opener(guard).open(url, timeout=5) as r:
        return r.read()


def test_allowed_request_is_forwarded(server) -> None:
    with FetchGuard(UrlPolicy(allow_loopback=True)) as guard:
        assert _fetch(guard, server.url + "images/a.jpg") == b"\xff\xd8jpeg-bytes"
    assert server.request_counts()["/images/a.jpg"] == 1


def test_redirect_hop_to_a_forbidden_port_is_refused(server, tmp_path: Path) -> None:
    with ImageServer(tmp_path) as secret:  # stands for an internal service
        policy = UrlPolicy(allow_loopback=True, allowed_ports=[server.port])
        target = secret.url + "images/a.jpg"
        with FetchGuard(policy) as guard:
            with pytest.raises(urllib.error.HTTPError) as err:
                _fetch(guard, f"{server.url}bad/redirect?to={target}")
        assert err.value.code == 403 and f"{BLOCK_PHRASE}: url_port" in str(err.value)
        assert guard.blocked == {"url_port": 1}
        assert secret.request_counts() == {}  # the internal service never saw a request


def test_name_resolving_to_private_address_is_refused_without_connecting() -> None:
    asked: list[str] = []

    async def resolver(host, port, policy):
        asked.append(host)
        from mvlp_core.fetchguard import _check_addresses

        _check_addresses(host, ["10.1.2.3"], policy)  # what a rebinding DNS name would answer
        raise AssertionError("a private address must be refused before connecting")

    with FetchGuard(UrlPolicy(), resolve=resolver) as guard:
        with pytest.raises(urllib.error.HTTPError) as err:
            _fetch(guard, "http://innocent.example/x.jpg")
    assert asked == ["innocent.example"]
    assert "url_private innocent.example resolves to 10.1.2.3" in str(err.value)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://169.254.169.254/latest/meta-data/", "url_link_local"),
        ("http://10.0.0.1/a.jpg", "url_private"),
        ("http://100.64.0.1/a.jpg", "url_private"),
        ("http://127.0.0.1./a.jpg", "url_loopback"),
        ("http://2130706433/a.jpg", "url_loopback"),
        ("http://[::ffff:a9fe:a9fe]/a.jpg", "url_link_local"),
    ],
)
def test_literal_addresses_are_refused_at_the_proxy(url: str, reason: str) -> None:
    async def resolver(host, port, policy):
        raise AssertionError(f"{url} must be refused before resolving")

    with FetchGuard(UrlPolicy(), resolve=resolver) as guard:
        with pytest.raises(urllib.error.HTTPError) as err:
            _fetch(guard, url)
    assert err.value.code == 403 and f"{BLOCK_PHRASE}: {reason}" in str(err.value)


def test_https_connect_to_private_address_is_refused() -> None:
    with FetchGuard(UrlPolicy()) as guard:
        with pytest.raises(urllib.error.URLError) as err:
            _fetch(guard, "https://10.0.0.1/a.jpg")
    assert "403" in str(err.value)
    assert guard.blocked == {"url_private": 1}


def test_endless_body_is_refused_at_the_byte_limit(server) -> None:
    with FetchGuard(UrlPolicy(allow_loopback=True), max_bytes=1 << 20) as guard:
        with pytest.raises(urllib.error.HTTPError) as err:
            _fetch(guard, server.url + "bad/endless.jpg")
    assert err.value.code == 403 and "response_too_large" in str(err.value)
    assert guard.blocked == {"response_too_large": 1}
