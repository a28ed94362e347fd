"""Pretraining under real Ray Train (local Ray, 2 CPU workers, the tiny UniGen): the stage's
outputs, a relaunch with the same run name resuming, a worker killed for real mid-run resuming
from the last checkpoint (not step 0), a corrupt checkpoint stopping with a clear error, what
a SIGKILL of the whole run leaves in its Ray folder (a checkpoint copy cut short, Ray's snapshot
torn) not stopping the relaunch, and a stage's two models trained in one Ray Train run."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import shutil
import tarfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

ray = pytest.importorskip("ray")

from mvlp_core import atomic, contract, pipeline  # noqa: E402
from mvlp_core.spec import load_spec  # noqa: E402
from mvlp_core.train import curves  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COLOURS = {"red": ("rot", "rouge"), "blue": ("blau", "bleu"), "green": ("grün", "vert")}
FAST = [
    "models=null",  # the one UniGen of `model` (the demo trains two)
    "model.size=micro",
    "pretrain.workers=2",
    "pretrain.batch_size=8",
    "pretrain.lr=0.001",
    "pretrain.warmup_steps=2",
    "pretrain.log_every=3",
    "pretrain.checkpoint_every=3",
    "pretrain.max_failures=2",
]


def write_shard_stage(folder: Path, n: int = 48) -> None:
    """A `shard` stage output (tars in the record schema + manifest), as the shard stage writes it."""
    folder.mkdir(parents=True)
    rng = random.Random(0)
    with tarfile.open(folder / "shard-00000.tar", "w") as tar:
        for i in range(n):
            en_c = rng.choice(list(COLOURS))
            de_c, fr_c = COLOURS[en_c]
            img = Image.new("RGB", (32, 32), "white")
            ImageDraw.Draw(img).ellipse([4, 4, 28, 28], fill=en_c)
            buf = io.BytesIO()
            img.save(buf, format="JPEG")
            key = f"synthetic-{i:09d}"
            rec = {
                "key": key,
                "captions": {"en": f"a {en_c} circle", "de": f"ein {de_c} Kreis", "fr": f"un cercle {fr_c}"},
                "qa": [{"question": "what colour is the circle?", "answer": en_c, "generator": "rules"}],
            }
            for name, data in ((f"{key}.jpg", buf.getvalue()), (f"{key}.json", json.dumps(rec).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    contract.Manifest("shard", "test-shards", {"shard-00000.tar": {"samples": n}}, n, n, {}, 0.0, 1).save(
        folder
    )


def make_spec(workdir: Path, *extra: str):
    return load_spec(ROOT / "data_specs/pipelines/demo.yaml", [*FAST, "text.corpora=[]", *extra], workdir)


def write_inputs(spec) -> None:
    """pretrain's inputs: a shard stage, and an (empty) text-shard stage run for real."""
    write_shard_stage(Path(spec.workdir) / "shard")
    pipeline.run_stage(spec, "text-shard")


@pytest.fixture(scope="module")
def local_ray():
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    if ray.is_initialized():  # an in-process pipeline run earlier in the session started one
        ray.shutdown()
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(local_ray, tmp_path_factory):
    from ray_jobs.engines import run_stage

    workdir = tmp_path_factory.mktemp("pretrain")
    spec = make_spec(workdir, "pretrain.max_steps=6")
    write_inputs(spec)
    manifest = run_stage(spec, "pretrain")
    return spec, manifest


