"""The weakly-supervised multilingual VLP family ("wsmvlp", Li et al., ACL 2023, seed 001): a ViT,
XLM-R split into a text encoder and a unified encoder with pluggable cross-attention, trained on
English image–caption pairs, translation pairs and monolingual text with UCL, xMLM/TLM/VLM and ITM.
See model.py for the routines and losses, batch.py for the batch layout, build.py for persistence,
data.py for its data recipe (all three streams every step). The hooks of the family contract
(mvlp_core/model/families.py) are below."""

from __future__ import annotations

from mvlp_core.model.families import EvalBindings
from mvlp_core.model.parts import vit_xlmr
from mvlp_core.model.parts.bert_layers import FusionLayer, MLMHead
from mvlp_core.model.wsmvlp.batch import collate, image_transform
from mvlp_core.model.wsmvlp.build import build, load, save
from mvlp_core.model.wsmvlp.data import train_batches
from mvlp_core.model.wsmvlp.model import WsmvlpModel, itm_negatives

NAME = "wsmvlp"
# every IGLUE task through a head on the fused [CLS] or the dual encoder + ITM re-rank (paper App. B.2)
IGLUE = dict.fromkeys(("xvnli", "xgqa", "marvl", "xflickrco", "wit"), "discriminative")
# IGLUE fine-tuning holds the uni-modal encoders (paper Tables 7-8; the released config freezes
# txt_encoder, vis_encoder and the embeddings): only the unified encoder and the head learn
FINETUNE_FREEZE = ("vision.", "vision_proj.", "embeddings.", "text_layers.", "text_proj.")

__all__ = [
    "NAME",
    "FusionLayer",
    "MLMHead",
    "WsmvlpModel",
    "build",
    "collate",
    "image_transform",
    "itm_negatives",
    "load",
    "save",
    "train_batches",
    "eval_bindings",
    "IGLUE",
    "FINETUNE_FREEZE",
]


def eval_bindings(
    model: WsmvlpModel, image_size: int | None = None, max_text_len: int | None = None
) -> EvalBindings:
    """Images at `image_size` where given (else the model's), texts cut at `max_text_len` tokens
    where given (the paper fine-tunes at 40 or 50 by task, Tables 7-8), else at its pretraining
    image-text length."""
    return vit_xlmr.eval_bindings(model, image_size, max_text_len, model.spec.max_len.image_text)
