"""Segmentation metrics: pure functions on tensors/arrays and the :class:`SegmentationMetrics` accumulator.

Follows MONAI's split: functional ``confusion_counts`` / ``per_image_scores`` / ``pooled_scores`` /
``mean_absolute_error`` (torch, on any device), ``compute_boundary_metrics`` / ``compute_nsd`` /
``compute_hd95`` / ``compute_boundary_f1`` / ``compute_gi_score`` and ``object_counts`` /
``object_scores`` (numpy + scipy, CPU), plus :func:`compute_metrics`, which scores whole masks at
once with the same keys as the accumulator. :mod:`trainables.metrics.cases` builds the
out-of-fold case records (per image and class) a trial writes at its best epoch.

Conventions (paper 000 eqs 4-8 and its per-image averaging):
predictions are ``sigmoid(logits) >= threshold`` (multi-label) or, under ``activation="softmax"``
(multi-class, channel 0 background, left out of the reported classes unless
``include_background``), the one-hot argmax; per-image metrics use a unit smoothing term so
a slice that is empty and predicted empty scores 1, then are averaged over images per class;
the overall value is the mean over classes. ``pooled_*`` keys are data-set pooled (global)
counts instead. The empty-ground-truth rule is the ``empty`` argument (default ``"one"``).

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from trainables.metrics.accumulator import ACTIVATIONS, Activation, SegmentationMetrics
from trainables.metrics.boundary import (
    BF_DIAGONAL_FRACTION,
    BOUNDARY_METRICS,
    compute_boundary_f1,
    compute_boundary_metrics,
    compute_gi_score,
    compute_hd95,
    compute_nsd,
    mask_border,
    normalized_hausdorff_3d,
    surface_distances,
)
from trainables.metrics.cases import (
    CASE_COLUMNS,
    CaseRecords,
    case_frame,
    case_records,
    grid_counts,
    low_bin_sums,
    probability_histograms,
)
from trainables.metrics.confusion import (
    CONFUSION_METRICS,
    EMPTY_RULES,
    EmptyRule,
    confusion_counts,
    mean_absolute_error,
    per_image_scores,
    pooled_scores,
)
from trainables.metrics.objects import (
    DEFAULT_MIN_OVERLAP,
    OBJECT_COUNTS,
    OBJECT_METRICS,
    label_objects,
    object_counts,
    object_scores,
    pooled_object_scores,
)

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "METRIC_NAMES",
    "CONFUSION_METRICS",
    "BOUNDARY_METRICS",
    "OBJECT_METRICS",
    "OBJECT_COUNTS",
    "DEFAULT_MIN_OVERLAP",
    "POOLED_METRIC_NAMES",
    "POOLED_OBJECT_METRIC_NAMES",
    "CASE_COLUMNS",
    "GI_SCORE",
    "LOWER_IS_BETTER",
    "EMPTY_RULES",
    "BF_DIAGONAL_FRACTION",
    "EmptyRule",
    "metric_keys",
    "confusion_counts",
    "per_image_scores",
    "pooled_scores",
    "mean_absolute_error",
    "mask_border",
    "surface_distances",
    "compute_boundary_metrics",
    "compute_nsd",
    "compute_hd95",
    "compute_boundary_f1",
    "normalized_hausdorff_3d",
    "compute_gi_score",
    "label_objects",
    "object_counts",
    "object_scores",
    "pooled_object_scores",
    "probability_histograms",
    "low_bin_sums",
    "grid_counts",
    "case_frame",
    "case_records",
    "CaseRecords",
    "compute_metrics",
    "SegmentationMetrics",
]

#: overall per-image-averaged metric names, in report order
METRIC_NAMES = (*CONFUSION_METRICS, "mae", *BOUNDARY_METRICS, *OBJECT_METRICS)
#: overall data-set pooled names
POOLED_METRIC_NAMES = tuple(f"pooled_{m}" for m in (*CONFUSION_METRICS, "mae"))
#: overall data-set pooled object names (with the boundary metrics: both need the masks on the host)
POOLED_OBJECT_METRIC_NAMES = tuple(f"pooled_{m}" for m in OBJECT_METRICS)
GI_SCORE = "gi_score"
#: metrics where smaller is better (every other one: larger is better)
LOWER_IS_BETTER = frozenset({"mae", "hd95", "pooled_mae"})


def metric_keys(class_names: Sequence[str], *, boundary: bool = True, gi_score: bool = False) -> list[str]:
    """Return every key :meth:`SegmentationMetrics.compute` reports for these settings: overall then per class.

    ``class_names`` are the reported classes (:attr:`SegmentationMetrics.reported_classes`: under
    softmax without background, the channel names after ``background``)."""
    host = (*BOUNDARY_METRICS, *OBJECT_METRICS)  # computed on the host masks: only with ``boundary``
    names = [m for m in METRIC_NAMES if boundary or m not in host]
    names += list(POOLED_METRIC_NAMES) + (list(POOLED_OBJECT_METRIC_NAMES) if boundary else [])
    names += [GI_SCORE] if boundary and gi_score else []
    return names + [f"{m}.{c}" for m in names for c in class_names]


def compute_metrics(
    probs: Tensor,
    target: Tensor,
    class_names: Sequence[str],
    *,
    threshold: float = 0.5,
    smooth: float = 1.0,
    empty: EmptyRule = "one",
    spacing: Any = None,
    nsd_tolerance_mm: float = 2.0,
    boundary: bool = True,
    scan_ids: Sequence[Any] | None = None,
    positions: Sequence[Any] | None = None,
    activation: Activation = "sigmoid",
    include_background: bool = False,
    object_min_overlap: float = DEFAULT_MIN_OVERLAP,
) -> dict[str, float]:
    """Return every metric of a set of masks at once, with the keys of :class:`SegmentationMetrics`.

    Args:
        probs: (N, C, H, W) probabilities in [0, 1] (thresholded at ``threshold``, or under softmax
            the argmax channel; ``mae`` uses them as they are) or hard 0/1 / bool masks.
        target: 0/1 masks of the same shape (softmax: or an (N, H, W) label map).
        class_names, threshold, smooth, empty, spacing, nsd_tolerance_mm, boundary, activation,
            include_background, object_min_overlap: as for :class:`SegmentationMetrics`
            (``spacing`` may also be (N, 2) per image).
        scan_ids, positions: scan and slice order of each image, for ``gi_score``.
    """
    metrics = SegmentationMetrics(
        class_names,
        threshold,
        smooth,
        empty,
        None,
        nsd_tolerance_mm,
        boundary,
        activation=activation,
        include_background=include_background,
        object_min_overlap=object_min_overlap,
    )
    metrics.update_probs(
        torch.as_tensor(probs), torch.as_tensor(target), spacing=spacing, scan_ids=scan_ids, positions=positions
    )
    return metrics.compute()
