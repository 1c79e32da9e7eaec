"""What every data adapter shares: the scan it lists, the volume it loads, the base class, label maps.

An adapter turns one on-disk format into scans. :meth:`DataAdapter.discover` lists them cheaply
(file names only, so a missing or unmatched file is reported before any pixel is read);
:meth:`DataAdapter.load` reads one as raw intensities plus a label map (or ready per-class masks).
Everything after that -- class masks, intensity normalisation, resampling, resizing, folds, the
index -- is format-independent and lives in :mod:`trainables.data.cache`.
"""

from __future__ import annotations

import hashlib
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "BACKGROUND",
    "LABEL_MODES",
    "LabelMode",
    "DataAdapter",
    "FormatOptions",
    "ScanSource",
    "ScanVolume",
    "class_masks",
    "default_label_values",
    "natural_key",
    "normalise_label_values",
]

BACKGROUND = "background"
LabelMode = Literal["multilabel", "multiclass"]
LABEL_MODES = ("multilabel", "multiclass")


def natural_key(text: str) -> list[Any]:
    """Returns a sort key that orders embedded numbers numerically (``case2`` before ``case10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def safe_name(text: str) -> str:
    """Returns ``text`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_`` (a file name)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "scan"


def glob_capture(pattern: str) -> re.Pattern[str]:
    """Returns a regex for the file-name glob ``pattern`` whose group 1 is what its first ``*`` matched."""
    out, i, stars = [], 0, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append("(.*?)" if stars == 0 else ".*")
            stars += 1
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("^" + "".join(out) + "$")


def strip_suffixes(name: str, suffixes: Sequence[str]) -> str:
    """Returns ``name`` without the first of ``suffixes`` it ends with (case-insensitive)."""
    lower = name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix):
            return name[: len(name) - len(suffix)]
    return name


def glob_files(root: Path, pattern: str) -> list[Path]:
    """Returns the files under ``root`` matching the relative glob ``pattern``, in natural order."""
    if Path(pattern).is_absolute():
        raise ValueError(f"{pattern!r}: give a glob relative to the data root {root}, not an absolute path")
    found = [p for p in root.glob(pattern) if p.is_file() and not p.name.startswith(".")]
    return sorted(found, key=lambda p: natural_key(p.relative_to(root).as_posix()))


def patient_from_pattern(regex: str, relative: str, what: str) -> str:
    """Returns the patient id that ``regex`` (group ``patient`` or group 1) finds in ``relative``."""
    match = re.search(regex, relative)
    if match is None:
        raise ValueError(
            f"{what}: patient_pattern {regex!r} does not match {relative!r}; "
            "expected a regex whose group 1 (or group 'patient') is the patient id"
        )
    groups = match.groupdict()
    value = groups.get("patient") or (match.group(1) if match.re.groups else match.group(0))
    if not value:
        raise ValueError(f"{what}: patient_pattern {regex!r} matched an empty patient id in {relative!r}")
    return value


def unique_scan_names(candidates: Sequence[Sequence[str]]) -> list[str]:
    """Returns one name per scan: the first naming rule (column of ``candidates``) giving unique names."""
    for rule in zip(*candidates, strict=True):
        names = [safe_name(n) for n in rule]
        if len(set(names)) == len(names):
            return names
    return [safe_name(f"{i:05d}_{c[-1]}") for i, c in enumerate(candidates)]


@dataclass(frozen=True)
class ScanSource:
    """One scan an adapter found, from file names alone.

    ``scan`` is unique and file-name safe; ``patient`` groups scans for the folds; ``day`` numbers
    the scans of one patient (0 when a format has no such notion); ``files`` are every file the scan
    is read from (for the data hash and error messages); ``payload`` is the adapter's own; ``case``
    the patient's number where the format has one (UW-Madison ``caseN``), else the patient's rank.
    """

    scan: str
    patient: str
    files: tuple[Path, ...]
    day: int = 0
    payload: Any = None
    case: int | None = None


@dataclass
class ScanVolume:
    """One scan as read from disk, before any normalisation or resizing.

    Exactly one of ``labels`` (an integer label map (S, H, W): label values or grey levels, mapped to
    classes with ``label_values``) and ``masks`` (ready 0/1 per-class masks (S, C, H, W), multi-label,
    channels in the requested class order) is set.

    Args:
        image: (S, H, W) raw intensities (any numeric dtype; CT in Hounsfield units).
        spacing: ``(slice, row, column)`` spacing in mm; slice spacing NaN when unknown.
        slice_numbers: the source's number of each slice (DICOM InstanceNumber, 1-based index, ...).
        label_files: the label file of each slice (length S), or one file for the whole volume;
            named in errors about label values.
        image_files: the same for the image (length S or 1).
    """

    image: np.ndarray
    spacing: tuple[float, float, float]
    slice_numbers: list[int]
    label_files: tuple[Path, ...]
    image_files: tuple[Path, ...]
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    slice_ids: list[str] | None = None


def normalise_label_values(
    label_values: Mapping[Any, Any] | None, classes: Sequence[str], label_mode: str, default: Mapping[int, Any]
) -> dict[int, tuple[str, ...]]:
    """Returns ``{label value: classes it belongs to}`` checked against ``classes``.

    A value may name one class or a list (multi-label regions, e.g. BraTS's tumour core = {1, 4});
    several values may name one class; a value named ``background`` is read as background. Value 0
    is always background.

    Raises:
        ValueError: a class not in ``classes``, a non-integer value, a value with several classes
            under ``multiclass`` (classes would overlap), or a class no value produces.
    """
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    raw = dict(default if label_values is None else label_values)
    known = set(classes)
    out: dict[int, tuple[str, ...]] = {}
    for value, names in raw.items():
        try:
            key = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"label_values: key {value!r} is not an integer label value or grey level") from None
        names = (names,) if isinstance(names, str) else tuple(names)
        unknown = [n for n in names if n not in known and n != BACKGROUND]
        if unknown:
            raise ValueError(
                f"label_values: value {key} names {unknown}, not in classes {list(classes)}; "
                "add them to classes or map the value to one of them (or to 'background')"
            )
        names = tuple(n for n in names if n != BACKGROUND)
        if label_mode == "multiclass" and len(names) > 1:
            raise ValueError(
                f"label_values: value {key} belongs to {list(names)}, but multiclass classes "
                "cannot overlap; use label_mode multilabel for overlapping regions"
            )
        if key == 0 and names:
            raise ValueError("label_values: value 0 is background; map foreground classes to other values")
        out[key] = names
    produced = {n for names in out.values() for n in names}
    missing = [c for c in classes if c not in produced]
    if missing:
        raise ValueError(
            f"label_values: no label value maps to class(es) {missing}; "
            f"give each class of {list(classes)} at least one value"
        )
    return out


def default_label_values(classes: Sequence[str], step: int = 1) -> dict[int, str]:
    """Returns ``{step * (i + 1): classes[i]}``: label values 1, 2, 3 (step 1) or CHAOS grey levels 63, 126, ... (63)."""
    return {step * (i + 1): c for i, c in enumerate(classes)}


def class_masks(
    labels: np.ndarray,
    value_classes: Mapping[int, tuple[str, ...]],
    classes: Sequence[str],
    label_mode: str,
    label_files: Sequence[Path],
    tolerance: int = 0,
) -> np.ndarray:
    """Returns 0/1 masks (S, C, H, W) uint8 from a label map (S, H, W).

    ``multilabel``: one channel per class, a pixel in every class its value belongs to.
    ``multiclass``: channel 0 background, then one per class, exactly one channel set per pixel.
    A pixel value within ``tolerance`` of a listed value counts as that value (grey PNGs).

    Raises:
        ValueError: a non-zero value not in ``value_classes`` (naming the label file of the first
            slice holding it, and the values found), or a non-integer label value.
    """
    values = np.unique(labels)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.allclose(values, np.round(values), atol=1e-3):
            bad = values[~np.isclose(values, np.round(values), atol=1e-3)][:5].tolist()
            raise ValueError(
                f"{label_files[0]}: label values {bad} are not integers; expected a label map "
                "of integer values (is this an image rather than a label volume?)"
            )
        labels = np.round(labels).astype(np.int64)
        values = np.unique(labels)
    listed = np.array(sorted(value_classes), dtype=np.int64)
    resolved: dict[int, int] = {}
    unknown = []
    for v in values.tolist():
        if v == 0:
            continue
        near = listed[np.abs(listed - v) <= tolerance] if listed.size else listed
        if near.size == 0:
            unknown.append(v)
        else:
            resolved[v] = int(near[np.argmin(np.abs(near - v))])
    if unknown:
        first = int(np.flatnonzero(np.isin(labels.reshape(len(labels), -1), unknown).any(axis=1))[0])
        where = label_files[first] if len(label_files) == len(labels) else label_files[0]
        slice_note = "" if len(label_files) == len(labels) else f" (slice {first})"
        raise ValueError(
            f"{where}{slice_note}: label value(s) {unknown[:10]} not in label_values "
            f"{ {k: list(v) for k, v in value_classes.items()} }; add them to label_values (map a value to "
            "'background' to ignore it)"
            + (f" or raise the grey tolerance (now {tolerance})" if tolerance or labels.max() > 16 else "")
        )
    offset = 1 if label_mode == "multiclass" else 0
    masks = np.zeros((labels.shape[0], len(classes) + offset, *labels.shape[1:]), np.uint8)
    index = {c: i + offset for i, c in enumerate(classes)}
    for value, listed_value in resolved.items():
        hit = labels == value
        for name in value_classes[listed_value]:
            masks[:, index[name]] |= hit
    if label_mode == "multiclass":
        masks[:, 0] = masks[:, 1:].max(axis=1) == 0
    return masks


def files_digest(root: Path, files: Iterable[Path]) -> str:
    """Returns a hash of each file's path relative to ``root``, size and modification time."""
    entries = []
    for path in files:
        st = os.stat(path)
        rel = os.path.relpath(path, root)
        entries.append(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(set(entries))).encode()).hexdigest()


class FormatOptions(BaseModel):
    """The options of one data format, as a spec sets them under ``data.<format>`` (unknown keys are an
    error). Each adapter declares its own subclass, once: the fields with their defaults, ranges and a
    ``description`` a user reads; the sweep spec takes the ``data.<format>`` section from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataAdapter(ABC):
    """One on-disk format: lists scans (:meth:`discover`) and reads one (:meth:`load`).

    Subclasses set ``name``, ``Options`` (a :class:`FormatOptions` model of the format's options
    with their defaults: what a spec sets under ``data.<format>``) and implement the two methods.
    Optional hooks: :meth:`preflight` (the problems a spec would meet, found before anything is
    prepared; default: list the scans and count the patients), :meth:`before_digest` (runs first;
    the synthetic adapter generates its data here) and :meth:`digest` (a hash of the source files;
    default: path, size and mtime of every file listed by :meth:`discover`).

    Args:
        root: the data set folder as it comes from its source.
        options: the format's options (unknown keys are an error).
        classes: foreground class names in channel order.
        label_values: label value / grey level -> class name(s); ``None``: the format's default.
        label_mode: ``multilabel`` (sigmoid, overlapping classes) or ``multiclass`` (softmax,
            channel 0 background).
    """

    name: ClassVar[str]
    Options: ClassVar[type[FormatOptions]]
    #: the adapter writes its data set itself, so ``data.root`` may be left out (default: the sweep's data folder)
    generates_data: ClassVar[bool] = False
    #: the step of the default label values: 1 for label maps 1, 2, 3; 63 for CHAOS grey levels
    default_label_step: ClassVar[int] = 1
    #: grey levels may be off by this much and still match a listed value
    label_tolerance: int = 0

    def __init__(
        self,
        root: str | Path,
        options: Mapping[str, Any] | None = None,
        *,
        classes: Sequence[str],
        label_values: Mapping[Any, Any] | None = None,
        label_mode: str = "multilabel",
    ):
        self.root = Path(root).expanduser().resolve()
        self.classes = tuple(classes)
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be unique names, got {list(classes)}")
        if BACKGROUND in self.classes:
            raise ValueError(
                "classes lists the foreground classes; 'background' is added as channel 0 "
                "under multiclass, leave it out"
            )
        self.label_mode = label_mode
        self.options = self.parse_options(options or {})
        self.value_classes = self.label_map(label_values)

    @classmethod
    def parse_options(cls, options: Mapping[str, Any] | FormatOptions) -> FormatOptions:
        """Returns ``Options`` built from ``options``.

        Raises:
            ValueError: unknown keys (listing the known ones), or a value out of its range (naming
                the option as ``data.<format>.<option>``).
        """
        if isinstance(options, cls.Options):
            return options
        known = sorted(cls.Options.model_fields)
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"data.{cls.name}: unknown option(s) {unknown}; known: {known}")
        try:
            return cls.Options.model_validate(dict(options))
        except ValidationError as err:
            raise ValueError(
                "; ".join(
                    f"data.{cls.name}.{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                    for e in err.errors()
                )
            ) from None

    def label_map(self, label_values: Mapping[Any, Any] | None) -> dict[int, tuple[str, ...]]:
        """Returns the checked ``{value: classes}`` map (see :func:`normalise_label_values`)."""
        return normalise_label_values(
            label_values, self.classes, self.label_mode, default_label_values(self.classes, self.default_label_step)
        )

    def check_root(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"data root {self.root} not found; expected the {self.name} data set folder")

    def preflight(self, folds: int, *, fixed_split: bool = False) -> list[str]:
        """Returns the problems a sweep of ``folds`` folds would meet with this data set, each naming the
        spec field and the fix (empty: none), from file names alone: nothing is decoded or written.

        Default: :meth:`discover` the scans and count their patients, which must be at least
        ``folds`` unless a split file (``fixed_split``) assigns the validation patients.
        """
        try:
            sources = self.discover()
        except (OSError, ValueError, KeyError) as err:
            return [f"data.root: {err}"]
        patients = len({s.patient for s in sources})
        if not fixed_split and patients < folds:
            return [
                f"data.folds: {folds} folds but only {patients} patients under {self.root}; "
                f"use at most {patients} folds"
            ]
        return []

    def before_digest(self) -> None:  # noqa: B027 -- an optional hook, not an abstract method
        """Runs before anything is hashed or listed (default: nothing)."""

    def digest(self) -> str:
        """Returns a hash of the source files (path, size, modification time)."""
        return files_digest(self.root, (f for s in self.discover() for f in s.files))

    @abstractmethod
    def discover(self) -> list[ScanSource]:
        """Returns every scan, sorted, from file names alone; raises naming any file that does not pair."""

    @abstractmethod
    def load(self, source: ScanSource) -> ScanVolume:
        """Returns one scan read from disk; raises naming the file on any inconsistency."""
