"""The URL policy enforced where the bytes are fetched: a urllib opener for img2dataset's workers.

img2dataset fetches in worker processes with `urllib.request.urlopen`, which follows
redirects and resolves host names itself, so a policy checked only on the listed URL misses
`302 Location: http://169.254.169.254/` and names that resolve to private addresses. The download
stage installs this opener in every worker (`install`, run as the worker pool's initializer), so
each request and each redirect hop is checked in the worker that makes it:

- the URL (scheme, literal address, port) before anything is sent;
- every address the host name resolves to, and the connection goes to an address that was
  checked (no second lookup a rebinding DNS name could answer differently);
- a wall-clock deadline for the whole request (every connect, TLS handshake, status line, header
  and body byte, over all its redirect hops): urlopen's `timeout` bounds each socket read, so a
  server that drips one byte per second, or sends `100 Continue` without end, would hold a worker
  thread forever. The deadline is `deadline_seconds` (`install`/`opener`), by default
  `DEADLINE_FACTOR` x the request's timeout; each read waits at most what is left of it;
- at most `MAX_INFORMATIONAL` informational (1xx) responses before the final one, and
  http.client's caps on header lines (64 KiB each, 100 per response);
- a body over `max_bytes` (declared or streamed) and an image over `max_pixels` (a decompression
  bomb is refused before img2dataset decodes it). Its size is read from the header by Pillow
  and by a parser of every format OpenCV's `imdecode` accepts (`image_size`); the larger answer
  counts. A container neither can size is refused (`_Format.mirrored`). These limits hold
  with the policy checks off too. They are checked here rather than through OpenCV's
  `OPENCV_IO_MAX_IMAGE_PIXELS`, which OpenCV reads once when it loads, so a worker pool that
  outlives one run could not change it.

A refusal raises `Blocked`, whose text `mvlp url policy: <reason> <detail>` img2dataset records as
the sample's error; the download stage turns it into a reject with that reason:

| reason | meaning |
|---|---|
| `url_scheme`, `url_invalid`, `url_port`, `url_loopback`, `url_private`, `url_link_local`, `url_multicast` | the URL policy (`mvlp_core.urlpolicy`) refuses the URL, a redirect hop or a resolved address |
| `timeout` | the request did not finish by its deadline |
| `too_many_informational` | more than `MAX_INFORMATIONAL` 1xx responses before the final one |
| `headers_too_large` | a status or header line over 64 KiB, or over 100 header lines in one response |
| `response_too_large` | a body over `max_bytes` |
| `image_too_large` | an image header declaring more than `max_pixels` pixels |
| `image_unsized` | a container OpenCV would open (TIFF, WebP, AVIF, JPEG 2000, OpenEXR: its signature says so) whose size no parser can read |
| `host_busy` | the host's limits (`HostLimits`: connections open, request rate, a Retry-After it sent) would hold the request past its deadline; nothing was sent |

Politeness (`HostLimits`, shared by every thread of the process, per host name): at most
`connections` open to a host, requests started at least 1/`requests_per_second` apart, and a
`429`/`503` answer retried after its `Retry-After` (seconds or an HTTP date; without one 1 s, 2 s,
4 s, ...) up to `busy_retries` times while the wait fits in the deadline and in `max_retry_after`.
The wait holds back every request to that host, not only the one answered; a request that gives
up returns the answer it got (`http_429`, `http_503`). Error answers (4xx, 5xx) are closed unread.

`install` makes the guard hold whatever form of `urlopen` the caller uses: the installed opener
serves `urlopen(url)`, and `urlopen` itself is replaced so that `urlopen(url, context=ctx)`, for
which urllib builds a fresh opener past the installed one (img2dataset after 1.47), goes through
the guard too, with `ctx` for TLS. `requests_seen` counts what the guard opened, so a caller can
check that a library's download path goes through it (the download stage does, at every start).

Checking in the workers costs one `getaddrinfo` and one header parse per request; a loopback proxy
would put every request through one thread (BENCHMARKS.md: download vs the img2dataset CLI).
While the guard is on, `http_proxy` is not used: a proxy would resolve names where they cannot be
checked.
"""

from __future__ import annotations

import email.utils
import functools
import http.client
import io
import ipaddress
import itertools
import re
import socket
import ssl
import struct
import threading
import time
import urllib.parse
import urllib.request
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from PIL import Image

from mvlp_core import urlpolicy
from mvlp_core.spec import UrlPolicy

