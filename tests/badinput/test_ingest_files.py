"""Whole URL lists in every format (ingest_files.yaml) through the real ingest stage: each record
ends with the outcome its case names, or the file fails with its one-line StageError.

Every run also checks the count invariant (records in = shard rows + rejects, no record twice)
and that reject reasons are snake_case with a one-line detail.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mvlp_core import contract
from mvlp_core.spec import load_spec
from mvlp_core.stages.ingest import STAGE as INGEST_STAGE

HERE = Path(__file__).parent
CORPUS = yaml.safe_load((HERE / "ingest_files.yaml").read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = CORPUS["cases"]
_REPEAT = re.compile(r"<<(.+?)\*(\d+)>>", re.DOTALL)


def expand(text: str) -> str:
    """`<<S*N>>` -> S repeated N times (large inputs without large YAML)."""
    return _REPEAT.sub(lambda m: m[1] * int(m[2]), text)


def unchecked_strings(values: list[str | bytes]) -> pa.Array:
    """A string array holding the bytes as given, valid UTF-8 or not (arrow's builders check)."""
    data = [v.encode() if isinstance(v, str) else v for v in values]
    offsets = [0]
    for item in data:
        offsets.append(offsets[-1] + len(item))
    buffers = [None, pa.array(offsets, pa.int32()).buffers()[1], pa.py_buffer(b"".join(data))]
    return pa.Array.from_buffers(pa.string(), len(data), buffers)


def arrow_column(column: dict[str, Any]) -> pa.Array:
    """A case's parquet column: its values as the arrow type it names (inferred when it names none)."""
    values = [expand(v) if isinstance(v, str) else v for v in column["values"]]
    kind = column.get("type")
    if kind == "raw_string":
        return unchecked_strings(values)
    if kind == "dictionary":
        return pa.array(values, pa.string()).dictionary_encode()
    return pa.array(values, None if kind is None else pa.type_for_alias(kind))


def parquet_bytes(case: dict[str, Any], path: Path) -> bytes:
    """The case's parquet file (written through `path`), then cut or damaged as the case says."""
    if "raw" in case:
        return case["raw"].encode()
    pq.write_table(pa.table({name: arrow_column(c) for name, c in case["columns"].items()}), path)
    data = path.read_bytes()
    if "cut" in case:
        data = data[: -case["cut"]]
    if "damage" in case:
        at, patch = case["damage"]["at"], case["damage"]["bytes"].encode()
        data = data[:at] + patch + data[at + len(patch) :]
    return data


def text_bytes(case: dict[str, Any]) -> bytes:
    """The case's text file: its lines or text, encoded, gzipped (and truncated) as it says."""
    if "text" in case:
        text = case["text"]
    else:
        newline = case.get("newline", "\n")
        text = newline.join(case["lines"]) + newline
    data = expand(text).encode(case.get("encoding", "utf-8"))
    if case.get("gzip"):
        data = gzip.compress(data, mtime=0)
    return data[:-12] if case.get("gzip") == "truncated" else data


def write_case(case: dict[str, Any], tmp: Path) -> Path:
    """The case's URL list in `tmp`, named list.FORMAT (.gz when compressed)."""
    path = tmp / f"list.{case['format']}{'.gz' if case.get('gzip') else ''}"
    data = parquet_bytes(case, path) if case["format"] == "parquet" else text_bytes(case)
    path.write_bytes(data)
    return path


def run_case(case: dict[str, Any], tmp: Path) -> contract.Manifest:
    """Ingest the case's file with the demo spec and the production URL policy (no loopback)."""
    path = write_case(case, tmp)
    dataset = {"name": "files", "url_list": str(path), "format": case["format"], **case.get("dataset", {})}
    overrides = [f"dataset.spec={json.dumps(dataset)}", "ingest.url_policy.allow_loopback=false"]
    spec = load_spec("demo", [*overrides, *case.get("set", [])], tmp)
    return INGEST_STAGE.run(spec, {}, tmp / "ingest")


def outcomes(out: Path) -> tuple[list[tuple[int, str]], list[str]]:
    """(row, outcome) for every record, `ok` or the reject reason, and the accepted captions in
    key order. The row is the record's index, or its id where the dataset has an id column;
    a reject without a key names its record's index in its detail (`row N ...`)."""
    found: list[tuple[int, str]] = []
    for rec in contract.read_rejects(out).to_pylist():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", rec["reason"]), rec["reason"]
        assert rec["detail"] and "\n" not in rec["detail"], rec
        row = (
            int(re.match(r"row (\d+)", rec["detail"])[1])
            if rec["key"] is None
            else int(rec["key"].rsplit("-", 1)[1])
        )
        found.append((row, rec["reason"]))
    captions = []
    for shard in sorted(out.glob("shard-*.parquet")):
        for rec in pq.read_table(shard).to_pylist():
            found.append((rec["row"], "ok"))
            captions.append(rec["caption"])
    return found, captions


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_ingest_file(case: dict[str, Any], tmp_path: Path) -> None:
    if "error" in case:
        with pytest.raises(contract.StageError) as err:
            run_case(case, tmp_path)
        message = str(err.value)
        assert "\n" not in message and str(tmp_path) in message, message
        assert re.search(case["error"], message), message
        return
    manifest = run_case(case, tmp_path)
    found, captions = outcomes(tmp_path / "ingest")
    expect = case["expect"]
    assert manifest.samples_in == len(expect) == len(found)
    assert manifest.samples_out == len(captions)
    if "id_column" in case.get("dataset", {}):  # keys carry ids, not positions
        assert Counter(outcome for _, outcome in found) == Counter(expect)
        assert sorted(row for row, outcome in found if outcome == "ok") == case["rows"]
    else:  # every record exactly once, with its outcome
        assert sorted(found) == list(enumerate(expect))
    if "captions" in case:
        assert captions == case["captions"]


def test_corpus_covers_every_format_and_is_large_enough() -> None:
    assert {c["format"] for c in CASES} == {"tsv", "csv", "jsonl", "parquet"}
    records = sum(len(c.get("expect", ())) for c in CASES)
    errors = sum("error" in c for c in CASES)
    assert records + errors >= 100
