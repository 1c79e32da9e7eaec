"""Data formats: each adapter on tiny files written here in its real on-disk format with the real
libraries (nibabel, pydicom, OpenCV), the shared cache contract over every registered format, the
awkward cases (each a clear error naming the file), fixed splits, intensity and resampling.

Data sets are 16 x 16 pixels (cached at 16, so no resizing unless a test asks) and a few slices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from sweeper.inspect_data import format_inspection, inspect_dataset
from trainables.data import (
    ADAPTERS,
    SliceDataset,
    build_adapter,
    class_masks,
    discover_dataset,
    format_options,
    generate_uwmgi,
    load_cache_info,
    load_index,
    normalise_intensity,
    prepare_cache,
    prepare_dataset_cache,
    roi_ratio_subset,
)
from trainables.data.intensity import crop_or_pad, resample_slices
from trainables.data.nifti import NiftiAdapter

ACDC = ("RV", "MYO", "LV")
CHAOS = ("liver", "right_kidney", "left_kidney", "spleen")
ACDC_OPTIONS = {
    "images": "*/patient*_frame[0-9][0-9].nii.gz",
    "labels": "{dir}/{stem}_gt.nii.gz",
    "patient_pattern": r"^(patient\d+)/",
}


# --- writers of the real formats ---------------------------------------------------------------


def write_nifti(path: Path, data: np.ndarray, zooms=(1.5, 1.25, 8.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.diag([*zooms, 1.0])), str(path))
    return path


def acdc_volumes(seed: int, shape=(16, 16, 5)) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) image (int16 MRI-like) and label map 0..3: LV disc inside MYO ring, RV beside; slice 0 empty."""
    rng = np.random.default_rng(seed)
    x, y = np.mgrid[0 : shape[0], 0 : shape[1]]
    labels = np.zeros(shape, np.int16)
    for z in range(1, shape[2]):
        cx, cy = 7 + z % 2, 8
        r = np.hypot(x - cx, y - cy)
        labels[..., z][r < 4] = 2
        labels[..., z][r < 2.5] = 3
        labels[..., z][(np.abs(x - 3) < 2) & (np.abs(y - 3 - z) < 2)] = 1
    image = (200 + 300 * labels + rng.normal(0, 20, shape)).astype(np.int16)
    return image, labels


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    instance: int,
    z: float,
    spacing=(1.5, 1.5),
    slope: float = 1.0,
    intercept: float = 0.0,
    modality: str = "MR",
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4" if modality == "MR" else "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = path.parts[-5] if len(path.parts) > 5 else "p", modality
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    ds.SliceThickness = 5.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def chaos_ground(i: int, shape=(16, 16)) -> np.ndarray:
    """Grey mask of slice ordinal ``i``: liver square at rows i..i+3; kidneys and spleen on some slices."""
    mask = np.zeros(shape, np.uint8)
    mask[i : i + 3, 2:6] = 63
    if i % 2:
        mask[10:13, 2:5] = 126
        mask[10:13, 10:13] = 189
    if i >= 2:
        mask[2:5, 11:14] = 252
    return mask


def write_chaos_patient(root: Path, patient: str, n: int = 5, reverse_names: bool = False, size=(16, 16)) -> Path:
    """CHAOS MR T1DUAL of one patient: in-phase instances 2, 4, ... (out-phase odd), Ground PNGs
    named like the in-phase files. ``reverse_names``: file names in the reverse of slice order."""
    base = root / patient / "T1DUAL"
    for i in range(n):
        number = 2 * (i + 1)
        name_number = 2 * (n - i) if reverse_names else number
        pixels = (100 + 10 * i + chaos_ground(i, size)).astype(np.uint16)
        write_dicom(
            base / "DICOM_anon" / "InPhase" / f"IMG-0004-{name_number:05d}.dcm", pixels, instance=number, z=2.5 * number
        )
        write_dicom(
            base / "DICOM_anon" / "OutPhase" / f"IMG-0004-{name_number - 1:05d}.dcm",
            pixels // 2,
            instance=number - 1,
            z=2.5 * number,
        )
        (base / "Ground").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(base / "Ground" / f"IMG-0004-{name_number:05d}.png"), chaos_ground(i, size))
    return root


