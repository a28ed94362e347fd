"""Retrieval the UniGen way: rank by contrastive similarity (``image_features`` x
``text_features``), then re-rank each query's top k with the [match] score. Two matrices come
out, one per direction: in the caption x image matrix for IR each caption's top-k images carry
their re-rank score (above every other image); for TR each image's top-k captions do likewise.

The re-rank score is the contrastive logit (similarity / temperature) plus the [match] log-odds,
both log-scale evidence for the pair: a [match] head that has not learnt to look at the image
(its log-odds the same for every image of a caption) then leaves the contrastive order as it is,
instead of sending every caption to whichever image the head happens to like best. A family with
an ITM head instead passes its own ``Ranker`` (``heads_discriminative.ranker``: the ITM log-odds
plus the cosine, as ALBEF sums them); the scoring is the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mvlp_core.contract import Reject
from mvlp_core.eval import data_retrieval, metrics
from mvlp_core.eval.images import ImageRef, ImageRoots
from mvlp_core.eval.model_api import EvalModel
from mvlp_core.eval.prepared import DecodedImages, ImageCache, ImageSource, Pending, Streamed

RERANK_OFFSET = 1e4  # lifts re-ranked entries above every similarity (cosines lie in [-1, 1])


def image_embedding(out: Any) -> torch.Tensor:
    """A family's ``image_features`` output: the [B,E] tensor (UniGen returns (patches, pooled))."""
    return out[1] if isinstance(out, tuple) else out


def resolve(
    rset: data_retrieval.RetrievalSet, roots: ImageRoots, wit: bool
) -> tuple[list[ImageRef | None], list[Reject]]:
    paths = [roots.wit(im.ref) if wit else roots.flickr_or_coco(im.ref) for im in rset.images]
    rejects = [Reject(im.key, "missing_image", im.ref) for im, p in zip(rset.images, paths) if p is None]
    return paths, rejects


def drop_missing(
    rset: data_retrieval.RetrievalSet, paths: list[ImageRef | None]
) -> tuple[data_retrieval.RetrievalSet, list[ImageRef]]:
    """The set without images that did not resolve (and their captions), indices renumbered."""
    keep = [i for i, p in enumerate(paths) if p is not None]
    new_index = {old: new for new, old in enumerate(keep)}
    out = data_retrieval.RetrievalSet([rset.images[i] for i in keep])
    for cap, img, cid in zip(rset.captions, rset.caption_image, rset.caption_ids):
        if img in new_index:
            out.captions.append(cap)
            out.caption_image.append(new_index[img])
            out.caption_ids.append(cid)
    return out, [paths[i] for i in keep]


@dataclass(frozen=True)
class Ranker:
    """How a family's retrieval scores a pair: the module whose dual encoder pre-ranks, the pair
    score of the re-rank (UniGen: [match] log-odds; a discriminative family: ITM log-odds) and the
    weight of the cosine beside it (UniGen: 1/temperature, the contrastive logit)."""

    model: torch.nn.Module
    pair: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    similarity_weight: float


def match_ranker(em: EvalModel) -> Ranker:
    """UniGen's: the contrastive logit plus the [match] log-odds."""
    return Ranker(em.model, em.model.match_score, 1.0 / em.model.itc_temperature())