BLOCK_PHRASE = "mvlp url policy"
DEADLINE_FACTOR = 3  # default deadline: this many times the request's per-read timeout
FALLBACK_DEADLINE_SECONDS = 60.0  # default deadline of a request opened without a timeout
MAX_INFORMATIONAL = 10  # 1xx responses allowed before the final one
BUSY_STATUSES = (429, 503)  # answers retried after their Retry-After
BACKOFF_SECONDS = 1.0  # the first wait after a busy answer without a Retry-After; doubles each time
PRUNE_HOSTS_AT = 1024  # hosts with a start time kept before the past ones are dropped

Resolver = Callable[[str, int], list[tuple]]
Size = tuple[int, int]


class Blocked(OSError):
    """A request the policy refuses; an OSError so urllib reports it like a failed connection."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{BLOCK_PHRASE}: {reason} {detail}")
        self.reason, self.detail = reason, detail


class Deadline:
    """The wall-clock end of one request, shared by its connects, reads and redirect hops."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds  # on the time.monotonic() clock

    def left(self) -> float:
        """Seconds left; raises Blocked("timeout") when none are."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise Blocked("timeout", f"request not done within its {self.seconds:g} s deadline")
        return left

    def bound(self, timeout: object) -> float:
        """`timeout` (a per-operation socket timeout; anything but a number means none) cut to
        what is left of the deadline."""
        left = self.left()
        return min(timeout, left) if isinstance(timeout, int | float) else left


@dataclass(frozen=True)
class HostLimits:
    """Per-host politeness (the download stage fills it from `download.*`). The defaults impose
    nothing: no limit on connections or rate, a busy answer returned as it is."""

    connections: int | None = None  # open at once to one host, per process
    requests_per_second: float | None = None  # started per host, per process
    busy_retries: int = 0  # 429/503 answers retried after their Retry-After
    max_retry_after: float = 0.0  # the longest wait for one of them, and for holding its host back


NO_LIMITS = HostLimits()


@dataclass(eq=False)
class _Slot:
    """One request's place among its host's open connections; `release` (idempotent) frees it."""

    hosts: Hosts
    host: str
    held: bool = True

    def release(self) -> None:
        self.hosts.leave(self)


class Hosts:
    """Where each host stands against `HostLimits` in this process: its open connections and the
    earliest time its next request may start (set by the rate and by Retry-After). Memory: one
    entry per host with a connection open or a start time still ahead (past ones are dropped
    once there are more than PRUNE_HOSTS_AT), not one per host ever fetched."""

    def __init__(self, limits: HostLimits, wait_until: Callable[[float], None] | None = None) -> None:
        self.limits = limits
        # how a request waits for its start time, a time.monotonic() value (tests record it)
        self._wait_until = wait_until or _sleep_until
        self._changed = threading.Condition()
        self._open: Counter[str] = Counter()
        self._not_before: dict[str, float] = {}
        self._prune_at = PRUNE_HOSTS_AT

    def enter(self, host: str, deadline: Deadline) -> _Slot:
        """Wait for a connection to `host` to be free and for its start time, then take a slot.
        Refused at once (`host_busy`), with nothing sent, when either comes after the deadline
        (`timeout` when the deadline has passed already)."""
        deadline.left()
        with self._changed:
            free = self._changed.wait_for(lambda: self._has_room(host), deadline.end - time.monotonic())
            if not free:
                raise Blocked("host_busy", f"{self.limits.connections} connections to {host} still open")
            now = time.monotonic()
            start = max(now, self._not_before.get(host, now))
            if start >= deadline.end:
                raise Blocked("host_busy", f"{host} may not be asked again for {start - now:.1f} s")
            self._open[host] += 1
            if self.limits.requests_per_second:
                self._hold_until(host, start + 1 / self.limits.requests_per_second)
        slot = _Slot(self, host)
        try:
            self._wait_until(start)  # the rate or a Retry-After: this is the wait, not a poll
        except BaseException:
            slot.release()
            raise
        return slot

    def leave(self, slot: _Slot) -> None:
        """Give back `slot` (a second call does nothing)."""
        with self._changed:
            if slot.held:
                slot.held = False
                self._open[slot.host] -= 1
                if not self._open[slot.host]:
                    del self._open[slot.host]
                self._changed.notify_all()

    def hold(self, host: str, seconds: float) -> None:
        """Start no request to `host` for `seconds` (its Retry-After)."""
        if seconds > 0:
            with self._changed:
                self._hold_until(host, time.monotonic() + seconds)

    def _has_room(self, host: str) -> bool:
        return self.limits.connections is None or self._open[host] < self.limits.connections

    def _hold_until(self, host: str, when: float) -> None:
        """Called holding the lock: `host` starts nothing before `when`; past start times are
        dropped when the table has grown to twice what the last pruning left."""
        self._not_before[host] = max(when, self._not_before.get(host, when))
        if len(self._not_before) > self._prune_at:
            now = time.monotonic()
            self._not_before = {h: t for h, t in self._not_before.items() if t > now}
            self._prune_at = max(PRUNE_HOSTS_AT, 2 * len(self._not_before))


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.monotonic()))


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """The seconds a `Retry-After` header asks to wait (RFC 9110 10.2.3: delay-seconds, or an
    HTTP date in any of its three forms, a past date being 0) counted from `now` (None: the
    current time); None when there is none or it cannot be read (a negative or fractional
    number included)."""
    value = (value or "").strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or asctime: HTTP dates are in GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _getaddrinfo(host: str, port: int) -> list[tuple]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _check_url(url: str, policy: UrlPolicy | None) -> None:
    verdict = policy and urlpolicy.check_url(url, policy)
    if verdict:
        raise Blocked(*verdict)


def connect_checked(
    address: tuple[str, int],
    timeout: object,
    source_address: tuple[str, int] | None,
    *,
    policy: UrlPolicy | None,
    resolve: Resolver = _getaddrinfo,
    deadline: Deadline | None = None,
) -> socket.socket:
    """`socket.create_connection`, refusing a host any of whose addresses the policy refuses
    (None: no check); each connect attempt waits at most what is left of `deadline`."""
    host, port = address
    infos = resolve(host, port)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        verdict = policy and urlpolicy.check_ip(ip, policy)
        if verdict:
            raise Blocked(verdict[0], f"{host} resolves to {ip}")
    error: OSError | None = None
    for *_, sockaddr in infos:  # numeric addresses: create_connection does no second lookup
        wait = deadline.bound(timeout) if deadline else timeout
        try:
            return socket.create_connection(sockaddr[:2], wait, source_address)
        except OSError as err:
            error = err
    raise error or OSError(f"cannot resolve {host}")


class _DeadlineReader(io.RawIOBase):
    """A response's socket reader whose every read waits at most the per-read timeout and what
    is left of the request's deadline (TLS sockets included: each SSL read is one wait)."""

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, deadline: Deadline, timeout: object) -> None:
        super().__init__()
        self._raw, self._sock, self._deadline, self._timeout = raw, sock, deadline, timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int | None:
        self._sock.settimeout(self._deadline.bound(self._timeout))
        try:
            return self._raw.readinto(buffer)
        except TimeoutError:
            self._deadline.left()  # the deadline, not the per-read timeout, ran out: say so
            raise

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()
        super().close()