def write_kvasir(root: Path, n: int = 4) -> Path:
    """Kvasir-SEG: RGB JPEG images of various sizes and JPEG masks (a disc of 255) of the same names."""
    rng = np.random.default_rng(3)
    for k in range(n):
        h, w = (16 + 4 * (k % 2), 16 + 4 * (k // 2))
        yy, xx = np.mgrid[0:h, 0:w]
        disc = np.hypot(yy - h / 2, xx - w / 2) < 4 + k
        image = rng.integers(40, 90, (h, w, 3), dtype=np.uint8)
        image[disc] = (200, 120, 90)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / f"cju{k}polyp.jpg"), image)
        cv2.imwrite(str(root / "masks" / f"cju{k}polyp.jpg"), np.repeat(disc[..., None] * 255, 3, 2).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("acdc")
    for p in range(1, 4):
        for frame in (1, 12):
            image, labels = acdc_volumes(10 * p + frame)
            stem = f"patient{p:03d}/patient{p:03d}_frame{frame:02d}"
            write_nifti(root / f"{stem}.nii.gz", image)
            write_nifti(root / f"{stem}_gt.nii.gz", labels)
        write_nifti(root / f"patient{p:03d}/patient{p:03d}_4d.nii.gz", np.zeros((16, 16, 5, 2), np.int16))
    return root


@pytest.fixture(scope="module")
def acdc_cache(acdc_root, tmp_path_factory) -> Path:
    return prepare_dataset_cache(
        "nifti",
        acdc_root,
        tmp_path_factory.mktemp("acdc_cache"),
        image_size=16,
        n_folds=3,
        classes=ACDC,
        label_mode="multiclass",
        options=ACDC_OPTIONS,
        label_values={1: "RV", 2: "MYO", 3: "LV"},
    )


@pytest.fixture(scope="module")
def chaos_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chaos")
    write_chaos_patient(root, "1")
    write_chaos_patient(root, "2", reverse_names=True)
    write_chaos_patient(root, "10", n=4)
    return root


@pytest.fixture(scope="module")
def kvasir_root(tmp_path_factory) -> Path:
    return write_kvasir(tmp_path_factory.mktemp("kvasir"))


# --- the contract every format keeps ------------------------------------------------------------


def _gi_root(tmp: Path) -> Path:
    return generate_uwmgi(tmp / "gi", cases=2, slices_per_scan=4, image_size=16, seed=2)


FORMAT_CASES = {
    "uwmgi": lambda tmp, roots: dict(data_root=_gi_root(tmp), classes=("large_bowel", "small_bowel", "stomach")),
    "synthetic": lambda tmp, roots: dict(
        data_root=tmp / "syn",
        classes=("large_bowel", "small_bowel", "stomach"),
        options=dict(cases=2, slices_per_scan=4, image_size=16, seed=2),
    ),
    "nifti": lambda tmp, roots: dict(
        data_root=roots["acdc"], classes=ACDC, label_mode="multiclass", options=ACDC_OPTIONS
    ),
    "dicom": lambda tmp, roots: dict(data_root=roots["chaos"], classes=CHAOS, label_mode="multiclass"),
    "image_folder": lambda tmp, roots: dict(data_root=roots["kvasir"], classes=("polyp",)),
}


def test_every_registered_format_has_a_contract_case():
    assert set(FORMAT_CASES) == set(ADAPTERS)


@pytest.mark.parametrize("fmt", sorted(FORMAT_CASES))
def test_every_format_writes_the_same_cache_contract(fmt, tmp_path, acdc_root, chaos_root, kvasir_root):
    case = FORMAT_CASES[fmt](tmp_path, {"acdc": acdc_root, "chaos": chaos_root, "kvasir": kvasir_root})
    root = case.pop("data_root")
    cache = prepare_dataset_cache(fmt, root, tmp_path / "cache", image_size=16, n_folds=2, **case)
    info, index = load_cache_info(cache), load_index(cache)
    classes = list(case["classes"])
    multiclass = case.get("label_mode") == "multiclass"
    assert info["classes"] == (["background", *classes] if multiclass else classes)
    assert info["foreground_classes"] == classes and info["format"] == fmt
    assert info["activation"] == ("softmax" if multiclass else "sigmoid")
    for col in [
        "case",
        "day",
        "slice_number",
        "position",
        "n_slices",
        "fold",
        "height",
        "width",
        *[f"area_{c}" for c in classes],
    ]:
        assert pd.api.types.is_integer_dtype(index[col]), col
    for col in ["spacing_h", "spacing_w", "spacing_z", "source_spacing_h", "source_spacing_w"]:
        assert pd.api.types.is_float_dtype(index[col]), col
    for col in ["id", "scan", "patient"]:
        assert pd.api.types.is_string_dtype(index[col]), col
    assert [c for c in index.columns if c.startswith("has_")] == [f"has_{c}" for c in classes]
    assert (index.groupby("patient")["fold"].nunique() == 1).all()  # patient-grouped
    assert (index.groupby("patient")["case"].nunique() == 1).all()
    assert sorted(index["fold"].unique()) == [0, 1]
    assert (index.groupby("scan")["position"].apply(lambda p: list(p) == list(range(len(p))))).all()
    assert (index["spacing_h"] > 0).all() and (index["spacing_w"] > 0).all()
    for scan, rows in index.groupby("scan"):
        images = np.load(cache / "scans" / f"{scan}.npy")
        masks = np.load(cache / "scans" / f"{scan}_mask.npy")
        assert images.dtype == np.float16 and images.shape == (len(rows), 16, 16)
        assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
        assert masks.dtype == np.uint8 and masks.shape == (len(rows), len(info["classes"]), 16, 16)
        assert set(np.unique(masks).tolist()) <= {0, 1}
        if multiclass:
            assert (masks.sum(axis=1) == 1).all()  # one-hot, background first
        foreground = masks[:, 1:] if multiclass else masks
        np.testing.assert_array_equal(foreground.sum(axis=(2, 3)), rows[[f"area_{c}" for c in classes]].to_numpy())
    assert index[[f"has_{c}" for c in classes]].to_numpy().any()
    image, mask = SliceDataset(cache, [0], context=1)[0]
    assert image.shape == (3, 16, 16) and mask.shape == (len(info["classes"]), 16, 16)


# --- NIfTI ---------------------------------------------------------------------------------------


def test_nifti_acdc_slices_along_last_axis_spacing_from_header_and_one_hot(acdc_cache, acdc_root):
    index = load_index(acdc_cache)
    assert sorted(index["patient"].unique()) == ["patient001", "patient002", "patient003"]
    assert index.groupby("patient")["scan"].nunique().eq(2).all()  # frames 01 and 12
    assert (
        index.groupby("patient")["day"].unique().apply(sorted)
        == pd.Series([[0, 1]] * 3, index=["patient001", "patient002", "patient003"])
    ).all()
    assert set(index["scan"]) == {f"patient{p:03d}_frame{f:02d}" for p in (1, 2, 3) for f in (1, 12)}
    row = index.iloc[0]
    assert (row.source_spacing_h, row.source_spacing_w, row.spacing_z) == (1.25, 1.5, 8.0)  # (Y, X) zooms
    labels = np.asanyarray(nib.load(str(acdc_root / "patient001/patient001_frame01_gt.nii.gz")).dataobj)
    masks = np.load(acdc_cache / "scans" / "patient001_frame01_mask.npy")
    for z in range(labels.shape[2]):
        np.testing.assert_array_equal(masks[z].argmax(axis=0), labels[:, :, z].T)
    assert not index[index["scan"] == "patient001_frame01"].iloc[0][["has_RV", "has_MYO", "has_LV"]].any()


def test_nifti_nnunet_layout_with_overlapping_brats_regions(tmp_path):
    image, labels = acdc_volumes(1)
    labels = np.where(labels == 3, 4, labels)  # BraTS values 1, 2, 4
    for k in range(2):
        write_nifti(tmp_path / "imagesTr" / f"BraTS_{k:03d}_0000.nii.gz", image.astype(np.float32))
        write_nifti(tmp_path / "labelsTr" / f"BraTS_{k:03d}.nii.gz", labels.astype(np.uint8))
    regions = ("whole_tumor", "tumor_core", "enhancing_tumor")
    cache = prepare_dataset_cache(
        "nifti",
        tmp_path,
        tmp_path / "cache",
        image_size=16,
        n_folds=2,
        classes=regions,
        options={"images": "imagesTr/*_0000.nii.gz", "labels": "labelsTr/{case}.nii.gz"},
        label_values={
            1: ["whole_tumor", "tumor_core"],
            2: "whole_tumor",
            4: ["whole_tumor", "tumor_core", "enhancing_tumor"],
        },
    )
    index = load_index(cache)
    assert sorted(index["patient"].unique()) == ["BraTS_000", "BraTS_001"]
    masks = np.load(cache / "scans" / f"{index['scan'].iloc[0]}_mask.npy")
    whole, core, enhancing = masks[:, 0], masks[:, 1], masks[:, 2]
    assert (enhancing <= core).all() and (core <= whole).all() and enhancing.any() and (whole > core).any()
    with pytest.raises(ValueError, match="multiclass classes cannot overlap"):
        build_adapter(
            "nifti",
            tmp_path,
            classes=regions,
            label_mode="multiclass",
            label_values={1: ["whole_tumor", "tumor_core"], 2: "whole_tumor", 4: "enhancing_tumor"},
        )


def test_nifti_label_value_not_in_spec_names_the_label_file(acdc_root, tmp_path):
    with pytest.raises(ValueError, match=r"patient001_frame01_gt\.nii\.gz.*label value\(s\) \[3\] not in label_values"):
        prepare_dataset_cache(
            "nifti",
            acdc_root,
            tmp_path / "c",
            image_size=16,
            n_folds=2,
            classes=("RV", "MYO"),
            options=ACDC_OPTIONS,
            label_values={1: "RV", 2: "MYO"},
        )
    assert not (tmp_path / "c" / "cache.json").exists()


def test_nifti_shape_mismatch_4d_and_missing_label_name_the_files(tmp_path):
    image, labels = acdc_volumes(2)
    write_nifti(tmp_path / "imagesTr" / "a.nii.gz", image)
    write_nifti(tmp_path / "labelsTr" / "a.nii.gz", labels[:, :12])
    write_nifti(tmp_path / "imagesTr" / "b.nii.gz", image)
    write_nifti(tmp_path / "labelsTr" / "b.nii.gz", labels)
    with pytest.raises(ValueError, match=r"labelsTr/a\.nii\.gz: label volume shape \(16, 12, 5\) differs .*imagesTr/a"):
        prepare_dataset_cache("nifti", tmp_path, tmp_path / "c", image_size=16, n_folds=2, classes=ACDC)
    write_nifti(tmp_path / "labelsTr" / "a.nii.gz", labels)
    write_nifti(tmp_path / "imagesTr" / "a.nii.gz", np.stack([image, image], axis=-1))
    with pytest.raises(ValueError, match=r"imagesTr/a\.nii\.gz: a 4D volume .*data\.nifti\.channel"):
        prepare_dataset_cache("nifti", tmp_path, tmp_path / "c", image_size=16, n_folds=2, classes=ACDC)
    cache = prepare_dataset_cache(
        "nifti", tmp_path, tmp_path / "c", image_size=16, n_folds=2, classes=ACDC, options={"channel": 1}
    )
    assert load_index(cache)["scan"].nunique() == 2
    (tmp_path / "labelsTr" / "b.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"imagesTr/b\.nii\.gz: its label volume .*labelsTr/b\.nii\.gz"):
        discover_dataset("nifti", tmp_path, classes=ACDC)


def test_prepared_cache_is_reused_without_reading_any_volume(acdc_root, acdc_cache, monkeypatch):
    before = (acdc_cache / "cache.json").stat().st_mtime_ns

    def forbidden(*args, **kwargs):
        raise AssertionError("a complete cache must not be read again")

    monkeypatch.setattr(NiftiAdapter, "load", forbidden)  # only file names, sizes and times are hashed
    prepare_dataset_cache(
        "nifti",
        acdc_root,
        acdc_cache,
        image_size=16,
        n_folds=3,
        classes=ACDC,
        label_mode="multiclass",
        options=ACDC_OPTIONS,
        label_values={1: "RV", 2: "MYO", 3: "LV"},
    )
    assert (acdc_cache / "cache.json").stat().st_mtime_ns == before


# --- DICOM (CHAOS) -------------------------------------------------------------------------------


def test_dicom_chaos_sorted_by_instance_number_grey_levels_mapped(chaos_root, tmp_path):
    cache = prepare_dataset_cache(
        "dicom", chaos_root, tmp_path / "c", image_size=16, n_folds=3, classes=CHAOS, label_mode="multiclass"
    )
    index = load_index(cache)
    assert list(index.drop_duplicates("patient")["patient"]) == ["1", "2", "10"]  # natural order
    assert index.groupby("patient").size().to_dict() == {"1": 5, "2": 5, "10": 4}
    for patient in ("1", "2"):  # patient 2's file names run against the slice order
        rows = index[index["patient"] == patient]
        assert rows["slice_number"].tolist() == [2, 4, 6, 8, 10]
        masks = np.load(cache / "scans" / f"{rows['scan'].iloc[0]}_mask.npy")
        for i in range(5):
            expected = chaos_ground(i)
            for c, grey in enumerate((63, 126, 189, 252), start=1):
                np.testing.assert_array_equal(masks[i, c], expected == grey)
    assert (index["source_spacing_h"] == 1.5).all() and (index["spacing_z"] == 5.0).all()


def test_dicom_out_phase_pairs_masks_by_order(chaos_root, tmp_path):
    cache = prepare_dataset_cache(
        "dicom",
        chaos_root,
        tmp_path / "c",
        image_size=16,
        n_folds=2,
        classes=CHAOS,
        options={"series": "T1DUAL/DICOM_anon/OutPhase"},
    )
    index = load_index(cache)
    rows = index[index["patient"] == "1"]
    assert rows["slice_number"].tolist() == [1, 3, 5, 7, 9]
    masks = np.load(cache / "scans" / f"{rows['scan'].iloc[0]}_mask.npy")
    np.testing.assert_array_equal(masks[3, 0], chaos_ground(3) == 63)
    with pytest.raises(FileNotFoundError, match=r"OutPhase/IMG-0004-00001\.dcm: no mask .*Ground/IMG-0004-00001\.png"):
        prepare_dataset_cache(
            "dicom",
            chaos_root,
            tmp_path / "d",
            image_size=16,
            n_folds=2,
            classes=CHAOS,
            options={"series": "T1DUAL/DICOM_anon/OutPhase", "ground_match": "name"},
        )


def test_dicom_missing_slice_is_a_clear_error_naming_the_series(tmp_path):
    write_chaos_patient(tmp_path, "1")
    write_chaos_patient(tmp_path, "2")
    (tmp_path / "2/T1DUAL/DICOM_anon/InPhase/IMG-0004-00006.dcm").unlink()
    with pytest.raises(
        ValueError, match=r"2/T1DUAL/DICOM_anon/InPhase: missing slice\(s\): InstanceNumber jumps from 4 to 8"
    ):
        prepare_dataset_cache(
            "dicom",
            tmp_path,
            tmp_path / "c",
            image_size=16,
            n_folds=2,
            classes=CHAOS,
            options={"ground_match": "order"},
        )


def test_dicom_mask_size_and_unknown_grey_level_name_the_png(tmp_path):
    write_chaos_patient(tmp_path, "1")
    write_chaos_patient(tmp_path, "2")
    bad = tmp_path / "2/T1DUAL/Ground/IMG-0004-00004.png"
    cv2.imwrite(str(bad), np.zeros((16, 20), np.uint8))
    with pytest.raises(ValueError, match=r"IMG-0004-00004\.png: mask is 20x16 .* is 16x16"):
        prepare_dataset_cache("dicom", tmp_path, tmp_path / "c", image_size=16, n_folds=2, classes=CHAOS)
    odd = chaos_ground(1)
    odd[0, 0] = 100
    cv2.imwrite(str(bad), odd)
    with pytest.raises(ValueError, match=r"IMG-0004-00004\.png: label value\(s\) \[100\] not in label_values"):
        prepare_dataset_cache("dicom", tmp_path, tmp_path / "c", image_size=16, n_folds=2, classes=CHAOS)
    cv2.imwrite(str(bad), np.where(chaos_ground(1) == 63, 65, chaos_ground(1)).astype(np.uint8))
    prepare_dataset_cache(
        "dicom", tmp_path, tmp_path / "c", image_size=16, n_folds=2, classes=CHAOS, options={"grey_tolerance": 5}
    )  # 65 counts as liver's 63


def test_dicom_ct_hounsfield_window(tmp_path):
    for p in ("a", "b"):
        for i in range(3):
            hu = np.full((16, 16), -1000, np.int32)
            hu[4:12, 4:12] = [[-200, 40, 240, 1000][(r + i) % 4] for r in range(8)][0]
            write_dicom(
                tmp_path / p / "DICOM_anon" / f"i{i:04d}.dcm",
                (hu + 1024).astype(np.uint16),
                instance=i + 1,
                z=3.0 * i,
                intercept=-1024.0,
                modality="CT",
            )
            (tmp_path / p / "Ground").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / p / "Ground" / f"liver_GT_{i:03d}.png"), (hu > 0).astype(np.uint8) * 255)
    cache = prepare_dataset_cache(
        "dicom",
        tmp_path,
        tmp_path / "c",
        image_size=16,
        n_folds=2,
        classes=("liver",),
        options={"series": "DICOM_anon", "ground": "Ground"},
        label_values={255: "liver"},
        intensity="window",
        window=(40, 400),
    )
    images = np.load(cache / "scans" / "a.npy").astype(np.float32)
    for i in range(3):
        hu = [-200, 40, 240, 1000][i % 4]
        assert images[i, 0, 0] == 0.0
        assert images[i, 8, 8] == pytest.approx(np.clip((hu + 160) / 400, 0, 1), abs=1e-3)


