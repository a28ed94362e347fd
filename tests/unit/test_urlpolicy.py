"""URL policy: http(s) only; loopback/private/link-local/multicast hosts refused unless allowed."""

from __future__ import annotations

import pytest

from mvlp_core.spec import UrlPolicy
from mvlp_core.urlpolicy import check_url

DEFAULT = UrlPolicy()


def reason(url: str, policy: UrlPolicy = DEFAULT) -> str | None:
    verdict = check_url(url, policy)
    if verdict is None:
        return None
    assert isinstance(verdict, tuple) and len(verdict) == 2
    assert isinstance(verdict[1], str)
    return verdict[0]


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a.jpg",
        "https://example.com/a.jpg",
        "HTTPS://Example.COM/a.jpg?x=1",
        "http://93.184.216.34/img.png",
        "https://images.cdn.example.org:8443/path/to/img.jpg",
        "  https://example.com/padded.jpg  ",
    ],
)
def test_public_http_urls_allowed(url: str) -> None:
    assert check_url(url, DEFAULT) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "file:///etc/passwd",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "example.com/no-scheme.jpg",
    ],
)
def test_non_http_schemes_rejected(url: str) -> None:
    assert reason(url) == "url_scheme"


LOOPBACK = [
    "http://127.0.0.1/a.jpg",
    "http://127.1.2.3:8080/a.jpg",
    "http://[::1]/a.jpg",
    "http://[::1]:8000/a.jpg",
    "http://localhost/a.jpg",
    "http://LOCALHOST:9000/a.jpg",
    "http://img.localhost/a.jpg",
    "http://2130706433/a.jpg",  # decimal 127.0.0.1
    "http://0x7f000001/a.jpg",  # hex 127.0.0.1
    "http://0177.0.0.1/a.jpg",  # octal 127.0.0.1
    "http://127.1/a.jpg",  # short inet_aton form
    "http://[::ffff:127.0.0.1]/a.jpg",  # IPv4-mapped IPv6
]

# a connect to any of these reaches this host too: 0.0.0.0/8 and :: in every spelling
THIS_HOST = [
    "http://0.0.0.0/a.jpg",
    "http://0/a.jpg",  # decimal
    "http://0x0/a.jpg",  # hex
    "http://000.000.000.000/a.jpg",  # octal parts
    "http://0.0/a.jpg",  # short inet_aton form
    "http://0.1.2.3/a.jpg",  # "this network" 0.0.0.0/8
    "http://[::]/a.jpg",
    "http://[0:0:0:0:0:0:0:0]/a.jpg",
    "http://[::ffff:0.0.0.0]/a.jpg",  # IPv4-mapped
    "http://[::ffff:0:0]/a.jpg",
    "http://[::127.0.0.1]/a.jpg",  # IPv4-compatible
    "http://[::7f00:1]/a.jpg",
]


@pytest.mark.parametrize("url", LOOPBACK)
def test_loopback_rejected_by_default(url: str) -> None:
    assert reason(url) == "url_loopback"


@pytest.mark.parametrize("url", LOOPBACK)
def test_loopback_allowed_with_policy(url: str) -> None:
    assert check_url(url, UrlPolicy(allow_loopback=True)) is None


@pytest.mark.parametrize("url", THIS_HOST)
def test_this_host_is_loopback_even_with_private_allowed(url: str) -> None:
    assert reason(url, UrlPolicy(allow_private=True, allow_link_local=True)) == "url_loopback"
    assert check_url(url, UrlPolicy(allow_loopback=True)) is None


def test_ipv4_compatible_forms_are_judged_by_their_ipv4_address() -> None:
    assert reason("http://[::a9fe:a9fe]/") == "url_link_local"  # ::169.254.169.254
    assert reason("http://[::a00:1]/") == "url_private"  # ::10.0.0.1


def test_loopback_policy_does_not_open_private() -> None:
    assert reason("http://10.0.0.1/", UrlPolicy(allow_loopback=True)) == "url_private"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/a.jpg",
        "http://10.255.255.254/a.jpg",
        "http://192.168.1.1/a.jpg",
        "http://172.16.0.1/a.jpg",
        "http://172.31.255.1/a.jpg",
        "http://0x0a000001/a.jpg",  # hex 10.0.0.1
        "http://[fd00::1]/a.jpg",  # IPv6 unique local
    ],
)
def test_private_rejected(url: str) -> None:
    assert reason(url) == "url_private"
    assert check_url(url, UrlPolicy(allow_private=True)) is None


def test_private_neighbours_are_public() -> None:
    assert check_url("http://172.32.0.1/", DEFAULT) is None
    assert check_url("http://11.0.0.1/", DEFAULT) is None


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/"])
def test_link_local_rejected(url: str) -> None:
    assert reason(url) == "url_link_local"
    assert check_url(url, UrlPolicy(allow_link_local=True)) is None


@pytest.mark.parametrize("url", ["http://224.0.0.1/", "http://239.255.255.250/", "http://[ff02::1]/"])
def test_multicast_rejected_even_with_everything_allowed(url: str) -> None:
    assert reason(url) == "url_multicast"
    permissive = UrlPolicy(allow_loopback=True, allow_private=True, allow_link_local=True)
    assert reason(url, permissive) == "url_multicast"


@pytest.mark.parametrize("url", ["http:///a.jpg", "http://", "https://:80/a.jpg"])
def test_no_host_is_invalid(url: str) -> None:
    assert reason(url) == "url_invalid"


def test_unparseable_url_is_invalid() -> None:
    assert reason("http://[::1/a.jpg") == "url_invalid"


def test_detail_names_the_host() -> None:
    verdict = check_url("http://192.168.1.1/x", DEFAULT)
    assert verdict is not None and "192.168.1.1" in verdict[1]
    verdict = check_url("ftp://example.com/x", DEFAULT)
    assert verdict is not None and "ftp" in verdict[1]
