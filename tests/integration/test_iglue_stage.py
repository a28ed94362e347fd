"""The iglue-eval stage end to end on the synthetic world's IGLUE sets with a stand-in model:
units, fine-tune + selection, every task, missing images as rejects, CSV tables, chart, manifest
results; heads against the contract methods."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import standin_model

from mvlp_core import contract
from mvlp_core.contract import StageError
from mvlp_core.eval.model_api import EvalModel
from mvlp_core.spec import load_spec
from mvlp_core.stages.iglue_eval import STAGE as IGLUE_EVAL_STAGE


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mvlp_core.synth import write_world

    out = tmp_path_factory.mktemp("run")
    write_world(out / "world", 12, 0)
    return out


@pytest.mark.slow  # ~70 s on 2 shared cores
def test_stage_runs_every_task_and_setting(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        EvalModel,
        "load",
        classmethod(lambda cls, folder, image_size=None, max_text_len=None: standin_model.load(folder)),
    )
    pretrain = tmp_path / "pretrain"
    (pretrain / "final").mkdir(parents=True)
    contract.Manifest("pretrain", "fp0", {}, 0, 0, {}, 0.0, 1).save(pretrain)
    missing = world / "world/iglue/images/gqa/n000000.jpg"
    saved = missing.read_bytes()
    missing.unlink()
    try:
        spec = load_spec(
            "demo",
            [
                "models=null",
                "iglue.languages={xvnli: [de], xgqa: [de], marvl: [de], xflickrco: [de], wit: [zh]}",
                "iglue.settings=[zero-shot, few-shot, translate-test]",
                "iglue.finetune.epochs=2",
                "iglue.finetune.max_train_items=48",
                "iglue.finetune.tasks={}",  # the demo's per-task settings name UniGen's parts; the stand-in has others
                "iglue.lr_grid=[0.01, 0.001]",
                "iglue.few_shot_epochs=1",
                "iglue.max_test_items=24",
                "iglue.max_dev_items=24",
                "iglue.rerank_k=4",
                "iglue.few_shot={xvnli: '5', xgqa: '5', marvl: '10'}",
            ],
            workdir=world,
        )
        out = tmp_path / "iglue-eval"
        # one GQA image gone: a test unit missing an image fails (IGLUE scores every item) ...
        lost = r"xgqa\.zero-shot\.(en|de): 4 of \d+ test items have no usable image \(\d+ \(missing_image: n000000"
        with pytest.raises(StageError, match=lost):
            IGLUE_EVAL_STAGE.run(spec, {"pretrain": pretrain}, out)
        # ... unless the spec accepts a share of them missing
        spec = spec.model_copy(
            update={"iglue": spec.iglue.model_copy(update={"max_missing_test_images": 0.2})}
        )
        m = IGLUE_EVAL_STAGE.run(spec, {"pretrain": pretrain}, out)
    finally:
        missing.write_bytes(saved)
    res = m.extra["results"]
    assert set(res) == {"xvnli", "xgqa", "marvl", "xflickrco", "wit"}
    assert set(res["xvnli"]) == {"zero-shot", "few-shot", "translate-test", "metric", "chance"}
    assert set(res["xvnli"]["zero-shot"]) == {"en", "de"} and set(res["xvnli"]["few-shot"]) == {"de"}
    assert res["xvnli"]["chance"] == pytest.approx(33.33) and res["marvl"]["chance"] == 50.0
    assert res["xflickrco"]["metric"] == "ir_r1"
    # translate-test in all five tasks, as IGLUE publishes it
    assert set(res["wit"]["translate-test"]) == {"zh"} and set(res["xgqa"]["translate-test"]) == {"de"}
    assert not m.extra.get("splits")  # every unit read a test file (xGQA's few_shot/<lang>/test.json)
    # IGLUE's few-shot xGQA selects on the language's own dev file, XVNLI on English's
    xgqa_de = json.loads((out / "results/xgqa/few-shot/de.json").read_text())
    assert xgqa_de["few_shot"]["dev"].endswith("xGQA/annotations/few_shot/de/dev.json")
    xvnli_de = json.loads((out / "results/xvnli/few-shot/de.json").read_text())
    assert xvnli_de["few_shot"]["dev"].endswith("XVNLI/annotations/en/dev.jsonl")
    assert m.rejects.get("missing_image", 0) >= 1  # the deleted GQA image, named by question id
    rejects = contract.read_rejects(out).to_pylist()
    assert any(r["reason"] == "missing_image" and r["detail"] == "n000000.jpg" for r in rejects)
    rows = list(csv.DictReader(open(out / "tables/xvnli.zero-shot.accuracy.csv", encoding="utf-8")))
    assert list(rows[0]) == ["model", "en", "de", "avg"] and rows[0]["avg"] == rows[0]["de"]
    assert (out / "tables/xgqa.zero-shot.accuracy_normalised.csv").exists()
    assert (out / "iglue_bars.png").stat().st_size > 1000
    ft = json.loads((out / "results/xvnli/finetune.json").read_text())
    assert ft["finetune"]["history"][0]["epoch"] == 0 and len(ft["finetune"]["history"]) == 3
    top20 = json.loads((out / "predictions/xflickrco/zero-shot/de.json").read_text())
    assert len(top20) == 24 and all(len(r) == 20 for r in top20)
    # a complete stage is not recomputed
    assert IGLUE_EVAL_STAGE.run(spec, {"pretrain": pretrain}, out).created == m.created


def save_micro_unigen(world: Path, out: Path) -> Path:
    """`out`/pretrain, whose final/ holds a micro random-init UniGen written by save_pretrained,
    its tokenizers trained on the synthetic world's captions."""
    import random

    import torch

    from mvlp_core.model.unigen import build_model, build_tokenizers
    from mvlp_core.synth.grammar import LANGS, caption, random_scene

    spec = load_spec("demo", ["models=null", "model.size=micro"], workdir=world)
    rng = random.Random(0)
    texts = [caption(random_scene(rng), lang) for _ in range(60) for lang in LANGS]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tok = build_tokenizers(
            spec.model, [*texts, "entailment neutral contradiction true false yes no"], out / "tok"
        )
        build_model(spec.model, tok).save_pretrained(out / "pretrain/final")
    finally:
        torch.set_num_threads(threads)
    contract.Manifest("pretrain", "fp0", {}, 0, 0, {}, 0.0, 1).save(out / "pretrain")
    return out / "pretrain"


