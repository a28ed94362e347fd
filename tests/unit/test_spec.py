"""Pipeline specs: built-in specs load, `--set` overrides, readable errors, fingerprint config."""

from __future__ import annotations

from pathlib import Path

import pytest

from mvlp_core.languages import SUPPORTED_LANGUAGES
from mvlp_core.spec import (
    SPECS_ROOT,
    PipelineSpec,
    SpecError,
    fingerprint_config,
    load_spec,
    parse_override,
)

DEMO = SPECS_ROOT / "pipelines" / "demo.yaml"
UNIGEN = SPECS_ROOT / "pipelines" / "unigen-cc3m.yaml"
WEAKLY = SPECS_ROOT / "pipelines" / "weakly-supervised.yaml"


def test_demo_loads(tmp_path: Path) -> None:
    spec = load_spec(DEMO, workdir=tmp_path)
    assert isinstance(spec, PipelineSpec)
    assert spec.name == "demo"
    assert spec.workdir == str(tmp_path.resolve())
    assert spec.dataset.spec is not None and spec.dataset.spec.name == "synthetic"
    # {workdir} is expanded everywhere, including inside the resolved dataset spec.
    assert spec.dataset.spec.url_list == f"{tmp_path.resolve()}/world/urls.tsv"
    assert spec.translate.import_ is not None
    assert spec.translate.import_.path == f"{tmp_path.resolve()}/world/translations.tsv"
    assert spec.ingest.url_policy.allow_loopback is True
    assert spec.download.image_size == 64


def test_demo_text_corpora_point_into_the_world(tmp_path: Path) -> None:
    spec = load_spec(DEMO, workdir=tmp_path)
    wikimatrix, mono = spec.text.corpora
    assert wikimatrix.path == f"{tmp_path.resolve()}/world/text/wikimatrix.{{src}}-{{tgt}}.tsv.gz"
    assert (wikimatrix.kind, wikimatrix.format, wikimatrix.min_score) == ("parallel", "wikimatrix", 1.04)
    assert (mono.kind, mono.format, mono.languages) == (
        "monolingual",
        "lines",
        ["en", "de", "fr", "cs", "ja", "zh"],
    )
    assert spec.text.alpha == 0.3


def test_weakly_supervised_names_wikimatrix_and_cc100(tmp_path: Path) -> None:
    from mvlp_core.stages.text_shard.readers import streams

    spec = load_spec(WEAKLY, workdir=tmp_path)
    found = streams(spec)
    assert len(found) == 19 + 20
    files = {s.id: s.files[0] for s in found}
    assert files["wikimatrix:de-en"] == "s3://your-bucket/wikimatrix/WikiMatrix.de-en.tsv.gz"
    assert files["cc100:zh"] == "s3://your-bucket/cc100/zh-Hans.txt.xz"
    assert files["cc100:sw"] == "s3://your-bucket/cc100/sw.txt.xz"
    assert spec.text.corpora[0].min_score == 1.04 and spec.text.alpha == 0.3


def test_text_section_defaults_to_no_corpora(tmp_path: Path) -> None:
    spec = load_spec(UNIGEN, workdir=tmp_path)
    assert spec.text.corpora == [] and spec.text.alpha == 0.3 and spec.text.samples_per_shard == 10000


def test_demo_loads_by_name(tmp_path: Path) -> None:
    spec = load_spec("demo", workdir=tmp_path)
    assert spec.name == "demo"


def test_unigen_cc3m_loads(tmp_path: Path) -> None:
    spec = load_spec(UNIGEN, workdir=tmp_path)
    ds = spec.dataset.spec
    assert ds is not None
    assert ds.name == "cc3m"
    assert ds.header is False
    assert ds.columns == ["caption", "url"]
    assert ds.format == "tsv"
    assert spec.translate.backend == "hf"
    assert spec.translate.sample_fraction == pytest.approx(0.1)
    assert spec.languages == ["de", "fr", "cs", "ja", "zh"]
    assert spec.qa.backend == "hf"
    assert spec.qa.hf is not None and spec.qa.hf.model
    assert spec.ingest.url_policy.allow_loopback is False


def test_default_workdir_from_name() -> None:
    spec = load_spec(UNIGEN)
    assert Path(spec.workdir).is_absolute()
    assert spec.workdir.endswith("runs/unigen-cc3m")


def test_set_override_parses_types(tmp_path: Path) -> None:
    spec = load_spec(
        DEMO,
        overrides=[
            "download.image_size=128",
            "download.timeout=3.5",
            "ingest.url_policy.allow_private=true",
            "languages=[de, ja]",
            "dataset.limit=10",
        ],
        workdir=tmp_path,
    )
    assert spec.download.image_size == 128 and isinstance(spec.download.image_size, int)
    assert spec.download.timeout == 3.5
    assert spec.ingest.url_policy.allow_private is True
    assert spec.languages == ["de", "ja"]
    assert spec.dataset.limit == 10


