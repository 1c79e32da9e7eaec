"""Data inside a trial: format adapters (UW-Madison GI, NIfTI, DICOM, image folders, the generator),
the prepared cache, 2.5D slices.

The names below load their module on first use (PEP 562 ``__getattr__``), so the driver can read the
format registry (:mod:`trainables.data.formats`) and the adapters' option models without the trial's
imports (torch, Albumentations) that the dataset and augmentation modules need.
"""

from importlib import import_module
from typing import Any

#: public name -> the module that defines it
_HOMES = {
    "BACKGROUND": "_base",
    "LABEL_MODES": "_base",
    "DataAdapter": "_base",
    "FormatOptions": "_base",
    "ScanSource": "_base",
    "ScanVolume": "_base",
    "class_masks": "_base",
    "AUGMENTATIONS": "augment",
    "build_augmentation": "augment",
    "assign_folds": "cache",
    "load_cache_info": "cache",
    "load_index": "cache",
    "load_split": "cache",
    "prepare_cache": "cache",
    "prepare_dataset_cache": "cache",
    "split_folds": "cache",
    "SliceDataset": "dataset",
    "context_positions": "dataset",
    "roi_ratio_subset": "dataset",
    "DicomAdapter": "dicom",
    "DicomOptions": "dicom",
    "ADAPTERS": "formats",
    "FORMATS": "formats",
    "build_adapter": "formats",
    "discover_dataset": "formats",
    "format_options": "formats",
    "ImageFolderAdapter": "image_folder",
    "ImageFolderOptions": "image_folder",
    "INTENSITY_MODES": "intensity",
    "normalise_intensity": "intensity",
    "NiftiAdapter": "nifti",
    "NiftiOptions": "nifti",
    "rle_decode": "rle",
    "rle_encode": "rle",
    "SyntheticAdapter": "synthetic",
    "SyntheticOptions": "synthetic",
    "generate_uwmgi": "synthetic",
    "GI_CLASSES": "uwmgi",
    "SliceRecord": "uwmgi",
    "UwmgiAdapter": "uwmgi",
    "read_uwmgi": "uwmgi",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