@pytest.mark.slow  # ~40 s; the e2e demo trains both of its models on 2 Ray Train workers by default
def test_two_workers_train_and_write_the_stage_outputs(trained) -> None:
    from mvlp_core.model import load_model

    spec, manifest = trained
    out = Path(spec.workdir) / "pretrain"
    e = manifest.extra
    assert e["step"] == 6 and e["loss_first"] > 0 and e["checkpoint"].endswith("checkpoint_00000006")
    rows = curves.history(curves.read_metrics(out / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [3, 6] and all(r["world"] == 2 for r in rows)
    assert rows[-1]["samples"] == 6 * 2 * 8  # both ranks' batches count
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert load_model(out / "final") is not None
    state = pipeline.stage_state(spec, "pretrain")
    assert state["state"] == "complete" and state["step"] == 6 and state["loss_last"] == e["loss_last"]


@pytest.mark.slow
def test_relaunch_with_same_run_name_resumes(trained) -> None:
    from mvlp_core.train.job import prepare
    from ray_jobs.pretrain import train_with_ray

    spec, _ = trained
    longer = make_spec(Path(spec.workdir), "pretrain.max_steps=8")
    job = prepare(longer, {"shard": Path(spec.workdir) / "shard"}, Path(spec.workdir) / "pretrain")
    ckpt = train_with_ray(job)
    rows = curves.read_metrics(job.metrics_path)
    assert {"event": "resume", "step": 6} in rows
    assert ckpt.name == "checkpoint_00000008" and rows[-1]["restored_from"] == 6


@pytest.mark.slow  # shares the trained run above
def test_corrupt_checkpoint_is_reported_not_skipped(trained, tmp_path) -> None:
    from mvlp_core.train.job import prepare
    from ray_jobs.pretrain import latest_checkpoint, train_with_ray

    spec, _ = trained
    src = Path(spec.workdir) / "pretrain"
    job = prepare(spec, {"shard": Path(spec.workdir) / "shard"}, src)
    run_dir = Path(spec.pretrain.storage_path) / spec.pretrain.run_name
    bad = latest_checkpoint(run_dir)
    (bad / "train_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(contract.StageError, match=f"cannot load checkpoint {bad}.*--force"):
        train_with_ray(dataclasses.replace(job))


@pytest.mark.slow
def test_killed_worker_resumes_from_last_checkpoint(local_ray, tmp_path) -> None:
    from ray_jobs.engines import run_stage

    spec = make_spec(tmp_path, "pretrain.max_steps=6", "pretrain.fail_at_step=4")
    write_inputs(spec)
    manifest = run_stage(spec, "pretrain")
    out = tmp_path / "pretrain"
    assert (out / "_fault_injected").read_text() == "4"  # rank 1 really exited at step 4
    rows = curves.read_metrics(out / "metrics.jsonl")
    assert {"event": "resume", "step": 3} in rows  # restarted from the step-3 checkpoint
    assert manifest.extra["resumed_at"] == [3] and manifest.extra["step"] == 6
    assert curves.history(rows)[-1]["restored_from"] == 3


def test_a_checkpoint_is_copied_whole_or_left_as_a_temporary(tmp_path) -> None:
    from ray_jobs.pretrain import RayReporter, latest_checkpoint

    src = tmp_path / "saved"
    (src / "model").mkdir(parents=True)
    (src / "model" / "model.safetensors").write_bytes(os.urandom(4096))
    (src / "train_state.pt").write_bytes(os.urandom(512))
    run = tmp_path / "run"
    run.mkdir()
    persisted = RayReporter(run).persist(ray.train.Checkpoint.from_directory(str(src)), "checkpoint_00000003")
    assert Path(persisted.path) == run / "checkpoint_00000003"
    for rel in ("model/model.safetensors", "train_state.pt"):
        assert (run / "checkpoint_00000003" / rel).read_bytes() == (src / rel).read_bytes()
    assert [p.name for p in run.iterdir()] == ["checkpoint_00000003"]
    cut = run / f"checkpoint_00000006{atomic.TMP_MARK}0badf00d"  # a copy killed midway
    shutil.copytree(src, cut)
    assert latest_checkpoint(run) == run / "checkpoint_00000003"


@pytest.mark.slow
def test_what_a_killed_run_leaves_does_not_stop_the_relaunch(local_ray, tmp_path) -> None:
    """Killed while checkpoint 6 was copied, then killed while Ray rewrote its snapshot after
    checkpoint 6: each relaunch resumes at the newest whole checkpoint and ends at checkpoint 6."""
    from mvlp_core.train.job import prepare
    from ray_jobs.engines import run_stage
    from ray_jobs.pretrain import SNAPSHOT, train_with_ray

    spec = make_spec(tmp_path, "pretrain.max_steps=3")
    write_inputs(spec)
    run_stage(spec, "pretrain")
    run = Path(spec.pretrain.storage_path) / spec.pretrain.run_name
    cut = run / f"checkpoint_00000006{atomic.TMP_MARK}0badf00d"
    shutil.copytree(run / "checkpoint_00000003", cut)
    state = cut / "train_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    longer = make_spec(tmp_path, "pretrain.max_steps=6")
    job = prepare(longer, {"shard": tmp_path / "shard"}, tmp_path / "pretrain")
    assert train_with_ray(job) == run / "checkpoint_00000006"

    snapshot = run / SNAPSHOT
    snapshot.write_bytes(snapshot.read_bytes()[: snapshot.stat().st_size // 2])
    assert train_with_ray(job) == run / "checkpoint_00000006"  # nothing left to train, none reported
    rows = curves.read_metrics(job.metrics_path)
    assert [r["step"] for r in rows if r.get("event") == "resume"] == [3, 6]
    assert [r["step"] for r in curves.history(rows)] == [3, 6] and curves.history(rows)[-1][
        "restored_from"
    ] == 3


@pytest.mark.slow
def test_a_deleted_checkpoint_leaves_the_relaunch_to_the_one_before(local_ray, tmp_path) -> None:
    """What the error for a checkpoint that cannot be loaded says to do: delete it. Ray's snapshot
    still names it, which would kill the relaunch in Ray's controller; the relaunch drops the
    snapshot and resumes from the checkpoint before."""
    from mvlp_core.train.job import prepare
    from ray_jobs.engines import run_stage
    from ray_jobs.pretrain import SNAPSHOT, train_with_ray

    spec = make_spec(tmp_path, "pretrain.max_steps=6")
    write_inputs(spec)
    run_stage(spec, "pretrain")
    run = Path(spec.pretrain.storage_path) / spec.pretrain.run_name
    assert "checkpoint_00000006" in (run / SNAPSHOT).read_text()
    shutil.rmtree(run / "checkpoint_00000006")
    job = prepare(spec, {"shard": tmp_path / "shard"}, tmp_path / "pretrain")
    assert train_with_ray(job) == run / "checkpoint_00000006"
    assert {"event": "resume", "step": 3} in curves.read_metrics(job.metrics_path)


def test_a_stages_models_share_one_ray_run_and_a_restart_resumes_the_unfinished_one(
    local_ray, tmp_path
) -> None:
    """Model a trains to step 3, then b to step 6 in the same run; a worker dies at b's step 4:
    the restarted workers skip a (at its max_steps) and resume b from its own step-3 checkpoint."""
    from ray_jobs.engines import run_stage
    from ray_jobs.pretrain import SNAPSHOT

    spec = make_spec(
        tmp_path,
        "models=[{name: a, pretrain: {max_steps: 3}}, {name: b, pretrain: {max_steps: 6, seed: 1}}]",
        "pretrain.fail_at_step=4",
    )
    write_inputs(spec)
    manifest = run_stage(spec, "pretrain")
    out = tmp_path / "pretrain"
    models = manifest.extra["models"]
    assert (models["a"]["step"], models["b"]["step"]) == (3, 6)
    runs = {
        name: Path(sub.pretrain.storage_path) / sub.pretrain.run_name for name, sub in spec.trained_models()
    }
    shared = runs["a"].parent / f"{runs['a'].name}+{runs['b'].name}"
    assert shared.is_dir()  # the one Ray Train run
    assert not (runs["a"] / SNAPSHOT).exists() and not (runs["b"] / SNAPSHOT).exists()  # no run of their own
    assert sorted(p.name for p in runs["a"].glob("checkpoint_*")) == ["checkpoint_00000003"]
    assert sorted(p.name for p in runs["b"].glob("checkpoint_*")) == [
        "checkpoint_00000003",
        "checkpoint_00000006",
    ]
    assert (out / "b" / "_fault_injected").read_text() == "4" and not (out / "a" / "_fault_injected").exists()
    a_rows, b_rows = (curves.read_metrics(out / m / "metrics.jsonl") for m in ("a", "b"))
    assert not [r for r in a_rows if r.get("event") == "resume"]  # a was not trained again
    assert {"event": "resume", "step": 3} in b_rows and curves.history(b_rows)[-1]["restored_from"] == 3
    for name in ("a", "b"):
        assert (out / name / "final" / "model.safetensors").exists()


def test_which_models_share_a_run_and_which_are_done(tmp_path) -> None:
    from mvlp_core.train.job import TrainJob
    from ray_jobs.pretrain import _share_a_run, finished_checkpoint

    spec = make_spec(tmp_path, "models=[{name: a}, {name: b, pretrain: {max_steps: 6}}]")
    (a, sa), (b, sb) = spec.trained_models()
    job = lambda s: TrainJob(s, tmp_path / "out", tmp_path / "init", [], [])  # noqa: E731
    assert _share_a_run([job(sa), job(sb)])
    three = sb.model_copy(update={"pretrain": sb.pretrain.model_copy(update={"workers": 3})})
    remote = sb.model_copy(update={"pretrain": sb.pretrain.model_copy(update={"storage_path": "s3://b/ray"})})
    assert not _share_a_run([job(sa), job(three)]) and not _share_a_run([job(sa), job(remote)])

    run = Path(sb.pretrain.storage_path) / sb.pretrain.run_name
    for step, whole in ((3, True), (6, False)):  # 6 is a copy cut short: no train_state.pt
        (run / f"checkpoint_{step:08d}").mkdir(parents=True)
        if whole:
            (run / f"checkpoint_{step:08d}" / "train_state.pt").write_bytes(b"x")
    assert finished_checkpoint(job(sb)) is None  # its newest whole checkpoint is step 3 of 6
    (run / "checkpoint_00000006" / "train_state.pt").write_bytes(b"x")
    assert finished_checkpoint(job(sb)) == run / "checkpoint_00000006"
