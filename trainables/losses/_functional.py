"""Small pure tensor functions behind the registered losses.

Conventions shared by every function here:

- ``probs`` are probabilities (sigmoid for multi-label outputs, softmax over channel dim 1 for
  multi-class outputs) and ``target`` is a 0/1 float mask of the same shape (N, C, *spatial).
- ``dims=None`` sums over every element (the batch's pixels and all channels pooled, as in
  paper 000 eq. 1); a tuple of dims keeps the others, e.g. ``dims=(0, 2, 3)`` gives one value
  per channel.
- Nothing here casts or checks shapes; :func:`prepare` does that once at the top of a loss.

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
- Lin T.-Y., Goyal P., Girshick R., He K., Dollar P. "Focal loss for dense object detection." ICCV 2017.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "EPS",
    "prepare",
    "activate",
    "log_probabilities",
    "drop_background",
    "region_dims",
    "overlap_sums",
    "soft_confusion_sums",
    "soft_dice_score",
    "soft_tversky_score",
    "soft_bce_with_logits",
    "sigmoid_focal_loss",
    "topk_mean",
    "power_floored",
]

# Floor for denominators: with smooth=0 and an all-empty batch predicted all-empty the ratio is
# 0/0; the floor turns it into 0 (loss 1) instead of NaN, as smp does.
EPS = 1e-7

# Floor for bases raised to a power < 1 (focal factor 1 - p_t, Tversky loss under 1/gamma,
# -ln Dice under gamma): d/dx x**a is infinite at x = 0 for a < 1, and a confidently right
# pixel or class has x == 0 exactly in float32.
_POWER_FLOOR = 1e-12

# log(1 - p) under softmax is -inf once p rounds to 1; clamp like torch.nn.BCELoss does.
_LOG_FLOOR = -100.0


def prepare(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(logits, target)`` as float32, after checking they have the same shape.

    Losses compute in float32 whatever the input dtype (float16/bfloat16 under AMP, bool or
    uint8 masks) so mixed precision cannot break sums over ~10^6 pixels or log terms.
    float64 inputs stay float64 (gradient checks).
    """
    if logits.shape != target.shape:
        raise ValueError(
            f"logits and target must have the same shape (N, C, H, W); got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if logits.dim() < 2:
        raise ValueError(f"expected at least (N, C) dims, got shape {tuple(logits.shape)}")
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return logits.to(dtype), target.to(dtype)


def activate(logits: Tensor, activation: str) -> Tensor:
    """Return probabilities: ``sigmoid(logits)`` or ``softmax(logits, dim=1)``."""
    if activation == "softmax":
        return logits.softmax(dim=1)
    return logits.sigmoid()


def log_probabilities(logits: Tensor, activation: str) -> tuple[Tensor, Tensor]:
    """Return ``(log p, log(1 - p))`` per element, computed stably from the logits.

    Sigmoid: ``logsigmoid(z)`` and ``logsigmoid(-z)`` (exact, finite for any finite z).
    Softmax: ``log_softmax`` and ``log(1 - exp(log p))`` by the two-branch log1mexp; the
    second is clamped at -100 (as ``torch.nn.BCELoss``) where ``p`` rounds to 1.
    """
    if activation == "softmax":
        log_p = logits.log_softmax(dim=1)
        # each branch gets only inputs where it is finite, so the unselected one cannot put
        # inf * 0 = NaN into the gradient
        near = log_p > -math.log(2.0)
        half = torch.full_like(log_p, -math.log(2.0))
        tiny = torch.finfo(log_p.dtype).tiny
        near_one = torch.log((-torch.expm1(torch.where(near, log_p, half))).clamp_min(tiny))
        far = torch.log1p(-torch.exp(torch.where(near, half, log_p)))
        return log_p, torch.where(near, near_one, far).clamp_min(_LOG_FLOOR)
    return F.logsigmoid(logits), F.logsigmoid(-logits)


def drop_background(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Return the tensors without channel 0 (the background channel), checking one is left."""
    if tensors[0].shape[1] < 2:
        raise ValueError("include_background=False needs at least 2 channels (channel 0 is background)")
    return tuple(t[:, 1:] for t in tensors)


def region_dims(ndim: int, batch: bool) -> tuple[int, ...]:
    """Return the dims a region loss sums over: the spatial dims, plus the batch dim if ``batch``."""
    spatial = tuple(range(2, ndim))
    return ((0,) + spatial) if batch else spatial


def overlap_sums(
    probs: Tensor, target: Tensor, dims: tuple[int, ...], squared: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(sum p g, sum p, sum g)`` over ``dims``; ``squared`` gives ``sum p^2`` and ``sum g^2``.

    ``fp = sum p - tp`` and ``fn = sum g - tp``: three reductions instead of three products.
    """
    tp = (probs * target).sum(dims)
    if squared:
        return tp, (probs * probs).sum(dims), (target * target).sum(dims)
    return tp, probs.sum(dims), target.sum(dims)


def soft_confusion_sums(
    probs: Tensor, target: Tensor, dims: tuple[int, ...] | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Return soft ``(tp, fp, fn)``: sums of ``p g``, ``p (1 - g)`` and ``(1 - p) g`` over ``dims``."""
    tp = _sum(probs * target, dims)
    fp = _sum(probs * (1.0 - target), dims)
    fn = _sum((1.0 - probs) * target, dims)
    return tp, fp, fn


def soft_dice_score(probs: Tensor, target: Tensor, smooth: float = 1.0, dims: tuple[int, ...] | None = None) -> Tensor:
    """Return the soft Dice coefficient ``(2 sum pg + s) / (sum p + sum g + s)`` (paper 000 eq. 1).

    ``sum p + sum g`` is written ``2 tp + fp + fn``, the same number.
    """
    tp, fp, fn = soft_confusion_sums(probs, target, dims)
    return (2.0 * tp + smooth) / (2.0 * tp + fp + fn + smooth).clamp_min(EPS)


def soft_tversky_score(
    probs: Tensor,
    target: Tensor,
    alpha: float,
    beta: float,
    smooth: float = 1.0,
    dims: tuple[int, ...] | None = None,
) -> Tensor:
    """Return the soft Tversky index ``(tp + s) / (tp + alpha fp + beta fn + s)`` (paper 000 eq. 3).

    ``alpha`` weights false positives ``sum p (1 - g)``, ``beta`` false negatives
    ``sum (1 - p) g`` (the order of smp's ``soft_tversky_score``).
    """
    tp, fp, fn = soft_confusion_sums(probs, target, dims)
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth).clamp_min(EPS)


def soft_bce_with_logits(logits: Tensor, target: Tensor, smoothing: float = 0.0) -> Tensor:
    """Return the mean binary cross-entropy of ``logits`` against label-smoothed ``target``.

    Smoothed target: ``g (1 - s) + 0.5 s`` (standard two-class label smoothing: 1 -> 1 - s/2,
    0 -> s/2). smp's ``SoftBCEWithLogitsLoss(smooth_factor=f)`` maps 1 -> 1 - f, 0 -> f, so it
    equals this function with ``s = 2 f``.
    """
    if smoothing:
        target = target * (1.0 - smoothing) + 0.5 * smoothing
    return F.binary_cross_entropy_with_logits(logits, target, reduction="mean")


def sigmoid_focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0, alpha: float | None = None) -> Tensor:
    """Return the mean over all elements of ``-alpha_t (1 - p_t)^gamma log p_t`` (Lin et al. 2017).

    ``p_t = p`` where ``g = 1`` and ``1 - p`` where ``g = 0``; ``-log p_t`` is taken from the
    numerically stable BCE-with-logits. ``alpha=None`` drops the class weighting
    (``alpha_t = 1``); otherwise ``alpha_t = alpha g + (1 - alpha)(1 - g)`` (torchvision's
    convention). ``gamma = 0`` and ``alpha=None`` give plain BCE.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # -log p_t
    loss = focal_factor(bce, gamma) * bce
    if alpha is not None:
        loss = loss * (alpha * target + (1.0 - alpha) * (1.0 - target))
    return loss.mean()


def focal_factor(neg_log_pt: Tensor, gamma: float) -> Tensor:
    """Return ``(1 - p_t)^gamma`` from ``-log p_t``, accurately (``1 - p_t = -expm1(log p_t)``)."""
    if gamma == 0.0:
        return torch.ones_like(neg_log_pt)
    return power_floored(-torch.expm1(-neg_log_pt), gamma)


def power_floored(x: Tensor, exponent: float) -> Tensor:
    """Return ``max(x, 1e-12) ** exponent``: finite gradient at 0 for exponents below 1."""
    if exponent == 1.0:
        return x
    return x.clamp_min(_POWER_FLOOR).pow(exponent)


def topk_mean(values: Tensor, percent: float) -> Tensor:
    """Return the mean of the largest ``ceil(percent% of values.numel())`` entries (at least one).

    ``percent = 100`` is the plain mean. Gradient flows to the selected entries only.
    """
    flat = values.reshape(-1)
    k = max(1, math.ceil(flat.numel() * percent / 100.0))
    if k >= flat.numel():
        return flat.mean()
    return flat.topk(k, sorted=False).values.mean()


def _sum(x: Tensor, dims: tuple[int, ...] | None) -> Tensor:
    return x.sum() if dims is None else x.sum(dim=dims)
