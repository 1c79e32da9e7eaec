"""What a prepared data set holds: the facts behind ``sweeper data inspect SPEC``.

:func:`inspect_dataset` reads a prepared cache (``cache.json`` + ``index.parquet``; no pixel data)
and returns a plain dict; :func:`format_inspection` renders it for a terminal. Both work for every
data format, since every adapter writes the same cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data import load_cache_info, load_index
from trainables.losses import calf_statistics, select_calf_transform

__all__ = ["inspect_dataset", "format_inspection"]


def _summary(values: np.ndarray) -> dict[str, float] | None:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}


def _calf(areas: Sequence[float]) -> dict[str, Any]:
    positive = [a for a in areas if a > 0]
    if not positive:
        return {"n_slices": 0, "skewness": math.nan, "kurtosis": math.nan, "transform": None}
    skewness, kurtosis = calf_statistics(positive)
    return {
        "n_slices": len(positive),
        "skewness": skewness,
        "kurtosis": kurtosis,
        "transform": select_calf_transform(skewness, kurtosis),
    }


def inspect_dataset(cache_dir: str | Path) -> dict[str, Any]:
    """Returns what the adapter found, from a prepared cache.

    Keys: ``cache_dir``, ``format``, ``data_root``, ``label_mode``, ``activation``, ``channels``
    (mask channels, background first under multiclass), ``classes`` (foreground), ``patients``,
    ``scans``, ``slices``, ``cached_size``, ``image_sizes`` (``"HxW"`` of the original slices ->
    number of scans), ``spacing`` (``h``, ``w`` of the original pixels and ``z`` between slices, each
    min/median/max mm, or None when unknown), ``prevalence`` (per class: ``slices`` share holding
    it, ``pixels`` share of cached pixels), ``empty_slices`` (share with no class), ``folds`` (per
    fold: ``patients``, ``slices``, ``patient_ids``; a training-only fold of a fixed split has
    ``train_only``), and ``calf`` (per class and ``all`` -- areas summed over classes, what the CALF
    loss uses -- the skewness, excess kurtosis and CALF transformation of the foreground areas of
    the slices holding it, over the whole data set; a trial computes them on its training folds).

    Raises:
        FileNotFoundError: the cache is missing or incomplete.
    """
    info = load_cache_info(cache_dir)
    index = load_index(cache_dir)
    classes = list(info.get("foreground_classes") or info["classes"])
    size = int(info["image_size"])
    n = len(index)
    areas = index[[f"area_{c}" for c in classes]].to_numpy(dtype=np.float64)
    present = index[[f"has_{c}" for c in classes]].to_numpy(dtype=bool)
    scans = index.drop_duplicates("scan")
    sizes = (scans["height"].astype(str) + "x" + scans["width"].astype(str)).value_counts()
    spacing_h = (
        index["source_spacing_h"] if "source_spacing_h" in index else index["spacing_h"] * size / index["height"]
    )
    spacing_w = index["source_spacing_w"] if "source_spacing_w" in index else index["spacing_w"] * size / index["width"]
    patient = index["patient"] if "patient" in index else "case" + index["case"].astype(str)
    train_only = info.get("train_only_fold")
    folds = {}
    for fold, rows in index.assign(patient=patient).groupby("fold"):
        ids = sorted(rows["patient"].unique().tolist())
        folds[int(fold)] = {
            "patients": len(ids),
            "slices": len(rows),
            "patient_ids": ids,
            "train_only": train_only is not None and int(fold) == int(train_only),
        }
    return {
        "cache_dir": str(cache_dir),
        "format": info.get("format", "uwmgi"),
        "data_root": info.get("data_root"),
        "label_mode": info.get("label_mode", "multilabel"),
        "activation": info.get("activation", "sigmoid"),
        "channels": list(info["classes"]),
        "classes": classes,
        "patients": int(patient.nunique()),
        "scans": int(index["scan"].nunique()),
        "slices": n,
        "cached_size": size,
        "image_sizes": {k: int(v) for k, v in sizes.items()},
        "spacing": {
            "h": _summary(spacing_h.to_numpy(dtype=np.float64)),
            "w": _summary(spacing_w.to_numpy(dtype=np.float64)),
            "z": _summary(index["spacing_z"].to_numpy(dtype=np.float64)) if "spacing_z" in index else None,
        },
        "prevalence": {
            c: {
                "slices": float(present[:, i].mean()) if n else 0.0,
                "pixels": float(areas[:, i].sum() / (n * size * size)) if n else 0.0,
            }
            for i, c in enumerate(classes)
        },
        "empty_slices": float((~present.any(axis=1)).mean()) if n else 0.0,
        "folds": folds,
        "calf": {
            **{c: _calf(areas[:, i].tolist()) for i, c in enumerate(classes)},
            "all": _calf(areas.sum(axis=1).tolist()),
        },
    }


def _fmt_range(s: dict[str, float] | None) -> str:
    if s is None:
        return "unknown"
    if math.isclose(s["min"], s["max"]):
        return f"{s['median']:.3g} mm"
    return f"{s['min']:.3g} .. {s['max']:.3g} mm (median {s['median']:.3g})"


def format_inspection(d: dict[str, Any]) -> str:
    """Returns :func:`inspect_dataset`'s dict as readable text (one section per topic)."""
    lines = [
        f"data set   : {d['data_root']}  (format {d['format']}, {d['label_mode']}, {d['activation']})",
        f"cache      : {d['cache_dir']}",
        f"contents   : {d['patients']} patients, {d['scans']} scans, {d['slices']} slices, "
        f"cached at {d['cached_size']}x{d['cached_size']}",
        f"channels   : {', '.join(d['channels'])}",
        "image sizes: " + ", ".join(f"{k} ({v} scans)" for k, v in sorted(d["image_sizes"].items())),
        f"spacing    : rows {_fmt_range(d['spacing']['h'])}; columns {_fmt_range(d['spacing']['w'])}; "
        f"slices {_fmt_range(d['spacing']['z'])}",
        f"empty      : {100 * d['empty_slices']:.1f}% of slices hold no class",
        "",
        f"{'class':<20} {'slices %':>9} {'pixels %':>9} {'CALF n':>7} {'skew':>8} {'kurt':>8}  transform",
    ]
    for name in [*d["classes"], "all"]:
        calf = d["calf"][name]
        prev = d["prevalence"].get(name)
        slices = f"{100 * prev['slices']:9.2f}" if prev else f"{100 * (1 - d['empty_slices']):9.2f}"
        pixels = f"{100 * prev['pixels']:9.3f}" if prev else " " * 9
        lines.append(
            f"{name:<20} {slices} {pixels} {calf['n_slices']:>7} {calf['skewness']:>8.3f} "
            f"{calf['kurtosis']:>8.3f}  {calf['transform'] or '-'}"
        )
    lines += ["", "folds (patient-grouped):"]
    for fold, f in sorted(d["folds"].items()):
        shown = ", ".join(f["patient_ids"][:8]) + (" ..." if len(f["patient_ids"]) > 8 else "")
        tag = " [training only]" if f.get("train_only") else ""
        lines.append(f"  fold {fold}{tag}: {f['patients']} patients, {f['slices']} slices: {shown}")
    return "\n".join(lines)
