"""Confusion-count metrics: per-image counts, per-image (smoothed) and pooled scores, MAE.

Formulas are paper 000 eqs 4-8 plus pixel accuracy of paper 002; the per-image unit smoothing is
000's empty-slice convention.

The batched path of :class:`~trainables.metrics.SegmentationMetrics` is :func:`sigmoid_planes` /
:func:`probability_planes` (probability and 0/1 prediction side by side, each written once) then
:func:`pixel_sums` (three reductions give every count and the absolute error) then
:func:`stacked_scores` (the six scores of all images and classes in a few small kernels).

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
- paper 002: "CALF: a conditionally adaptive loss function to mitigate class-imbalanced
  segmentation." Anonymised MICCAI submission (authors and year not given).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "CONFUSION_METRICS",
    "EMPTY_RULES",
    "EmptyRule",
    "confusion_counts",
    "per_image_scores",
    "stacked_scores",
    "pooled_scores",
    "mean_absolute_error",
    "sigmoid_planes",
    "probability_planes",
    "pixel_sums",
]

#: metrics computed from (tp, fp, fn, tn), in report order
CONFUSION_METRICS = ("dice", "iou", "sensitivity", "specificity", "precision", "accuracy")
#: metrics that are about the organ (foreground) and so are undefined-in-spirit on an empty ground truth
FOREGROUND_METRICS = frozenset({"dice", "iou", "sensitivity", "precision", "nsd", "boundary_f1", "hd95"})

EmptyRule = Literal["one", "skip", "zero"]
EMPTY_RULES = ("one", "skip", "zero")

# float32 sums of 0/1 values are exact below 2**24, and much faster than bool -> int64 sums on CPU
EXACT_FLOAT32 = 2**24


def check_empty_rule(empty: str) -> str:
    if empty not in EMPTY_RULES:
        raise ValueError(f"empty must be one of {EMPTY_RULES}, got {empty!r}")
    return empty


def confusion_counts(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return hard ``(tp, fp, fn, tn)`` per image and class, each (N, C) int64.

    Args:
        pred, target: (N, C, *spatial) masks, bool or 0/1 numbers (any non-zero counts as
            positive). Counted on the inputs' device, with no host synchronisation.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.dim() < 3:
        raise ValueError(f"expected (N, C, *spatial) masks, got shape {tuple(pred.shape)}")
    pixels = pred[0, 0].numel()
    dtype = torch.float32 if pixels < EXACT_FLOAT32 else torch.float64
    p = (pred != 0).to(dtype).flatten(2)
    t = (target != 0).to(dtype).flatten(2)
    tp = (p * t).sum(-1).long()
    pos_pred = p.sum(-1).long()
    pos_true = t.sum(-1).long()
    fp = pos_pred - tp
    fn = pos_true - tp
    tn = pixels - tp - fp - fn
    return tp, fp, fn, tn


def _empty_planes(scores: Tensor, dtype: torch.dtype, out: Tensor | None) -> Tensor:
    """An uninitialised ``(N, C, 2, *spatial)`` tensor like ``scores`` (N, C, *spatial): plane 0 for
    the probability, plane 1 for the 0/1 prediction of the same pixel. ``out[:N]`` is used when it
    fits (same dtype, device and shape but for at least N images), else a new tensor is allocated."""
    n, c, *spatial = scores.shape
    shape = (n, c, 2, *spatial)
    if (
        out is not None
        and out.shape[1:] == shape[1:]
        and out.shape[0] >= n
        and out.dtype == dtype
        and out.device == scores.device
        and out.is_contiguous()
    ):
        return out[:n]
    return torch.empty(shape, dtype=dtype, device=scores.device)


def sigmoid_planes(logits: Tensor, threshold: float, out: Tensor | None = None) -> Tensor:
    """Return float32 ``(N, C, 2, *spatial)`` planes ``[p, y]`` of (N, C, *spatial) logits:
    ``p = sigmoid(logits)`` (in float32) and ``y = 1.0 if p >= threshold else 0.0``.

    Each plane is written once, straight into place (no probability or bool temporaries); ``y``
    thresholds the same ``p``, so it equals ``sigmoid(logits.float()) >= threshold`` exactly.
    ``out``: a workspace to write into (its first N images) when its shape, dtype and device fit.
    """
    x = logits.float()
    planes = _empty_planes(x, torch.float32, out)
    probs = planes[:, :, 0]
    torch.sigmoid(x, out=probs)
    torch.ge(probs, threshold, out=planes[:, :, 1])
    return planes


def probability_planes(
    probs: Tensor, threshold: float, activation: str, dtype: torch.dtype, out: Tensor | None = None
) -> Tensor:
    """Return ``(N, C, 2, *spatial)`` planes ``[p, y]`` in ``dtype`` of (N, C, *spatial) probabilities.

    ``y`` is computed on ``probs`` as given: ``1.0 if p >= threshold else 0.0`` under
    ``"sigmoid"``; under ``"softmax"`` the one-hot of the channel argmax (``threshold`` unused).
    ``out`` as for :func:`sigmoid_planes`.
    """
    planes = _empty_planes(probs, dtype, out)
    planes[:, :, 0].copy_(probs)
    pred = planes[:, :, 1]
    if activation == "softmax":
        pred.zero_().scatter_(1, probs.argmax(dim=1, keepdim=True), 1.0)
    else:
        torch.ge(probs, threshold, out=pred)
    return planes


def pixel_sums(planes: Tensor, target: Tensor) -> Tensor:
    """Return the ``(N, C, 5)`` sums over pixels ``[sum p, sum y, sum g, sum p g, sum y g]``.

    Args:
        planes: ``(N, C, 2, *spatial)`` probability ``p`` and 0/1 prediction ``y`` (from
            :func:`sigmoid_planes` / :func:`probability_planes`), used as scratch: multiplied by
            ``g`` in place (no second batch-sized temporary), so it holds ``[p g, y g]`` after.
        target: ``(N, C, *spatial)`` ground truth ``g``: float targets are taken as 0/1 already,
            any other dtype counts non-zero as 1.

    Three reductions in ``planes.dtype``: sums of 0/1 values are exact integers in float32 below
    2**24 pixels, so ``tp = sum y g``, ``fp = sum y - tp``, ``fn = sum g - tp``; and for 0/1 ``g``,
    ``sum |p - g| = sum p + sum g - 2 sum p g``.
    """
    dims = tuple(range(3, planes.dim()))
    g = (target if target.is_floating_point() else target != 0).to(planes.dtype).unsqueeze(2)
    plain = planes.sum(dims)
    return torch.cat([plain, g.sum(dims), planes.mul_(g).sum(dims)], dim=-1)


def _ratios(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """(numerator, denominator) of each confusion metric, unsmoothed."""
    return {
        "dice": (2 * tp, 2 * tp + fp + fn),
        "iou": (tp, tp + fp + fn),
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "precision": (tp, tp + fp),
        "accuracy": (tp + tn, tp + fp + fn + tn),
    }


#: rows of :data:`CONFUSION_METRICS` the empty-target rule applies to (the organ metrics)
_ORGAN_ROWS = tuple(i for i, name in enumerate(CONFUSION_METRICS) if name in FOREGROUND_METRICS)
_FILL = {"one": 1.0, "zero": 0.0, "skip": float("nan")}


def stacked_scores(
    tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, smooth: float = 1.0, empty: EmptyRule = "one"
) -> Tensor:
    """Return every metric of :data:`CONFUSION_METRICS` stacked, ``(6, *tp.shape)`` in that order.

    The formulas and rules of :func:`per_image_scores` (which returns this tensor's rows by name),
    ``score = (num + s) / (den + s)`` for the six ``(num, den)`` pairs, computed once on the
    stacked pairs: a handful of small kernels per batch instead of one set per metric.
    """
    check_empty_rule(empty)
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    if not tp.is_floating_point():
        dtype = torch.get_default_dtype()
        tp, fp, fn, tn = (x.to(dtype) for x in (tp, fp, fn, tn))
    pairs = _ratios(tp, fp, fn, tn)
    num = torch.stack([pairs[m][0] for m in CONFUSION_METRICS]).add_(smooth)
    den = torch.stack([pairs[m][1] for m in CONFUSION_METRICS]).add_(smooth)
    undefined = den == 0  # a 0/0, possible only with s = 0
    if empty != "one":  # an empty target takes the rule's value on the organ rows too
        target_empty = (tp + fn) == 0
        for row in _ORGAN_ROWS:  # row views: no index tensor to copy to the device
            undefined[row] |= target_empty
    return torch.where(undefined, _FILL[empty], num.div_(den))


def per_image_scores(
    tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, smooth: float = 1.0, empty: EmptyRule = "one"
) -> dict[str, Tensor]:
    """Return each metric of :data:`CONFUSION_METRICS` per image and class, each shaped like ``tp``.

    Paper 000 eqs 4-8 and 002's pixel accuracy, with smoothing ``s`` (default 1.0) added to
    numerator and denominator::

        dice        = (2 tp + s) / (2 tp + fp + fn + s)
        iou         = (tp + s) / (tp + fp + fn + s)
        sensitivity = (tp + s) / (tp + fn + s)
        specificity = (tn + s) / (tn + fp + s)
        precision   = (tp + s) / (tp + fp + s)
        accuracy    = (tp + tn + s) / (tp + fp + fn + tn + s)

    With ``s > 0`` an empty target predicted empty scores 1 on every metric (000's convention).

    Args:
        smooth: ``s`` above, >= 0 (default 1.0).
        empty: the empty-ground-truth rule (default ``"one"``). It applies to a cell (image,
            class) whose target is empty, for the organ metrics dice, iou, sensitivity and
            precision, and to any 0/0 left (possible only with ``s = 0``):

            - ``"one"``: keep the formula; a 0/0 scores 1. An empty target predicted empty
              scores 1, an empty target with false positives scores ``s / (fp + s)`` (0 when
              ``s = 0``) on dice/iou/precision. Equals smp ``zero_division=1`` when ``s = 0``.
            - ``"zero"``: an empty target scores 0, and so does any 0/0 (smp ``zero_division=0``
              when ``s = 0``).
            - ``"skip"``: an empty target, and any 0/0, is NaN, to be left out of averages
              (MONAI ``ignore_empty=True``).

    Integer counts are converted to the default float dtype; floating counts keep their dtype.
    """
    return dict(zip(CONFUSION_METRICS, stacked_scores(tp, fp, fn, tn, smooth=smooth, empty=empty).unbind(0)))


def pooled_scores(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, empty: EmptyRule = "one") -> dict[str, Tensor]:
    """Return each metric of :data:`CONFUSION_METRICS` from counts pooled over the images (dim 0).

    The counts (N, C) are summed over images first ("micro" / global / data-set pooled), then
    the unsmoothed formulas of :func:`per_image_scores` are applied per class: result (C,).
    ``empty`` (default ``"one"``) as in :func:`per_image_scores`, for a class with no target
    pixel in any image or a 0/0. With ``"one"`` / ``"zero"`` this equals smp's per-class scores of
    the summed counts with ``zero_division=1`` / ``0`` (its ``micro`` reduction, class by class).
    """
    summed = [x.sum(dim=0, keepdim=True) for x in (tp, fp, fn, tn)]
    if not summed[0].is_floating_point():
        summed = [x.to(torch.float64) for x in summed]
    return {k: v[0] for k, v in per_image_scores(*summed, smooth=0.0, empty=empty).items()}


def mean_absolute_error(probs: Tensor, target: Tensor) -> Tensor:
    """Return the mean absolute error ``mean |p - g|`` per image and class, (N, C) (paper 002).

    Args:
        probs: (N, C, *spatial) predicted probabilities (not thresholded), or hard masks.
        target: same shape, 0/1 (any non-zero counts as 1).
    """
    if probs.shape != target.shape:
        raise ValueError(
            f"probs and target must have the same shape; got {tuple(probs.shape)} and {tuple(target.shape)}"
        )
    p = probs.flatten(2)
    if not p.is_floating_point():
        p = p.to(torch.get_default_dtype())
    return (p - (target != 0).to(p.dtype).flatten(2)).abs().mean(dim=-1)
