"""Synthetic abdominal MRI in the exact on-disk format of the UW-Madison GI tract data set.

The real data cannot be downloaded on our machines, so tests and the demo run on this stand-in.
It copies what matters to a loss sweep (paper 000, section 2.1): about 57% of slices without any
organ; organ slice prevalence near large bowel 37%, small bowel 29%, stomach 22%; organs on
contiguous runs of slices; a thin winding small bowel, a blob-like stomach, a thick arc of large
bowel; overlapping (multi-label) masks; 16-bit grey images with MRI-like values up to a few thousand.
It also looks like an axial MR slice, so that a network must learn anatomy rather than grey levels
and its predictions read as segmentations: body wall, spine, liver and kidneys around the organs,
grey levels shared between organs and unlabelled tissue, gas in the colon and over the stomach's
fluid, walled small-bowel loops and small loops cut across, bias field, texture and Rician noise.

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from pydantic import Field

from trainables.data._base import FormatOptions
from trainables.data.rle import rle_encode
from trainables.data.uwmgi import GI_CLASSES, UwmgiAdapter

__all__ = ["SyntheticAdapter", "SyntheticOptions", "generate_uwmgi"]

_MARKER = "SYNTHETIC.json"
_FORMAT_VERSION = 2  # 2: anatomy, textures and overlapping grey levels

# Fraction of the scan (0 = first slice) where each organ starts and stops. The union
# [0.30, 0.73] leaves 57% of slices empty; lengths give the prevalences of paper 000.
_ORGAN_RUNS = {
    "large_bowel": (0.30, 0.67),
    "small_bowel": (0.36, 0.65),
    "stomach": (0.51, 0.73),
}
# Mean intensity of each tissue before the scan's gain, drawn per scan from its range. The ranges
# overlap on purpose: a small-bowel loop can be as bright as a kidney or the fat, the colon's
# contents as dark as the liver or the mesentery, so grey level alone does not name an organ; shape,
# texture (gas pockets in the colon, a gas cap over the stomach's fluid, a wall around the small
# bowel's loops), position and the neighbouring slices do.
_TISSUE = {
    "fat": (700.0, 900.0),
    "visceral": (450.0, 600.0),
    "muscle": (200.0, 300.0),
    "bone": (280.0, 380.0),
    "liver": (330.0, 460.0),
    "kidney": (600.0, 820.0),
    "large_bowel": (300.0, 500.0),
    "small_bowel": (650.0, 900.0),
    "stomach": (700.0, 950.0),
    "gas": (20.0, 60.0),
}
# Fraction of the scan where the unlabelled organs that share grey levels with the GI organs appear.
_LIVER_RUN = (0.48, 1.0)
_KIDNEY_RUN = (0.36, 0.66)


def _case_geometry(k: int, image_size: int, rng: np.random.Generator) -> tuple[int, int, float]:
    """Return (height, width, spacing) of case number k: three size patterns so resizing is exercised."""
    pattern = k % 3
    height = image_size + (16 if pattern == 1 else 0)
    width = image_size + (16 if pattern in (1, 2) else 0)
    spacing = float(rng.choice([1.50, 1.63]))
    return height, width, spacing


def _runs(n_slices: int, rng: np.random.Generator) -> dict[str, tuple[int, int]]:
    shift = rng.uniform(-0.05, 0.05)
    runs = {}
    for cls, (lo, hi) in _ORGAN_RUNS.items():
        start = int(round((lo + shift + rng.uniform(-0.03, 0.03)) * n_slices))
        stop = int(round((hi + shift + rng.uniform(-0.03, 0.03)) * n_slices))
        start = min(max(start, 0), n_slices - 1)
        stop = min(max(stop, start + 1), n_slices)
        runs[cls] = (start, stop)
    return runs


def _smooth_field(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Return white noise blurred by a Gaussian of ``sigma`` pixels, rescaled to unit standard deviation."""
    import cv2

    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), max(sigma, 0.3))
    return field / max(float(field.std()), 1e-6)


def _ellipse(mask: np.ndarray, center, axes, angle: float = 0.0) -> np.ndarray:
    import cv2

    c = (int(round(center[0])), int(round(center[1])))
    a = (max(1, int(round(axes[0]))), max(1, int(round(axes[1]))))
    cv2.ellipse(mask, c, a, float(angle), 0, 360, 1, -1)
    return mask


def _draw_stomach(mask: np.ndarray, u: float, size: float, shape_par: np.ndarray) -> None:
    """A lobulated blob under the left diaphragm (right of the image), largest mid-run."""
    import cv2

    h, w = mask.shape
    m = min(h, w)
    cy = h * (0.38 + 0.04 * u)
    cx = w * (0.66 - 0.04 * u)
    r0 = max(2.0, 0.14 * m * size)
    theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radius = r0 * (1 + shape_par[0] * np.sin(2 * theta + shape_par[1]) + shape_par[2] * np.sin(3 * theta + 2 * u))
    pts = np.stack([cx + radius * np.cos(theta), cy + 0.8 * radius * np.sin(theta)], axis=1)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)


