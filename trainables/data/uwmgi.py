"""Reader for the on-disk format of the UW-Madison GI tract image segmentation data set (Kaggle 2022).

Layout (the real data set and :func:`trainables.data.synthetic.generate_uwmgi` both follow it)::

    ROOT/train.csv                      columns id,class,segmentation; one row per (slice, class)
    ROOT/train/caseN/caseN_dayM/scans/slice_XXXX_W_H_PW_PH.png

``id`` is ``caseN_dayM_slice_XXXX`` (XXXX four digits), ``class`` one of :data:`GI_CLASSES`,
``segmentation`` an RLE (see :mod:`trainables.data.rle`) or empty. The PNG is 16-bit grey; in its name
W, H are width and height in pixels and PW, PH the pixel spacing in mm along width and height.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainables.contract import GI_CLASSES
from trainables.data._base import DataAdapter, FormatOptions, ScanSource, ScanVolume
from trainables.data.rle import rle_decode

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["GI_CLASSES", "SliceRecord", "UwmgiAdapter", "read_uwmgi", "png_size", "uwmgi_digest"]


_ID_RE = re.compile(r"^case(\d+)_day(\d+)_slice_(\d{4})$")
_PNG_RE = re.compile(r"^slice_(\d{4})_(\d+)_(\d+)_(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)\.png$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class SliceRecord:
    """One axial slice: where its PNG is, its size and spacing, and one RLE per class.

    ``height``/``width`` are in pixels (read from the PNG header); ``spacing`` is
    ``(row spacing, column spacing)`` in mm, i.e. ``(PH, PW)`` from the file name, in the same
    (height, width) order as the array axes. ``rles`` maps every requested class to its RLE
    (``""`` when the organ is absent).
    """

    case: int
    day: int
    slice_number: int
    path: Path
    height: int
    width: int
    spacing: tuple[float, float]
    rles: dict[str, str]

    @property
    def scan(self) -> str:
        """Return the scan name ``caseN_dayM``."""
        return f"case{self.case}_day{self.day}"

    @property
    def id(self) -> str:
        """Return the Kaggle id ``caseN_dayM_slice_XXXX``."""
        return f"{self.scan}_slice_{self.slice_number:04d}"


def png_size(path: str | Path) -> tuple[int, int]:
    """Return ``(height, width)`` read from the IHDR chunk of a PNG file without decoding it.

    Raises:
        ValueError: the file is not a PNG.
    """
    with open(path, "rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError(
            f"{path}: not a PNG file (expected a 16-bit grey PNG); replace it with the data set's "
            "original file (re-download or re-extract it)"
        )
    width, height = struct.unpack(">II", head[16:24])
    return int(height), int(width)


def _read_csv(csv_path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"{csv_path} is empty; expected the header id,class,segmentation and one row per "
            "(slice, class): restore the data set's train.csv"
        ) from None
    missing = {"id", "class", "segmentation"} - set(frame.columns)
    if missing:
        raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)}; expected columns id,class,segmentation")
    return frame


def _scan_pngs(scans_dir: Path) -> dict[int, str]:
    """Return slice number -> PNG file name for one scans/ folder."""
    found: dict[int, str] = {}
    for name in os.listdir(scans_dir):
        match = _PNG_RE.match(name)
        if match is None:
            continue
        number = int(match.group(1))
        if number in found:
            raise ValueError(f"{scans_dir}: two PNGs for slice {number:04d} ({found[number]}, {name}); expected one")
        found[number] = name
    return found


def read_uwmgi(root: str | Path, classes: Sequence[str] = GI_CLASSES) -> list[SliceRecord]:
    """Return one :class:`SliceRecord` per slice listed in ``ROOT/train.csv``, sorted by (case, day, slice).

    The image size comes from the PNG header and must match the W, H in the file name; the pixel
    spacing comes from the file name. Classes of :data:`GI_CLASSES` not in ``classes`` are dropped;
    a (slice, class) pair without a CSV row counts as empty.

    Args:
        root: folder holding ``train.csv`` and ``train/``.
        classes: organ classes to keep, a subset of :data:`GI_CLASSES` or extra names the CSV uses.

    Raises:
        FileNotFoundError: ``train.csv``, ``train/``, a scan folder or a slice PNG is missing.
        ValueError: a malformed id, an unknown class, a duplicated (id, class) row, a PNG whose
            size disagrees with its name, or a PNG that is not a PNG.
    """
    root = Path(root)
    classes = tuple(classes)
    if not classes:
        raise ValueError("classes must name at least one organ class")
    csv_path = root / "train.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"{csv_path} not found: expected the UW-Madison GI train.csv (columns id,class,segmentation)"
        )
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise FileNotFoundError(
            f"{train_dir} not found: expected a folder train/caseN/caseN_dayM/scans/ with the slice PNGs"
        )

    frame = _read_csv(csv_path)
    known = set(GI_CLASSES) | set(classes)
    unknown = sorted(set(frame["class"]) - known)
    if unknown:
        raise ValueError(
            f"{csv_path}: unknown class(es) {unknown}; expected one of {sorted(known)}: fix the class "
            "column, or list the class in data.classes"
        )

    rles: dict[str, dict[str, str]] = {}
    keys: dict[str, tuple[int, int, int]] = {}
    for line, (sid, cls, seg) in enumerate(
        zip(frame["id"], frame["class"], frame["segmentation"], strict=True), start=2
    ):
        match = _ID_RE.match(sid)
        if match is None:
            raise ValueError(
                f"{csv_path}, line {line}: malformed id {sid!r}; expected caseN_dayM_slice_XXXX (XXXX four digits)"
            )
        if sid not in rles:
            keys[sid] = (int(match.group(1)), int(match.group(2)), int(match.group(3)))
            rles[sid] = {}
        if cls in rles[sid]:
            raise ValueError(
                f"{csv_path}, line {line}: duplicated row for id {sid!r}, class {cls!r}; keep one row per (id, class)"
            )
        rles[sid][cls] = seg.strip()

    pngs_by_scan: dict[tuple[int, int], tuple[Path, dict[int, str]]] = {}
    records: list[SliceRecord] = []
    for sid in sorted(rles, key=keys.__getitem__):
        case, day, number = keys[sid]
        if (case, day) not in pngs_by_scan:
            scans_dir = train_dir / f"case{case}" / f"case{case}_day{day}" / "scans"
            if not scans_dir.is_dir():
                raise FileNotFoundError(
                    f"{scans_dir} not found: {csv_path} lists {sid!r}; expected its PNG at "
                    f"{scans_dir}/slice_{number:04d}_W_H_PW_PH.png"
                )
            pngs_by_scan[case, day] = (scans_dir, _scan_pngs(scans_dir))
        scans_dir, pngs = pngs_by_scan[case, day]
        name = pngs.get(number)
        if name is None:
            raise FileNotFoundError(
                f"no PNG for {sid!r} listed in {csv_path}: expected "
                f"{scans_dir}/slice_{number:04d}_W_H_PW_PH.png; restore the PNG, or delete the id's rows "
                "from train.csv"
            )
        path = scans_dir / name
        match = _PNG_RE.match(name)
        assert match is not None
        name_w, name_h = int(match.group(2)), int(match.group(3))
        spacing_w, spacing_h = float(match.group(4)), float(match.group(5))
        height, width = png_size(path)
        if (height, width) != (name_h, name_w):
            raise ValueError(
                f"{path}: the PNG is {width}x{height} (width x height) but its name says "
                f"{name_w}x{name_h}; expected slice_XXXX_W_H_PW_PH.png with the PNG's own size"
            )
        records.append(
            SliceRecord(
                case=case,
                day=day,
                slice_number=number,
                path=path,
                height=height,
                width=width,
                spacing=(spacing_h, spacing_w),
                rles={cls: rles[sid].get(cls, "") for cls in classes},
            )
        )
    return records


def uwmgi_digest(root: str | Path) -> str:
    """Returns a hash of train.csv's bytes and of every file under train/ (relative path, size, mtime)."""
    root = Path(root)
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


