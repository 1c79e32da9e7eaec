"""Data inside a trial: the UW-Madison GI format, its generator, the prepared cache, 2.5D slices."""

from trainables.data.augment import AUGMENTATIONS, build_augmentation
from trainables.data.cache import assign_folds, load_cache_info, load_index, prepare_cache
from trainables.data.dataset import SliceDataset, context_positions, roi_ratio_subset
from trainables.data.rle import rle_decode, rle_encode
from trainables.data.synthetic import generate_uwmgi
from trainables.data.uwmgi import GI_CLASSES, SliceRecord, read_uwmgi

__all__ = [
    "AUGMENTATIONS",
    "GI_CLASSES",
    "SliceDataset",
    "SliceRecord",
    "assign_folds",
    "build_augmentation",
    "context_positions",
    "generate_uwmgi",
    "load_cache_info",
    "load_index",
    "prepare_cache",
    "read_uwmgi",
    "rle_decode",
    "rle_encode",
    "roi_ratio_subset",
]