# --- image folder (Kvasir) -----------------------------------------------------------------------


def test_image_folder_kvasir_groups_by_image_and_thresholds_jpeg_masks(kvasir_root, tmp_path):
    cache = prepare_dataset_cache(
        "image_folder", kvasir_root, tmp_path / "c", image_size=16, n_folds=2, classes=("polyp",)
    )
    index = load_index(cache)
    assert len(index) == 4 and index["patient"].nunique() == 4 and (index["n_slices"] == 1).all()
    assert index["has_polyp"].all()
    assert sorted(zip(index["height"], index["width"])) == [(16, 16), (16, 20), (20, 16), (20, 20)]
    row = index[index["scan"] == "cju0polyp"].iloc[0]
    mask = np.load(cache / "scans" / "cju0polyp_mask.npy")[0, 0]
    yy, xx = np.mgrid[0:16, 0:16]
    expected = np.hypot(yy - 8, xx - 8) < 4
    assert (mask == expected).mean() > 0.97 and row.area_polyp == mask.sum()


def test_image_folder_16bit_png_and_patient_pattern(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("p1_a", "p1_b", "p2_a", "p3_a"):
        image = rng.integers(0, 60000, (16, 16)).astype(np.uint16)
        (tmp_path / "img").mkdir(exist_ok=True)
        (tmp_path / "lab").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "img" / f"{name}.png"), image)
        mask = np.zeros((16, 16), np.uint8)
        mask[2:6, 2:6], mask[8:12, 8:12] = 1, 2
        cv2.imwrite(str(tmp_path / "lab" / f"{name}_mask.png"), mask)
    cache = prepare_dataset_cache(
        "image_folder",
        tmp_path,
        tmp_path / "c",
        image_size=16,
        n_folds=2,
        classes=("a", "b"),
        label_mode="multiclass",
        label_values={1: "a", 2: "b"},
        options={
            "images": "img/*.png",
            "masks": "lab/{stem}_mask.png",
            "patient_pattern": r"(p\d+)_",
            "pixel_spacing": [0.5, 0.5],
        },
    )
    index = load_index(cache)
    assert index.groupby("patient").size().to_dict() == {"p1": 2, "p2": 1, "p3": 1}
    assert (index["spacing_h"] == 0.5).all()
    raw = cv2.imread(str(tmp_path / "img" / "p1_a.png"), cv2.IMREAD_UNCHANGED).astype(np.float32)
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    np.testing.assert_allclose(np.load(cache / "scans" / "p1_a.npy")[0].astype(np.float32), expected, atol=1e-3)


