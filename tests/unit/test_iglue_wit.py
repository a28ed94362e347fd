"""WIT's test images come through the pipeline's own ingest and download: the annotation files
become a URL list that ingest accepts with ``data_specs/datasets/wit-test.yaml``, and iglue-eval
reads each URL's image from the download stage's output (its samples parquet and tars)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from iglue_data import REAL_IGLUE, needs_real
from PIL import Image

from mvlp_core import contract
from mvlp_core.eval import data_retrieval, heads_retrieval
from mvlp_core.eval.images import ImageRoots, open_rgb
from mvlp_core.spec import load_spec
from mvlp_core.stages import iglue_eval
from mvlp_core.stages.ingest import STAGE as INGEST_STAGE

WIKI = "https://upload.wikimedia.org/wikipedia/commons"


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), colour).save(buf, format="JPEG")
    return buf.getvalue()


def fake_download(folder: Path, urls: list[str], manifest: bool = True) -> Path:
    """A download stage's output as download.py writes it: ``webdataset/00000.tar`` holding
    ``<key>.jpg`` (+ json) members and ``samples-00000.parquet`` naming each URL's tar and member."""
    (folder / "webdataset").mkdir(parents=True)
    rows = []
    with tarfile.open(folder / "webdataset/00000.tar", "w") as tar:
        for n, url in enumerate(urls):
            key = f"wittest-{n:09d}"
            for name, data in [
                (f"{key}.json", json.dumps({"url": url}).encode()),
                (f"{key}.jpg", _jpeg((40 * n, 100, 0))),
            ]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            rows.append(
                {
                    "key": key,
                    "row": n,
                    "url": url,
                    "caption": "c",
                    "tar": "webdataset/00000.tar",
                    "member": f"{key}.jpg",
                    "width": 6,
                    "height": 4,
                }
            )
    pq.write_table(pa.Table.from_pylist(rows), folder / "samples-00000.parquet")
    if manifest:
        files = {"samples-00000.parquet": {"samples": len(rows), "sha256": "", "bytes": 0}}
        contract.Manifest("download", "fp", files, len(rows), len(rows), {}, 0.0, 1).save(folder)
    return folder


def _wit_rows(urls: list[str]) -> list[dict]:
    return [
        {"caption_reference_description": f"caption {n}", "image_url": url, "image_idx": n, "wit_ix": n}
        for n, url in enumerate(urls)
    ]


def test_iglue_reads_wit_images_from_a_download_output(tmp_path: Path) -> None:
    urls = [f"{WIKI}/6/61/BNRATHAU.jpg", f"{WIKI}/a/ab/Caf%C3%A9.jpg", f"{WIKI}/0/00/Same_name.jpg"]
    download = fake_download(tmp_path / "download", urls[:2])
    # a plain folder beside it holding a file of the missing URL's name is not looked at
    (download / "Same_name.jpg").write_bytes(_jpeg((0, 0, 0)))
    ann = tmp_path / "wit" / "annotations" / "test_de.jsonl"
    ann.parent.mkdir(parents=True)
    ann.write_text("".join(json.dumps(r) + "\n" for r in _wit_rows(urls)), encoding="utf-8")

    roots = ImageRoots({"wit": download})
    rset = data_retrieval.load(ann)
    refs, rejects = heads_retrieval.resolve(rset, roots, wit=True)
    assert [(r.key, r.reason) for r in rejects] == [("2", "missing_image")]
    assert [open_rgb(ref).getpixel((0, 0))[1] for ref in refs[:2]] == [100, 100]  # read from the tar
    assert str(refs[0]).endswith("webdataset/00000.tar:wittest-000000000.jpg")
    assert roots.wit(f" {urls[1]}\n") == refs[1]  # as ingest strips it


def test_checks_accept_a_finished_download_and_name_an_unfinished_one(tmp_path: Path) -> None:
    root = tmp_path / "iglue"
    ann = root / "wit" / "annotations"
    ann.mkdir(parents=True)
    for name in ("test_en.jsonl", "test_de.jsonl", "val_en.jsonl", "train_en.jsonl"):
        (ann / name).write_text(json.dumps(_wit_rows([f"{WIKI}/6/61/A.jpg"])[0]) + "\n")
    settings = [f"iglue.root={root}", "iglue.tasks=[wit]", "iglue.languages={wit: [de]}"]

    done = fake_download(tmp_path / "done", [f"{WIKI}/6/61/A.jpg"])
    spec = load_spec("demo", [*settings, f"iglue.image_roots={{wit: {done}}}"], workdir=tmp_path)
    assert iglue_eval.checks(spec) == []

    unfinished = fake_download(tmp_path / "unfinished", [f"{WIKI}/6/61/A.jpg"], manifest=False)
    spec = load_spec("demo", [*settings, f"iglue.image_roots={{wit: {unfinished}}}"], workdir=tmp_path)
    [line] = iglue_eval.checks(spec)
    assert str(unfinished) in line and "unfinished" in line and "iglue.image_roots.wit" in line


@needs_real
def test_the_wit_url_list_passes_ingest_with_the_wit_test_spec(tmp_path: Path) -> None:
    """Every distinct image URL of IGLUE's WIT test files becomes one row that ingest accepts."""
    from mvlp_core.eval.wit_urls import main

    files = sorted((REAL_IGLUE / "wit/annotations").glob("test_*.jsonl"))
    assert main([str(tmp_path / "wit-urls.tsv"), *map(str, files)]) == 0
    urls = {json.loads(line)["image_url"].strip() for f in files for line in f.open(encoding="utf-8")}
    spec = load_spec("unigen-cc3m", ["dataset.ref=wit-test", "ingest.shard_size=5000"], workdir=tmp_path)
    assert spec.dataset.spec.url_list == str(tmp_path / "wit-urls.tsv")
    m = INGEST_STAGE.run(spec, {}, tmp_path / "ingest")
    assert m.rejects == {} and m.samples_in == m.samples_out == len(urls)
    ingested = {
        r["url"]
        for f in sorted((tmp_path / "ingest").glob("shard-*.parquet"))
        for r in pq.read_table(f).to_pylist()
    }
    assert ingested == urls  # the URLs as the annotations write them: iglue-eval looks them up so


def test_the_url_list_takes_each_url_once_with_a_caption_ingest_accepts(tmp_path: Path) -> None:
    from mvlp_core.eval.wit_urls import url_rows

    rows = _wit_rows([f"{WIKI}/1/12/X.jpg", f"{WIKI}/1/12/X.jpg", f"{WIKI}/3/34/Y%20Z.jpg"])
    rows[0]["caption_reference_description"] = "  "  # blank: the next row's caption is taken
    rows[1]["caption_reference_description"] = "two\tlines\nof text"
    rows[2]["caption_reference_description"] = ""
    path = tmp_path / "test_xx.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert url_rows([path]) == [
        {"url": f"{WIKI}/1/12/X.jpg", "caption": "two lines of text"},
        {"url": f"{WIKI}/3/34/Y%20Z.jpg", "caption": "Y Z.jpg"},  # no caption: the file name
    ]


@pytest.mark.parametrize("argv", [[], ["only-the-output.tsv"]])
def test_the_url_list_command_says_how_to_call_it(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    from mvlp_core.eval.wit_urls import main

    assert main(argv) == 2 and "usage:" in capsys.readouterr().err
