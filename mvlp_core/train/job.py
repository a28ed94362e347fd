"""What one training worker needs, built once by the driver and shipped to every rank.

The driver trains the tiny tokenizers (on the shards' captions, QA and text pairs) and saves the
initial model with `save_pretrained` under `pretrain/init/`; every rank then loads that folder,
so all ranks start from identical weights and tokenizers whatever the runner (Ray or plain).
"""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from mvlp_core import contract, publish, storage
from mvlp_core.spec import PipelineSpec
from mvlp_core.train import data
from mvlp_core.train.curves import METRICS

INIT_DIR = "init"
FAULT_MARKER = "_fault_injected"


@dataclass
class TrainJob:
    """Plain data (picklable): the spec, where things are, which shards to read."""

    spec: PipelineSpec
    out_dir: Path
    init_dir: Path
    image_urls: list[str]
    text_urls: list[str]
    text_dir: Path | None = None  # the text-shard stage's folder: its manifest indexes the streams

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / METRICS

    @property
    def fault_marker(self) -> Path:
        return self.out_dir / FAULT_MARKER


def _texts(urls: list[str]) -> Iterator[str]:
    """Every caption, question, answer and text pair in the shards (tokenizer training corpus)."""
    for url in urls:
        with storage.open_input(url, what="pretrain: shard") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for m in tar:
                if not m.name.endswith(".json"):
                    continue
                try:
                    r = json.loads(tar.extractfile(m).read())
                except (ValueError, AttributeError):
                    continue
                yield from (r.get("captions") or {}).values()
                for qa in r.get("qa") or []:
                    yield qa.get("question", "")
                    yield qa.get("answer", "")
                for k in ("src", "tgt"):
                    if r.get(k):
                        yield r[k]


def shards_of(spec: PipelineSpec, folder: Path | None, stage: str, pattern: str) -> list[str]:
    """The shards of `stage`: its folder's files, or with `pretrain.loader.read_from: published`
    the URLs under the prefix it was published to (where one is set), which the loader streams."""
    if folder is None:
        return []
    prefix = publish.target(spec, stage)
    manifest = contract.Manifest.load(folder)
    if spec.pretrain.loader.read_from != "published" or prefix is None or manifest is None:
        return data.shard_urls(folder, pattern)
    return publish.published_files(
        prefix, pattern, manifest.fingerprint, f"pretrain: publish target of {stage}"
    )


def prepare(spec: PipelineSpec, inputs: dict[str, Path], out_dir: Path) -> TrainJob:
    """Find the shards and write the initial model (once; a resumed stage reuses it)."""
    from mvlp_core.model import family

    image_urls = shards_of(spec, inputs["shard"], "shard", "shard-*.tar")
    text_urls = shards_of(spec, inputs.get("text-shard"), "text-shard", "text-*.tar")
    init_dir = Path(out_dir) / INIT_DIR
    if spec.model.checkpoint:
        init_dir = Path(spec.model.checkpoint)
    elif not init_dir.exists():
        tmp = init_dir.with_name(INIT_DIR + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        texts = list(_texts(image_urls + text_urls)) if spec.model.random_init else None
        torch.manual_seed(spec.pretrain.seed)
        family(spec.model.family).build(spec.model, texts, tmp / "tokenizers").save_pretrained(tmp)
        tmp.rename(init_dir)
    return TrainJob(spec, Path(out_dir), init_dir, image_urls, text_urls, inputs.get("text-shard"))


def build(job: TrainJob, rank: int, world: int) -> tuple[torch.nn.Module, torch.utils.data.IterableDataset]:
    """On a rank: the model from init_dir (its towers compiled with `pretrain.compile`) and its
    family's batch stream."""
    from mvlp_core.model import family

    fam = family(job.spec.model.family)
    model = fam.load(job.init_dir)
    batches = fam.train_batches(job, model, rank, world)
    if job.spec.pretrain.compile:
        from mvlp_core.train.compiled import compile_towers

        compile_towers(model, job.spec.pretrain.compile_mode)
    return model, batches
