"""ingest: URL lists in every format -> keyed parquet shards; every row ends in a shard or a reject."""

from __future__ import annotations

import io
import json
import math
import random
import tracemalloc
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mvlp_core import contract, keys
from mvlp_core.spec import DatasetSpec, load_spec
from mvlp_core.stages import ingest_readers as readers
from mvlp_core.stages.ingest import SCHEMA, partition
from mvlp_core.stages.ingest import STAGE as INGEST_STAGE


def make_spec(
    tmp_path: Path,
    url_list: Path | str,
    fmt: str,
    *,
    dataset: dict[str, Any] | None = None,
    ingest: dict[str, Any] | None = None,
    limit: int | None = None,
    overrides: list[str] = (),
):
    ds = {"name": "t", "url_list": str(url_list), "format": fmt, **(dataset or {})}
    ref: dict[str, Any] = {"spec": ds}
    if limit is not None:
        ref["limit"] = limit
    raw = {
        "name": "ingest-test",
        "workdir": str(tmp_path),
        "dataset": ref,
        "languages": ["de"],
        "translate": {"backend": "hf"},
        "ingest": ingest or {},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_spec(path, list(overrides), workdir=tmp_path)


def shards(out: Path) -> list[Path]:
    return sorted(out.glob("shard-*.parquet"))


def read_out(out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in shards(out):
        table = pq.read_table(p)
        assert table.schema.equals(SCHEMA)
        rows.extend(table.to_pylist())
    return rows


def reject_reasons(out: Path) -> list[str]:
    return contract.read_rejects(out).column("reason").to_pylist()


def check_accounting(m: contract.Manifest, out: Path) -> None:
    rejects = contract.read_rejects(out)
    assert m.samples_in == m.samples_out + rejects.num_rows
    assert m.samples_out == len(read_out(out))
    assert m.rejects == dict(Counter(rejects.column("reason").to_pylist()))
    assert sum(info["samples"] for info in m.files.values()) == m.samples_out


ROWS = [
    ("http://example.com/0.jpg", "a red circle"),
    ("https://example.com/1.jpg", "two blue squares"),
    ("http://example.org/2.jpg", "a green star above a black cross"),
]


def expected_rows() -> list[dict[str, Any]]:
    return [
        {"key": f"t-{i:09d}", "row": i, "dataset": "t", "url": u, "caption": c}
        for i, (u, c) in enumerate(ROWS)
    ]


def write_tsv(path: Path, rows, header: str | None = "url\tcaption") -> Path:
    lines = ([header] if header else []) + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- formats -------------------------------------------------------------------------------------


def test_tsv(tmp_path: Path) -> None:
    src = write_tsv(tmp_path / "list.tsv", ROWS)
    out = tmp_path / "ingest"
    m = INGEST_STAGE.run(make_spec(tmp_path, src, "tsv"), {}, out)
    assert read_out(out) == expected_rows()
    assert m.samples_in == 3 and m.samples_out == 3 and m.rejects == {}
    assert m.stage == "ingest"
    assert (out / contract.MANIFEST).exists()
    check_accounting(m, out)


def test_csv_with_quoted_fields(tmp_path: Path) -> None:
    src = tmp_path / "list.csv"
    src.write_text(
        "url,caption\n"
        "http://example.com/0.jpg,a red circle\n"
        'https://example.com/1.jpg,"two blue squares, side by side"\n'
        'http://example.org/2.jpg,"a ""quoted"" star"\n',
        encoding="utf-8",
    )
    out = tmp_path / "ingest"
    m = INGEST_STAGE.run(make_spec(tmp_path, src, "csv"), {}, out)
    rows = read_out(out)
    assert [r["caption"] for r in rows] == [
        "a red circle",
        "two blue squares, side by side",
        'a "quoted" star',
    ]
    assert [r["key"] for r in rows] == ["t-000000000", "t-000000001", "t-000000002"]
    check_accounting(m, out)


def test_jsonl(tmp_path: Path) -> None:
    src = tmp_path / "list.jsonl"
    lines = [json.dumps({"url": u, "caption": c, "extra": 1}) for u, c in ROWS]
    lines.insert(1, "")  # blank lines are skipped, not counted
    lines.append("{not json")
    lines.append("[1, 2]")
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "ingest"
    m = INGEST_STAGE.run(make_spec(tmp_path, src, "jsonl"), {}, out)
    assert read_out(out) == expected_rows()
    assert m.rejects == {"malformed_row": 2}
    assert m.samples_in == 5
    check_accounting(m, out)


def test_parquet(tmp_path: Path) -> None:
    src = tmp_path / "list.parquet"
    table = pa.table(
        {
            "image_url": [u for u, _ in ROWS],
            "text": [c for _, c in ROWS],
            "sid": [10, 20, 30],
        }
    )
    pq.write_table(table, src)
    out = tmp_path / "ingest"
    spec = make_spec(
        tmp_path,
        src,
        "parquet",
        dataset={"url_column": "image_url", "caption_column": "text", "id_column": "sid"},
    )
    m = INGEST_STAGE.run(spec, {}, out)
    rows = read_out(out)
    assert [r["key"] for r in rows] == ["t-000000010", "t-000000020", "t-000000030"]
    assert [r["row"] for r in rows] == [10, 20, 30]
    assert [(r["url"], r["caption"]) for r in rows] == ROWS
    check_accounting(m, out)


def test_headerless_tsv_with_columns(tmp_path: Path) -> None:
    # CC3M layout: caption<TAB>url, no header.
    src = write_tsv(tmp_path / "cc3m.tsv", [(c, u) for u, c in ROWS], header=None)
    out = tmp_path / "ingest"
    spec = make_spec(tmp_path, src, "tsv", dataset={"header": False, "columns": ["caption", "url"]})
    m = INGEST_STAGE.run(spec, {}, out)
    assert read_out(out) == expected_rows()
    check_accounting(m, out)


def test_headerless_tsv_without_columns_is_an_error(tmp_path: Path) -> None:
    src = write_tsv(tmp_path / "cc3m.tsv", ROWS, header=None)
    spec = make_spec(tmp_path, src, "tsv", dataset={"header": False})
    with pytest.raises(contract.StageError, match="columns"):
        INGEST_STAGE.run(spec, {}, tmp_path / "ingest")


# --- rejects -------------------------------------------------------------------------------------


def test_bad_rows_each_get_the_right_reason(tmp_path: Path) -> None:
    src = tmp_path / "list.tsv"
    data = [
        b"url\tcaption",
        b"http://example.com/0.jpg\ta good caption",  # 0 ok
        b"http://example.com/1.jpg\tone\ttoo many",  # 1 malformed_row
        b"http://example.com/2.jpg\tcaf\xe9 latin-1",  # 2 bad_encoding
        b"http://example.com/3.jpg\tnul\x00byte",  # 3 nul_byte
        b"http://example.com/4.jpg\t   ",  # 4 empty_caption
        b"http://example.com/5.jpg\t" + b"x" * 2000,  # 5 caption_too_long
        b"ftp://example.com/6.jpg\tan ftp image",  # 6 url_scheme
        b"http://127.0.0.1/7.jpg\ta loopback image",  # 7 url_loopback
        b"http://example.com/0.jpg\tsame url again",  # 8 duplicate
        b"\tno url",  # 9 missing_url
        b"http://example.com/10.jpg",  # 10 malformed_row (too few fields)
        b"http://example.com/11.jpg\t  spaced   out ",  # 11 ok
    ]
    src.write_bytes(b"\n".join(data) + b"\n")
    out = tmp_path / "ingest"
    m = INGEST_STAGE.run(make_spec(tmp_path, src, "tsv", ingest={"max_caption_chars": 1000}), {}, out)

    rows = read_out(out)
    assert [r["key"] for r in rows] == ["t-000000000", "t-000000011"]
    assert rows[1]["caption"] == "spaced out"  # whitespace normalised

    rejects = contract.read_rejects(out).to_pylist()
    by_reason = Counter(r["reason"] for r in rejects)
    assert by_reason == Counter(
        {
            "malformed_row": 2,
            "bad_encoding": 1,
            "nul_byte": 1,
            "empty_caption": 1,
            "caption_too_long": 1,
            "url_scheme": 1,
            "url_loopback": 1,
            "duplicate": 1,
            "missing_url": 1,
        }
    )
    keyed = {r["reason"]: r["key"] for r in rejects if r["key"] is not None}
    assert keyed["empty_caption"] == "t-000000004"
    assert keyed["caption_too_long"] == "t-000000005"
    assert keyed["url_scheme"] == "t-000000006"
    assert keyed["url_loopback"] == "t-000000007"
    assert keyed["duplicate"] == "t-000000008"
    assert keyed["missing_url"] == "t-000000009"
    # unparseable rows carry no key but name their row in the detail
    details = {r["detail"] for r in rejects if r["key"] is None}
    assert any(d.startswith("row 2 (line 4): not UTF-8") for d in details)
    assert any(d.startswith("row 3 (line 5): row contains NUL") for d in details)

    assert m.samples_in == 12  # every data row accounted for
    assert m.samples_out == 2
    assert m.rejects == dict(sorted(by_reason.items()))
    check_accounting(m, out)


def test_loopback_accepted_with_policy(tmp_path: Path) -> None:
    src = write_tsv(
        tmp_path / "list.tsv",
        [("http://127.0.0.1:8000/a.jpg", "local"), ("http://localhost/b.jpg", "local too")],
    )
    out = tmp_path / "ingest"
    m = INGEST_STAGE.run(make_spec(tmp_path, src, "tsv"), {}, out)
    assert m.rejects == {"url_loopback": 2} and m.samples_out == 0

    out2 = tmp_path / "ingest2"
    spec = make_spec(tmp_path, src, "tsv", ingest={"url_policy": {"allow_loopback": True}})
    m2 = INGEST_STAGE.run(spec, {}, out2)
    assert m2.rejects == {} and m2.samples_out == 2
    assert [r["url"] for r in read_out(out2)] == [
        "http://127.0.0.1:8000/a.jpg",
        "http://localhost/b.jpg",
    ]


def test_dedup_modes(tmp_path: Path) -> None:
    rows = [
        ("http://example.com/a.jpg", "one"),
        ("http://example.com/a.jpg", "two"),
        ("http://example.com/a.jpg", "one"),
    ]
    src = write_tsv(tmp_path / "list.tsv", rows)
    m_url = INGEST_STAGE.run(make_spec(tmp_path, src, "tsv"), {}, tmp_path / "a")
    assert m_url.samples_out == 1 and m_url.rejects == {"duplicate": 2}
    m_uc = INGEST_STAGE.run(
        make_spec(tmp_path, src, "tsv", ingest={"dedup": "url+caption"}), {}, tmp_path / "b"
    )
    assert m_uc.samples_out == 2 and m_uc.rejects == {"duplicate": 1}
    m_none = INGEST_STAGE.run(make_spec(tmp_path, src, "tsv", ingest={"dedup": "none"}), {}, tmp_path / "c")
    assert m_none.samples_out == 3 and m_none.rejects == {}


def test_duplicate_id_column(tmp_path: Path) -> None:
    src = tmp_path / "list.jsonl"
    recs = [
        {"id": 5, "url": "http://example.com/a.jpg", "caption": "a"},
        {"id": 5, "url": "http://example.com/b.jpg", "caption": "b"},
        {"id": "x", "url": "http://example.com/c.jpg", "caption": "c"},
    ]
    src.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    out = tmp_path / "ingest"
    m = INGEST_STAGE.run(make_spec(tmp_path, src, "jsonl", dataset={"id_column": "id"}), {}, out)
    assert [r["key"] for r in read_out(out)] == ["t-000000005"]
    assert m.rejects == {"bad_row_id": 1, "duplicate_id": 1}
    check_accounting(m, out)


# --- keys, shards, limit -------------------------------------------------------------------------


def many_rows(n: int) -> list[tuple[str, str]]:
    return [(f"http://example.com/{i}.jpg", f"caption number {i}") for i in range(n)]


def test_keys_stable_across_reruns(tmp_path: Path) -> None:
    src = write_tsv(tmp_path / "list.tsv", many_rows(25))
    spec = make_spec(tmp_path, src, "tsv", ingest={"shard_size": 7})
    INGEST_STAGE.run(spec, {}, tmp_path / "a")
    first = read_out(tmp_path / "a")
    INGEST_STAGE.run(spec, {}, tmp_path / "a", force=True)
    forced = read_out(tmp_path / "a")
    INGEST_STAGE.run(make_spec(tmp_path, src, "tsv", ingest={"shard_size": 10}), {}, tmp_path / "b")
    resharded = read_out(tmp_path / "b")
    assert [r["key"] for r in first] == [f"t-{i:09d}" for i in range(25)]
    assert first == forced == resharded
    assert all(keys.is_valid_key(r["key"]) and "." not in r["key"] for r in first)


def test_shard_size_splits_into_several_files(tmp_path: Path) -> None:
    src = write_tsv(tmp_path / "list.tsv", many_rows(25))
    out = tmp_path / "ingest"
    m = INGEST_STAGE.run(make_spec(tmp_path, src, "tsv", ingest={"shard_size": 10}), {}, out)
    files = shards(out)
    assert [p.name for p in files] == [
        "shard-00000.parquet",
        "shard-00001.parquet",
        "shard-00002.parquet",
    ]
    assert [pq.read_metadata(p).num_rows for p in files] == [10, 10, 5]
    assert m.units == 3
    assert {k: v["samples"] for k, v in m.files.items()} == {
        "shard-00000.parquet": 10,
        "shard-00001.parquet": 10,
        "shard-00002.parquet": 5,
    }
    assert m.extra["shard_size"] == 10
    check_accounting(m, out)


def test_limit_respected(tmp_path: Path) -> None:
    src = write_tsv(tmp_path / "list.tsv", many_rows(25))
    out = tmp_path / "ingest"
    m = INGEST_STAGE.run(make_spec(tmp_path, src, "tsv", limit=7), {}, out)
    assert m.samples_in == 7 and m.samples_out == 7
    assert [r["key"] for r in read_out(out)] == [f"t-{i:09d}" for i in range(7)]


def test_limit_counts_rejected_rows(tmp_path: Path) -> None:
    rows = [("ftp://example.com/0.jpg", "bad")] + many_rows(10)[1:]
    src = write_tsv(tmp_path / "list.tsv", rows)
    out = tmp_path / "ingest"
    m = INGEST_STAGE.run(make_spec(tmp_path, src, "tsv", limit=4), {}, out)
    assert m.samples_in == 4
    assert m.samples_out == 3 and m.rejects == {"url_scheme": 1}


def test_empty_list(tmp_path: Path) -> None:
    src = write_tsv(tmp_path / "list.tsv", [])
    out = tmp_path / "ingest"
    m = INGEST_STAGE.run(make_spec(tmp_path, src, "tsv"), {}, out)
    assert m.samples_in == 0 and m.samples_out == 0
    assert read_out(out) == []


# --- errors and re-runs --------------------------------------------------------------------------


def test_missing_file_is_a_stage_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist.tsv"
    spec = make_spec(tmp_path, missing, "tsv")
    with pytest.raises(contract.StageError) as info:
        INGEST_STAGE.run(spec, {}, tmp_path / "ingest")
    assert str(missing) in str(info.value)
    assert not (tmp_path / "ingest" / contract.MANIFEST).exists()


def test_second_run_is_a_noop_and_edit_recomputes(tmp_path: Path) -> None:
    src = write_tsv(tmp_path / "list.tsv", ROWS)
    out = tmp_path / "ingest"
    spec = make_spec(tmp_path, src, "tsv")
    first = INGEST_STAGE.run(spec, {}, out)
    manifest = out / contract.MANIFEST
    mtime = manifest.stat().st_mtime_ns
    shard_mtime = shards(out)[0].stat().st_mtime_ns

    again = INGEST_STAGE.run(make_spec(tmp_path, src, "tsv"), {}, out)
    assert again == first
    assert manifest.stat().st_mtime_ns == mtime
    assert shards(out)[0].stat().st_mtime_ns == shard_mtime

    write_tsv(src, ROWS + [("http://example.com/new.jpg", "a new row")])
    edited = INGEST_STAGE.run(make_spec(tmp_path, src, "tsv"), {}, out)
    assert edited.fingerprint != first.fingerprint
    assert edited.samples_in == 4 and edited.samples_out == 4
    assert read_out(out)[-1]["key"] == "t-000000003"
    assert contract.Manifest.load(out) == edited


def test_config_change_recomputes(tmp_path: Path) -> None:
    src = write_tsv(tmp_path / "list.tsv", ROWS)
    out = tmp_path / "ingest"
    first = INGEST_STAGE.run(make_spec(tmp_path, src, "tsv"), {}, out)
    second = INGEST_STAGE.run(make_spec(tmp_path, src, "tsv", ingest={"max_caption_chars": 5}), {}, out)
    assert second.fingerprint != first.fingerprint
    assert second.samples_out < first.samples_out
    assert "caption_too_long" in second.rejects
    check_accounting(second, out)


# --- records, not lines --------------------------------------------------------------------------


def encode_list(fmt: str, newline: str, bom: bool) -> bytes:
    """ROWS as a URL list in `fmt` with the given line ending, with or without a UTF-8 BOM."""
    if fmt == "jsonl":
        lines = [json.dumps({"url": u, "caption": c}) for u, c in ROWS]
    else:
        sep = "\t" if fmt == "tsv" else ","
        lines = [f"url{sep}caption"] + [f"{u}{sep}{c}" for u, c in ROWS]
    return ("\ufeff" if bom else "").encode() + (newline.join(lines) + newline).encode()


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("bom", [False, True], ids=["", "bom"])
def test_every_line_ending_and_a_bom_read_alike(tmp_path: Path, fmt: str, newline: str, bom: bool) -> None:
    src = tmp_path / f"list.{fmt}"
    src.write_bytes(encode_list(fmt, newline, bom))
    out = tmp_path / "ingest"
    m = INGEST_STAGE.run(make_spec(tmp_path, src, fmt), {}, out)
    assert read_out(out) == expected_rows()
    assert m.rejects == {}


def test_csv_counts_records_and_names_the_line_a_record_starts_on(tmp_path: Path) -> None:
    src = tmp_path / "list.csv"
    src.write_text(
        "url,caption\n"
        'http://example.com/0.jpg,"a red circle\nabove\na line"\n'  # row 0, lines 2-4
        "http://example.com/1.jpg\n"  # row 1, line 5: one field
        'http://example.com/2.jpg,"two ""blue"" squares"\n',  # row 2, line 6
        encoding="utf-8",
    )
    out = tmp_path / "ingest"
    m = INGEST_STAGE.run(make_spec(tmp_path, src, "csv"), {}, out)
    assert [r["caption"] for r in read_out(out)] == ["a red circle above a line", 'two "blue" squares']
    assert m.samples_in == 3 and m.rejects == {"malformed_row": 1}
    assert contract.read_rejects(out).column("detail").to_pylist() == ["row 1 (line 5): 1 fields, expected 2"]
    check_accounting(m, out)


def test_limit_counts_records(tmp_path: Path) -> None:
    src = tmp_path / "list.csv"
    src.write_text("url,caption\n" + "".join(f'{u},"{c}\nmore"\n' for u, c in ROWS), encoding="utf-8")
    m = INGEST_STAGE.run(make_spec(tmp_path, src, "csv", limit=2), {}, tmp_path / "ingest")
    assert m.samples_in == 2 and m.samples_out == 2
    assert [r["caption"] for r in read_out(tmp_path / "ingest")] == [f"{c} more" for _, c in ROWS[:2]]


def peak_bytes_reading(ds: DatasetSpec) -> tuple[list[readers.RawRow], int]:
    tracemalloc.start()
    try:
        rows = list(readers.read_rows(ds))
        return rows, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["tsv", "csv"])
def test_an_oversized_record_is_read_through_in_bounded_memory(tmp_path: Path, fmt: str) -> None:
    big = 8 * 2**20
    src = tmp_path / f"list.{fmt}"
    with open(src, "wb") as f:
        f.write(b"url,caption\n" if fmt == "csv" else b"url\tcaption\n")
        if fmt == "csv":  # one quoted field of 8 MiB in 100-byte lines
            f.write(b'http://example.com/0.jpg,"' + (b"x" * 99 + b"\n") * (big // 100) + b'"\n')
        else:  # one 8 MiB line
            f.write(b"http://example.com/0.jpg\t" + b"x" * big + b"\n")
        f.write(b"http://example.com/1.jpg,ok\n" if fmt == "csv" else b"http://example.com/1.jpg\tok\n")
    ds = DatasetSpec(name="t", url_list=str(src), format=fmt)
    rows, peak = peak_bytes_reading(ds)
    assert [r.error.reason if r.error else r.record["caption"] for r in rows] == ["record_too_long", "ok"]
    assert peak < 2 * 2**20, f"reading held {peak} bytes"


def test_unclosed_quote_rejects_the_rest_of_the_file_as_one_record(tmp_path: Path) -> None:
    src = tmp_path / "list.csv"
    src.write_text(
        'url,caption\nhttp://example.com/0.jpg,"open\nhttp://example.com/1.jpg,b\n', encoding="utf-8"
    )
    out = tmp_path / "ingest"
    m = INGEST_STAGE.run(make_spec(tmp_path, src, "csv"), {}, out)
    assert m.samples_in == 1 and m.rejects == {"unclosed_quote": 1}
    assert contract.read_rejects(out).column("detail").to_pylist()[0].startswith("row 0 (line 2): ")


# --- values --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "row"),
    [(5, 5), (5.0, 5), ("12", 12), (" 7 ", 7), ("+3", 3), (b"42", 42), (Decimal("4"), 4), (0, 0)],
)
def test_row_id_accepts_whole_numbers(value: object, row: int) -> None:
    assert readers.row_id(value) == row


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (True, "not a number"),
        (False, "not a number"),
        (None, "not a number"),
        (1.9, "not a whole number"),
        (Decimal("1.5"), "not a whole number"),
        (math.inf, "not finite"),
        (math.nan, "not finite"),
        (Decimal("NaN"), "not finite"),
        (-1, "negative"),
        ("-2", "negative"),
        ("1.0", "not an integer"),
        ("1_000", "not an integer"),
        ("\u0663", "not an integer"),
        ([1], "not an integer"),
    ],
)
def test_row_id_refuses_what_is_not_a_whole_number(value: object, why: str) -> None:
    with pytest.raises(readers.BadRow, match=why) as bad:
        readers.row_id(value)
    assert bad.value.reason == "bad_row_id"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("a dog", "a dog"),
        (b"caf\xc3\xa9", "caf\u00e9"),
        (42, "42"),
        (None, None),
        ("\U0001f415", "\U0001f415"),
    ],
)
def test_text_field_values(value: object, text: str | None) -> None:
    assert readers.text_field({"c": value}, "c") == text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"caf\xe9", "bad_encoding"),
        ("a\x00dog", "nul_byte"),
        (b"a\x00dog", "nul_byte"),
        ("a \ud800 dog", "lone_surrogate"),
        ("\udc80", "lone_surrogate"),
        (["a", "dog"], "not_text"),
        ({"en": "a dog"}, "not_text"),
    ],
)
def test_text_field_rejects(value: object, reason: str) -> None:
    with pytest.raises(readers.BadRow) as bad:
        readers.text_field({"caption": value}, "caption")
    assert bad.value.reason == reason and "'caption'" in bad.value.detail