class _Response(http.client.HTTPResponse):
    """An HTTP response read through a `_DeadlineReader`, skipping informational responses up to
    a bound, with http.client's header caps reported as `headers_too_large`; its connection's
    host slot is freed when the connection closes (body read to the end, or closed)."""

    def __init__(
        self, sock: socket.socket, *args, deadline: Deadline, timeout: object, slot: _Slot, **kwargs
    ) -> None:
        super().__init__(sock, *args, **kwargs)
        # nothing is read yet: the buffer detached from the socket's reader is empty
        self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock, deadline, timeout))
        self.deadline = deadline
        self._slot = slot
        self._informational = 0

    def _close_conn(self) -> None:
        try:
            super()._close_conn()
        finally:
            self._slot.release()

    def begin(self) -> None:
        try:
            super().begin()
        except http.client.HTTPException as err:
            # http.client's caps: "got more than 65536 bytes when reading header line" (a
            # LineTooLong, the status line's too) and "got more than 100 headers"
            if not str(err).startswith("got more than"):
                raise
            raise Blocked("headers_too_large", str(err)) from None

    def _read_status(self) -> tuple[str, int, str]:
        """The final response's status line. http.client skips only `100 Continue`, without
        limit; this skips every 1xx but 101 (the header block of each too), at most
        MAX_INFORMATIONAL of them."""
        while True:
            version, status, reason = super()._read_status()
            if not 100 <= status < 200 or status == 101:
                return version, status, reason
            self._informational += 1
            if self._informational > MAX_INFORMATIONAL:
                raise Blocked("too_many_informational", f"more than {MAX_INFORMATIONAL} 1xx responses")
            http.client.parse_headers(self.fp)


