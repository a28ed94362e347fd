"""The pretraining loader: per-rank splits cover every sample once, the task mix follows the
spec, text pairs are mixed in, bad samples are skipped and counted, never fatal, and a resumed
run's data continues where its checkpoint's step stood."""

from __future__ import annotations

import io
import itertools
import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mvlp_core.model.unigen import TASK_IDS
from mvlp_core.spec import MixSpec
from mvlp_core.train import data


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def write_shard(
    path: Path, keys: list[str], *, bad_jpeg: str | None = None, bad_json: str | None = None
) -> None:
    with tarfile.open(path, "w") as tar:
        for k in keys:
            rec = {
                "key": k,
                "captions": {"en": f"a red circle {k}", "de": f"ein roter Kreis {k}"},
                "qa": [{"question": f"what colour {k}?", "answer": "red"}],
            }
            _add(tar, f"{k}.jpg", b"not a jpeg" if k == bad_jpeg else _jpeg())
            _add(tar, f"{k}.json", b"{oops" if k == bad_json else json.dumps(rec).encode())


def write_text_shard(path: Path, n: int) -> None:
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            rec = {
                "key": f"wm-{i:05d}",
                "kind": "parallel",
                "src_lang": "en",
                "src": f"hello {i}",
                "tgt_lang": "fr",
                "tgt": f"bonjour {i}",
                "score": 1.1,
            }
            _add(tar, f"wm-{i:05d}.json", json.dumps(rec).encode())


def transform(img: Image.Image) -> torch.Tensor:
    return torch.zeros(3, 4, 4)


def test_parts_cover_every_sample_once_with_few_shards(tmp_path: Path) -> None:
    write_shard(tmp_path / "shard-00000.tar", [f"k{i:03d}" for i in range(10)])
    urls = data.shard_urls(tmp_path, "shard-*.tar")
    skips = data.Skips()
    seen = [s["__key__"] for part in range(3) for s in data.raw_samples(urls, part, 3, 0, 4, skips)]
    assert sorted(seen) == [f"k{i:03d}" for i in range(10)]


def test_parts_split_by_shard_when_enough(tmp_path: Path) -> None:
    for s in range(4):
        write_shard(tmp_path / f"shard-{s:05d}.tar", [f"s{s}k{i}" for i in range(3)])
    urls = data.shard_urls(tmp_path, "shard-*.tar")
    parts = [{s["__key__"][:2] for s in data.raw_samples(urls, p, 2, 0, 1, data.Skips())} for p in range(2)]
    assert parts[0] == {"s0", "s2"} and parts[1] == {"s1", "s3"}


def test_bad_samples_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_shard(
        tmp_path / "shard-00000.tar", [f"k{i:03d}" for i in range(6)], bad_jpeg="k001", bad_json="k002"
    )
    cfg = data.LoaderConfig(data.shard_urls(tmp_path, "shard-*.tar"), [], MixSpec(), ["de"], 4, 1, 0)
    ds = data.Batches(cfg, transform, lambda exs: {"task": torch.tensor([TASK_IDS[e.task] for e in exs])})
    it = iter(ds)
    batches = [next(it) for _ in range(5)]  # 20 examples from 4 good samples: several epochs
    assert all(len(b["task"]) == 4 for b in batches)
    assert ds.skips.counts["image_decode_error"] >= 1 and ds.skips.counts["bad_json"] >= 1
    logged = {
        r.getMessage().split()[3].rstrip(":") for r in caplog.records if "loader skipped" in r.getMessage()
    }
    assert logged == {"k001", "k002"}  # named in the worker's log, with the cause
    assert int(batches[-1]["skipped"]) == sum(ds.skips.counts.values())


def test_task_mix_follows_spec_and_text_pairs_mix_in(tmp_path: Path) -> None:
    write_shard(tmp_path / "shard-00000.tar", [f"k{i:03d}" for i in range(50)])
    write_text_shard(tmp_path / "text-00000.tar", 50)
    mix = MixSpec(cap=1.0, qus=1.0, multilingual_fraction=0.5, text_pairs=0.25)
    cfg = data.LoaderConfig(
        data.shard_urls(tmp_path, "shard-*.tar"),
        data.shard_urls(tmp_path, "text-*.tar"),
        mix,
        ["de"],
        8,
        16,
        0,
    )
    stream = data.examples(cfg, transform, 0, 1, data.Skips())
    exs = [next(stream) for _ in range(800)]
    text = [e for e in exs if e.image is None]
    assert 0.18 < len(text) / len(exs) < 0.32
    assert all(e.task == "trans" and e.source_lang == "fr" and e.target.startswith("hello") for e in text)
    assert all(e.caption == e.target for e in text)  # the English side, for the consistency loss
    tasks = Counter(e.task for e in exs if e.image is not None)
    # the multilingual share is of all image records (every one here has QA pairs): UniGen's "10%
    # of CC6L"; the English rest splits qus : cap = 1 : 1
    assert 0.42 < tasks["trans"] / sum(tasks.values()) < 0.58
    assert 0.4 < tasks["qus"] / (tasks["qus"] + tasks["cap"]) < 0.6
    trans = [e for e in exs if e.image is not None and e.task == "trans"]
    assert all(
        e.source_lang == "de" and e.caption == e.source and e.target.startswith("a red") for e in trans
    )