def _draw_large_bowel(mask: np.ndarray, u: float, size: float, shape_par: np.ndarray) -> None:
    """A thick tube framing the abdomen (ascending colon, transverse, descending colon) seen as an arc."""
    import cv2

    h, w = mask.shape
    m = min(h, w)
    center = (int(round(w * 0.5)), int(round(h * (0.53 + 0.02 * u))))
    axes = (int(round(w * 0.30)), int(round(h * 0.26)))
    span = 110 + 170 * size
    start = shape_par[0] + 40 * u
    thickness = max(2, int(round(0.08 * m * (0.5 + 0.5 * size))))
    cv2.ellipse(mask, center, axes, float(shape_par[1]), start, start + span, 1, thickness)


def _draw_small_bowel(mask: np.ndarray, u: float, size: float, shape_par: np.ndarray) -> None:
    """Winding loops in the centre of the abdomen plus small round loops cut across (small structures)."""
    import cv2

    h, w = mask.shape
    m = min(h, w)
    s = np.linspace(-1.0, 1.0, 80)
    thickness = max(2, int(round(0.04 * m)))
    for k, (dy, amp) in enumerate(((0.0, 0.09), (0.12, 0.06))):
        if k and size < 0.6:
            continue
        cx, cy = w * (0.48 + 0.03 * k), h * (0.56 + dy)
        x = cx + (0.20 - 0.05 * k) * w * size * s
        phase = shape_par[1] + 3 * u + 2.1 * k
        y = cy + amp * h * np.sin(shape_par[0] * np.pi * s + phase) + 0.05 * h * s * np.cos(2 * np.pi * u)
        pts = np.round(np.stack([x, y], axis=1)).astype(np.int32)
        cv2.polylines(mask, [pts], False, 1, thickness)
    radius = max(1, int(round(0.028 * m)))
    for j in range(int(round(1 + 3 * size))):
        angle = shape_par[2] + 2.4 * j + 1.5 * u
        r = 0.13 + 0.03 * (j % 2)
        cv2.circle(
            mask,
            (int(round(w * (0.47 + r * np.cos(angle)))), int(round(h * (0.58 + 0.8 * r * np.sin(angle))))),
            radius,
            1,
            -1,
        )


_DRAW = {"large_bowel": _draw_large_bowel, "small_bowel": _draw_small_bowel, "stomach": _draw_stomach}


def _in_run(t: int, n: int, run: tuple[float, float]) -> float | None:
    """Return the position in (0, 1) of slice t inside the fractional run, or None outside it."""
    start, stop = run[0] * n, run[1] * n
    return None if not start <= t + 0.5 < stop else (t + 0.5 - start) / (stop - start)


