"""DICOM series with per-slice PNG ground truth, as CHAOS ships them.

Layout (CHAOS MR, defaults: T1-DUAL in-phase)::

    ROOT/<patient>/T1DUAL/DICOM_anon/InPhase/IMG-0004-00002.dcm ...   one series folder per scan
    ROOT/<patient>/T1DUAL/DICOM_anon/OutPhase/...
    ROOT/<patient>/T1DUAL/Ground/IMG-0004-00002.png ...               one grey PNG per slice
    ROOT/<patient>/T2SPIR/DICOM_anon/*.dcm, ROOT/<patient>/T2SPIR/Ground/*.png

``patients`` (a glob of folders under the root) are the fold groups; in each, ``series`` (a glob
relative to the patient folder) names the series folders, each one scan; ``ground`` the folder of
its mask PNGs (``{series}`` stands for the series folder's name). Slices are sorted by
InstanceNumber (by position along the slice normal, ImagePositionPatient, when numbers are
missing or repeated). A series whose InstanceNumbers skip a step, or whose positions jump by more
than 1.5 slice spacings, is an error naming the folder: a missing slice would silently shift the
ground truth and the 2.5D neighbours.

Masks pair with slices by file name (``IMG-0004-00002.dcm`` <-> ``IMG-0004-00002.png``, ``ground_match:
name``), or by order (the i-th PNG in natural name order with the i-th slice in series order,
``order``); ``auto`` (default) takes names when every slice has a same-named PNG. Grey levels map to
classes by ``label_values``; the default is CHAOS MR's ``{63: classes[0], 126: classes[1], 189:
classes[2], 252: classes[3]}`` (liver, right kidney, left kidney, spleen). Pixel values go through
the modality LUT (RescaleSlope / RescaleIntercept: Hounsfield units for CT).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from trainables.data._base import DataAdapter, FormatOptions, ScanSource, ScanVolume, natural_key, unique_scan_names

__all__ = ["DicomAdapter", "DicomOptions", "read_dicom_series", "read_mask_png"]


class DicomOptions(FormatOptions):
    """Options of ``data.format: dicom``: where the DICOM series and PNG masks are (defaults: CHAOS MR
    T1-DUAL in-phase; module docstring: the layout and how masks pair with slices)."""

    patients: str = Field("*", description="glob of the patient folders under data.root")
    series: str = Field(
        "T1DUAL/DICOM_anon/InPhase", description="glob of the series folders in a patient folder (each match is a scan)"
    )
    ground: str = Field(
        "T1DUAL/Ground",
        description="folder of the per-slice PNG masks in a patient folder; {series} = the series folder's name",
    )
    files: str = Field("*.dcm", description="glob of the DICOM files in a series folder")
    ground_match: Literal["auto", "name", "order"] = Field(
        "auto", description="pair masks with slices by file name, by order, or by name when every slice has one"
    )
    grey_tolerance: int = Field(
        0, ge=0, le=127, description="a mask grey level this close to a listed one counts as it (0: exact)"
    )


def read_mask_png(path: Path) -> np.ndarray:
    """Returns a mask image as a 2D integer array; a colour image must be grey (equal channels).

    Raises:
        ValueError: unreadable, or colour with differing channels.
    """
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"{path}: cannot read it as an image")
    if raw.ndim == 3:
        colour = raw[..., :3]
        if not (np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2])):
            raise ValueError(f"{path}: a colour mask; expected grey levels (one per class)")
        raw = colour[..., 0]
    return raw


def _slice_position(ds) -> float | None:
    ipp, iop = getattr(ds, "ImagePositionPatient", None), getattr(ds, "ImageOrientationPatient", None)
    if ipp is None or iop is None or len(ipp) != 3 or len(iop) != 6:
        return None
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    return float(np.dot(normal, np.asarray(ipp, float)))


def read_dicom_series(
    folder: Path, files: list[Path]
) -> tuple[np.ndarray, tuple[float, float, float], list[int], list[Path]]:
    """Returns ``(volume (S, H, W) float32 after the modality LUT, (slice, row, column) spacing mm,
    instance numbers, files)`` of one series, slices in series order.

    Raises:
        ValueError: an unreadable file, slices of different sizes or spacings, a duplicated
            InstanceNumber without positions, or a missing slice (a gap), each naming the file or folder.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut

    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(str(path))
            pixels = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
        except Exception as err:  # pydicom raises many types for a bad file
            raise ValueError(f"{path}: cannot read it as a DICOM image ({err})") from None
        if pixels.ndim != 2:
            raise ValueError(f"{path}: expected a single-frame grey image, got pixel array {pixels.shape}")
        number = getattr(ds, "InstanceNumber", None)
        spacing = getattr(ds, "PixelSpacing", None)
        slices.append(
            {
                "path": path,
                "pixels": pixels,
                "number": None if number is None else int(number),
                "position": _slice_position(ds),
                "spacing": (float(spacing[0]), float(spacing[1])) if spacing is not None else (1.0, 1.0),
                "thickness": float(
                    getattr(ds, "SpacingBetweenSlices", None) or getattr(ds, "SliceThickness", None) or "nan"
                ),
            }
        )
    numbers = [s["number"] for s in slices]
    positions = [s["position"] for s in slices]
    by_number = None not in numbers and len(set(numbers)) == len(numbers)
    if by_number:
        slices.sort(key=lambda s: s["number"])
    elif None not in positions:
        slices.sort(key=lambda s: s["position"])
    else:
        raise ValueError(f"{folder}: slices lack unique InstanceNumbers and ImagePositionPatient; cannot order them")
    shapes = {s["pixels"].shape for s in slices}
    if len(shapes) > 1:
        odd = next(s["path"] for s in slices if s["pixels"].shape != slices[0]["pixels"].shape)
        raise ValueError(f"{odd}: slice size {shapes} differs within the series {folder}; expected one size")
    if by_number and len(slices) > 2:
        steps = np.diff([s["number"] for s in slices])
        step = int(np.min(steps))  # interleaved series (CHAOS in/out phase) step by 2
        gaps = [(slices[i]["number"], slices[i + 1]["number"]) for i in np.flatnonzero(steps != step)]
        if gaps:
            a, b = gaps[0]
            raise ValueError(
                f"{folder}: missing slice(s): InstanceNumber jumps from {a} to {b} (step {step}) "
                f"after {slices[int(np.flatnonzero(steps != step)[0])]['path'].name}; "
                "expected a complete series"
            )
    ordered = [s["position"] for s in slices]
    slice_spacing = slices[0]["thickness"]
    if None not in ordered and len(slices) > 1:
        diffs = np.abs(np.diff(ordered))
        median = float(np.median(diffs))
        if median > 0:
            slice_spacing = median
            jump = np.flatnonzero(diffs > 1.5 * median)
            if jump.size:
                i = int(jump[0])
                raise ValueError(
                    f"{folder}: missing slice(s): position jumps {diffs[i]:.2f} mm (spacing "
                    f"{median:.2f} mm) between {slices[i]['path'].name} and {slices[i + 1]['path'].name}"
                )
    volume = np.stack([s["pixels"] for s in slices])
    row, col = slices[0]["spacing"]
    return (
        volume,
        (slice_spacing, row, col),
        [s["number"] if s["number"] is not None else i + 1 for i, s in enumerate(slices)],
        [s["path"] for s in slices],
    )


