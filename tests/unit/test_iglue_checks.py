"""iglue-eval's compute-free checks and needs, as `mvlp plan` (and `mvlp run`, before any stage)
shows them: one line per problem naming the cause and the fix; what it reads and asks for."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from iglue_data import REAL_IGLUE, needs_real
from typer.testing import CliRunner

from flows.cli import app
from mvlp_core import pipeline, plan
from mvlp_core.spec import PipelineSpec, load_spec
from mvlp_core.stages import iglue_eval


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mvlp_core.synth import write_world

    out = tmp_path_factory.mktemp("run")
    write_world(out / "world", 12, 0)
    return out


def _checks(workdir: Path, *overrides: str) -> list[str]:
    return iglue_eval.STAGE.checks(load_spec("demo", list(overrides), workdir=workdir))


def test_a_root_unset_or_absent_is_one_line(tmp_path: Path) -> None:
    [unset] = _checks(tmp_path, "iglue.root=null")
    assert "iglue.root is not set" in unset and "iglue.image_roots" in unset
    [absent] = _checks(tmp_path, f"iglue.root={tmp_path / 'nowhere'}")
    assert f"{tmp_path / 'nowhere'} is not a folder" in absent


def test_an_image_size_a_model_cannot_read_is_found_before_pretraining(world: Path) -> None:
    """The demo trains UniGen (32 px, its image encoder's only size) and the weakly-supervised
    model (patch 8): a shared iglue.image_size fails UniGen's line; the wsmvlp entry's own is fine."""
    [unigen] = _checks(world, "iglue.image_size=48")
    assert "models[unigen] is UniGen" in unigen and "reads 32 px only" in unigen
    [_, before] = _checks(world, "iglue.root=null", "iglue.image_size=48")  # whatever the root
    assert before == unigen

    def wsmvlp_at(size: int) -> list[str]:
        raw = load_spec("demo", workdir=world).model_dump(mode="json", exclude_unset=True)
        raw["models"][1].setdefault("iglue", {})["image_size"] = size
        return iglue_eval.STAGE.checks(PipelineSpec.model_validate(raw))

    assert wsmvlp_at(48) == []
    [patch] = wsmvlp_at(44)
    assert "models[wsmvlp]'s ViT reads multiples of its patch (8 px)" in patch


def test_a_written_world_passes_and_each_missing_piece_is_one_line(world: Path, tmp_path: Path) -> None:
    assert _checks(world) == []
    # a copy of the world's annotations (its images linked) with a test file and a folder gone
    root = tmp_path / "iglue"
    shutil.copytree(world / "world/iglue", root, ignore=shutil.ignore_patterns("images"))
    (root / "images").mkdir()
    for kind in ("flickr30k", "nlvr2", "marvl", "wit"):
        (root / "images" / kind).symlink_to(world / "world/iglue/images" / kind)
    (root / "XVNLI/annotations/fr/test.jsonl").unlink()
    (root / "XVNLI/annotations_machine-translate/ja/test.jsonl").unlink()
    (root / "nlvr2/annotations/train.jsonl").unlink()
    overrides = [
        f"iglue.root={root}",
        f"iglue.image_roots={{coco: {root}/images/flickr30k}}",
        "iglue.settings=[zero-shot, translate-test]",
    ]
    found = _checks(tmp_path, *overrides)
    assert len(found) == 4, found
    assert all("\n" not in line and "; " in line for line in found)  # cause; fix
    by_file = {
        name: [line for line in found if name in line] for name in ("fr/test", "ja/test", "train.jsonl")
    }
    assert all(len(lines) == 1 for lines in by_file.values()), found
    assert "drop fr from iglue.languages.xvnli" in by_file["fr/test"][0]
    assert "translate-test" in by_file["ja/test"][0]
    assert "iglue.finetune.tasks.marvl.epochs: 0" in by_file["train.jsonl"][0]
    [gqa] = [line for line in found if "image folder gqa" in line]
    assert f"{root}/images/gqa is missing" in gqa and "iglue.image_roots.gqa" in gqa and "xgqa" in gqa
    # without fine-tuning, no training set is needed
    assert len(_checks(tmp_path, *overrides, "iglue.finetune.tasks={marvl: {epochs: 0}}")) == 3


@needs_real
def test_the_real_copy_names_what_it_lacks(tmp_path: Path) -> None:
    """The shared copy of IGLUE's annotations: no English training sets, no images, and none of
    the xGQA and NLVR2 test files (an error each, unless iglue.dev_when_no_test); every other test
    file IGLUE has."""
    options = [
        f"iglue.root={REAL_IGLUE}",
        "iglue.image_roots={}",
        "iglue.languages={}",  # IGLUE's languages
        "iglue.finetune.tasks={}",
    ]
    found = _checks(tmp_path, *options)
    assert sum("English training set missing" in line for line in found) == 5
    missing = sorted(line.split(" missing at")[0] for line in found if "test file" in line)
    xgqa = [f"xgqa {lang} zero-shot test file" for lang in ("bn", "de", "en", "id", "ko", "pt", "ru", "zh")]
    assert missing == ["marvl en zero-shot test file", *xgqa], found
    assert not any("dev file" in line for line in found), found
    lenient = _checks(tmp_path, *options, "iglue.dev_when_no_test=true")
    assert not any("test file" in line or "dev file" in line for line in lenient), lenient
    assert (
        sum(line.startswith("image folder ") for line in found) == 6
    )  # flickr30k, gqa, nlvr2, marvl, coco, wit


def test_an_unwritten_world_is_no_problem_to_plan(tmp_path: Path) -> None:
    """The demo's iglue.root is in the synthetic world, written when the run starts: `mvlp plan`
    in a fresh workdir says so and exits 0."""
    spec = load_spec("demo", workdir=tmp_path / "fresh")
    assert iglue_eval.STAGE.checks(spec)  # the root is missing ...
    assert plan.problems(spec, pipeline.names()) == []  # ... until the run writes the world
    result = CliRunner().invoke(app, ["plan", "demo", "--workdir", str(tmp_path / "fresh")])
    assert result.exit_code == 0, result.output


def test_needs_names_the_folders_read_and_what_each_unit_asks_for(world: Path) -> None:
    local = iglue_eval.STAGE.needs(load_spec("demo", ["execution.engines={}"], workdir=world))
    iglue = world / "world/iglue"
    assert local.reads == tuple(
        map(str, [iglue, *(iglue / "images" / k for k in ("flickr30k", "gqa", "nlvr2", "marvl", "wit"))])
    )
    assert local.resources.startswith("this process (cpu), 29 units one after another")
    assert "1024 MiB of decoded images per unit" in local.resources

    ray = iglue_eval.STAGE.needs(
        load_spec(
            "demo",
            ["execution.engines={iglue-eval: ray}", "iglue.device=cuda", "iglue.gpus_per_unit=0.5"],
            workdir=world,
        )
    )
    # half a GPU: 2 fine-tuning loader processes a unit (4 a GPU)
    assert "29 units as Ray tasks x (3 CPU + 0.5 GPU)" in ray.resources
    assert "as much in each of its 2 loader processes" in ray.resources
    shown = plan.stage_plan(load_spec("demo", workdir=world), "iglue-eval")
    assert shown.reads[0] == f"{iglue} ({plan.size_of(str(iglue))})"