def test_image_folder_mask_of_another_size_and_missing_mask_name_the_files(kvasir_root, tmp_path):
    root = tmp_path / "k"
    write_kvasir(root)
    cv2.imwrite(str(root / "masks" / "cju1polyp.jpg"), np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"masks/cju1polyp\.jpg: mask is 10x10 .*images/cju1polyp\.jpg is 16x20"):
        prepare_dataset_cache("image_folder", root, tmp_path / "c", image_size=16, n_folds=2, classes=("polyp",))
    (root / "masks" / "cju1polyp.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"images/cju1polyp\.jpg: no file match its mask pattern"):
        discover_dataset("image_folder", root, classes=("polyp",))


# --- folds, options, intensity, resampling -------------------------------------------------------


def test_fixed_split_file_reproduces_a_paper_split(acdc_root, tmp_path):
    split = tmp_path / "split.yaml"
    split.write_text(yaml.safe_dump({0: ["patient001"], 1: ["patient003"]}))
    cache = prepare_dataset_cache(
        "nifti", acdc_root, tmp_path / "c", image_size=16, n_folds=2, classes=ACDC, options=ACDC_OPTIONS, split=split
    )
    folds = load_index(cache).groupby("patient")["fold"].first().to_dict()
    assert folds == {"patient001": 0, "patient002": 2, "patient003": 1}  # unlisted: training-only fold 2
    assert load_cache_info(cache)["train_only_fold"] == 2
    assert inspect_dataset(cache)["folds"][2]["train_only"]
    (tmp_path / "bad.json").write_text(json.dumps({"0": ["patient001"], "1": ["patient009"]}))
    with pytest.raises(ValueError, match=r"bad\.json: patient id\(s\) \['patient009'\] not in the data set"):
        prepare_dataset_cache(
            "nifti",
            acdc_root,
            tmp_path / "d",
            image_size=16,
            n_folds=2,
            classes=ACDC,
            options=ACDC_OPTIONS,
            split=tmp_path / "bad.json",
        )
    with pytest.raises(ValueError, match="2 folds listed but n_folds=3"):
        prepare_dataset_cache(
            "nifti",
            acdc_root,
            tmp_path / "d",
            image_size=16,
            n_folds=3,
            classes=ACDC,
            options=ACDC_OPTIONS,
            split=split,
        )


def test_unknown_format_option_and_label_values_fail_before_reading(tmp_path):
    with pytest.raises(KeyError, match="unknown data format 'mha'"):
        build_adapter("mha", tmp_path, classes=ACDC)
    with pytest.raises(ValueError, match=r"data\.nifti: unknown option\(s\) \['image'\]"):
        build_adapter("nifti", tmp_path, {"image": "*.nii"}, classes=ACDC)
    with pytest.raises(ValueError, match=r"no label value maps to class\(es\) \['LV'\]"):
        build_adapter("nifti", tmp_path, classes=ACDC, label_values={1: "RV", 2: "MYO"})
    assert format_options("dicom")["series"] == "T1DUAL/DICOM_anon/InPhase"
    with pytest.raises(ValueError, match=r"data\.dicom\.grey_tolerance: Input should be less than or equal to 127"):
        build_adapter("dicom", tmp_path, {"grey_tolerance": 300}, classes=CHAOS)
    with pytest.raises(ValueError, match="'background' is added as channel 0"):
        build_adapter("nifti", tmp_path, classes=("background", "RV"))


def test_class_masks_multilabel_multiclass_and_tolerance():
    labels = np.array([[[0, 1], [2, 4]]])
    multi = class_masks(labels, {1: ("a",), 2: ("a", "b"), 4: ()}, ("a", "b"), "multilabel", [Path("x")])
    np.testing.assert_array_equal(multi[0], [[[0, 1], [1, 0]], [[0, 0], [1, 0]]])
    one_hot = class_masks(labels, {1: ("a",), 2: ("b",), 4: ()}, ("a", "b"), "multiclass", [Path("x")])
    np.testing.assert_array_equal(one_hot[0].argmax(axis=0), [[0, 1], [2, 0]])
    grey = class_masks(
        np.array([[[0, 61, 128]]]), {63: ("a",), 126: ("b",)}, ("a", "b"), "multilabel", [Path("g.png")], tolerance=3
    )
    np.testing.assert_array_equal(grey[0], [[[0, 1, 0]], [[0, 0, 1]]])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("slice_minmax", [[0.0, 1.0], [0.0, 1.0]]),
        ("volume_minmax", [[0.0, 1 / 3], [2 / 3, 1.0]]),
        (
            "volume_zscore",
            [
                [(3 - 1.5 / np.sqrt(1.25)) / 6, (3 - 0.5 / np.sqrt(1.25)) / 6],
                [(3 + 0.5 / np.sqrt(1.25)) / 6, (3 + 1.5 / np.sqrt(1.25)) / 6],
            ],
        ),
        ("slice_zscore", [[2 / 6, 4 / 6], [2 / 6, 4 / 6]]),
    ],
)
def test_intensity_modes_by_hand(mode, expected):
    volume = np.array([[[0.0, 1.0]], [[2.0, 3.0]]])  # 2 slices of 1 x 2 pixels
    np.testing.assert_allclose(normalise_intensity(volume, mode)[:, 0], expected, atol=1e-6)


