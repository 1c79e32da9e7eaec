"""2.5D slices from the prepared cache, as tensors for a DataLoader."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
    dataset pickles small to DataLoader workers and concurrent trials share the OS page cache.

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
        self.index = index[index["fold"].isin(folds)].reset_index(drop=True)
        self.classes: tuple[str, ...] = tuple(load_cache_info(self.cache_dir)["classes"])
        self.context = context
        self.transform = transform
        self._scans: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_scans"] = {}
        return state

    def _scan(self, scan: str) -> tuple[np.ndarray, np.ndarray]:
        if scan not in self._scans:
            folder = self.cache_dir / "scans"
            self._scans[scan] = (np.load(folder / f"{scan}.npy", mmap_mode="r"),
                                 np.load(folder / f"{scan}_mask.npy", mmap_mode="r"))
        return self._scans[scan]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.index.iloc[i]
        images, masks = self._scan(row["scan"])
        position = int(row["position"])
        channels = context_positions(position, int(row["n_slices"]), self.context)
        image = np.asarray(images[channels], dtype=np.float32)  # (K, H, W)
        mask = np.array(masks[position])                         # (C, H, W) uint8, a copy
        if self.transform is not None:
            out = self.transform(image=image.transpose(1, 2, 0), mask=mask.transpose(1, 2, 0))
            image = out["image"].transpose(2, 0, 1)
            mask = out["mask"].transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(mask)).float()


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
        raise ValueError(f"roi_ratio needs ROI-present and ROI-absent training slices; found "
                         f"{n_present} present and {n_absent} absent")
    rng = np.random.default_rng(seed)
    keep_present, keep_absent = np.flatnonzero(present), np.flatnonzero(~present)
    if n_present / n_absent > ratio:
        keep_present = rng.choice(keep_present, size=max(1, round(ratio * n_absent)), replace=False)
    else:
        keep_absent = rng.choice(keep_absent, size=max(1, round(n_present / ratio)), replace=False)
    rows = np.sort(np.concatenate([keep_present, keep_absent]))
    return index.iloc[rows].reset_index(drop=True)
