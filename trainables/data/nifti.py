"""NIfTI volumes: one image volume and one label volume per scan (ACDC, Synapse, BraTS, MSSEG-2, MSD, nnU-Net).

Images are found by a glob relative to the data root; each image's label file by a template::

    nnU-Net / MSD:   images: imagesTr/*_0000.nii.gz      labels: labelsTr/{case}.nii.gz
                     images: imagesTr/*.nii.gz           labels: labelsTr/{name}
    ACDC:            images: "*/patient*_frame[0-9][0-9].nii.gz"   labels: "{dir}/{stem}_gt.nii.gz"
    Synapse (raw):   images: img/img*.nii.gz             labels: label/label{case}.nii.gz
    BraTS 2021:      images: "*/*_flair.nii.gz"          labels: "{dir}/{case}_seg.nii.gz"
    MSSEG-2:         images: "*/flair_time02_on_middle_space.nii.gz"   labels: "{dir}/ground_truth.nii.gz"

Template fields: ``{dir}`` the image's folder relative to the root, ``{name}`` its file name,
``{stem}`` the name without ``.nii.gz`` / ``.nii``, ``{case}`` what the first ``*`` of the glob's
file-name part matched. The patient (fold group) is ``{case}`` when the file-name part has a ``*``,
else the image's folder name; ``patient_pattern`` (a regex on the relative image path, group 1 or
``patient``) overrides it -- e.g. ``patient(\\d+)`` so ACDC's two frames of a patient group together.

Slices run along the last array axis (nibabel's (X, Y, Z) order); each slice is transposed to
(Y, X) = (H, W), so ``spacing_h`` is the header's Y zoom and ``spacing_w`` its X zoom. With
``canonical`` (default) both volumes are first reoriented to RAS+ (``nibabel.as_closest_canonical``)
so every patient's slices face the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from trainables.data._base import (
    DataAdapter,
    FormatOptions,
    ScanSource,
    ScanVolume,
    glob_capture,
    glob_files,
    patient_from_pattern,
    strip_suffixes,
    unique_scan_names,
)

if TYPE_CHECKING:
    import nibabel as nib

__all__ = ["NiftiAdapter", "NiftiOptions", "read_nifti"]

_SUFFIXES = (".nii.gz", ".nii")


class NiftiOptions(FormatOptions):
    """Options of ``data.format: nifti``: where the image and label volumes are (module docstring: layouts)."""

    images: str = Field("imagesTr/*.nii.gz", description="glob of the image volumes, relative to data.root")
    labels: str = Field(
        "labelsTr/{name}",
        description="each image's label volume, relative to data.root; "
        "fields {dir} {name} {stem} {case} ({case}: what the first * of the glob matched)",
    )
    patient_pattern: str | None = Field(
        None,
        description="regex on the relative image path, group 1 (or "
        "'patient') = patient id (default: {case}, or the image's folder when "
        "the glob has no *)",
    )
    channel: int | None = Field(
        None,
        description="index on the 4th axis of 4D images (the modality to use); required for 4D images, ignored for 3D",
    )
    canonical: bool = Field(True, description="reorient image and label to RAS+ before slicing along the last axis")


def read_nifti(path: Path, canonical: bool = True) -> nib.Nifti1Image:
    """Returns the NIfTI image at ``path`` (reoriented to RAS+ with ``canonical``); errors name the file."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises several types for a damaged file
        raise ValueError(f"{path}: cannot read it as NIfTI ({err})") from None
    return nib.as_closest_canonical(img) if canonical else img