def test_window_clip_percentiles_and_resampling_by_hand():
    hu = np.array([[[-1000.0, -160.0, 40.0, 240.0, 3000.0]]])
    np.testing.assert_allclose(normalise_intensity(hu, "window", window=(40, 400))[0, 0], [0, 0, 0.5, 1, 1])
    clipped = normalise_intensity(np.array([[[0.0, 1, 2, 3, 100]]]), "slice_minmax", clip_percentiles=(0, 75))
    np.testing.assert_allclose(clipped[0, 0], [0, 1 / 3, 2 / 3, 1, 1])
    volume = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)  # slices 0..3 at 2 mm
    np.testing.assert_allclose(resample_slices(volume, 2.0, 1.0, nearest=False)[:, 0, 0], np.arange(7) / 2)
    # new slices at 0, 3, 6 mm = source 0, 1.5, 3 (round half to even: 2)
    np.testing.assert_array_equal(resample_slices(volume, 2.0, 3.0, nearest=True)[:, 0, 0], [0, 2, 3])
    padded = crop_or_pad(np.ones((2, 3, 2), np.uint8), 4, fill=[1, 0])
    assert padded.shape == (4, 4, 2) and padded[..., 0].sum() == 16 - 6 + 6 and padded[..., 1].sum() == 6


