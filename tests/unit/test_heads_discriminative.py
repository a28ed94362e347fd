"""IGLUE's discriminative heads (VOLTA's protocol) on a small real stand-in for a family with a fused
[CLS]: each head trains the head and the unfrozen body, xGQA's target spans the answer vocabulary,
MaRVL reads two fused vectors, the retrieval re-rank stays inside the dual encoder's top k, a saved
TaskModel loads back to the same logits, short fine-tunes learn XVNLI and MaRVL, and the iglue-eval
units run the discriminative path from the pretrained folder to test results."""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _mini_iglue import COLOURS, mini_iglue, png, tone
from iglue_data import REAL_IGLUE
from PIL import Image
from torch import nn

from mvlp_core.contract import StageError
from mvlp_core.eval import data_xgqa, heads_discriminative, task_model
from mvlp_core.eval.finetune import finetune, frozen
from mvlp_core.eval.model_api import EvalModel
from mvlp_core.eval.prepared import ImageCache, Prepared
from mvlp_core.model import EvalBindings, families
from mvlp_core.model.parts.augment import AugmentedSquare
from mvlp_core.model.parts.images import RGBSquare

VOCAB = 211
FREEZE = ("vis_encoder", "txt_encoder")  # the stand-in family's FINETUNE_FREEZE: its uni-modal encoders


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """One torch thread: the tiny model is slower with more threads than the shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# the stand-in family ------------------------------------------------------------------------------


class FusedStandIn(nn.Module):
    """The wsmvlp model contract in miniature: uni-modal encoders (2x2-pooled pixels, mean word
    embeddings), a fusion layer reading both (the fused [CLS]), an ITM head and the dual encoder's
    projections. No ``hidden_size``: the heads must read the width off ``fused``."""

    def __init__(self, hidden: int = 16, embed: int = 8) -> None:
        super().__init__()
        self.config = {"family": "wsmvlp", "hidden": hidden, "embed": embed}
        self.vis_encoder = nn.Linear(12, hidden)
        self.txt_encoder = nn.Embedding(VOCAB, hidden, padding_idx=0)
        self.fusion = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.Tanh())
        self.itm_head = nn.Linear(hidden, 1)
        self.vision_proj = nn.Linear(hidden, embed)
        self.text_proj = nn.Linear(hidden, embed)

    def _image(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dtype == torch.uint8:  # a real family's transform (images.RGBSquare)
            pixels = pixels.float() / 255
        return self.vis_encoder(F.adaptive_avg_pool2d(pixels, 2).flatten(1))

    def _text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).float()
        return (self.txt_encoder(ids) * m).sum(1) / m.sum(1).clamp(min=1)

    def fused(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        v, t = self._image(pixels), self._text(ids, mask)
        return self.fusion(torch.cat([v, t, v * t], dim=-1))

    def match_logit(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.itm_head(self.fused(pixels, ids, mask))[:, 0]

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.vision_proj(self._image(pixels)), dim=-1)

    def text_features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(self._text(ids, mask)), dim=-1)

    def itc_temperature(self) -> float:
        return 0.07

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config))
        torch.save(self.state_dict(), folder / "weights.pt")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> FusedStandIn:
        config = json.loads((Path(folder) / "config.json").read_text())
        model = cls(config["hidden"], config["embed"])
        model.load_state_dict(torch.load(Path(folder) / "weights.pt"))
        return model


def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Words hashed to ids (0 pads), and the mask."""
    rows = [[zlib.crc32(w.encode()) % (VOCAB - 1) + 1 for w in t.lower().split()] or [1] for t in texts]
    n = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (n - len(r)) for r in rows])
    return ids, (ids > 0).long()


def transform(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.float32) / 255).permute(2, 0, 1)


def bindings(
    model: FusedStandIn, image_size: int | None = None, max_text_len: int | None = None
) -> EvalBindings:
    """The family's data side: image transform and text encoding (the heads bring their own collate);
    it reads 8 px images only."""
    assert image_size is None, "the stand-in reads 8 px images only"
    return EvalBindings(transform, encode)


