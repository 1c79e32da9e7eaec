"""Run-length encoding of binary masks in the UW-Madison GI tract (Kaggle) convention.

Convention: ``"start length start length ..."`` with 1-indexed starts, over the mask flattened
row-major (C order) with shape ``(height, width)``. An empty string, ``None`` or NaN (what pandas
reads for an empty CSV cell) is an empty mask.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["rle_decode", "rle_encode"]


def _is_empty(rle: str | float | None) -> bool:
    if rle is None:
        return True
    if isinstance(rle, float):
        if math.isnan(rle):
            return True
        raise TypeError(f"an RLE must be a string, None or NaN, got the float {rle!r}")
    if not isinstance(rle, str):
        raise TypeError(f"an RLE must be a string, None or NaN, got {type(rle).__name__}")
    return not rle.strip()


def rle_decode(rle: str | float | None, shape: tuple[int, int]) -> np.ndarray:
    """Return the uint8 mask of 0/1 with ``shape == (height, width)`` that ``rle`` describes.

    Args:
        rle: ``"start length ..."``, starts 1-indexed over the row-major flattened mask;
            ``""``, ``None`` and NaN mean an empty mask.
        shape: ``(height, width)`` of the image the RLE belongs to.

    Raises:
        ValueError: an odd number of values, a non-integer, a start below 1, a length below 1,
            or a run that goes past ``height * width``.
    """
    height, width = (int(v) for v in shape)
    n_pixels = height * width
    if _is_empty(rle):
        return np.zeros((height, width), dtype=np.uint8)
    try:
        values = np.array(rle.split(), dtype=np.int64)  # type: ignore[union-attr]
    except ValueError as err:
        raise ValueError(f"RLE must hold integers 'start length ...', got {rle!r:.80}") from err
    if values.size % 2:
        raise ValueError(f"RLE must hold pairs 'start length', got an odd count ({values.size})")
    starts = values[0::2] - 1
    lengths = values[1::2]
    if (starts < 0).any() or (lengths < 1).any():
        raise ValueError("RLE starts must be >= 1 (1-indexed) and lengths >= 1")
    ends = starts + lengths
    if (ends > n_pixels).any():
        raise ValueError(
            f"RLE run ends at pixel {int(ends.max())} but the mask {height}x{width} has only {n_pixels} pixels"
        )
    # +1 at each run start, -1 after each run end; the running sum is > 0 inside a run.
    # Works for unsorted or overlapping runs too.
    edges = np.zeros(n_pixels + 1, dtype=np.int32)
    np.add.at(edges, starts, 1)
    np.add.at(edges, ends, -1)
    flat = (np.cumsum(edges[:-1]) > 0).astype(np.uint8)
    return flat.reshape(height, width)


def rle_encode(mask: np.ndarray) -> str:
    """Return the RLE string of ``mask`` (non-zero = foreground); ``""`` for an empty mask.

    Inverse of :func:`rle_decode`: row-major (C order) flattening, 1-indexed starts.
    """
    pixels = np.asarray(mask).ravel(order="C") != 0
    if not pixels.any():
        return ""
    padded = np.concatenate(([False], pixels, [False]))
    changes = np.flatnonzero(padded[1:] != padded[:-1]) + 1  # 1-indexed run starts and ends+1
    changes[1::2] -= changes[0::2]
    return " ".join(map(str, changes.tolist()))