def test_target_spacing_resamples_then_crops_or_pads_with_background(acdc_root, tmp_path):
    cache = prepare_dataset_cache(
        "nifti",
        acdc_root,
        tmp_path / "c",
        image_size=16,
        n_folds=2,
        classes=ACDC,
        label_mode="multiclass",
        options=ACDC_OPTIONS,
        target_spacing=(4.0, 2.5, 3.0),
    )
    index = load_index(cache)
    # 16 px of 1.25 mm -> 8 px of 2.5 mm (rows); 16 px of 1.5 mm -> 8 px of 3 mm (columns); 5 slices of 8 mm -> 9 of 4
    assert (index["spacing_h"] == 2.5).all() and (index["spacing_w"] == 3.0).all() and (index["spacing_z"] == 4.0).all()
    assert (index.groupby("scan").size() == 9).all()
    masks = np.load(cache / "scans" / f"{index['scan'].iloc[0]}_mask.npy")
    assert (masks.sum(axis=1) == 1).all() and masks[:, 0, :4, :].all()  # padding is background


def test_roi_ratio_and_inspection_work_on_a_nifti_cache(acdc_cache):
    index = load_index(acdc_cache)
    subset = roi_ratio_subset(index, 1.0, ACDC, seed=0)
    present = subset[[f"has_{c}" for c in ACDC]].any(axis=1)
    assert present.sum() == (~present).sum()
    d = inspect_dataset(acdc_cache)
    assert (d["patients"], d["scans"], d["slices"]) == (3, 6, 30)
    assert d["channels"] == ["background", *ACDC] and d["image_sizes"] == {"16x16": 6}
    assert d["empty_slices"] == pytest.approx(0.2)  # slice 0 of every volume
    assert d["prevalence"]["LV"]["slices"] == pytest.approx(0.8)
    assert d["prevalence"]["LV"]["pixels"] == pytest.approx(index["area_LV"].sum() / (30 * 256))
    assert d["spacing"]["z"] == {"min": 8.0, "median": 8.0, "max": 8.0}
    assert sum(f["patients"] for f in d["folds"].values()) == 3
    assert d["calf"]["all"]["transform"] is not None and d["calf"]["LV"]["n_slices"] == 24
    text = format_inspection(d)
    assert "3 patients, 6 scans, 30 slices" in text and "MYO" in text and "fold 0" in text


