"""Hostile answers to a fetch (hostile_fetch.yaml): each case ends with the reject reason it names.

Every case is fetched the way an img2dataset worker fetches a sample: the fetch guard's opener is
installed as urllib's (`fetchguard.opener`, as `fetchguard.install` does in the worker), then
img2dataset's own `download_image` and, if the guard lets the body through, its `Resizer` (which
decodes with cv2.imdecode); the error text becomes a reason through the download stage's own
mapping. A server that stalls is cut by the guard's deadline (0.5 s here) and nothing else: the
per-read timeout is 2 s, longer than any stall the server makes between bytes. A decompression
bomb must be refused before anything decodes it: cv2.imdecode fails the test if it is called for
a case the guard refuses.

Crafted images come from the generators below (`IMAGES`): each writes a real file of its format
at any declared size, so the small sizes in the corpus decode (the header the generator writes is
the header OpenCV reads) and the large ones are bombs with the same header and a short body.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from img2dataset import downloader
from img2dataset.resizer import Resizer
from PIL import Image

from mvlp_core import fetchguard
from mvlp_core.spec import UrlPolicy
from mvlp_core.stages.download import error_reason
from tests.fakes.hostile_server import HostileServer

HERE = Path(__file__).parent
CASES = yaml.safe_load((HERE / "hostile_fetch.yaml").read_text(encoding="utf-8"))
TIMEOUT = 2.0  # seconds per socket read, as download.timeout in the report
DEADLINE = 0.5
MAX_BYTES = 1 << 20
MAX_PIXELS = 10_000_000


# --- image generators: (width, height, **args) -> the bytes of a file declaring that size -------
# (the generators of files that have no size take a size too, and ignore it)


def _body(size: int) -> bytes:
    """Pixel data: whole for a small image, a short stub for a bomb (its header is what counts)."""
    return bytes(min(size, 4096))


def hdr(w: int, h: int, signature: str = "#?RADIANCE") -> bytes:
    """Radiance RGBE, flat (not run-length) pixels; Pillow cannot open it."""
    head = f"{signature}\nFORMAT=32-bit_rle_rgbe\n\n-Y {h} +X {w}\n".encode()
    return head + bytes([128, 128, 128, 129]) * min(w * h, 1024)


def pfm(w: int, h: int, channels: int = 3) -> bytes:
    """A little-endian float map, colour (PF) or grey (Pf); Pillow opens only the grey one."""
    return (b"PF" if channels == 3 else b"Pf") + b"\n%d %d\n-1\n" % (w, h) + _body(w * h * channels * 4)


def pnm(w: int, h: int, kind: int = 6) -> bytes:
    """P1..P6 (ASCII or binary bitmap, greymap, pixmap) with a comment in the header."""
    head = b"P%d\n# made by test_hostile_fetch\n%d %d\n" % (kind, w, h)
    if kind in (1, 4):  # bitmaps: no maxval
        return head + (b"0 " * min(w * h, 4096) if kind == 1 else _body((w + 7) // 8 * h))
    head += b"255\n"
    return head + (b"7 " * min(w * h * 3, 4096) if kind in (2, 3) else _body(w * h * 3))


def pam(w: int, h: int) -> bytes:
    """A P7 arbitrary map (RGB); Pillow cannot open it."""
    head = b"P7\nWIDTH %d\nHEIGHT %d\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n" % (w, h)
    return head + _body(w * h * 3)


def sun_raster(w: int, h: int) -> bytes:
    """A 24-bit standard Sun raster."""
    data = _body(w * h * 3 + 16)
    return struct.pack(">8I", 0x59A66A95, w, h, 24, len(data), 1, 0, 0) + data


def bmp(w: int, h: int, header: int = 36) -> bytes:
    """An uncompressed 24-bit BMP with an info header of `header` bytes (36: OpenCV reads it,
    Pillow refuses it)."""
    data = _body(((w * 3 + 3) & ~3) * h)
    info = struct.pack("<IiiHHIIiiII", header, w, h, 1, 24, 0, len(data), 0, 0, 0, 0)[:header]
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + data


def tiff(w: int, h: int, order: str = "II", big: bool = False) -> bytes:
    """An uncompressed float32 RGB TIFF (Pillow has no mode for it), classic or BigTIFF."""
    e = "<" if order == "II" else ">"
    head, inline, word = (16, 8, "Q") if big else (8, 4, "I")
    data = _body(w * h * 12)
    tags = [(256, 4, [w]), (257, 4, [h]), (258, 3, [32] * 3), (259, 3, [1]), (262, 3, [2]), (273, 4, [head])]
    tags += [(277, 3, [3]), (278, 4, [h]), (279, 4, [len(data)]), (339, 3, [3] * 3)]  # 339: float samples
    ifd = head + len(data)
    extra_at = ifd + (8 if big else 2) + len(tags) * (4 + 2 * inline) + inline
    entries, extra = b"", b""
    for tag, kind, values in tags:
        value = struct.pack(e + ("H" if kind == 3 else "I") * len(values), *values)
        if len(value) > inline:  # stored after the directory, which holds its offset
            value, extra = struct.pack(e + word, extra_at + len(extra)), extra + value
        entries += struct.pack(e + "HH" + word, tag, kind, len(values)) + value.ljust(inline, b"\0")
    magic = struct.pack(e + "HHHQ", 43, 8, 0, ifd) if big else struct.pack(e + "HI", 42, ifd)
    count = struct.pack(e + ("Q" if big else "H"), len(tags))
    return order.encode() + magic + data + count + entries + bytes(inline) + extra


def _encoded(fmt: str, **params: object) -> bytes:
    """A 3x5 image encoded by Pillow: the base the patching generators change the size of."""
    buf = io.BytesIO()
    Image.new("RGB", (3, 5), (200, 120, 40)).save(buf, format=fmt, **params)
    return buf.getvalue()


def _cv2_webp(lossless: bool) -> bytes:
    """A 3x5 RIFF WebP encoded by OpenCV, lossless (VP8L) or lossy (VP8)."""
    image = np.full((5, 3, 3), (40, 120, 200), np.uint8)
    return cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101 if lossless else 80])[1].tobytes()


def webp_raw_lossless(w: int, h: int) -> bytes:
    """A VP8L bitstream with no RIFF container (libwebp decodes it; Pillow cannot open it)."""
    stream = bytearray(_cv2_webp(lossless=True)[20:].ljust(32, b"\0"))  # OpenCV reads 32 bytes first
    bits = struct.unpack_from("<I", stream, 1)[0] & ~0xFFFFFFF | (w - 1) | (h - 1) << 14
    struct.pack_into("<I", stream, 1, bits)
    return bytes(stream)


def webp_bare_lossy_chunk(w: int, h: int) -> bytes:
    """A lone `VP8 ` chunk, no RIFF header (libwebp decodes it; Pillow cannot open it)."""
    chunk = bytearray(_cv2_webp(lossless=False)[12:])
    struct.pack_into("<HH", chunk, 14, w, h)
    return bytes(chunk)


def webp_canvas(w: int, h: int) -> bytes:
    """A RIFF WebP with a VP8X canvas of w x h (what OpenCV allocates)."""
    frame = _cv2_webp(lossless=True)[12:]
    vp8x = (
        b"VP8X"
        + struct.pack("<I", 10)
        + bytes(4)
        + (w - 1).to_bytes(3, "little")
        + (h - 1).to_bytes(3, "little")
    )
    body = b"WEBP" + vp8x + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    """A PNG chunk, with its right CRC unless one is given."""
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bad_crc(w: int, h: int) -> bytes:
    """A PNG whose tEXt chunk has a wrong CRC: libpng warns and decodes, Pillow refuses to open."""
    png = _encoded("PNG")
    ihdr = struct.pack(">II", w, h) + png[24:29]
    bad = _png_chunk(b"tEXt", b"Comment\0crc is wrong", crc=0)
    return png[:8] + _png_chunk(b"IHDR", ihdr) + bad + png[33:]


def jpeg_junk_before_frame(w: int, h: int) -> bytes:
    """A JPEG with stray bytes before its SOF0 marker: libjpeg skips them with a warning."""
    jpeg = _encoded("JPEG")
    sof = jpeg.index(b"\xff\xc0")
    frame = jpeg[sof : sof + 5] + struct.pack(">HH", h, w) + jpeg[sof + 9 :]
    return jpeg[:sof] + b"junk!" + frame


def jpeg_no_frame(w: int, h: int) -> bytes:
    """A JPEG whose scan comes before any frame header: no size to read (libjpeg fails too)."""
    jpeg = _encoded("JPEG")
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[:sof] + jpeg[jpeg.index(b"\xff\xda") :]


def gif(w: int, h: int) -> bytes:
    """A GIF whose logical screen (what OpenCV allocates) is w x h."""
    data = _encoded("GIF")
    return data[:6] + struct.pack("<HH", w, h) + data[10:]


def jpeg2000(w: int, h: int, container: bool = True) -> bytes:
    """A JP2 file (its `ihdr` and codestream size agreeing) or a bare J2K codestream."""
    data = bytearray(_encoded("JPEG2000", no_jp2=not container))
    soc = data.index(b"\xff\x4f\xff\x51")
    struct.pack_into(">II", data, soc + 8, w, h)
    if container:
        struct.pack_into(">II", data, data.index(b"ihdr") + 4, h, w)
    return bytes(data)


def avif(w: int, h: int) -> bytes:
    """An AVIF whose primary item's `ispe` says w x h."""
    data = bytearray(_encoded("AVIF"))
    struct.pack_into(">II", data, data.index(b"ispe") + 8, w, h)
    return bytes(data)


