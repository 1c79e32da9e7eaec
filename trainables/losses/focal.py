"""Focal loss (Lin et al. 2017; paper 000's focal term, papers 001 and 004).

References:

- Lin T.-Y., Goyal P., Girshick R., He K., Dollar P. "Focal loss for dense object detection." ICCV 2017.

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
- paper 001: Oshah A. A., Rgibi A. E., Alarbish A., Amin H. H. "Accurate segmentation of imbalanced
  medical images: a comparative study." 2025. doi:10.26629/jtr.2025.57
- paper 004: Hosseini S. M. "Pixel-wise modulated Dice loss for medical image segmentation." 2025.
  arXiv:2506.15744
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from . import _functional as LF
from ._base import Activation, SegmentationLoss
from .registry import Knob, register_loss

__all__ = ["FocalLoss"]


@register_loss("focal")
class FocalLoss(SegmentationLoss):
    """Mean focal loss ``-a_t (1 - p_t)^gamma log p_t`` over all pixels (and channels under sigmoid).

    Sigmoid (default): each element is a binary problem, ``p_t = p`` where ``g = 1`` and
    ``1 - p`` where ``g = 0``, mean over (N, C, H, W). Softmax: ``p_t`` is the softmax
    probability of the pixel's true class, ``-log p_t`` its CE, mean over pixels (paper 004
    eq. 3). Lin et al. 2017; paper 000 uses gamma = 2 inside its focal + Dice compound (its text
    writes the factor as ``(1 - p^gamma)``; the standard ``(1 - p_t)^gamma`` is meant: with
    ``(1 - p^gamma)`` the loss would not fall to 0 on a confident correct pixel); paper 001 tunes
    alpha in [0, 1].

    Conventions: ``a_t = 2 [alpha g + (1 - alpha)(1 - g)]`` under sigmoid, and
    ``2 alpha`` for a foreground pixel / ``2 (1 - alpha)`` for a background (channel 0) pixel
    under softmax. The factor 2 makes ``alpha = 0.5`` (default) exactly the unweighted focal
    loss, so ``gamma = 0`` gives BCE (sigmoid) or CE (softmax) at the default, and the knob
    spans Lin's alpha = 0.25 and its mirror; torchvision's / smp's ``alpha=a`` value is ours
    divided by 2. ``alpha=None`` also means unweighted. At the default this equals smp 0.6's
    ``FocalLoss(mode="multilabel", alpha=None, gamma=g)`` (older smp summed the channel means).
    ``1 - p_t`` is computed as ``-expm1(log p_t)`` and floored at 1e-12, so the gradient stays
    finite for ``gamma < 1``. ``include_background=False`` drops channel 0 under sigmoid and is
    ignored under softmax (see :class:`~trainables.losses.ce.CrossEntropyLoss`).

    Args:
        gamma: focusing exponent, 0 gives BCE/CE (default 2.0).
        alpha: positive/foreground weight in [0, 1]; 0.5 or None = unweighted (default 0.5).

    Shape:
        logits, target: (N, C, H, W), target 0/1. Returns a scalar float32 tensor.
    """

    knobs: ClassVar[dict[str, Knob]] = {
        "gamma": Knob(2.0, 0.0, 5.0, help="focusing exponent; 0 gives BCE/CE"),
        "alpha": Knob(0.5, 0.0, 1.0, help="foreground weight 2*alpha, background 2*(1-alpha); 0.5 = none"),
    }
    source: ClassVar[str] = (
        "Lin et al. 2017, ICCV; "
        "paper 000 (Hassan et al. 2026, doi:10.5281/zenodo.20729853); "
        "paper 001 (Oshah et al. 2025, doi:10.26629/jtr.2025.57); "
        "paper 004 eq. 3 (Hosseini 2025, arXiv:2506.15744)"
    )

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | None = 0.5,
        *,
        activation: Activation = "sigmoid",
        include_background: bool = True,
    ) -> None:
        super().__init__(activation=activation, include_background=include_background)
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"FocalLoss alpha must be in [0, 1] or None, got {alpha}")
        self.gamma = float(gamma)
        self.alpha = 0.5 if alpha is None else float(alpha)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = LF.prepare(logits, target)
        if self.activation == "softmax":
            neg_log_pt = -(target * logits.log_softmax(dim=1)).sum(dim=1)  # (N, H, W)
            foreground = 1.0 - target[:, 0]
        else:
            if not self.include_background:
                logits, target = LF.drop_background(logits, target)
            neg_log_pt = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            foreground = target
        loss = LF.focal_factor(neg_log_pt, self.gamma) * neg_log_pt
        if self.alpha != 0.5:
            loss = loss * (2.0 * (self.alpha * foreground + (1.0 - self.alpha) * (1.0 - foreground)))
        return loss.mean()
