"""The IGLUE scoring methods of a discriminative family (the weakly-supervised mVLP, ERNIE-UniX²):
a ViT and a text encoder whose [CLS] states are projected into one contrastive space, and a joint
representation of an image with a text that an ITM head reads. The family provides the towers
(`encode_image`, `encode_text`), the projections (`_image_feature`, `_text_feature`), the
temperature (`_temperature`), the joint [CLS] of tower states (`_joint_cls`) and the ITM log-odds
of a joint [CLS] (`_match`). All differentiable: retrieval fine-tuning trains through them;
inference callers hold no_grad."""

from __future__ import annotations

import torch


class DualEncoderScoring:
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image features [B, E], L2-normalised (the contrastive space)."""
        return self._image_feature(self.encode_image(pixel_values))

    def text_features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Text features [B, E], L2-normalised: the text encoder's [CLS], projected."""
        return self._text_feature(self.encode_text(ids, mask))

    def itc_temperature(self) -> float:
        """The temperature in use: feature similarity / it = the contrastive logit."""
        return float(self._temperature().detach())

    def fused(self, pixel_values: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The joint [CLS] of each text with its image: [B, D], or [B, K, D] for K images per text
        (pixel_values [B, K, 3, S, S], e.g. MaRVL)."""
        if pixel_values.dim() == 5:
            b, k = pixel_values.shape[:2]
            flat = self.fused(
                pixel_values.flatten(0, 1), ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
            )
            return flat.view(b, k, -1)
        image = self.encode_image(pixel_values)
        return self._joint_cls(image, self.encode_text(ids, mask), mask)

    def match_logit(self, pixel_values: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ITM log-odds [B] of each image with its text."""
        return self._match(self.fused(pixel_values, ids, mask))

    # the same from tower states, so that a caller pairing one batch's images and texts several
    # ways (retrieval fine-tuning's ITM negatives, as ALBEF) runs each tower once
    def image_features_states(self, image_states: torch.Tensor) -> torch.Tensor:
        """`image_features` of `encode_image`'s states."""
        return self._image_feature(image_states)

    def text_features_states(self, text_states: torch.Tensor) -> torch.Tensor:
        """`text_features` of `encode_text`'s states."""
        return self._text_feature(text_states)

    def match_logit_states(
        self, image_states: torch.Tensor, text_states: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """`match_logit` of `encode_image`'s and `encode_text`'s states, row by row."""
        return self._match(self._joint_cls(image_states, text_states, mask))

    def num_params(self, trainable_only: bool = False) -> int:
        seen = {id(p): p for p in self.parameters() if p.requires_grad or not trainable_only}
        return sum(p.numel() for p in seen.values())
