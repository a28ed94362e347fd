"""The `ctranslate2` backend: a tiny MarianMT converted with CTranslate2's converter decodes
greedily to exactly the tokens transformers' generate produces, and runs the stage."""

from __future__ import annotations

import pytest

from mvlp_core import contract
from mvlp_core.spec import CT2TranslateSpec, HFTranslateSpec
from mvlp_core.stages.translate import STAGE as TRANSLATE_STAGE
from mvlp_core.stages.translate.ct2_backend import CT2Backend, convert
from mvlp_core.stages.translate.hf_backend import HFBackend
from tests.integration.test_translate_stage import caption, make_spec, read_output
from tests.tiny_marian import build_tiny_marian

SENTENCES = [caption(r) for r in range(60)] + ["two dogs play in the snow", "a man rides a red bicycle"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct2")
    hf = build_tiny_marian(
        root / "hf" / "opus-mt-en-de", SENTENCES, d_model=32, layers=2, seed=3, eos_bias=-2.0
    )
    convert(str(hf), root / "ct2" / "opus-mt-en-de")
    return root


def test_greedy_ct2_equals_greedy_hf_token_for_token(models):
    hf = HFBackend(
        HFTranslateSpec(model=str(models / "hf" / "{opus}"), batch_tokens=64, max_new_tokens=20), ["de"]
    )
    ct2 = CT2Backend(
        CT2TranslateSpec(
            model=str(models / "ct2" / "{opus}"),
            compute_type="float32",
            device="cpu",
            batch_tokens=64,
            max_decoding_length=20,
        ),
        ["de"],
    )
    texts = SENTENCES[::5]
    tok = hf.tokenizer("de")
    enc = tok(texts, return_tensors="pt", padding=True)
    generated = hf.model("de").generate(**enc, num_beams=1, do_sample=False, max_new_tokens=20)
    special = {tok.pad_token_id, tok.eos_token_id}
    hf_ids = [[i for i in row.tolist() if i not in special] for row in generated]
    sources = [tok.convert_ids_to_tokens(x) for x in tok(texts)["input_ids"]]
    results = ct2.model("de").translate_batch(
        sources, beam_size=1, max_decoding_length=20, max_batch_size=64, batch_type="tokens"
    )
    ct2_ids = [tok.convert_tokens_to_ids(r.hypotheses[0]) for r in results]
    assert sum(len(x) for x in hf_ids) > len(texts)  # the random model writes something
    assert ct2_ids == hf_ids
    assert ct2.generate(texts, "de") == hf.generate(texts, "de")


def test_ct2_stage_and_int8(models, tmp_path, download):
    model = str(models / "ct2" / "{opus}")
    spec = make_spec(
        {
            "backend": "ctranslate2",
            "ctranslate2": {"model": model, "beam_size": 2},
            "filters": {"length_ratio": {}, "max_repeats": 0, "identical": False, "script_share": 0},
        }
    )
    spec.languages = ["de"]
    m = TRANSLATE_STAGE.run(spec, {"download": download}, tmp_path / "t")  # auto: int8 on this CPU
    assert m.samples_in == 40 and m.samples_out + sum(m.rejects.values()) == 40
    assert set(m.rejects) <= {"empty_output"}
    assert m.extra["provenance"] == {"de": f"ctranslate2:{models}/ct2/opus-mt-en-de"}
    if m.samples_out:
        assert set(read_output(tmp_path / "t").column("lang").to_pylist()) == {"de"}


def test_not_a_converted_folder(models, tmp_path, download):
    spec = make_spec({"backend": "ctranslate2", "ctranslate2": {"model": str(models / "hf" / "{opus}")}})
    with pytest.raises(contract.StageError) as err:
        TRANSLATE_STAGE.run(spec, {"download": download}, tmp_path / "t")
    message = str(err.value)
    assert "opus-mt-en-de is not a CTranslate2 model folder" in message and "convert(" in message
