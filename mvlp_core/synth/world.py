"""Write the synthetic world: a CC3M-style URL list with its images, translations, gold alignments
and IGLUE-format evaluation sets, byte-identical for the same arguments.

It stands in for CC3M + CC6L + IGLUE on a laptop: the image server (``mvlp_core.imageserver``)
serves ``images/`` and the broken ``bad/*`` routes that ``urls.tsv`` points at, so every reject
reason of the ingest and download stages shows up in the demo. ``world.json`` is written last: a
folder without it is incomplete.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mvlp_core.atomic import write_json
from mvlp_core.synth.grammar import (
    LANGS,
    TARGET_LANGS,
    Scene,
    caption,
    gold_links,
    random_scene,
    realise,
)
from mvlp_core.synth.iglue import write_iglue
from mvlp_core.synth.images import IMAGE_SIZE, JPEG_QUALITY, render_jpeg
from mvlp_core.synth.text import write_text_corpora

DEFAULT_URL_PREFIX = "http://images.synthetic.mvlp/"
WORLD_FORMAT = 3  # bumped when the world's files change: an older world on disk is rewritten
# kind -> path under the URL prefix; the image server answers each with that failure
BAD_ROUTES = {
    "http_404": "bad/404.jpg",
    "http_500": "bad/500.jpg",
    "corrupt_image": "bad/corrupt.jpg",
    "not_an_image": "bad/not-an-image.jpg",
    "slow": "bad/slow.jpg",
}


def _bad_rows(rng: random.Random, good: list[tuple[str, str]], url_prefix: str) -> list[tuple[str, str, str]]:
    """(kind, caption, url) rows that must end as rejects: one per failure a crawler meets."""
    rows = [(kind, caption(random_scene(rng)), url_prefix + path) for kind, path in BAD_ROUTES.items()]
    ftp = urlsplit(url_prefix)._replace(scheme="ftp").geturl() + "images/000000.jpg"
    rows.append(("bad_scheme", caption(random_scene(rng)), ftp))
    rows.append(("empty_caption", "", url_prefix + "bad/empty-caption.jpg"))
    rows.append(("duplicate", *good[rng.randrange(len(good))]))
    return rows


def _alignment_records(captions: list[str], scenes: dict[str, Scene]) -> list[dict[str, Any]]:
    records = []
    for text in captions:
        en = realise(scenes[text], "en")
        for lang in TARGET_LANGS:
            xx = realise(scenes[text], lang)
            records.append(
                {
                    "en": en.text,
                    "lang": lang,
                    "xx": xx.text,
                    "en_spans": [list(span) for span in en.spans],
                    "xx_spans": [list(span) for span in xx.spans],
                    "links": [list(link) for link in gold_links(en, xx)],
                }
            )
    return records


def write_world(
    out_dir: Path, samples: int, seed: int, url_prefix: str = DEFAULT_URL_PREFIX
) -> dict[str, Any]:
    """Write the world for (samples, seed, url_prefix) into ``out_dir``; return ``world.json``.

    Files: ``images/{row:06d}.jpg``, ``urls.tsv`` (caption, url; the good rows then the bad ones),
    ``translations.tsv`` (one row per distinct English caption, sorted), ``gold_alignments.jsonl``,
    ``iglue/`` (see ``mvlp_core.synth.iglue``), ``text/`` (see ``mvlp_core.synth.text``) and
    ``world.json``.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if not url_prefix.endswith("/"):
        raise ValueError(f"url_prefix must end with '/', got {url_prefix!r}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    scene_rng = random.Random(f"mvlp-world:{seed}:scenes")
    image_rng = random.Random(f"mvlp-world:{seed}:layout")
    scenes = [random_scene(scene_rng) for _ in range(samples)]
    good = []
    for row, scene in enumerate(scenes):
        (out / "images" / f"{row:06d}.jpg").write_bytes(render_jpeg(scene, image_rng))
        good.append((caption(scene), f"{url_prefix}images/{row:06d}.jpg"))
    bad = _bad_rows(random.Random(f"mvlp-world:{seed}:bad"), good, url_prefix)
    lines = ["caption\turl"] + [f"{c}\t{u}" for c, u in good] + [f"{c}\t{u}" for _, c, u in bad]
    (out / "urls.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    by_caption = {caption(scene): scene for scene in scenes}
    distinct = sorted(by_caption)
    rows = ["\t".join(LANGS)]
    rows += ["\t".join(caption(by_caption[text], lang) for lang in LANGS) for text in distinct]
    (out / "translations.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    alignments = _alignment_records(distinct, by_caption)
    (out / "gold_alignments.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in alignments), encoding="utf-8"
    )

    info = {
        "args": {"samples": samples, "seed": seed, "url_prefix": url_prefix},
        "image": {"size": IMAGE_SIZE, "format": "jpeg", "quality": JPEG_QUALITY},
        "languages": list(LANGS),
        "counts": {
            "rows": len(good) + len(bad),
            "good": len(good),
            "bad": dict(Counter(kind for kind, _, _ in bad)),
            "distinct_captions": len(distinct),
            "alignments": len(alignments),
        },
        "iglue": write_iglue(out, seed, url_prefix),
        "text": write_text_corpora(out, seed),
        "format": WORLD_FORMAT,
    }
    write_json(out / "world.json", info)
    return info


def ensure_world(out_dir: Path, samples: int, seed: int) -> dict:
    """The world for (samples, seed) in `out_dir`, written only when absent, different or older.

    Written into a sibling temporary folder and renamed, so a killed write never leaves a
    half-world that looks complete.
    """
    out_dir = Path(out_dir)
    marker = out_dir / "world.json"
    if marker.exists():
        info = json.loads(marker.read_text(encoding="utf-8"))
        if (
            info["args"]["samples"] == samples
            and info["args"]["seed"] == seed
            and info.get("format") == WORLD_FORMAT
        ):
            return info
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    info = write_world(tmp, samples, seed)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return info
