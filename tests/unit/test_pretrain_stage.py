"""The pretrain stage's settings that come from the data and the engine: steps from epochs (UniGen
trains 30 epochs at a global batch of 512) and the ranks that make the global batch."""

from __future__ import annotations

from mvlp_core.spec import load_spec
from mvlp_core.stages.pretrain import config, global_batch, with_steps_from_epochs


def test_epochs_set_the_steps_from_the_data_and_the_global_batch() -> None:
    paper = load_spec(
        "demo", ["models=null", "pretrain.epochs=30", "pretrain.workers=8", "pretrain.batch_size=64"]
    )
    assert global_batch(paper) == 512
    assert with_steps_from_epochs(paper, 2_800_000).pretrain.max_steps == 164_063  # ceil(30 x 2.8M / 512)
    accumulated = load_spec(
        "demo", ["models=null", "pretrain.epochs=1", "pretrain.batch_size=16", "pretrain.grad_accum=4"]
    )
    assert global_batch(accumulated) == 2 * 16 * 4  # the demo's 2 workers
    steps_only = load_spec("demo", ["models=null", "pretrain.max_steps=77"])
    assert with_steps_from_epochs(steps_only, 10**6).pretrain.max_steps == 77  # no epochs: as given


def test_one_rank_on_the_local_engine_and_the_ranks_in_the_fingerprint() -> None:
    local = load_spec("demo", ["models=null", "execution.engines={pretrain: local}", "pretrain.workers=8"])
    assert global_batch(local) == local.pretrain.batch_size  # the plain loop is one process
    ray8 = load_spec("demo", ["models=null", "pretrain.workers=8"])
    assert config(local)["ranks"] == 1 and config(ray8)["ranks"] == 8
    assert config(local) != config(ray8)  # the same spec trained another way is another model


def test_each_model_of_a_spec_has_its_own_config_and_steps() -> None:
    both = load_spec("demo", ["pretrain.epochs=2"])
    cfg = config(both)["models"]
    assert set(cfg) == {"unigen", "wsmvlp", "ernie"}
    assert (
        cfg["unigen"]["pretrain"]["weight_decay"] == 0.05 and cfg["wsmvlp"]["pretrain"]["weight_decay"] == 0.2
    )
    runs = dict(both.trained_models())
    # a multi-stream family's epochs count its image stream: 16 images a step in the demo
    assert global_batch(runs["wsmvlp"]) == 16 and global_batch(runs["unigen"]) == 2 * 16
    assert with_steps_from_epochs(runs["wsmvlp"], 2000).pretrain.max_steps == 250
    assert with_steps_from_epochs(runs["unigen"], 2000).pretrain.max_steps == 125
