"""Retrieval sets: xFlickr&CO (``xFlickrCO/annotations/<lang>/test.jsonl``, Flickr30K-style rows
{sentences, id, img_path}; Flickr ids are strings, COCO ids ints with ``img_path``
``COCO_val2014_<12 digits>.jpg``), Flickr30K (``flickr30k/annotations/*_ann.jsonl``, 5 sentences
per image) and WIT (``wit/annotations/test_<lang>.jsonl``: one caption per row,
``caption_reference_description``, ``image_url``, ``image_idx``, ``wit_ix``; ``val_en.jsonl`` has
no ``image_idx``).

A set is captions (in file order) each pointing at one image, and images in order of first
appearance — the order VOLTA's ``RetrievalDatasetVal`` gives them, which is what the image indices
in its ``*_result.json`` refer to. One image may have many captions (the 1:N mapping TR uses).
WIT images are keyed by ``wit_ix``, as VOLTA keys them (``RetrievalDatasetVal``: ``image_id =
annotation["wit_ix"]``) and IGLUE's WIT feature files name them (``wit-test_<n>``); ``image_idx``
is not an image's identity: one index is shared by unrelated pictures in a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from mvlp_core.eval.io import read_jsonl, require


@dataclass(frozen=True)
class RetrievalImage:
    key: str  # image id as IGLUE keys it (Flickr id, COCO id, WIT wit_ix)
    ref: str  # what the image root resolves: a file name, or a URL for WIT


@dataclass
class RetrievalSet:
    images: list[RetrievalImage] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    caption_image: list[int] = field(default_factory=list)  # image index of each caption
    caption_ids: list[str] = field(default_factory=list)

    def add(self, key: str, ref: str, caption: str, caption_id: str, index: dict[str, int]) -> None:
        if key not in index:
            index[key] = len(self.images)
            self.images.append(RetrievalImage(key, ref))
        self.captions.append(caption)
        self.caption_image.append(index[key])
        self.caption_ids.append(caption_id)


def load_flickr(path: str | Path) -> RetrievalSet:
    out, index = RetrievalSet(), {}
    for n, row in enumerate(read_jsonl(path), 1):
        require(row, ("sentences", "id", "img_path"), f"{path}:{n}")
        for j, sentence in enumerate(row["sentences"]):
            out.add(str(row["id"]), row["img_path"], sentence, f"{row['id']}#{j}", index)
    return out


def load_wit(path: str | Path) -> RetrievalSet:
    out, index = RetrievalSet(), {}
    for n, row in enumerate(read_jsonl(path), 1):
        require(row, ("caption_reference_description", "image_url", "wit_ix"), f"{path}:{n}")
        key = str(row["wit_ix"])
        out.add(key, row["image_url"], row["caption_reference_description"], key, index)
    return out


def load(path: str | Path) -> RetrievalSet:
    """xFlickr&CO / Flickr30K or WIT by file location."""
    return load_wit(path) if "wit" in Path(path).parts else load_flickr(path)


def url_file_name(url: str) -> str:
    """The file name a downloaded WIT image is stored under: the URL's last path segment, unquoted
    (``.../6/61/BNRATHAU.jpg`` -> ``BNRATHAU.jpg``), as WIT image dumps name them."""
    return unquote(urlparse(url).path.rsplit("/", 1)[-1])
