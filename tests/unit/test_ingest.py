"""ingest: URL lists in every format -> keyed parquet shards; every row ends in a shard or a reject."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mvlp_core import contract, keys
from mvlp_core.spec import load_spec
from mvlp_core.stages.ingest import SCHEMA
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
    assert any(d.startswith("row 2:") for d in details)
    assert any(d.startswith("row 3:") for d in details)

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
