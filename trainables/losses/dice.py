"""Dice-family losses: Dice (diceBK), Log Dice, Generalized Dice, Focal Dice, TopK Dice.

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
- paper 002: "CALF: a conditionally adaptive loss function to mitigate class-imbalanced
  segmentation." Anonymised MICCAI submission (authors and year not given).
- paper 003: Furtado P. "Investigation of loss functions for improving deep segmentation of
  abdominal organs from MRI." University of Coimbra, undated manuscript; related published study:
  Furtado P. "Testing segmentation popular loss and variations in three multiclass medical imaging
  problems." J. Imaging 7(2):16, 2021. doi:10.3390/jimaging7020016
- paper 004: Hosseini S. M. "Pixel-wise modulated Dice loss for medical image segmentation." 2025.
  arXiv:2506.15744
- Milletari F., Navab N., Ahmadi S.-A. "V-Net: fully convolutional neural networks for volumetric
  medical image segmentation." 3DV 2016.
- Sudre C. H., Li W., Vercauteren T., Ourselin S., Cardoso M. J. "Generalised Dice overlap as a deep
  learning loss function for highly unbalanced segmentations." DLMIA (MICCAI workshop) 2017.
- Zhao R. et al. "Rethinking Dice loss for medical image segmentation." ICDM 2020.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from . import _functional as LF
from ._base import Activation, RegionLoss
from .registry import Knob, register_loss

__all__ = ["DiceLoss", "LogDiceLoss", "GeneralizedDiceLoss", "FocalDiceLoss", "TopKDiceLoss"]

_SMOOTH = Knob(1.0, 0.0, 10.0, help="additive smoothing s of the Dice ratio")


@register_loss("dice")
class DiceLoss(RegionLoss):
    """Soft Dice loss, by default pooled over the batch's pixels and all organ channels.

    ``L = 1 - (2 sum p g + s) / (sum p + sum g + s)`` with ``p`` the probabilities,
    ``g`` the 0/1 target and ``s`` = ``smooth`` (paper 000 eq. 1). Variants as options:
    ``per_class=True`` averages one Dice per class (papers 003, 004 eq. 4); ``squared=True`` uses
    ``sum p^2 + sum g^2`` in the denominator (paper 004 eq. 4, after Milletari et al.);
    ``batch=False`` computes one Dice per image and averages the images;
    ``include_background=False`` with ``activation="softmax"`` is paper 003's diceBK.

    Conventions: defaults (pooled, batch-summed, linear denominator) are paper 000's. With
    ``per_class=True`` an absent class predicted empty scores 1 (loss 0) through ``s`` and is
    kept in the mean (smp's ``DiceLoss`` instead zeroes the loss of classes absent from the
    batch). smp's ``smooth`` enters as ``(tp + s') / (tp + (fp + fn)/2 + s')``, so ``s' = s / 2``
    reproduces it (``per_class=True`` here = smp multilabel/multiclass mode). ``smooth`` also
    makes an empty target predicted empty score loss 0. The denominator is floored at 1e-7, so
    ``smooth=0`` on an all-empty batch gives loss 1 instead of NaN. Computed in float32.

    Args:
        smooth: additive smoothing ``s`` in numerator and denominator (default 1.0).
        per_class: mean of per-class Dice instead of one pooled Dice (default False).
        batch: sums over the batch (True, default) or one Dice per image (False).
        squared: squared denominator ``sum p^2 + sum g^2`` (default False).
        activation, include_background: see :class:`~trainables.losses._base.SegmentationLoss`.

    Shape:
        logits, target: (N, C, H, W), target 0/1. Returns a scalar float32 tensor.
    """

    knobs: ClassVar[dict[str, Knob]] = {"smooth": _SMOOTH}
    source: ClassVar[str] = (
        "paper 000 eq. 1 (Hassan et al. 2026, doi:10.5281/zenodo.20729853); "
        "paper 004 eq. 4, class mean, squared (Hosseini 2025, arXiv:2506.15744); "
        "paper 003, diceBK (Furtado, undated manuscript; "
        "cf. J. Imaging 2021, doi:10.3390/jimaging7020016)"
    )

    def __init__(
        self,
        smooth: float = 1.0,
        *,
        per_class: bool = False,
        batch: bool = True,
        squared: bool = False,
        activation: Activation = "sigmoid",
        include_background: bool = True,
    ) -> None:
        super().__init__(per_class=per_class, batch=batch, activation=activation, include_background=include_background)
        self.smooth = float(smooth)
        self.squared = bool(squared)

    def dice_score(self, probs: Tensor, target: Tensor) -> Tensor:
        """Return the Dice coefficients: one per class and/or image as the options say."""
        tp, sp, sg = self.sums(probs, target, self.squared)
        return (2.0 * tp + self.smooth) / (sp + sg + self.smooth).clamp_min(LF.EPS)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        probs, target = self.probabilities(logits, target)
        return 1.0 - self.dice_score(probs, target).mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, squared={self.squared}"


@register_loss("log_dice")
class LogDiceLoss(DiceLoss):
    """Logarithmic Dice loss: the mean over classes of ``(-ln Dice_c)^gamma``.

    ``L = mean_c (-ln D_c)^gamma``, ``D_c = (2 sum p g + s) / (sum p + sum g + s)`` per class,
    batch-summed (Wong K. C. L., Moradi M., Tang H., Syeda-Mahmood T. "3D segmentation with exponential
    logarithmic loss for highly unbalanced object sizes." MICCAI 2018; its Dice term; a baseline of
    paper 004, ref. [38]). ``gamma = 1``
    (default) is the plain log Dice; Wong et al. use ``gamma = 0.3``. The log makes classes
    with a low Dice weigh more than in the linear Dice.

    Conventions: per class by default (the log acts per class in Wong et al.); ``D_c`` is
    floored at 1e-7 (finite log) and ``-ln D_c`` at 1e-12 under a power < 1 (finite gradient at
    a perfect class). Same options as :class:`DiceLoss`.

    Args:
        gamma: exponent of ``-ln D_c`` (default 1.0).
        smooth: additive smoothing (default 1.0).
    """

    knobs: ClassVar[dict[str, Knob]] = {
        "gamma": Knob(1.0, 0.1, 3.0, help="exponent of -ln Dice; Wong et al. use 0.3"),
        "smooth": _SMOOTH,
    }
    source: ClassVar[str] = "Wong et al. 2018, MICCAI; a baseline of paper 004 (Hosseini 2025, arXiv:2506.15744)"

    def __init__(
        self,
        gamma: float = 1.0,
        smooth: float = 1.0,
        *,
        per_class: bool = True,
        batch: bool = True,
        squared: bool = False,
        activation: Activation = "sigmoid",
        include_background: bool = True,
    ) -> None:
        super().__init__(
            smooth,
            per_class=per_class,
            batch=batch,
            squared=squared,
            activation=activation,
            include_background=include_background,
        )
        self.gamma = float(gamma)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        probs, target = self.probabilities(logits, target)
        neg_log = -self.dice_score(probs, target).clamp_min(LF.EPS).log()
        return LF.power_floored(neg_log, self.gamma).mean()


@register_loss("generalized_dice")
class GeneralizedDiceLoss(RegionLoss):
    """Generalized Dice loss: one Dice over classes, each class weighted by its inverse squared area.

    ``L = 1 - (2 sum_c w_c sum_i p g + s) / (sum_c w_c sum_i (p + g) + s)``,
    ``w_c = 1 / (sum_i g_ic)^2`` (Sudre et al. 2017, cited by paper 002 ref. [3];
    ``weight_type="simple"`` uses ``1 / sum g``, ``"uniform"`` 1).

    Conventions (MONAI's ``GeneralizedDiceLoss``): weights come from the target only (no
    gradient); a class absent from the batch (``batch=True``, default) or image
    (``batch=False``) would get an infinite weight and takes the largest finite weight
    instead; if every class is absent all weights are 1, so false positives still cost. With
    the default ``s = 1e-5`` an all-empty target scores near loss 1 unless the prediction is
    exactly empty: the weights make the ratio tiny-valued, so smoothing cannot rescue it.

    Args:
        smooth: additive smoothing (default 1e-5, MONAI's).
        batch: weights and sums over the whole batch (True) or per image, then averaged.
        weight_type: ``"square"`` (default), ``"simple"`` or ``"uniform"``.
    """

    knobs: ClassVar[dict[str, Knob]] = {
        "smooth": Knob(1e-5, 1e-8, 1.0, log=True, help="additive smoothing of the weighted ratio"),
    }
    source: ClassVar[str] = (
        "Sudre et al. 2017, DLMIA (MICCAI workshop); paper 002 ref. [3] (CALF, anonymised MICCAI submission)"
    )

    def __init__(
        self,
        smooth: float = 1e-5,
        *,
        batch: bool = True,
        weight_type: Literal["square", "simple", "uniform"] = "square",
        activation: Activation = "sigmoid",
        include_background: bool = True,
    ) -> None:
        super().__init__(per_class=True, batch=batch, activation=activation, include_background=include_background)
        if weight_type not in ("square", "simple", "uniform"):
            raise ValueError(f"weight_type must be 'square', 'simple' or 'uniform', got {weight_type!r}")
        self.smooth = float(smooth)
        self.weight_type = weight_type

    def class_weights(self, target_sums: Tensor) -> Tensor:
        """Return ``w_c`` from ``sum_i g_ic`` (classes on the last dim), absent classes filled."""
        if self.weight_type == "uniform":
            return torch.ones_like(target_sums)
        power = 2.0 if self.weight_type == "square" else 1.0
        present = target_sums > 0
        weights = torch.where(present, target_sums.clamp_min(1.0).pow(-power), torch.zeros_like(target_sums))
        fill = weights.amax(dim=-1, keepdim=True)
        fill = torch.where(fill > 0, fill, torch.ones_like(fill))
        return torch.where(present, weights, fill.expand_as(weights)).detach()

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        probs, target = self.probabilities(logits, target)
        tp, sp, sg = self.sums(probs, target)
        w = self.class_weights(sg)
        score = (2.0 * (w * tp).sum(-1) + self.smooth) / ((w * (sp + sg)).sum(-1) + self.smooth).clamp_min(LF.EPS)
        return 1.0 - score.mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_type={self.weight_type!r}"


@register_loss("focal_dice")
class FocalDiceLoss(DiceLoss):
    """Focal Dice loss: the mean over classes of ``1 - Dice_c^(1/beta)`` (Wang & Chung 2018).

    ``L = mean_c (1 - D_c^(1/beta))``, ``D_c = (2 sum p g + s) / (sum p + sum g + s)`` per class,
    batch-summed. Paper 004 (ref. [39]: Wang P., Chung A. C. S. "Focal dice loss and image
    dilation for brain tumor segmentation." DLMIA 2018: "the root squared version of Dice score of
    each class") lists it as a baseline; ``beta = 2`` (default) is that square root, ``beta = 1``
    gives the class-mean Dice loss. Since ``d D^(1/beta) / dD = D^(1/beta - 1) / beta`` grows as
    ``D`` falls, classes with a low Dice get the larger gradient: the focusing is per class, not
    per pixel.

    Conventions: the mean over classes (Wang & Chung sum them; the mean keeps the loss in
    [0, 1] and makes ``beta = 1`` equal ``DiceLoss(per_class=True)``). Zhao et al. 2020's
    "Focal Dice" (paper 004 ref. [41]: keep the top-K% hardest true negatives) is a resampling
    loss of another kind and is not this one. ``D_c`` is floored at 1e-12 under the root
    (finite gradient). This name was, before this version, paper 000's 0.5 focal + 0.5 Dice
    compound, now ``focal_plus_dice``.

    Args:
        beta: root taken of each class's Dice (default 2.0).
        smooth: additive smoothing (default 1.0).
    """

    knobs: ClassVar[dict[str, Knob]] = {
        "beta": Knob(2.0, 1.0, 5.0, help="Dice_c^(1/beta); 1 gives the class-mean Dice"),
        "smooth": _SMOOTH,
    }
    source: ClassVar[str] = (
        "Wang & Chung 2018, DLMIA (MICCAI workshop); a baseline of paper 004 (Hosseini 2025, arXiv:2506.15744)"
    )

    def __init__(
        self,
        beta: float = 2.0,
        smooth: float = 1.0,
        *,
        per_class: bool = True,
        batch: bool = True,
        squared: bool = False,
        activation: Activation = "sigmoid",
        include_background: bool = True,
    ) -> None:
        super().__init__(
            smooth,
            per_class=per_class,
            batch=batch,
            squared=squared,
            activation=activation,
            include_background=include_background,
        )
        self.beta = float(beta)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        probs, target = self.probabilities(logits, target)
        return 1.0 - LF.power_floored(self.dice_score(probs, target), 1.0 / self.beta).mean()


@register_loss("topk_dice")
class TopKDiceLoss(DiceLoss):
    """TopK Dice loss: Dice over all background pixels and only the K% hardest foreground pixels.

    For each image and class, the foreground pixels (``g = 1``: true positives and false
    negatives) are ranked by their error ``1 - p`` and only the ``ceil(K% x count)`` largest are
    kept; every ``g = 0`` pixel is kept. Then the class-mean, batch-summed soft Dice of
    :class:`DiceLoss` runs on the kept pixels (Hosseini S. M. "TopK Dice loss for medical image
    segmentation." BMVC 2024, as summarised by paper 004, ref. [42]: "false negatives and true
    positives are ranked based on their error values and the ones that are not in top K% are
    ignored"). ``k = 100`` is the class-mean Dice.

    Conventions: the selection mask carries no gradient; ties at the K-th error keep every tied
    pixel; an image-class with no foreground keeps all its pixels. The paper's K was not
    available to us; the default 10% follows nnU-Net's TopK10 CE. Selection needs a top-k per
    image-class: this loss is slower than Dice (see ``benchmarks/losses.py``).

    Args:
        k: percent of each image-class's foreground pixels kept, hardest first (default 10).
        smooth: additive smoothing (default 1.0).
    """

    knobs: ClassVar[dict[str, Knob]] = {
        "k": Knob(10.0, 1.0, 100.0, help="percent of foreground pixels kept (hardest first)"),
        "smooth": _SMOOTH,
    }
    source: ClassVar[str] = "Hosseini 2024, BMVC; as summarised by paper 004 (Hosseini 2025, arXiv:2506.15744)"

    def __init__(
        self,
        k: float = 10.0,
        smooth: float = 1.0,
        *,
        per_class: bool = True,
        batch: bool = True,
        squared: bool = False,
        activation: Activation = "sigmoid",
        include_background: bool = True,
    ) -> None:
        super().__init__(
            smooth,
            per_class=per_class,
            batch=batch,
            squared=squared,
            activation=activation,
            include_background=include_background,
        )
        self.k = float(k)

    @torch.no_grad()
    def keep_mask(self, probs: Tensor, target: Tensor) -> Tensor:
        """Return the 0/1 mask of pixels the Dice sees (all background, hardest K% foreground)."""
        n, c = target.shape[:2]
        fg = (target > 0.5).reshape(n * c, -1)
        error = torch.where(fg, 1.0 - probs.reshape(n * c, -1), torch.full_like(fg, -1.0, dtype=probs.dtype))
        keep_count = torch.ceil(fg.sum(1) * (self.k / 100.0)).long()
        k_max = int(keep_count.max())
        if k_max == 0 or self.k >= 100.0:
            return torch.ones_like(probs)
        top = error.topk(k_max, dim=1, sorted=True).values
        threshold = top.gather(1, (keep_count - 1).clamp_min(0)[:, None])
        keep = ~fg | (error >= threshold)
        return keep.reshape(probs.shape).to(probs.dtype)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        probs, target = self.probabilities(logits, target)
        keep = self.keep_mask(probs, target)
        return 1.0 - self.dice_score(probs * keep, target * keep).mean()