class UwmgiOptions(FormatOptions):
    """``data.format: uwmgi`` has no options: the layout is fixed (module docstring)."""


class UwmgiAdapter(DataAdapter):
    """The UW-Madison GI format: one scan per case-day, RLE masks per organ (multi-label only).

    Args:
        reader: the function listing the slices (default :func:`read_uwmgi`; the cache passes its own
            reference so tests can watch when the data are read).
        others: as :class:`~trainables.data._base.DataAdapter`.
    """

    name = "uwmgi"
    Options = UwmgiOptions

    def __init__(
        self,
        root,
        options=None,
        *,
        classes=GI_CLASSES,
        label_values=None,
        label_mode: str = "multilabel",
        reader: Callable[..., list[SliceRecord]] | None = None,
    ):
        self.reader = reader or read_uwmgi
        super().__init__(root, options, classes=classes, label_values=label_values, label_mode=label_mode)

    def label_map(self, label_values) -> dict[int, tuple[str, ...]]:
        if self.label_mode != "multilabel":
            raise ValueError("format uwmgi: the GI organ masks overlap; use label_mode multilabel")
        if label_values is not None:
            raise ValueError("format uwmgi: masks are RLEs per class name; label_values does not apply")
        return {}

    def check_root(self) -> None:
        if not (self.root / "train.csv").is_file() or not (self.root / "train").is_dir():
            self.reader(self.root, self.classes)  # raises the explanatory error

    def preflight(self, folds: int, *, fixed_split: bool = False) -> list[str]:
        """Returns the problems of the folder layout and the fold count; reads folder names only (not
        ``train.csv``: its rows are checked when the cache is prepared)."""
        if not (self.root / "train.csv").is_file():
            return [
                f"data.root: {self.root} has no train.csv; point it at the UW-Madison GI folder "
                "(the one holding train.csv and train/)"
            ]
        if not (self.root / "train").is_dir():
            return [f"data.root: {self.root} has no train/ folder of case PNGs"]
        cases = sum(1 for p in (self.root / "train").iterdir() if p.is_dir() and p.name.startswith("case"))
        if cases < folds:
            return [
                f"data.folds: {folds} folds but only {cases} patients under {self.root}/train; "
                f"use at most {cases} folds"
            ]
        return []

    def digest(self) -> str:
        self.check_root()
        return uwmgi_digest(self.root)

    def discover(self) -> list[ScanSource]:
        self.check_root()
        records = self.reader(self.root, self.classes)
        if not records:
            raise ValueError(
                f"{self.root / 'train.csv'} lists no slices; expected at least one row per "
                "(slice, class): point data.root at the full data set"
            )
        scans: dict[str, list[SliceRecord]] = {}
        for rec in records:  # sorted by (case, day, slice_number)
            scans.setdefault(rec.scan, []).append(rec)
        for scan, recs in scans.items():
            if len(recs) < 2:  # a UW-Madison GI scan has 80 to 144 slices: the rest went missing
                raise ValueError(
                    f"{self.root / 'train.csv'}: scan {scan} has only one slice ({recs[0].path}); "
                    "a scan is a stack of slices: restore its other slices (rows and PNGs), or "
                    "delete the scan's rows"
                )
            numbers = [r.slice_number for r in recs]
            gap = next((i for i in range(1, len(numbers)) if numbers[i] != numbers[i - 1] + 1), None)
            if gap is not None:  # 2.5D context would take non-adjacent slices as neighbours (as dicom.py refuses)
                raise ValueError(
                    f"{self.root / 'train.csv'}: scan {scan} has missing slice(s): slice numbers jump from "
                    f"{numbers[gap - 1]:04d} to {numbers[gap]:04d} ({recs[gap - 1].path.name} -> {recs[gap].path.name}); "
                    "a scan's slices must be consecutive: restore the missing slices (rows and PNGs), or delete the "
                    "scan's rows"
                )
        return [
            ScanSource(
                scan=scan,
                patient=f"case{recs[0].case}",
                files=tuple(r.path for r in recs),
                day=recs[0].day,
                payload=recs,
                case=recs[0].case,
            )
            for scan, recs in scans.items()
        ]

    def load(self, source: ScanSource) -> ScanVolume:
        import cv2

        records: list[SliceRecord] = source.payload
        first = records[0]
        n, h, w = len(records), first.height, first.width
        image = np.empty((n, h, w), np.float32)
        masks = np.zeros((n, len(self.classes), h, w), np.uint8)
        for s, rec in enumerate(records):
            if (rec.height, rec.width) != (h, w):
                raise ValueError(
                    f"{rec.path}: {rec.width}x{rec.height} differs from the scan's first slice "
                    f"{first.path} ({w}x{h}); expected one size per scan: replace it with the "
                    "scan's own slice"
                )
            raw = cv2.imread(str(rec.path), cv2.IMREAD_UNCHANGED)
            if raw is None or raw.ndim != 2:
                raise ValueError(
                    f"{rec.path}: cannot read it as a single-channel (grey) PNG; replace it with the "
                    "data set's original file (re-download or re-extract it)"
                )
            image[s] = raw
            for c, cls in enumerate(self.classes):
                try:
                    masks[s, c] = rle_decode(rec.rles[cls], (h, w))
                except (TypeError, ValueError) as err:
                    raise ValueError(
                        f"{self.root / 'train.csv'}: id {rec.id!r}, class {cls!r}: {err} (its PNG "
                        f"{rec.path.name} is {w}x{h}); fix the segmentation to 'start length ...' "
                        "runs inside the image, or leave it empty"
                    ) from None
        return ScanVolume(
            image=image,
            masks=masks,
            spacing=(float("nan"), *first.spacing),
            slice_numbers=[r.slice_number for r in records],
            label_files=(first.path,),
            image_files=tuple(r.path for r in records),
            slice_ids=[r.id for r in records],
        )