def test_json_escaped_and_raw_nul_get_the_same_reason(tmp_path: Path) -> None:
    src = tmp_path / "list.jsonl"
    src.write_bytes(
        b'{"url": "http://example.com/0.jpg", "caption": "a\\u0000b"}\n'
        b'{"url": "http://example.com/1.jpg", "caption": "a\x00b"}\n'
    )
    m = INGEST_STAGE.run(make_spec(tmp_path, src, "jsonl"), {}, tmp_path / "ingest")
    assert m.rejects == {"nul_byte": 2} and m.samples_out == 0


def test_binary_parquet_columns_are_decoded(tmp_path: Path) -> None:
    src = tmp_path / "list.parquet"
    table = pa.table(
        {
            "url": pa.array([u.encode() for u, _ in ROWS], pa.binary()),
            "caption": [c.encode() for _, c in ROWS],
        }
    )
    pq.write_table(table, src)
    out = tmp_path / "ingest"
    INGEST_STAGE.run(make_spec(tmp_path, src, "parquet"), {}, out)
    assert read_out(out) == expected_rows()


# --- whole-file failures: one line naming the file, a StageError (never retried) -----------------


def test_a_directory_is_a_stage_error(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    with pytest.raises(contract.StageError, match=r"lists is a directory; set dataset.url_list"):
        INGEST_STAGE.run(make_spec(tmp_path, tmp_path / "lists", "tsv"), {}, tmp_path / "ingest")


def test_corrupt_parquet_is_a_stage_error_naming_the_file(tmp_path: Path) -> None:
    src = tmp_path / "list.parquet"
    src.write_bytes(b"PAR1" + b"\x00" * 64)
    with pytest.raises(contract.StageError) as err:
        INGEST_STAGE.run(make_spec(tmp_path, src, "parquet"), {}, tmp_path / "ingest")
    assert str(src) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "ingest" / contract.MANIFEST).exists()


