"""Where each task's images live, and the WIT URL list the download stage fetches.

An image root per folder kind (spec ``iglue.image_roots``): ``flickr30k`` (``<id>.jpg``; XVNLI and
xFlickr&CO's Flickr half), ``coco`` (``COCO_val2014_<id>.jpg``), ``gqa`` (``<imageId>.jpg``),
``marvl`` (``<lang>/images/<concept>/<file>``), ``nlvr2`` (``<identifier stem>-img0.png``, also under
``dev/``), ``wit`` (the URL's file name). A reference that resolves to no file gives ``None``: the
caller turns it into a reject with the item's id, never a crash.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from mvlp_core.eval.data_retrieval import url_file_name
from mvlp_core.eval.io import read_jsonl

FOLDERS = ("flickr30k", "coco", "gqa", "marvl", "nlvr2", "wit")


class ImageRoots:
    def __init__(self, roots: dict[str, str | Path]) -> None:
        self.roots = {k: Path(v) for k, v in roots.items()}

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

    def nlvr2(self, stem: str) -> Path | None:
        split = stem.split("-", 1)[0]
        return self._first(
            "nlvr2", *(f"{d}{stem}.{ext}" for d in ("", f"{split}/") for ext in ("png", "jpg"))
        )

    def wit(self, url: str) -> Path | None:
        return self._first("wit", url_file_name(url))


def open_rgb(path: Path) -> Image.Image | None:
    """The image as RGB, or None when it cannot be decoded (a reject, like a missing file)."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError):
        return None


def wit_url_rows(annotation_files: Iterable[str | Path]) -> list[dict[str, str]]:
    """One row per distinct WIT image URL: ``url``, ``caption`` (the first caption seen, so the
    row passes ingest's caption checks) and ``key`` (the URL's file name, under which the image
    root must hold it)."""
    seen: dict[str, dict[str, str]] = {}
    for path in annotation_files:
        for row in read_jsonl(path):
            url = row["image_url"]
            if url not in seen:
                seen[url] = {
                    "url": url,
                    "caption": row["caption_reference_description"],
                    "key": url_file_name(url),
                }
    return list(seen.values())


def write_wit_url_list(annotation_files: Iterable[str | Path], out: str | Path) -> int:
    """Write the WIT URL list as a TSV (header ``url caption key``) that a dataset spec
    (``kind: url_list, format: tsv, id_column: key``) hands to ingest -> download. Returns rows."""
    rows = wit_url_rows(annotation_files)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(
            f,
            fieldnames=["url", "caption", "key"],
            delimiter="\t",
            quoting=csv.QUOTE_MINIMAL,
            lineterminator="\n",
        )
        writer.writeheader()
        for row in rows:
            writer.writerow({k: v.replace("\t", " ").replace("\n", " ") for k, v in row.items()})
    return len(rows)
