"""Which URLs may be fetched: http(s) only, and no loopback/private/link-local/multicast hosts
unless the spec allows them.

Applied at ingest to the listed URL and again at download to the URL actually fetched (after a
mirror rewrite). Host names are checked as written here (IP literals in dotted, decimal, hex and
IPv6 form, and `localhost`); `mvlp_core.fetchguard` checks what names resolve to, and every
redirect hop, where img2dataset fetches.

"Loopback" means every address the kernel delivers to this host: 127.0.0.0/8, ::1, and also
0.0.0.0/8 and `::` (a connect to 0.0.0.0 reaches 127.0.0.1), in any spelling (`0`, `0x0`,
`[::]`) and inside IPv4-mapped (`::ffff:0.0.0.0`) and IPv4-compatible (`::127.0.0.1`) IPv6
forms. So `allow_private` never opens the local host's services (the Prefect API, the Ray
dashboard); only `allow_loopback` does.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from mvlp_core.spec import UrlPolicy

ALLOWED_SCHEMES = ("http", "https")
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # "this host on this network" (RFC 1122)


def _inet_aton_part(part: str) -> int:
    if part.lower().startswith("0x"):
        return int(part, 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part, 10)


def _parse_host_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # inet_aton forms that browsers and urllib accept: 2130706433, 0x7f000001, 0177.0.0.1
    parts = host.split(".")
    if not parts or not all(parts):
        return None
    try:
        nums = [_inet_aton_part(p) for p in parts]
    except ValueError:
        return None
    if len(nums) > 4 or any(n < 0 for n in nums):
        return None
    *head, last = nums
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(value)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible (::a.b.c.d, which
    includes `::` and `::1`) IPv6 address carries, else None."""
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if int(ip) >> 32 == 0:
        return ipaddress.IPv4Address(int(ip))
    return None


def check_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: UrlPolicy) -> tuple[str, str] | None:
    """None if an address may be contacted, else (reason, detail). An IPv6 form of an IPv4
    address is judged by the IPv4 address it carries."""
    shown = str(ip)
    if isinstance(ip, ipaddress.IPv6Address):
        ip = _embedded_ipv4(ip) or ip
    if ip.is_loopback or ip in THIS_NETWORK:  # every address a connect delivers to this host
        return None if policy.allow_loopback else ("url_loopback", shown)
    if ip.is_link_local:
        return None if policy.allow_link_local else ("url_link_local", shown)
    if ip.is_multicast:
        return "url_multicast", shown
    # not is_global also catches shared address space (100.64/10) and other special ranges
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return None if policy.allow_private else ("url_private", shown)
    return None


def check_url(url: str, policy: UrlPolicy) -> tuple[str, str] | None:
    """None if the URL may be fetched, else (reason, detail)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        port = parts.port
    except ValueError as err:
        return "url_invalid", str(err)
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        return "url_scheme", f"scheme {parts.scheme or '(none)'!r} not in {ALLOWED_SCHEMES}"
    if not host:
        return "url_invalid", "no host"
    host = host.lower().rstrip(".")
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        verdict = None if policy.allow_loopback else ("url_loopback", host)
    else:
        ip = _parse_host_ip(host)
        verdict = check_ip(ip, policy) if ip is not None else None
    if verdict is None and policy.allowed_ports is not None:
        effective = port or (443 if parts.scheme.lower() == "https" else 80)
        if effective not in policy.allowed_ports:
            verdict = "url_port", f"port {effective} not in {policy.allowed_ports}"
    return verdict
