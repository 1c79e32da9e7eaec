"""A small ACDC-layout NIfTI data set for tests: one writer, sized by each test."""

from pathlib import Path

import numpy as np


def write_acdc(root: Path, *, size: int = 32, slices: int = 4, patients: int = 2, noise: float = 20.0) -> Path:
    """Writes ``patientNNN/patientNNN_frame01.nii.gz`` and its ``_gt`` label volume (size x size x slices,
    int16, spacing 1.5 x 1.5 x 8 mm) for ``patients`` patients; returns ``root``.

    Labels (ACDC's values): 1 RV, a square near one corner that moves with the slice; 2 MYO, a ring; 3 LV,
    the disc inside it. The ring's centre moves with the patient; slice 0 is empty. Shapes scale with
    ``size``; the image is 200 + 300 x label plus Gaussian noise of standard deviation ``noise``.
    """
    import nibabel as nib

    x, y = np.mgrid[0:size, 0:size]
    half = max(size / 10, 1.5)
    for p in range(1, patients + 1):
        labels = np.zeros((size, size, slices), np.int16)
        for z in range(1, slices):
            r = np.hypot(x - size / 2 - p % 2, y - size / 2 - 1)
            labels[..., z][r < 0.28 * size] = 2
            labels[..., z][r < 0.16 * size] = 3
            labels[..., z][(np.abs(x - 0.17 * size) < half) & (np.abs(y - 0.2 * size - z) < half)] = 1
        image = (200 + 300 * labels + np.random.default_rng(p).normal(0, noise, labels.shape)).astype(np.int16)
        folder = root / f"patient{p:03d}"
        folder.mkdir(parents=True)
        affine = np.diag([1.5, 1.5, 8.0, 1.0])
        nib.save(nib.Nifti1Image(image, affine), str(folder / f"patient{p:03d}_frame01.nii.gz"))
        nib.save(nib.Nifti1Image(labels, affine), str(folder / f"patient{p:03d}_frame01_gt.nii.gz"))
    return root


#: the classes of the ACDC label values 1, 2, 3 (right ventricle, myocardium, left ventricle)
ACDC_CLASSES = ("RV", "MYO", "LV")
#: how the nifti adapter finds the ACDC layout's images, labels and patients
ACDC_OPTIONS = {
    "images": "*/patient*_frame[0-9][0-9].nii.gz",
    "labels": "{dir}/{stem}_gt.nii.gz",
    "patient_pattern": r"^(patient\d+)/",
}


def prepare_acdc_cache(raw: Path, cache: Path, *, size: int, slices: int, patients: int, n_folds: int) -> Path:
    """Writes the ACDC-layout volumes under ``raw`` and prepares their multiclass cache in ``cache``."""
    from trainables.data import prepare_dataset_cache

    return prepare_dataset_cache(
        "nifti",
        write_acdc(raw, size=size, slices=slices, patients=patients),
        cache,
        image_size=size,
        n_folds=n_folds,
        classes=ACDC_CLASSES,
        label_mode="multiclass",
        label_values={i + 1: name for i, name in enumerate(ACDC_CLASSES)},
        options=ACDC_OPTIONS,
    )
