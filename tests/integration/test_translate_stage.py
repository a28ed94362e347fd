"""The translate stage end to end: a fake download folder, the import backend and a tiny random MarianMT
loaded by path through the production loading code."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mvlp_core import contract, keys
from mvlp_core.spec import PipelineSpec
from mvlp_core.stages.translate import STAGE as TRANSLATE_STAGE
from tests.tiny_marian import build_tiny_marian

COLOURS = ["red", "blue", "green", "yellow", "purple"]
SHAPES = ["circle", "square", "star", "triangle"]


def caption(row: int) -> str:
    return f"a {COLOURS[row % 5]} {SHAPES[row % 4]} above a {COLOURS[(row + 2) % 5]} {SHAPES[row % 3]}"


def write_import(path: Path, skip: set[int], empty_fr: set[int]) -> None:
    lines = ["en\tde\tfr"]
    for r in range(40):
        if r not in skip:
            fr = "" if r in empty_fr else f"fr {caption(r)}"
            lines.append(f"{caption(r)}\tde {caption(r)}\t{fr}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_spec(translate: dict) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {"name": "t", "dataset": {"ref": "synthetic"}, "languages": ["de", "fr"], "translate": translate}
    )


def read_output(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(out / f"{u}.parquet") for u in ("00000", "00001")])


def test_import_backend(tmp_path, download):
    # Captions repeat with period 60 > 40 rows, so a skipped text is missing for exactly one row.
    path = tmp_path / "cc6l.tsv"
    write_import(path, skip={3}, empty_fr={5})
    spec = make_spec({"backend": "import", "import": {"path": str(path), "key_by": "text"}})
    out = tmp_path / "translate"
    m = TRANSLATE_STAGE.run(spec, {"download": download}, out)

    assert (m.samples_in, m.samples_out) == (80, 77)
    assert m.rejects == {"empty_translation": 1, "missing_translation": 2}
    assert m.extra["selected"] == 40 and m.extra["languages"] == ["de", "fr"]
    assert m.extra["per_language"] == {"de": 39, "fr": 38}
    assert m.extra["provenance"] == {"de": "import:cc6l.tsv", "fr": "import:cc6l.tsv"}
    table = read_output(out)
    assert table.schema.names == ["key", "lang", "text", "provenance"]
    pairs = list(zip(table.column("key").to_pylist(), table.column("lang").to_pylist()))
    assert pairs == sorted(pairs) and len(pairs) == 77
    assert table.column("text")[0].as_py() == f"de {caption(0)}"
    rejects = contract.read_rejects(out).to_pylist()
    assert {(r["key"], r["reason"], r["detail"].split(";")[0]) for r in rejects} == {
        (keys.make_key("cc3m", 3), "missing_translation", "lang=de"),
        (keys.make_key("cc3m", 3), "missing_translation", "lang=fr"),
        (keys.make_key("cc3m", 5), "empty_translation", "lang=fr"),
    }

    mtime = (out / "_manifest.json").stat().st_mtime_ns
    assert TRANSLATE_STAGE.run(spec, {"download": download}, out).fingerprint == m.fingerprint
    assert (out / "_manifest.json").stat().st_mtime_ns == mtime  # complete: nothing redone
    assert TRANSLATE_STAGE.run(spec, {"download": download}, out, force=True).created >= m.created
    assert (out / "_manifest.json").stat().st_mtime_ns != mtime

    write_import(path, skip=set(), empty_fr=set())  # editing the file recomputes the stage
    again = TRANSLATE_STAGE.run(spec, {"download": download}, out)
    assert again.fingerprint != m.fingerprint and again.samples_out == 80 and again.rejects == {}


def test_sample_fraction_is_deterministic(tmp_path, download):
    path = tmp_path / "cc6l.tsv"
    write_import(path, skip=set(), empty_fr=set())
    translate = {"backend": "import", "sample_fraction": 0.5, "import": {"path": str(path)}}
    first = TRANSLATE_STAGE.run(make_spec(translate), {"download": download}, tmp_path / "a")
    TRANSLATE_STAGE.run(make_spec(translate), {"download": download}, tmp_path / "b")
    assert 10 <= first.extra["selected"] <= 30
    assert first.samples_in == 2 * first.extra["selected"] == first.samples_out
    assert read_output(tmp_path / "a").equals(read_output(tmp_path / "b"))
    expected = {keys.make_key("cc3m", r) for r in range(40)}
    expected = {k for k in expected if keys.in_fraction(k, 0.5, salt="translate")}
    assert set(read_output(tmp_path / "a").column("key").to_pylist()) == expected


def test_missing_import_column_stops_the_stage(tmp_path, download):
    path = tmp_path / "cc6l.tsv"
    path.write_text("en\tde\na red circle\tein roter Kreis\n", encoding="utf-8")
    spec = make_spec({"backend": "import", "import": {"path": str(path)}})
    with pytest.raises(contract.StageError, match=r"no column\(s\) \['fr'\]"):
        TRANSLATE_STAGE.run(spec, {"download": download}, tmp_path / "translate")
    assert contract.Manifest.load(tmp_path / "translate") is None


def test_hf_backend_with_tiny_marian(tmp_path, download):
    corpus = [caption(r) for r in range(60)]
    build_tiny_marian(tmp_path / "models" / "opus-mt-en-de", corpus, favour="▁a")
    build_tiny_marian(tmp_path / "models" / "opus-mt-en-fr", corpus, favour="eos")
    template = str(tmp_path / "models") + "/{opus}"
    hf = {"model": template, "batch_tokens": 60, "max_new_tokens": 6}
    filters = {"length_ratio": {}, "max_repeats": 0}  # the biased model repeats one word
    spec = make_spec({"backend": "hf", "hf": hf, "filters": filters})
    out = tmp_path / "translate"
    m = TRANSLATE_STAGE.run(spec, {"download": download}, out)

    assert m.samples_in == 80 and m.samples_out + sum(m.rejects.values()) == 80
    assert m.extra["per_language"] == {"de": 40, "fr": 0}
    assert m.rejects == {"empty_output": 40}
    de_model = template.replace("{opus}", "opus-mt-en-de")
    assert m.extra["provenance"]["de"] == f"hf:{de_model}"
    table = read_output(out)
    assert set(table.column("lang").to_pylist()) == {"de"}
    assert all(t.strip() for t in table.column("text").to_pylist())
    assert set(table.column("provenance").to_pylist()) == {f"hf:{de_model}"}
    rejects = contract.read_rejects(out).to_pylist()
    assert all(r["detail"].startswith("lang=fr") for r in rejects)


def test_hf_model_that_does_not_load(tmp_path, download):
    spec = make_spec({"backend": "hf", "hf": {"model": str(tmp_path / "nowhere") + "/mt-{lang}"}})
    with pytest.raises(contract.StageError) as err:
        TRANSLATE_STAGE.run(spec, {"download": download}, tmp_path / "translate")
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "mt-de") in message and "Give a local folder" in message


def test_multilingual_checkpoints_are_steered_to_the_target_language():
    from transformers import NllbTokenizer

    from mvlp_core.stages.translate.seq2seq import Steering, steering

    tokenizer = NllbTokenizer()
    assert steering(tokenizer, "de", "nllb", "translate.hf.model") == Steering(target_token="deu_Latn")
    assert tokenizer.src_lang == "eng_Latn"
