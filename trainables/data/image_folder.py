"""2D images with mask images matched by name, as Kvasir-SEG ships them.

Layout (defaults)::

    ROOT/images/cju0qkwl35piu0993l0dewei2.jpg ...     RGB or grey; 8- or 16-bit PNG, JPEG, TIFF, BMP
    ROOT/masks/cju0qkwl35piu0993l0dewei2.jpg ...      the mask, same file stem

``images`` is a glob relative to the root; ``masks`` a template of the mask path relative to the
root (fields ``{dir}``, ``{name}``, ``{stem}``; it may end in a glob such as ``.*``, which must then
match exactly one file). A mask is binary by default: grey value >= ``mask_threshold`` (128, for
JPEG's ringing) is ``classes[0]``; with ``label_values`` its grey levels map to classes instead
(exact, or within ``grey_tolerance``; a colour mask is read as its grey luma). Colour images are converted to grey (ITU-R 601 luma): the
cache holds one channel per slice. Each image is a scan of one slice; the patient (fold group) is
the image itself unless ``patient_pattern`` (a regex on the relative image path) groups several.
Pixel spacing is unknown in such sets: ``pixel_spacing`` (default 1 mm) is used for the boundary
metrics.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, PositiveFloat

from trainables.data._base import (
    DataAdapter,
    FormatOptions,
    ScanSource,
    ScanVolume,
    glob_files,
    normalise_label_values,
    patient_from_pattern,
    unique_scan_names,
)

__all__ = ["ImageFolderAdapter", "ImageFolderOptions", "read_image"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


class ImageFolderOptions(FormatOptions):
    """Options of ``data.format: image_folder``: where the 2D images and masks are (defaults: Kvasir-SEG)."""

    images: str = Field(
        "images/*", description="glob of the images, relative to data.root (non-image files are skipped)"
    )
    masks: str = Field(
        "masks/{stem}.*",
        description="each image's mask, relative to data.root; fields {dir} "
        "{name} {stem}; may end in a glob matching one file",
    )
    mask_threshold: int = Field(
        128, ge=1, description="binary masks: grey >= this is foreground (unused with label_values)"
    )
    grey_tolerance: int = Field(
        0, ge=0, description="with label_values: grey levels this close count as the listed one"
    )
    patient_pattern: str | None = Field(
        None,
        description="regex on the relative image path grouping images by patient (default: every image its own group)",
    )
    pixel_spacing: tuple[PositiveFloat, PositiveFloat] = Field(
        (1.0, 1.0), description="(row, column) mm per pixel of the original images"
    )


def read_image(path: Path) -> np.ndarray:
    """Returns an image file as a 2D array (colour converted to grey; 16-bit kept).

    Raises:
        ValueError: the file cannot be decoded.
    """
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"{path}: cannot read it as an image")
    if raw.ndim == 3:
        raw = cv2.cvtColor(raw[..., :3], cv2.COLOR_BGR2GRAY)
    return raw


class ImageFolderAdapter(DataAdapter):
    """2D images and their mask images; one scan of one slice per image."""

    name = "image_folder"
    Options = ImageFolderOptions

    def __init__(self, *args, **kwargs):
        self._binary = kwargs.get("label_values") is None
        super().__init__(*args, **kwargs)
        self.label_tolerance = int(self.options.grey_tolerance)

    def label_map(self, label_values: Mapping[Any, Any] | None) -> dict[int, tuple[str, ...]]:
        if label_values is None and len(self.classes) != 1:
            raise ValueError(
                f"image_folder: binary masks give one class but classes is {list(self.classes)}; "
                "give label_values (grey level -> class) for multi-class mask images"
            )
        # binary masks are thresholded to 0/1 in load(), so the default map is {1: classes[0]}
        return normalise_label_values(label_values, self.classes, self.label_mode, {1: self.classes[0]})

    def _mask_path(self, image: Path) -> Path:
        rel = image.relative_to(self.root)
        fields = {"dir": rel.parent.as_posix(), "name": image.name, "stem": image.stem}
        try:
            pattern = self.options.masks.format(**fields)
        except KeyError as err:
            raise ValueError(
                f"data.image_folder.masks {self.options.masks!r}: unknown field {err}; "
                "use {dir}, {name} or {stem}"
            ) from None
        if not glob.has_magic(pattern):
            path = self.root / pattern
            if not path.is_file():
                raise FileNotFoundError(f"{image}: its mask {path} (masks={self.options.masks!r}) not found")
            return path
        found = [p for p in self.root.glob(pattern) if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES]
        if len(found) != 1:
            what = "no file" if not found else f"{len(found)} files ({', '.join(sorted(p.name for p in found))})"
            raise FileNotFoundError(
                f"{image}: {what} match its mask pattern {self.root / pattern} "
                f"(masks={self.options.masks!r}); expected exactly one"
            )
        return found[0]

    def discover(self) -> list[ScanSource]:
        self.check_root()
        opts: ImageFolderOptions = self.options
        images = [p for p in glob_files(self.root, opts.images) if p.suffix.lower() in _IMAGE_SUFFIXES]
        if not images:
            raise FileNotFoundError(
                f"no image under {self.root} matches images={opts.images!r} (extensions {sorted(_IMAGE_SUFFIXES)})"
            )
        rows = []
        for image in images:
            mask = self._mask_path(image)
            if mask == image:
                raise ValueError(f"{image}: masks={opts.masks!r} gives the image itself; point it at the mask")
            rel = image.relative_to(self.root).as_posix()
            patient = (
                patient_from_pattern(opts.patient_pattern, rel, str(image)) if opts.patient_pattern else image.stem
            )
            rows.append((image, mask, patient, rel))
        names = unique_scan_names([(image.stem, rel.rsplit(".", 1)[0]) for image, _, _, rel in rows])
        return [
            ScanSource(scan=name, patient=patient, files=(image, mask), payload=(image, mask))
            for (image, mask, patient, _), name in zip(rows, names, strict=True)
        ]

    def load(self, source: ScanSource) -> ScanVolume:
        image_path, mask_path = source.payload
        image = read_image(image_path)
        mask = read_image(mask_path)
        if mask.shape != image.shape:
            raise ValueError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (width x height) but its "
                f"image {image_path} is {image.shape[1]}x{image.shape[0]}; expected the same size"
            )
        if self._binary:
            mask = (mask >= self.options.mask_threshold).astype(np.int32)
        sh, sw = self.options.pixel_spacing
        return ScanVolume(
            image=image[None],
            labels=mask[None].astype(np.int32),
            spacing=(float("nan"), float(sh), float(sw)),
            slice_numbers=[1],
            label_files=(mask_path,),
            image_files=(image_path,),
        )
