"""Prepared arrays that trials read instead of PNGs: one volume per scan plus a Parquet index.

Layout of ``cache_dir``::

    scans/caseN_dayM.npy        float16 (S, H, W): slices in order, each min-max normalised to [0, 1]
    scans/caseN_dayM_mask.npy   uint8   (S, C, H, W): 0/1 masks, classes in ``cache.json["classes"]`` order
    index.parquet               one row per slice (see :func:`prepare_cache`)
    cache.json                  parameters and data hash; written last, so its presence means complete

Preprocessing follows paper 000 (section 2.3): per-slice min-max to [0, 1] and resizing to a square
``image_size`` (224 in the paper). Folds are grouped by patient (000: "grouped five-fold split kept
each patient wholly within one set").
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from trainables.data.rle import rle_decode
from trainables.data.uwmgi import GI_CLASSES, SliceRecord, read_uwmgi

__all__ = ["prepare_cache", "load_index", "load_cache_info", "assign_folds", "CACHE_FORMAT_VERSION"]

CACHE_FORMAT_VERSION = 1
_INFO = "cache.json"
_INDEX = "index.parquet"


def _atomic_write_bytes(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        write(fh)
    os.replace(tmp, path)


def _data_digest(root: Path) -> str:
    """Return a hash of train.csv's bytes and of every file under train/ (relative path, size, mtime)."""
    digest = hashlib.sha256()
    with open(root / "train.csv", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    entries = []
    for dirpath, _dirnames, filenames in os.walk(root / "train"):
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            entries.append(f"{os.path.relpath(path, root)}\t{st.st_size}\t{st.st_mtime_ns}")
    digest.update("\n".join(sorted(entries)).encode())
    return digest.hexdigest()


def assign_folds(case_sizes: dict[int, int], n_folds: int, seed: int = 42) -> dict[int, int]:
    """Return case -> fold (0..n_folds-1), every case wholly in one fold and every fold non-empty.

    The cases are shuffled with ``seed`` and each goes to the fold with the fewest slices so far
    (ties: fewest cases, then lowest fold), which balances slice counts like sklearn's GroupKFold
    while letting the seed change the split.

    Raises:
        ValueError: ``n_folds`` < 2 or more than the number of cases.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2 for a train/validation split, got {n_folds}")
    cases = sorted(case_sizes)
    if n_folds > len(cases):
        raise ValueError(
            f"n_folds={n_folds} is more than the {len(cases)} patients (cases) found; "
            f"folds are grouped by patient, so expected n_folds <= {len(cases)}"
        )
    order = np.random.default_rng(seed).permutation(len(cases))
    slices = [0] * n_folds
    counts = [0] * n_folds
    folds: dict[int, int] = {}
    for i in order:
        case = cases[i]
        fold = min(range(n_folds), key=lambda f: (slices[f], counts[f], f))
        folds[case] = fold
        slices[fold] += case_sizes[case]
        counts[fold] += 1
    return folds


def _normalise(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as float32 min-max scaled to [0, 1]; a constant slice gives zeros."""
    image = image.astype(np.float32)
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.zeros_like(image)
    return (image - lo) / (hi - lo)


def _resize(array: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    if array.shape[:2] == (size, size):
        return array
    return cv2.resize(array, (size, size), interpolation=interpolation)


def _prepare_scan(
    records: list[SliceRecord], scans_dir: Path, image_size: int, classes: tuple[str, ...]
) -> np.ndarray:
    """Write one scan's image and mask volumes; return per-slice foreground areas (S, C)."""
    n = len(records)
    images = np.empty((n, image_size, image_size), np.float16)
    masks = np.empty((n, len(classes), image_size, image_size), np.uint8)
    for s, rec in enumerate(records):
        raw = cv2.imread(str(rec.path), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.ndim != 2:
            raise ValueError(f"{rec.path}: cannot read it as a single-channel (grey) PNG")
        shrink = rec.height >= image_size and rec.width >= image_size
        image = _resize(_normalise(raw), image_size, cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        images[s] = np.clip(image, 0.0, 1.0)
        for c, cls in enumerate(classes):
            mask = rle_decode(rec.rles[cls], (rec.height, rec.width))
            masks[s, c] = _resize(mask, image_size, cv2.INTER_NEAREST)
    scan = records[0].scan
    _atomic_write_bytes(scans_dir / f"{scan}.npy", lambda fh: np.save(fh, images))
    _atomic_write_bytes(scans_dir / f"{scan}_mask.npy", lambda fh: np.save(fh, masks))
    return masks.reshape(n, len(classes), -1).sum(axis=2, dtype=np.int64)


def load_cache_info(cache_dir: str | Path) -> dict[str, Any]:
    """Return the parsed ``cache.json`` of a complete cache.

    Raises:
        FileNotFoundError: no ``cache.json`` (never prepared, or preparation did not finish).
    """
    path = Path(cache_dir) / _INFO
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {cache_dir} is not a complete cache; expected one written by prepare_cache"
        )
    return json.loads(path.read_text())


def _is_complete(cache_dir: Path, info: dict[str, Any]) -> bool:
    scans_dir = cache_dir / "scans"
    if not (cache_dir / _INDEX).is_file():
        return False
    return all(
        (scans_dir / f"{scan}.npy").is_file() and (scans_dir / f"{scan}_mask.npy").is_file()
        for scan in info.get("scans", [])
    )


def prepare_cache(
    data_root: str | Path,
    cache_dir: str | Path,
    *,
    image_size: int,
    n_folds: int,
    fold_seed: int = 42,
    classes: Sequence[str] = GI_CLASSES,
) -> Path:
    """Return ``cache_dir`` after filling it with resized, normalised scans, masks and a fold index.

    Reads :func:`trainables.data.uwmgi.read_uwmgi` (``data_root``), groups slices into scans
    (case, day) in slice order, min-max normalises each slice to [0, 1] (a constant slice becomes
    zeros), resizes it to ``image_size`` x ``image_size`` (INTER_AREA when shrinking, INTER_LINEAR
    otherwise; NEAREST for masks) and writes the layout described in the module docstring.

    ``index.parquet`` has one row per slice, sorted by (case, day, slice_number), with columns
    ``id`` (str), ``scan`` (str ``caseN_dayM``), ``case``, ``day``, ``slice_number``, ``position``
    (0..S-1 in the scan), ``n_slices``, ``fold``, ``height``, ``width`` (original pixels; int64),
    ``spacing_h``, ``spacing_w`` (float64, mm per pixel after resizing), and per class
    ``has_<class>`` (bool, mask non-empty) and ``area_<class>`` (int64, foreground pixels after resizing).

    Folds are grouped by patient (:func:`assign_folds`). If ``cache.json`` already records the same
    parameters and the same data (hash of train.csv and of the listing of train/ with sizes and
    modification times), the call returns at once without reading any PNG. ``cache.json`` is removed
    before and written after everything else, so an interrupted run is never taken as complete.

    Raises:
        ValueError: ``image_size`` < 1, ``n_folds`` < 2 or more than the number of patients, no slices.
        FileNotFoundError / ValueError: from :func:`read_uwmgi` for a malformed data set.
    """
    if int(image_size) != image_size or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    image_size = int(image_size)
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2 for a train/validation split, got {n_folds}")
    data_root = Path(data_root).resolve()
    cache_dir = Path(cache_dir)
    classes = tuple(classes)
    if not (data_root / "train.csv").is_file() or not (data_root / "train").is_dir():
        read_uwmgi(data_root, classes)  # raises the explanatory error

    params = {
        "format_version": CACHE_FORMAT_VERSION,
        "image_size": image_size,
        "n_folds": int(n_folds),
        "fold_seed": int(fold_seed),
        "classes": list(classes),
    }
    digest = _data_digest(data_root)
    key = hashlib.sha256(json.dumps({"params": params, "data": digest}, sort_keys=True).encode()).hexdigest()
    info_path = cache_dir / _INFO
    if info_path.is_file():
        try:
            old = json.loads(info_path.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("key") == key and _is_complete(cache_dir, old):
            return cache_dir
    info_path.unlink(missing_ok=True)

    records = read_uwmgi(data_root, classes)
    if not records:
        raise ValueError(f"{data_root / 'train.csv'} lists no slices; expected at least one")
    scans: dict[str, list[SliceRecord]] = {}
    for rec in records:  # already sorted by (case, day, slice_number)
        scans.setdefault(rec.scan, []).append(rec)
    case_sizes: dict[int, int] = {}
    for rec in records:
        case_sizes[rec.case] = case_sizes.get(rec.case, 0) + 1
    folds = assign_folds(case_sizes, n_folds, fold_seed)

    scans_dir = cache_dir / "scans"
    scans_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(8, os.cpu_count() or 1, len(scans)))
    # cv2 releases the GIL while decoding and resizing, so threads give a real speed-up.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        areas = list(pool.map(lambda recs: _prepare_scan(recs, scans_dir, image_size, classes), scans.values()))

    rows = []
    for scan_records, scan_areas in zip(scans.values(), areas, strict=True):
        n = len(scan_records)
        for position, (rec, area) in enumerate(zip(scan_records, scan_areas, strict=True)):
            row = {
                "id": rec.id,
                "scan": rec.scan,
                "case": rec.case,
                "day": rec.day,
                "slice_number": rec.slice_number,
                "position": position,
                "n_slices": n,
                "fold": folds[rec.case],
                "height": rec.height,
                "width": rec.width,
                "spacing_h": rec.spacing[0] * rec.height / image_size,
                "spacing_w": rec.spacing[1] * rec.width / image_size,
            }
            for cls, a in zip(classes, area.tolist(), strict=True):
                row[f"has_{cls}"] = a > 0
            for cls, a in zip(classes, area.tolist(), strict=True):
                row[f"area_{cls}"] = a
            rows.append(row)
    index = pd.DataFrame(rows)
    int_cols = ["case", "day", "slice_number", "position", "n_slices", "fold", "height", "width"]
    index[int_cols] = index[int_cols].astype("int64")
    index[[f"area_{c}" for c in classes]] = index[[f"area_{c}" for c in classes]].astype("int64")
    index[["spacing_h", "spacing_w"]] = index[["spacing_h", "spacing_w"]].astype("float64")
    index[[f"has_{c}" for c in classes]] = index[[f"has_{c}" for c in classes]].astype(bool)
    _atomic_write_bytes(cache_dir / _INDEX, lambda fh: index.to_parquet(fh, index=False))

    keep = {f"{s}.npy" for s in scans} | {f"{s}_mask.npy" for s in scans}
    for path in scans_dir.glob("*.npy"):
        if path.name not in keep:  # left over from a cache of other data
            path.unlink()

    info = {
        "key": key,
        "params": params,
        "classes": list(classes),
        "image_size": image_size,
        "n_folds": int(n_folds),
        "fold_seed": int(fold_seed),
        "data_root": str(data_root),
        "data_digest": digest,
        "n_slices": len(records),
        "n_scans": len(scans),
        "n_cases": len(case_sizes),
        "scans": list(scans),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _atomic_write_bytes(info_path, lambda fh: fh.write((json.dumps(info, indent=2) + "\n").encode()))
    return cache_dir


def load_index(cache_dir: str | Path) -> pd.DataFrame:
    """Return the slice index (``index.parquet``) of a complete cache; columns as in :func:`prepare_cache`.

    Raises:
        FileNotFoundError: the cache is missing or incomplete (no ``cache.json``).
    """
    load_cache_info(cache_dir)
    return pd.read_parquet(Path(cache_dir) / _INDEX)