STANDIN_FAMILY = SimpleNamespace(
    NAME="wsmvlp",
    IGLUE={t: "discriminative" for t in ("xvnli", "xgqa", "marvl", "xflickrco", "wit")},
    FINETUNE_FREEZE=FREEZE,
    load=FusedStandIn.from_pretrained,
    eval_bindings=bindings,
)


@pytest.fixture
def standin_family(monkeypatch: pytest.MonkeyPatch) -> None:
    """``families.family('wsmvlp')`` is the stand-in family (its real package is being written)."""
    real = families.family

    def family(name: str) -> ModuleType | SimpleNamespace:
        return STANDIN_FAMILY if name == "wsmvlp" else real(name)

    monkeypatch.setattr(families, "family", family)


def standin(seed: int = 0) -> EvalModel:
    torch.manual_seed(seed)
    model = FusedStandIn()
    b = bindings(model)
    return EvalModel(model, b.collate, b.example, b.transform, b.encode, model.save_pretrained, "wsmvlp")


def pixels(colours: list[str]) -> torch.Tensor:
    rng = random.Random(0)
    return torch.stack([transform(Image.new("RGB", (8, 8), tone(rng, c))) for c in colours])


def batch_for(em: EvalModel, task: str, n: int = 6) -> dict[str, Any]:
    names = list(COLOURS)
    cols = [names[i % 3] for i in range(n)]
    if task == "marvl":
        images = torch.stack([pixels(cols), pixels(cols[::-1])], dim=1)
    else:
        images = pixels(cols)
    n_labels = len(em.model.labels) if isinstance(em.model, task_model.TaskModel) else 0
    exs = [
        task_model.Example(images[i], f"the picture is {cols[i]}", i % max(n_labels, 1), f"img{i // 2}")
        for i in range(n)
    ]
    return em.collate(exs)


LABELS = {"xvnli": ("entailment", "neutral", "contradiction"), "xgqa": ("red", "green", "blue", "yes", "no")}


def wrapped(task: str, seed: int = 0) -> EvalModel:
    return task_model.wrap(standin(seed), task, {**LABELS, "marvl": ("true", "false")}.get(task, ()))


# forward / backward --------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["xvnli", "xgqa", "marvl", "xflickrco"])
def test_each_head_trains_the_head_and_the_body_but_not_what_is_frozen(task: str) -> None:
    em = wrapped(task)
    prefixes = heads_discriminative.freeze_prefixes(task, [], FREEZE)
    tm = em.model
    with frozen(tm, prefixes):
        loss = tm(batch_for(em, task))["loss"]
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
    grads = {n: p.grad for n, p in tm.named_parameters()}
    if task in heads_discriminative.CLASSIFIER_TASKS:
        assert prefixes == ("base.vis_encoder", "base.txt_encoder")
        assert all(g is None for n, g in grads.items() if n.startswith(prefixes))
        assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in grads if n.startswith("head."))
        assert grads["base.fusion.0.weight"].abs().sum() > 0
        assert grads["base.itm_head.weight"] is None  # not read by a classifier head
    else:  # retrieval: no new parameters; ITM and ITC train the family's head, projections and encoders
        assert prefixes == () and not list(tm.head.parameters())
        for name in ("itm_head.weight", "fusion.0.weight", "vision_proj.weight", "text_proj.weight"):
            assert grads[f"base.{name}"].abs().sum() > 0, name
        assert grads["base.vis_encoder.weight"].abs().sum() > 0


def test_spec_freeze_prefixes_are_named_inside_the_task_model() -> None:
    got = heads_discriminative.freeze_prefixes("xvnli", ["fusion", "head.0"], FREEZE)
    assert got == ("base.fusion", "head.0", "base.vis_encoder", "base.txt_encoder")
    assert heads_discriminative.freeze_prefixes("wit", ["base.fusion"], FREEZE) == ("base.fusion",)


def test_head_shapes_follow_volta() -> None:
    tm = wrapped("xvnli").model
    assert isinstance(tm.head, nn.Linear) and (tm.head.in_features, tm.head.out_features) == (16, 3)
    mlp = wrapped("xgqa").model.head
    assert [type(m) for m in mlp] == [nn.Linear, nn.GELU, nn.LayerNorm, nn.Linear]
    assert (mlp[0].in_features, mlp[0].out_features, mlp[3].out_features) == (16, 32, 5)
    pair = wrapped("marvl").model.head
    assert (pair[0].in_features, pair[0].out_features, pair[3].out_features) == (32, 32, 2)
    assert wrapped("xgqa").model.HEAD_PARAMS == ("head.",)


