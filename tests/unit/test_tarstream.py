"""mvlp_core/tarstream.py reads what webdataset reads, grouped the same way: the same samples, in
the same order, from tars written by tarfile in every format (ustar, GNU long names, pax), with
directories, links and metadata members skipped; a corrupt or cut-short shard is an error the
loader's handler counts, never a silent short read."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from pathlib import Path

import pytest
import webdataset as wds
from testkit.tars import add_member

from mvlp_core import tarstream
from mvlp_core.tarmember import TarWriter
from mvlp_core.train.data import Skips, tar_samples


def write_tar(path: Path, members: list[tuple[str, bytes]], fmt: int, mode: str = "w") -> None:
    """`members` in tar format `fmt`, after a directory and before a symlink (both to be skipped)."""
    with tarfile.open(path, mode, format=fmt) as tar:
        d = tarfile.TarInfo("folder")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = members[0][0]
        tar.addfile(link)


MEMBERS = [
    ("a-000.jpg", b"\xff\xd8 jpeg bytes"),
    ("a-000.json", b'{"key": "a-000"}'),
    ("__meta__", b"skipped by both"),
    ("b-001.JPG", b"upper-case extension" * 40),
    ("b-001.json", b"{}"),
    ("deep/" + "x" * 120 + "/c-002.jpg", bytes(range(256)) * 3),  # longer than ustar's 100 bytes
    ("deep/" + "x" * 120 + "/c-002.txt", "caption: ünïcödé".encode()),
    ("d-003.seg.png", b""),  # empty member, extension with a dot
]


def webdataset_samples(url: str) -> list[dict]:
    pipeline = wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples())
    return [{k: v for k, v in s.items() if k != "__local_path__"} for s in pipeline]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_same_samples_as_webdataset(tmp_path: Path, fmt: int) -> None:
    members = MEMBERS if fmt != tarfile.USTAR_FORMAT else [(n, d) for n, d in MEMBERS if len(n) < 100]
    url = str(tmp_path / "shard-00000.tar")
    write_tar(Path(url), members, fmt)
    ours = list(tar_samples([url], Skips().handler))
    assert ours == webdataset_samples(url)
    assert [s["__key__"] for s in ours][:2] == ["a-000", "b-001"] and "jpg" in ours[1]


def test_gzipped_shards_are_read_too(tmp_path: Path) -> None:
    url = str(tmp_path / "shard-00000.tar.gz")
    write_tar(Path(url), MEMBERS, tarfile.PAX_FORMAT, mode="w:gz")
    assert list(tar_samples([url], Skips().handler)) == webdataset_samples(url)


def test_corrupt_and_truncated_shards_are_counted_and_the_next_shard_read(tmp_path: Path) -> None:
    good, bad, short = (str(tmp_path / f"shard-{i:05d}.tar") for i in range(3))
    for url in (good, bad, short):
        write_tar(Path(url), MEMBERS, tarfile.PAX_FORMAT)
    with tarfile.open(good) as tar:
        offsets = {m.name: (m.offset, m.offset_data) for m in tar.getmembers()}
    raw = bytearray(Path(bad).read_bytes())
    raw[offsets["b-001.json"][0] + 3] ^= 0xFF  # in its header's name: the checksum no longer adds up
    Path(bad).write_bytes(bytes(raw))
    cut = offsets["b-001.JPG"][1] + 100  # inside that member's data
    Path(short).write_bytes(Path(short).read_bytes()[:cut])
    skips = Skips()
    keys = [s["__key__"] for s in tar_samples([bad, short, good], skips.handler)]
    assert skips.counts["tar_read_error"] == 2
    expected = [s["__key__"] for s in webdataset_samples(good)]
    assert keys == ["a-000", "b-001", "a-000", *expected]  # what was read before each fault stays
    with open(bad, "rb") as stream, pytest.raises(tarfile.ReadError, match="checksum"):
        list(tarstream.members(stream))
    with open(short, "rb") as stream, pytest.raises(tarfile.ReadError, match="unexpected end"):
        list(tarstream.members(stream))


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_a_tar_in_memory_reads_as_the_stream_does(tmp_path: Path, fmt: int) -> None:
    """members_in (a whole tar held in memory, members as views of it) gives what members gives
    reading the file (pax and GNU long names, empty members), and the same errors."""
    members = MEMBERS if fmt != tarfile.USTAR_FORMAT else [(n, d) for n, d in MEMBERS if len(n) < 100]
    path = tmp_path / "shard-00000.tar"
    write_tar(path, members, fmt)
    with open(path, "rb") as stream:
        expected = list(tarstream.members(stream))
    read = list(tarstream.members_in(path.read_bytes()))
    assert all(isinstance(data, memoryview) for _, data in read)
    assert [(name, bytes(data)) for name, data in read] == expected
    assert [name for name, _ in read] == [name for name, _ in members]  # the folder and link skipped
    raw = bytearray(path.read_bytes())
    raw[3] ^= 0xFF  # the first header's name
    with pytest.raises(tarfile.ReadError, match="checksum"):
        list(tarstream.members_in(bytes(raw)))
    with pytest.raises(tarfile.ReadError, match="unexpected end"):
        list(tarstream.members_in(path.read_bytes()[: 512 * 4 + 5]))


def test_a_repeated_extension_goes_to_the_handler_and_the_sample_keeps_its_first(tmp_path: Path) -> None:
    url = str(tmp_path / "shard-00000.tar")
    write_tar(Path(url), [("k.jpg", b"first"), ("k.jpg", b"second"), ("k.json", b"{}")], tarfile.PAX_FORMAT)
    skips = Skips()
    assert list(tar_samples([url], skips.handler)) == [
        {"__key__": "k", "__url__": url, "jpg": b"first", "json": b"{}"}
    ]
    assert skips.counts["tar_read_error"] == 1


def test_gnu_base256_sizes_are_read() -> None:
    assert tarstream._number(b"\x80" + (12345).to_bytes(11, "big")) == 12345
    assert tarstream._number(b"0000644\0") == 0o644


def test_a_reader_closed_early_closes_cleanly(tmp_path: Path) -> None:
    url = str(tmp_path / "shard-00000.tar")
    write_tar(Path(url), MEMBERS, tarfile.PAX_FORMAT)
    stream = tar_samples([url], Skips().handler)
    assert next(stream)["__key__"] == "a-000"
    stream.close()  # as when a loader stops mid-shard: no "generator ignored GeneratorExit"


@pytest.mark.parametrize("flush", [TarWriter.FLUSH, 700])
def test_tar_writer_writes_tarfiles_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flush: int
) -> None:
    """TarWriter's tars are byte-identical to tarfile's (GNU format, add_member's fields): short,
    long and non-ASCII names, empty members and sizes around the block size; and its sha256 is
    theirs, written in one piece or in many."""
    monkeypatch.setattr(TarWriter, "FLUSH", flush)
    rng = random.Random(0)
    for _ in range(20):
        members = [
            (rng.choice([f"k-{rng.randrange(10**9):09d}.jpg", "d/" * 60 + "ü.json"]), rng.randbytes(size))
            for size in rng.choices([0, 1, 511, 512, 513, 9000], k=rng.randrange(0, 12))
        ]
        expected = io.BytesIO()
        with tarfile.open(fileobj=expected, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name, data in members:
                add_member(tar, name, data)
        written = io.BytesIO()
        writer = TarWriter(written)
        for name, data in members:
            writer.add(name, data)
        writer.close()
        assert written.getvalue() == expected.getvalue()
        assert writer.sha256 == hashlib.sha256(expected.getvalue()).hexdigest()
        assert list(tarstream.members(io.BytesIO(written.getvalue()))) == members


def test_the_header_checksum_is_the_byte_sum_with_its_field_as_spaces() -> None:
    """zlib's byte sum in two halves against the plain sum: random headers, all-0xFF (the largest
    sum), all-zero."""
    import random

    from mvlp_core.tarstream import checksum

    rng = random.Random(0)
    headers = [bytes(rng.randrange(256) for _ in range(512)) for _ in range(200)]
    for header in [*headers, b"\xff" * 512, b"\0" * 512]:
        assert checksum(header) == sum(header) - sum(header[148:156]) + 8 * 32
