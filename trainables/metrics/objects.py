"""Object-level detection: connected components of truth and prediction, found and correct objects.

Pixel sensitivity can be near-perfect while whole small structures are missed (Reinke et al.,
"Understanding metric-related pitfalls in image analysis validation", Nature Methods 21, 2024,
doi:10.1038/s41592-023-02150-0; Maier-Hein et al., "Metrics Reloaded", Nature Methods 21, 2024,
doi:10.1038/s41592-023-02151-z): these metrics count organs' pieces instead of pixels.

Per image and class, with objects the 8-connected components of a 2D mask
(``scipy.ndimage.label``) and ``m`` the minimum overlap (default 0.5):

- a true object is *found* when the predicted mask covers at least ``m`` of its pixels;
- a predicted object is *correct* when the true mask covers at least ``m`` of its pixels;
- ``object_sensitivity = found / true`` and ``object_precision = correct / predicted``.

The scores use the confusion metrics' empty rule (:func:`~trainables.metrics.per_image_scores`)
without smoothing: a count of a few objects is too small for a unit term (one missed object of
one would score 1/2). Under ``"one"`` a 0/0 scores 1, so an image with no true object has
object sensitivity 1, and object precision 1 when nothing is predicted, 0 otherwise; ``"zero"``
and ``"skip"`` give such an image 0 or NaN. Pooled scores divide counts summed over the images.

Everything runs on the CPU (numpy + scipy) on masks already thresholded, beside the boundary
metrics; the non-empty planes of a batch are labelled in one ``ndimage.label`` call with a
structure that connects pixels within an image plane only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from trainables.metrics.confusion import EmptyRule, check_empty_rule

__all__ = [
    "DEFAULT_MIN_OVERLAP",
    "OBJECT_COUNTS",
    "OBJECT_METRICS",
    "label_objects",
    "object_counts",
    "object_scores",
    "pooled_object_scores",
]

#: per-image object metrics, in report order (each also ``pooled_<name>``)
OBJECT_METRICS = ("object_sensitivity", "object_precision")
#: rows of :func:`object_counts`
OBJECT_COUNTS = ("objects_true", "objects_found", "objects_pred", "objects_correct")
#: share of an object's pixels the other mask must cover for it to count as found / correct
DEFAULT_MIN_OVERLAP = 0.5
_FILL = {"one": 1.0, "zero": 0.0, "skip": float("nan")}


def _as_bool(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x if x.dtype == bool else x != 0


#: 8-connectivity within each (H, W) plane of a (planes, H, W) stack, none across planes
_PLANE_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_PLANE_STRUCTURE[1] = True


def _label_planes(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Label the objects of a (P, H, W) bool stack in one ``ndimage.label`` call, empty planes skipped.

    Returns ``(labels, plane, kept, pixels)``: ``labels`` (Q, H, W) of the Q non-empty planes
    ``kept`` (Q,) (indices into P), 0 for background and 1..K for the objects; ``plane`` (K + 1,)
    the index in P of each label's plane (``plane[0] = -1``); ``pixels`` the flat indices of the
    labelled pixels in ``labels``."""
    kept = np.flatnonzero(planes.reshape(len(planes), -1).any(axis=1))
    labels, n = ndimage.label(planes[kept], structure=_PLANE_STRUCTURE)
    flat = labels.ravel()
    pixels = flat.nonzero()[0]
    plane = np.full(n + 1, -1, dtype=np.int64)
    plane[flat[pixels]] = kept[pixels // (planes.shape[1] * planes.shape[2])]  # a label lies in one plane
    return labels, plane, kept, pixels


def label_objects(masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return the 8-connected components of every 2D plane of ``masks`` at once.

    Args:
        masks: (..., H, W) masks (any non-zero is foreground), numpy or torch; e.g. (N, C, H, W).

    Returns:
        ``(labels, plane)``: ``labels`` of the masks' shape, 0 for background and 1..K for the
        objects (unique over all planes; no object spans two planes); ``plane`` (K + 1,) the flat
        index of each label's plane in the leading axes (``plane[0] = -1``).
    """
    masks = _as_bool(masks)
    if masks.ndim < 2:
        raise ValueError(f"expected (..., H, W) masks, got shape {masks.shape}")
    planes = masks.reshape(-1, *masks.shape[-2:])
    kept_labels, plane, kept, _ = _label_planes(planes)
    labels = np.zeros(planes.shape, dtype=kept_labels.dtype)
    labels[kept] = kept_labels
    return labels.reshape(masks.shape), plane


def _hits(masks: np.ndarray, other: np.ndarray, min_overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """(objects of ``masks``, those ``other`` covers to at least ``min_overlap``) per plane of
    (P, H, W) stacks, each (P,)."""
    labels, plane, kept, inside = _label_planes(masks)
    flat = labels.ravel()
    n = len(plane)
    size = np.bincount(flat[inside], minlength=n)
    covered = np.bincount(flat[inside[other[kept].ravel()[inside]]], minlength=n)
    hit = covered[1:] >= min_overlap * size[1:]
    return (np.bincount(plane[1:], minlength=len(masks)), np.bincount(plane[1:][hit], minlength=len(masks)))


def object_counts(pred: Any, target: Any, *, min_overlap: float = DEFAULT_MIN_OVERLAP) -> np.ndarray:
    """Return ``(objects_true, objects_found, objects_pred, objects_correct)`` per image and class, (4, N, C) int64.

    Args:
        pred, target: (N, C, H, W) hard masks (any non-zero is positive), numpy or torch.
        min_overlap: share ``m`` in (0, 1] of an object's pixels the other mask must cover: a true
            object is found when ``|T_i and P| >= m |T_i|``, a predicted one is correct when
            ``|P_j and T| >= m |P_j|`` (default 0.5).
    """
    if not 0.0 < min_overlap <= 1.0:
        raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap}")
    pred, target = _as_bool(pred), _as_bool(target)
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"expected pred and target (N, C, H, W) of one shape; got {pred.shape} and {target.shape}")
    shape = pred.shape[:2]
    pred, target = pred.reshape(-1, *pred.shape[2:]), target.reshape(-1, *target.shape[2:])
    true, found = _hits(target, pred, min_overlap)
    predicted, correct = _hits(pred, target, min_overlap)
    return np.stack([true, found, predicted, correct]).reshape(4, *shape)


def _ratio(num: np.ndarray, den: np.ndarray, target_empty: np.ndarray, empty: str) -> np.ndarray:
    """``num / den`` with the empty rule: 0/0 and (unless ``"one"``) an empty target take the rule's value."""
    undefined = den == 0
    if empty != "one":
        undefined = undefined | target_empty
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(undefined, _FILL[empty], num / np.where(den == 0, 1, den))


def object_scores(counts: np.ndarray, empty: EmptyRule = "one") -> dict[str, np.ndarray]:
    """Return ``object_sensitivity = found / true`` and ``object_precision = correct / predicted``.

    Args:
        counts: (4, ...) rows of :data:`OBJECT_COUNTS` (from :func:`object_counts`).
        empty: the empty rule of :func:`~trainables.metrics.per_image_scores` with no smoothing:
            a 0/0 scores 1 (``"one"``), 0 (``"zero"``) or NaN (``"skip"``); under ``"zero"`` and
            ``"skip"`` so does every cell without a true object.
    """
    check_empty_rule(empty)
    true, found, predicted, correct = np.asarray(counts, dtype=np.float64)
    no_object = true == 0
    return {
        "object_sensitivity": _ratio(found, true, no_object, empty),
        "object_precision": _ratio(correct, predicted, no_object, empty),
    }


def pooled_object_scores(counts: np.ndarray, empty: EmptyRule = "one") -> dict[str, np.ndarray]:
    """Return the object scores of counts summed over the images (axis 1 of (4, N, C)): each (C,).

    ``pooled object_sensitivity = sum found / sum true`` over the images, likewise precision;
    a class with no object in any image follows ``empty`` as in :func:`object_scores`.
    """
    return object_scores(np.asarray(counts).sum(axis=1), empty)