class DicomAdapter(DataAdapter):
    """A DICOM series folder per scan with one grey PNG mask per slice (CHAOS)."""

    name = "dicom"
    Options = DicomOptions
    default_label_step = 63

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_tolerance = int(self.options.grey_tolerance)

    def discover(self) -> list[ScanSource]:
        self.check_root()
        opts: DicomOptions = self.options
        patient_dirs = sorted(
            (p for p in self.root.glob(opts.patients) if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: natural_key(p.relative_to(self.root).as_posix()),
        )
        rows = []
        for patient_dir in patient_dirs:
            series_dirs = sorted(
                (s for s in patient_dir.glob(opts.series) if s.is_dir()), key=lambda p: natural_key(p.as_posix())
            )
            patient = patient_dir.relative_to(self.root).as_posix()
            for day, series_dir in enumerate(series_dirs):
                files = sorted(series_dir.glob(opts.files), key=lambda p: natural_key(p.name))
                if not files:
                    raise FileNotFoundError(f"{series_dir}: no DICOM file matches files={opts.files!r}")
                ground = patient_dir / opts.ground.format(series=series_dir.name)
                if not ground.is_dir():
                    raise FileNotFoundError(
                        f"{series_dir}: its ground-truth folder {ground} (ground={opts.ground!r}) not found"
                    )
                pngs = sorted(
                    (p for p in ground.iterdir() if p.suffix.lower() == ".png"), key=lambda p: natural_key(p.name)
                )
                if not pngs:
                    raise FileNotFoundError(f"{ground}: no PNG mask found; expected one per slice of {series_dir}")
                rows.append((patient, day, series_dir, files, ground, pngs))
        if not rows:
            raise FileNotFoundError(
                f"no series folder under {self.root} matches patients={opts.patients!r} / "
                f"series={opts.series!r}; set data.dicom.patients and data.dicom.series"
            )
        names = unique_scan_names(
            [
                (
                    p if len([r for r in rows if r[0] == p]) == 1 else f"{p}_{s.name}",
                    f"{p}_{s.relative_to(self.root / p).as_posix()}",
                )
                for p, _, s, *_ in rows
            ]
        )
        return [
            ScanSource(
                scan=name, patient=patient, files=(*files, *pngs), day=day, payload=(series_dir, files, ground, pngs)
            )
            for (patient, day, series_dir, files, ground, pngs), name in zip(rows, names, strict=True)
        ]

    def _pair(self, series_dir: Path, ordered: list[Path], ground: Path, pngs: list[Path]) -> list[Path]:
        by_stem = {p.stem: p for p in pngs}
        named = [by_stem.get(f.stem) for f in ordered]
        mode = self.options.ground_match
        if mode == "name" or (mode == "auto" and None not in named):
            if None in named:
                missing = ordered[named.index(None)]
                raise FileNotFoundError(f"{missing}: no mask {ground / (missing.stem + '.png')} (ground_match: name)")
            return named  # type: ignore[return-value]
        if len(pngs) != len(ordered):
            raise ValueError(
                f"{ground}: {len(pngs)} mask PNGs for the {len(ordered)} slices of {series_dir}; "
                "expected one per slice (paired in order)"
            )
        return pngs

    def load(self, source: ScanSource) -> ScanVolume:
        series_dir, files, ground, pngs = source.payload
        volume, spacing, numbers, ordered = read_dicom_series(series_dir, files)
        masks = self._pair(series_dir, ordered, ground, pngs)
        labels = np.empty(volume.shape, np.int32)
        for s, path in enumerate(masks):
            mask = read_mask_png(path)
            if mask.shape != volume.shape[1:]:
                raise ValueError(
                    f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} (width x height) but its slice "
                    f"{ordered[s]} is {volume.shape[2]}x{volume.shape[1]}; expected the same size"
                )
            labels[s] = mask
        return ScanVolume(
            image=volume,
            labels=labels,
            spacing=spacing,
            slice_numbers=numbers,
            label_files=tuple(masks),
            image_files=tuple(ordered),
        )