def _scan(n_slices: int, height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Return images (S, H, W) uint16 and per-class masks (S, H, W) uint8 of one scan.

    An axial abdomen: bright subcutaneous fat around a dark muscle wall, the spine and back muscles
    behind, the liver (right of the patient, left of the image) and both kidneys as unlabelled
    organs with grey levels the GI organs share, then the three labelled organs on their runs of
    slices: the colon with gas pockets in its contents, the small bowel as walled loops, the stomach
    with a gas cap over its fluid. A slow bias field, slice-to-slice coherent texture, a little blur
    and Rician noise make it look like an MR slice rather than a drawing.
    """
    import cv2

    runs = _runs(n_slices, rng)
    shape_pars = {
        "stomach": np.array([rng.uniform(0.05, 0.2), rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.15)]),
        "large_bowel": np.array([rng.uniform(120, 200), rng.uniform(-15, 15)]),
        "small_bowel": np.array([rng.uniform(1.5, 3.0), rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)]),
    }
    level = {name: rng.uniform(lo, hi) for name, (lo, hi) in _TISSUE.items()}
    m = min(height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height * rng.uniform(0.48, 0.52), width * rng.uniform(0.48, 0.52)
    ry, rx = height * rng.uniform(0.36, 0.42), width * rng.uniform(0.42, 0.47)
    fat = rng.uniform(0.07, 0.12)  # subcutaneous fat, share of the radius
    lobes = rng.uniform(-0.03, 0.03, 2)
    angle = np.arctan2(yy - cy, xx - cx)
    radial = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) / (
        1 + lobes[0] * np.cos(2 * angle) + lobes[1] * np.sin(3 * angle)
    )
    body = radial <= 1.0
    wall = radial <= 1.0 - fat
    cavity = radial <= 1.0 - fat - 0.05
    bias = 1.0 + 0.12 * ((xx - cx) / rx * rng.uniform(-1, 1) + (yy - cy) / ry * rng.uniform(-1, 1))
    gain = rng.uniform(0.8, 1.6)
    noise_sd = rng.uniform(12.0, 25.0)
    kidney_tilt = rng.uniform(15, 35)

    masks = {cls: np.zeros((n_slices, height, width), np.uint8) for cls in GI_CLASSES}
    images = np.empty((n_slices, height, width), np.uint16)
    texture = _smooth_field((height, width), 0.03 * m, rng)
    mottle = _smooth_field((height, width), 0.015 * m, rng)
    for t in range(n_slices):
        # textures drift slowly from slice to slice, as tissue does between 3 mm slices
        texture = 0.8 * texture + 0.6 * _smooth_field((height, width), 0.03 * m, rng)
        mottle = 0.6 * mottle + 0.8 * _smooth_field((height, width), 0.015 * m, rng)
        image = np.zeros((height, width), np.float32)
        image[body] = level["fat"]
        image[wall] = level["muscle"]
        image[cavity] = level["visceral"]
        image *= 1.0 + 0.06 * texture
        back = np.zeros((height, width), np.uint8)
        spine_c = (cx, cy + 0.66 * ry)
        _ellipse(back, (cx - 0.2 * rx, cy + 0.68 * ry), (0.14 * rx, 0.14 * ry))
        _ellipse(back, (cx + 0.2 * rx, cy + 0.68 * ry), (0.14 * rx, 0.14 * ry))
        image[back > 0] = level["muscle"]
        spine = _ellipse(np.zeros((height, width), np.uint8), spine_c, (0.11 * rx, 0.12 * ry))
        image[spine > 0] = level["bone"] * (1.0 + 0.1 * mottle[spine > 0])
        z_liver = _in_run(t, n_slices, _LIVER_RUN)
        if z_liver is not None:
            liver = _ellipse(
                np.zeros((height, width), np.uint8),
                (cx - 0.42 * rx, cy - 0.05 * ry),
                (0.45 * rx * (0.4 + 0.6 * z_liver), 0.55 * ry * (0.4 + 0.6 * z_liver)),
                -20,
            )
            liver &= cavity
            image[liver > 0] = level["liver"] * (1.0 + 0.04 * texture[liver > 0])
        if _in_run(t, n_slices, _KIDNEY_RUN) is not None:
            for side in (-1, 1):
                kidney = _ellipse(
                    np.zeros((height, width), np.uint8),
                    (cx + side * 0.48 * rx, cy + 0.4 * ry),
                    (0.11 * rx, 0.19 * ry),
                    side * kidney_tilt,
                )
                image[kidney > 0] = level["kidney"] * (1.0 + 0.05 * texture[kidney > 0])
        for cls in GI_CLASSES:
            start, stop = runs[cls]
            if not start <= t < stop:
                continue
            u = (t - start + 0.5) / (stop - start)
            size = 0.35 + 0.65 * np.sin(np.pi * u)  # small at the ends of the run, never empty
            organ = masks[cls][t]
            _DRAW[cls](organ, u, size, shape_pars[cls])
            clipped = organ & cavity
            if clipped.any():  # inside the muscle wall (kept whole on tiny test images)
                organ[:] = clipped
            inside = organ > 0
            image[inside] = level[cls] * (1.0 + 0.08 * texture[inside])
            if cls == "large_bowel":  # gas pockets in the stool
                gas = inside & (mottle > 1.0)
                image[gas] = level["gas"]
            elif cls == "small_bowel":  # a darker wall around the fluid-filled lumen
                core = cv2.erode(organ, np.ones((3, 3), np.uint8)) > 0
                image[inside & ~core] = 0.5 * (level[cls] + level["muscle"])
            else:  # a gas cap over the fluid, at the front (top of the image)
                rows = np.nonzero(inside.any(axis=1))[0]
                cap = rows[0] + max(1, int(0.25 * (rows[-1] - rows[0] + 1)))
                image[inside & (yy < cap)] = level["gas"]
        image = cv2.GaussianBlur(image * bias, (0, 0), 0.6)
        real = image + rng.normal(0.0, noise_sd, image.shape).astype(np.float32)
        imag = rng.normal(0.0, noise_sd, image.shape).astype(np.float32)
        image = np.sqrt(real**2 + imag**2)  # magnitude of complex Gaussian noise: Rician
        images[t] = np.clip(np.round(image * gain), 0, 65535).astype(np.uint16)
    return images, masks


def generate_uwmgi(
    root: str | Path,
    *,
    cases: int = 6,
    days_per_case: int = 1,
    slices_per_scan: int = 24,
    image_size: int = 96,
    seed: int = 0,
) -> Path:
    """Return ``root`` after writing a synthetic data set in the UW-Madison GI on-disk format there.

    Writes ``root/train.csv`` (id,class,segmentation) and
    ``root/train/caseN/caseN_dayM/scans/slice_XXXX_W_H_PW_PH.png`` (16-bit grey). Same arguments,
    same bytes. Case k (0-based) is ``case{1 + 7k}`` (multi-digit ids exercise numeric sorting) and
    is ``image_size`` square, ``image_size + 16`` square, or ``image_size`` high by
    ``image_size + 16`` wide, in turn. Pixel spacing is 1.50 or 1.63 mm.

    A ``SYNTHETIC.json`` marker is written last; if it already records the same arguments the
    call returns at once, which keeps file times (and so prepared caches) valid.

    Raises:
        ValueError: a count below 1 or ``image_size`` below 16.
        FileExistsError: ``root`` already holds ``train/`` or ``train.csv`` not written by this function.
    """
    import cv2

    for name, value in (("cases", cases), ("days_per_case", days_per_case), ("slices_per_scan", slices_per_scan)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    root = Path(root)
    params = {
        "format_version": _FORMAT_VERSION,
        "cases": cases,
        "days_per_case": days_per_case,
        "slices_per_scan": slices_per_scan,
        "image_size": image_size,
        "seed": seed,
    }
    marker = root / _MARKER
    train_dir, csv_path = root / "train", root / "train.csv"
    if marker.is_file():
        if json.loads(marker.read_text()) == params and csv_path.is_file() and train_dir.is_dir():
            return root
        marker.unlink()
        shutil.rmtree(train_dir, ignore_errors=True)
        csv_path.unlink(missing_ok=True)
    elif csv_path.exists() or train_dir.exists():
        raise FileExistsError(
            f"{root} already holds train/ or train.csv not made by generate_uwmgi; expected an empty or new folder"
        )
    root.mkdir(parents=True, exist_ok=True)

    rows: list[tuple[str, str, str]] = []
    for k in range(cases):
        case = 1 + 7 * k
        case_rng = np.random.default_rng([seed, k])
        height, width, spacing = _case_geometry(k, image_size, case_rng)
        for j in range(days_per_case):
            day = 1 + (k % 3) + 10 * j
            scan_rng = np.random.default_rng([seed, k, j])
            images, masks = _scan(slices_per_scan, height, width, scan_rng)
            scans_dir = train_dir / f"case{case}" / f"case{case}_day{day}" / "scans"
            scans_dir.mkdir(parents=True, exist_ok=True)
            for t in range(slices_per_scan):
                number = t + 1
                name = f"slice_{number:04d}_{width}_{height}_{spacing:.2f}_{spacing:.2f}.png"
                if not cv2.imwrite(str(scans_dir / name), images[t], [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                    raise OSError(f"could not write {scans_dir / name}")
                sid = f"case{case}_day{day}_slice_{number:04d}"
                rows.extend((sid, cls, rle_encode(masks[cls][t])) for cls in GI_CLASSES)

    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("id", "class", "segmentation"))
        writer.writerows(rows)
    marker.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    return root


class SyntheticOptions(FormatOptions):
    """Options of ``data.format: synthetic``: the size of the generated data set, the arguments of
    :func:`generate_uwmgi`."""

    cases: int = Field(6, ge=1, description="patients; folds are grouped by patient")
    days_per_case: int = Field(1, ge=1, description="scans (days) per patient")
    slices_per_scan: int = Field(24, ge=3, description="slices per scan")
    image_size: int = Field(96, ge=16, description="side of the generated PNGs in pixels")
    seed: int = Field(0, description="the same seed and options write the same bytes")


class SyntheticAdapter(UwmgiAdapter):
    """Generates the UW-Madison GI stand-in at the data root (once; same options, same bytes), then
    reads it as :class:`~trainables.data.uwmgi.UwmgiAdapter` does."""

    name = "synthetic"
    Options = SyntheticOptions
    generates_data = True

    def preflight(self, folds: int, *, fixed_split: bool = False) -> list[str]:
        """Returns a problem when fewer patients would be generated than there are folds (nothing is written)."""
        if self.options.cases < folds:
            return [
                f"data.folds: {folds} folds but data.synthetic.cases is {self.options.cases}; "
                "generate at least as many patients as folds"
            ]
        return []

    def before_digest(self) -> None:
        o: SyntheticOptions = self.options
        generate_uwmgi(
            self.root,
            cases=o.cases,
            days_per_case=o.days_per_case,
            slices_per_scan=o.slices_per_scan,
            image_size=o.image_size,
            seed=o.seed,
        )
