"""Object storage, end to end against a real S3-protocol server on 127.0.0.1 (moto's server mode),
through s3fs as a user runs it: the endpoint and the credentials come from the environment
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), nothing is patched.

A URL list and a text corpus are read from a bucket; the text shards are published by the
pipeline's post-stage hook and the image shards by `publish.publish_stage`, idempotently; the
training loader streams both back from the bucket. A workdir that is a URL, a missing bucket and
missing credentials are one-line errors."""

from __future__ import annotations

import gzip
import io
import json
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.parquet as pq
import pytest
import s3fs
import yaml
from moto.server import ThreadedMotoServer
from PIL import Image

from mvlp_core import contract, pipeline, plan, publish, storage
from mvlp_core.spec import SpecError, load_spec
from mvlp_core.stages import ingest
from mvlp_core.train import data, job

ROOT = Path(__file__).resolve().parents[2]
ROWS = [(f"http://example.com/{i}.jpg", f"a red circle number {i}") for i in range(25)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[fsspec.AbstractFileSystem]:
    """A moto S3 server on 127.0.0.1 and the environment a user would set to reach it; yields the
    s3fs filesystem that environment gives, with the buckets the tests use created."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    home = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        # nothing from the machine's own AWS set-up (profiles, files, instance metadata)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_CONFIG_FILE", str(home / "config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "credentials"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        s3fs.S3FileSystem.clear_instance_cache()
        fs = fsspec.filesystem("s3")
        for bucket in ("mvlp-in", "mvlp-out"):
            fs.mkdir(bucket)
        try:
            yield fs
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


def _spec(tmp_path: Path, **sections: Any):
    """A spec written as YAML and loaded as `mvlp` loads a user's."""
    raw = {
        "name": "objstore",
        "dataset": {"spec": {"name": "t", "url_list": "unused.tsv", "format": "tsv"}},
        "languages": ["de"],
        "translate": {"backend": "hf"},
        **sections,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_spec(path, workdir=tmp_path / "run")


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10 * i % 256, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _shard_stage(folder: Path, shards: int, per: int, fp: str = "fp-shard-1") -> contract.Manifest:
    """A shard stage's output, committed through the contract: `shards` tars of `per` records."""

    def process(unit: str) -> contract.UnitResult:
        name = f"shard-{unit}.tar"
        with tarfile.open(folder / name, "w") as tar:
            for i in range(per):
                key = f"cc3m-{int(unit) * per + i:09d}"
                record = {"key": key, "captions": {"en": f"a red circle {key}", "de": f"ein Kreis {key}"}}
                _add(tar, f"{key}.jpg", _jpeg(i))
                _add(tar, f"{key}.json", json.dumps(record).encode())
        return contract.UnitResult(files={name: per}, samples_in=per, samples_out=per)

    return contract.run_units("shard", folder, fp, [f"{i:05d}" for i in range(shards)], process, force=True)


def _samples(urls: list[str]) -> dict[str, dict[str, bytes]]:
    skips = data.Skips()
    out = {
        s["__key__"]: {k: v for k, v in s.items() if not k.startswith("__")}
        for s in data.raw_samples(urls, 0, 1, 0, 1, skips)
    }
    assert not skips.counts, skips.counts
    return out


def test_a_url_list_is_read_from_a_bucket(s3, tmp_path: Path) -> None:
    body = "url\tcaption\n" + "".join(f"{u}\t{c}\n" for u, c in ROWS) + f"{ROWS[0][0]}\tduplicate\n"
    with s3.open("mvlp-in/lists/urls.tsv.gz", "wb") as f:
        f.write(gzip.compress(body.encode()))
    spec = _spec(
        tmp_path,
        dataset={"spec": {"name": "t", "url_list": "s3://mvlp-in/lists/urls.tsv.gz", "format": "tsv"}},
        ingest={"shard_size": 10},
    )
    assert ingest.checks(spec) == []
    assert plan.size_of(spec.dataset.spec.url_list).endswith(" B")

    manifest = pipeline.run_stage(spec, "ingest")

    out = pipeline.stage_dir(spec, "ingest")
    rows = [r for p in sorted(out.glob("shard-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert [(r["url"], r["caption"]) for r in rows] == ROWS
    assert manifest.samples_in == len(ROWS) + 1 and manifest.rejects == {"duplicate": 1}
    assert manifest.extra["source"] == "s3://mvlp-in/lists/urls.tsv.gz"
    # the remote list's identity (size + ETag) is in the fingerprint: the same object is current
    assert pipeline.stage_state(spec, "ingest")["state"] == "complete"
    with s3.open("mvlp-in/lists/urls.tsv.gz", "wb") as f:
        f.write(gzip.compress(body.replace("number 3", "number three").encode()))
    state = pipeline.stage_state(spec, "ingest")
    assert state["state"] == "stale" and "source_id" in " ".join(state["stale_because"])


def test_a_text_corpus_is_read_from_a_bucket_and_its_shards_published(s3, tmp_path: Path) -> None:
    pairs = [(f"the house number {i}", f"das Haus Nummer {i}") for i in range(30)]
    for side, lang in enumerate(("en", "de")):
        with s3.open(f"mvlp-in/corpus/pairs.{lang}.gz", "wb") as f:
            f.write(gzip.compress("".join(p[side] + "\n" for p in pairs).encode()))
    corpus = {
        "name": "pc",
        "kind": "parallel",
        "format": "moses",
        "path": "s3://mvlp-in/corpus/pairs.{lang}.gz",
        "pairs": ["en-de"],
    }
    spec = _spec(
        tmp_path,
        text={"corpora": [corpus], "samples_per_shard": 12},
        publish={"text_shards": "s3://mvlp-out/text-test/text", "shards": "s3://mvlp-out/text-test/shards"},
        pretrain={"loader": {"read_from": "published"}},
    )
    assert pipeline.stage("text-shard").checks(spec) == []

    manifest = pipeline.run_stage(spec, "text-shard")  # reads the bucket, then the hook publishes

    assert manifest.samples_out == 30
    out = pipeline.stage_dir(spec, "text-shard")
    local = sorted(p.name for p in out.glob("text-*.tar"))
    assert len(local) == 3
    published = sorted(p.rsplit("/", 1)[1] for p in s3.ls("mvlp-out/text-test/text"))
    assert published == [contract.MANIFEST, *local]
    for name in local:
        assert s3.cat(f"mvlp-out/text-test/text/{name}") == (out / name).read_bytes()
    assert (
        json.loads(s3.cat(f"mvlp-out/text-test/text/{contract.MANIFEST}"))["fingerprint"]
        == manifest.fingerprint
    )
    assert publish.current(spec, "text-shard", out)

    # a current stage run again: nothing recomputed, nothing uploaded again
    again = publish.publish_stage(spec, "text-shard", out, pipeline.run_stage(spec, "text-shard"))
    assert again["uploaded"] == [] and len(again["skipped"]) == 4

    # the loader streams the text shards back from the bucket
    urls = job.shards_of(spec, out, "text-shard", "text-*.tar")
    assert urls == [f"s3://mvlp-out/text-test/text/{name}" for name in local]
    records = _samples(urls)
    assert sorted(json.loads(r["json"])["src"] for r in records.values()) == sorted(p[0] for p in pairs)


def test_shards_published_to_a_bucket_are_read_back_by_the_loader(s3, tmp_path: Path) -> None:
    prefix = "s3://mvlp-out/run1/shards"
    spec = _spec(tmp_path, publish={"shards": prefix}, pretrain={"loader": {"read_from": "published"}})
    folder = pipeline.stage_dir(spec, "shard")
    manifest = _shard_stage(folder, shards=3, per=4)

    done = publish.publish_stage(spec, "shard", folder, manifest)

    tars = sorted(manifest.files)
    assert done == {"prefix": prefix, "uploaded": [*tars, contract.MANIFEST], "skipped": []}
    urls = job.shards_of(spec, folder, "shard", "shard-*.tar")
    assert urls == [f"{prefix}/{name}" for name in tars]
    remote, local = _samples(urls), _samples([str(folder / name) for name in tars])
    assert len(remote) == 12 and remote == local  # every key, its jpg and json bytes
    # the tokenizer corpus the driver reads before training streams from the bucket too
    assert sorted(job._texts(urls)) == sorted(job._texts([str(folder / n) for n in tars]))
    # and the batches a rank trains on
    cfg = data.LoaderConfig(urls, [], spec.pretrain.mix, spec.languages, 4, 1, 0)
    stream = data.examples(cfg, lambda img: img.size, 0, 1, data.Skips())
    assert {next(stream).image for _ in range(12)} == {(8, 8)}

    # idempotent: what is there is skipped, with the record and without it (by the MD5 ETag) ...
    assert publish.publish_stage(spec, "shard", folder, manifest)["uploaded"] == []
    (folder / publish.RECORD).unlink()
    assert publish.publish_stage(spec, "shard", folder, manifest)["uploaded"] == []
    # ... and an object that differs is uploaded again (alone: the manifest there is this one)
    s3.pipe(f"mvlp-out/run1/shards/{tars[1]}", b"x" * (folder / tars[1]).stat().st_size)
    assert publish.publish_stage(spec, "shard", folder, manifest)["uploaded"] == [tars[1]]
    assert _samples(urls) == local
    # new output of the stage replaces what the prefix holds, its manifest included
    manifest = _shard_stage(folder, shards=2, per=5, fp="fp-shard-2")
    done = publish.publish_stage(spec, "shard", folder, manifest)
    assert done["uploaded"] == [*sorted(manifest.files), contract.MANIFEST]
    urls = job.shards_of(spec, folder, "shard", "shard-*.tar")
    assert len(urls) == 2 and _samples(urls) == _samples([str(folder / n) for n in sorted(manifest.files)])


def test_the_loader_refuses_a_prefix_without_this_runs_shards(s3, tmp_path: Path) -> None:
    published = {"shards": "s3://mvlp-out/never/shards"}
    spec = _spec(tmp_path, publish=published, pretrain={"loader": {"read_from": "published"}})
    folder = pipeline.stage_dir(spec, "shard")
    _shard_stage(folder, shards=1, per=2)
    with pytest.raises(contract.StageError, match="holds no _manifest.json, not the output in the workdir"):
        job.shards_of(spec, folder, "shard", "shard-*.tar")
    # read_from: workdir (the default) reads the folder whatever is published
    local = _spec(tmp_path, publish=published)
    assert job.shards_of(local, folder, "shard", "shard-*.tar") == [str(folder / "shard-00000.tar")]


def test_a_missing_bucket_or_missing_credentials_is_one_line(s3, tmp_path: Path, monkeypatch) -> None:
    spec = _spec(
        tmp_path, dataset={"spec": {"name": "t", "url_list": "s3://no-such-bucket/urls.tsv", "format": "tsv"}}
    )
    (line,) = ingest.checks(spec)
    assert "bucket no-such-bucket does not exist" in line and "\n" not in line
    with pytest.raises(contract.StageError, match="bucket no-such-bucket does not exist"):
        pipeline.run_stage(spec, "ingest")
    s3.pipe("mvlp-in/creds/urls.tsv", b"url\tcaption\nhttp://example.com/a.jpg\ta cat\n")
    spec = _spec(
        tmp_path, dataset={"spec": {"name": "t", "url_list": "s3://mvlp-in/creds/urls.tsv", "format": "tsv"}}
    )
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        (line,) = ingest.checks(spec)
        assert "no usable credentials" in line and "AWS_SECRET_ACCESS_KEY" in line and "\n" not in line
        with pytest.raises(contract.StageError, match="no usable credentials"):
            pipeline.run_stage(spec, "ingest")
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def test_publish_takes_an_object_store_prefix_only(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"publish.shards: .*s3://BUCKET/PREFIX or gs://BUCKET/PREFIX"):
        _spec(tmp_path, publish={"shards": str(tmp_path / "out")})
    with pytest.raises(SpecError, match="read_from is 'published' but publish.shards is not set"):
        _spec(tmp_path, pretrain={"loader": {"read_from": "published"}})
    spec = _spec(tmp_path, publish={"shards": "gs://bucket/run/", "text_shards": "s3://b/t"})
    assert (spec.publish.shards, publish.target(spec, "text-shard")) == ("gs://bucket/run", "s3://b/t")
    assert publish.target(spec, "ingest") is None


@pytest.mark.parametrize("url", ["s3://bucket/run", "gs://bucket/run"])
def test_a_workdir_in_object_storage_is_a_one_line_error(tmp_path: Path, url: str) -> None:
    rule = "the workdir must be a POSIX path (a local folder, or a volume shared by every node on a cluster)"
    for workdir in (url, Path(url)):  # Path("s3://b/x") is "s3:/b/x", still refused
        with pytest.raises(SpecError, match=r"^--workdir: the workdir must be a POSIX path") as err:
            load_spec("demo", workdir=workdir)
        assert url in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SpecError, match=r"workdir: the workdir must be a POSIX path"):
        _spec(tmp_path, workdir=url)
    res = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "demo", "--workdir", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and rule in lines[0], res.stderr[-2000:]
    assert "object storage is for inputs" in lines[0] and url in lines[0]
    assert storage.workdir_problem(tmp_path) is None


@pytest.mark.slow  # a Ray Train run of 2 workers checkpointing to the bucket: ~40 s on 2 cores
def test_pretraining_checkpoints_to_a_bucket_and_the_stage_fetches_the_final_one(s3, tmp_path: Path) -> None:
    """`pretrain.storage_path: s3://...`: Ray Train writes the checkpoints to the bucket, and the
    stage fetches the final one next to itself (Ray gives its path without the scheme)."""
    import ray

    from mvlp_core.model import load_model
    from ray_jobs.engines import run_stage
    from tests.integration.test_pretrain_ray import make_spec, write_inputs

    if ray.is_initialized():  # an earlier test's Ray: its workers lack this server's environment
        ray.shutdown()
    spec = make_spec(tmp_path, "pretrain.max_steps=3", "pretrain.storage_path=s3://mvlp-out/ray")
    write_inputs(spec)
    try:
        manifest = run_stage(spec, "pretrain")
    finally:
        ray.shutdown()
    assert s3.exists("mvlp-out/ray/pretrain/checkpoint_00000003/train_state.pt")
    assert manifest.extra["step"] == 3 and manifest.extra["checkpoint"].endswith("final-checkpoint")
    assert load_model(tmp_path / "pretrain" / "final") is not None
