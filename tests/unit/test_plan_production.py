"""`mvlp plan` on the production spec (data_specs/pipelines/unigen-cc3m.yaml): on a machine
without its inputs every missing piece is one line; on a staged tiny copy (the same spec with
/shared pointing at a temporary folder holding a 3-row CC3M list, tiny OPUS-MT checkpoints, the
WikiMatrix files, IGLUE's real annotations and image folders) every check passes."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from mvlp_core import contract, plan
from mvlp_core.eval.tasks import IGLUE_LANGUAGES
from mvlp_core.pipeline import names
from mvlp_core.spec import load_spec
from tests.tiny_marian import build_tiny_marian

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "data_specs" / "pipelines" / "unigen-cc3m.yaml"
REAL_IGLUE = ROOT.parent / "shared" / "data" / "iglue"
PAIRS = "ar-en bg-en bn-en cs-en da-en de-en el-en en-es en-et en-fr en-id en-ja en-ko en-pt en-ru en-sw en-ta en-tr en-vi en-zh"
CHECKPOINTS = ("Salesforce/blip2-opt-2.7b", "xlm-roberta-base", "gpt2", "meta-llama/Meta-Llama-3-8B-Instruct")
SENTENCES = [
    f"a photo of {w} on the street number {i}" for i, w in enumerate("dog cat man woman car bus".split())
]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No hub from the tests: names resolve only through the (empty) cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))


def staged_copy(tmp: Path) -> Path:
    """The production spec with /shared moved to `tmp`, and its inputs staged there."""
    data = tmp / "data"
    (data / "cc3m").mkdir(parents=True)
    (data / "cc3m" / "Train_GCC-training.tsv").write_text(
        "".join(f"{s}\thttps://images.example.com/{i}.jpg\n" for i, s in enumerate(SENTENCES[:3]))
    )
    (data / "wikimatrix").mkdir()
    for pair in PAIRS.split():
        with gzip.open(data / "wikimatrix" / f"WikiMatrix.{pair}.tsv.gz", "wt") as f:
            f.write("1.2\ta small dog\tein kleiner Hund\n")
    for name in ("opus-mt-en-de", "opus-mt-en-fr", "opus-mt-en-cs", "opus-mt-en-jap"):
        build_tiny_marian(tmp / "models" / name, SENTENCES)
    # opus-mt-en-zh is multi-target: its Chinese token is >>cmn_Hans<<, never >>zh<<
    build_tiny_marian(
        tmp / "models" / "opus-mt-en-zh", SENTENCES, extra_tokens=(">>cmn_Hans<<", ">>cmn_Hant<<", ">>yue<<")
    )
    for name in CHECKPOINTS:
        (tmp / "models" / name).mkdir(parents=True)
        (tmp / "models" / name / "config.json").write_text("{}")
    iglue = data / "iglue" / "datasets"
    shutil.copytree(REAL_IGLUE, iglue)
    # the shared copy lacks the English training and dev sets and the xGQA and NLVR2 test files:
    # one placeholder line each
    xgqa_tests = [f"xGQA/annotations/few_shot/{lang}/test.json" for lang in ("en", *IGLUE_LANGUAGES["xgqa"])]
    for rel in (
        *xgqa_tests,
        "nlvr2/annotations/test.jsonl",
        "XVNLI/annotations/en/train.jsonl",
        "XVNLI/annotations/en/dev.jsonl",
        "gqa/annotations/train_balanced_questions.json",
        "nlvr2/annotations/train.jsonl",
        "flickr30k/annotations/train_ann.jsonl",
        "wit/annotations/train_en.jsonl",
    ):
        (iglue / rel).write_text("{}\n")
    for kind in ("flickr30k", "coco", "gqa", "marvl", "nlvr2"):
        (data / "images" / kind).mkdir(parents=True)
        (data / "images" / kind / "0.jpg").write_bytes(b"\xff\xd8")
    wit = tmp / "runs" / "wit" / "download"  # a finished download of data_specs/datasets/wit-test.yaml
    (wit / "webdataset").mkdir(parents=True)
    (wit / "webdataset" / "00000.tar").write_bytes(b"")
    contract.Manifest("download", "fp", {}, 1, 1, {}, 0.0, 1).save(wit)
    text = (
        SPEC.read_text()
        .replace("/shared/", f"{tmp}/")
        .replace("Helsinki-NLP/{opus}", f"{tmp}/models/{{opus}}")
    )
    for name in CHECKPOINTS:
        text = text.replace(f"model: {name}", f"model: {tmp}/models/{name}").replace(
            f'"{name}"', f'"{tmp}/models/{name}"'
        )
        text = text.replace(f"vision: {name}", f"vision: {tmp}/models/{name}")
        text = text.replace(f"text_encoder: {name}", f"text_encoder: {tmp}/models/{name}")
        text = text.replace(f"decoder: {name}", f"decoder: {tmp}/models/{name}")
    text = text.replace("dataset:\n  ref: cc3m", f"dataset:\n  ref: {tmp}/cc3m.yaml")
    (tmp / "cc3m.yaml").write_text(
        (ROOT / "data_specs" / "datasets" / "cc3m.yaml").read_text().replace("/shared/", f"{tmp}/")
    )
    spec = tmp / "unigen-cc3m.yaml"
    spec.write_text(text)
    return spec


def test_on_this_machine_each_missing_piece_is_one_line(tmp_path: Path) -> None:
    spec = load_spec(SPEC)
    found = plan.problems(spec, names())
    assert all("\n" not in line for line in found)

    def one(*words: str) -> bool:
        return sum(all(w in line for w in words) for line in found) == 1

    assert one("ingest:", "/shared/data/cc3m/Train_GCC-training.tsv", "dataset.url_list")
    for lang, model in (("de", "de"), ("fr", "fr"), ("cs", "cs"), ("ja", "jap"), ("zh", "zh")):
        assert one("translate:", f"Helsinki-NLP/opus-mt-en-{model} (for {lang})", "HF_HOME")
    for pair in PAIRS.split():
        assert one("text-shard:", f"WikiMatrix.{pair}.tsv.gz", "text.corpora")
    for name in ("Salesforce/blip2-opt-2.7b", "xlm-roberta-base", "gpt2"):
        assert one("pretrain:", f"model {name} ", "HF_HOME")
    assert one("qa:", "meta-llama/Meta-Llama-3-8B-Instruct")
    assert one("iglue-eval:", "/shared/data/iglue/datasets", "iglue.root")


@pytest.mark.skipif(not REAL_IGLUE.exists(), reason=f"{REAL_IGLUE} absent")
def test_a_staged_tiny_copy_passes(tmp_path: Path) -> None:
    spec = load_spec(staged_copy(tmp_path))
    assert spec.pretrain.workers * spec.pretrain.batch_size * spec.pretrain.grad_accum == 512
    assert plan.problems(spec, names()) == []
    shown = plan.stage_plan(spec, "pretrain")
    assert "8 Ray Train worker(s)" in shown.resources and "global batch 512" in shown.resources
    assert all("local folder" in line for line in shown.loads)
