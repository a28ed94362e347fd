"""The models `pretrain` trains and `iglue-eval` evaluates: one package per family (unigen/,
wsmvlp/) behind the contract in families.py, and the parts they share (losses.py: contrastive loss
with a differentiable gather and ALBEF's hard negatives; tokenizers.py; vision.py: ViT/BLIP-2
loaders; parts/: MLM masking)."""

from mvlp_core.model.families import FAMILIES, EvalBindings, family, family_of, load_model

__all__ = ["FAMILIES", "EvalBindings", "family", "family_of", "load_model"]
