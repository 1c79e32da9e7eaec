"""Base classes: the output convention (sigmoid / softmax, background) shared by every loss.

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
- paper 003: Furtado P. "Investigation of loss functions for improving deep segmentation of
  abdominal organs from MRI." University of Coimbra, undated manuscript; related published study:
  Furtado P. "Testing segmentation popular loss and variations in three multiclass medical imaging
  problems." J. Imaging 7(2):16, 2021. doi:10.3390/jimaging7020016
- paper 004: Hosseini S. M. "Pixel-wise modulated Dice loss for medical image segmentation." 2025.
  arXiv:2506.15744
"""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import Tensor, nn

from . import _functional as LF
from .registry import Knob, SumConstraint

__all__ = ["SegmentationLoss", "RegionLoss", "Activation"]

Activation = Literal["sigmoid", "softmax"]


class SegmentationLoss(nn.Module):
    """Base of every registered loss: maps ``(logits, target)`` to a scalar.

    Keyword-only options taken by every loss (not knobs; the run fixes them):

    - ``activation="sigmoid"``: multi-label outputs, one independent channel per organ
      (paper 000's GI organs, which may overlap). ``"softmax"``: multi-class outputs over
      channel dim 1 with the background as channel 0 (CHAOS/ACDC style); the target is the
      one-hot mask of the logits' shape.
    - ``include_background=True``: ``False`` drops channel 0 from the loss's sums (paper 003's
      diceBK). The caller declares that channel 0 is a background channel; under sigmoid the GI
      organs have none, so leave the default there. How each loss reads it is in its docstring.

    Shape:
        logits, target: (N, C, *spatial), target 0/1 of the same shape. Returns a scalar tensor,
        float32 whatever the input dtype (float64 stays float64).
    """

    knobs: ClassVar[dict[str, Knob]] = {}
    constraints: ClassVar[tuple[SumConstraint, ...]] = ()
    source: ClassVar[str] = ""

    def __init__(self, *, activation: Activation = "sigmoid", include_background: bool = True) -> None:
        super().__init__()
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")
        self.activation: Activation = activation
        self.include_background = bool(include_background)

    def probabilities(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(p, g)`` in the compute dtype, without channel 0 if the background is excluded."""
        logits, target = LF.prepare(logits, target)
        probs = LF.activate(logits, self.activation)
        if not self.include_background:
            probs, target = LF.drop_background(probs, target)
        return probs, target

    def extra_repr(self) -> str:
        knobs = ", ".join(f"{k}={getattr(self, k, None)}" for k in self.knobs)
        options = f"activation={self.activation!r}, include_background={self.include_background}"
        return f"{knobs}, {options}" if knobs else options


class RegionLoss(SegmentationLoss):
    """Base of the overlap (Dice-family) losses: adds how the soft sums are pooled.

    Options (keyword-only, not knobs):

    - ``per_class``: ``True`` computes one score per class and averages the classes (papers
      003, 004); ``False`` pools every class into one score (paper 000 eq. 1).
    - ``batch``: ``True`` sums over the whole batch before the ratio (paper 000; smp's
      default); ``False`` computes one score per image and averages the images.
    """

    def __init__(
        self,
        *,
        per_class: bool,
        batch: bool = True,
        activation: Activation = "sigmoid",
        include_background: bool = True,
    ) -> None:
        super().__init__(activation=activation, include_background=include_background)
        self.per_class = bool(per_class)
        self.batch = bool(batch)

    def sums(self, probs: Tensor, target: Tensor, squared: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(tp, sum p, sum g)``, shaped (C,), (N, C), () or (N,) by ``batch``/``per_class``."""
        tp, sp, sg = LF.overlap_sums(probs, target, LF.region_dims(probs.dim(), self.batch), squared)
        if not self.per_class:
            tp, sp, sg = tp.sum(-1), sp.sum(-1), sg.sum(-1)
        return tp, sp, sg

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, per_class={self.per_class}, batch={self.batch}"
