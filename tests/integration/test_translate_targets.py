"""Real OPUS-MT checkpoints on the hf backend: a multi-target model is steered by the target token its
own vocabulary has (>>cmn_Hans<<, >>ara<<, >>vie<<, ...), a language it lacks stops the run naming
the tokens it has, and a model every language names is loaded once and shared. Tiny multi-target
MarianMT checkpoints, built here, stand in for opus-mt-en-mul and opus-mt-en-ROMANCE."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from mvlp_core import contract
from mvlp_core.spec import HFTranslateSpec
from mvlp_core.stages.translate import STAGE as TRANSLATE_STAGE
from mvlp_core.stages.translate import hf_backend
from mvlp_core.stages.translate.hf_backend import HFBackend
from tests.integration.test_translate_stage import caption, make_spec
from tests.tiny_marian import build_tiny_marian

CORPUS = [caption(r) for r in range(60)]
MUL = (">>ara<<", ">>arz<<", ">>cmn_Hans<<", ">>cmn_Hant<<", ">>jpn<<", ">>jpn_Hani<<", ">>por<<", ">>vie<<")
ROMANCE = tuple(f">>{c}<<" for c in ("ca", "es", "fr", "gl", "it", "pt", "pt_br", "ro"))
FIVE = ["zh", "ar", "vi", "ja", "pt"]
NO_FILTERS = {"length_ratio": {}, "max_repeats": 0, "identical": False, "script_share": 0}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("targets")
    build_tiny_marian(root / "opus-mt-en-mul", CORPUS, favour="▁a", extra_tokens=MUL)
    build_tiny_marian(root / "opus-mt-en-ROMANCE", CORPUS, favour="▁a", extra_tokens=ROMANCE)
    build_tiny_marian(root / "opus-mt-en-de", CORPUS, favour="▁a")
    build_tiny_marian(root / "opus-mt-en-fr", CORPUS, favour="▁a")
    return root


@pytest.fixture
def loads(monkeypatch):
    """The model names `AutoModelForSeq2SeqLM.from_pretrained` is asked for, one per load."""
    names: list[str] = []
    real = AutoModelForSeq2SeqLM.from_pretrained

    def counting(name, **kwargs):
        names.append(str(name))
        return real(name, **kwargs)

    monkeypatch.setattr(hf_backend.AutoModelForSeq2SeqLM, "from_pretrained", counting)
    return names


def backend(model: str, languages: list[str], **hf) -> HFBackend:
    return HFBackend(HFTranslateSpec(model=model, max_new_tokens=4, **hf), languages)


def test_each_language_gets_the_token_the_model_has(models):
    mul = backend(str(models / "opus-mt-en-mul"), FIVE)
    prefixes = {lang: mul.steering(lang).source_prefix for lang in FIVE}
    assert prefixes == {
        "zh": ">>cmn_Hans<< ",
        "ar": ">>ara<< ",
        "vi": ">>vie<< ",
        "ja": ">>jpn<< ",
        "pt": ">>por<< ",
    }
    assert backend(str(models / "opus-mt-en-ROMANCE"), ["pt"]).steering("pt").source_prefix == ">>pt<< "
    pair = backend(str(models / "opus-mt-en-de"), ["de"])
    assert pair.steering("de").source_prefix == "" and pair.steering("de").target_token is None


def test_a_zh_caption_is_translated_with_its_token_first(models, monkeypatch):
    mul = backend(str(models / "opus-mt-en-mul"), ["zh"])
    model, tokenizer = mul.model("zh"), mul.tokenizer("zh")
    sources: list[torch.Tensor] = []
    real = model.generate

    def recording(**kwargs):
        sources.append(kwargs["input_ids"])
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", recording)
    out = mul.generate(["a red circle above a blue square", "a green star"], "zh")
    assert out == ["a a a", "a a a"]  # the model is biased to one piece; what matters is the input
    token_id = tokenizer.convert_tokens_to_ids(">>cmn_Hans<<")
    assert token_id != tokenizer.unk_token_id
    assert [int(row[0]) for row in sources[0]] == [token_id, token_id]


def test_a_language_the_model_lacks_names_the_tokens_it_has(models, download, tmp_path):
    spec = make_spec({"backend": "hf", "hf": {"model": str(models / "opus-mt-en-ROMANCE")}})
    spec.languages = ["pt", "zh"]
    with pytest.raises(contract.StageError) as err:
        TRANSLATE_STAGE.run(spec, {"download": download}, tmp_path / "t")
    message = str(err.value)
    assert "Chinese (zh)" in message and str(models / "opus-mt-en-ROMANCE") in message
    assert ">>cmn_Hans<<" in message  # what it looked for
    assert ">>ca<<, >>es<<, >>fr<<, >>gl<<, >>it<<, >>pt<<, >>pt_br<<, >>ro<<" in message  # what it has
    assert "translate.hf.model" in message and "translate.hf.models.zh" in message
    assert "Helsinki-NLP/opus-mt-en-zh" in message


def test_many_tokens_are_sampled(models, tmp_path):
    many = tuple(f">>x{i:02d}<<" for i in range(45))
    build_tiny_marian(tmp_path / "wide", CORPUS, extra_tokens=many)
    with pytest.raises(contract.StageError) as err:
        backend(str(tmp_path / "wide"), ["vi"]).load()
    assert ">>x00<<, >>x01<<" in str(err.value) and "... (45 in all)" in str(err.value)
    assert ">>x44<<" not in str(err.value)


def test_a_model_every_language_names_is_loaded_once(models, download, tmp_path, loads):
    spec = make_spec(
        {"backend": "hf", "hf": {"model": str(models / "opus-mt-en-mul")}, "filters": NO_FILTERS}
    )
    spec.languages = FIVE
    m = TRANSLATE_STAGE.run(spec, {"download": download}, tmp_path / "t")
    assert loads == [str(models / "opus-mt-en-mul")]
    assert m.samples_out == 5 * 40 and m.extra["per_language"] == dict.fromkeys(FIVE, 40)
    assert set(m.extra["provenance"].values()) == {f"hf:{models / 'opus-mt-en-mul'}"}


def test_pair_models_and_overrides_load_once_per_name(models, loads):
    overrides = {"zh": str(models / "opus-mt-en-mul"), "ar": str(models / "opus-mt-en-mul")}
    mixed = backend(str(models / "{opus}"), ["de", "fr", "zh", "ar"], models=overrides)
    mixed.load()
    assert sorted(loads) == sorted(
        str(models / name) for name in ("opus-mt-en-de", "opus-mt-en-fr", "opus-mt-en-mul")
    )
    assert mixed.model("zh") is mixed.model("ar") and mixed.model("de") is not mixed.model("fr")
    assert mixed.provenance("zh") == f"hf:{models / 'opus-mt-en-mul'}"
    assert mixed.steering("ar").source_prefix == ">>ara<< "


def test_a_missing_token_fails_before_any_weights_load(models, loads):
    with pytest.raises(contract.StageError, match=r"Vietnamese \(vi\)"):
        backend(str(models / "opus-mt-en-ROMANCE"), ["pt", "vi"]).load()
    assert loads == []


@pytest.mark.parametrize(("in_hardware", "dtype"), [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_is_bf16_on_a_gpu_with_it_in_hardware_else_fp16(monkeypatch, in_hardware, dtype):
    """A V100 or T4 emulates bf16 (torch's default check counts that): fp16 there."""

    def supported(including_emulation: bool = True) -> bool:
        return in_hardware or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert hf_backend.resolve_dtype("auto", torch.device("cuda")) == dtype


def test_dtype_is_the_spec_s_and_auto_is_float32_on_cpu(models):
    assert hf_backend.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    half = backend(str(models / "opus-mt-en-de"), ["de"], dtype="bfloat16")
    assert half.model("de").dtype == torch.bfloat16
    assert half.generate(["a red circle"], "de") == ["a a a"]  # generates in that dtype
    assert backend(str(models / "opus-mt-en-de"), ["de"]).model("de").dtype == torch.float32
