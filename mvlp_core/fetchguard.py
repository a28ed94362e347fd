"""The URL policy enforced where the bytes are fetched: a urllib opener for img2dataset's workers.

img2dataset fetches in worker processes with `urllib.request.urlopen`, which follows
redirects and resolves host names itself, so a policy checked only on the listed URL misses
`302 Location: http://169.254.169.254/` and names that resolve to private addresses. The download
stage installs this opener in every worker (`install`, run as the worker pool's initializer), so
each request and each redirect hop is checked in the worker that makes it:

- the URL (scheme, literal address, port) before anything is sent;
- every address the host name resolves to, and the connection goes to an address that was
  checked (no second lookup a rebinding DNS name could answer differently);
- a body over `max_bytes` (declared or streamed) and an image whose header declares more than
  `max_pixels` (a decompression bomb is refused before img2dataset decodes it). These two limits
  hold with the policy checks off too. They are checked here rather than through OpenCV's
  `OPENCV_IO_MAX_IMAGE_PIXELS`, which OpenCV reads once when it loads, so a worker pool that
  outlives one run could not change it.

A refusal raises `Blocked`, whose text `mvlp url policy: <reason> <detail>` img2dataset records as
the sample's error; the download stage turns it into a reject with that reason. Checking in the
workers costs one `getaddrinfo` and one header parse per request; a loopback proxy would put every
request through one thread (BENCHMARKS.md: download vs the img2dataset CLI).
While the guard is on, `http_proxy` is not used: a proxy would resolve names where they cannot be
checked.
"""

from __future__ import annotations

import functools
import http.client
import io
import ipaddress
import re
import socket
import urllib.request
import warnings
from collections.abc import Callable

from PIL import Image

from mvlp_core import urlpolicy
from mvlp_core.spec import UrlPolicy

BLOCK_PHRASE = "mvlp url policy"

Resolver = Callable[[str, int], list[tuple]]


class Blocked(OSError):
    """A request the policy refuses; an OSError so urllib reports it like a failed connection."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{BLOCK_PHRASE}: {reason} {detail}")
        self.reason, self.detail = reason, detail


def _getaddrinfo(host: str, port: int) -> list[tuple]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _check_url(url: str, policy: UrlPolicy | None) -> None:
    verdict = policy and urlpolicy.check_url(url, policy)
    if verdict:
        raise Blocked(*verdict)


def connect_checked(
    address: tuple[str, int],
    timeout: float | None,
    source_address: tuple[str, int] | None,
    *,
    policy: UrlPolicy,
    resolve: Resolver = _getaddrinfo,
) -> socket.socket:
    """`socket.create_connection`, refusing a host any of whose addresses the policy refuses."""
    host, port = address
    infos = resolve(host, port)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        verdict = urlpolicy.check_ip(ip, policy)
        if verdict:
            raise Blocked(verdict[0], f"{host} resolves to {ip}")
    error: OSError | None = None
    for *_, sockaddr in infos:  # numeric addresses: create_connection does no second lookup
        try:
            return socket.create_connection(sockaddr[:2], timeout, source_address)
        except OSError as err:
            error = err
    raise error or OSError(f"cannot resolve {host}")


def _guarded_connection(base: type, connect: Callable[..., socket.socket]) -> type:
    class Guarded(base):
        # http.client opens every socket through this hook (HTTPS wraps it in TLS afterwards,
        # with the host name for SNI and certificate checks)
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._create_connection = connect

    Guarded.__name__ = f"Guarded{base.__name__}"
    return Guarded


class _Handler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """Opens http and https URLs through checked connections, and bounds what they return."""

    handler_order = 400  # its response hook runs before HTTPErrorProcessor (1000)

    def __init__(self, policy: UrlPolicy | None, resolve: Resolver, max_bytes: int, max_pixels: int) -> None:
        urllib.request.HTTPHandler.__init__(self)
        urllib.request.HTTPSHandler.__init__(self)
        self.policy, self.max_bytes, self.max_pixels = policy, max_bytes, max_pixels
        self._http, self._https = http.client.HTTPConnection, http.client.HTTPSConnection
        if policy is not None:
            connect = functools.partial(connect_checked, policy=policy, resolve=resolve)
            self._http = _guarded_connection(self._http, connect)
            self._https = _guarded_connection(self._https, connect)

    def http_open(self, req: urllib.request.Request):
        _check_url(req.full_url, self.policy)
        return self.do_open(self._http, req)

    def https_open(self, req: urllib.request.Request):
        _check_url(req.full_url, self.policy)
        return self.do_open(self._https, req, context=self._context)

    def http_response(self, req: urllib.request.Request, response):
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise Blocked("response_too_large", f"{declared} bytes declared > {self.max_bytes}")
        read = response.read

        def bounded_read(amt: int | None = None) -> bytes:
            if amt is not None:
                return read(amt)
            # a declared length (checked above) is read whole, so a body cut short raises
            # IncompleteRead; an undeclared (endless) one stops one byte past the limit
            body = read() if declared.isdigit() else read(self.max_bytes + 1)
            if len(body) > self.max_bytes:
                raise Blocked("response_too_large", f"more than {self.max_bytes} bytes")
            dims = image_size(body)
            if dims and dims[0] * dims[1] > self.max_pixels:
                raise Blocked("image_too_large", f"{dims[0]}x{dims[1]} > {self.max_pixels} pixels")
            return body

        response.read = bounded_read
        return response

    https_response = http_response


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Refuses a redirect to a URL the policy refuses (an `ftp:` or `file:` hop included)."""

    def __init__(self, policy: UrlPolicy | None) -> None:
        self.policy = policy

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        _check_url(newurl, self.policy)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener(
    policy: UrlPolicy | None,
    max_bytes: int = 50 * 2**20,
    max_pixels: int = 100_000_000,
    resolve: Resolver = _getaddrinfo,
) -> urllib.request.OpenerDirector:
    """A urllib opener that fetches only what `policy` allows (http and https, no env proxy), and
    refuses bodies over `max_bytes` and image headers over `max_pixels`. With `policy` None only
    the size limits hold (`download.guard_fetch: false`), and env proxies are used as urllib would."""
    director = urllib.request.OpenerDirector()
    handlers: list[urllib.request.BaseHandler] = [] if policy else [urllib.request.ProxyHandler()]
    handlers += [
        _Handler(policy, resolve, max_bytes, max_pixels),
        _RedirectHandler(policy),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),  # any other scheme: "unknown url type"
    ]
    for handler in handlers:
        director.add_handler(handler)
    return director


def install(policy: UrlPolicy | None, max_bytes: int, max_pixels: int) -> None:
    """Make `urllib.request.urlopen` in this process go through `opener` (img2dataset's worker
    pool runs this as its initializer)."""
    urllib.request.install_opener(opener(policy, max_bytes, max_pixels))


def image_size(body: bytes) -> tuple[int, int] | None:
    """Width and height from an image header (nothing is decoded); None if it is no image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(body)) as img:
                return img.size
    except Image.DecompressionBombError as err:
        match = re.search(r"\((\d+) pixels\)", str(err))
        return (int(match[1]), 1) if match else (2**31, 1)
    except Exception:  # not an image, or a broken one: img2dataset decides and rejects it
        return None
