"""The ERNIE-UniX² family ("ernie", Shan et al., 2022, seed 000): a ViT and a text encoder (dual
encoder), a cross-lingual cross-modal encoder over [MM_CLS] + text + image patches, and a decoder,
trained on image–text pairs with captions in several languages, translation pairs and monolingual
text with eight tasks (CMCL, CLCL, ITM, MLM, PLM, vPLM, MT, mMMT), one per micro-step.
See model.py for the components and losses, batch.py for the batch layout, build.py for
persistence, data.py for its data recipe. The hooks of the family contract
(mvlp_core/model/families.py) are below."""

from __future__ import annotations

from mvlp_core.model.ernie.batch import Collate, image_transform
from mvlp_core.model.ernie.build import build, load, save
from mvlp_core.model.ernie.data import schedule, train_batches
from mvlp_core.model.ernie.model import ErnieModel
from mvlp_core.model.families import EvalBindings
from mvlp_core.model.parts import vit_xlmr

NAME = "ernie"
# XVNLI and xGQA: an MLP on [MM_CLS] (§4.2); MaRVL, which the paper does not report, the two pairs'
# [MM_CLS] concatenated; retrieval: the dual encoder ranks and the ITM head re-ranks its top k
IGLUE = dict.fromkeys(("xvnli", "xgqa", "marvl", "xflickrco", "wit"), "discriminative")

__all__ = [
    "NAME",
    "IGLUE",
    "Collate",
    "ErnieModel",
    "build",
    "eval_bindings",
    "image_transform",
    "load",
    "save",
    "schedule",
    "train_batches",
]


def eval_bindings(
    model: ErnieModel, image_size: int | None = None, max_text_len: int | None = None
) -> EvalBindings:
    """Images at `image_size` where given (else the model's), texts cut at `max_text_len` tokens
    where given, else at its pretraining caption length."""
    return vit_xlmr.eval_bindings(model, image_size, max_text_len, model.spec.max_len.image_text)
