"""Where each task's images live.

An image root per folder kind (spec ``iglue.image_roots``, default ``<root>/images/<kind>``):

- ``flickr30k`` (``<id>.jpg``; XVNLI and xFlickr&CO's Flickr half), ``coco``
  (``COCO_val2014_<id>.jpg``), ``gqa`` (``<imageId>.jpg``);
- ``marvl``: ``<lang>/images/<concept>/<file>`` as MaRVL ships it; the synthetic world keeps
  ``<lang>/<file>`` flat;
- ``nlvr2``: ``<stem>-img0.png`` as NLVR2 ships it: training images under
  ``train/<directory>/`` (the row's ``directory`` field), dev and test under ``dev/`` and
  ``test1/``; the synthetic world keeps them flat in the root (``.jpg``);
- ``wit``: either a folder holding each image under its URL's file name (the synthetic world), or
  the output folder of a download stage that fetched the WIT URL list
  (``mvlp_core.eval.wit_urls``): its ``samples-*.parquet`` map each URL to a member of a
  WebDataset tar, read in place by offset (nothing is extracted).

A reference that resolves to no file gives ``None``: the caller turns it into a reject with the
item's id, never a crash.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from mvlp_core import contract
from mvlp_core.eval.data_retrieval import url_file_name

FOLDERS = ("flickr30k", "coco", "gqa", "marvl", "nlvr2", "wit")


@dataclass(frozen=True)
class TarMember:
    """An image stored in a tar (a download stage's WebDataset shard), read by its byte offset."""

    tar: Path
    name: str
    offset: int
    size: int

    def read(self) -> bytes:
        with open(self.tar, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)

    def __str__(self) -> str:
        return f"{self.tar}:{self.name}"


ImageRef = Path | TarMember


def is_download_output(folder: Path) -> bool:
    """Whether ``folder`` is a download stage's output: a manifest and samples parquet files."""
    return (folder / contract.MANIFEST).is_file() and any(folder.glob("samples-*.parquet"))


def downloaded_images(folder: Path) -> dict[str, TarMember]:
    """URL -> its image in a download stage's output: each ``samples-*.parquet`` row names the
    tar and member its URL was stored under; one pass over each tar's headers finds the offsets."""
    wanted: dict[str, dict[str, str]] = {}  # tar -> member -> url
    for samples in sorted(folder.glob("samples-*.parquet")):
        for row in pq.read_table(samples, columns=["url", "tar", "member"]).to_pylist():
            wanted.setdefault(row["tar"], {})[row["member"]] = row["url"].strip()
    found = {}
    for tar, members in wanted.items():
        with tarfile.open(folder / tar) as t:
            for info in t:
                if info.name in members:
                    found[members[info.name]] = TarMember(
                        folder / tar, info.name, info.offset_data, info.size
                    )
    return found


class ImageRoots:
    def __init__(self, roots: dict[str, str | Path]) -> None:
        self.roots = {k: Path(v) for k, v in roots.items()}
        self._wit_index: dict[str, TarMember] | None = None  # URL -> image, once looked up
        self._wit_downloaded = False

    def _first(self, folder: str, *candidates: str) -> Path | None:
        root = self.roots.get(folder)
        if root is None:
            return None
        for rel in candidates:
            path = root / rel
            if path.is_file():
                return path
        return None

    def flickr_or_coco(self, img_path: str) -> Path | None:
        folder = "coco" if img_path.startswith("COCO_") else "flickr30k"
        return self._first(folder, img_path)

    def flickr_id(self, flickr_id: str) -> Path | None:
        return self._first("flickr30k", f"{flickr_id}.jpg")

    def gqa(self, image_id: str) -> Path | None:
        return self._first("gqa", f"{image_id}.jpg")

    def marvl(self, lang: str, concept: str, file: str) -> Path | None:
        """Zero-shot rows name ``39-0.jpg`` inside ``<lang>/images/<concept>/``; few-shot rows name
        ``<concept>/<file>`` already; the synthetic world keeps ``<lang>/<file>`` flat."""
        return self._first(
            "marvl", f"{lang}/images/{concept}/{file}", f"{lang}/images/{file}", f"{lang}/{file}"
        )

    def nlvr2(self, stem: str, directory: str = "") -> Path | None:
        """A training row's ``train/<directory>/<stem>.png`` (NLVR2's layout), else ``<stem>.png``
        under its split's folder (``dev/``, ``test1/``) or flat; ``.jpg`` likewise."""
        split = stem.split("-", 1)[0]
        folders = [*([f"{split}/{directory}/"] if directory else []), f"{split}/", ""]
        return self._first("nlvr2", *(f"{d}{stem}.{ext}" for d in folders for ext in ("png", "jpg")))

    def wit(self, url: str) -> ImageRef | None:
        """The image of a WIT URL: from a download stage's output by URL, else by file name."""
        if self._wit_index is None:  # decided once: a download stage's output, or a plain folder
            root = self.roots.get("wit")
            self._wit_downloaded = root is not None and is_download_output(root)
            self._wit_index = downloaded_images(root) if root is not None and self._wit_downloaded else {}
        if self._wit_downloaded:
            return self._wit_index.get(url.strip())
        return self._first("wit", url_file_name(url))


def image_roots(root: str | Path, overrides: dict[str, str]) -> dict[str, Path]:
    """Folder kind -> image folder: ``<root>/images/<kind>``, or the spec's ``iglue.image_roots``."""
    base = Path(root) / "images"
    return {kind: Path(overrides.get(kind, base / kind)) for kind in FOLDERS}


def open_rgb(ref: ImageRef) -> Image.Image | None:
    """The image as RGB, or None when it cannot be read or decoded (a reject, like a missing file)."""
    try:
        source = ref if isinstance(ref, Path) else io.BytesIO(ref.read())
        with Image.open(source) as im:
            return im.convert("RGB")
    except (OSError, ValueError):
        return None
