"""Out-of-fold case records: per validation image and class, what patient-level statistics need.

One record per (image, class): the true area, the confusion counts at the metrics' threshold, the
boundary metrics and object counts there (when the boundary metrics are on), and two histograms
of the predicted probability, over the true-foreground and the true-background pixels. From the
histograms the counts at every threshold of the grid ``k / n`` follow (:func:`grid_counts`), and
with them sensitivity-precision curves and calibration, without storing a pixel.

Histogram bins: ``n`` equal bins on [0, 1]; bin ``b`` holds ``b/n <= p < (b+1)/n`` and the last
bin also holds ``p = 1``. The bin edges are compared in the probability's own dtype, exactly as
the metrics threshold it (``p >= t``), so for a threshold on the grid the cumulative sums equal
the thresholded counts exactly::

    TP(k/n) = sum_{b >= k} hist_fg[b]    FN(k/n) = sum_{b < k} hist_fg[b]
    FP(k/n) = sum_{b >= k} hist_bg[b]    TN(k/n) = sum_{b < k} hist_bg[b]

Under softmax the probability is the class's own softmax channel (the counts at the metrics'
threshold are then those of the argmax prediction). ``prob_sum_low`` is the sum of the probability
over bin 0's pixels (both truths): most pixels of a segmentation sit there, far below the bin's
midpoint, so this one number makes a calibration error computed from the histograms exact where
most of the mass is.

The columns (:data:`CASE_COLUMNS`) follow the sweep's shared case schema; the driver adds
``config_id``. :class:`CaseRecords` keeps a validation pass's records on the device (no host
synchronisation per batch) and hands them out as one DataFrame; :class:`~trainables.metrics.SegmentationMetrics`
fills one when built with ``case_bins``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trainables.metrics.boundary import BOUNDARY_METRICS
from trainables.metrics.objects import OBJECT_COUNTS

__all__ = [
    "CASE_COLUMNS",
    "CASE_KEYS",
    "DEFAULT_BINS",
    "CaseRecords",
    "case_frame",
    "case_records",
    "grid_counts",
    "low_bin_sums",
    "probability_histograms",
]

#: record columns in order (the driver prepends ``config_id``)
CASE_COLUMNS = (
    "fold",
    "patient",
    "scan",
    "slice",
    "class",
    "area",
    "tp",
    "fp",
    "fn",
    "tn",
    *BOUNDARY_METRICS,
    *OBJECT_COUNTS,
    "hist_fg",
    "hist_bg",
    "prob_sum_low",
)
#: case key column -> the cache index column it is read from
CASE_KEYS = {"fold": "fold", "patient": "patient", "scan": "scan", "slice": "slice_number"}
#: histogram bins by default (``training.threshold_bins``)
DEFAULT_BINS = 20


def _check_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    return int(n_bins)


def probability_histograms(probs: Tensor, target: Tensor, n_bins: int = DEFAULT_BINS) -> Tensor:
    """Return per image and class the histograms of ``probs`` over background and foreground, (N, C, 2, n) int64.

    ``[..., 0, :]`` counts the pixels where ``target`` is 0, ``[..., 1, :]`` where it is not; bin
    ``b`` holds ``b/n <= p < (b+1)/n`` (the last bin also ``p >= 1``, the first ``p < 0``), the
    edges ``k/n`` taken in ``probs``' dtype as ``p >= k/n`` compares them.

    Args:
        probs: (N, C, *spatial) probabilities (float32 or float64).
        target: same shape, 0/1 (any non-zero is foreground).
        n_bins: ``n`` (default 20).

    All on the inputs' device in a few batch-wide kernels (``torch.bucketize``, then ``bincount``
    on the CPU or ``index_add_`` elsewhere, which needs no host synchronisation).
    """
    n_bins = _check_bins(n_bins)
    if probs.shape != target.shape or probs.dim() < 3:
        raise ValueError(
            f"expected probs and target (N, C, *spatial) of one shape; got "
            f"{tuple(probs.shape)} and {tuple(target.shape)}"
        )
    n, c = probs.shape[:2]
    edges = torch.arange(1, n_bins, dtype=torch.float64, device=probs.device).div_(n_bins).to(probs.dtype)
    # one int32 key per pixel: its bin, + n if foreground, + 2n per (image, class) cell before it
    key = torch.bucketize(probs.contiguous(), edges, right=True, out_int32=True)
    key.add_((target != 0).to(torch.int32), alpha=n_bins)
    cell = torch.arange(n * c, dtype=torch.int32, device=probs.device).mul_(2 * n_bins)
    key.add_(cell.view(n, c, *([1] * (probs.dim() - 2))))
    return _count_keys(key.flatten(), n * c * 2 * n_bins, key.device.type == "cpu").view(n, c, 2, n_bins)


def low_bin_sums(probs: Tensor, n_bins: int = DEFAULT_BINS) -> Tensor:
    """Return per image and class the sum of ``probs`` over the pixels of the first bin (``p < 1/n``), (N, C) float32.

    The same edge as :func:`probability_histograms`' (``1/n`` in ``probs``' dtype); on the device."""
    n_bins = _check_bins(n_bins)
    edge = torch.tensor(1 / n_bins, dtype=probs.dtype, device=probs.device)
    return torch.where(probs < edge, probs, 0).flatten(2).sum(-1, dtype=torch.float64).float()


def _count_keys(key: Tensor, size: int, bincount: bool) -> Tensor:
    """How often each of ``0..size-1`` occurs in ``key``, (size,) int64: ``bincount`` (the CPU's
    fastest), or ``index_add_`` (CUDA's bincount reads the largest key back to size its output,
    a host synchronisation; ``index_add_`` into a tensor of known size needs none)."""
    if bincount:
        return torch.bincount(key, minlength=size)
    hist = torch.zeros(size, dtype=torch.int64, device=key.device)
    return hist.index_add_(0, key, torch.ones(1, dtype=torch.int64, device=key.device).expand(key.numel()))


def grid_counts(hist_fg: Any, hist_bg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(tp, fp, fn, tn)`` at the thresholds ``k/n``, ``k = 0..n``, from histograms (..., n).

    Each is (..., n + 1): ``tp[..., k] = sum_{b >= k} hist_fg[..., b]`` and so on (module
    docstring). ``k = n`` predicts nothing (exact unless a probability is exactly 1).
    """
    fg, bg = np.asarray(hist_fg, dtype=np.int64), np.asarray(hist_bg, dtype=np.int64)
    zero = np.zeros((*fg.shape[:-1], 1), dtype=np.int64)
    above_fg = np.concatenate([np.cumsum(fg[..., ::-1], axis=-1)[..., ::-1], zero], axis=-1)
    above_bg = np.concatenate([np.cumsum(bg[..., ::-1], axis=-1)[..., ::-1], zero], axis=-1)
    return above_fg, above_bg, fg.sum(-1, keepdims=True) - above_fg, bg.sum(-1, keepdims=True) - above_bg


