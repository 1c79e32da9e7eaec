"""2.5D slices from the prepared cache, as tensors for a DataLoader.

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
- paper 002: "CALF: a conditionally adaptive loss function to mitigate class-imbalanced
  segmentation." Anonymised MICCAI submission (authors and year not given).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from trainables.data.cache import load_cache_info, load_index

__all__ = ["SliceDataset", "context_positions", "roi_ratio_subset"]


def context_positions(position: int, n_slices: int, context: int) -> list[int]:
    """Returns the slice positions stacked as channels for ``position``: ``position - context`` ..
    ``position + context``, a neighbour outside the scan replaced by the target slice itself
    (paper 000: "at a scan boundary the target slice replaces the missing neighbour")."""
    return [p if 0 <= p < n_slices else position for p in range(position - context, position + context + 1)]


class SliceDataset(Dataset):
    """Slices of the given folds: item -> (image (2*context+1, H, W) float32, mask (C, H, W) float32).

    Scan arrays are opened with ``np.load(mmap_mode="r")`` on first use in each process, so the
    dataset pickles small to DataLoader workers and a trial starts in about a second whatever the
    data size: nothing is read until a slice is asked for. The mapped pages are the OS page cache's
    own, so every worker of every trial on a node that reads the same cache shares ONE copy in
    memory (``free`` shows it as buff/cache, not as the processes' RSS); slices of 224 x 224
    (float16 image + 3 uint8 masks, 245 KiB a slice; the real data set's 38,496) are about 9 GiB,
    read from disk once per node.

    Args:
        cache_dir: a folder written by :func:`trainables.data.prepare_cache`.
        folds: folds to include (validation: ``[k]``; training: the others).
        context: neighbouring slices on each side (1 -> 3 channels, seed 000's 2.5D input).
        transform: an Albumentations pipeline taking ``image`` (HWC float32) and ``mask`` (HWC uint8).
    """

    def __init__(self, cache_dir: str | Path, folds: Sequence[int], *, context: int = 1, transform=None):
        self.cache_dir = Path(cache_dir)
        if context < 0:
            raise ValueError(f"context must be >= 0 slices on each side, got {context}")
        index = load_index(self.cache_dir)
        folds = [int(f) for f in folds]
        unknown = sorted(set(folds) - set(index["fold"].unique().tolist()))
        if not folds or unknown:
            raise ValueError(
                f"folds must name folds of the cache {self.cache_dir}, "
                f"expected some of {sorted(index['fold'].unique().tolist())}, got {folds}"
            )
        self.index = index[index["fold"].isin(folds)].reset_index(drop=True)  # also fills the row arrays
        self.classes: tuple[str, ...] = tuple(load_cache_info(self.cache_dir)["classes"])
        self.context = context
        self.transform = transform
        self._scans: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def index(self):
        """The slices (rows of ``index.parquet``) this dataset serves, in item order; assignable
        (e.g. :func:`roi_ratio_subset`)."""
        return self._index

    @index.setter
    def index(self, index) -> None:
        self._index = index
        # plain arrays: a pandas row lookup per item costs more than reading the slice itself
        self._rows_scan = index["scan"].to_numpy(dtype=object)
        self._rows_position = index["position"].to_numpy(dtype=np.int64)
        self._rows_n_slices = index["n_slices"].to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self._index)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_scans"] = {}
        return state

    def _scan(self, scan: str) -> tuple[np.ndarray, np.ndarray]:
        if scan not in self._scans:
            folder = self.cache_dir / "scans"
            self._scans[scan] = (
                np.load(folder / f"{scan}.npy", mmap_mode="r"),
                np.load(folder / f"{scan}_mask.npy", mmap_mode="r"),
            )
        return self._scans[scan]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = self._scan(self._rows_scan[i])
        position = int(self._rows_position[i])
        channels = context_positions(position, int(self._rows_n_slices[i]), self.context)
        # float16 -> float32 through torch: NumPy's half conversion is ~10x slower (no SIMD)
        if self.transform is None:
            return torch.from_numpy(images[channels]).float(), torch.from_numpy(masks[position].astype(np.float32))
        # Albumentations wants HWC: interleave in float16 (cv2.merge), then convert
        image = torch.from_numpy(cv2.merge([images[p] for p in channels]).reshape(*images.shape[1:], -1)).float()
        mask = cv2.merge(list(masks[position])).reshape(*masks.shape[2:], -1)  # (H, W, C) uint8
        out = self.transform(image=image.numpy(), mask=mask)
        # CHW views of the HWC results: the DataLoader's collate copies them into the batch anyway,
        # so a contiguous copy here would be a second pass over every pixel
        mask = torch.from_numpy(out["mask"]).permute(2, 0, 1).float()
        if self.classes and self.classes[0] == "background":
            # one-hot (softmax) masks: pixels warped in from outside the image got 0 in every channel;
            # they are background
            mask[0] = 1.0 - mask[1:].amax(dim=0)
        return torch.from_numpy(out["image"]).permute(2, 0, 1), mask


def roi_ratio_subset(index, ratio: float, classes: Sequence[str], seed: int = 0):
    """Returns the rows of ``index`` resampled so ROI-present / ROI-absent slices = ``ratio`` (paper 002).

    ROI-present means any class is present (``has_<class>``). When the data hold more present
    slices than the ratio allows, present slices are subsampled; otherwise absent ones are. The
    larger group keeps all the slices it can; sampling is without replacement and seeded, and the
    original row order is kept. Apply it to the training fold only.

    Raises:
        ValueError: ``ratio`` is not positive, or the index has no present or no absent slice.
    """
    if not ratio > 0:
        raise ValueError(f"roi_ratio must be > 0, got {ratio}")
    present = index[[f"has_{c}" for c in classes]].any(axis=1).to_numpy()
    n_present, n_absent = int(present.sum()), int((~present).sum())
    if n_present == 0 or n_absent == 0:
        raise ValueError(
            f"roi_ratio needs ROI-present and ROI-absent training slices; found "
            f"{n_present} present and {n_absent} absent"
        )
    rng = np.random.default_rng(seed)
    keep_present, keep_absent = np.flatnonzero(present), np.flatnonzero(~present)
    if n_present / n_absent > ratio:
        keep_present = rng.choice(keep_present, size=max(1, round(ratio * n_absent)), replace=False)
    else:
        keep_absent = rng.choice(keep_absent, size=max(1, round(n_present / ratio)), replace=False)
    rows = np.sort(np.concatenate([keep_present, keep_absent]))
    return index.iloc[rows].reset_index(drop=True)
