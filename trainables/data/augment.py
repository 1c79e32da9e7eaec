"""Training augmentation of paper 000: flips, shift-scale-rotate, elastic and grid distortion,
brightness, contrast and gamma jitter (Albumentations, on CPU in the DataLoader workers).

The parameter ranges live in one place (:class:`GeometricRanges`, :class:`IntensityRanges`) and
are read both by the Albumentations pipeline here and by the batched on-device path of
:mod:`trainables.data.gpu_augment`, so the two sample the same distributions. With
``geometric=False`` the pipeline keeps only the intensity transforms (the training step then warps
the batch on the device).

Three changes against stock Albumentations, all keeping the sampled parameters' distributions
(checked by ``tests/trainables/test_speed_paths.py``):

- the elastic displacement field is drawn in the low-rank basis of its own blur
  (:func:`smooth_displacement`): the same covariance as blurring full-size uniform noise with
  OpenCV's 401-tap kernel (sigma 50), for 0.1 ms instead of 11 ms at 224 x 224;
- brightness/contrast and gamma on float32 images run as float32 in-place numpy / ``cv2.pow``
  instead of Albumentations' float64 OpenCV round trip (same ``alpha``, ``beta``, ``gamma``);
- :func:`seed_transform` gives the whole pipeline ONE random stream: ``A.Compose(seed=k)`` seeds
  every transform with the same ``k``, so horizontal and vertical flips (and every other p-draw)
  would fire together.

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # Albumentations checks for updates on import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "AUGMENTATIONS",
    "GEOMETRY",
    "GeometricRanges",
    "IntensityRanges",
    "build_augmentation",
    "record_geometric_parameters",
    "blur_basis",
    "seed_transform",
    "smooth_displacement",
]


@dataclass(frozen=True)
class GeometricRanges:
    """Geometric transforms in the order applied: flips, affine, then one warp (elastic or grid).

    Probabilities are per slice. ``translate`` is a fraction of the side, ``rotate`` in degrees,
    ``scale`` drawn independently for x and y (Albumentations ``Affine(keep_ratio=False)``).
    ``warp_p`` is the chance that one of the two warps applies (each then with 1/2).
    """

    hflip_p: float = 0.5
    vflip_p: float = 0.5
    affine_p: float = 0.5
    scale: tuple[float, float] = (0.9, 1.1)
    translate: tuple[float, float] = (-0.0625, 0.0625)
    rotate: tuple[float, float] = (-15.0, 15.0)
    warp_p: float = 0.25
    elastic_alpha: float = 1.0
    elastic_sigma: float = 50.0
    grid_steps: int = 5
    grid_distort: float = 0.3


@dataclass(frozen=True)
class IntensityRanges:
    """Image-only jitter: brightness/contrast (``alpha = 1 + U(-c, c)``, ``beta = U(-b, b)``), gamma in percent."""

    brightness: float = 0.2
    contrast: float = 0.2
    brightness_contrast_p: float = 0.5
    gamma: tuple[float, float] = (80.0, 120.0)
    gamma_p: float = 0.3


# paper 000 via the community notebooks it follows: moderate probabilities; elastic and grid
# distortion share one slot (OneOf) so a slice is warped at most once.
SEED000_GEOMETRY = GeometricRanges()
SEED000_INTENSITY = IntensityRanges()

#: strength name -> geometric ranges (None: no geometric augmentation); read by gpu_augment
GEOMETRY: dict[str, GeometricRanges | None] = {"seed000": SEED000_GEOMETRY, "none": None}
_INTENSITY: dict[str, IntensityRanges | None] = {"seed000": SEED000_INTENSITY, "none": None}

# singular values below this share of the largest are dropped from the elastic blur basis
_BASIS_TOLERANCE = 1e-4


@lru_cache(maxsize=16)
def blur_basis(n: int, sigma: float) -> np.ndarray:
    """Returns ``A = U_k S_k`` (n, k) float32, the left factor of the 1D blur operator ``G = U S V^T``.

    ``G`` (n, n) is ``cv2.GaussianBlur``'s operator along one axis: the kernel OpenCV picks for a
    float image (``2 * round(4 sigma) + 1`` taps) with a replicated border folded in, so that
    ``G @ N @ G.T`` equals ``cv2.GaussianBlur(N, (0, 0), sigma, borderType=BORDER_REPLICATE)``.
    ``A`` keeps the k singular values above 1e-4 of the largest (8 for n = 224, sigma = 50: the
    blur is that smooth).
    """
    ksize = int(round(sigma * 4 * 2 + 1)) | 1
    kernel = cv2.getGaussianKernel(ksize, sigma, cv2.CV_64F)[:, 0]
    radius = ksize // 2
    operator = np.zeros((n, n))
    rows = np.arange(n)
    for t in range(-radius, radius + 1):
        np.add.at(operator, (rows, np.clip(rows + t, 0, n - 1)), kernel[t + radius])
    u, s, _ = np.linalg.svd(operator)
    k = max(1, int(np.sum(s > _BASIS_TOLERANCE * s[0])))
    return np.ascontiguousarray(u[:, :k] * s[:k], dtype=np.float32)


def smooth_displacement(shape: tuple[int, int], alpha: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Returns a (2, H, W) float32 elastic displacement field in pixels (dx, dy), distributed as
    Albumentations' ``ElasticTransform`` field.

    Albumentations draws uniform(-1, 1) noise ``N`` per pixel, blurs it with ``sigma`` (replicated
    border; dx stacked on dy as one (2H, W) image) and multiplies by ``alpha``:
    ``F = alpha G_2H N G_W^T`` (:func:`blur_basis`). With ``G = U S V^T``, ``Z = V_2H^T N V_W`` has
    uncorrelated entries of variance 1/3, each a sum of 2 H W independent terms (so Gaussian), and
    ``F = alpha (U S)_2H Z (U S)_W^T``: drawing the
    k x k matrix ``Z`` gives the same field distribution for two small matrix products instead of
    two 401-tap blurs of a full-size array (0.1 ms instead of 11 ms at 224 x 224).
    """
    height, width = shape
    # Albumentations blurs dx stacked on top of dy as one (2H, W) image, so the two fields meet
    # (and are correlated) at their shared edge; the basis of the stacked height keeps that.
    basis_h, basis_w = blur_basis(2 * height, float(sigma)), blur_basis(width, float(sigma))
    z = rng.standard_normal((basis_h.shape[1], basis_w.shape[1]), dtype=np.float32)
    z *= np.float32(alpha / np.sqrt(3.0))
    # cv2.gemm: NumPy's BLAS would start its thread pool for these tiny products (10x slower on
    # a busy machine)
    field = cv2.gemm(cv2.gemm(basis_h, z, 1.0, None, 0.0), basis_w, 1.0, None, 0.0, flags=cv2.GEMM_2_T)
    return field.reshape(2, height, width)