def case_frame(
    keys: Any,
    class_names: Sequence[str],
    counts: np.ndarray,
    histograms: np.ndarray,
    boundary: np.ndarray | None = None,
    objects: np.ndarray | None = None,
    low_sums: np.ndarray | None = None,
):
    """Return the case records as a pandas DataFrame with :data:`CASE_COLUMNS`, image by image then class.

    Args:
        keys: a DataFrame with one row per image in order and the cache index columns of
            :data:`CASE_KEYS` (``fold``, ``patient``, ``scan``, ``slice_number``).
        class_names: the C foreground classes, in channel order.
        counts: (N, C, 4) ``tp, fp, fn, tn``.
        histograms: (N, C, 2, n) from :func:`probability_histograms`.
        boundary: (3, N, C) ``nsd, hd95, boundary_f1``, or None (NaN columns).
        objects: (4, N, C) rows of :data:`~trainables.metrics.objects.OBJECT_COUNTS`, or None (null).
        low_sums: (N, C) from :func:`low_bin_sums`, or None (NaN).

    Types: ``fold`` int16, ``slice`` int32, ``class`` categorical, counts and ``area`` int32,
    boundary metrics and ``prob_sum_low`` float32, object counts nullable Int16, histograms one
    int32 array per row (Parquet ``list<int32>``).
    """
    import pandas as pd

    classes = list(class_names)
    counts = np.asarray(counts)
    n, c = counts.shape[:2]
    if c != len(classes) or len(keys) != n:
        raise ValueError(
            f"need one key row per image ({n}) and one class name per channel ({c}); got "
            f"{len(keys)} rows and classes {classes}"
        )
    missing = [col for col in CASE_KEYS.values() if col not in keys.columns]
    if missing:
        raise ValueError(f"keys lack the index columns {missing}")
    rows = n * c
    frame = {name: np.repeat(keys[col].to_numpy(), c) for name, col in CASE_KEYS.items()}
    frame["fold"] = frame["fold"].astype(np.int16)
    frame["patient"] = frame["patient"].astype(str)
    frame["scan"] = frame["scan"].astype(str)
    frame["slice"] = frame["slice"].astype(np.int32)
    frame["class"] = pd.Categorical.from_codes(np.tile(np.arange(c), n), categories=classes)
    flat = counts.reshape(rows, 4).astype(np.int32)
    frame["area"] = flat[:, 0] + flat[:, 2]
    for i, name in enumerate(("tp", "fp", "fn", "tn")):
        frame[name] = flat[:, i]
    for i, name in enumerate(BOUNDARY_METRICS):
        frame[name] = (
            np.full(rows, np.nan, dtype=np.float32)
            if boundary is None
            else np.asarray(boundary[i], dtype=np.float32).reshape(rows)
        )
    for i, name in enumerate(OBJECT_COUNTS):
        values = np.zeros(rows, np.int16) if objects is None else np.asarray(objects[i]).reshape(rows).astype(np.int16)
        frame[name] = pd.arrays.IntegerArray(values, np.full(rows, objects is None))
    hist = np.asarray(histograms).astype(np.int32, copy=False)
    for side, name in ((1, "hist_fg"), (0, "hist_bg")):
        column = np.empty(rows, dtype=object)
        column[:] = list(np.ascontiguousarray(hist[:, :, side]).reshape(rows, -1))  # row views of one block
        frame[name] = column
    frame["prob_sum_low"] = (
        np.full(rows, np.nan, dtype=np.float32)
        if low_sums is None
        else np.asarray(low_sums, dtype=np.float32).reshape(rows)
    )
    return pd.DataFrame(frame, columns=list(CASE_COLUMNS))


