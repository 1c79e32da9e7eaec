"""Boundary metrics on hard masks (CPU, scipy): NSD, HD95, BF score, GI score.

- NSD: paper 004 eq. 6, tolerance in mm.
- HD95: 95th percentile of the symmetric boundary-to-boundary distances in mm (MONAI's
  ``compute_hausdorff_distance(percentile=95)`` convention).
- Boundary F1 (BF score): paper 003, match distance 0.75% of the image diagonal.
- GI score: the UW-Madison GI Tract competition score ``0.4 dice + 0.6 (1 - hd / sqrt(3))`` per scan.

A boundary is the set of mask pixels with a 4-neighbour outside the mask (the mask minus its
erosion by a cross; the image edge counts as outside), as in MONAI's ``get_mask_edges``.
Distances are exact Euclidean distances between pixel centres scaled by the pixel spacing
(nearest neighbours with scipy's cKDTree, as MONAI does on the CPU).
Functions accept numpy arrays or torch tensors (moved to the CPU) and return numpy.

References:

- paper 003: Furtado P. "Investigation of loss functions for improving deep segmentation of
  abdominal organs from MRI." University of Coimbra, undated manuscript; related published study:
  Furtado P. "Testing segmentation popular loss and variations in three multiclass medical imaging
  problems." J. Imaging 7(2):16, 2021. doi:10.3390/jimaging7020016
- paper 004: Hosseini S. M. "Pixel-wise modulated Dice loss for medical image segmentation." 2025.
  arXiv:2506.15744
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from trainables.metrics.confusion import EmptyRule, check_empty_rule

__all__ = [
    "BOUNDARY_METRICS",
    "BF_DIAGONAL_FRACTION",
    "mask_border",
    "surface_distances",
    "compute_boundary_metrics",
    "compute_nsd",
    "compute_hd95",
    "compute_boundary_f1",
    "normalized_hausdorff_3d",
    "compute_gi_score",
]

BOUNDARY_METRICS = ("nsd", "hd95", "boundary_f1")
#: paper 003: a boundary pixel matches when within 0.75% of the image diagonal of the other boundary
BF_DIAGONAL_FRACTION = 0.0075
_CROSS = {rank: ndimage.generate_binary_structure(rank, 1) for rank in (2, 3)}


def _as_bool(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x) != 0


def mask_border(mask: Any) -> np.ndarray:
    """Return the boundary pixels of a 2D/3D mask: inside it, with a face-neighbour outside it."""
    mask = _as_bool(mask)
    return mask & ~ndimage.binary_erosion(mask, structure=_CROSS[mask.ndim], border_value=0)


def surface_distances(pred: Any, target: Any, spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(pred -> target, target -> pred)`` boundary distances in mm (1D float64 arrays).

    The first holds, for every boundary pixel of ``pred``, the distance to the nearest boundary
    pixel of ``target``; the second the converse. Both masks must be non-empty.

    Args:
        pred, target: one 2D (H, W) or 3D mask each, same shape.
        spacing: size of a pixel along each axis in mm (default 1 on every axis).
    """
    pred, target = _as_bool(pred), _as_bool(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape; got {pred.shape} and {target.shape}")
    if not pred.any() or not target.any():
        raise ValueError("surface distances need a non-empty pred and target")
    scale = np.ones(pred.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    points_p = np.argwhere(mask_border(pred)) * scale
    points_t = np.argwhere(mask_border(target)) * scale
    # nearest-neighbour queries between the two (small) boundary point sets: exact Euclidean
    to_target = cKDTree(points_t).query(points_p, k=1)[0]
    to_pred = cKDTree(points_p).query(points_t, k=1)[0]
    return to_target, to_pred


def _diagonal_mm(shape: tuple[int, int], spacing: tuple[float, float]) -> float:
    return math.hypot(shape[0] * spacing[0], shape[1] * spacing[1])


def _spacings(n: int, spacing: Any) -> np.ndarray:
    """(n, 2) pixel spacings in mm from None, one (sy, sx) pair, or one pair per image."""
    if spacing is None:
        return np.ones((n, 2))
    if hasattr(spacing, "detach"):
        spacing = spacing.detach().cpu().numpy()
    arr = np.asarray(spacing, dtype=np.float64)
    if arr.shape == (2,):
        arr = np.broadcast_to(arr, (n, 2))
    if arr.shape != (n, 2) or not np.all(arr > 0):
        raise ValueError(f"spacing must be positive (sy, sx) or (N={n}, 2) mm, got shape {arr.shape}")
    return arr


def _cell(
    pred: np.ndarray, target: np.ndarray, spacing: tuple[float, float], tolerance_mm: float, empty: str
) -> tuple[float, float, float]:
    """(nsd, hd95, boundary_f1) of one 2D image and class, with the empty rule."""
    has_p, has_t = bool(pred.any()), bool(target.any())
    worst_distance = _diagonal_mm(pred.shape, spacing)
    if not has_t:
        if empty == "skip":
            return math.nan, math.nan, math.nan
        if empty == "zero" or has_p:
            return 0.0, worst_distance, 0.0
        return 1.0, 0.0, 1.0  # "one": nothing to find and nothing found
    if not has_p:
        return 0.0, worst_distance, 0.0
    to_target, to_pred = surface_distances(pred, target, spacing)
    nsd = ((to_target <= tolerance_mm).sum() + (to_pred <= tolerance_mm).sum()) / (to_target.size + to_pred.size)
    hd95 = max(np.percentile(to_target, 95), np.percentile(to_pred, 95))
    theta = BF_DIAGONAL_FRACTION * worst_distance
    precision = (to_target <= theta).mean()
    recall = (to_pred <= theta).mean()
    bf = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return float(nsd), float(hd95), float(bf)


def compute_boundary_metrics(
    pred: Any,
    target: Any,
    *,
    spacing: Any = None,
    nsd_tolerance_mm: float = 2.0,
    empty: EmptyRule = "one",
) -> dict[str, np.ndarray]:
    """Return ``{"nsd", "hd95", "boundary_f1"}`` per image and class, each (N, C) float64.

    - ``nsd`` (004 eq. 6): ``(|S_p within tau of S_y| + |S_y within tau of S_p|) / (|S_p| + |S_y|)``
      with ``tau = nsd_tolerance_mm``.
    - ``hd95``: ``max(P95(d(S_p -> S_y)), P95(d(S_y -> S_p)))`` in mm, linear-interpolated
      percentile (numpy's / MONAI's).
    - ``boundary_f1`` (003): ``2 P R / (P + R)`` with P the share of ``S_p`` within ``theta`` of
      ``S_y``, R the share of ``S_y`` within ``theta`` of ``S_p``, ``theta`` = 0.75% of the image
      diagonal ``sqrt((H sy)^2 + (W sx)^2)``; 0 when P + R = 0.

    Empty masks (``empty``, default ``"one"``, as for the overlap metrics): a non-empty target
    with an empty prediction scores nsd 0, boundary_f1 0 and hd95 = the image diagonal in mm
    (the farthest two pixels can be; an undefined distance would break averages). An empty
    target: ``"one"`` scores 1 / 0 mm / 1 if the prediction is empty too, else 0 / diagonal / 0;
    ``"zero"`` scores 0 / diagonal / 0; ``"skip"`` gives NaN (left out of averages).

    Args:
        pred, target: (N, C, H, W) hard masks (any non-zero is positive), numpy or torch.
        spacing: pixel size (sy, sx) in mm for every image, or (N, 2) per image; default 1 mm.
        nsd_tolerance_mm: NSD tolerance ``tau`` in mm (default 2.0: about one pixel of the
            UW-Madison scans at 224 px).
        empty: ``"one"``, ``"zero"`` or ``"skip"``.
    """
    check_empty_rule(empty)
    pred, target = _as_bool(pred), _as_bool(target)
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"expected pred and target (N, C, H, W) of one shape; got {pred.shape} and {target.shape}")
    if nsd_tolerance_mm < 0:
        raise ValueError(f"nsd_tolerance_mm must be >= 0, got {nsd_tolerance_mm}")
    n, c = pred.shape[:2]
    spacings = _spacings(n, spacing)
    out = np.empty((3, n, c))
    for i in range(n):
        sp = (float(spacings[i, 0]), float(spacings[i, 1]))
        for j in range(c):
            out[:, i, j] = _cell(pred[i, j], target[i, j], sp, nsd_tolerance_mm, empty)
    return dict(zip(BOUNDARY_METRICS, out))


def compute_nsd(
    pred: Any, target: Any, tolerance_mm: float = 2.0, *, spacing: Any = None, empty: EmptyRule = "one"
) -> np.ndarray:
    """Return the normalised surface distance (004 eq. 6) per image and class, (N, C); see :func:`compute_boundary_metrics`."""
    return compute_boundary_metrics(pred, target, spacing=spacing, nsd_tolerance_mm=tolerance_mm, empty=empty)["nsd"]


def compute_hd95(pred: Any, target: Any, *, spacing: Any = None, empty: EmptyRule = "one") -> np.ndarray:
    """Return the 95th percentile Hausdorff distance in mm per image and class, (N, C); see :func:`compute_boundary_metrics`."""
    return compute_boundary_metrics(pred, target, spacing=spacing, empty=empty)["hd95"]


def compute_boundary_f1(pred: Any, target: Any, *, spacing: Any = None, empty: EmptyRule = "one") -> np.ndarray:
    """Return the boundary F1 (BF) score of paper 003 per image and class, (N, C); see :func:`compute_boundary_metrics`."""
    return compute_boundary_metrics(pred, target, spacing=spacing, empty=empty)["boundary_f1"]


def _farthest(points: np.ndarray, border: np.ndarray, scale: np.ndarray) -> float:
    """Largest distance from a point of ``points`` to the nearest point of ``border`` (0 if none)."""
    if not points.any():
        return 0.0
    return float(cKDTree(np.argwhere(border) * scale).query(np.argwhere(points) * scale, k=1)[0].max())


def normalized_hausdorff_3d(pred: Any, target: Any) -> float:
    """Return the Hausdorff distance between two 3D point sets with every axis scaled to [0, 1].

    Voxel ``(z, y, x)`` of a (D, H, W) volume sits at ``(z / (D-1), y / (H-1), x / (W-1))`` (an
    axis of length 1 at 0), so the result lies in ``[0, sqrt(3)]``. All foreground voxels are
    used (not only boundaries), as in the competition. Both empty: 0. One empty: ``sqrt(3)``,
    the largest possible (the competition scored a missing organ as the maximal distance).
    """
    pred, target = _as_bool(pred), _as_bool(target)
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"expected two (D, H, W) volumes of one shape; got {pred.shape} and {target.shape}")
    has_p, has_t = bool(pred.any()), bool(target.any())
    if not has_p and not has_t:
        return 0.0
    if has_p != has_t:
        return math.sqrt(3.0)
    scale = np.array([1.0 / (n - 1) if n > 1 else 1.0 for n in pred.shape])
    # the point of B nearest to a point outside B is on B's boundary, so query the boundaries;
    # every point of A outside B is queried (A's farthest point may be inside A, not on its edge)
    to_target = _farthest(pred & ~target, mask_border(target), scale)
    to_pred = _farthest(target & ~pred, mask_border(pred), scale)
    return float(max(to_target, to_pred))


