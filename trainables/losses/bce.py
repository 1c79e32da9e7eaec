"""Soft binary cross-entropy with logits (paper 000 eq. 2).

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from . import _functional as LF
from ._base import Activation, SegmentationLoss
from .registry import Knob, register_loss

__all__ = ["SoftBCELoss"]


@register_loss("soft_bce")
class SoftBCELoss(SegmentationLoss):
    """Mean binary cross-entropy with logits over all pixels and organ channels, label-smoothed.

    ``L = -mean[t log p + (1 - t) log(1 - p)]``, ``p = sigmoid(logits)``,
    ``t = g (1 - s) + 0.5 s`` with ``s`` = ``smoothing`` (paper 000 eq. 2; ``s = 0``
    gives the paper's plain BCE).

    Conventions: ``s`` is standard two-class label smoothing (1 -> 1 - s/2, 0 -> s/2). smp's
    ``SoftBCEWithLogitsLoss(smooth_factor=f)`` maps 1 -> 1 - f, 0 -> f, i.e. equals this loss
    with ``smoothing = 2 f``. Computed in float32 through the stable BCE-with-logits. With
    ``activation="softmax"`` the same binary formula runs on each channel's softmax probability
    (one-vs-rest), ``log(1 - p)`` by log1mexp clamped at -100. ``include_background=False``
    drops channel 0 from the mean.

    Args:
        smoothing: label smoothing ``s`` in [0, 0.2] (default 0.0).

    Shape:
        logits, target: (N, C, H, W), target 0/1. Returns a scalar float32 tensor.
    """

    knobs: ClassVar[dict[str, Knob]] = {
        "smoothing": Knob(0.0, 0.0, 0.2, help="label smoothing: targets g(1-s) + s/2"),
    }
    source: ClassVar[str] = "paper 000 eq. 2 (Hassan et al. 2026, doi:10.5281/zenodo.20729853)"

    def __init__(
        self, smoothing: float = 0.0, *, activation: Activation = "sigmoid", include_background: bool = True
    ) -> None:
        super().__init__(activation=activation, include_background=include_background)
        self.smoothing = float(smoothing)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = LF.prepare(logits, target)
        if self.activation == "sigmoid":
            if not self.include_background:
                logits, target = LF.drop_background(logits, target)
            return LF.soft_bce_with_logits(logits, target, self.smoothing)
        log_p, log_1mp = LF.log_probabilities(logits, "softmax")
        if not self.include_background:
            log_p, log_1mp, target = LF.drop_background(log_p, log_1mp, target)
        if self.smoothing:
            target = target * (1.0 - self.smoothing) + 0.5 * self.smoothing
        return -(target * log_p + (1.0 - target) * log_1mp).mean()
