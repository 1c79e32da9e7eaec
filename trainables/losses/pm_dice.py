"""Pixel-wise Modulated Dice loss (paper 004 eq. 5).

References:

- paper 004: Hosseini S. M. "Pixel-wise modulated Dice loss for medical image segmentation." 2025.
  arXiv:2506.15744
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from . import _functional as LF
from ._base import Activation, SegmentationLoss
from .registry import Knob, register_loss

__all__ = ["PMDiceLoss"]


@register_loss("pm_dice")
class PMDiceLoss(SegmentationLoss):
    """PM Dice loss: class-mean squared Dice with each pixel weighted by its detached error^gamma_c.

    ``L = 1 - (1/C) sum_c (2 sum_i m_ic y_ic p_ic + eps) / (sum_i m_ic (y_ic^2 + p_ic^2) + eps)``,
    ``m_ic = |y_ic - stopgrad(p_ic)|^gamma_c``, ``eps = 1e-6`` (paper 004 eq. 5). No gradient flows
    through ``m`` (the paper's "key condition"): it is recomputed from the detached prediction at
    every call. ``gamma_c = 0`` gives ``m = 1``, the squared-denominator class-mean Dice of eq. 4;
    ``gamma = 1`` (default) is the paper's default; its MSSEG run uses gamma_FG = 2, gamma_BG = 1.

    Conventions: one ``gamma`` per output channel (background first under softmax), a scalar
    broadcast to all; ``include_background=False`` drops channel 0 and its gamma. As in the
    paper the sums run per image and ``C`` counts the classes PRESENT in that image
    (``sum_i y_ic > 0``, background included); absent classes are skipped, and the loss is the
    mean over the images with at least one class present (0, with a graph, if none has).
    Under sigmoid outputs without a background channel this means false positives on an organ
    absent from the image cost nothing in this loss: pair it with a pixel loss (``ce + pm_dice``,
    as paper 004's compounds) for the GI organs. ``eps`` is fixed (the paper chose it small on
    purpose: a large one would hide the modulated sums), so there is no smoothing knob.

    Args:
        gamma: focusing exponent per channel: a list (length = channels) or a scalar (default 1.0).
        n_classes: if given, checks the length of a gamma list at construction.

    Shape:
        logits, target: (N, C, H, W), target 0/1. Returns a scalar float32 tensor.
    """

    knobs: ClassVar[dict[str, Knob]] = {
        "gamma": Knob(1.0, 0.0, 5.0, help="focusing exponent of |y - p|; 0 gives squared Dice", per_class=True),
    }
    source: ClassVar[str] = "paper 004 eq. 5 (Hosseini 2025, arXiv:2506.15744)"
    eps: ClassVar[float] = 1e-6

    def __init__(
        self,
        gamma: float | Sequence[float] = 1.0,
        *,
        activation: Activation = "sigmoid",
        include_background: bool = True,
        n_classes: int | None = None,
    ) -> None:
        super().__init__(activation=activation, include_background=include_background)
        values = [float(g) for g in gamma] if isinstance(gamma, (list, tuple)) else [float(gamma)]
        if not values or any(not 0.0 <= g < float("inf") for g in values):
            raise ValueError(f"pm_dice gamma must be >= 0 and finite, got {gamma!r}")
        if isinstance(gamma, (list, tuple)) and n_classes is not None and len(values) != n_classes:
            raise ValueError(f"pm_dice needs {n_classes} gamma values (one per channel), got {len(values)}")
        self.per_channel = isinstance(gamma, (list, tuple))
        self.gamma: list[float] | float = values if self.per_channel else values[0]

    def modulation(self, probs: Tensor, target: Tensor, gamma: Tensor | float) -> Tensor:
        """Return ``m = |y - stopgrad(p)|^gamma``, a tensor with no gradient."""
        error = (target - probs.detach()).abs()
        if isinstance(gamma, float):
            if gamma == 1.0:
                return error
            return torch.ones_like(error) if gamma == 0.0 else error.pow(gamma)
        return error.pow(gamma)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = LF.prepare(logits, target)
        probs = LF.activate(logits, self.activation)
        gamma: Tensor | float = (
            self.gamma if not self.per_channel else torch.tensor(self.gamma, dtype=probs.dtype, device=probs.device)
        )
        if self.per_channel:
            if len(self.gamma) != probs.shape[1]:
                raise ValueError(f"pm_dice has {len(self.gamma)} gamma values for {probs.shape[1]} channels")
            gamma = gamma.view((1, -1) + (1,) * (probs.dim() - 2))
        if not self.include_background:
            probs, target = LF.drop_background(probs, target)
            if self.per_channel:
                gamma = gamma[:, 1:]
        dims = LF.region_dims(probs.dim(), batch=False)
        with torch.no_grad():  # m and everything built from m and y alone carry no gradient
            m = self.modulation(probs, target, gamma)
            m_target = m * target
            target_term = (m_target * target).sum(dims)
        numerator = 2.0 * (m_target * probs).sum(dims) + self.eps
        denominator = target_term + (m * probs * probs).sum(dims) + self.eps
        present = (target.sum(dims) > 0).to(probs.dtype)  # (N, C)
        n_present = present.sum(1)
        scored = n_present > 0
        if not bool(scored.any()):
            return (probs * 0.0).sum()
        score = (present * numerator / denominator).sum(1)[scored] / n_present[scored]
        return 1.0 - score.mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"