def _connection_class(base: type[http.client.HTTPConnection], connect: Callable[..., socket.socket]) -> type:
    """`base` opening its socket with `connect` and reading its response as a `_Response`, both
    bound to the `deadline` and host `slot` the handler passes for each request."""

    class Bounded(base):
        # http.client opens every socket through this hook (HTTPS wraps it in TLS afterwards,
        # with the host name for SNI and certificate checks)
        def __init__(self, *args, deadline: Deadline, slot: _Slot, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._create_connection = functools.partial(connect, deadline=deadline)
            self.response_class = functools.partial(
                _Response, deadline=deadline, timeout=self.timeout, slot=slot
            )

    Bounded.__name__ = f"Bounded{base.__name__}"
    return Bounded


def _busy_wait(response: http.client.HTTPResponse, attempt: int) -> float:
    """The seconds a busy (429/503) answer asks to wait: its Retry-After, or without one
    BACKOFF_SECONDS doubled for each earlier attempt."""
    asked = retry_after(response.headers.get("Retry-After"))
    return BACKOFF_SECONDS * 2**attempt if asked is None else asked


class _Handler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """Opens http and https URLs through checked connections within each host's limits, retries
    busy answers, and bounds what they return."""

    handler_order = 400  # its response hook runs before HTTPErrorProcessor (1000)

    def __init__(
        self,
        policy: UrlPolicy | None,
        resolve: Resolver,
        max_bytes: int,
        max_pixels: int,
        deadline_seconds: float | None,
        limits: HostLimits,
        wait_until: Callable[[float], None] | None,
    ) -> None:
        urllib.request.HTTPHandler.__init__(self)
        urllib.request.HTTPSHandler.__init__(self)
        self.policy, self.max_bytes, self.max_pixels = policy, max_bytes, max_pixels
        self.deadline_seconds = deadline_seconds
        self.hosts = Hosts(limits, wait_until)
        self.opened = 0  # requests and hops opened; only grows (a count lost to a race is harmless)
        connect = functools.partial(connect_checked, policy=policy, resolve=resolve)
        self._http = _connection_class(http.client.HTTPConnection, connect)
        self._https = _connection_class(http.client.HTTPSConnection, connect)

    def _deadline(self, req: urllib.request.Request) -> Deadline:
        """A redirect hop's deadline is its request's (`_RedirectHandler`); a request starts one."""
        deadline = getattr(req, "mvlp_deadline", None)
        if deadline is not None:
            return deadline
        seconds, timeout = self.deadline_seconds, req.timeout
        if seconds is None:
            numeric = isinstance(timeout, int | float) and timeout > 0
            seconds = DEADLINE_FACTOR * timeout if numeric else FALLBACK_DEADLINE_SECONDS
        return Deadline(seconds)

    def http_open(self, req: urllib.request.Request):
        return self._open(self._http, req)

    def https_open(self, req: urllib.request.Request):
        # a context given to `urlopen` (through `install`'s replacement) sets up TLS
        return self._open(self._https, req, context=getattr(req, "mvlp_tls_context", None) or self._context)

    def _open(self, connection: type, req: urllib.request.Request, **kwargs):
        """One request or hop: counted, checked, within its host's limits, and asked again after
        a busy answer while `_may_retry` allows; the answer that ends it is returned."""
        self.opened += 1
        _check_url(req.full_url, self.policy)
        deadline = self._deadline(req)
        host = (urllib.parse.urlsplit(req.full_url).hostname or "").rstrip(".")
        for attempt in itertools.count():
            slot = self.hosts.enter(host, deadline)
            try:
                response = self.do_open(
                    functools.partial(connection, deadline=deadline, slot=slot), req, **kwargs
                )
            except BaseException:
                slot.release()
                raise
            if response.status not in BUSY_STATUSES:
                return response
            wait = _busy_wait(response, attempt)
            self.hosts.hold(host, min(wait, self.hosts.limits.max_retry_after))  # every thread waits
            if not self._may_retry(attempt, wait, deadline):
                return response
            response.close()

    def _may_retry(self, attempt: int, wait: float, deadline: Deadline) -> bool:
        """Whether a busy answer is asked again: a retry is left, and its `wait` is no longer
        than `max_retry_after` (never sooner than the host asked) and ends before the deadline."""
        limits = self.hosts.limits
        fits = time.monotonic() + wait < deadline.end
        return attempt < limits.busy_retries and wait <= limits.max_retry_after and fits

    def http_response(self, req: urllib.request.Request, response):
        if response.status >= 400:  # HTTPErrorProcessor raises next: nothing reads an error page
            response.close()
            return response
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
            check_image(body, self.max_pixels)
            return body

        response.read = bounded_read
        return response

    https_response = http_response


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Refuses a redirect to a URL the policy refuses (an `ftp:` or `file:` hop included); the
    next hop keeps the request's deadline and TLS context."""

    def __init__(self, policy: UrlPolicy | None) -> None:
        self.policy = policy

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        _check_url(newurl, self.policy)
        hop = super().redirect_request(req, fp, code, msg, headers, newurl)
        if hop is not None:  # a new Request each hop: a caller's Request never carries a deadline
            hop.mvlp_deadline = getattr(fp, "deadline", None)
            hop.mvlp_tls_context = getattr(req, "mvlp_tls_context", None)
        return hop


def opener(
    policy: UrlPolicy | None,
    max_bytes: int = 50 * 2**20,
    max_pixels: int = 100_000_000,
    resolve: Resolver = _getaddrinfo,
    deadline_seconds: float | None = None,
    limits: HostLimits = NO_LIMITS,
    wait_until: Callable[[float], None] | None = None,
) -> urllib.request.OpenerDirector:
    """A urllib opener that fetches only what `policy` allows (http and https, no env proxy),
    ends each request by its deadline (`deadline_seconds`; None: DEADLINE_FACTOR x the request's
    timeout), keeps to each host's `limits`, and refuses bodies over `max_bytes` and images over
    `max_pixels`. With `policy` None only the deadline, the host limits and the size limits hold
    (`download.guard_fetch: false`), and env proxies are used as urllib would. `wait_until` is how
    a request waits for its host's start time (the rate, a Retry-After), a time.monotonic() value
    (None: it sleeps)."""
    director = urllib.request.OpenerDirector()
    handlers: list[urllib.request.BaseHandler] = [] if policy else [urllib.request.ProxyHandler()]
    handlers += [
        _Handler(policy, resolve, max_bytes, max_pixels, deadline_seconds, limits, wait_until),
        _RedirectHandler(policy),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),  # any other scheme: "unknown url type"
    ]
    for handler in handlers:
        director.add_handler(handler)
    return director