class NiftiAdapter(DataAdapter):
    """One image volume + one label volume per scan; label values mapped to classes by ``label_values``
    (default ``{1: classes[0], 2: classes[1], ...}``)."""

    name = "nifti"
    Options = NiftiOptions

    def _fields(self, path: Path, capture) -> dict[str, str]:
        rel = path.relative_to(self.root)
        stem = strip_suffixes(path.name, _SUFFIXES)
        match = capture.match(path.name)
        case = match.group(1) if match is not None and capture.groups else stem
        return {"dir": rel.parent.as_posix(), "name": path.name, "stem": stem, "case": case}

    def discover(self) -> list[ScanSource]:
        self.check_root()
        opts: NiftiOptions = self.options
        images = glob_files(self.root, opts.images)
        if not images:
            raise FileNotFoundError(
                f"no image volume under {self.root} matches images={opts.images!r}; "
                "set data.nifti.images to a glob of the image files, relative to the root"
            )
        file_part = Path(opts.images).name
        capture = glob_capture(file_part)
        rows = []
        label_set = set()
        for path in images:
            fields = self._fields(path, capture)
            try:
                label = self.root / opts.labels.format(**fields)
            except KeyError as err:
                raise ValueError(
                    f"data.nifti.labels {opts.labels!r}: unknown field {err}; "
                    "use {dir}, {name}, {stem} or {case}"
                ) from None
            if label == path:
                raise ValueError(
                    f"data.nifti.labels {opts.labels!r} gives the image itself ({path}); point it at the label volume"
                )
            if not label.is_file():
                raise FileNotFoundError(f"{path}: its label volume {label} (labels={opts.labels!r}) not found")
            label_set.add(label)
            rel = path.relative_to(self.root).as_posix()
            if opts.patient_pattern:
                patient = patient_from_pattern(opts.patient_pattern, rel, str(path))
            elif "*" in file_part:
                patient = fields["case"]
            else:
                patient = path.parent.name
            rows.append((path, label, patient, fields["stem"], rel))
        images_set = set(images)
        clash = sorted(images_set & label_set)
        if clash:
            raise ValueError(
                f"{clash[0]} is matched by images={opts.images!r} and is also a label volume; narrow data.nifti.images"
            )
        names = unique_scan_names(
            [(stem, f"{patient}_{stem}", strip_suffixes(rel, _SUFFIXES)) for _, _, patient, stem, rel in rows]
        )
        day: dict[str, int] = {}
        sources = []
        for (path, label, patient, _, _), scan in zip(rows, names, strict=True):
            d = day.get(patient, 0)
            day[patient] = d + 1
            sources.append(ScanSource(scan=scan, patient=patient, files=(path, label), day=d, payload=(path, label)))
        return sources

    def _volume(self, path: Path) -> tuple[np.ndarray, tuple[float, ...], nib.Nifti1Image]:
        img = read_nifti(path, self.options.canonical)
        data = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        return data, zooms, img

    def load(self, source: ScanSource) -> ScanVolume:
        image_path, label_path = source.payload
        image, zooms, img = self._volume(image_path)
        labels, label_zooms, _ = self._volume(label_path)
        if image.ndim == 4:
            channel = self.options.channel
            if channel is None or not -image.shape[3] <= channel < image.shape[3]:
                raise ValueError(
                    f"{image_path}: a 4D volume {image.shape}; set data.nifti.channel to one index "
                    f"of its last axis (0..{image.shape[3] - 1}), e.g. the modality to train on"
                )
            image = image[..., channel]
        if labels.ndim == 4 and labels.shape[3] == 1:
            labels = labels[..., 0]
        if image.ndim != 3 or labels.ndim != 3:
            raise ValueError(
                f"{image_path}: expected 3D image and label volumes, got shapes {image.shape} "
                f"and {labels.shape} ({label_path})"
            )
        if image.shape != labels.shape:
            raise ValueError(
                f"{label_path}: label volume shape {labels.shape} differs from its image "
                f"{image_path} shape {image.shape}; expected the same voxel grid"
            )
        if not np.allclose(zooms, label_zooms, rtol=1e-3, atol=1e-4):
            raise ValueError(
                f"{label_path}: voxel size {label_zooms} mm differs from its image {image_path} "
                f"{zooms} mm; expected the same voxel grid"
            )
        if min(zooms) <= 0 or not np.all(np.isfinite(zooms)):
            raise ValueError(f"{image_path}: header voxel size {zooms} is not positive")
        n = image.shape[2]
        # (X, Y, Z) -> (Z, Y, X): slices along the last axis, each (H, W) = (Y, X)
        return ScanVolume(
            image=np.ascontiguousarray(np.transpose(image, (2, 1, 0))),
            labels=np.ascontiguousarray(np.transpose(labels, (2, 1, 0))),
            spacing=(zooms[2], zooms[1], zooms[0]),
            slice_numbers=list(range(1, n + 1)),
            label_files=(label_path,),
            image_files=(image_path,),
        )
