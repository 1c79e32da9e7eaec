"""Intensity normalisation and resampling of scan volumes: pure functions on numpy arrays.

Every mode maps to [0, 1] (float32), the range the augmentation (brightness, contrast, gamma)
expects and the cache stores as float16:

- ``slice_minmax`` (default; paper 000): each slice min-max scaled; a constant slice becomes 0.
- ``volume_minmax``: one min and max per scan (keeps the relative brightness of slices).
- ``slice_zscore`` / ``volume_zscore``: ``z = (x - mean) / std``, clipped to [-3, 3] and mapped
  linearly to [0, 1] (``(z + 3) / 6``); a linear map, so the network sees a z-score up to a fixed
  affine change, while staying in the augmentation's range.
- ``window``: CT windowing: ``[center - width/2, center + width/2]`` (Hounsfield units) clipped
  and mapped to [0, 1], e.g. abdomen center 40, width 400.

``clip_percentiles=(lo, hi)`` first clips to those percentiles of the same scope (slice or volume),
for MRI with a few very bright voxels.

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

__all__ = [
    "INTENSITY_MODES",
    "IntensityMode",
    "normalise_intensity",
    "resample_slices",
    "resample_inplane",
    "crop_or_pad",
]

IntensityMode = Literal["slice_minmax", "volume_minmax", "slice_zscore", "volume_zscore", "window"]
INTENSITY_MODES = ("slice_minmax", "volume_minmax", "slice_zscore", "volume_zscore", "window")
_Z_CLIP = 3.0


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def _zscore(x: np.ndarray) -> np.ndarray:
    std = float(x.std())
    if std <= 0:
        return np.full_like(x, 0.5)
    z = np.clip((x - float(x.mean())) / std, -_Z_CLIP, _Z_CLIP)
    return (z + _Z_CLIP) / (2 * _Z_CLIP)


def _clip(x: np.ndarray, percentiles: Sequence[float] | None) -> np.ndarray:
    if percentiles is None:
        return x
    lo, hi = np.percentile(x, [percentiles[0], percentiles[1]])
    return np.clip(x, lo, hi)


def normalise_intensity(
    volume: np.ndarray,
    mode: IntensityMode = "slice_minmax",
    *,
    window: tuple[float, float] | None = None,
    clip_percentiles: tuple[float, float] | None = None,
) -> np.ndarray:
    """Returns the (S, H, W) ``volume`` as float32 in [0, 1] by ``mode`` (see the module docstring).

    Args:
        volume: raw intensities (S, H, W), any numeric dtype.
        mode: one of :data:`INTENSITY_MODES` (default ``slice_minmax``, paper 000).
        window: ``(center, width)`` for ``window`` mode (required there, unused otherwise).
        clip_percentiles: ``(lo, hi)`` in [0, 100], lo < hi; not used by ``window``.

    Raises:
        ValueError: an unknown mode, a missing/invalid window or invalid percentiles.
    """
    if mode not in INTENSITY_MODES:
        raise ValueError(f"intensity mode must be one of {INTENSITY_MODES}, got {mode!r}")
    if clip_percentiles is not None:
        lo, hi = clip_percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"clip_percentiles must be 0 <= lo < hi <= 100, got {clip_percentiles!r}")
    x = np.asarray(volume, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"expected an (S, H, W) volume, got shape {x.shape}")
    if mode == "window":
        if window is None or window[1] <= 0:
            raise ValueError(f"intensity mode 'window' needs window (center, width > 0), got {window!r}")
        center, width = float(window[0]), float(window[1])
        return np.clip((x - (center - width / 2)) / width, 0.0, 1.0).astype(np.float32)
    scale = _minmax if mode.endswith("minmax") else _zscore
    if mode.startswith("volume"):
        return scale(_clip(x, clip_percentiles)).astype(np.float32)
    return np.stack([scale(_clip(s, clip_percentiles)) for s in x]).astype(np.float32) if len(x) else x


def resample_slices(volume: np.ndarray, spacing: float, target: float, *, nearest: bool) -> np.ndarray:
    """Returns ``volume`` (S, ...) resampled along axis 0 from slice spacing ``spacing`` to ``target`` mm.

    New slice ``k`` sits at ``k * target`` mm from the first slice (the first slice is kept);
    linear interpolation between the two neighbouring slices, or the nearest one (``nearest``,
    for masks).
    """
    n = volume.shape[0]
    if n < 2 or not spacing > 0 or not target > 0 or abs(spacing - target) < 1e-6 * target:
        return volume
    length = (n - 1) * spacing
    count = int(np.floor(length / target + 1e-6)) + 1
    pos = np.arange(count) * target / spacing  # in source slice units
    if nearest:
        return volume[np.clip(np.round(pos).astype(int), 0, n - 1)]
    lo = np.clip(np.floor(pos).astype(int), 0, n - 1)
    hi = np.clip(lo + 1, 0, n - 1)
    w = (pos - lo).astype(np.float32).reshape(-1, *([1] * (volume.ndim - 1)))
    return (volume[lo] * (1 - w) + volume[hi] * w).astype(volume.dtype)


def resample_inplane(
    image: np.ndarray, spacing: tuple[float, float], target: tuple[float, float], *, nearest: bool
) -> np.ndarray:
    """Returns the 2D (H, W) or (H, W, C) ``image`` resampled from pixel ``spacing`` (sh, sw) to ``target`` mm.

    The new size is ``round(H * sh / th)`` x ``round(W * sw / tw)`` (at least 1); area averaging when
    shrinking, linear when growing, nearest for masks.
    """
    h, w = image.shape[:2]
    new_h = max(1, int(round(h * spacing[0] / target[0])))
    new_w = max(1, int(round(w * spacing[1] / target[1])))
    if (new_h, new_w) == (h, w):
        return image
    if nearest:
        interpolation = cv2.INTER_NEAREST
    else:
        interpolation = cv2.INTER_AREA if new_h <= h and new_w <= w else cv2.INTER_LINEAR
    out = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    return out.reshape(new_h, new_w, *image.shape[2:])


def crop_or_pad(image: np.ndarray, size: int, fill: float | Sequence[float] = 0) -> np.ndarray:
    """Returns the (H, W[, C]) ``image`` centre-cropped and/or padded with ``fill`` to ``size`` x ``size``."""
    h, w = image.shape[:2]
    out = np.empty((size, size, *image.shape[2:]), image.dtype)
    out[...] = np.asarray(fill, dtype=image.dtype)
    src_y, src_x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    dst_y, dst_x = max(0, (size - h) // 2), max(0, (size - w) // 2)
    ch, cw = min(h, size), min(w, size)
    out[dst_y : dst_y + ch, dst_x : dst_x + cw] = image[src_y : src_y + ch, src_x : src_x + cw]
    return out
