"""Image augmentation settings shared by pretraining (`model.augment`, the weakly-supervised family)
and IGLUE fine-tuning (`iglue.finetune.augment`, any family whose images are uint8 squares)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mvlp_core.spec.base import Strict

AugmentOp = Literal[
    "Identity",
    "AutoContrast",
    "Equalize",
    "Brightness",
    "Sharpness",
    "Color",
    "Contrast",
    "Solarize",
    "Posterize",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
]
RELEASED_OPS: tuple[AugmentOp, ...] = (
    "Identity",
    "AutoContrast",
    "Equalize",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
)


class AugmentSpec(Strict):
    """Training image augmentation (mvlp_core/model/parts/augment.py): the weakly-supervised
    paper applies RandAugment to its pretraining and its fine-tuning images (App. B.1.3, B.2.2)
    without its settings; these defaults are its released code's pretraining pipeline:
    RandomResizedCrop, a horizontal flip, RandAugment(2, 7) over ten operations, each applied
    with p 0.5 (its fine-tuning crops 50-100% of the area). Test images are never augmented."""

    crop_scale: tuple[float, float] = Field(
        (0.2, 1.0), description="RandomResizedCrop's area share range; (1, 1) crops nothing"
    )
    hflip: bool = Field(True, description="flip left-right with p 0.5")
    ops: list[AugmentOp] = Field(list(RELEASED_OPS), description="RandAugment's operations")
    n_ops: int = Field(2, ge=0, le=16, description="RandAugment's N: operations drawn per image")
    magnitude: int = Field(7, ge=0, le=10, description="RandAugment's M, of 10")
    prob: float = Field(0.5, ge=0, le=1, description="the chance each drawn operation is applied")

    @model_validator(mode="after")
    def _scale(self) -> AugmentSpec:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"augment.crop_scale {self.crop_scale} must satisfy 0 < low <= high <= 1")
        return self


class FinetuneAugmentSpec(AugmentSpec):
    """Fine-tuning augmentation (`iglue.finetune.augment`): the released code's fine-tune pipeline,
    which crops 50-100% of the area where pretraining crops 20-100%; the rest as pretraining."""

    crop_scale: tuple[float, float] = Field(
        (0.5, 1.0), description="RandomResizedCrop's area share range; (1, 1) crops nothing"
    )