_URLLIB_URLOPEN = urllib.request.urlopen
_installed: _Handler | None = None  # the guard `install` put in place in this process


def install(
    policy: UrlPolicy | None,
    max_bytes: int,
    max_pixels: int,
    deadline_seconds: float | None = None,
    limits: HostLimits = NO_LIMITS,
) -> None:
    """Make every `urllib.request.urlopen` call in this process go through `opener`, with or
    without an SSL context (img2dataset's worker pool runs this as its initializer)."""
    global _installed
    director = opener(policy, max_bytes, max_pixels, deadline_seconds=deadline_seconds, limits=limits)
    _installed = next(h for h in director.handlers if isinstance(h, _Handler))
    urllib.request.install_opener(director)
    urllib.request.urlopen = functools.partial(_urlopen, director)


def uninstall() -> None:
    """Undo `install`: urllib's own `urlopen` and default opener again."""
    global _installed
    _installed = None
    urllib.request.install_opener(None)
    urllib.request.urlopen = _URLLIB_URLOPEN


def requests_seen() -> int:
    """Requests (redirect hops included) the guard `install`ed in this process has opened."""
    return _installed.opened if _installed else 0


def _urlopen(
    director: urllib.request.OpenerDirector,
    url: str | urllib.request.Request,
    data: bytes | None = None,
    timeout: object = socket._GLOBAL_DEFAULT_TIMEOUT,
    *,
    cafile: str | None = None,
    capath: str | None = None,
    context: ssl.SSLContext | None = None,
):
    """`urllib.request.urlopen` while the guard is installed: through `director` whatever the
    caller passes. Given a `context` (or `cafile`/`capath`), urllib's own would build a fresh
    opener that the guard never sees; here they only set up TLS."""
    if context is None and (cafile or capath):
        context = ssl.create_default_context(cafile=cafile, capath=capath)
    request = url if isinstance(url, urllib.request.Request) else urllib.request.Request(url)
    request.mvlp_tls_context = context
    return director.open(request, data, timeout)