def avif_no_extent(w: int, h: int) -> bytes:
    """An AVIF file type box and a `meta` box with no `ispe`: nothing to size it by."""
    return (
        struct.pack(">I", 20) + b"ftypavif" + bytes(4) + b"avif" + struct.pack(">I", 12) + b"meta" + bytes(4)
    )


def _exr_attribute(name: str, kind: str, value: bytes) -> bytes:
    """One OpenEXR header attribute: name, type, size, value."""
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value


def exr(w: int, h: int, windows: bool = True) -> bytes:
    """A single-part, uncompressed scanline OpenEXR file (one float channel) declaring w x h."""
    box = struct.pack("<4i", 0, 0, w - 1, h - 1)
    channel = b"R\0" + struct.pack("<iB3xii", 2, 0, 1, 1) + b"\0"
    attributes = [
        _exr_attribute("channels", "chlist", channel),
        _exr_attribute("compression", "compression", b"\0"),
        *(
            [_exr_attribute("dataWindow", "box2i", box), _exr_attribute("displayWindow", "box2i", box)]
            if windows
            else []
        ),
        _exr_attribute("lineOrder", "lineOrder", b"\0"),
        _exr_attribute("pixelAspectRatio", "float", struct.pack("<f", 1)),
        _exr_attribute("screenWindowCenter", "v2f", struct.pack("<2f", 0, 0)),
        _exr_attribute("screenWindowWidth", "float", struct.pack("<f", 1)),
    ]
    header = b"\x76\x2f\x31\x01" + struct.pack("<I", 2) + b"".join(attributes) + b"\0"
    lines = min(h, 16)  # a bomb's scanlines stop short
    first = len(header) + 8 * h
    offsets = struct.pack(f"<{lines}Q", *(first + y * (8 + 4 * w) for y in range(lines)))
    scanlines = b"".join(struct.pack("<ii", y, 4 * w) + _body(4 * w) for y in range(lines))
    return header + offsets + scanlines


