"""translate spec: only the active backend's section and output-changing knobs are fingerprinted."""

from __future__ import annotations

import pytest

from mvlp_core.spec import SpecError, load_spec
from mvlp_core.stages.translate.stage import config

HTTP = "translate.http={protocol: openai, base_url: 'http://127.0.0.1:9/v1', model: m, api_key_env: K}"


def spec(tmp_path, *overrides):
    return load_spec("unigen-cc3m", list(overrides), tmp_path)


def test_only_the_active_backend_is_fingerprinted(tmp_path):
    base = config(spec(tmp_path))
    assert "hf" in base["translate"] and not {"ctranslate2", "http", "import_"} & set(base["translate"])
    # Other backends' sections, the engine and Ray/perf knobs do not change the fingerprint.
    same = config(
        spec(
            tmp_path,
            HTTP,
            "execution.engines={translate: ray}",
            "translate.ray.concurrency=8",
            "translate.ray.num_gpus=1",
            "translate.hf.batch_tokens=99",
        )
    )
    assert same == base
    assert config(spec(tmp_path, "translate.hf.num_beams=1")) != base
    assert config(spec(tmp_path, "translate.filters.max_repeats=5")) != base
    http = config(spec(tmp_path, HTTP, "translate.backend=http"))["translate"]
    assert "http" in http and "hf" not in http and "max_retries" not in http["http"]
    # where the server is and which variable holds its key never change the output
    assert http["http"]["model"] == "m" and not {"base_url", "api_key_env"} & set(http["http"])


def test_backend_sections_are_required_and_checked(tmp_path):
    with pytest.raises(SpecError, match="translate.ctranslate2: required"):
        spec(tmp_path, "translate.backend=ctranslate2")
    with pytest.raises(SpecError, match="translate.engine was replaced by execution.engines.translate"):
        spec(tmp_path, "translate.engine=ray")
    with pytest.raises(SpecError, match="api_key"):
        spec(tmp_path, HTTP, "translate.http.api_key=sk-123")  # keys never live in the spec