def write_aligned_shard(path: Path, n: int) -> None:
    """Records as the shard stage writes them: words and en↔de links over them."""
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            rec = {
                "key": f"k{i:03d}",
                "captions": {"en": "a red circle", "de": "ein roter Kreis"},
                "words": {"en": ["a", "red", "circle"], "de": ["ein", "roter", "Kreis"]},
                "alignments": {"de": [[0, 0], [1, 1], [2, 2]]},
                "qa": [{"question": "What colour is the circle?", "answer": "red"}],
            }
            _add(tar, f"k{i:03d}.jpg", _jpeg())
            _add(tar, f"k{i:03d}.json", json.dumps(rec).encode())


def test_code_switching_swaps_aligned_words_in_english_encoder_texts_only(tmp_path: Path) -> None:
    write_aligned_shard(tmp_path / "shard-00000.tar", 40)
    mix = MixSpec(
        cap=1.0, qus=1.0, multilingual_fraction=0.0, text_pairs=0.0, code_switch=1.0, code_switch_ratio=0.67
    )
    cfg = data.LoaderConfig(data.shard_urls(tmp_path, "shard-*.tar"), [], mix, ["de"], 8, 1, 0)
    exs = [e for _, e in zip(range(200), data.examples(cfg, transform, 0, 1, data.Skips()))]
    qus = [e for e in exs if e.task == "qus"]
    cap = [e for e in exs if e.task == "cap"]
    assert qus and cap
    # two of the three words switched, each for the German word the alignment links to it
    for e in cap:
        words = e.caption.split()
        assert len(words) == 3 and sum(w in {"ein", "roter", "Kreis"} for w in words) == 2, e.caption
        assert e.target == "a red circle"  # targets stay English
    assert {e.source for e in qus} == {"What colour is the Kreis ?"}  # "circle" is the one linked word
    assert all(e.target == "red" for e in qus)
    assert len({e.caption for e in cap}) > 1  # a fresh choice of words each time


def test_code_switching_off_or_without_links_keeps_texts(tmp_path: Path) -> None:
    write_aligned_shard(tmp_path / "aligned-00000.tar", 10)
    write_shard(tmp_path / "plain-00000.tar", [f"p{i}" for i in range(10)])  # no words, no alignments
    for pattern, mix in (
        ("aligned-*.tar", MixSpec(multilingual_fraction=0.0, text_pairs=0.0)),
        ("plain-*.tar", MixSpec(multilingual_fraction=0.0, text_pairs=0.0, code_switch=1.0)),
    ):
        cfg = data.LoaderConfig(data.shard_urls(tmp_path, pattern), [], mix, ["de"], 8, 1, 0)
        exs = [e for _, e in zip(range(40), data.examples(cfg, transform, 0, 1, data.Skips()))]
        assert all(e.caption.startswith("a red circle") for e in exs)


def _describe(exs: list) -> dict:
    """A batch as the keys of what it holds (images compared by their pixels' sum)."""
    return {
        "rows": [(e.task, e.source, e.target, e.caption) for e in exs],
        "images": [None if e.image is None else float(e.image.sum()) for e in exs],
    }


def test_a_resumed_loader_continues_where_its_step_stood(tmp_path: Path) -> None:
    for s in range(3):
        write_shard(tmp_path / f"shard-{s:05d}.tar", [f"s{s}k{i:02d}" for i in range(7)])
    write_text_shard(tmp_path / "text-00000.tar", 30)
    mix = MixSpec(cap=1.0, qus=1.0, multilingual_fraction=0.5, text_pairs=0.3)
    cfg = data.LoaderConfig(
        data.shard_urls(tmp_path, "shard-*.tar"),
        data.shard_urls(tmp_path, "text-*.tar"),
        mix,
        ["de"],
        5,
        4,
        3,
    )

    def pixels(img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)

    def run(start: int, workers: int, n: int) -> list[dict]:
        ds = data.Batches(cfg, pixels, _describe, rank=1, world=2)
        batches = itertools.islice(data.resumable(ds, workers)(start), n)
        # which worker made a batch follows the start (the first step's lane comes from worker 0)
        return [{k: v for k, v in b.items() if k != "loader_worker"} for b in batches]

    whole = run(0, 0, 14)  # several epochs of the image shards, text pairs interleaved
    assert run(9, 0, 5) == whole[9:14]
    assert run(9, 0, 5) != run(0, 0, 5)
    # DataLoader workers: each step comes from the lane that owned it, from any start
    with_workers = run(0, 2, 12)
    assert run(7, 2, 5) == with_workers[7:12]


def test_the_loader_tokenizes_on_its_own_thread_unless_told_otherwise(tmp_path: Path, monkeypatch) -> None:
    """A loader is one process per core: the fast tokenizers' all-core thread pool is switched off
    in it (TOKENIZERS_PARALLELISM), and a value the user set is kept."""
    write_shard(tmp_path / "shard-00000.tar", [f"k{i:03d}" for i in range(4)])
    cfg = data.LoaderConfig(data.shard_urls(tmp_path, "shard-*.tar"), [], MixSpec(), ["de"], 2, 1, 0)

    def first_batch() -> None:
        next(iter(data.Batches(cfg, transform, lambda exs: {"n": torch.tensor(len(exs))})))

    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    first_batch()
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    first_batch()
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"


def test_skips_past_the_first_few_are_counted_without_a_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(data, "MAX_LOGGED_SKIPS", 2)
    skips = data.Skips()
    for i in range(5):
        skips.add(f"k{i}", "bad_json", "Expecting value")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "training loader skipped k0: bad_json Expecting value",
        "training loader skipped k1: bad_json Expecting value",
        "training loader: further skips are counted only (`skipped` in the metrics)",
    ]
    assert skips.counts == {"bad_json": 5}