class CaseRecords:
    """The case records of one validation pass, kept per batch on the device until :meth:`frame`.

    :meth:`add` stores a batch's counts and histograms as they are (tensors on their device: no
    host synchronisation) and its boundary metrics and object counts (already on the host);
    :meth:`frame` moves everything to the host once and builds the table (:func:`case_frame`).

    Args:
        class_names: the foreground classes of the records, in channel order.
        n_bins: histogram bins (default 20).
    """

    def __init__(self, class_names: Sequence[str], n_bins: int = DEFAULT_BINS):
        self.class_names = tuple(class_names)
        self.n_bins = _check_bins(n_bins)
        self.reset()

    def reset(self) -> None:
        """Forget every batch."""
        self._counts: list[Tensor] = []
        self._histograms: list[Tensor] = []
        self._boundary: list[np.ndarray | None] = []
        self._objects: list[np.ndarray | None] = []
        self._low_sums: list[Tensor | None] = []

    @property
    def num_images(self) -> int:
        """Returns the images added since the last :meth:`reset`."""
        return sum(len(c) for c in self._counts)

    def add(
        self,
        counts: Tensor,
        histograms: Tensor,
        boundary: np.ndarray | None = None,
        objects: np.ndarray | None = None,
        low_sums: Tensor | None = None,
    ) -> None:
        """Keep one batch: ``counts`` (N, C, 4) ``tp, fp, fn, tn``; ``histograms`` (N, C, 2, n);
        ``boundary`` (3, N, C), ``objects`` (4, N, C) and ``low_sums`` (N, C) or None."""
        n, c = counts.shape[:2]
        if c != len(self.class_names) or histograms.shape != (n, c, 2, self.n_bins):
            raise ValueError(
                f"expected counts (N, {len(self.class_names)}, 4) and histograms (N, C, 2, "
                f"{self.n_bins}); got {tuple(counts.shape)} and {tuple(histograms.shape)}"
            )
        self._counts.append(counts.to(torch.int32))
        self._histograms.append(histograms.to(torch.int32))
        self._boundary.append(boundary)
        self._objects.append(objects)
        self._low_sums.append(low_sums)

    def frame(self, keys: Any):
        """Return the records of every batch added as a DataFrame (:func:`case_frame`).

        ``keys``: the cache index rows of the images in the order they were added (the
        validation loader is not shuffled: its dataset's ``index``).
        """
        if not self._counts:
            raise RuntimeError("CaseRecords.frame() called before any add()")
        counts = torch.cat(self._counts).cpu().numpy()
        histograms = torch.cat(self._histograms).cpu().numpy()

        def joined(parts: list[np.ndarray | None]) -> np.ndarray | None:
            return None if any(p is None for p in parts) else np.concatenate(parts, axis=1)

        low_sums = None if any(s is None for s in self._low_sums) else torch.cat(self._low_sums).cpu().numpy()
        return case_frame(
            keys, self.class_names, counts, histograms, joined(self._boundary), joined(self._objects), low_sums
        )


def case_records(
    probs: Tensor,
    target: Tensor,
    class_names: Sequence[str],
    keys: Any,
    *,
    n_bins: int = DEFAULT_BINS,
    **metric_options: Any,
):
    """Return the case records of one batch of probabilities as a DataFrame (:func:`case_frame`).

    Args:
        probs, target: (N, C, H, W) as for :func:`~trainables.metrics.compute_metrics`.
        class_names: one name per channel (under softmax channel 0 is background and has no records).
        keys: the cache index rows of the N images.
        n_bins: histogram bins.
        metric_options: ``threshold``, ``boundary``, ``spacing``, ``nsd_tolerance_mm``, ``empty``,
            ``activation``, ``object_min_overlap``, as for :class:`~trainables.metrics.SegmentationMetrics`.
    """
    from trainables.metrics.accumulator import SegmentationMetrics

    spacing = metric_options.pop("spacing", None)
    metrics = SegmentationMetrics(class_names, case_bins=n_bins, **metric_options)
    metrics.update_probs(torch.as_tensor(probs), torch.as_tensor(target), spacing=spacing)
    return metrics.cases.frame(keys)
