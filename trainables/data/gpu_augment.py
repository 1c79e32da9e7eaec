"""Batched geometric augmentation on the training device: seed000's flips, affine, elastic and grid
distortion as ONE ``grid_sample`` per batch, image bilinear and mask nearest.

For when the trial has too few CPU cores to keep its GPU fed (``training.gpu_augmentation``): the
DataLoader workers then run only the intensity transforms (:func:`build_augmentation` with
``geometric=False``) and the training step calls :class:`BatchGeometricAugment` on the batch.
Parameters are drawn from :data:`trainables.data.augment.GEOMETRY` -- the ranges the
Albumentations pipeline reads -- with the same distributions (``tests/trainables/test_speed_paths.py``
compares the statistics of both paths):

- horizontal / vertical flip, each with its probability;
- affine about the centre (Albumentations ``Affine``: scale x and y drawn apart, translation a
  fraction of the side truncated to whole pixels, rotation in degrees, zero fill);
- one warp with ``warp_p``: elastic (the displacement field of
  :func:`trainables.data.augment.smooth_displacement`, same covariance) or grid distortion
  (``GridDistortion``'s normalised piecewise-linear steps), each half the time.

The transforms compose into one sampling grid, so a slice is resampled once instead of up to four
times. Differences from the CPU path, none in the sampled parameters: intensity jitter runs before
the warp instead of after (they commute except in the zero-filled border and through gamma's
curvature), and one interpolation instead of several.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainables.data.augment import GEOMETRY, GeometricRanges, blur_basis

__all__ = ["BatchGeometricAugment", "GeometricParams", "apply_geometric", "sample_geometric"]


@dataclass
class GeometricParams:
    """Per-slice parameters of one batch; every tensor has the batch first, on the batch's device.

    ``hflip``, ``vflip``, ``affine``, ``elastic``, ``grid`` (bool): which transforms apply.
    ``rotate`` (degrees), ``scale`` ((B, 2) x, y), ``translate`` ((B, 2) x, y, whole pixels as a
    fraction of the side): drawn for every slice, used where ``affine``. ``displacement``
    ((B, 2, H, W) dx, dy in pixels): used where ``elastic``. ``grid_x`` (B, W), ``grid_y`` (B, H):
    source coordinate of each output column / row, used where ``grid``.
    """

    hflip: torch.Tensor
    vflip: torch.Tensor
    affine: torch.Tensor
    rotate: torch.Tensor
    scale: torch.Tensor
    translate: torch.Tensor
    elastic: torch.Tensor
    grid: torch.Tensor
    displacement: torch.Tensor
    grid_x: torch.Tensor
    grid_y: torch.Tensor


def _uniform(shape, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def _grid_segments(n: int, num_steps: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (segment of each pixel, position 0..1 inside its segment) of GridDistortion's grid."""
    step = n // num_steps
    pixels = torch.arange(n, device=device)
    segment = torch.clamp(pixels // step, max=num_steps)
    start = segment * step
    count = torch.clamp(start + step, max=n) - start
    t = (pixels - start).float() / torch.clamp(count - 1, min=1).float()
    return segment, t


def _grid_coordinates(steps: torch.Tensor, n: int, num_steps: int) -> torch.Tensor:
    """Returns (B, n) source coordinates along one axis of ``GridDistortion`` for (B, num_steps + 1)
    raw steps ``1 + U(-limit, limit)``, normalised as Albumentations does (``normalized=True``)."""
    step = n // num_steps
    steps = steps.clone()
    last = min(n, (num_steps + 1) * step) - num_steps * step
    steps[:, -1] *= last / step  # the last segment is shorter
    steps = steps * ((n / math.floor(n / num_steps)) / steps.sum(dim=1, keepdim=True))  # stays inside
    ends = torch.cumsum(step * steps, dim=1)
    starts = ends - step * steps
    segment, t = _grid_segments(n, num_steps, steps.device)
    return starts[:, segment] + t * (ends[:, segment] - starts[:, segment])


_BASES: dict[tuple[int, float, str], torch.Tensor] = {}


def _basis(n: int, sigma: float, device) -> torch.Tensor:
    key = (n, sigma, str(device))
    if key not in _BASES:
        _BASES[key] = torch.from_numpy(blur_basis(n, sigma)).to(device)
    return _BASES[key]


def sample_geometric(
    batch: int,
    height: int,
    width: int,
    ranges: GeometricRanges,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> GeometricParams:
    """Returns the parameters of ``batch`` slices drawn from ``ranges`` with ``generator`` (which
    must live on ``device``); nothing leaves the device."""
    g, dev, b = generator, device, batch
    warp = torch.rand(b, generator=g, device=dev) < ranges.warp_p
    elastic_pick = torch.rand(b, generator=g, device=dev) < 0.5
    basis_h = _basis(2 * height, float(ranges.elastic_sigma), dev)  # dx stacked on dy, as Albumentations
    basis_w = _basis(width, float(ranges.elastic_sigma), dev)
    z = torch.randn((b, basis_h.shape[1], basis_w.shape[1]), generator=g, device=dev)
    z = z * (ranges.elastic_alpha / math.sqrt(3.0))
    displacement = (basis_h @ z @ basis_w.T).reshape(b, 2, height, width)
    k = ranges.grid_steps + 1
    limit = ranges.grid_distort
    return GeometricParams(
        hflip=torch.rand(b, generator=g, device=dev) < ranges.hflip_p,
        vflip=torch.rand(b, generator=g, device=dev) < ranges.vflip_p,
        affine=torch.rand(b, generator=g, device=dev) < ranges.affine_p,
        rotate=_uniform(b, *ranges.rotate, g, dev),
        scale=_uniform((b, 2), *ranges.scale, g, dev),
        translate=torch.trunc(_uniform((b, 2), *ranges.translate, g, dev) * torch.tensor([width, height], device=dev))
        / torch.tensor([width, height], device=dev),
        elastic=warp & elastic_pick,
        grid=warp & ~elastic_pick,
        displacement=displacement,
        grid_x=_grid_coordinates(1 + _uniform((b, k), -limit, limit, g, dev), width, ranges.grid_steps),
        grid_y=_grid_coordinates(1 + _uniform((b, k), -limit, limit, g, dev), height, ranges.grid_steps),
    )


def sampling_grid(params: GeometricParams, height: int, width: int) -> torch.Tensor:
    """Returns the (B, H, W, 2) ``grid_sample`` grid (x, y in [-1, 1], ``align_corners=False``)
    that applies flips, then affine, then the warp: output pixel -> warp -> inverse affine -> flips."""
    device = params.rotate.device
    b = params.rotate.shape[0]
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    x = xs.expand(b, height, width)
    y = ys.expand(b, height, width)
    # the warp (last on the CPU path) is the first step back from an output pixel
    elastic = params.elastic.view(b, 1, 1)
    grid = params.grid.view(b, 1, 1)
    x = torch.where(elastic, x + params.displacement[:, 0], x)
    y = torch.where(elastic, y + params.displacement[:, 1], y)
    x = torch.where(grid, params.grid_x[:, None, :].expand(b, height, width), x)
    y = torch.where(grid, params.grid_y[:, :, None].expand(b, height, width), y)
    # inverse affine: dst = R S (src - c) + c + t  =>  src = S^-1 R^T (dst - c - t) + c, with
    # Albumentations' rotation matrix R = [[cos, sin], [-sin, cos]] about c = (W/2 - 0.5, H/2 - 0.5)
    angle = torch.deg2rad(params.rotate).view(b, 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = width / 2 - 0.5, height / 2 - 0.5
    u = x - cx - (params.translate[:, 0] * width).view(b, 1, 1)
    v = y - cy - (params.translate[:, 1] * height).view(b, 1, 1)
    ax = (cos * u - sin * v) / params.scale[:, 0].view(b, 1, 1) + cx
    ay = (sin * u + cos * v) / params.scale[:, 1].view(b, 1, 1) + cy
    affine = params.affine.view(b, 1, 1)
    x, y = torch.where(affine, ax, x), torch.where(affine, ay, y)
    x = torch.where(params.hflip.view(b, 1, 1), (width - 1) - x, x)
    y = torch.where(params.vflip.view(b, 1, 1), (height - 1) - y, y)
    return torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1)


def apply_geometric(
    images: torch.Tensor, masks: torch.Tensor, params: GeometricParams, *, one_hot: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (images, masks) resampled with ``params``: images (B, K, H, W) bilinear, masks
    (B, C, H, W) 0/1 nearest, both zero outside the source. ``one_hot`` (softmax masks, channel 0
    background): a pixel warped in from outside the source is background, ``m_0 = 1 - max_c m_c``
    over the classes, as the CPU path (``SliceDataset``) does."""
    height, width = images.shape[-2:]
    grid = sampling_grid(params, height, width).to(images.dtype)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks, grid.to(masks.dtype), mode="nearest", padding_mode="zeros", align_corners=False)
    if one_hot:
        masks[:, 0] = 1.0 - masks[:, 1:].amax(dim=1)
    return images, masks


class BatchGeometricAugment:
    """Warps training batches on their device: ``images, masks = augment(images, masks)``.

    Args:
        strength: a key of :data:`trainables.data.augment.GEOMETRY` (``"none"``: identity).
        seed: seeds the generator (on ``device``), so a trial's batches repeat with its seed.
        device: where batches arrive and parameters are drawn.
        one_hot: masks are one-hot with channel 0 background (softmax trials): see :func:`apply_geometric`.

    ``last_params`` holds the parameters of the latest batch (None before the first).
    """

    def __init__(
        self, strength: str = "seed000", *, seed: int = 0, device: torch.device | str = "cpu", one_hot: bool = False
    ):
        if strength not in GEOMETRY:
            raise KeyError(f"unknown augmentation {strength!r}; choose from {sorted(GEOMETRY)}")
        self.ranges = GEOMETRY[strength]
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self.one_hot = one_hot
        self.last_params: GeometricParams | None = None

    def sample(self, batch: int, height: int, width: int) -> GeometricParams:
        """Returns the parameters of ``batch`` slices (advances the generator)."""
        return sample_geometric(batch, height, width, self.ranges, self.generator, self.device)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ranges is None:
            return images, masks
        self.last_params = self.sample(images.shape[0], *images.shape[-2:])
        return apply_geometric(images, masks, self.last_params, one_hot=self.one_hot)