def check_image(body: bytes, max_pixels: int) -> None:
    """Refuse a body whose image header declares more than `max_pixels` pixels, or a container
    OpenCV would open that no parser can size; anything else passes (img2dataset decodes it, or
    rejects what it cannot decode)."""
    dims = image_size(body)
    if dims is None:
        fmt = _format(body)
        if fmt and not fmt.mirrored:
            raise Blocked("image_unsized", f"a {fmt.name} body whose size no header parser can read")
    elif dims[0] * dims[1] > max_pixels:
        raise Blocked("image_too_large", f"{dims[0]}x{dims[1]} > {max_pixels} pixels")


def image_size(body: bytes) -> Size | None:
    """Width and height from an image header (nothing is decoded): the larger of what Pillow and
    the parser for the format OpenCV would pick read; None if neither can."""
    return _largest([s for s in (_parsed_size(body), _pillow_size(body)) if s])


def _pillow_size(body: bytes) -> Size | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(body)) as img:
                return img.size
    except Image.DecompressionBombError as err:
        match = re.search(r"\((\d+) pixels\)", str(err))
        return (int(match[1]), 1) if match else (2**31, 1)
    except Exception:  # not an image, or a broken one
        return None


# --- what OpenCV decodes, and its size from the header --------------------------------------
# OpenCV's imdecode picks a decoder by the first bytes alone (loadsave.cpp findDecoder), for each
# format it is built with (cv2.getBuildInformation(), "Media I/O"). Each parser below reads the
# width and height the way that decoder's readHeader does, or reads more than it could (the
# largest of several candidates), never less: a parser that errs refuses a good image, never
# lets a bomb through.


def _u(fmt: str, body: bytes, offset: int) -> int:
    return struct.unpack_from(fmt, body, offset)[0]


def _largest(sizes: list[Size]) -> Size | None:
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


def _png_size(body: bytes) -> Size | None:
    # libpng requires IHDR first; a bad CRC in a later ancillary chunk is only a warning to it
    return (_u(">I", body, 16), _u(">I", body, 20)) if body[12:16] == b"IHDR" else None


def _jpeg_size(body: bytes) -> Size | None:
    """The first SOFn frame, found the way libjpeg finds markers: bytes other than 0xFF between
    segments are skipped (a warning to libjpeg, an error to Pillow)."""
    pos = 2
    while (pos := body.find(b"\xff", pos)) >= 0:
        while pos < len(body) and body[pos] == 0xFF:
            pos += 1
        marker, pos = body[pos], pos + 1
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            return _u(">H", body, pos + 5), _u(">H", body, pos + 3)
        if marker in (0xD9, 0xDA):  # EOI or SOS before any frame: libjpeg fails
            return None
        if marker not in (0x00, 0x01) and not 0xD0 <= marker <= 0xD7:  # segments with a length
            pos += _u(">H", body, pos)
    return None


def _gif_size(body: bytes) -> Size | None:
    return _u("<H", body, 6), _u("<H", body, 8)  # the logical screen; frames must fit in it


def _bmp_size(body: bytes) -> Size | None:
    header = _u("<i", body, 14)
    if header >= 36:
        return abs(_u("<i", body, 18)), abs(_u("<i", body, 22))
    return (_u("<H", body, 18), _u("<H", body, 20)) if header == 12 else None


def _webp_size(body: bytes) -> Size | None:
    """libwebp's WebPGetFeatures: a RIFF container or none, then a VP8X canvas or one VP8/VP8L
    chunk, or a raw VP8/VP8L bitstream."""
    start = 12 if body[:4] == b"RIFF" else 0
    tag, data = body[start : start + 4], start + 8
    if tag == b"VP8X":
        return 1 + (_u("<I", body, start + 12) & 0xFFFFFF), 1 + (_u("<I", body, start + 15) & 0xFFFFFF)
    if tag not in (b"VP8 ", b"VP8L"):
        data = start
    if body[data] == 0x2F:  # lossless: 14-bit width-1 and height-1
        bits = _u("<I", body, data + 1)
        return 1 + (bits & 0x3FFF), 1 + (bits >> 14 & 0x3FFF)
    if body[data + 3 : data + 6] == b"\x9d\x01\x2a":  # lossy key frame
        return _u("<H", body, data + 6) & 0x3FFF, _u("<H", body, data + 8) & 0x3FFF
    return None


_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 16: "Q", 17: "q"}


