"""The text-shard stage end to end: the synthetic world's corpora (every reject reason planted),
resume after a simulated kill, reproducible tars, fingerprints, no corpora, and real Multi30K as a
Moses-style parallel corpus."""

from __future__ import annotations

import gzip
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from testkit.text_specs import MULTI30K, multi30k_corpus, text_spec

from mvlp_core import contract, pipeline
from mvlp_core.sampling import sampling_weights
from mvlp_core.spec import load_spec
from mvlp_core.synth.text import write_text_corpora

RECORD_FIELDS = {"key", "kind", "src_lang", "src", "tgt_lang", "tgt", "score", "corpus"}


def read_tars(folder: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for path in sorted(folder.glob("text-*.tar")):
        with tarfile.open(path) as tar:
            names = tar.getnames()
            assert names == sorted(names), path  # rows in order within a tar
            for m in tar:
                key, ext = m.name.split(".", 1)
                assert ext == "json" and key not in out
                out[key] = json.loads(tar.extractfile(m).read())
    return out


def tar_hashes(folder: Path) -> dict[str, str]:
    from mvlp_core.atomic import sha256_file

    return {p.name: sha256_file(p) for p in sorted(folder.glob("text-*.tar"))}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple:
    workdir = tmp_path_factory.mktemp("textdemo")
    info = {"text": write_text_corpora(workdir / "world", seed=0)}  # the world's text/ part alone
    spec = load_spec("demo", workdir=workdir)
    manifest = pipeline.run_stage(spec, "text-shard")
    return spec, info, manifest


def test_every_line_of_the_world_corpora_is_output_or_rejected_with_its_planted_reason(demo) -> None:
    spec, info, manifest = demo
    text = info["text"]
    files = [*text["parallel"].values(), *text["mono"].values()]
    planted: dict[str, int] = {}
    for f in files:
        for reason, n in f["planted"].items():
            planted[reason] = planted.get(reason, 0) + n
    assert manifest.rejects == planted
    assert set(planted) == {
        "below_min_score",
        "duplicate",
        "empty",
        "encoding_error",
        "identical_sides",
        "length_ratio",
        "malformed_line",
        "too_long",
        "too_short",
    }
    assert manifest.samples_in == sum(f["lines"] for f in files)
    assert manifest.samples_out == sum(f["good"] for f in files)

    out_dir = pipeline.stage_dir(spec, "text-shard")
    records = read_tars(out_dir)
    rejects = pq.read_table(out_dir / contract.REJECTS).to_pylist()
    assert len(records) == manifest.samples_out
    expected = {
        f"wikimatrix-{p.replace('-', '')}-{row:010d}"
        for p, f in text["parallel"].items()
        for row in range(f["lines"])
    }
    expected |= {f"mono-{lang}-{row:010d}" for lang, f in text["mono"].items() for row in range(f["lines"])}
    assert sorted([*records, *(r["key"] for r in rejects)]) == sorted(expected)
    for key, rec in records.items():
        assert set(rec) == RECORD_FIELDS and rec["key"] == key and "." not in key
        if rec["kind"] == "parallel":
            assert rec["corpus"] == "wikimatrix" and rec["src_lang"] == "en" and rec["score"] >= 1.04
            assert rec["src"] and rec["tgt"] and rec["src"] != rec["tgt"]
        else:
            assert rec["corpus"] == "mono" and rec["tgt"] is rec["tgt_lang"] is rec["score"] is None
            assert not rec["src"].startswith("\ufeff")  # the fr file's BOM is gone


def test_records_are_the_file_lines(demo) -> None:
    spec, _, _ = demo
    lines = gzip.decompress((Path(spec.workdir) / "world/text/wikimatrix.en-ja.tsv.gz").read_bytes()).split(
        b"\n"
    )
    records = read_tars(pipeline.stage_dir(spec, "text-shard"))
    ja = {k: r for k, r in records.items() if k.startswith("wikimatrix-enja-")}
    assert len(ja) > 40
    for key, rec in ja.items():
        score, en, xx = lines[int(key.rsplit("-", 1)[1])].decode().split("\t")
        assert (float(score), en, xx) == (rec["score"], rec["src"], rec["tgt"])


def test_manifest_has_counts_and_sampling_weights(demo) -> None:
    spec, info, manifest = demo
    counts, weights = manifest.extra["counts"], manifest.extra["sampling_weights"]
    assert counts["mono"] == {lang: f["good"] for lang, f in sorted(info["text"]["mono"].items())}
    assert counts["parallel"] == {pair: f["good"] for pair, f in sorted(info["text"]["parallel"].items())}
    assert weights["mono"] == sampling_weights(counts["mono"], 0.3)
    assert weights["parallel"] == sampling_weights(counts["parallel"], 0.3)
    assert weights["mono"]["zh"] > counts["mono"]["zh"] / sum(counts["mono"].values())  # up-sampled
    streams = counts["streams"]
    assert streams["wikimatrix:en-de"]["shards"] == ["text-00000.tar", "text-00003.tar"]  # 131 lines / 40
    assert sum(s["in"] for s in streams.values()) == manifest.samples_in
    state = pipeline.stage_state(spec, "text-shard")
    assert state["state"] == "complete" and state["sampling_weights"] == weights


def test_resume_after_a_lost_unit_gives_identical_tars(demo) -> None:
    spec, _, manifest = demo
    out_dir = pipeline.stage_dir(spec, "text-shard")
    before = tar_hashes(out_dir)
    assert len(before) == manifest.units > 5
    # a kill after unit 00001 and before the manifest: its tar, record and dedup hashes are gone;
    # unit 00002 (same stream) must still see 00000's and 00001's hashes as they were
    for name in ("_manifest.json", "_units/00001.json", "_units/00001.dedup.npy", "text-00001.tar"):
        (out_dir / name).unlink()
    (out_dir / "_units/00002.json").unlink()
    (out_dir / "text-00002.tar").unlink()
    done = []
    again = pipeline.run_stage(spec, "text-shard", progress=lambda d, t, u: done.append(u))
    assert [u for u in done if u] == ["00001", "00002"]  # only the lost units ran
    assert tar_hashes(out_dir) == before
    assert (again.samples_in, again.samples_out, again.rejects) == (
        manifest.samples_in,
        manifest.samples_out,
        manifest.rejects,
    )
    forced = pipeline.run_stage(spec, "text-shard", force=True)
    assert tar_hashes(out_dir) == before and forced.files == manifest.files


def test_changed_corpus_file_makes_the_stage_stale(demo, tmp_path: Path) -> None:
    shutil.copytree(Path(demo[0].workdir) / "world" / "text", tmp_path / "world" / "text")
    spec = load_spec("demo", workdir=tmp_path)
    pipeline.run_stage(spec, "text-shard")
    assert pipeline.stage_state(spec, "text-shard")["state"] == "complete"
    path = tmp_path / "world/text/mono.cs.txt"
    path.write_bytes(path.read_bytes() + "Nová věta na konci.\n".encode())
    assert pipeline.stage_state(spec, "text-shard")["state"] == "stale"
    rerun = pipeline.run_stage(spec, "text-shard")
    assert rerun.extra["counts"]["mono"]["cs"] == 51


def test_no_corpora_writes_an_empty_manifest(tmp_path: Path) -> None:
    spec = load_spec("demo", ["text.corpora=[]"], workdir=tmp_path)
    assert spec.text.corpora == []
    manifest = pipeline.run_stage(spec, "text-shard")
    assert (manifest.samples_in, manifest.samples_out, manifest.units, manifest.files) == (0, 0, 0, {})
    assert manifest.extra["sampling_weights"] == {"mono": {}, "parallel": {}}
    assert pipeline.stage_state(spec, "text-shard")["state"] == "complete"


@pytest.mark.skipif(MULTI30K is None, reason="../shared/data/multi30k not present")
def test_multi30k_as_a_moses_parallel_corpus(tmp_path: Path) -> None:
    limit = 3000
    corpus = multi30k_corpus(min_words=4, max_words=25, max_length_ratio=1.8, limit=limit)
    spec = text_spec(tmp_path, {"samples_per_shard": 1000, "corpora": [corpus]})
    manifest = pipeline.run_stage(spec, "text-shard")
    assert manifest.samples_in == limit and manifest.units == 3
    assert manifest.samples_in == manifest.samples_out + sum(manifest.rejects.values())
    assert set(manifest.rejects) <= {"too_short", "too_long", "length_ratio", "duplicate"}
    assert 0 < sum(manifest.rejects.values()) < limit // 10  # human translations: few rejects
    en = gzip.decompress((MULTI30K / "train.en.gz").read_bytes()).decode().split("\n")[:limit]
    de = gzip.decompress((MULTI30K / "train.de.gz").read_bytes()).decode().split("\n")[:limit]
    records = read_tars(tmp_path / "text-shard")
    assert len(records) == manifest.samples_out
    for key, rec in records.items():
        row = int(key.rsplit("-", 1)[1])
        assert (rec["src"], rec["tgt"]) == (" ".join(en[row].split()), " ".join(de[row].split()))
        assert rec["src_lang"] == "en" and rec["tgt_lang"] == "de" and rec["score"] is None
    rejects = pq.read_table(tmp_path / "text-shard" / contract.REJECTS).to_pylist()
    assert sorted([*records, *(r["key"] for r in rejects)]) == [
        f"multi30k-ende-{i:010d}" for i in range(limit)
    ]
    for r in rejects:  # each reject is true of its line
        row = int(r["key"].rsplit("-", 1)[1])
        n_en, n_de = len(en[row].split()), len(de[row].split())
        if r["reason"] == "too_short":
            assert min(n_en, n_de) < 4
        elif r["reason"] == "too_long":
            assert max(n_en, n_de) > 25
        elif r["reason"] == "length_ratio":
            assert max(n_en, n_de) / min(n_en, n_de) > 1.8
    assert manifest.extra["counts"]["parallel"] == {"en-de": manifest.samples_out}
    assert manifest.extra["sampling_weights"]["parallel"] == {"en-de": 1.0}


def test_duplicates_across_units_are_found_and_survive_resume(tmp_path: Path) -> None:
    (tmp_path / "mono.de.txt").write_text("a b\nc d\nA b!\ne f\nc d\na b\n")
    corpus = {
        "name": "m",
        "kind": "monolingual",
        "format": "lines",
        "path": str(tmp_path / "mono.{lang}.txt"),
        "languages": ["de"],
        "dedup": "normalised",
    }
    spec = text_spec(tmp_path, {"samples_per_shard": 2, "corpora": [corpus]})
    out_dir = tmp_path / "text-shard"
    first = pipeline.run_stage(spec, "text-shard")
    assert first.files["text-00000.tar"]["samples"] == 2
    assert first.files["text-00001.tar"]["samples"] == 1 and first.files["text-00002.tar"]["samples"] == 0
    assert sorted(read_tars(out_dir)) == ["m-de-0000000000", "m-de-0000000001", "m-de-0000000003"]
    rejects = pq.read_table(out_dir / contract.REJECTS).to_pylist()
    assert [(r["key"], r["reason"]) for r in rejects] == [
        ("m-de-0000000002", "duplicate"),
        ("m-de-0000000004", "duplicate"),
        ("m-de-0000000005", "duplicate"),
    ]
    before = tar_hashes(out_dir)
    for name in (
        "_manifest.json",
        "_units/00001.json",
        "_units/00001.dedup.npy",
        "text-00001.tar",
        "_units/00002.json",
    ):
        (out_dir / name).unlink()
    pipeline.run_stage(spec, "text-shard")
    assert tar_hashes(out_dir) == before
    # hashes of a finished unit lost: the stage cannot decide duplicates and says how to recover
    for name in ("_manifest.json", "_units/00000.dedup.npy", "_units/00002.json"):
        (out_dir / name).unlink()
    with pytest.raises(contract.StageError, match="dedup hashes of unit 00000 are missing.*--force"):
        pipeline.run_stage(spec, "text-shard")
    assert pipeline.run_stage(spec, "text-shard", force=True).samples_out == 3