def compute_gi_score(pred: Any, target: Any) -> np.ndarray:
    """Return the UW-Madison GI competition score of one scan per class, (C,).

    ``score = 0.4 * dice + 0.6 * (1 - hd / sqrt(3))`` with ``dice`` the mean over the scan's
    slices of the 2D dice ``2 tp / (2 tp + fp + fn)`` (1 when the slice is empty in both), and
    ``hd`` = :func:`normalized_hausdorff_3d` of the stacked volumes. Fixed competition
    conventions: independent of the smoothing and empty rule of the other metrics.

    Args:
        pred, target: (C, D, H, W) hard masks of one scan, slices stacked in order along D.
    """
    pred, target = _as_bool(pred), _as_bool(target)
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"expected (C, D, H, W) volumes of one shape; got {pred.shape} and {target.shape}")
    tp = (pred & target).sum(axis=(2, 3))
    both = pred.sum(axis=(2, 3)) + target.sum(axis=(2, 3))
    slice_dice = np.where(both == 0, 1.0, 2 * tp / np.maximum(both, 1))
    hd = np.array([normalized_hausdorff_3d(pred[c], target[c]) for c in range(pred.shape[0])])
    return 0.4 * slice_dice.mean(axis=1) + 0.6 * (1 - hd / math.sqrt(3.0))
