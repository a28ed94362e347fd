"""The URL policy enforced where the bytes are fetched: a loopback forward proxy for img2dataset.

img2dataset fetches in spawned worker processes with urllib, which follows redirects and resolves
host names itself, so a policy checked only on the listed URL misses `302 Location:
http://169.254.169.254/` and names that resolve to private addresses. The workers honour
`http_proxy`/`https_proxy`, so every request (the first and each redirect hop, HTTP and HTTPS
CONNECT alike) passes through this proxy, which checks the URL, resolves the host, checks every
address, and connects to the address it checked (no second lookup to rebind). A refused request
gets `403 mvlp url policy: <reason> <detail>`, and so does a response over `max_bytes` (bodies are
read whole before they are passed on) and an image whose header declares more than `max_pixels`
(a decompression bomb is refused before any worker decodes it); img2dataset records that status line, and the
download stage turns it into a reject with that reason.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import re
import socket
import threading
import warnings
from collections import Counter

from PIL import Image
from urllib.parse import urlsplit

from mvlp_core import urlpolicy
from mvlp_core.spec import UrlPolicy

BLOCK_PHRASE = "mvlp url policy"
_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
_NO_PROXY_VARS = ("no_proxy", "NO_PROXY")
_HEAD_LIMIT = 64 * 1024
_HOP_HEADERS = {"proxy-connection", "proxy-authorization", "connection", "keep-alive"}


class Blocked(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason} {detail}")
        self.reason, self.detail = reason, detail


def _check_addresses(host: str, addresses: list[str], policy: UrlPolicy) -> None:
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        verdict = urlpolicy.check_ip(ip, policy)
        if verdict:
            raise Blocked(verdict[0], f"{host} resolves to {ip}")


async def resolve_checked(host: str, port: int, policy: UrlPolicy) -> str:
    """The address to connect to: every address `host` resolves to must pass the policy."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ConnectionError(f"cannot resolve {host}: {err}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    _check_addresses(host, addresses, policy)
    return addresses[0]


class _Proxy:
    def __init__(self, policy: UrlPolicy, resolve, max_bytes: int, max_pixels: int) -> None:
        self.policy = policy
        self.resolve = resolve
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.blocked: Counter[str] = Counter()
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        self.requests += 1
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            await self._refuse(writer, 400, "bad request line")
            return
        try:
            if method.upper() == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(method, target, version, lines[1:], reader, writer)
        except Blocked as err:
            self.blocked[err.reason] += 1
            await self._refuse(writer, 403, f"{BLOCK_PHRASE}: {err.reason} {err.detail}")
        except (ConnectionError, OSError, asyncio.TimeoutError) as err:
            await self._refuse(writer, 502, f"mvlp proxy connection error: {err}")

    def _check(self, url: str) -> tuple[str, int]:
        verdict = urlpolicy.check_url(url, self.policy)
        if verdict:
            raise Blocked(*verdict)
        parts = urlsplit(url)
        return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)

    async def _forward(self, method, target, version, header_lines, reader, writer) -> None:
        host, port = self._check(target)
        address = await self.resolve(host, port, self.policy)
        parts = urlsplit(target)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [h for h in header_lines if h and h.split(":", 1)[0].strip().lower() not in _HOP_HEADERS]
        upstream_r, upstream_w = await asyncio.open_connection(address, port)
        request = f"{method} {path} {version}\r\n" + "".join(f"{h}\r\n" for h in headers)
        upstream_w.write((request + "Connection: close\r\n\r\n").encode("latin-1"))
        length = _content_length(headers) or 0
        if length:
            upstream_w.write(await reader.readexactly(length))
        await upstream_w.drain()
        head = await upstream_r.readuntil(b"\r\n\r\n")
        declared = _content_length(head.decode("latin-1").split("\r\n")[1:])
        # the body is read whole before anything is answered, so an oversized or endless one
        # can still be refused with a status line the client records
        body = b""
        if declared is None or declared <= self.max_bytes:
            body = await upstream_r.read(self.max_bytes + 1)
            while body and len(body) <= self.max_bytes and (chunk := await upstream_r.read(1 << 16)):
                body += chunk
        upstream_w.close()
        size = declared if declared is not None and declared > self.max_bytes else len(body)
        if size > self.max_bytes:
            raise Blocked("response_too_large", f"more than {self.max_bytes} bytes")
        dims = _image_size(body)
        if dims and dims[0] * dims[1] > self.max_pixels:
            raise Blocked("image_too_large", f"{dims[0]}x{dims[1]} > {self.max_pixels} pixels")
        writer.write(head + body)
        await writer.drain()
        writer.close()

    async def _tunnel(self, target: str, reader, writer) -> None:
        host, port = self._check(f"https://{target}/")
        address = await self.resolve(host, port, self.policy)
        upstream_r, upstream_w = await asyncio.open_connection(address, port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(_pipe(reader, upstream_w), _pipe(upstream_r, writer))

    async def _refuse(self, writer: asyncio.StreamWriter, status: int, phrase: str) -> None:
        phrase = " ".join(phrase.split())[:300]
        writer.write(f"HTTP/1.1 {status} {phrase}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode("latin-1", "replace"))
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()


def _image_size(body: bytes) -> tuple[int, int] | None:
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


def _content_length(header_lines: list[str]) -> int | None:
    for h in header_lines:
        name, _, value = h.partition(":")
        if name.strip().lower() == "content-length":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(1 << 16):
            dst.write(chunk)
            await dst.drain()
    except ConnectionError:
        pass
    finally:
        dst.close()


class FetchGuard:
    """Run the policy proxy on a free loopback port in a background thread.

    `env()` gives the variables that route a child process's urllib through it.
    """

    def __init__(
        self,
        policy: UrlPolicy,
        resolve=resolve_checked,
        max_bytes: int = 50 * 2**20,
        max_pixels: int = 100_000_000,
    ) -> None:
        self.proxy = _Proxy(policy, resolve, max_bytes, max_pixels)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="mvlp-fetchguard", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self.proxy.handle, "127.0.0.1", 0, limit=_HEAD_LIMIT)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> FetchGuard:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        def stop() -> None:
            self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join()
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**{v: self.url for v in _PROXY_VARS}, **{v: "" for v in _NO_PROXY_VARS}}

    @property
    def blocked(self) -> dict[str, int]:
        return dict(self.proxy.blocked)