def webp_unknown_first_chunk(w: int, h: int) -> bytes:
    """A RIFF WebP whose first chunk is neither VP8X nor a frame: no size to read."""
    body = b"WEBP" + b"ALPH" + struct.pack("<I", 4) + bytes(4) + _cv2_webp(lossless=True)[12:]
    return b"RIFF" + struct.pack("<I", len(body)) + body


def jp2_without_codestream(w: int, h: int) -> bytes:
    """A JP2 signature and file type box, and nothing else: no size to read."""
    return b"\0\0\0\x0cjP  \r\n\x87\n" + struct.pack(">I", 20) + b"ftypjp2 " + bytes(4) + b"jp2 " + bytes(32)


def hdr_no_size_line(w: int, h: int) -> bytes:
    """A Radiance header without its resolution line: OpenCV's reader fails on it too."""
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + bytes(64)


def tiff_no_dimensions(w: int, h: int) -> bytes:
    """A TIFF directory with no ImageWidth or ImageLength: nothing to size it by."""
    return b"II*\0" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 259, 3, 1, 1) + bytes(8)


IMAGES: dict[str, Callable[..., bytes]] = {
    f.__name__: f
    for f in (
        hdr,
        pfm,
        pnm,
        pam,
        sun_raster,
        bmp,
        tiff,
        webp_raw_lossless,
        webp_bare_lossy_chunk,
        webp_canvas,
        png_bad_crc,
        jpeg_junk_before_frame,
        jpeg_no_frame,
        gif,
        jpeg2000,
        avif,
        avif_no_extent,
        webp_unknown_first_chunk,
        jp2_without_codestream,
        exr,
        hdr_no_size_line,
        tiff_no_dimensions,
    )
}


# --- running a case as an img2dataset worker would --------------------------------------------


@pytest.fixture(scope="module")
def server():
    with HostileServer() as srv:
        srv.add_file("good.jpg", (HERE / "images" / "good.jpg").read_bytes(), "image/jpeg")
        yield srv


