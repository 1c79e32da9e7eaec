"""Training augmentation of paper 000: flips, shift-scale-rotate, elastic and grid distortion,
brightness, contrast and gamma jitter (Albumentations)."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # Albumentations checks for updates on import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402

__all__ = ["AUGMENTATIONS", "build_augmentation"]


def _seed000(image_size: int) -> A.Compose:
    # Geometric transforms move image and mask together (mask with nearest-neighbour); intensity
    # transforms touch the image only. Probabilities are moderate, as in the community notebooks the
    # paper follows; elastic and grid distortion share one slot (OneOf) so a slice is warped at most once.
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.0625, 0.0625), rotate=(-15, 15),
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.5),
        A.OneOf([
            A.ElasticTransform(alpha=1.0, sigma=50.0, p=1.0),
            A.GridDistortion(num_steps=5, distort_limit=0.3, p=1.0),
        ], p=0.25),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.RandomGamma(gamma_limit=(80, 120), p=0.3),
    ])


#: strength name -> builder(image_size) of an Albumentations pipeline (None: no augmentation)
AUGMENTATIONS = {
    "seed000": _seed000,
    "none": lambda image_size: None,
}


def build_augmentation(image_size: int, strength: str = "seed000") -> A.Compose | None:
    """Returns the Albumentations pipeline named ``strength`` for float32 HWC images in [0, 1] and
    HWC uint8 masks, or ``None`` for ``"none"``."""
    if strength not in AUGMENTATIONS:
        raise KeyError(f"unknown augmentation {strength!r}; choose from {sorted(AUGMENTATIONS)}")
    return AUGMENTATIONS[strength](image_size)
