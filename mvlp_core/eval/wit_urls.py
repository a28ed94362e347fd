"""IGLUE's WIT test sets name their images by URL, not by file: this turns the annotation files
into a URL list that the pipeline's own ingest and download stages fetch
(``data_specs/datasets/wit-test.yaml``), and iglue-eval then reads the images from that download
stage's output (``iglue.image_roots.wit``; ``mvlp_core.eval.images`` looks each URL up there).

    python -m mvlp_core.eval.wit_urls runs/wit/wit-urls.tsv IGLUE/datasets/wit/annotations/test_*.jsonl
    mvlp run data_specs/pipelines/unigen-cc3m.yaml --workdir runs/wit --to download \\
        --set dataset.ref=wit-test --set download.resize_mode=keep_ratio \\
        --set download.min_image_size=0 --set download.max_aspect_ratio=null
    # in the spec that evaluates:  iglue.image_roots.wit: runs/wit/download

The list has one row per distinct URL over all the files given (``url``, ``caption``): the
caption only has to pass ingest's checks, so it is the URL's first non-empty caption (whitespace
collapsed, cut to ``MAX_CAPTION_CHARS``), else the URL's file name. ``keep_ratio`` keeps the whole
image (``center_crop`` would cut its sides); the model resizes it at evaluation.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from mvlp_core.eval.data_retrieval import url_file_name
from mvlp_core.eval.io import read_jsonl, require

MAX_CAPTION_CHARS = 1000  # ingest.max_caption_chars' default
HEADER = ("url", "caption")


def _caption(text: str, url: str) -> str:
    """Text ingest accepts: the caption (cut to its limit), else the URL's file name."""
    return text[:MAX_CAPTION_CHARS].strip() or url_file_name(url) or url


def url_rows(annotation_files: Iterable[str | Path]) -> list[dict[str, str]]:
    """One row per distinct image URL, in order of first appearance: ``url`` and ``caption`` (one
    line: whitespace runs collapse to a space)."""
    captions: dict[str, str] = {}  # url -> its first non-empty caption
    for path in annotation_files:
        for n, record in enumerate(read_jsonl(path), 1):
            require(record, ("image_url",), f"{path}:{n}")
            url = record["image_url"].strip()
            if not captions.get(url):
                captions[url] = " ".join((record.get("caption_reference_description") or "").split())
    return [{"url": url, "caption": _caption(caption, url)} for url, caption in captions.items()]


def write_url_list(annotation_files: Iterable[str | Path], out: str | Path) -> int:
    """Write the URL list as a TSV with a header (``url<TAB>caption``, one line a row); return its
    number of rows."""
    rows = url_rows(annotation_files)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(HEADER)] + [f"{row['url']}\t{row['caption']}" for row in rows]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    """``python -m mvlp_core.eval.wit_urls OUT.tsv ANNOTATIONS.jsonl...``"""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: python -m mvlp_core.eval.wit_urls OUT.tsv ANNOTATIONS.jsonl...", file=sys.stderr)
        return 2
    n = write_url_list(args[1:], args[0])
    print(f"{args[0]}: {n} image URLs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