@pytest.fixture()
def decoded(monkeypatch) -> list[int]:
    """Sizes of the bodies cv2.imdecode is asked to decode in this test."""
    calls: list[int] = []
    real = cv2.imdecode

    def recording(buf, flags):
        calls.append(len(buf))
        return real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", recording)
    return calls


def _resolver(addresses: list[str]) -> fetchguard.Resolver:
    """A DNS stand-in: every name resolves to `addresses`."""

    def resolve(host: str, port: int) -> list[tuple]:
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    return resolve


def _sample(url: str, policy: UrlPolicy, **resolver: fetchguard.Resolver) -> str:
    """What the download stage records for `url`: `ok` or the reject reason. Host names are
    resolved by getaddrinfo unless a `resolve` stand-in is given."""
    guard = fetchguard.opener(policy, MAX_BYTES, MAX_PIXELS, deadline_seconds=DEADLINE, **resolver)
    urllib.request.install_opener(guard)
    try:
        _, stream, error = downloader.download_image((0, url), TIMEOUT, None, None)
    finally:
        urllib.request.install_opener(None)
    if error is not None:
        return error_reason(error, "failed_to_download")
    resizer = Resizer(image_size=64, resize_mode="no", resize_only_if_bigger=False, max_image_area=MAX_PIXELS)
    error = resizer(stream)[-1]
    return error_reason(error, "failed_to_resize") if error else "ok"


def _ids(kind: str) -> list[str]:
    """The case ids of a section, as test ids."""
    return [case["id"] for case in CASES[kind]]


def _decoded_when_not_refused(reason: str, decoded: list[int]) -> None:
    """A body the guard refuses never reaches cv2.imdecode; one it lets through always does."""
    if reason in ("ok", "image_decode_error"):
        assert decoded, "the body was let through but never decoded"
    else:
        assert not decoded, "a refused body must never reach cv2.imdecode"


@pytest.mark.parametrize("case", CASES["server"], ids=_ids("server"))
def test_hostile_server(case: dict, server: HostileServer, decoded: list[int]) -> None:
    reason = _sample(server.url + case["path"].lstrip("/"), UrlPolicy(allow_loopback=True))
    assert reason == case["expect"]
    _decoded_when_not_refused(reason, decoded)


@pytest.mark.parametrize("case", CASES["address"], ids=_ids("address"))
def test_address_side_door(case: dict, server: HostileServer) -> None:
    """With private addresses allowed and loopback not, nothing reaches the loopback server."""
    before = server.request_counts()
    url = case["url"].format(port=server.port)
    resolver = {"resolve": _resolver(case["resolves_to"])} if "resolves_to" in case else {}
    assert _sample(url, UrlPolicy(allow_private=True), **resolver) == case["expect"]
    assert server.request_counts() == before


@pytest.mark.parametrize("case", CASES["image"], ids=_ids("image"))
def test_crafted_image(case: dict, server: HostileServer, decoded: list[int]) -> None:
    body = IMAGES[case["image"]](*case["size"], **case.get("args", {}))
    url = server.add_file(case["id"], body)
    reason = _sample(url, UrlPolicy(allow_loopback=True))
    assert reason == case["expect"]
    _decoded_when_not_refused(reason, decoded)


def test_every_image_generator_has_a_case_that_is_no_bomb() -> None:
    """A generator of a real format has a small case OpenCV decodes (`ok`: its header is the one
    OpenCV reads); one of a broken file, a case showing what becomes of it."""
    shown = {
        c["image"] for c in CASES["image"] if c["expect"] in ("ok", "image_unsized", "image_decode_error")
    }
    assert shown == set(IMAGES)


def test_corpus_is_large_enough() -> None:
    assert sum(len(CASES[kind]) for kind in ("server", "address", "image")) >= 25


def test_exr_generator_writes_what_opencv_reads() -> None:
    """OpenCV's OpenEXR codec is off unless OPENCV_IO_ENABLE_OPENEXR is set when it loads, so the
    small EXR is decoded in a process that sets it."""
    code = "import sys, cv2, numpy; print(cv2.imdecode(numpy.frombuffer(sys.stdin.buffer.read(), numpy.uint8), -1).shape)"
    env = {**os.environ, "OPENCV_IO_ENABLE_OPENEXR": "1"}
    run = subprocess.run(
        [sys.executable, "-c", code], input=exr(3, 5), env=env, capture_output=True, check=True
    )
    assert run.stdout.strip().startswith(b"(5, 3")