def _tiff_size(body: bytes) -> Size | None:
    """ImageWidth (256) and ImageLength (257) of the first directory (the page imdecode reads),
    classic or BigTIFF; the largest value if a tag repeats."""
    order = "<" if body[:2] == b"II" else ">"
    big = _u(order + "H", body, 2) == 43
    ifd = _u(order + ("Q" if big else "I"), body, 8 if big else 4)
    count = _u(order + ("Q" if big else "H"), body, ifd)
    first, step, value_at = (ifd + 8, 20, 12) if big else (ifd + 2, 12, 8)
    found: dict[int, int] = {}
    for entry in range(first, first + min(count, 4096) * step, step):
        tag, kind = _u(order + "H", body, entry), _u(order + "H", body, entry + 2)
        if tag in (256, 257) and kind in _TIFF_TYPES:
            value = abs(_u(order + _TIFF_TYPES[kind], body, entry + value_at))
            found[tag] = max(found.get(tag, 0), value)
    return (found[256], found[257]) if len(found) == 2 else None


def _boxes(body: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, content start, content end) of each box (ISO BMFF / JPEG 2000) in body[start:end]."""
    while start + 8 <= end:
        size, kind, header = _u(">I", body, start), body[start + 4 : start + 8], 8
        if size == 1:
            size, header = _u(">Q", body, start + 8), 16
        elif size == 0:  # to the end
            size = end - start
        if size < header:
            return
        yield kind, start + header, min(start + size, end)
        start += size


def _siz_size(body: bytes, soc: int) -> Size:
    """Xsiz - XOsiz, Ysiz - YOsiz of the SIZ segment that follows a codestream's SOC marker."""
    return abs(_u(">I", body, soc + 8) - _u(">I", body, soc + 16)), abs(
        _u(">I", body, soc + 12) - _u(">I", body, soc + 20)
    )


def _jpeg2000_size(body: bytes) -> Size | None:
    """A codestream's SIZ segment (OpenJPEG sizes the image from it); in a JP2 file, the
    codestream box's and the header box's `ihdr`, the larger."""
    if body.startswith(b"\xff\x4f\xff\x51"):
        return _siz_size(body, 0)
    sizes = []
    for kind, start, end in _boxes(body, 0, len(body)):
        if kind == b"jp2c":
            sizes.append(_siz_size(body, start))
        elif kind == b"jp2h":
            ihdr = [s for k, s, _ in _boxes(body, start, end) if k == b"ihdr"]
            sizes += [(_u(">I", body, s + 4), _u(">I", body, s)) for s in ihdr]
    return _largest(sizes)


def _exr_size(body: bytes) -> Size | None:
    """Every `dataWindow`/`displayWindow` box2i attribute (xMin, yMin, xMax, yMax), largest."""
    boxes = [struct.unpack_from("<4i", body, m.end() + 4) for m in re.finditer(rb"Window\0box2i\0", body)]
    return _largest([(abs(x1 - x0) + 1, abs(y1 - y0) + 1) for x0, y0, x1, y1 in boxes])


def _hdr_size(body: bytes) -> Size | None:
    """Radiance: every `-Y <height> +X <width>` line (OpenCV reads the one after the header's
    blank line with sscanf), largest."""
    found = re.finditer(rb"-Y\s*[+-]?(\d+)\s*\+X\s*[+-]?(\d+)", body)
    return _largest([(int(m[2]), int(m[1])) for m in found])


_PNM_GAP = rb"(?:\s|#[^\r\n]*[\r\n])*"  # whitespace and comments, as OpenCV's ReadNumber skips them


def _pnm_size(body: bytes) -> Size | None:
    match = re.match(rb"P[1-6]\s" + _PNM_GAP + rb"(\d+)" + _PNM_GAP + rb"(\d+)", body)
    return (int(match[1]), int(match[2])) if match else None


def _pam_size(body: bytes) -> Size | None:
    """P7: the largest WIDTH and HEIGHT values anywhere (OpenCV reads the header's last)."""
    widths = [int(w) for w in re.findall(rb"WIDTH\s+[+-]?(\d+)", body)]
    heights = [int(h) for h in re.findall(rb"HEIGHT\s+[+-]?(\d+)", body)]
    return (max(widths), max(heights)) if widths and heights else None


def _pfm_size(body: bytes) -> Size | None:
    """OpenCV's PFM reader: a line break after `Pf`/`PF`, then two tokens, each the bytes up to
    one whitespace byte (at most 2048), read with atoi."""
    if body[2:3] != b"\n":
        return None
    pos, dims = 3, []
    for _ in range(2):
        token = re.match(rb"[^\s]{0,2048}", body[pos : pos + 2048])[0]
        pos += len(token) + (len(token) < 2048)
        number = re.match(rb"[+-]?(\d+)", token)
        dims.append(int(number[1]) if number else 0)
    return dims[0], dims[1]


