"""Data inside a trial: format adapters (UW-Madison GI, NIfTI, DICOM, image folders, the generator),
the prepared cache, 2.5D slices."""

from trainables.data._base import BACKGROUND, LABEL_MODES, DataAdapter, ScanSource, ScanVolume, class_masks
from trainables.data.augment import AUGMENTATIONS, build_augmentation
from trainables.data.cache import (
    assign_folds,
    load_cache_info,
    load_index,
    load_split,
    prepare_cache,
    prepare_dataset_cache,
    split_folds,
)
from trainables.data.dataset import SliceDataset, context_positions, roi_ratio_subset
from trainables.data.dicom import DicomAdapter, DicomOptions
from trainables.data.formats import ADAPTERS, FORMATS, build_adapter, discover_dataset, format_options
from trainables.data.image_folder import ImageFolderAdapter, ImageFolderOptions
from trainables.data.intensity import INTENSITY_MODES, normalise_intensity
from trainables.data.nifti import NiftiAdapter, NiftiOptions
from trainables.data.rle import rle_decode, rle_encode
from trainables.data.synthetic import SyntheticAdapter, SyntheticOptions, generate_uwmgi
from trainables.data.uwmgi import GI_CLASSES, SliceRecord, UwmgiAdapter, read_uwmgi

__all__ = [
    "ADAPTERS",
    "AUGMENTATIONS",
    "BACKGROUND",
    "FORMATS",
    "GI_CLASSES",
    "INTENSITY_MODES",
    "LABEL_MODES",
    "DataAdapter",
    "DicomAdapter",
    "DicomOptions",
    "ImageFolderAdapter",
    "ImageFolderOptions",
    "NiftiAdapter",
    "NiftiOptions",
    "ScanSource",
    "ScanVolume",
    "SliceDataset",
    "SliceRecord",
    "SyntheticAdapter",
    "SyntheticOptions",
    "UwmgiAdapter",
    "assign_folds",
    "build_adapter",
    "build_augmentation",
    "class_masks",
    "context_positions",
    "discover_dataset",
    "format_options",
    "generate_uwmgi",
    "load_cache_info",
    "load_index",
    "load_split",
    "normalise_intensity",
    "prepare_cache",
    "prepare_dataset_cache",
    "read_uwmgi",
    "rle_decode",
    "rle_encode",
    "roi_ratio_subset",
    "split_folds",
]