def test_uwmgi_through_the_generic_entry_point_equals_prepare_cache(tmp_path):
    root = _gi_root(tmp_path)
    a = load_index(prepare_cache(root, tmp_path / "a", image_size=16, n_folds=2))
    b = load_index(prepare_dataset_cache("uwmgi", root, tmp_path / "b", image_size=16, n_folds=2))
    pd.testing.assert_frame_equal(a, b)
    assert a["patient"].str.fullmatch(r"case\d+").all()
    for scan in a["scan"].unique():
        np.testing.assert_array_equal(
            np.load(tmp_path / "a/scans" / f"{scan}_mask.npy"), np.load(tmp_path / "b/scans" / f"{scan}_mask.npy")
        )
    with pytest.raises(ValueError, match="use label_mode multilabel"):
        build_adapter("uwmgi", root, classes=("stomach",), label_mode="multiclass")


def test_the_format_registry_imports_no_reader_and_no_torch():
    """The driver validates a spec against the registry; the readers (and the trial's torch) load when data are read."""
    code = (
        "import sys, trainables.data.formats; "
        "print(sorted(m for m in ('torch', 'cv2', 'nibabel', 'pydicom', 'pandas', 'albumentations') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_adapter_is_registered_under_its_own_name():
    assert all(adapter.name == name for name, adapter in ADAPTERS.items())
