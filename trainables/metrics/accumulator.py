"""SegmentationMetrics: the stateful accumulator the trainer uses (reset / update / compute).

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
- paper 003: Furtado P. "Investigation of loss functions for improving deep segmentation of
  abdominal organs from MRI." University of Coimbra, undated manuscript; related published study:
  Furtado P. "Testing segmentation popular loss and variations in three multiclass medical imaging
  problems." J. Imaging 7(2):16, 2021. doi:10.3390/jimaging7020016
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from trainables.metrics.boundary import BOUNDARY_METRICS, compute_boundary_metrics, compute_gi_score
from trainables.metrics.cases import CaseRecords, low_bin_sums, probability_histograms
from trainables.metrics.confusion import (
    CONFUSION_METRICS,
    EXACT_FLOAT32,
    EmptyRule,
    check_empty_rule,
    per_image_scores,
    pixel_sums,
    probability_planes,
    sigmoid_planes,
    stacked_scores,
)
from trainables.metrics.objects import (
    DEFAULT_MIN_OVERLAP,
    OBJECT_METRICS,
    object_counts,
    object_scores,
    pooled_object_scores,
)

__all__ = ["ACTIVATIONS", "Activation", "SegmentationMetrics"]

_PER_IMAGE = (*CONFUSION_METRICS, "mae")  # rows of the on-device per-image sums
Activation = Literal["sigmoid", "softmax"]
ACTIVATIONS = ("sigmoid", "softmax")
# CPU: planes of about this many bytes per thread in a chunk of images, to stay in cache between passes
_CPU_CHUNK_BYTES = 4 * 2**20


class SegmentationMetrics:
    """Accumulates per-image and pooled metrics over batches; :meth:`compute` gives a flat dict.

    Predictions are ``sigmoid(logits) >= threshold`` (multi-label, ``activation="sigmoid"``, the
    default) or, with ``activation="softmax"`` (multi-class, channel 0 background), the one-hot
    argmax over channels; the background channel is then left out of every key unless
    ``include_background``. Confusion counts, per-image score sums and
    absolute-error sums stay on the device of the first batch (float64, float32 on MPS), so the
    confusion path of :meth:`update` never synchronises with the host; :meth:`compute` syncs once.
    Per batch that path is :func:`~trainables.metrics.confusion.sigmoid_planes` (or
    :func:`~trainables.metrics.confusion.probability_planes`), :func:`~trainables.metrics.confusion.pixel_sums`
    and :func:`~trainables.metrics.confusion.stacked_scores`; on CPU it runs a few images at a time
    in a reused workspace (see :meth:`_batch_sums`).
    Boundary and object metrics (``boundary=True``) need the thresholded masks on the CPU, one
    transfer per batch; ``boundary=False`` skips them (and ``gi_score``) for speed.
    With ``case_bins`` it also keeps the case records of every image and class in :attr:`cases`
    (:mod:`trainables.metrics.cases`): the counts it computes anyway plus probability histograms
    made on the device from the same probabilities.

    Keys of :meth:`compute` (``<class>`` is each of :attr:`reported_classes`: every channel under
    sigmoid, where each channel is an organ; under softmax all but background channel 0 unless
    ``include_background``; overall = mean over those classes, NaN classes left out):

    - per-image averaged, smoothed: ``dice iou sensitivity specificity precision accuracy mae``
      and, with ``boundary``, ``nsd hd95 boundary_f1`` and ``object_sensitivity object_precision``
      (unsmoothed, :mod:`trainables.metrics.objects`); each also as ``<name>.<class>``;
    - pooled over the data set (counts summed, unsmoothed): ``pooled_<name>`` and
      ``pooled_<name>.<class>`` for the confusion metrics and ``mae`` and, with ``boundary``,
      the object metrics;
    - ``gi_score`` and ``gi_score.<class>`` when ``boundary`` and scans were identified in
      :meth:`update` (mean over scans of :func:`~trainables.metrics.compute_gi_score`).

    Args:
        class_names: one name per channel, in channel order (e.g. ``large_bowel``; under softmax
            channel 0 is background, e.g. ``("background", "RV", "MYO", "LV")``).
        threshold: a pixel is predicted positive when ``sigmoid(logit) >= threshold`` (default 0.5);
            unused under softmax.
        smooth: per-image smoothing ``s`` of :func:`~trainables.metrics.per_image_scores`
            (default 1.0, paper 000's unit term).
        empty: empty-ground-truth rule, ``"one"`` (default, 000's convention), ``"zero"`` or
            ``"skip"``; see :func:`~trainables.metrics.per_image_scores` and
            :func:`~trainables.metrics.compute_boundary_metrics`.
        spacing: default pixel size ``(sy, sx)`` in mm for the boundary metrics (default None:
            1 mm, i.e. distances in pixels); :meth:`update` may give one per image.
        nsd_tolerance_mm: NSD tolerance in mm (default 2.0).
        boundary: compute nsd, hd95, boundary_f1 and gi_score (default True).
        activation: ``"sigmoid"`` (default; multi-label) or ``"softmax"`` (multi-class: the
            prediction is the argmax one-hot; targets one-hot (N, C, H, W) or label maps (N, H, W)).
        include_background: under softmax, also report channel 0 (default False, as paper 003's
            diceBK and the usual multi-class convention); ignored under sigmoid.
        object_min_overlap: share of an object's pixels the other mask must cover for it to be
            found / correct (default 0.5; :func:`~trainables.metrics.object_counts`).
        case_bins: keep case records with this many histogram bins in :attr:`cases`
            (default None: no records). Case records never include softmax's background.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        threshold: float = 0.5,
        smooth: float = 1.0,
        empty: EmptyRule = "one",
        spacing: tuple[float, float] | None = None,
        nsd_tolerance_mm: float = 2.0,
        boundary: bool = True,
        activation: Activation = "sigmoid",
        include_background: bool = False,
        object_min_overlap: float = DEFAULT_MIN_OVERLAP,
        case_bins: int | None = None,
    ):
        names = tuple(class_names)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if activation == "softmax" and not include_background and len(names) < 2:
            raise ValueError(f"softmax without background needs >= 2 channels (channel 0 is background), got {names!r}")
        if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"class_names must be unique non-empty strings, got {class_names!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        if nsd_tolerance_mm < 0:
            raise ValueError(f"nsd_tolerance_mm must be >= 0, got {nsd_tolerance_mm}")
        if spacing is not None and (len(spacing) != 2 or min(spacing) <= 0):
            raise ValueError(f"spacing must be a positive (sy, sx) in mm, got {spacing!r}")
        if not 0.0 < object_min_overlap <= 1.0:
            raise ValueError(f"object_min_overlap must be in (0, 1], got {object_min_overlap}")
        self.class_names = names
        self.threshold = float(threshold)
        self.smooth = float(smooth)
        self.empty = check_empty_rule(empty)
        self.spacing = None if spacing is None else (float(spacing[0]), float(spacing[1]))
        self.nsd_tolerance_mm = float(nsd_tolerance_mm)
        self.boundary = bool(boundary)
        self.activation = activation
        self.include_background = bool(include_background)
        self.object_min_overlap = float(object_min_overlap)
        # channels kept after the prediction: all, or all but background under softmax
        self._first = 1 if activation == "softmax" and not self.include_background else 0
        # reported channels the case records skip: softmax's background when it is reported
        self._case_skip = 1 if activation == "softmax" and self.include_background else 0
        self._workspace: Tensor | None = None  # CPU planes buffer reused across batches (and resets)
        #: the case records of the batches since :meth:`reset` (None without ``case_bins``)
        self.cases = None if case_bins is None else CaseRecords(self.reported_classes[self._case_skip :], case_bins)
        self.reset()

    @property
    def reported_classes(self) -> tuple[str, ...]:
        """Returns the classes :meth:`compute` reports (``<metric>.<class>``), in channel order."""
        return self.class_names[self._first :]

    def reset(self) -> None:
        """Forget every accumulated batch."""
        self._sums: Tensor | None = None  # (len(_PER_IMAGE), C) sums of per-image scores
        self._counts: Tensor | None = None  # same shape: images in each sum (NaN = skipped)
        self._pooled: Tensor | None = None  # (5, C): tp, fp, fn, tn, |p - g| summed over images
        self._pixels = 0  # pixels per class summed over images
        self._num_images = 0
        c = len(self.reported_classes)
        self._boundary_sums = np.zeros((len(BOUNDARY_METRICS), c))
        self._boundary_counts = np.zeros((len(BOUNDARY_METRICS), c))
        self._object_sums = np.zeros((len(OBJECT_METRICS), c))
        self._object_counts = np.zeros((len(OBJECT_METRICS), c))
        self._object_totals = np.zeros((4, c), dtype=np.int64)  # objects true, found, pred, correct
        if self.cases is not None:
            self.cases.reset()
        self._scans: dict[Hashable, dict[Any, tuple[np.ndarray, np.ndarray] | None]] = {}
        self._scan_shape: dict[Hashable, tuple[int, ...]] = {}

    @torch.no_grad()
    def update(
        self,
        logits: Tensor,
        target: Tensor,
        *,
        spacing: Any = None,
        scan_ids: Sequence[Hashable] | None = None,
        positions: Sequence[Any] | Tensor | None = None,
    ) -> None:
        """Add one batch of raw scores: the same as :meth:`update_probs` of ``sigmoid(logits)`` (or
        ``softmax`` over channels) computed in float32, without the probability temporary.

        Args:
            logits: raw (N, C, H, W) scores.
            target: 0/1 masks of the same shape (float targets must hold only 0 and 1; bool and
                integer ones count any non-zero as positive); under softmax also an integer label
                map (N, H, W) of channel indices.
            spacing: (N, 2) pixel sizes (sy, sx) in mm, or one pair; default the constructor's.
            scan_ids: the scan (case-day) of each image, for ``gi_score``; with ``positions``.
            positions: sortable slice positions within the scan (slice order), one per image.
        """
        target = self._one_hot(logits, target)
        self._check(logits, target, scan_ids, positions)
        self._add(logits, target, True, spacing, scan_ids, positions)

    @torch.no_grad()
    def update_probs(
        self,
        probs: Tensor,
        target: Tensor,
        *,
        spacing: Any = None,
        scan_ids: Sequence[Hashable] | None = None,
        positions: Sequence[Any] | Tensor | None = None,
    ) -> None:
        """Add one batch of probabilities in [0, 1] (or hard 0/1 masks); arguments as :meth:`update`.
        Under softmax the prediction is the channel of the largest probability."""
        target = self._one_hot(probs, target)
        self._check(probs, target, scan_ids, positions)
        if not probs.is_floating_point():
            probs = probs.to(torch.get_default_dtype())
        self._add(probs, target, False, spacing, scan_ids, positions)

    def _planes(self, scores: Tensor, from_logits: bool) -> Tensor:
        """``[p, y]`` planes of a batch of logits or probabilities, in the reused CPU workspace."""
        pixels = scores[0, 0].numel()
        if from_logits and self.activation == "sigmoid" and pixels < EXACT_FLOAT32:
            planes = sigmoid_planes(scores, self.threshold, out=self._workspace)
        else:
            if from_logits:
                x = scores.float()
                scores = torch.softmax(x, dim=1) if self.activation == "softmax" else torch.sigmoid(x)
            # float32 holds exact 0/1 sums below 2**24 pixels; float64 probabilities stay float64
            small = pixels < EXACT_FLOAT32 and scores.dtype != torch.float64
            planes = probability_planes(
                scores, self.threshold, self.activation, torch.float32 if small else torch.float64, out=self._workspace
            )
        fresh = self._workspace is None or planes.data_ptr() != self._workspace.data_ptr()
        if fresh and planes.device.type == "cpu":  # a new buffer each batch would cost page faults
            self._workspace = planes
        return planes

    def _batch_sums(
        self, scores: Tensor, target: Tensor, from_logits: bool
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
        """:func:`pixel_sums` (N, C, 5) of the reported classes, the bool predictions when
        ``boundary``, and the case histograms and low-bin sums when ``case_bins``. On CPU a few
        images at a time (about 4 MiB of float32 planes per thread), so the planes stay in cache
        from one pass to the next; on other devices the whole batch."""
        n = scores.shape[0]
        step = n
        if scores.device.type == "cpu":
            step = max(1, _CPU_CHUNK_BYTES * torch.get_num_threads() // (8 * scores[0].numel()))
        sums, preds, hists, lows = [], [], [], []
        for i in range(0, n, step):
            planes, chunk = self._planes(scores[i : i + step], from_logits), target[i : i + step]
            if self._first:  # background left out after the argmax, which needed it
                planes, chunk = planes[:, self._first :], chunk[:, self._first :]
            # both before pixel_sums overwrites the planes
            if self.boundary:
                preds.append(planes[:, :, 1] != 0)
            if self.cases is not None:
                probs = planes[:, self._case_skip :, 0]
                hists.append(probability_histograms(probs, chunk[:, self._case_skip :], self.cases.n_bins))
                lows.append(low_bin_sums(probs, self.cases.n_bins))
            sums.append(pixel_sums(planes, chunk))

        def joined(parts: list[Tensor]) -> Tensor | None:
            return None if not parts else parts[0] if len(parts) == 1 else torch.cat(parts)

        return joined(sums), joined(preds), joined(hists), joined(lows)

    def _one_hot(self, scores: Tensor, target: Tensor) -> Tensor:
        """A softmax label map (N, H, W) as one-hot (N, C, H, W); any other target unchanged."""
        if self.activation != "softmax" or target.dim() != scores.dim() - 1 or target.is_floating_point():
            return target
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= scores.shape[1]):
            raise ValueError(f"label map values must be channel indices 0..{scores.shape[1] - 1}")
        return torch.nn.functional.one_hot(target.long(), scores.shape[1]).movedim(-1, 1)

    def _check(self, scores: Tensor, target: Tensor, scan_ids, positions) -> None:
        if scores.dim() < 3 or scores.shape[1] != len(self.class_names):
            raise ValueError(
                f"expected (N, {len(self.class_names)}, H, W) scores for classes "
                f"{self.class_names}, got {tuple(scores.shape)}"
            )
        if scores.shape != target.shape:
            raise ValueError(
                f"scores and target must have the same shape; got {tuple(scores.shape)} and {tuple(target.shape)}"
            )
        if (scan_ids is None) != (positions is None):
            raise ValueError("scan_ids and positions go together: give both or neither")
        n = scores.shape[0]
        if scan_ids is not None and (len(scan_ids) != n or len(positions) != n):
            raise ValueError(f"need one scan id and one position per image ({n})")

    def _add(self, scores: Tensor, target: Tensor, from_logits: bool, spacing: Any, scan_ids, positions) -> None:
        """Accumulate one checked batch of logits (``from_logits``) or probabilities."""
        sums, pred, hists, lows = self._batch_sums(scores, target, from_logits)
        n, c = sums.shape[:2]
        if self._sums is None:
            dtype = torch.float32 if sums.device.type == "mps" else torch.float64
            self._sums = torch.zeros((len(_PER_IMAGE), c), dtype=dtype, device=sums.device)
            self._counts = torch.zeros_like(self._sums)
            self._pooled = torch.zeros((5, c), dtype=dtype, device=sums.device)
        dtype = self._sums.dtype

        pixels = scores[0, 0].numel()
        sum_p, pos_pred, pos_true, sum_pg, tp = sums.to(dtype).unbind(-1)
        fp, fn = pos_pred - tp, pos_true - tp
        tn = pixels - tp - fp - fn
        abs_err = (sum_p + pos_true - 2 * sum_pg).clamp_(min=0)  # sum |p - g| for 0/1 g

        confusion = stacked_scores(tp, fp, fn, tn, smooth=self.smooth, empty=self.empty)
        per_image = torch.cat([confusion, (abs_err / pixels)[None]])  # (7, N, C), rows of _PER_IMAGE
        valid = ~torch.isnan(per_image)
        self._sums += torch.where(valid, per_image, 0).sum(dim=1)
        self._counts += valid.sum(dim=1).to(dtype)
        self._pooled += torch.stack([tp, fp, fn, tn, abs_err]).sum(dim=1)
        self._pixels += n * pixels
        self._num_images += n

        boundary = objects = None
        if self.boundary:
            boundary, objects = self._update_boundary(pred, target[:, self._first :], spacing, scan_ids, positions)
        if self.cases is not None:
            skip = self._case_skip
            counts = torch.stack([tp, fp, fn, tn], dim=-1)[:, skip:]
            self.cases.add(
                counts,
                hists,
                None if boundary is None else boundary[:, :, skip:],
                None if objects is None else objects[:, :, skip:],
                lows,
            )

    def _update_boundary(
        self, pred: Tensor, target: Tensor, spacing: Any, scan_ids, positions
    ) -> tuple[np.ndarray, np.ndarray]:
        """Adds the metrics of the masks on the host (boundary, objects, scans for gi_score);
        returns the boundary metrics (3, N, C) and object counts (4, N, C) of the batch."""
        pred_np = pred.cpu().numpy()  # the host sync boundary metrics need
        target_np = (target != 0).cpu().numpy()
        found = compute_boundary_metrics(
            pred_np,
            target_np,
            spacing=self.spacing if spacing is None else spacing,
            nsd_tolerance_mm=self.nsd_tolerance_mm,
            empty=self.empty,
        )
        values = np.stack([found[m] for m in BOUNDARY_METRICS])  # (3, N, C)
        self._boundary_sums += np.nansum(values, axis=1)
        self._boundary_counts += (~np.isnan(values)).sum(axis=1)
        objects = object_counts(pred_np, target_np, min_overlap=self.object_min_overlap)
        scores = object_scores(objects, self.empty)
        per_image = np.stack([scores[m] for m in OBJECT_METRICS])  # (2, N, C)
        self._object_sums += np.nansum(per_image, axis=1)
        self._object_counts += (~np.isnan(per_image)).sum(axis=1)
        self._object_totals += objects.sum(axis=1)
        if scan_ids is not None:
            self._keep_scans(pred_np, target_np, scan_ids, positions)
        return values, objects

    def _keep_scans(self, pred_np: np.ndarray, target_np: np.ndarray, scan_ids, positions) -> None:
        """Stores each slice's masks (bit-packed) under its scan and position, for ``gi_score``."""
        if isinstance(positions, Tensor):
            positions = positions.tolist()
        for i, (scan, position) in enumerate(zip(scan_ids, positions)):
            slices = self._scans.setdefault(scan, {})
            if position in slices:
                raise ValueError(f"slice position {position!r} of scan {scan!r} was already added")
            shape = self._scan_shape.setdefault(scan, pred_np.shape[1:])
            if pred_np.shape[1:] != shape:
                raise ValueError(f"scan {scan!r}: slice shape {pred_np.shape[1:]} differs from {shape}")
            # empty slices (most of a scan) cost nothing; others are bit-packed
            empty_slice = not (pred_np[i].any() or target_np[i].any())
            slices[position] = None if empty_slice else (np.packbits(pred_np[i]), np.packbits(target_np[i]))

    def _gi_scores(self) -> np.ndarray:
        """(scans, C) competition scores of every identified scan."""
        rows = []
        for scan, slices in self._scans.items():
            shape = self._scan_shape[scan]
            size = int(np.prod(shape))
            order = sorted(slices)
            pred = np.zeros((len(order), *shape), dtype=bool)
            target = np.zeros_like(pred)
            for z, position in enumerate(order):
                packed = slices[position]
                if packed is not None:
                    pred[z] = np.unpackbits(packed[0], count=size).reshape(shape).astype(bool)
                    target[z] = np.unpackbits(packed[1], count=size).reshape(shape).astype(bool)
            rows.append(compute_gi_score(pred.transpose(1, 0, 2, 3), target.transpose(1, 0, 2, 3)))
        return np.stack(rows)

    def compute(self) -> dict[str, float]:
        """Return the flat ``{key: value}`` of every metric (see the class docstring for the keys).

        Raises:
            RuntimeError: if no batch was added since construction or :meth:`reset`.
        """
        if self._sums is None or self._num_images == 0:
            raise RuntimeError("SegmentationMetrics.compute() called before any update()")
        sums, counts, pooled = (x.cpu().double() for x in (self._sums, self._counts, self._pooled))  # one sync
        result: dict[str, float] = {}

        def put(name: str, per_class: Sequence[float]) -> None:
            per_class = [float(v) for v in per_class]
            for cls, value in zip(self.reported_classes, per_class):
                result[f"{name}.{cls}"] = value
            defined = [v for v in per_class if not math.isnan(v)]
            result[name] = sum(defined) / len(defined) if defined else math.nan

        with np.errstate(invalid="ignore", divide="ignore"):
            means = (sums / counts).tolist()  # 0/0 -> NaN: every image of a class skipped
            for name, values in zip(_PER_IMAGE, means):
                put(name, values)
            if self.boundary:
                for name, s, k in zip(BOUNDARY_METRICS, self._boundary_sums, self._boundary_counts):
                    put(name, np.where(k > 0, s / np.maximum(k, 1), np.nan))
                for name, s, k in zip(OBJECT_METRICS, self._object_sums, self._object_counts):
                    put(name, np.where(k > 0, s / np.maximum(k, 1), np.nan))
        totals = per_image_scores(*(x[None] for x in pooled[:4]), smooth=0.0, empty=self.empty)
        for name in CONFUSION_METRICS:
            put(f"pooled_{name}", totals[name][0].tolist())
        put("pooled_mae", (pooled[4] / self._pixels).tolist())
        if self.boundary:
            for name, values in pooled_object_scores(self._object_totals[:, None], self.empty).items():
                put(f"pooled_{name}", values)
        if self.boundary and self._scans:
            put("gi_score", self._gi_scores().mean(axis=0))
        return result