@pytest.fixture(scope="module")
def tiny_unigen(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_micro_unigen(world, tmp_path_factory.mktemp("tiny"))


SMALL = [
    "models=null",  # pretrain/final: the one model of `model`
    "iglue.languages={xvnli: [de], xgqa: [de], marvl: [de], xflickrco: [de], wit: [de]}",
    "iglue.finetune.epochs=1",
    "iglue.finetune.max_train_items=32",
    "iglue.max_test_items=12",
    "iglue.max_dev_items=12",
    "iglue.rerank_k=2",
]


@pytest.mark.slow  # ~45 s each; the default suite's e2e demo runs a saved UniGen through every task too
@pytest.mark.parametrize("bf16", [False, True])
def test_stage_with_the_real_tiny_unigen(world: Path, tiny_unigen: Path, tmp_path: Path, bf16: bool) -> None:
    """The production path: a tiny UniGen saved by save_pretrained in pretrain/final/, loaded by
    EvalModel.load (load_model, its tokenizers and spec), fine-tuned and tested on every task, in
    fp32 and under bf16 autocast (iglue.bf16)."""
    import torch

    spec = load_spec("demo", [*SMALL, f"iglue.bf16={str(bf16).lower()}"], workdir=world)
    em = EvalModel.load(tiny_unigen / "final")
    assert em.encode(["ein roter Kreis"])[0].shape[0] == 1
    threads = torch.get_num_threads()
    try:
        m = IGLUE_EVAL_STAGE.run(spec, {"pretrain": tiny_unigen}, tmp_path / "iglue-eval")
    finally:
        torch.set_num_threads(threads)  # units use one thread
    res = m.extra["results"]
    assert set(res) == {"xvnli", "xgqa", "marvl", "xflickrco", "wit"}
    assert all(set(res[t]["zero-shot"]) == {"en", "de"} for t in res)
    assert all(0 <= v <= 100 for t in res for v in res[t]["zero-shot"].values())
    top = json.loads((tmp_path / "iglue-eval/predictions/wit/zero-shot/de.json").read_text())
    assert len(top) == 12
    assert any((tmp_path / "iglue-eval/_finetuned/xvnli").iterdir())  # saved by save_pretrained


@pytest.mark.slow  # starts a local Ray (~30 s)
def test_runner_fans_units_out_as_ray_tasks(world: Path, tiny_unigen: Path) -> None:
    """execution.engines.iglue-eval=ray: the stage runs through ray_jobs.iglue_eval, each unit a
    Ray task in its own worker process; the outcome has the same shape as in-process."""
    import shutil

    import ray

    from mvlp_core import pipeline
    from ray_jobs.engines import run_stage

    shutil.copytree(tiny_unigen, world / "pretrain", dirs_exist_ok=True)
    spec = load_spec(
        "demo",
        [*SMALL, "execution.engines={iglue-eval: ray}", "iglue.workers=2", "iglue.tasks=[xvnli, marvl]"],
        workdir=world,
    )
    try:
        m = run_stage(spec, "iglue-eval")
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    assert set(m.extra["results"]) == {"xvnli", "marvl"} and m.units == 2 + 2 * 2
    state = pipeline.stage_state(spec, "iglue-eval")
    assert state["state"] == "complete", state.get("stale_because")


# real layouts, fast: a few items each -------------------------------------------------------------


def _png(path: Path, colour: tuple[int, int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def _nlvr2_root(root: Path, n_train: int) -> None:
    """NLVR2 as it ships: train.jsonl rows carry ``directory`` (an int), their images under
    images/nlvr2/train/<directory>/; dev rows have none, their images in images/nlvr2/dev/."""
    ann = root / "nlvr2" / "annotations"
    ann.mkdir(parents=True)
    for split, n in (("train", n_train), ("dev", 6)):
        rows = []
        for i in range(n):
            stem, label = f"{split}-{i}-0", i % 2 == 0
            folder = f"train/{i % 3}" if split == "train" else "dev"
            for side in ("img0", "img1"):
                _png(root / "images/nlvr2" / folder / f"{stem}-{side}.png", (200 if label else 0, 50, 50))
            row = {"identifier": f"{stem}-0", "sentence": "The left image is red.", "label": str(label)}
            row |= {"left_url": "http://x/l.jpg", "right_url": "http://x/r.jpg"}
            rows.append(row | ({"directory": i % 3} if split == "train" else {}))
        (ann / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_nlvr2_on_its_real_layout_and_its_dev_split_labelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MaRVL's English side on NLVR2's layout: the fine-tune finds every training image under
    train/<directory>/, streaming them through a cache smaller than the set. The root lacks NLVR2's
    test file: an error, unless iglue.dev_when_no_test lets English test on NLVR2 dev, which
    results, tables, manifest and status then all say."""
    monkeypatch.setattr(
        EvalModel,
        "load",
        classmethod(lambda cls, folder, image_size=None, max_text_len=None: standin_model.load(folder)),
    )
    root = tmp_path / "iglue"
    _nlvr2_root(root, n_train=12)
    pretrain = tmp_path / "pretrain"
    (pretrain / "final").mkdir(parents=True)
    contract.Manifest("pretrain", "fp0", {}, 0, 0, {}, 0.0, 1).save(pretrain)
    spec = load_spec(
        "demo",
        [
            "models=null",
            f"iglue.root={root}",
            "iglue.image_roots={}",
            "iglue.tasks=[marvl]",
            "iglue.languages={marvl: []}",
            "iglue.finetune.epochs=1",
            "iglue.finetune.batch_size=4",
            "iglue.finetune.tasks={}",
            "iglue.image_cache_mb=1",
        ],
        workdir=tmp_path,
    )
    [missing] = IGLUE_EVAL_STAGE.checks(spec)
    assert str(root / "nlvr2/annotations/test.jsonl") in missing
    spec = spec.model_copy(update={"iglue": spec.iglue.model_copy(update={"dev_when_no_test": True})})
    assert IGLUE_EVAL_STAGE.checks(spec) == []
    out = tmp_path / "iglue-eval"
    m = IGLUE_EVAL_STAGE.run(spec, {"pretrain": pretrain}, out)

    ft = json.loads((out / "results/marvl/finetune.json").read_text())
    assert (ft["samples_in"], ft["samples_out"], ft["rejects"]) == (12, 12, [])
    [en] = json.loads((out / "results.json").read_text())[1:]
    assert (en["lang"], en["split"], en["samples_out"]) == ("en", "dev", 6)
    assert en["file"] == str(root / "nlvr2/annotations/dev.jsonl")
    rows = list(csv.DictReader(open(out / "tables/marvl.zero-shot.accuracy.csv", encoding="utf-8")))
    assert rows[0]["split"] == "dev: en"
    assert m.extra["splits"] == {"marvl": {"zero-shot": {"en": "dev"}}}
    status = IGLUE_EVAL_STAGE.shows(spec, out, m.extra)
    assert f"marvl accuracy {m.extra['results']['marvl']['zero-shot']['en']:.1f} (dev)" in status.lines[0]
    assert status.tables[0].rows[0]["split"] == "dev: en"


@pytest.mark.slow  # ~20 s on 2 cores, img2dataset's start-up mostly; tests/unit/test_iglue_wit.py reads a
# download output of the same format in the default suite
def test_wit_images_come_through_ingest_and_download(tmp_path: Path) -> None:
    """WIT's URL list (mvlp_core.eval.wit_urls) through the pipeline's own ingest and download
    (img2dataset, the Wikimedia host mirrored to a loopback server), and iglue-eval finds each
    test image in the download's output; a URL the server lacks is the unit's missing_image."""
    from mvlp_core.eval import data_retrieval, heads_retrieval
    from mvlp_core.eval.images import ImageRoots, open_rgb
    from mvlp_core.eval.wit_urls import write_url_list
    from mvlp_core.imageserver import ImageServer
    from mvlp_core.stages.download import STAGE as DOWNLOAD_STAGE
    from mvlp_core.stages.ingest import STAGE as INGEST_STAGE

    host = "https://upload.wikimedia.org/"
    files = ["wikipedia/commons/6/61/BNRATHAU.jpg", "wikipedia/commons/a/ab/Caf\u00e9_Paris.jpg"]
    for n, name in enumerate(files):
        _png(tmp_path / "served" / name, (60 * n, 120, 30))  # PNG bytes under .jpg: img2dataset re-encodes
    urls = [f"{host}{files[0]}", f"{host}wikipedia/commons/a/ab/Caf%C3%A9_Paris.jpg", f"{host}x/y/Gone.jpg"]
    ann = tmp_path / "iglue/wit/annotations/test_de.jsonl"
    ann.parent.mkdir(parents=True)
    rows = [
        {"caption_reference_description": f"c {n}", "image_url": u, "wit_ix": n} for n, u in enumerate(urls)
    ]
    ann.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert write_url_list([ann], tmp_path / "wit-urls.tsv") == 3

    with ImageServer(tmp_path / "served") as server:
        spec = load_spec(
            "demo",
            [
                "dataset.ref=wit-test",
                f"download.mirrors={json.dumps({host: server.url})}",
                "download.resize_mode=keep_ratio",
                "download.min_image_size=0",
            ],
            workdir=tmp_path,
        )
        INGEST_STAGE.run(spec, {}, tmp_path / "ingest")
        m = DOWNLOAD_STAGE.run(spec, {"ingest": tmp_path / "ingest"}, tmp_path / "download")
    assert (m.samples_out, m.rejects) == (2, {"http_404": 1})

    rset = data_retrieval.load(ann)
    refs, rejects = heads_retrieval.resolve(rset, ImageRoots({"wit": tmp_path / "download"}), wit=True)
    assert [(r.key, r.reason, r.detail) for r in rejects] == [("2", "missing_image", urls[2])]  # wit_ix, URL
    assert [open_rgb(ref).getpixel((0, 0))[1] for ref in refs[:2]] == pytest.approx([120, 120], abs=8)
