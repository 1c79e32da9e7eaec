"""Prepared arrays that trials read instead of the source files: one volume per scan plus a Parquet index.

Layout of ``cache_dir`` (the same for every data format, so nothing downstream knows the format)::

    scans/<scan>.npy            float16 (S, H, W): slices in order, intensities normalised to [0, 1]
    scans/<scan>_mask.npy       uint8   (S, C, H, W): 0/1 masks, channels in ``cache.json["classes"]`` order
                                (multiclass: one-hot, channel 0 ``background``)
    index.parquet               one row per slice (see :func:`prepare_dataset_cache`)
    cache.json                  parameters and data hash; written last, so its presence means complete

Preprocessing defaults follow paper 000 (section 2.3): per-slice min-max to [0, 1] and resizing to a
square ``image_size`` (224 in the paper). Folds are grouped by patient (000: "grouped five-fold split
kept each patient wholly within one set"), or read from a split file.

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import yaml

from trainables import usable_cpus
from trainables.data._base import BACKGROUND, DataAdapter, ScanSource, class_masks, natural_key
from trainables.data.formats import build_adapter
from trainables.data.intensity import (
    INTENSITY_MODES,
    crop_or_pad,
    normalise_intensity,
    resample_inplane,
    resample_slices,
)
from trainables.data.uwmgi import GI_CLASSES, UwmgiAdapter, read_uwmgi

__all__ = [
    "CACHE_FORMAT_VERSION",
    "assign_folds",
    "load_cache_info",
    "load_index",
    "load_split",
    "prepare_cache",
    "split_folds",
    "prepare_dataset_cache",
]

CACHE_FORMAT_VERSION = 2  # 2: patient and spacing_z columns, any format, multiclass masks
_INFO = "cache.json"
_INDEX = "index.parquet"


def _atomic_write_bytes(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        write(fh)
    os.replace(tmp, path)


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


def _resize(array: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    if array.shape[:2] == (size, size):
        return array
    return cv2.resize(array, (size, size), interpolation=interpolation)


def load_split(split: str | Path | Mapping[Any, Sequence[Any]] | Sequence[Sequence[Any]]) -> dict[int, list[str]]:
    """Returns ``{fold: [validation patient ids]}`` from a split file (YAML or JSON) or an object.

    Accepted shapes: ``{0: [p1, p2], 1: [p3]}`` (keys may be strings ``"0"``), ``{"folds": {...}}``
    or a list of lists (fold i = item i). Patient ids are compared as strings with the index's
    ``patient`` column.

    Raises:
        FileNotFoundError: no such file.
        ValueError: another shape, folds not numbered 0..k-1, or a patient listed twice.
    """
    source = "split"
    raw: Any = split
    if isinstance(split, (str, Path)):
        path = Path(split).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"split file {path} not found; expected YAML/JSON {{fold: [patient ids]}}")
        source = str(path)
        raw = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    if isinstance(raw, Mapping) and set(raw) == {"folds"}:
        raw = raw["folds"]
    if isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)):
        raw = dict(enumerate(raw))
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"{source}: expected a mapping {{fold: [validation patient ids]}}, got {type(raw).__name__}")
    folds: dict[int, list[str]] = {}
    for key, patients in raw.items():
        try:
            fold = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: fold key {key!r} is not a fold number") from None
        if isinstance(patients, (str, bytes)) or not isinstance(patients, Sequence) or not patients:
            raise ValueError(f"{source}: fold {fold} must list at least one validation patient id")
        folds[fold] = [str(p) for p in patients]
    if sorted(folds) != list(range(len(folds))):
        raise ValueError(f"{source}: folds must be numbered 0..{len(folds) - 1}, got {sorted(folds)}")
    seen: dict[str, int] = {}
    for fold in sorted(folds):
        for patient in folds[fold]:
            if patient in seen:
                raise ValueError(
                    f"{source}: patient {patient!r} is listed in fold {seen[patient]} and fold {fold}; "
                    "list each validation patient once"
                )
            seen[patient] = fold
    return {f: folds[f] for f in sorted(folds)}


def split_folds(
    patients: Sequence[str], split: Mapping[int, Sequence[str]], n_folds: int, source: str = "split"
) -> dict[str, int]:
    """Returns patient -> fold from a fixed split; patients it does not list go to fold ``n_folds``,
    a training-only fold that is never validated.

    Raises:
        ValueError: the split's number of folds is not ``n_folds``, or it names unknown patients.
    """
    if len(split) != n_folds:
        raise ValueError(f"{source}: {len(split)} folds listed but n_folds={n_folds}; set data.folds to {len(split)}")
    known = set(patients)
    unknown = sorted({p for ps in split.values() for p in ps} - known, key=natural_key)
    if unknown:
        raise ValueError(
            f"{source}: patient id(s) {unknown[:10]} not in the data set; "
            f"its patients are {sorted(known, key=natural_key)[:10]}{' ...' if len(known) > 10 else ''}"
        )
    folds = {p: f for f, ps in split.items() for p in ps}
    return {p: folds.get(p, n_folds) for p in patients}


@dataclasses.dataclass(frozen=True)
class _Settings:
    image_size: int
    intensity: str
    window: tuple[float, float] | None
    clip_percentiles: tuple[float, float] | None
    target_spacing: tuple[float, ...] | None


def _prepare_scan(adapter: DataAdapter, source: ScanSource, scans_dir: Path, st: _Settings) -> dict[str, Any]:
    """Writes one scan's image and mask volumes; returns its per-slice facts for the index."""
    vol = adapter.load(source)
    image = np.asarray(vol.image)
    if vol.masks is not None:
        masks = np.asarray(vol.masks, dtype=np.uint8)
    else:
        masks = class_masks(
            vol.labels,
            adapter.value_classes,
            adapter.classes,
            adapter.label_mode,
            vol.label_files,
            adapter.label_tolerance,
        )
    if image.ndim != 3 or masks.shape[0] != image.shape[0] or masks.shape[2:] != image.shape[1:]:
        raise ValueError(f"{vol.image_files[0]}: image {image.shape} and masks {masks.shape} do not match")
    n, h, w = image.shape
    if n == 0:
        raise ValueError(f"{vol.image_files[0]}: the scan has no slice")
    multiclass = adapter.label_mode == "multiclass"
    image = normalise_intensity(image, st.intensity, window=st.window, clip_percentiles=st.clip_percentiles)
    sz, sh, sw = (float(x) for x in vol.spacing)
    numbers, ids = list(vol.slice_numbers), vol.slice_ids
    target = st.target_spacing
    if target is not None and len(target) == 3 and n > 1:
        if not math.isfinite(sz) or sz <= 0:
            raise ValueError(
                f"{vol.image_files[0]}: slice spacing unknown; cannot resample to target_spacing "
                f"{list(target)} (give two values to resample in-plane only)"
            )
        image = resample_slices(image, sz, target[0], nearest=False)
        masks = resample_slices(masks, sz, target[0], nearest=True)
        if len(image) != n:
            numbers, ids = list(range(1, len(image) + 1)), None
        sz, n = float(target[0]), len(image)
    size = st.image_size
    images_out = np.empty((n, size, size), np.float16)
    masks_out = np.empty((n, masks.shape[1], size, size), np.uint8)
    fill = [1] + [0] * (masks.shape[1] - 1) if multiclass else 0
    if target is not None:
        th, tw = float(target[-2]), float(target[-1])
        new_h = max(1, int(round(h * sh / th)))
        new_w = max(1, int(round(w * sw / tw)))
        out_h, out_w = sh * h / new_h, sw * w / new_w
    else:
        out_h, out_w = sh * h / size, sw * w / size
    for s in range(n):
        if target is not None:
            img = crop_or_pad(resample_inplane(image[s], (sh, sw), (th, tw), nearest=False), size, 0.0)
            m = np.stack(
                [resample_inplane(masks[s, c], (sh, sw), (th, tw), nearest=True) for c in range(masks.shape[1])],
                axis=-1,
            )
            m = crop_or_pad(m, size, fill).transpose(2, 0, 1)
        else:
            shrink = h >= size and w >= size
            img = _resize(image[s], size, cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            m = np.stack([_resize(masks[s, c], size, cv2.INTER_NEAREST) for c in range(masks.shape[1])])
        images_out[s] = np.clip(img, 0.0, 1.0)
        masks_out[s] = m
    _atomic_write_bytes(scans_dir / f"{source.scan}.npy", lambda fh: np.save(fh, images_out))
    _atomic_write_bytes(scans_dir / f"{source.scan}_mask.npy", lambda fh: np.save(fh, masks_out))
    foreground = masks_out[:, 1:] if multiclass else masks_out
    return {
        "areas": foreground.reshape(n, foreground.shape[1], -1).sum(axis=2, dtype=np.int64),
        "numbers": numbers,
        "ids": ids or [f"{source.scan}_slice_{k:04d}" for k in numbers],
        "height": h,
        "width": w,
        "spacing": (sz, out_h, out_w),
        "source_spacing": (sh, sw),
    }


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


def prepare_dataset_cache(
    format: str,
    data_root: str | Path,
    cache_dir: str | Path,
    *,
    image_size: int,
    n_folds: int,
    fold_seed: int = 42,
    classes: Sequence[str] = GI_CLASSES,
    label_mode: str = "multilabel",
    options: Mapping[str, Any] | None = None,
    label_values: Mapping[Any, Any] | None = None,
    intensity: str = "slice_minmax",
    window: tuple[float, float] | None = None,
    clip_percentiles: tuple[float, float] | None = None,
    target_spacing: Sequence[float] | None = None,
    split: str | Path | Mapping[Any, Sequence[Any]] | None = None,
) -> Path:
    """Return ``cache_dir`` after filling it from a data set in any registered format.

    The adapter of ``format`` (:data:`trainables.data.formats.ADAPTERS`) lists the scans and reads
    each; then, for every format alike: label values become class masks (``label_mode``), the
    intensities are normalised (``intensity``), slices are optionally resampled to
    ``target_spacing``, resized to ``image_size`` and written with the index.

    ``index.parquet`` has one row per slice, sorted by (case, day, slice order), with columns ``id``
    (str), ``scan`` (str), ``patient`` (str, the fold group), ``case`` (int: the UW-Madison case
    number, else the patient's rank in natural order), ``day`` (int: scan number within the patient,
    or the UW-Madison day), ``slice_number`` (the source's number), ``position`` (0..S-1),
    ``n_slices``, ``fold``, ``height``, ``width`` (original pixels), ``spacing_h``, ``spacing_w``
    (mm per cached pixel), ``spacing_z`` (mm between slices; NaN when unknown),
    ``source_spacing_h``, ``source_spacing_w`` (mm per original pixel), and per foreground
    class ``has_<class>`` (bool) and ``area_<class>`` (int64, cached pixels). Background never has
    columns, so :func:`~trainables.data.roi_ratio_subset` works unchanged.

    If ``cache.json`` records the same parameters and the same data (a hash of the source files'
    paths, sizes and modification times), the call returns at once. ``cache.json`` is removed before
    and written after everything else, so an interrupted run is never taken as complete.

    Args:
        format: a registered format (``uwmgi``, ``synthetic``, ``nifti``, ``dicom``, ``image_folder``).
        data_root: the data set folder as it comes from its source.
        image_size: side of the cached square slices.
        n_folds: validation folds (>= 2); patient-grouped, balanced by slices (:func:`assign_folds`).
        fold_seed: seed of the fold assignment.
        classes: foreground class names in channel order (never ``background``).
        label_mode: ``multilabel`` (one channel per class, may overlap; sigmoid) or ``multiclass``
            (channel 0 background + one per class, one-hot; softmax); default ``multilabel``.
        options: the format's options (:func:`trainables.data.formats.format_options`).
        label_values: label value / grey level -> class name or list of names (default: the
            format's, e.g. ``{1: classes[0], 2: classes[1], ...}`` for NIfTI).
        intensity: see :mod:`trainables.data.intensity` (default ``slice_minmax``, paper 000).
        window: ``(center, width)`` for ``intensity="window"`` (CT, Hounsfield units).
        clip_percentiles: ``(lo, hi)`` percentile clipping before min-max / z-score.
        target_spacing: ``(row, column)`` mm to resample in-plane, or ``(slice, row, column)`` to
            resample along slices too; the slice is then centre-cropped / zero-padded to
            ``image_size`` instead of being stretched to it. Default None: stretch to ``image_size``.
        split: fixed folds: a YAML/JSON file or mapping ``{fold: [validation patient ids]}``
            (:func:`load_split`); patients it does not list train in every fold (fold ``n_folds``).

    Raises:
        KeyError: an unknown format.
        ValueError / FileNotFoundError: bad arguments, or a data set problem, naming the file:
            unpaired files, a label value not in ``label_values``, image and label of different
            shapes, a missing DICOM slice, a mask of another size than its image, ...
    """
    adapter = build_adapter(
        format, data_root, options, classes=classes, label_values=label_values, label_mode=label_mode
    )
    return _write_cache(
        adapter,
        cache_dir,
        image_size=image_size,
        n_folds=n_folds,
        fold_seed=fold_seed,
        intensity=intensity,
        window=window,
        clip_percentiles=clip_percentiles,
        target_spacing=target_spacing,
        split=split,
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
    """Return ``cache_dir`` after filling it from a UW-Madison GI folder (``train.csv`` + ``train/``).

    :func:`prepare_dataset_cache` with ``format="uwmgi"`` and paper 000's preprocessing: each slice
    min-max normalised to [0, 1] (a constant slice becomes zeros), resized to ``image_size`` square
    (INTER_AREA when shrinking, INTER_LINEAR otherwise; NEAREST for masks); multi-label organ masks.
    The data hash is of train.csv's bytes and the listing of train/; a complete cache with the same
    parameters is reused without reading any PNG.

    Raises:
        ValueError: ``image_size`` < 1, ``n_folds`` < 2 or more than the number of patients, no slices.
        FileNotFoundError / ValueError: from :func:`read_uwmgi` for a malformed data set.
    """
    adapter = UwmgiAdapter(data_root, classes=classes, reader=read_uwmgi)
    return _write_cache(adapter, cache_dir, image_size=image_size, n_folds=n_folds, fold_seed=fold_seed)


def _write_cache(
    adapter: DataAdapter,
    cache_dir: str | Path,
    *,
    image_size: int,
    n_folds: int,
    fold_seed: int = 42,
    intensity: str = "slice_minmax",
    window: tuple[float, float] | None = None,
    clip_percentiles: tuple[float, float] | None = None,
    target_spacing: Sequence[float] | None = None,
    split: str | Path | Mapping[Any, Sequence[Any]] | None = None,
) -> Path:
    if int(image_size) != image_size or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    image_size = int(image_size)
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2 for a train/validation split, got {n_folds}")
    if intensity not in INTENSITY_MODES:
        raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}")
    if intensity == "window" and (window is None or len(window) != 2 or not window[1] > 0):
        raise ValueError(f"intensity 'window' needs window (center, width > 0), e.g. (40, 400); got {window!r}")
    if target_spacing is not None:
        target_spacing = tuple(float(x) for x in target_spacing)
        if len(target_spacing) not in (2, 3) or min(target_spacing) <= 0:
            raise ValueError(
                f"target_spacing must be 2 (row, column) or 3 (slice, row, column) positive mm "
                f"values, got {list(target_spacing)}"
            )
    split_folds_listed = None if split is None else load_split(split)
    split_source = str(split) if isinstance(split, (str, Path)) else "split"
    cache_dir = Path(cache_dir)
    classes = adapter.classes
    multiclass = adapter.label_mode == "multiclass"
    channels = [BACKGROUND, *classes] if multiclass else list(classes)
    settings = _Settings(
        image_size,
        intensity,
        None if window is None else tuple(map(float, window)),
        None if clip_percentiles is None else tuple(map(float, clip_percentiles)),
        target_spacing,
    )

    params: dict[str, Any] = {
        "format_version": CACHE_FORMAT_VERSION,
        "format": adapter.name,
        "options": adapter.options.model_dump(mode="json"),
        "image_size": image_size,
        "n_folds": int(n_folds),
        "fold_seed": int(fold_seed),
        "classes": list(classes),
        "label_mode": adapter.label_mode,
        "label_values": {str(k): list(v) for k, v in sorted(adapter.value_classes.items())},
        "intensity": intensity,
        "window": settings.window,
        "clip_percentiles": settings.clip_percentiles,
        "target_spacing": target_spacing,
        "split": split_folds_listed,
    }
    adapter.before_digest()
    digest = adapter.digest()
    key = hashlib.sha256(
        json.dumps({"params": params, "data": digest}, sort_keys=True, default=str).encode()
    ).hexdigest()
    info_path = cache_dir / _INFO
    if info_path.is_file():
        try:
            old = json.loads(info_path.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("key") == key and _is_complete(cache_dir, old):
            return cache_dir
    info_path.unlink(missing_ok=True)

    sources = adapter.discover()
    if not sources:
        raise ValueError(f"{adapter.root}: no scan found for format {adapter.name}")
    patients = sorted({s.patient for s in sources}, key=natural_key)
    if all(s.case is not None for s in sources):
        case_of = {s.patient: int(s.case) for s in sources}
    else:
        case_of = {p: i for i, p in enumerate(patients)}
    if split_folds_listed is not None:
        fold_of_patient = split_folds(patients, split_folds_listed, n_folds, split_source)
    else:
        assign_folds({case_of[p]: 1 for p in patients}, n_folds, fold_seed)  # fail before reading pixels
    sources = sorted(sources, key=lambda s: (case_of[s.patient], s.day, natural_key(s.scan)))
    if len({s.scan for s in sources}) != len(sources):
        raise ValueError(f"{adapter.root}: two scans share a name; rename the files")

    scans_dir = cache_dir / "scans"
    scans_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(8, usable_cpus(), len(sources)))
    # cv2, zlib and numpy release the GIL while decoding and resizing, so threads give a real speed-up
    with ThreadPoolExecutor(max_workers=workers) as pool:
        facts = list(pool.map(lambda src: _prepare_scan(adapter, src, scans_dir, settings), sources))

    case_sizes: dict[int, int] = {}
    for src, fact in zip(sources, facts, strict=True):
        case_sizes[case_of[src.patient]] = case_sizes.get(case_of[src.patient], 0) + len(fact["numbers"])
    if split_folds_listed is not None:
        folds = {case_of[p]: f for p, f in fold_of_patient.items()}
    else:
        folds = assign_folds(case_sizes, n_folds, fold_seed)

    rows = []
    for src, fact in zip(sources, facts, strict=True):
        n = len(fact["numbers"])
        case = case_of[src.patient]
        sz, sh, sw = fact["spacing"]
        for position, (number, sid, area) in enumerate(
            zip(fact["numbers"], fact["ids"], fact["areas"].tolist(), strict=True)
        ):
            row = {
                "id": sid,
                "scan": src.scan,
                "patient": src.patient,
                "case": case,
                "day": src.day,
                "slice_number": number,
                "position": position,
                "n_slices": n,
                "fold": folds[case],
                "height": fact["height"],
                "width": fact["width"],
                "spacing_h": sh,
                "spacing_w": sw,
                "spacing_z": sz,
                "source_spacing_h": fact["source_spacing"][0],
                "source_spacing_w": fact["source_spacing"][1],
            }
            for cls, a in zip(classes, area, strict=True):
                row[f"has_{cls}"] = a > 0
            for cls, a in zip(classes, area, strict=True):
                row[f"area_{cls}"] = a
            rows.append(row)
    index = pd.DataFrame(rows)
    int_cols = ["case", "day", "slice_number", "position", "n_slices", "fold", "height", "width"]
    index[int_cols] = index[int_cols].astype("int64")
    index[[f"area_{c}" for c in classes]] = index[[f"area_{c}" for c in classes]].astype("int64")
    float_cols = ["spacing_h", "spacing_w", "spacing_z", "source_spacing_h", "source_spacing_w"]
    index[float_cols] = index[float_cols].astype("float64")
    index[[f"has_{c}" for c in classes]] = index[[f"has_{c}" for c in classes]].astype(bool)
    _atomic_write_bytes(cache_dir / _INDEX, lambda fh: index.to_parquet(fh, index=False))

    keep = {f"{s.scan}.npy" for s in sources} | {f"{s.scan}_mask.npy" for s in sources}
    for path in scans_dir.glob("*.npy"):
        if path.name not in keep:  # left over from a cache of other data
            path.unlink()

    train_only = n_folds if any(f == n_folds for f in folds.values()) else None
    info = {
        "key": key,
        "params": params,
        "format": adapter.name,
        "classes": channels,
        "foreground_classes": list(classes),
        "label_mode": adapter.label_mode,
        "activation": "softmax" if multiclass else "sigmoid",
        "image_size": image_size,
        "n_folds": int(n_folds),
        "train_only_fold": train_only,
        "fold_seed": int(fold_seed),
        "data_root": str(adapter.root),
        "data_digest": digest,
        "n_slices": len(index),
        "n_scans": len(sources),
        "n_cases": len(patients),
        "patients": {str(case_of[p]): p for p in patients},
        "scans": [s.scan for s in sources],
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