@torch.no_grad()
def score_matrices(
    em: EvalModel,
    images: Sequence[torch.Tensor],
    captions: list[str],
    k: int,
    batch_size: int = 32,
    ranker: Ranker | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(IR matrix, TR matrix), both [captions, images]: the cosine everywhere, and each query's
    top k by cosine re-scored ``RERANK_OFFSET + weight × cosine + pair score``; ``images`` may
    decode on access. ``ranker``: UniGen's by default."""
    rank = ranker or match_ranker(em)
    model = rank.model
    model.eval()
    img_emb = torch.cat(
        [
            image_embedding(model.image_features(torch.stack(images[s : s + batch_size]).to(em.device)))
            for s in range(0, len(images), batch_size)
        ]
    )
    txt_emb = []
    for s in range(0, len(captions), batch_size):
        ids, mask = em.encode(captions[s : s + batch_size])
        txt_emb.append(model.text_features(ids.to(em.device), mask.to(em.device)))
    # in fp32 even under iglue.bf16: bf16 cosines tie within 0.002 and the pre-rank would follow index
    with torch.autocast(img_emb.device.type, enabled=False):
        sim = (torch.cat(txt_emb).float() @ img_emb.float().T).cpu().numpy().astype(np.float64)

    def rerank(pairs: list[tuple[int, int]]) -> np.ndarray:
        out = np.empty(len(pairs))
        for s in range(0, len(pairs), batch_size):
            chunk = pairs[s : s + batch_size]
            ids, mask = em.encode([captions[c] for c, _ in chunk])
            pixels = torch.stack([images[i] for _, i in chunk]).to(em.device)
            out[s : s + len(chunk)] = (
                rank.pair(pixels, ids.to(em.device), mask.to(em.device)).float().cpu().numpy()
            )
        return out

    k_img, k_cap = min(k, sim.shape[1]), min(k, sim.shape[0])
    ir, tr = sim.copy(), sim.copy()
    if k_img:
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k_img]
        pairs = [(c, int(i)) for c in range(sim.shape[0]) for i in top[c]]
        for (c, i), s in zip(pairs, rerank(pairs)):
            ir[c, i] = RERANK_OFFSET + sim[c, i] * rank.similarity_weight + s
    if k_cap:
        top = np.argsort(-sim.T, axis=1, kind="stable")[:, :k_cap]
        pairs = [(int(c), i) for i in range(sim.shape[1]) for c in top[i]]
        for (c, i), s in zip(pairs, rerank(pairs)):
            tr[c, i] = RERANK_OFFSET + sim[c, i] * rank.similarity_weight + s
    return ir, tr


def evaluate(
    em: EvalModel,
    rset: data_retrieval.RetrievalSet,
    paths: list[ImageRef],
    cache: ImageCache,
    k: int,
    ranker: Ranker | None = None,
) -> tuple[dict[str, float], list[Reject], list[list[int]]]:
    """Recall@1/5/10 both ways, rejects for undecodable images, and VOLTA-style top-20 lists.

    Each image is decoded once to find the undecodable ones, and again through the cache as the
    scoring reaches it (only when the set outgrows the cache)."""
    readable = [cache.get(p) is not None for p in paths]
    bad = [Reject(im.key, "bad_image", str(p)) for im, p, ok in zip(rset.images, paths, readable) if not ok]
    if bad:
        rset, paths = drop_missing(rset, [p if ok else None for p, ok in zip(paths, readable)])
    if not rset.captions:
        return {f"{d}_r{n}": 0.0 for d in ("ir", "tr") for n in metrics.RECALL_AT}, bad, []
    ir, tr = score_matrices(em, DecodedImages(paths, cache), rset.captions, k, ranker=ranker)
    result = {
        **metrics.recalls(metrics.ir_ranks(ir, rset.caption_image), "ir"),
        **metrics.recalls(metrics.tr_ranks(tr, rset.caption_image), "tr"),
    }
    top20 = np.argsort(-ir, axis=1, kind="stable")[:, :20].tolist()
    return result, bad, top20


def training_examples(
    em: EvalModel, rset: data_retrieval.RetrievalSet, paths: list[ImageRef], cache: ImageSource, lang: str
) -> Streamed:
    """[cap] examples carrying the caption for the in-batch contrastive and [match] losses."""
    pending = [
        Pending(
            (paths[img],),
            {"task": "cap", "source": "", "source_lang": lang, "target": cap, "caption": cap},
            cap_id,
        )
        for cap, img, cap_id in zip(rset.captions, rset.caption_image, rset.caption_ids)
    ]
    return Streamed(em.example, pending, cache)
