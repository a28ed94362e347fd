"""model.vision by hub name on a fresh cache: the BLIP-2 encoder's files come through the shared
Hugging Face cache from a loopback stand-in for the hub (`_fake_hub`), only the shards that hold
the ViT and Q-Former are fetched, and HF_HUB_OFFLINE=1 reads the cache alone.

The client reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE into `huggingface_hub.constants` at
import, so the tests set those constants (and the URL template built from the endpoint) instead.
"""

from __future__ import annotations

import json

import pytest
import torch
from _fake_hub import serving
from _model_world import tiny_blip2

from mvlp_core.contract import StageError
from mvlp_core.model.vision import PREFIXES, load_blip2_encoder

REPO = "fake-org/blip2-tiny"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny Blip2ForConditionalGeneration saved in small shards: some hold only the OPT model."""
    blip2 = tiny_blip2(opt_width=64, opt_layers=2, opt_vocab=500)
    folder = tmp_path_factory.mktemp("blip2")
    blip2.save_pretrained(folder, max_shard_size="100KB")
    return folder


@pytest.fixture
def hub(checkpoint, tmp_path, monkeypatch):
    """The fake hub serving `checkpoint` as REPO, the client pointed at it with an empty cache."""
    import huggingface_hub.constants as constants

    with serving({REPO: checkpoint}) as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        template = server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield server


def _offline(monkeypatch, offline: bool) -> None:
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


def _llm_only_shards(folder) -> set[str]:
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    needed = {f for k, f in weight_map.items() if k.startswith(PREFIXES)}
    return set(weight_map.values()) - needed


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_hub_name_loads_on_a_fresh_cache_without_the_llm_shards(hub, checkpoint, tmp_path):
    from_hub = load_blip2_encoder(REPO, num_query_tokens=4)

    assert _same_weights(from_hub, load_blip2_encoder(str(checkpoint), num_query_tokens=4))
    skipped = _llm_only_shards(checkpoint)
    assert skipped, "the tiny checkpoint must have language-model-only shards"
    fetched = hub.fetched(REPO)
    assert "model.safetensors.index.json" in fetched and not fetched & skipped
    assert any((tmp_path / "hf-cache").rglob("model.safetensors.index.json"))  # the shared cache


def test_offline_after_a_load_uses_the_cache_alone(hub, checkpoint, monkeypatch):
    online = load_blip2_encoder(REPO, num_query_tokens=4)
    hub.requests.clear()
    _offline(monkeypatch, True)

    assert _same_weights(load_blip2_encoder(REPO, num_query_tokens=4), online)
    assert hub.requests == []


def test_offline_on_an_empty_cache_is_one_line_naming_the_fix(hub, monkeypatch):
    _offline(monkeypatch, True)
    with pytest.raises(StageError) as err:
        load_blip2_encoder(REPO, num_query_tokens=4)

    message = str(err.value)
    print(message)
    assert "\n" not in message and REPO in message and "HF_HUB_OFFLINE=1" in message
    assert "set model.vision to a local BLIP-2 checkpoint folder" in message and "HF_HOME" in message
    assert hub.requests == []


def test_a_missing_repo_is_one_line_naming_the_fix(hub):
    with pytest.raises(StageError) as err:
        load_blip2_encoder("fake-org/no-such-model", num_query_tokens=4)

    message = str(err.value)
    print(message)
    assert "\n" not in message and "fake-org/no-such-model" in message
    assert "RepositoryNotFoundError" in message and "local BLIP-2 checkpoint folder" in message