def test_parse_override() -> None:
    assert parse_override("download.image_size=128") == ("download.image_size", 128)
    assert parse_override("a.b = x=y") == ("a.b", "x=y")
    with pytest.raises(SpecError, match="expected a.b=value"):
        parse_override("no-equals-sign")


def test_bad_value_names_field_value_and_allowed(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(DEMO, overrides=["download.resize_mode=foo"], workdir=tmp_path)
    msg = str(info.value)
    assert "download.resize_mode" in msg
    assert "'foo'" in msg
    for allowed in ("center_crop", "keep_ratio", "border"):
        assert allowed in msg


def test_bad_number_names_field_and_value(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(DEMO, overrides=["download.image_size=-5"], workdir=tmp_path)
    msg = str(info.value)
    assert "download.image_size" in msg and "-5" in msg


def test_unknown_field(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(DEMO, overrides=["download.imagesize=128"], workdir=tmp_path)
    msg = str(info.value)
    assert "download.imagesize" in msg
    assert "unknown field" in msg


def test_unsupported_language_lists_allowed(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(DEMO, overrides=["languages=[de, xx]"], workdir=tmp_path)
    msg = str(info.value)
    assert "languages" in msg and "xx" in msg
    for code in SUPPORTED_LANGUAGES:
        assert code in msg
    assert ", ".join(SUPPORTED_LANGUAGES) in msg


def test_english_is_not_a_target(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unsupported target language"):
        load_spec(DEMO, overrides=["languages=[en]"], workdir=tmp_path)


def test_unknown_dataset_ref_lists_known(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(DEMO, overrides=["dataset.ref=nosuchdata"], workdir=tmp_path)
    msg = str(info.value)
    assert "nosuchdata" in msg
    for known in ("cc12m", "cc3m", "synthetic"):
        assert known in msg


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")


def test_non_mapping_spec(tmp_path: Path) -> None:
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(p)


def test_qa_hf_requires_model(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(
        "name: x\ndataset: {ref: cc3m}\nlanguages: [de]\ntranslate: {backend: hf}\nqa: {backend: hf}\n"
    )
    with pytest.raises(SpecError, match="qa.hf"):
        load_spec(p, workdir=tmp_path)


def test_fingerprint_config_drops_perf_only_fields(tmp_path: Path) -> None:
    base = load_spec(DEMO, workdir=tmp_path)
    perf = load_spec(
        DEMO,
        overrides=[
            "download.processes=7",
            "download.threads=99",
            "download.mirrors={'http://a/': 'http://b/'}",
        ],
        workdir=tmp_path,
    )
    assert perf.download.processes == 7 and perf.download.threads == 99
    assert perf.download.mirrors == {"http://a/": "http://b/"}
    cfg = fingerprint_config(base.download)
    for name in ("processes", "threads", "mirrors"):
        assert name not in cfg
    assert cfg["image_size"] == 64
    assert fingerprint_config(perf.download) == cfg

    bigger = load_spec(DEMO, overrides=["download.image_size=128"], workdir=tmp_path)
    assert fingerprint_config(bigger.download) != cfg
    assert fingerprint_config(bigger.download)["image_size"] == 128


def test_fingerprint_config_recurses_into_nested_models(tmp_path: Path) -> None:
    base = load_spec(DEMO, workdir=tmp_path)
    cfg = fingerprint_config(base.ingest)
    assert cfg["url_policy"] == {
        "allow_loopback": True,
        "allow_private": False,
        "allow_link_local": False,
        "allowed_ports": None,
    }
    changed = load_spec(DEMO, overrides=["ingest.url_policy.allow_private=true"], workdir=tmp_path)
    assert fingerprint_config(changed.ingest) != cfg


def test_finetune_settings_per_task_fall_back_to_the_shared_ones(tmp_path: Path) -> None:
    spec = load_spec(
        "demo",
        [
            "iglue.finetune.lr=0.003",
            "iglue.finetune.epochs=4",
            "iglue.finetune.tasks={wit: {lr: 0.0003}, marvl: {epochs: 9, max_train_items: 960}}",
        ],
        workdir=tmp_path,
    )
    ft = spec.iglue.finetune
    assert (ft.for_task("wit").lr, ft.for_task("wit").epochs) == (0.0003, 4)
    assert (ft.for_task("marvl").lr, ft.for_task("marvl").epochs, ft.for_task("marvl").max_train_items) == (
        0.003,
        9,
        960,
    )
    assert ft.for_task("xvnli").lr == 0.003 and ft.for_task("xvnli").tasks == {}
    with pytest.raises(SpecError, match="iglue.finetune.tasks"):
        load_spec("demo", ["iglue.finetune.tasks={vqa: {lr: 0.1}}"], workdir=tmp_path)