def _sunras_size(body: bytes) -> Size | None:
    return _u(">I", body, 4), _u(">I", body, 8)


_ISPE = re.compile(b"ispe")


def _avif_size(body: bytes) -> Size | None:
    """Every `ispe` (image spatial extents) property in the `meta` box: the primary item's and a
    grid's tiles', the largest."""
    sizes = [
        (_u(">I", body, m.start() + 8), _u(">I", body, m.start() + 12))
        for kind, start, end in _boxes(body, 0, len(body))
        if kind == b"meta"
        for m in _ISPE.finditer(body, start, end)
    ]
    return _largest(sizes)


def _is_avif(body: bytes) -> bool:
    """An `ftyp` box naming an AVIF brand (OpenCV lets libavif parse its first 500 bytes)."""
    return body[4:8] == b"ftyp" and any(brand in body[8:500] for brand in (b"avif", b"avis"))


def _is_webp(body: bytes) -> bool:
    """What WebPGetFeatures accepts in OpenCV's 32-byte signature: a RIFF/WEBP container, a bare
    VP8/VP8L chunk, or a raw VP8L (0x2F, version 0) or VP8 key-frame bitstream."""
    if len(body) < 32:
        return False
    return (
        (body[:4] == b"RIFF" and body[8:12] == b"WEBP")
        or body[:4] in (b"VP8 ", b"VP8L")
        or (body[0] == 0x2F and body[4] >> 5 == 0)
        or body[3:6] == b"\x9d\x01\x2a"
    )


def _starts(*signatures: bytes) -> Callable[[bytes], bool]:
    return lambda body: body.startswith(signatures)


def _pnm_like(letters: bytes) -> Callable[[bytes], bool]:
    return lambda body: len(body) >= 3 and body[0:1] == b"P" and body[1] in letters and body[2:3].isspace()


class _Format(NamedTuple):
    name: str
    matches: Callable[[bytes], bool]  # OpenCV's signature check
    size: Callable[[bytes], Size | None]
    # the parser follows the decoder's own header reader (a few fixed fields, or OpenCV's own
    # number reading), so where it finds no size the decoder fails too, before allocating; a
    # container parsed by a library of its own (libtiff, libwebp, libavif, OpenJPEG, OpenEXR) may
    # find a size where the parser finds none: unsized, it is refused
    mirrored: bool


# in OpenCV's order of registration (the first whose signature matches decodes)
_FORMATS = [
    _Format("BMP", _starts(b"BM"), _bmp_size, mirrored=True),
    _Format("GIF", _starts(b"GIF87a", b"GIF89a"), _gif_size, mirrored=True),
    _Format("AVIF", _is_avif, _avif_size, mirrored=False),
    _Format("Radiance HDR", _starts(b"#?RGBE", b"#?RADIANCE"), _hdr_size, mirrored=True),
    _Format("JPEG", _starts(b"\xff\xd8\xff"), _jpeg_size, mirrored=True),
    _Format("WebP", _is_webp, _webp_size, mirrored=False),
    _Format("Sun raster", _starts(b"\x59\xa6\x6a\x95"), _sunras_size, mirrored=True),
    _Format("PNM", _pnm_like(b"123456"), _pnm_size, mirrored=True),
    _Format("PAM", _pnm_like(b"7"), _pam_size, mirrored=True),
    _Format("PFM", _pnm_like(b"fF"), _pfm_size, mirrored=True),
    _Format("TIFF", _starts(b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"), _tiff_size, mirrored=False),
    _Format("PNG", _starts(b"\x89PNG\r\n\x1a\n"), _png_size, mirrored=True),
    _Format(
        "JPEG 2000", _starts(b"\0\0\0\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51"), _jpeg2000_size, mirrored=False
    ),
    _Format("OpenEXR", _starts(b"\x76\x2f\x31\x01"), _exr_size, mirrored=False),
]


def _format(body: bytes) -> _Format | None:
    return next((fmt for fmt in _FORMATS if fmt.matches(body)), None)


def opencv_format(body: bytes) -> str | None:
    """The format whose decoder cv2.imdecode would pick for `body`, or None if none would."""
    fmt = _format(body)
    return fmt.name if fmt else None


def _parsed_size(body: bytes) -> Size | None:
    """The size the header parser for `body`'s OpenCV format reads; None if it finds none."""
    fmt = _format(body)
    try:
        return fmt.size(body) if fmt else None
    except (struct.error, IndexError):  # a header cut short
        return None
