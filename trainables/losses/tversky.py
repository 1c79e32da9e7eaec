"""Tversky-family losses: Tversky (paper 000), Focal-Tversky (paper 001), IoU_xy (paper 003).

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
- paper 001: Oshah A. A., Rgibi A. E., Alarbish A., Amin H. H. "Accurate segmentation of imbalanced
  medical images: a comparative study." 2025. doi:10.26629/jtr.2025.57
- paper 003: Furtado P. "Investigation of loss functions for improving deep segmentation of
  abdominal organs from MRI." University of Coimbra, undated manuscript; related published study:
  Furtado P. "Testing segmentation popular loss and variations in three multiclass medical imaging
  problems." J. Imaging 7(2):16, 2021. doi:10.3390/jimaging7020016
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from . import _functional as LF
from ._base import Activation, RegionLoss
from .registry import Knob, SumConstraint, register_loss

__all__ = ["TverskyLoss", "FocalTverskyLoss", "IoUxyLoss"]


@register_loss("tversky")
class TverskyLoss(RegionLoss):
    """Soft Tversky loss: Dice with separate weights on false positives and false negatives.

    ``L = 1 - (sum p g + s) / (sum p g + alpha sum (1 - g) p + beta sum g (1 - p) + s)``
    with ``p`` the probabilities (paper 000 eq. 3; Salehi S. S. M., Erdogmus D., Gholipour A.
    "Tversky loss function for image segmentation using 3D fully convolutional deep networks."
    MLMI workshop, MICCAI 2017). ``alpha`` weights FALSE POSITIVES, ``beta`` FALSE NEGATIVES; the
    paper's alpha = 0.3, beta = 0.7 penalises missed organ more than over-segmentation
    (recall-leaning).

    Conventions: by default sums pooled over the batch's pixels and all organ channels, as in
    :class:`~trainables.losses.dice.DiceLoss` (``per_class``/``batch`` options as there). The
    paper's eq. 3 has no smoothing; ``smooth`` is added to numerator and denominator like smp's
    ``soft_tversky_score`` (same argument order: smp's ``TverskyLoss(alpha=..., beta=...)`` alpha
    is also the FP weight). With ``alpha = beta = 0.5`` this equals Dice with ``smooth`` doubled
    (exactly Dice when ``smooth = 0``), because the Tversky ratio is the Dice ratio with
    numerator and denominator halved. alpha and beta are searched independently (no sum
    constraint: paper 000 fixes 0.3/0.7). Denominator floored at 1e-7; computed in float32.

    Args:
        alpha: weight of false positives ``sum (1 - g) p`` (default 0.3).
        beta: weight of false negatives ``sum g (1 - p)`` (default 0.7).
        smooth: additive smoothing (default 1.0).
        per_class, batch: see :class:`~trainables.losses._base.RegionLoss` (default pooled, batch).

    Shape:
        logits, target: (N, C, H, W), target 0/1. Returns a scalar float32 tensor.
    """

    knobs: ClassVar[dict[str, Knob]] = {
        "alpha": Knob(0.3, 0.0, 1.0, help="weight of false positives"),
        "beta": Knob(0.7, 0.0, 1.0, help="weight of false negatives"),
        "smooth": Knob(1.0, 0.0, 10.0, help="additive smoothing s of the Tversky ratio"),
    }
    source: ClassVar[str] = (
        "paper 000 eq. 3 (Hassan et al. 2026, doi:10.5281/zenodo.20729853); Salehi et al. 2017, MLMI (MICCAI workshop)"
    )

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1.0,
        *,
        per_class: bool = False,
        batch: bool = True,
        activation: Activation = "sigmoid",
        include_background: bool = True,
    ) -> None:
        super().__init__(per_class=per_class, batch=batch, activation=activation, include_background=include_background)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.smooth = float(smooth)

    def tversky_index(self, probs: Tensor, target: Tensor) -> Tensor:
        """Return the Tversky indices: one per class and/or image as the options say."""
        tp, sp, sg = self.sums(probs, target)
        fp, fn = sp - tp, sg - tp
        return (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth).clamp_min(LF.EPS)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        probs, target = self.probabilities(logits, target)
        return 1.0 - self.tversky_index(probs, target).mean()


@register_loss("focal_tversky")
class FocalTverskyLoss(TverskyLoss):
    """Focal-Tversky loss: the Tversky loss raised to ``1/gamma``.

    ``L = (L_T)^(1/gamma)`` with ``L_T = 1 - TI`` the Tversky loss of :class:`TverskyLoss`
    (Abraham N., Khan N. M. "A novel focal Tversky loss function with improved attention U-Net
    for lesion segmentation." ISBI 2019; paper 001: ``L_FT = sum_c (L_T^c)^(1/gamma)``, gamma in
    [1, 3], ``gamma = 1`` gives Tversky). For ``gamma > 1`` the exponent is below 1, which raises
    the loss and gradient of a nearly solved (small ``L_T``) region less than of a hard one
    relative to Tversky.

    Conventions: ``per_class=False`` (default) pools the classes into one ``L_T`` as Abraham &
    Khan's original code does (it flattens all channels), so ``gamma = 1`` is exactly
    ``tversky``; ``per_class=True`` is paper 001's formula, the SUM over classes of
    ``(L_T^c)^(1/gamma)`` (not the mean: C classes give up to C). The default ``gamma = 4/3``
    is the original code's (exponent 0.75). ``alpha`` weights false positives and ``beta``
    false negatives as in ``tversky`` (Abraham & Khan name them the other way round: their
    alpha = 0.7 on FN is our beta = 0.7). ``L_T`` is floored at 1e-12 under the power.

    Args:
        alpha: FP weight (default 0.3).
        beta: FN weight (default 0.7).
        gamma: the loss is raised to ``1/gamma`` (default 4/3).
        smooth: additive smoothing (default 1.0).
    """

    knobs: ClassVar[dict[str, Knob]] = {
        "alpha": Knob(0.3, 0.0, 1.0, help="weight of false positives"),
        "beta": Knob(0.7, 0.0, 1.0, help="weight of false negatives"),
        "gamma": Knob(4.0 / 3.0, 1.0, 3.0, help="focal exponent: loss^(1/gamma); 1 gives Tversky"),
        "smooth": Knob(1.0, 0.0, 10.0, help="additive smoothing s of the Tversky ratio"),
    }
    source: ClassVar[str] = "paper 001 (Oshah et al. 2025, doi:10.26629/jtr.2025.57); Abraham & Khan 2019, ISBI"

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 4.0 / 3.0,
        smooth: float = 1.0,
        *,
        per_class: bool = False,
        batch: bool = True,
        activation: Activation = "sigmoid",
        include_background: bool = True,
    ) -> None:
        super().__init__(
            alpha,
            beta,
            smooth,
            per_class=per_class,
            batch=batch,
            activation=activation,
            include_background=include_background,
        )
        self.gamma = float(gamma)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        probs, target = self.probabilities(logits, target)
        focal = LF.power_floored(1.0 - self.tversky_index(probs, target), 1.0 / self.gamma)
        if self.per_class:  # sum over classes (paper 001), mean over images if batch=False
            return focal.sum(-1).mean()
        return focal.mean()


@register_loss("iou_xy")
class IoUxyLoss(TverskyLoss):
    """IoU_xy loss: 1 minus the class-mean IoU with weights on false positives and negatives.

    ``L = 1 - mean_c (TP_c + s) / (TP_c + alpha FP_c + beta FN_c + s)`` with soft ``TP = sum p g``,
    ``FP = sum p (1 - g)``, ``FN = sum (1 - p) g`` (paper 003: ``alpha + beta = 2``,
    alpha, beta >= 0; IoU11 = Jaccard, IoU1505, and the best IoU0515 which weighs false negatives 3:1).

    Conventions: per class and batch-summed by default (the paper averages classes);
    ``alpha + beta = 2`` is declared as a :class:`SumConstraint`, so searches sample ``alpha``
    and derive ``beta``. The paper has no smoothing; ``smooth = 1`` (default) keeps an absent
    class predicted empty at loss 0, ``smooth = 0`` is the paper's formula. It is the Tversky
    index with weights that sum to 2 instead of 1: ``alpha = beta = 1`` is smp's
    ``JaccardLoss`` (same ``smooth``). With ``activation="softmax"``,
    ``include_background=False`` leaves the background class out of the mean.

    Args:
        alpha: weight of false positives, in [0, 2] (default 1.0).
        beta: weight of false negatives, ``2 - alpha`` (default 1.0).
        smooth: additive smoothing (default 1.0).
    """

    knobs: ClassVar[dict[str, Knob]] = {
        "alpha": Knob(1.0, 0.0, 2.0, help="weight of false positives; beta = 2 - alpha"),
        "beta": Knob(1.0, 0.0, 2.0, help="weight of false negatives; alpha = 2 - beta"),
        "smooth": Knob(1.0, 0.0, 10.0, help="additive smoothing s of the IoU ratio"),
    }
    constraints: ClassVar[tuple[SumConstraint, ...]] = (SumConstraint(knobs=("alpha", "beta"), total=2.0),)
    source: ClassVar[str] = (
        "paper 003, IoU_xy (Furtado, undated manuscript; cf. J. Imaging 2021, doi:10.3390/jimaging7020016)"
    )

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        smooth: float = 1.0,
        *,
        per_class: bool = True,
        batch: bool = True,
        activation: Activation = "sigmoid",
        include_background: bool = True,
    ) -> None:
        if abs(alpha + beta - 2.0) > 1e-6:
            raise ValueError(f"iou_xy needs alpha + beta = 2 (paper 003), got {alpha} + {beta}")
        super().__init__(
            alpha,
            beta,
            smooth,
            per_class=per_class,
            batch=batch,
            activation=activation,
            include_background=include_background,
        )
