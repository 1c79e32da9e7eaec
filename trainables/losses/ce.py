"""Cross-entropy losses: CE, class-weighted CE (paper 003), TopK CE (paper 004 eq. 2).

References:

- paper 003: Furtado P. "Investigation of loss functions for improving deep segmentation of
  abdominal organs from MRI." University of Coimbra, undated manuscript; related published study:
  Furtado P. "Testing segmentation popular loss and variations in three multiclass medical imaging
  problems." J. Imaging 7(2):16, 2021. doi:10.3390/jimaging7020016
- paper 004: Hosseini S. M. "Pixel-wise modulated Dice loss for medical image segmentation." 2025.
  arXiv:2506.15744
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _functional as LF
from ._base import Activation, SegmentationLoss
from .registry import Knob, register_loss

__all__ = ["CrossEntropyLoss", "WeightedCrossEntropyLoss", "TopKCrossEntropyLoss", "pixel_cross_entropy"]


def pixel_cross_entropy(logits: Tensor, target: Tensor, activation: str, include_background: bool = True) -> Tensor:
    """Return the unreduced cross-entropy: (N, C, ...) BCE under sigmoid, (N, ...) CE under softmax.

    Softmax: ``-sum_c g_c log softmax(z)_c`` per pixel, all channels (the background cannot be
    dropped from a softmax CE without stopping false positives from costing anything).
    Sigmoid: ``-[g log p + (1 - g) log(1 - p)]`` per element, channel 0 dropped if
    ``include_background`` is False.
    """
    if activation == "softmax":
        return -(target * logits.log_softmax(dim=1)).sum(dim=1)
    if not include_background:
        logits, target = LF.drop_background(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none")


@register_loss("ce")
class CrossEntropyLoss(SegmentationLoss):
    """Cross-entropy: softmax CE over classes, or BCE per channel for multi-label sigmoid outputs.

    Softmax: ``L = -(1/N) sum_i sum_c g_ic log p_ic`` (paper 004 eq. 1), N pixels, one-hot ``g``;
    equals ``torch.nn.functional.cross_entropy(logits, target.argmax(1))``. Sigmoid (the GI organs,
    default): multi-label outputs have no softmax CE; each channel is a binary problem and
    ``L = -mean[g log p + (1 - g) log(1 - p)]`` over all elements, i.e. ``soft_bce`` without
    smoothing.

    Conventions: ``include_background=False`` drops channel 0 under sigmoid; under softmax it
    is ignored (the CE of a softmax couples all channels; dropping the background term would
    make false positives free), as MONAI's DiceCE does for its CE part.
    """

    knobs: ClassVar[dict[str, Knob]] = {}
    source: ClassVar[str] = (
        "paper 004 eq. 1 (Hosseini 2025, arXiv:2506.15744); "
        "paper 003, crossE unweighted (Furtado, undated manuscript; "
        "cf. J. Imaging 2021, doi:10.3390/jimaging7020016)"
    )

    def __init__(self, *, activation: Activation = "sigmoid", include_background: bool = True) -> None:
        super().__init__(activation=activation, include_background=include_background)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = LF.prepare(logits, target)
        if self.activation == "softmax":
            return F.cross_entropy(logits, target)  # probability targets: mean over pixels
        if not self.include_background:
            logits, target = LF.drop_background(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)


@register_loss("weighted_ce")
class WeightedCrossEntropyLoss(SegmentationLoss):
    """Class-weighted cross-entropy with inverse class-frequency weights from the training fold.

    Softmax: ``L = -(1/N) sum_i sum_c w_c g_ic log p_ic`` with ``w_c = 1 / (C f_c)``, ``f_c`` the
    share of training-fold pixels of class c (normalised to sum 1), so uniform frequencies give
    plain CE and ``sum_c f_c w_c = 1`` (paper 003 "crossE": "a class frequency inverse weight
    [applied] to the value for each pixel"). Sigmoid (multi-label): each channel c is its own binary
    problem with ``f_c`` its positive share; positives weigh ``1 / (2 f_c)``, negatives
    ``1 / (2 (1 - f_c))``, ``L = -mean[w+ g log p + w- (1 - g) log(1 - p)]``.

    Conventions: the mean divides by the pixel count, not by the sum of weights (torch's
    ``cross_entropy(weight=...)`` with class-index targets divides by the weights' sum; with
    probability targets it divides by N, as here). ``class_frequencies`` must come from the
    TRAINING fold only (one per output channel, background first under softmax) and be > 0
    (and < 1 under sigmoid): a class never seen in training has no finite inverse weight.
    ``include_background`` as in :class:`CrossEntropyLoss`.

    Args:
        class_frequencies: per-channel frequencies from the training fold (required).
    """

    knobs: ClassVar[dict[str, Knob]] = {}
    source: ClassVar[str] = (
        "paper 003, crossE (Furtado, undated manuscript; cf. J. Imaging 2021, doi:10.3390/jimaging7020016)"
    )

    def __init__(
        self,
        class_frequencies: Sequence[float] | None = None,
        *,
        activation: Activation = "sigmoid",
        include_background: bool = True,
    ) -> None:
        super().__init__(activation=activation, include_background=include_background)
        if class_frequencies is None:
            raise ValueError("weighted_ce needs class_frequencies (per channel, from the training fold)")
        freq = torch.as_tensor([float(f) for f in class_frequencies], dtype=torch.float64)
        if freq.numel() == 0 or not torch.isfinite(freq).all() or (freq <= 0).any():
            raise ValueError(f"weighted_ce class_frequencies must be finite and > 0, got {list(class_frequencies)}")
        if activation == "softmax":
            freq = freq / freq.sum()
            weights = 1.0 / (freq.numel() * freq)
            self.register_buffer("class_weights", weights.float())
        else:
            if (freq >= 1).any():
                raise ValueError(f"weighted_ce (sigmoid) class_frequencies must be < 1, got {list(class_frequencies)}")
            self.register_buffer("positive_weights", (0.5 / freq).float())
            self.register_buffer("negative_weights", (0.5 / (1.0 - freq)).float())
        self.class_frequencies = [float(f) for f in class_frequencies]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = LF.prepare(logits, target)
        if logits.shape[1] != len(self.class_frequencies):
            raise ValueError(
                f"weighted_ce got {len(self.class_frequencies)} class_frequencies for {logits.shape[1]} channels"
            )
        view = (1, -1) + (1,) * (logits.dim() - 2)
        if self.activation == "softmax":
            return F.cross_entropy(logits, target, weight=self.class_weights.to(logits.dtype))
        negative = self.negative_weights.to(logits.dtype).view(view)
        positive = self.positive_weights.to(logits.dtype).view(view)
        if not self.include_background:
            logits, target = LF.drop_background(logits, target)
            negative, positive = negative[:, 1:], positive[:, 1:]
        return F.binary_cross_entropy_with_logits(
            logits, target, weight=negative.expand_as(logits), pos_weight=positive / negative
        )


@register_loss("topk_ce")
class TopKCrossEntropyLoss(SegmentationLoss):
    """TopK cross-entropy: the mean CE of the K% hardest pixels of the batch.

    ``L = mean_{i in top K%} CE_i`` (paper 004 eq. 2; Wu Z., Shen C., van den Hengel A. "Bridging
    category-level and instance-level semantic image segmentation." arXiv:1605.06885, 2016;
    nnU-Net's TopK loss) with ``CE_i`` the per-pixel cross-entropy of :class:`CrossEntropyLoss`
    (softmax: one value per pixel; sigmoid: one per pixel and channel). ``k = 100`` gives ``ce``.

    Conventions: as nnU-Net, the K% is taken over the whole batch pooled (not per image), and
    the mean divides by the number kept (paper 004's eq. 2 writes 1/N, a constant factor
    K/100 away). ``ceil`` of the count, at least one. Selection needs a top-k over the batch,
    so this loss is slower than Dice (see ``benchmarks/losses.py``). ``include_background``
    as in :class:`CrossEntropyLoss`.

    Args:
        k: percent of pixels kept, hardest first (default 10, nnU-Net's TopK10).
    """

    knobs: ClassVar[dict[str, Knob]] = {
        "k": Knob(10.0, 1.0, 100.0, help="percent of pixels kept (hardest first)"),
    }
    source: ClassVar[str] = (
        "paper 004 eq. 2 (Hosseini 2025, arXiv:2506.15744); Wu et al. 2016, arXiv:1605.06885; nnU-Net TopK"
    )

    def __init__(self, k: float = 10.0, *, activation: Activation = "sigmoid", include_background: bool = True) -> None:
        super().__init__(activation=activation, include_background=include_background)
        self.k = float(k)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = LF.prepare(logits, target)
        return LF.topk_mean(pixel_cross_entropy(logits, target, self.activation, self.include_background), self.k)
