"""Bytes read from an input file as text: UTF-8, and never a NUL (valid UTF-8, but no text holds
one). Readers map the two failures to their own reject reasons."""

from __future__ import annotations


class NotText(ValueError):
    """`kind` is "nul" or "encoding"; the message says where."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


def utf8(raw: bytes, nul_detail: str = "NUL byte") -> str:
    """`raw` as text, or NotText naming a NUL byte (checked first) or the first bad UTF-8 byte."""
    if b"\x00" in raw:
        raise NotText("nul", nul_detail)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise NotText("encoding", f"not UTF-8: {err.reason} at byte {err.start}") from None
