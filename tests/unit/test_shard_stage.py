"""The shard stage joins upstream outputs one download shard at a time: each unit's records carry
the captions, alignments and QA of its own keys, tars are cut per unit, and an image whose bytes
repeat an earlier one's is a `duplicate_image` reject naming the key that kept it."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import pyarrow.parquet as pq
import pytest
from PIL import Image
from testkit.tars import add_member

from mvlp_core import contract
from mvlp_core.cpus import available_cpus
from mvlp_core.spec import load_spec
from mvlp_core.stages.download import SAMPLES_SCHEMA
from mvlp_core.stages.shard import STAGE as SHARD
from mvlp_core.stages.shard import _link_rows

PER_UNIT = 5


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, "JPEG")
    return out.getvalue()


def _manifest(folder: Path, stage: str, extra: dict) -> None:
    contract.Manifest(stage, "fp", {}, 0, 0, {}, 0.0, 0, extra).save(folder)


def _world(tmp_path: Path, units: int, same_as: dict[int, int], shuffled: bool = False) -> dict[str, Path]:
    """`units` download shards of PER_UNIT images; image i's bytes are image same_as[i]'s. The
    alignment file holds the keys in order, or `shuffled` (row groups then span every unit)."""
    inputs = {name: tmp_path / name for name in ("download", "translate", "align", "qa")}
    for folder in inputs.values():
        (folder / "webdataset").mkdir(parents=True)
    align_rows = []
    for u in range(units):
        unit = f"{u:05d}"
        samples, wds, translations, qa = [], [], [], []
        with tarfile.open(inputs["download"] / "webdataset" / f"{unit}.tar", "w") as tar:
            for j in range(PER_UNIT):
                i = u * PER_UNIT + j
                key, jpg = f"cc3m-{i:09d}", _jpeg(((same_as.get(i, i) * 40) % 256, 0, 0))
                info = tarfile.TarInfo(f"{j:04d}.jpg")
                info.size = len(jpg)
                tar.addfile(info, io.BytesIO(jpg))
                samples.append(
                    {
                        "key": key,
                        "row": i,
                        "url": f"http://x/{i}.jpg",
                        "caption": f"caption {i}",
                        "tar": f"webdataset/{unit}.tar",
                        "member": f"{j:04d}.jpg",
                        "width": 8,
                        "height": 8,
                    }
                )
                wds.append({"mvlp_key": key, "status": "success", "sha256": hashlib.sha256(jpg).hexdigest()})
                translations.append(
                    {"key": key, "lang": "de", "text": f"Bildunterschrift {i}", "provenance": "import:x"}
                )
                qa.append({"key": key, "question": f"q{i}?", "answer": f"a{i}", "generator": "rules"})
                align_rows.append(
                    {
                        "key": key,
                        "words_en": ["caption", str(i)],
                        "words": ["Bildunterschrift", str(i)],
                        "links": [[0, 0], [1, 1]],
                    }
                )
        pq.write_table(
            pa.Table.from_pylist(samples, schema=SAMPLES_SCHEMA),
            inputs["download"] / f"samples-{unit}.parquet",
        )
        pq.write_table(pa.Table.from_pylist(wds), inputs["download"] / "webdataset" / f"{unit}.parquet")
        pq.write_table(pa.Table.from_pylist(translations), inputs["translate"] / f"{unit}.parquet")
        pq.write_table(pa.Table.from_pylist(qa), inputs["qa"] / f"{unit}.parquet")
    # one alignment file cut into row groups of 4 keys: each unit reads the groups of its key range
    if shuffled:
        random.Random(0).shuffle(align_rows)
    pq.write_table(pa.Table.from_pylist(align_rows), inputs["align"] / "de-00000.parquet", row_group_size=4)
    _manifest(inputs["download"], "download", {})
    _manifest(
        inputs["translate"],
        "translate",
        {"per_language": {"de": 5 * units}, "provenance": {"de": "import:x"}},
    )
    _manifest(inputs["align"], "align", {"provenance": "eflomal:model3"})
    _manifest(inputs["qa"], "qa", {"generator": "rules"})
    return inputs


def _records(folder: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(folder.glob("shard-*.tar")):
        with tarfile.open(path) as tar:
            for m in tar:
                if m.name.endswith(".json"):
                    out[m.name[:-5]] = json.loads(tar.extractfile(m).read())
    return out


def test_each_unit_joins_its_own_keys_into_its_own_tars(tmp_path):
    inputs = _world(tmp_path, units=3, same_as={})
    spec = load_spec("demo", ["languages=[de]", "shard.samples_per_shard=2"])
    manifest = SHARD.run(spec, inputs, tmp_path / "shard")
    assert sorted(p.name for p in (tmp_path / "shard").glob("*.tar")) == [
        f"shard-{u:05d}-{n:03d}.tar" for u in range(3) for n in range(3)
    ]  # 5 keys a unit, 2 a tar
    records = _records(tmp_path / "shard")
    assert len(records) == 15 and manifest.samples_out == 15 and manifest.extra["shards"] == 9
    for i in range(15):
        r = records[f"cc3m-{i:09d}"]
        assert r["captions"] == {"en": f"caption {i}", "de": f"Bildunterschrift {i}"}
        assert r["words"]["de"] == ["Bildunterschrift", str(i)] and r["alignments"]["de"] == [[0, 0], [1, 1]]
        assert r["qa"] == [{"question": f"q{i}?", "answer": f"a{i}", "generator": "rules"}]
    assert manifest.extra["provenance"] == {"translate": "import:x", "align": "eflomal:model3", "qa": "rules"}
    for name, info in manifest.files.items():  # hashed while written: the bytes on disk
        assert info["sha256"] == hashlib.sha256((tmp_path / "shard" / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("shuffled", [False, True])
def test_alignments_join_from_sorted_or_unsorted_row_groups_holding_other_keys(tmp_path, shuffled):
    """A unit takes its keys' alignment rows whether the file's row groups are in key order (the
    align stage's: a slice) or not (a filter), and never another key's: here key 2's alignment
    row stays in the file (between unit 0's first and last keys) while key 2 left the download
    stage's samples, and key 6's alignment row is missing."""
    inputs = _world(tmp_path, units=2, same_as={}, shuffled=shuffled)
    path = inputs["download"] / "samples-00000.parquet"
    rows = [r for r in pq.read_table(path).to_pylist() if r["key"] != "cc3m-000000002"]
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA), path)
    align = inputs["align"] / "de-00000.parquet"
    table = pq.read_table(align)
    pq.write_table(
        table.filter(pa.compute.not_equal(table["key"], "cc3m-000000006")), align, row_group_size=4
    )
    SHARD.run(load_spec("demo", ["languages=[de]"]), inputs, tmp_path / "shard")
    records = _records(tmp_path / "shard")
    assert sorted(records) == [f"cc3m-{i:09d}" for i in range(10) if i != 2]
    for key, r in records.items():
        i = int(key[-9:])
        if i == 6:
            assert r["words"] == {} and r["alignments"] == {}
        else:
            assert r["words"] == {"en": ["caption", str(i)], "de": ["Bildunterschrift", str(i)]}
            assert r["alignments"] == {"de": [[0, 0], [1, 1]]}


def test_an_image_seen_before_is_a_duplicate_image_reject(tmp_path):
    # image 7 (unit 1) repeats image 2 (unit 0); images 13 and 14 (unit 2) repeat image 11
    inputs = _world(tmp_path, units=3, same_as={7: 2, 13: 11, 14: 11})
    manifest = SHARD.run(load_spec("demo", ["languages=[de]"]), inputs, tmp_path / "shard")
    assert manifest.samples_in == 15 and manifest.samples_out == 12
    assert manifest.rejects == {"duplicate_image": 3}
    rejects = contract.read_rejects(tmp_path / "shard").to_pylist()
    assert {(r["key"], r["detail"]) for r in rejects} == {
        ("cc3m-000000007", "same sha256 as cc3m-000000002"),
        ("cc3m-000000013", "same sha256 as cc3m-000000011"),
        ("cc3m-000000014", "same sha256 as cc3m-000000011"),
    }
    kept = _records(tmp_path / "shard")
    assert "cc3m-000000002" in kept and "cc3m-000000011" in kept and "cc3m-000000007" not in kept


def test_image_size_from_the_download_stage_else_the_jpeg_and_missing_bytes_are_rejects(tmp_path):
    inputs = _world(tmp_path, units=1, same_as={})
    path = inputs["download"] / "samples-00000.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[0].update(width=None, height=None)  # not recorded: read from the JPEG's header (8 x 8)
    rows[1].update(width=640, height=480)  # recorded: taken as the download stage wrote it
    rows[2]["member"] = "9999.jpg"  # not in the tar
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA), path)
    manifest = SHARD.run(load_spec("demo", ["languages=[de]"]), inputs, tmp_path / "shard")
    assert manifest.samples_out == 4 and manifest.rejects == {"image_decode_error": 1}
    rejects = contract.read_rejects(tmp_path / "shard").to_pylist()
    assert [(r["key"], r["detail"]) for r in rejects] == [
        ("cc3m-000000002", "no image bytes in the download tar")
    ]
    records = _records(tmp_path / "shard")
    assert records["cc3m-000000000"]["image"] | {"sha256": ""} == {"width": 8, "height": 8, "sha256": ""}
    assert (records["cc3m-000000001"]["image"]["width"], records["cc3m-000000001"]["image"]["height"]) == (
        640,
        480,
    )


def test_shard_tars_are_what_tarfile_reads_and_writes(tmp_path):
    """The stage writes its tars without tarfile: they read back member for member, and are the
    bytes tarfile itself writes for the same members (so outputs stay byte-identical)."""
    inputs = _world(tmp_path, units=1, same_as={})
    SHARD.run(load_spec("demo", ["languages=[de]"]), inputs, tmp_path / "shard")
    (path,) = sorted((tmp_path / "shard").glob("shard-*.tar"))
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    assert [n for n, _ in members][:2] == ["cc3m-000000000.jpg", "cc3m-000000000.json"] and len(members) == 10
    again = io.BytesIO()
    with tarfile.open(fileobj=again, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            add_member(tar, name, data)
    assert path.read_bytes() == again.getvalue()


@pytest.mark.parametrize(
    "rows, as_arrays",
    [
        ([[[0, 0], [1, 2]], [], [[3, 4], [5, 5], [6, 7]]], True),
        ([[[0, 0]], [[1, 2, 3]]], False),  # not a pair: Python lists
        ([[[0, 0]], None, []], False),  # a null row stays null
        ([[]], True),
    ],
)
def test_link_rows_write_the_json_their_lists_write(rows, as_arrays):
    """Alignment links turned into per-row int32 arrays serialise to the bytes the Python lists
    do, from whole, chunked and sliced columns; other shapes stay Python lists."""
    whole = pa.array(rows, pa.list_(pa.list_(pa.int32())))
    padded = pa.array([[[9, 9]], *rows, [[8, 8]]], pa.list_(pa.list_(pa.int32())))
    columns = [
        pa.chunked_array([whole]),
        pa.chunked_array([whole[:1], whole[1:]]),
        pa.chunked_array([padded.slice(1, len(rows))]),  # offsets that start past 0
    ]
    for column in columns:
        out = _link_rows(column)
        assert orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY) == orjson.dumps(rows)
        assert all(isinstance(r, np.ndarray) for r in out) == as_arrays


def test_units_written_by_worker_processes_are_the_same_bytes(tmp_path):
    """shard.processes=2 writes the tars and manifest entries one process writes."""
    inputs = _world(tmp_path, units=3, same_as={7: 2})
    outs = {}
    for n in (1, 2):
        spec = load_spec("demo", ["languages=[de]", "shard.samples_per_shard=2", f"shard.processes={n}"])
        outs[n] = SHARD.run(spec, inputs, tmp_path / f"shard-{n}")
    assert outs[2].files == outs[1].files and len(outs[1].files) == 8
    assert outs[2].rejects == outs[1].rejects == {"duplicate_image": 1}
    for name in outs[1].files:
        assert (tmp_path / "shard-2" / name).read_bytes() == (tmp_path / "shard-1" / name).read_bytes()


def test_the_plan_says_where_units_run():
    """`mvlp plan`'s line for the stage: this process, N workers, or one a CPU (the default)."""

    def needs(value: str) -> str:
        return SHARD.needs(load_spec("demo", [f"shard.processes={value}"])).resources

    assert needs("1").startswith("this process;") and needs("4").startswith("4 worker processes;")
    assert needs("null").startswith(
        f"a worker process per CPU this process may use ({available_cpus()} here)"
    )