# --- hostile bytes -------------------------------------------------------------------------------

HOSTILE = [
    b'"',
    b",",
    b"\t",
    b"\n",
    b"\r",
    b"\x00",
    b"\xff",
    b"\xef\xbb\xbf",
    b"[",
    b"{",
    b"\\u0000",
    b"\\ud800",
    b"1e999",
]


def well_formed(fmt: str) -> bytes:
    """ROWS with an id column, as a well-formed file in `fmt`."""
    if fmt == "parquet":
        sink = io.BytesIO()
        pq.write_table(
            pa.table({"url": [u for u, _ in ROWS], "caption": [c for _, c in ROWS], "id": [0, 1, 2]}), sink
        )
        return sink.getvalue()
    if fmt == "jsonl":
        return "".join(
            json.dumps({"url": u, "caption": c, "id": i}) + "\n" for i, (u, c) in enumerate(ROWS)
        ).encode()
    sep = "\t" if fmt == "tsv" else ","
    return "".join(f"{u}{sep}{c}{sep}{i}\n" for i, (u, c) in enumerate([("url", "caption"), *ROWS])).encode()


def mutated(data: bytes, rng: random.Random) -> bytes:
    """`data` with a few hostile bytes inserted, bytes deleted or overwritten, or the tail cut."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        pos, op = rng.randrange(len(out) + 1), rng.random()
        if op < 0.5:
            out[pos:pos] = rng.choice(HOSTILE)
        elif op < 0.9:
            out[pos : pos + rng.randint(1, 4)] = bytes([rng.randrange(256)])
        else:
            del out[pos:]
    return bytes(out)


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl", "parquet"])
def test_mutated_files_end_in_rows_rejects_or_one_stage_error(tmp_path: Path, fmt: str) -> None:
    """No mutation of a good file kills ingest with anything but a one-line StageError, and what it
    accepts can be written (no surrogate or NUL slips through)."""
    rng = random.Random(f"ingest-{fmt}")
    src = tmp_path / f"list.{fmt}"
    spec = make_spec(tmp_path, src, fmt, dataset={"id_column": "id"})
    for _ in range(60):
        src.write_bytes(mutated(well_formed(fmt), rng))
        try:
            units = list(partition(spec))
        except contract.StageError as err:
            assert "\n" not in str(err) and str(src) in str(err)
            continue
        for rows, _ in units:
            pa.Table.from_pylist(rows, schema=SCHEMA)