def test_xgqa_is_bce_over_the_whole_answer_vocabulary(tmp_path: Path) -> None:
    """IGLUE's trainval_ans2label.json (1,842 answers; the real one where present), one-hot targets,
    BCE with logits times the answer count as VOLTA; an answer outside the vocabulary is all-zero."""
    real = REAL_IGLUE / "gqa/annotations/trainval_ans2label.json"
    root = REAL_IGLUE if real.exists() else tmp_path
    if not real.exists():
        folder = tmp_path / "gqa/annotations"
        folder.mkdir(parents=True)
        (folder / "trainval_ans2label.json").write_text(json.dumps({f"a{i}": i for i in range(1842)}))
    vocab = heads_discriminative.answer_vocabulary(root, None)
    assert len(vocab) == 1842 and vocab == data_xgqa.load_answer_vocab(
        root / "gqa/annotations/trainval_ans2label.json"
    )
    em = task_model.wrap(standin(), "xgqa", vocab)
    batch = batch_for(em, "xgqa", 4)
    batch["labels"] = torch.tensor([0, 5, 1841, -1])
    logits = em.model.logits(batch)
    assert logits.shape == (4, 1842)
    target = task_model.answer_targets(batch["labels"], 1842)
    assert target.shape == (4, 1842) and target.sum(1).tolist() == [1, 1, 1, 0] and target[2, 1841] == 1
    expected = F.binary_cross_entropy_with_logits(logits, target) * 1842
    assert torch.allclose(em.model(batch)["loss"], expected)


def test_xgqa_without_the_vocabulary_file_takes_the_training_answers(tmp_path: Path) -> None:
    train = tmp_path / "train.json"
    questions = {str(i): {"question": "q", "imageId": "1", "answer": a} for i, a in enumerate("yynnnbr")}
    train.write_text(json.dumps(questions))
    assert heads_discriminative.answer_vocabulary(tmp_path, train) == ["n", "y", "b", "r"]
    with pytest.raises(StageError, match="trainval_ans2label.json"):
        heads_discriminative.answer_vocabulary(tmp_path, tmp_path / "absent.json")


def test_marvl_concatenates_the_left_and_right_fused_vectors() -> None:
    em = wrapped("marvl")
    tm, batch = em.model, batch_for(em, "marvl", 4)
    px, ids, mask = batch["pixel_values"], batch["ids"], batch["mask"]
    left, right = tm.base.fused(px[:, 0], ids, mask), tm.base.fused(px[:, 1], ids, mask)
    assert torch.allclose(tm.features(batch), torch.cat([left, right], dim=1), atol=1e-6)
    swapped = {**batch, "pixel_values": px.flip(1)}
    assert torch.allclose(tm.features(swapped), torch.cat([right, left], dim=1), atol=1e-6)
    assert not torch.allclose(tm.logits(swapped), tm.logits(batch))  # the head tells left from right


# retrieval re-rank --------------------------------------------------------------------------------


