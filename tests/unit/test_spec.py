"""Pipeline specs: built-in specs load, `--set` overrides, readable errors, fingerprint config."""

from __future__ import annotations

from pathlib import Path

import pytest

from mvlp_core.languages import SUPPORTED_LANGUAGES
from mvlp_core.spec import (
    SPECS_ROOT,
    IglueSpec,
    PipelineSpec,
    SpecError,
    TextSpec,
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
    assert spec.iglue.root == f"{tmp_path.resolve()}/world/iglue"


def test_demo_text_corpora_point_into_the_world(tmp_path: Path) -> None:
    spec = load_spec(DEMO, workdir=tmp_path)
    from mvlp_core.stages.text_shard.readers import streams

    files = {s.id: list(s.files) for s in streams(spec)}
    assert files["wikimatrix:en-de"] == [f"{tmp_path.resolve()}/world/text/wikimatrix.en-de.tsv.gz"]
    assert files["mono:zh"] == [f"{tmp_path.resolve()}/world/text/mono.zh.txt"]


def test_weakly_supervised_names_wikimatrix_and_cc100(tmp_path: Path) -> None:
    from mvlp_core.stages.text_shard.readers import streams

    spec = load_spec(WEAKLY, workdir=tmp_path)
    found = streams(spec)
    assert len(found) == 20 + 21  # WikiMatrix en-xx for IGLUE's 20 languages, CC-100 for them and English
    files = {s.id: s.files[0] for s in found}
    assert files["wikimatrix:de-en"] == "/shared/data/wikimatrix/WikiMatrix.de-en.tsv.gz"
    assert files["cc100:zh"] == "/shared/data/cc100/zh-Hans.txt.xz"
    assert files["cc100:sw"] == "/shared/data/cc100/sw.txt.xz"
    # the paper's optimiser (App. B.1.3), and the released code's where the paper is silent
    p = spec.pretrain
    assert (p.lr, p.weight_decay, p.warmup_steps, p.max_steps) == (1e-4, 0.2, 24000, 240000)
    assert (tuple(p.betas), p.grad_clip) == ((0.9, 0.999), 10.0)
    # its fine-tuning (App. B.2.2, Tables 7-8)
    from mvlp_core.eval.selection import finetune_settings

    ft = {t: finetune_settings(spec.iglue, t) for t in ("xvnli", "xgqa", "marvl", "xflickrco", "wit")}
    assert {t: (f.lr, f.batch_size, f.epochs) for t, f in ft.items()} == {
        "xvnli": (2e-5, 512, 10),
        "xgqa": (3e-5, 512, 10),
        "marvl": (4e-5, 256, 10),
        "xflickrco": (2e-5, 96, 10),
        "wit": (2e-5, 96, 10),
    }
    assert all((f.weight_decay, f.warmup) == (0.2, 0) for f in ft.values())
    assert spec.iglue.image_size == 384
    assert {t: f.grad_accum for t, f in ft.items()} == {
        "xvnli": 4,
        "xgqa": 4,
        "marvl": 4,
        "xflickrco": 8,
        "wit": 8,
    }


def test_text_section_defaults_to_no_corpora(tmp_path: Path) -> None:
    spec = load_spec(DEMO, ["text.corpora=[]"], workdir=tmp_path)
    assert spec.text.corpora == []
    assert TextSpec().corpora == []


def test_demo_loads_by_name(tmp_path: Path) -> None:
    spec = load_spec("demo", workdir=tmp_path)
    assert spec.name == "demo"


def test_unigen_cc3m_loads(tmp_path: Path) -> None:
    spec = load_spec(UNIGEN, workdir=tmp_path)
    ds = spec.dataset.spec
    assert ds is not None and ds.name == "cc3m"  # the dataset reference is resolved
    assert spec.qa.vllm is not None and spec.qa.vllm.model  # its backend's section is present
    # UniGen's published settings (seed 002, section 4.2)
    p, m = spec.pretrain, spec.model
    assert (p.workers * p.batch_size * p.grad_accum, p.epochs, p.bf16, p.use_gpu) == (512, 30, True, True)
    assert (p.lr, tuple(p.betas), p.weight_decay, p.warmup_steps) == (1e-4, (0.9, 0.98), 0.05, 2000)
    assert (m.size, m.image_size, m.num_query_tokens, m.max_text_len) == ("base", 224, 32, 40)
    assert spec.translate.sample_fraction == 0.1 and spec.languages == ["de", "fr", "cs", "ja", "zh"]
    assert len(spec.text.corpora[0].pairs) == 20  # WikiMatrix: the 19 IGLUE languages and cs
    assert (spec.iglue.finetune.lr, spec.iglue.finetune.epochs, spec.iglue.device) == (3e-5, 10, "cuda")
    # UniGen fine-tunes with AdamW (0.9, 0.98) and no warm-up (§4.2); IGLUE's 10% is the default
    assert (spec.iglue.finetune.betas, spec.iglue.finetune.warmup) == ((0.9, 0.98), 0)


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


@pytest.mark.parametrize(
    "override, said",
    [
        (
            "download.resize_mode=foo",
            ["download.resize_mode", "'foo'", "center_crop", "keep_ratio", "border"],
        ),
        ("download.image_size=-5", ["download.image_size", "-5"]),
        ("download.imagesize=128", ["download.imagesize", "unknown field"]),
        ("languages=[de, xx]", ["languages", "xx", *SUPPORTED_LANGUAGES, ", ".join(SUPPORTED_LANGUAGES)]),
        ("dataset.ref=nosuchdata", ["nosuchdata", "cc12m", "cc3m", "synthetic"]),
    ],
    ids=[
        "bad_value_names_field_value_and_allowed",
        "bad_number_names_field_and_value",
        "unknown_field",
        "unsupported_language_lists_allowed",
        "unknown_dataset_ref_lists_known",
    ],
)
def test_bad_override_error_says_what_is_wrong(tmp_path: Path, override: str, said: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(DEMO, overrides=[override], workdir=tmp_path)
    msg = str(info.value)
    for text in said:
        assert text in msg


def test_english_is_not_a_target(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unsupported target language"):
        load_spec(DEMO, overrides=["languages=[en]"], workdir=tmp_path)


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
    from mvlp_core.eval.units import finetune_settings

    wit, marvl, xvnli = (finetune_settings(spec.iglue, task) for task in ("wit", "marvl", "xvnli"))
    assert (wit.lr, wit.epochs) == (0.0003, 4)
    assert (marvl.lr, marvl.epochs, marvl.max_train_items) == (0.003, 9, 960)
    assert xvnli.lr == 0.003 and xvnli.tasks == {}
    with pytest.raises(SpecError, match="iglue.finetune.tasks"):
        load_spec("demo", ["iglue.finetune.tasks={vqa: {lr: 0.1}}"], workdir=tmp_path)


@pytest.mark.parametrize(
    ("override", "moved", "replacement"),
    [
        ("translate.engine=ray", "translate.engine", "execution.engines.translate"),
        ("iglue.engine=ray", "iglue.engine", "execution.engines.iglue-eval"),
        ("pretrain.ray_address=auto", "pretrain.ray_address", "execution.ray_address"),
        ("cluster.mode=rayjob", "cluster.mode", "execution.submit"),
        ("cluster.namespace=x", "cluster.namespace", "execution.rayjob.namespace"),
        ("model.tiny.hidden_size=32", "model.tiny", "model.size"),
    ],
)
def test_a_moved_key_is_one_line_naming_its_replacement(
    tmp_path: Path, override: str, moved: str, replacement: str
) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(DEMO, overrides=[override], workdir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and f"{moved} was replaced by {replacement}" in message


def test_engines_name_registered_stages_and_their_engines(tmp_path: Path) -> None:
    from mvlp_core import pipeline

    spec = load_spec(DEMO, overrides=["execution.engines={translate: ray}"], workdir=tmp_path)
    pipeline.check(spec)
    assert pipeline.engine_of(spec, "translate") == "ray" and pipeline.engine_of(spec, "align") == "local"
    assert pipeline.engine_of(spec, "pretrain") == "ray"  # its default
    vllm = load_spec(DEMO, overrides=["qa.backend=vllm", "qa.vllm={model: m}"], workdir=tmp_path)
    assert pipeline.engine_of(vllm, "qa") == "ray"  # vLLM runs under Ray Data
    with pytest.raises(SpecError, match="'ray' is not an engine of shard; allowed: local"):
        pipeline.check(load_spec(DEMO, overrides=["execution.engines={shard: ray}"], workdir=tmp_path))
    with pytest.raises(SpecError, match="execution.engines.sharding: unknown stage"):
        pipeline.check(load_spec(DEMO, overrides=["execution.engines={sharding: ray}"], workdir=tmp_path))


def test_named_sizes_are_defined_once_and_dims_override_one_field() -> None:
    from mvlp_core.spec import SIZES, ModelSpec

    micro = ModelSpec(size="micro")
    assert micro.dims.hidden_size == SIZES["micro"]["dims"]["hidden_size"] == 32
    assert (micro.image_size, micro.num_query_tokens) == (32, 4)
    wider = ModelSpec(size="micro", dims={"hidden_size": 48})
    assert wider.dims.hidden_size == 48 and wider.dims.intermediate_size == micro.dims.intermediate_size
    base = ModelSpec()
    assert (base.size, base.image_size, base.num_query_tokens, base.random_init) == ("base", 224, 32, False)
    assert ModelSpec.model_validate(wider.model_dump()) == wider  # a saved spec loads back the same


def test_a_checkpoint_saved_before_the_named_sizes_loads() -> None:
    from mvlp_core.model.unigen.model import upgrade_saved
    from mvlp_core.spec import ModelSpec

    old = {
        "size": "tiny",
        "image_size": 64,
        "num_query_tokens": 32,
        "tiny": {"hidden_size": 96, "num_heads": 4},
    }
    spec = ModelSpec.model_validate(upgrade_saved(old))
    assert (spec.size, spec.dims.hidden_size, spec.image_size) == ("small", 96, 64)
    # trained before itc_text existed: its contrastive text feature was the averaged states
    assert spec.itc_text == "mean"
    assert ModelSpec.model_validate(upgrade_saved({"size": "micro", "itc_text": "cls"})).itc_text == "cls"


def test_iglue_has_no_default_root_and_the_stage_says_what_to_set(tmp_path: Path) -> None:
    from mvlp_core.contract import StageError
    from mvlp_core.stage import Context
    from mvlp_core.stages import iglue_eval

    spec = load_spec(UNIGEN, ["iglue.root=null"], workdir=tmp_path)
    assert IglueSpec().root is None
    with pytest.raises(StageError, match="iglue.root is not set"):
        iglue_eval.plan(Context(spec, {"pretrain": tmp_path / "pretrain"}, tmp_path / "iglue-eval"))


def test_gpu_workers_of_a_fraction_of_a_gpu_are_refused_where_nccl_would_refuse_them() -> None:
    from pydantic import ValidationError

    from mvlp_core.spec.train import PretrainSpec

    with pytest.raises(ValidationError, match=r"gpus_per_worker=0.5 with 2 GPU workers.*NCCL refuses"):
        PretrainSpec(use_gpu=True, workers=2, gpus_per_worker=0.5)
    assert PretrainSpec(use_gpu=True, workers=1, gpus_per_worker=0.5).gpus_per_worker == 0.5
    assert PretrainSpec(use_gpu=False, workers=2, gpus_per_worker=0.5).workers == 2  # CPU ranks: gloo
    assert PretrainSpec(use_gpu=True, workers=4, gpus_per_worker=2).workers == 4


def test_loader_processes_default_to_some_on_gpu_workers_and_none_on_cpu_ones() -> None:
    from mvlp_core.spec.train import PretrainSpec

    assert PretrainSpec().loader_processes(on_gpu=False) == 0
    assert PretrainSpec(cpus_per_worker=8).loader_processes(on_gpu=True) == 4
    assert PretrainSpec(cpus_per_worker=2).loader_processes(on_gpu=True) == 1
    assert PretrainSpec(cpus_per_worker=8).loader_processes(on_gpu=False) == 0
    assert PretrainSpec(loader={"num_workers": 3}).loader_processes(on_gpu=False) == 3
