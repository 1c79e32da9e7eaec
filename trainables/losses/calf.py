"""CALF: a loss chosen from the skewness and kurtosis of the training foreground areas (paper 002).

References:

- paper 002: "CALF: a conditionally adaptive loss function to mitigate class-imbalanced
  segmentation." Anonymised MICCAI submission (authors and year not given).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import _functional as LF
from ._base import Activation, SegmentationLoss
from .registry import Knob, register_loss

__all__ = ["CalfLoss", "CALF_TRANSFORMS", "calf_statistics", "select_calf_transform"]

CalfTransform = Literal["fisher", "logit", "arcsine", "log10_bce", "bce_dice", "ln_bce"]
CALF_TRANSFORMS: tuple[str, ...] = ("fisher", "logit", "arcsine", "log10_bce", "bce_dice", "ln_bce")


def calf_statistics(foreground_areas: Sequence[float]) -> tuple[float, float]:
    """Return ``(skewness, excess_kurtosis)`` of the foreground areas, population moments.

    ``S = mean((A - mu)^3) / sigma^3``, ``K = mean((A - mu)^4) / sigma^4 - 3`` with ``sigma`` the
    population (1/N) standard deviation (paper 002 Table 1; ``scipy.stats.skew`` and
    ``kurtosis`` with ``bias=True``). Compute it on the TRAINING fold only. When every area is
    the same (``sigma = 0``, e.g. one image, or all empty) the moments are undefined; this
    returns ``(0.0, 0.0)``: a symmetric, normal-tailed distribution, which
    :func:`select_calf_transform` maps to BCE + Dice.

    Raises:
        ValueError: no areas, a negative or non-finite area.
    """
    areas = np.asarray(list(foreground_areas), dtype=np.float64)
    if areas.size == 0:
        raise ValueError("calf_statistics needs at least one foreground area")
    if not np.isfinite(areas).all() or (areas < 0).any():
        raise ValueError("foreground areas must be finite and >= 0")
    centred = areas - areas.mean()
    variance = float(np.mean(centred**2))
    if variance <= 1e-12 * max(float(np.mean(areas**2)), 1e-300):
        return 0.0, 0.0
    sigma = math.sqrt(variance)
    skewness = float(np.mean(centred**3)) / sigma**3
    kurtosis = float(np.mean(centred**4)) / variance**2 - 3.0
    return skewness, kurtosis


def select_calf_transform(skewness: float, kurtosis: float) -> str:
    """Return the CALF transformation for skewness ``S`` and excess kurtosis ``K`` (paper 002 Table 2).

    ====================  ===========
    S <= -1               fisher
    -1 < S <= -0.5        logit
    -0.5 < S < 0          arcsine
    0 <= S <= 0.5, K < 0  log10_bce
    0 <= S <= 0.5, K >= 0 bce_dice
    0.5 < S < 1           ln_bce
    S >= 1                log10_bce
    ====================  ===========

    Choices where the table is silent or overlaps: ``S = 0`` exactly (not covered) joins the
    ``0 < S <= 0.5`` rows, chosen by ``K`` (the paper's text calls ``S ~ 0`` symmetric; those
    are its symmetric-to-mild rows); ``S = 0.5`` (in two rows) goes to the ``0 < S <= 0.5``
    rows, whose bound the table writes first and closed.

    Raises:
        ValueError: non-finite ``S`` or ``K``.
    """
    if not (math.isfinite(skewness) and math.isfinite(kurtosis)):
        raise ValueError(f"CALF needs finite skewness and kurtosis, got {skewness}, {kurtosis}")
    if skewness <= -1.0:
        return "fisher"
    if skewness <= -0.5:
        return "logit"
    if skewness < 0.0:
        return "arcsine"
    if skewness <= 0.5:
        return "log10_bce" if kurtosis < 0.0 else "bce_dice"
    if skewness < 1.0:
        return "ln_bce"
    return "log10_bce"


@register_loss("calf")
class CalfLoss(SegmentationLoss):
    """CALF: one of six pixel losses, chosen once from the training fold's foreground-area statistics.

    Paper 002 (Tables 1-2): the skewness and excess kurtosis of the per-image foreground areas of
    the TRAINING fold (computed by the caller, never on validation data) pick, through
    :func:`select_calf_transform`:

    - ``fisher``: ``-E[y 0.5 ln((1+p)/(1-p)) + (1-y) 0.5 ln((2-p)/p)]``
    - ``logit``: ``-E[y ln(p/(1-p)) + (1-y) ln((1-p)/p)]``
    - ``arcsine``: ``-E[y asin(sqrt p) + (1-y) asin(sqrt(1-p))]``
    - ``log10_bce``: ``-E[y log10 p + (1-y) log10(1-p)]`` (BCE / ln 10)
    - ``ln_bce``: ``-E[y ln p + (1-y) ln(1-p)]`` (BCE)
    - ``bce_dice``: ``BCE + (1 - Dice coefficient)``

    Conventions: ``E`` is the mean over all elements (pixels and channels). Fisher and logit
    are unbounded below as ``p -> 0`` or ``1``, and arcsine has an infinite slope there, so for
    those three ``p`` is clamped to ``[eps, 1 - eps]`` (``eps = 1e-6``; no gradient beyond the
    clamp); their minimum is therefore negative and finite (fisher ``-0.5 ln((2-eps)/eps)``,
    about -7.25; logit ``-ln((1-eps)/eps)``, about -13.8; arcsine ``-pi/2``), not 0; the
    gradients are the paper's. The BCE variants use the stable log-sigmoid (no clamp). The
    paper writes ``L_Dice = -(2 sum yp + e)/(sum y + sum p + e)`` and then ``BCE + (1 - L_Dice)``,
    a sign slip that would reward overlap with a loss above 1; we use
    ``BCE + (1 - D)``, ``D`` the pooled soft Dice of ``dice`` (``smooth = 1``). CALF has no
    knobs by design (the ROI-present ratio of the training set is a data setting).

    Args:
        foreground_areas: foreground pixel count per training image (training fold only).
        transform: an explicit transformation name instead (one of :data:`CALF_TRANSFORMS`).
        eps: clamp for fisher / logit / arcsine (default 1e-6).

    Attributes:
        transform: the chosen transformation's name, for the trainable to log.
        skewness, kurtosis: the statistics it was chosen from (None with an explicit transform).
    """

    knobs: ClassVar[dict[str, Knob]] = {}
    source: ClassVar[str] = "paper 002 Tables 1-2 (CALF, anonymised MICCAI submission)"

    def __init__(
        self,
        foreground_areas: Sequence[float] | None = None,
        *,
        transform: CalfTransform | None = None,
        eps: float = 1e-6,
        activation: Activation = "sigmoid",
        include_background: bool = True,
    ) -> None:
        super().__init__(activation=activation, include_background=include_background)
        if (foreground_areas is None) == (transform is None):
            raise ValueError(
                "calf needs exactly one of foreground_areas (per training image, training fold only) "
                "or transform=" + "/".join(CALF_TRANSFORMS)
            )
        self.skewness: float | None = None
        self.kurtosis: float | None = None
        if transform is None:
            self.skewness, self.kurtosis = calf_statistics(foreground_areas)  # type: ignore[arg-type]
            transform = select_calf_transform(self.skewness, self.kurtosis)  # type: ignore[assignment]
        if transform not in CALF_TRANSFORMS:
            raise ValueError(f"unknown CALF transform {transform!r}; known: {list(CALF_TRANSFORMS)}")
        if not 0.0 < eps < 0.5:
            raise ValueError(f"calf eps must be in (0, 0.5), got {eps}")
        self.transform: str = transform
        self.eps = float(eps)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = LF.prepare(logits, target)
        if self.transform in ("log10_bce", "ln_bce", "bce_dice"):
            bce = self._bce(logits, target)
            if self.transform == "log10_bce":
                return bce / math.log(10.0)
            if self.transform == "ln_bce":
                return bce
            probs = LF.activate(logits, self.activation)
            if not self.include_background:
                probs, target = LF.drop_background(probs, target)
            dice = (2.0 * (probs * target).sum() + 1.0) / (probs.sum() + target.sum() + 1.0)
            return bce + (1.0 - dice)
        probs = LF.activate(logits, self.activation)
        if not self.include_background:
            probs, target = LF.drop_background(probs, target)
        p = probs.clamp(self.eps, 1.0 - self.eps)
        if self.transform == "fisher":
            # 0.5 ln((1+q)/(1-q)) = atanh(q), with q = p for y = 1 and q = 1 - p for y = 0
            value = target * torch.atanh(p) + (1.0 - target) * torch.atanh(1.0 - p)
        elif self.transform == "logit":
            # ln((1-p)/p) = -ln(p/(1-p))
            value = (2.0 * target - 1.0) * torch.logit(p)
        else:
            # asin(sqrt(1-p)) = pi/2 - asin(sqrt p) on [0, 1]
            angle = torch.asin(p.sqrt())
            value = (2.0 * target - 1.0) * angle + (1.0 - target) * (math.pi / 2)
        return -value.mean()

    def _bce(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.activation == "sigmoid":
            if not self.include_background:
                logits, target = LF.drop_background(logits, target)
            return F.binary_cross_entropy_with_logits(logits, target)
        log_p, log_1mp = LF.log_probabilities(logits, "softmax")
        if not self.include_background:
            log_p, log_1mp, target = LF.drop_background(log_p, log_1mp, target)
        return -(target * log_p + (1.0 - target) * log_1mp).mean()

    def extra_repr(self) -> str:
        return (
            f"transform={self.transform!r}, skewness={self.skewness}, kurtosis={self.kurtosis}, {super().extra_repr()}"
        )
