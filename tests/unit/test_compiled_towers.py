"""`pretrain.compile`: each family's towers go through torch.compile (dynamo really captures them)
and train exactly as the eager model does, with the state dict a checkpoint needs unchanged; the
shared dynamo cache is sized for every tower. The backend here is aot_eager (dynamo and AOT
autograd, without inductor's minute of C++ compiling on CPU); GPU runs use inductor."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from _model_world import examples, single_thread, tiny_spec, tokenizers  # noqa: F401
from torch._dynamo.utils import counters

from mvlp_core.model.unigen import build_model, collate
from mvlp_core.spec import fingerprint_config, load_spec
from mvlp_core.train import compiled


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    limit = torch._dynamo.config.recompile_limit
    yield
    torch._dynamo.config.recompile_limit = limit
    torch._dynamo.reset()


def _count_compiled_calls(towers: list[torch.nn.Module]) -> list[int]:
    """How often each tower's compiled call runs (a list the towers' calls count into)."""
    calls = [0] * len(towers)
    for i, tower in enumerate(towers):
        inner = tower._compiled_call_impl

        def counted(*args, _inner=inner, _i=i, **kwargs):
            calls[_i] += 1
            return _inner(*args, **kwargs)

        tower._compiled_call_impl = counted
    return calls


def _same_training(eager: torch.nn.Module, batches: list[dict]) -> None:
    """SGD steps of `eager` and of a compiled copy on `batches`: the same losses and weights."""
    twin = copy.deepcopy(eager)
    towers = compiled.compile_towers(twin, backend="aot_eager")
    assert len(towers) == len(eager.towers()) and all(t._compiled_call_impl is not None for t in towers)
    calls = _count_compiled_calls(towers)
    optims = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1) for m in (eager, twin)]
    for i, batch in enumerate(batches):
        losses = []
        for model, optim in zip((eager, twin), optims, strict=True):
            torch.manual_seed(i)  # the in-batch negatives and masking draw from the global RNG
            loss = model(batch)["loss"]
            loss.backward()
            optim.step()
            optim.zero_grad()
            losses.append(loss.item())
        assert losses[1] == pytest.approx(losses[0], rel=1e-5), i
    assert counters["stats"]["unique_graphs"] >= len(towers)  # dynamo captured every tower
    # the forward calls each tower itself (not a submodule of it, which would bypass the compile)
    assert all(calls), calls
    assert list(twin.state_dict()) == list(eager.state_dict())  # no `_orig_mod.` keys
    for (name, a), b in zip(eager.state_dict().items(), twin.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    assert torch._dynamo.config.recompile_limit >= compiled.ENTRIES_PER_TOWER * len(towers)


@pytest.mark.slow  # ~35 s of dynamo tracing on 2 cores; compile is an opt-in perf setting (make test-slow)
def test_unigen_towers_compile_and_train_as_eager(fresh_dynamo) -> None:
    tok = tokenizers()
    spec = tiny_spec(freeze=["vision"])
    torch.manual_seed(0)
    model = build_model(spec, tok)
    assert model.towers() == [
        model.image_encoder.vision_model,
        model.image_encoder.qformer,
        model.text_encoder,
        model.decoder.transformer,
    ]
    # two batch sizes: the second makes dynamo recompile the towers for a dynamic batch dimension
    _same_training(model, [collate(examples(spec, n), tok, spec) for n in (6, 8)])


@pytest.mark.slow  # ~12 s of dynamo tracing; compile is an opt-in perf setting (make test-slow)
def test_wsmvlp_towers_compile_and_train_as_eager(fresh_dynamo) -> None:
    from test_wsmvlp_model import batch, micro

    model = micro()
    assert model.towers() == [model.vision, *model.text_layers, *model.fusion_layers]
    _same_training(model, [batch(model, seed=i) for i in range(2)])


def test_compile_is_a_perf_only_setting_off_by_default(tmp_path) -> None:
    plain = load_spec("demo", [], tmp_path)
    on = load_spec("demo", ["pretrain.compile=true", "pretrain.compile_mode=reduce-overhead"], tmp_path)
    assert plain.pretrain.compile is False and plain.pretrain.compile_mode == "default"
    assert on.pretrain.compile and on.pretrain.compile_mode == "reduce-overhead"
    assert fingerprint_config(plain.pretrain) == fingerprint_config(on.pretrain)


@pytest.mark.parametrize("on", [False, True])
def test_a_rank_builds_its_model_with_compiled_towers_as_the_spec_says(monkeypatch, tmp_path, on) -> None:
    import types

    import mvlp_core.model
    from mvlp_core.train.job import TrainJob, build

    model = torch.nn.Linear(2, 2)
    family = types.SimpleNamespace(load=lambda folder: model, train_batches=lambda *args: "batches")
    monkeypatch.setattr(mvlp_core.model, "family", lambda name: family)
    calls = []
    monkeypatch.setattr(compiled, "compile_towers", lambda m, mode: calls.append((m, mode)))
    spec = load_spec(
        "demo", [f"pretrain.compile={str(on).lower()}", "pretrain.compile_mode=max-autotune"], tmp_path
    )
    assert build(TrainJob(spec, tmp_path, tmp_path / "init", [], []), rank=0, world=1) == (model, "batches")
    assert calls == ([(model, "max-autotune")] if on else [])


def test_the_cache_limit_is_raised_under_either_of_its_names() -> None:
    """A lent GPU machine brings its own torch: before 2.7 the limit was `cache_size_limit`."""
    from types import SimpleNamespace

    old, new = SimpleNamespace(cache_size_limit=8), SimpleNamespace(recompile_limit=64)
    compiled.raise_recompile_limit(old, 32)
    compiled.raise_recompile_limit(new, 32)
    assert (old.cache_size_limit, new.recompile_limit) == (32, 64) and not hasattr(old, "recompile_limit")


def test_cuda_graphs_with_gradient_accumulation_are_refused(tmp_path) -> None:
    """CUDA graph trees lose accumulated gradients (pytorch#169545): the spec says so up front."""
    with pytest.raises(ValueError, match="reduce-overhead with grad_accum=2.*compile_mode=default"):
        load_spec(
            "demo",
            ["pretrain.compile=true", "pretrain.compile_mode=reduce-overhead", "pretrain.grad_accum=2"],
            tmp_path,
        )
    for ok in (["pretrain.compile_mode=reduce-overhead"], ["pretrain.compile=true", "pretrain.grad_accum=2"]):
        assert load_spec("demo", [*ok, "pretrain.grad_accum=2"], tmp_path).pretrain.grad_accum == 2