class _TableModel(nn.Module):
    """Cosines and match logits from tables: image i is a tensor filled with i, caption c is "c"."""

    def __init__(self, sim: np.ndarray, match: np.ndarray) -> None:
        super().__init__()
        self.sim, self.match = torch.tensor(sim), torch.tensor(match)
        self.w = nn.Parameter(torch.zeros(1))  # a device to be on

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.eye(self.sim.shape[1], dtype=self.sim.dtype)[pixels[:, 0, 0, 0].long()]

    def text_features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.sim[ids[:, 0]]

    def match_logit(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.match[ids[:, 0], pixels[:, 0, 0, 0].long()]


def _table_em(sim: np.ndarray, match: np.ndarray) -> tuple[EvalModel, list[torch.Tensor], list[str]]:
    def enc(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.tensor([[int(t)] for t in texts])
        return ids, torch.ones_like(ids)

    em = EvalModel(_TableModel(sim, match), None, None, None, enc, None, "wsmvlp")
    images = [torch.full((3, 2, 2), float(i)) for i in range(sim.shape[1])]
    return em, images, [str(c) for c in range(sim.shape[0])]


def test_the_rerank_never_promotes_an_item_outside_the_dual_encoders_top_k() -> None:
    sim = np.array([[0.9, 0.8, 0.1, 0.0], [0.0, 0.2, 0.3, 0.7]])
    match = np.array([[-5.0, 5.0, 100.0, 0.0], [0.0, 0.0, 50.0, -50.0]])
    em, images, captions = _table_em(sim, match)
    ir, tr = heads_discriminative.score_matrices(em, images, captions, k=2, batch_size=3)
    order = np.argsort(-ir, axis=1, kind="stable").tolist()
    # caption 0: top-2 {0, 1} reordered by ITM; image 2, which ITM likes best, stays outside
    assert order[0] == [1, 0, 2, 3]
    assert order[1] == [2, 3, 1, 0]  # top-2 {3, 2}: ITM puts 2 first; then cosine order
    # TR: each image's top-2 captions by cosine (both, with 2 captions) re-ranked by ITM
    assert np.argsort(-tr[:, 2]).tolist() == [0, 1] and np.argsort(-tr[:, 3]).tolist() == [0, 1]


@pytest.mark.parametrize("negatives", ["hard", "random"])
def test_retrieval_itm_negatives_are_drawn_by_the_contrastive_similarity(
    negatives: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """iglue.finetune.itm_negatives: hard (ALBEF's, the weakly-supervised paper's released
    fine-tune) draws each positive's negatives ∝ softmax of the image-text logits, never from its
    own image's captions; random draws them uniformly; the ITM pairs are the positives, then those
    negatives."""
    em = wrapped("xflickrco")
    em.model.itm_negatives = negatives
    seen = []
    real = task_model.mine_hard_negatives

    def spy(scores: torch.Tensor, positive: torch.Tensor, generator=None):
        picked = real(scores, positive, generator)
        seen.append((scores.detach().clone(), positive.clone(), picked))
        return picked

    monkeypatch.setattr(task_model, "mine_hard_negatives", spy)
    batch = batch_for(em, "xflickrco")  # 6 captions, two of each of three images
    em.model(batch)
    scores, positive, (img_a, txt_a, img_b, txt_b) = seen[0]
    base = em.model.base
    with torch.no_grad():
        logits = (
            base.image_features(batch["pixel_values"]) @ base.text_features(batch["ids"], batch["mask"]).T
        )
        logits = logits / base.itc_temperature()
    if negatives == "hard":
        assert torch.allclose(scores, logits, atol=1e-5) and scores.std() > 0
    else:
        assert torch.equal(scores, torch.zeros_like(scores))
    assert torch.equal(positive, batch["group"][:, None] == batch["group"][None, :])
    assert not positive[img_a, txt_a].any() and not positive[img_b, txt_b].any()


def test_the_rerank_orders_each_querys_top_k_by_itm_and_keeps_the_rest_by_cosine() -> None:
    rng = np.random.default_rng(0)
    sim, match = rng.uniform(-1, 1, (5, 7)), rng.normal(0, 10, (5, 7))
    em, images, captions = _table_em(sim, match)
    k = 3
    ir, tr = heads_discriminative.score_matrices(em, images, captions, k=k, batch_size=4)
    for c in range(5):
        top = np.argsort(-sim[c], kind="stable")[:k]
        order = np.argsort(-ir[c], kind="stable")
        assert set(order[:k]) == set(top)
        assert list(order[:k]) == sorted(top, key=lambda i: -(match[c, i] + sim[c, i]))
        assert list(order[k:]) == [i for i in np.argsort(-sim[c], kind="stable") if i not in top]
    for i in range(7):
        top = np.argsort(-sim[:, i], kind="stable")[:k]
        assert set(np.argsort(-tr[:, i], kind="stable")[:k]) == set(top)


# persistence ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["xvnli", "xgqa", "marvl", "wit"])
def test_a_saved_task_model_loads_back_to_identical_logits(
    task: str, tmp_path: Path, standin_family: None
) -> None:
    em = wrapped(task, seed=3)
    with torch.no_grad():  # move the body off its start, so the test sees the fine-tuned base saved
        em.model.base.fusion[0].weight.add_(0.1)
    em.save(tmp_path / "tuned")
    meta = json.loads((tmp_path / "tuned/task_model.json").read_text())
    assert meta["task"] == task and meta["hidden"] == 16
    assert json.loads((tmp_path / "tuned/base/config.json").read_text())["family"] == "wsmvlp"
    back = EvalModel.load(tmp_path / "tuned")
    assert isinstance(back.model, task_model.TaskModel) and back.family == "wsmvlp"
    assert back.model.labels == em.model.labels
    em.model.eval()
    back.model.eval()
    batch = batch_for(em, task)
    with torch.no_grad():
        if task == "wit":
            args = (batch["pixel_values"], batch["ids"], batch["mask"])
            assert torch.equal(back.model.base.match_logit(*args), em.model.base.match_logit(*args))
        else:
            assert torch.equal(back.model.logits(batch), em.model.logits(batch))


# short fine-tunes on separable synthetic sets ------------------------------------------------------


def _xvnli_items(folder: Path, n: int, seed: int) -> list[Prepared]:
    """An image of one colour; "the picture is X" is entailed when X is its colour, contradicted
    otherwise; "a photo taken somewhere" is neutral."""
    rng, items = random.Random(seed), []
    for i in range(n):
        colour = rng.choice(list(COLOURS))
        label = ["entailment", "neutral", "contradiction"][i % 3]
        other = rng.choice([c for c in COLOURS if c != colour])
        text = {"entailment": f"the picture is {colour}", "contradiction": f"the picture is {other}"}
        image = png(folder / f"{seed}-{i}.png", tone(rng, colour))
        items.append(
            Prepared(f"{seed}-{i}", (image,), text.get(label, "a photo taken somewhere"), "en", label)
        )
    return items


def _marvl_items(folder: Path, n: int, seed: int) -> list[Prepared]:
    """Two images; "the left/right image is X" is true when that side has colour X."""
    rng, items = random.Random(seed), []
    for i in range(n):
        left, right = rng.choice(list(COLOURS)), rng.choice(list(COLOURS))
        side, truth = rng.choice(["left", "right"]), i % 2 == 0
        actual = left if side == "left" else right
        said = actual if truth else rng.choice([c for c in COLOURS if c != actual])
        images = (
            png(folder / f"{seed}-{i}-l.png", tone(rng, left)),
            png(folder / f"{seed}-{i}-r.png", tone(rng, right)),
        )
        gold = "true" if truth else "false"
        items.append(Prepared(f"{seed}-{i}", images, f"the {side} image is {said}", "en", gold))
    return items


@pytest.mark.parametrize(
    ("task", "make", "chance"), [("xvnli", _xvnli_items, 1 / 3), ("marvl", _marvl_items, 1 / 2)]
)
def test_a_short_finetune_learns_a_separable_task(
    task: str, make: Any, chance: float, tmp_path: Path
) -> None:
    """The production pieces end to end: streamed training examples, finetune() with the family's
    uni-modal encoders frozen and the head at a higher rate, predictions by the head."""
    em = task_model.wrap(standin(1), task, {"xvnli": LABELS["xvnli"], "marvl": ("true", "false")}[task])
    cache = ImageCache(transform, 2**20)
    train, test = make(tmp_path, 240, 0), make(tmp_path, 90, 1)

    def accuracy(em: EvalModel) -> float:
        preds, rejects = heads_discriminative.predict(em, test, cache, batch_size=32)
        assert rejects == []
        return sum(preds[i.id] == i.gold for i in test) / len(test)

    start = accuracy(em)
    frozen_before = em.model.base.vis_encoder.weight.detach().clone()
    result = finetune(
        em,
        heads_discriminative.training_examples(em, train, cache),
        accuracy,
        epochs=20,
        batch_size=16,
        lr=1e-2,
        head_lr_scale=3.0,
        weight_decay=0.0,
        freeze=heads_discriminative.freeze_prefixes(task, [], FREEZE),
    )
    assert result.best_dev >= chance + 0.4, (start, result.history)
    assert torch.equal(em.model.base.vis_encoder.weight, frozen_before)


# the iglue-eval units on the discriminative path ---------------------------------------------------


def test_the_units_fine_tune_save_and_test_a_discriminative_family(
    tmp_path: Path, standin_family: None
) -> None:
    """compute_unit from a saved stand-in family folder: each fine-tune unit wraps the model in a
    fresh head, trains it with the family's FINETUNE_FREEZE held (classifier tasks), saves a
    TaskModel; zero-shot and translate-test units load it back and report the usual results."""
    from mvlp_core.eval.selection import plan_units
    from mvlp_core.eval.units import FINETUNED, compute_unit
    from mvlp_core.spec import load_spec

    root = tmp_path / "iglue"
    mini_iglue(root)
    torch.manual_seed(0)
    FusedStandIn().save_pretrained(tmp_path / "pretrained")
    start = FusedStandIn.from_pretrained(tmp_path / "pretrained").state_dict()
    spec = load_spec(
        "demo",
        [
            f"iglue.root={root}",
            "iglue.image_roots={}",
            "iglue.tasks=[xvnli, xgqa, marvl, xflickrco]",
            "iglue.languages={xvnli: [de], xgqa: [de], marvl: [de], xflickrco: [de]}",
            "iglue.settings=[zero-shot, translate-test]",
            "iglue.finetune.epochs=6",
            "iglue.finetune.batch_size=8",
            "iglue.finetune.lr=0.01",
            "iglue.finetune.tasks={}",
            "iglue.rerank_k=3",
        ],
        workdir=tmp_path,
    )
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:
        results = {
            u.name: compute_unit(spec, str(tmp_path / "pretrained"), str(out), u.name)
            for u in plan_units(spec.iglue)
        }
    finally:
        torch.set_num_threads(threads)
    assert {n for n in results if "translate-test" in n} == {
        f"{t}.translate-test.de" for t in ("xvnli", "xgqa", "marvl", "xflickrco")
    }
    for task in ("xvnli", "xgqa", "marvl", "xflickrco"):
        assert results[f"{task}.finetune"]["finetune"]["history"][0]["epoch"] == 0
        tuned = out / FINETUNED / task
        meta = json.loads((tuned / "task_model.json").read_text())
        assert meta["task"] == task
        base = torch.load(tuned / "base/weights.pt")
        held = [n for n in start if n.startswith(FREEZE)]
        moved = [n for n in start if not torch.equal(base[n], start[n])]
        if task in heads_discriminative.CLASSIFIER_TASKS:
            assert held and not set(held) & set(moved) and "fusion.0.weight" in moved, results[
                f"{task}.finetune"
            ]
        else:
            assert "vision_proj.weight" in moved and "itm_head.weight" in moved
        for name in (f"{task}.zero-shot.en", f"{task}.zero-shot.de"):
            assert 0 <= results[name]["score"] <= 100 and results[name]["samples_out"] == 6
    # xGQA's label set: the root has no trainval_ans2label.json, so the training answers
    assert json.loads((out / FINETUNED / "xgqa/task_model.json").read_text())["labels"] == [
        "blue",
        "green",
        "red",
    ]
    preds = json.loads((out / "predictions/xgqa/zero-shot/de.json").read_text())
    assert {p["prediction"] for p in preds} <= set(COLOURS)
    assert {
        p["prediction"] for p in json.loads((out / "predictions/marvl/zero-shot/en.json").read_text())
    } <= {"true", "false"}
    top = json.loads((out / "predictions/xflickrco/translate-test/de.json").read_text())
    assert len(top) == 12 and all(sorted(r) == list(range(6)) for r in top)


def test_finetune_augment_draws_fresh_training_images_only(
    tmp_path: Path, standin_family: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """iglue.finetune.augment: every training example is augmented afresh at each draw (epochs x
    items augmentations, the model's 8 px), while dev (scored every epoch) and test read plain
    images; with it null nothing is augmented, and a family whose transform is not a square resize
    is told so before any training."""
    from mvlp_core.eval.units import compute_unit
    from mvlp_core.spec import load_spec

    root = tmp_path / "iglue"
    mini_iglue(root)
    torch.manual_seed(0)
    FusedStandIn().save_pretrained(tmp_path / "pretrained")
    sizes: list[int] = []
    real_call = AugmentedSquare.__call__

    def counted(self: AugmentedSquare, image: Image.Image, rng: random.Random) -> torch.Tensor:
        sizes.append(self.size)
        return real_call(self, image, rng)

    monkeypatch.setattr(AugmentedSquare, "__call__", counted)

    def run(augment: str, out: str) -> None:
        spec = load_spec(
            "demo",
            [
                f"iglue.root={root}",
                "iglue.image_roots={}",
                "iglue.tasks=[xvnli]",
                "iglue.languages={xvnli: [de]}",
                "iglue.finetune.epochs=2",
                "iglue.finetune.batch_size=8",
                "iglue.finetune.tasks={}",
                f"iglue.finetune.augment={augment}",
            ],
            workdir=tmp_path,
        )
        for unit in ("xvnli.finetune", "xvnli.zero-shot.de"):
            compute_unit(spec, str(tmp_path / "pretrained"), str(tmp_path / out), unit)

    threads = torch.get_num_threads()
    try:
        with pytest.raises(StageError, match="not a square resize"):
            run("{}", "plain-transform")
        monkeypatch.setattr(
            STANDIN_FAMILY, "eval_bindings", lambda model, **_: EvalBindings(RGBSquare(8), encode)
        )
        run("{crop_scale: [0.5, 1.0]}", "augmented")
        assert sizes == [8] * (2 * 24)  # 24 training items, 2 epochs; dev's 6 x 3 scorings and test: none
        run("null", "plain")
        assert len(sizes) == 2 * 24
    finally:
        torch.set_num_threads(threads)


def test_units_cut_texts_at_the_tasks_max_text_len(
    tmp_path: Path, standin_family: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """iglue.max_text_len: the fine-tune unit and the test unit (loading the saved TaskModel's base)
    both bind the model with the task's limit, and the texts the model reads are cut there; a task
    without one keeps the model's own."""
    from mvlp_core.eval.units import compute_unit
    from mvlp_core.spec import load_spec

    root = tmp_path / "iglue"
    mini_iglue(root)
    torch.manual_seed(0)
    FusedStandIn().save_pretrained(tmp_path / "pretrained")
    limits: list[int | None] = []
    widths: set[int] = set()

    def bound(model: FusedStandIn, image_size: int | None = None, max_text_len: int | None = None):
        limits.append(max_text_len)

        def cut(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            ids, mask = encode(texts)
            ids, mask = ids[:, :max_text_len], mask[:, :max_text_len]
            widths.add(ids.shape[1])
            return ids, mask

        return EvalBindings(transform, cut)

    monkeypatch.setattr(STANDIN_FAMILY, "eval_bindings", bound)
    spec = load_spec(
        "demo",
        [
            f"iglue.root={root}",
            "iglue.image_roots={}",
            "iglue.tasks=[xvnli, marvl]",
            "iglue.languages={xvnli: [de], marvl: [de]}",
            "iglue.finetune.epochs=1",
            "iglue.finetune.batch_size=8",
            "iglue.finetune.tasks={}",
            "iglue.max_text_len={marvl: 4}",
        ],
        workdir=tmp_path,
    )
    threads = torch.get_num_threads()
    try:
        for unit in ("marvl.finetune", "marvl.zero-shot.de"):
            compute_unit(spec, str(tmp_path / "pretrained"), str(tmp_path / "out"), unit)
        assert limits == [4, 4] and max(widths) == 4  # "the left image is <colour>": 5 words, cut to 4
        compute_unit(spec, str(tmp_path / "pretrained"), str(tmp_path / "out"), "xvnli.finetune")
        assert limits[2:] == [None]
    finally:
        torch.set_num_threads(threads)


def test_the_specs_itm_negatives_reach_the_retrieval_head(tmp_path: Path, standin_family: None) -> None:
    from mvlp_core.eval.units import Evaluator
    from mvlp_core.spec import load_spec

    mini_iglue(tmp_path / "iglue")
    for setting in ("hard", "random"):
        spec = load_spec(
            "demo",
            [
                f"iglue.root={tmp_path / 'iglue'}",
                "iglue.image_roots={}",
                f"iglue.finetune.itm_negatives={setting}",
            ],
            workdir=tmp_path,
        )
        assert Evaluator(standin(), spec.iglue, "xflickrco").em.model.itm_negatives == setting