class _CoarseElasticTransform(A.ElasticTransform):
    """``A.ElasticTransform`` with the field of :func:`smooth_displacement` (same distribution, cheaper)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        dx, dy = smooth_displacement((height, width), self.alpha, self.sigma, self.random_generator)
        if (height, width) not in self._grids:
            self._grids[(height, width)] = np.meshgrid(
                np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
            )
        x, y = self._grids[(height, width)]
        return {"map_x": x + dx, "map_y": y + dy, "dx": dx, "dy": dy}


class _BrightnessContrast(A.RandomBrightnessContrast):
    """``A.RandomBrightnessContrast`` (same ``alpha``, ``beta``) computed in float32 in place for float images."""

    def apply(self, img: np.ndarray, alpha: float, beta: float, **params: Any) -> np.ndarray:
        if img.dtype != np.float32:
            return super().apply(img, alpha, beta, **params)
        out = img * np.float32(alpha)
        out += np.float32(beta)
        return np.clip(out, 0.0, 1.0, out=out)


class _Gamma(A.RandomGamma):
    """``A.RandomGamma`` (same ``gamma``) through ``cv2.pow`` for float images (5x faster than ``np.power``)."""

    def apply(self, img: np.ndarray, gamma: float, **params: Any) -> np.ndarray:
        if img.dtype != np.float32:
            return super().apply(img, gamma=gamma, **params)
        return cv2.pow(np.ascontiguousarray(img), float(gamma))


def _geometric(g: GeometricRanges) -> list:
    return [
        A.HorizontalFlip(p=g.hflip_p),
        A.VerticalFlip(p=g.vflip_p),
        A.Affine(
            scale=g.scale,
            translate_percent=g.translate,
            rotate=g.rotate,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
            p=g.affine_p,
        ),
        A.OneOf(
            [
                _CoarseElasticTransform(alpha=g.elastic_alpha, sigma=g.elastic_sigma, p=1.0),
                A.GridDistortion(num_steps=g.grid_steps, distort_limit=g.grid_distort, p=1.0),
            ],
            p=g.warp_p,
        ),
    ]


def _intensity(i: IntensityRanges) -> list:
    return [
        _BrightnessContrast(brightness_limit=i.brightness, contrast_limit=i.contrast, p=i.brightness_contrast_p),
        _Gamma(gamma_limit=i.gamma, p=i.gamma_p),
    ]


def _seed000(image_size: int, geometric: bool = True, intensity: bool = True) -> A.Compose | None:
    # Geometric transforms move image and mask together (mask with nearest-neighbour); intensity
    # transforms touch the image only.
    transforms = (_geometric(SEED000_GEOMETRY) if geometric else []) + (
        _intensity(SEED000_INTENSITY) if intensity else []
    )
    return A.Compose(transforms) if transforms else None


#: strength name -> builder(image_size, geometric=True, intensity=True) of an Albumentations pipeline
#: (None: nothing to do)
AUGMENTATIONS = {
    "seed000": _seed000,
    "none": lambda image_size, geometric=True, intensity=True: None,
}


def build_augmentation(
    image_size: int,
    strength: str = "seed000",
    *,
    geometric: bool = True,
    intensity: bool = True,
    seed: int | None = None,
) -> A.Compose | None:
    """Returns the Albumentations pipeline named ``strength`` for float32 HWC images in [0, 1] and
    HWC uint8 masks, or ``None`` when nothing is left to do (``"none"``, or both parts off).

    Args:
        image_size: side of the slices.
        strength: a key of :data:`AUGMENTATIONS`.
        geometric: keep flips, affine and warps (off when the training step warps on the device).
        intensity: keep brightness/contrast and gamma.
        seed: seeds the pipeline's single random stream (:func:`seed_transform`); None: OS entropy.
    """
    if strength not in AUGMENTATIONS:
        raise KeyError(f"unknown augmentation {strength!r}; choose from {sorted(AUGMENTATIONS)}")
    pipeline = AUGMENTATIONS[strength](image_size, geometric=geometric, intensity=intensity)
    if pipeline is not None:
        seed_transform(pipeline, seed)
    return pipeline


def seed_transform(transform, seed: int | None) -> None:
    """Gives an Albumentations pipeline one NumPy and one Python random stream from ``seed``.

    Albumentations draws from the pipeline's own generators, never the global ones, so
    DataLoader workers must call this (``worker_init_fn``) for reproducible batches. One shared
    stream, not ``Compose(seed=...)``: that seeds each transform with the same value, which makes
    every transform's apply-or-not draw identical (both flips always together). No-op for None.
    """
    if transform is None or not hasattr(transform, "set_random_state"):
        return
    seed = None if seed is None else int(seed) % 2**32
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


def record_geometric_parameters(
    n: int, strength: str = "seed000", image_size: int = 64, seed: int = 0
) -> dict[str, np.ndarray]:
    """Returns the geometric parameters the CPU pipeline drew for ``n`` slices, keyed as
    :class:`trainables.data.gpu_augment.GeometricParams` (for comparing the two paths' statistics).

    Keys: ``hflip``, ``vflip``, ``affine``, ``elastic``, ``grid`` (bool, (n,)), and for the slices
    where the affine applied: ``rotate`` (degrees), ``scale`` ((m, 2) x, y), ``translate``
    ((m, 2), fraction of the side); ``displacement_std`` (pixels, slices with an elastic warp).
    """
    pipeline = build_augmentation(image_size, strength, intensity=False, seed=seed)
    pipeline.save_applied_params = True
    image = np.zeros((image_size, image_size, 1), np.float32)
    mask = np.zeros((image_size, image_size, 1), np.uint8)
    centre = np.array([image_size / 2 - 0.5, image_size / 2 - 0.5])
    flags = {k: np.zeros(n, bool) for k in ("hflip", "vflip", "affine", "elastic", "grid")}
    rotate, scale, translate, displacement = [], [], [], []
    names = {
        "HorizontalFlip": "hflip",
        "VerticalFlip": "vflip",
        "Affine": "affine",
        "_CoarseElasticTransform": "elastic",
        "GridDistortion": "grid",
    }
    for i in range(n):
        for name, params in pipeline(image=image, mask=mask)["applied_transforms"]:
            if name in names:
                flags[names[name]][i] = True
            if name == "Affine":
                rotate.append(params["rotate"])
                scale.append((params["scale"]["x"], params["scale"]["y"]))
                matrix = params["matrix"]
                # the centre moves by the translation alone (rotation and scale are about it)
                translate.append((matrix[:2, :2] @ centre + matrix[:2, 2] - centre) / image_size)
            elif name == "_CoarseElasticTransform":
                displacement.append(float(np.std(np.stack([params["dx"], params["dy"]]))))
    return {
        **flags,
        "rotate": np.array(rotate),
        "scale": np.array(scale).reshape(-1, 2),
        "translate": np.array(translate).reshape(-1, 2),
        "displacement_std": np.array(displacement),
    }
