"""The import backend: formats, join by key or by English text, rejects, run-level errors."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mvlp_core.contract import Reject, StageError
from mvlp_core.spec import ImportSpec
from mvlp_core.stages.translate.import_backend import ImportBackend

KEYS = ["cc3m-000000001", "cc3m-000000002", "cc3m-000000003"]
CAPTIONS = ["a red circle", "a blue square", "a green star"]


def test_tsv_keyed_by_text(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text(
        "en\tde\tfr\n"
        "a red circle\tein roter Kreis\tun cercle rouge\n"
        'a blue square \t"ein ""blaues"" Quadrat"\t\n',
        encoding="utf-8",
    )
    backend = ImportBackend(ImportSpec(path=str(path), key_by="text"), ["de", "fr"])
    de = backend.translate(KEYS, CAPTIONS, "de")
    assert de[:2] == ["ein roter Kreis", 'ein "blaues" Quadrat']
    assert de[2] == Reject(KEYS[2], "missing_translation", de[2].detail)
    fr = backend.translate(KEYS, CAPTIONS, "fr")
    assert fr[0] == "un cercle rouge"
    assert isinstance(fr[1], Reject) and fr[1].reason == "empty_translation"
    assert backend.provenance("de") == "import:t.tsv"


def test_jsonl_keyed_by_key(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    rows = [
        {"key": KEYS[0], "de": "eins", "ja": "一"},
        {"key": KEYS[1], "de": None, "ja": "二"},
        {"key": KEYS[0], "de": "ignored: first row wins", "ja": "x"},
    ]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    backend = ImportBackend(ImportSpec(path=str(path), key_by="key"), ["de", "ja"])
    de = backend.translate(KEYS, ["ignored"] * 3, "de")
    assert de[0] == "eins"
    assert [r.reason for r in de[1:]] == ["empty_translation", "missing_translation"]
    assert backend.translate(KEYS[:2], ["x", "y"], "ja") == ["一", "二"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet(tmp_path, fmt):
    table = pa.table({"key": KEYS[:2], "de": ["a, b", "c"], "extra": [1, 2]})
    path = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        path.write_text('key,de,extra\ncc3m-000000001,"a, b",1\ncc3m-000000002,c,2\n')
    else:
        pq.write_table(table, path)
    backend = ImportBackend(ImportSpec(path=str(path), key_by="key"), ["de"])
    assert backend.translate(KEYS[:2], ["", ""], "de") == ["a, b", "c"]


def test_missing_column_is_a_stage_error(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("en\tde\na red circle\tein roter Kreis\n", encoding="utf-8")
    backend = ImportBackend(ImportSpec(path=str(path), key_by="text"), ["de", "fr"])
    with pytest.raises(StageError) as err:
        backend.load()
    message = str(err.value)
    assert str(path) in message and "['fr']" in message and "columns found: ['en', 'de']" in message
    assert "rename the columns" in message


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(StageError, match="not found"):
        ImportBackend(ImportSpec(path=str(tmp_path / "nope.tsv")), ["de"])
    odd = tmp_path / "t.xlsx"
    odd.write_text("x")
    with pytest.raises(StageError, match="cannot tell the format"):
        ImportBackend(ImportSpec(path=str(odd)), ["de"])
    with pytest.raises(StageError, match="required"):
        ImportBackend(None, ["de"])
