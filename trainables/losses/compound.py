"""Weighted sums of losses: any compound from a spec, and paper 000's two registered compounds.

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
- paper 004: Hosseini S. M. "Pixel-wise modulated Dice loss for medical image segmentation." 2025.
  arXiv:2506.15744
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from ._base import Activation
from .bce import SoftBCELoss
from .dice import DiceLoss
from .focal import FocalLoss
from .registry import LOSSES, Knob, build_loss, register_loss

__all__ = ["WeightedSum", "DiceSoftBCELoss", "FocalPlusDiceLoss", "build_compound", "parse_compound"]


class WeightedSum(nn.Module):
    """Sum of ``weight * loss(logits, target)`` over ``(weight, loss)`` terms.

    Weights must be finite and >= 0 with at least one > 0; a term with weight 0 is skipped in
    ``forward`` (not computed), so it cannot inject NaN or cost time.

    Args:
        terms: sequence of ``(weight, loss_module)`` pairs, each loss mapping
            ``(logits, target) -> scalar``.
    """

    def __init__(self, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        weights = [float(w) for w, _ in terms]
        if not weights:
            raise ValueError("WeightedSum needs at least one (weight, loss) term")
        if not all(math.isfinite(w) and w >= 0 for w in weights) or max(weights) <= 0:
            raise ValueError(f"WeightedSum weights must be finite, >= 0, not all 0: {weights}")
        self.weights: tuple[float, ...] = tuple(weights)
        self.terms = nn.ModuleList(loss for _, loss in terms)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        total: Tensor | None = None
        for weight, loss in zip(self.weights, self.terms):
            if weight == 0.0:
                continue
            value = weight * loss(logits, target)
            total = value if total is None else total + value
        assert total is not None  # guaranteed by the constructor
        return total

    def extra_repr(self) -> str:
        return f"weights={self.weights}"


_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = re.compile(rf"^\s*(?:(?P<weight>{_NUMBER})\s*\*\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$")


def parse_compound(spec: str) -> list[tuple[float, str]]:
    """Return ``[(weight, loss_name), ...]`` from a spec like ``"0.5*focal + 0.5*dice"``.

    A term is ``<weight> * <name>`` or ``<name>`` (weight 1): ``"ce + pm_dice"`` gives
    ``[(1.0, "ce"), (1.0, "pm_dice")]``. Weights are non-negative decimals (``1e-1`` allowed).

    Raises:
        ValueError: an empty spec or term, a term that is not ``weight * name``, a weight that
            is not finite or all weights 0, an unregistered loss name, or a name listed twice
            (add the weights instead). The message quotes the offending term.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("compound loss spec is empty; write e.g. '0.5*focal + 0.5*dice'")
    terms: list[tuple[float, str]] = []
    for raw in re.split(r"(?<![0-9][eE])\+", spec):
        match = _TERM.match(raw)
        if match is None:
            raise ValueError(
                f"compound loss spec {spec!r}: cannot read term {raw.strip()!r}; "
                "each term is '<weight>*<loss>' or '<loss>', joined by '+'"
            )
        weight = float(match["weight"]) if match["weight"] else 1.0
        name = match["name"]
        if not math.isfinite(weight):
            raise ValueError(f"compound loss spec {spec!r}: weight of {name!r} must be finite")
        if name not in LOSSES:
            raise ValueError(f"compound loss spec {spec!r}: unknown loss {name!r}; known losses: {sorted(LOSSES)}")
        if any(name == other for _, other in terms):
            raise ValueError(f"compound loss spec {spec!r}: {name!r} appears twice; add its weights")
        terms.append((weight, name))
    if max(w for w, _ in terms) <= 0:
        raise ValueError(f"compound loss spec {spec!r}: at least one weight must be > 0")
    return terms


def build_compound(
    terms: Sequence[tuple[float, str, dict[str, Any]] | tuple[float, str]], **context: Any
) -> WeightedSum:
    """Return the :class:`WeightedSum` of registered losses, each built by :func:`build_loss`.

    Args:
        terms: ``(weight, loss_name, knobs)`` triples (or ``(weight, loss_name)`` pairs, as
            :func:`parse_compound` returns, for default knobs).
        context: run options passed to every term's ``build_loss`` (``activation``,
            ``include_background``, ``class_frequencies``, ``foreground_areas``, ``n_classes``).

    Raises:
        KeyError / ValueError: from ``build_loss`` (unknown name or knob, out of range), or
            weights that are negative, non-finite or all 0.
    """
    built = []
    for term in terms:
        if len(term) not in (2, 3):
            raise ValueError(f"a compound term is (weight, name[, knobs]), got {term!r}")
        weight, name = term[0], term[1]
        knobs = dict(term[2]) if len(term) == 3 else {}  # type: ignore[misc]
        built.append((weight, build_loss(name, **context, **knobs)))
    return WeightedSum(built)


@register_loss("dice_soft_bce")
class DiceSoftBCELoss(WeightedSum):
    """Dice + SoftBCE: ``w Dice + (1 - w) SoftBCE`` with ``w`` = ``dice_weight``.

    Paper 000 uses ``0.5 L_Dice + 0.5 L_SoftBCE``, the default. The terms keep their own defaults:
    Dice ``smooth = 1`` (pooled over pixels and organ channels) and SoftBCE ``smoothing = 0``.
    ``activation`` and ``include_background`` are passed to both terms.

    Args:
        dice_weight: weight ``w`` of the Dice term; SoftBCE gets ``1 - w`` (default 0.5).
    """

    knobs: ClassVar[dict[str, Knob]] = {
        "dice_weight": Knob(0.5, 0.0, 1.0, help="weight of Dice; SoftBCE gets 1 - dice_weight"),
    }
    source: ClassVar[str] = "paper 000 (Hassan et al. 2026, doi:10.5281/zenodo.20729853)"

    def __init__(
        self, dice_weight: float = 0.5, *, activation: Activation = "sigmoid", include_background: bool = True
    ) -> None:
        options = dict(activation=activation, include_background=include_background)
        super().__init__([(dice_weight, DiceLoss(**options)), (1.0 - dice_weight, SoftBCELoss(**options))])
        self.dice_weight = float(dice_weight)


@register_loss("focal_plus_dice")
class FocalPlusDiceLoss(WeightedSum):
    """Focal + Dice: ``(1 - w) Focal(gamma) + w Dice`` with ``w`` = ``dice_weight`` (paper 000's compound).

    Paper 000 uses equal weights and gamma = 2, the defaults. Focal is the standard
    ``-(1 - p_t)^gamma log p_t`` without alpha weighting, averaged over all elements
    (:class:`~trainables.losses.focal.FocalLoss`); Dice keeps ``smooth = 1`` (pooled over pixels and
    organ channels). Registered as ``focal_dice`` before this version; ``focal_dice`` is now the
    Focal Dice loss of paper 004's baselines. The same sum is
    ``build_compound([(0.5, "focal", {}), (0.5, "dice", {})])``.

    Args:
        gamma: focal exponent (default 2.0).
        dice_weight: weight ``w`` of the Dice term; Focal gets ``1 - w`` (default 0.5).
    """

    knobs: ClassVar[dict[str, Knob]] = {
        "gamma": Knob(2.0, 0.0, 5.0, help="focal focusing exponent; 0 gives BCE"),
        "dice_weight": Knob(0.5, 0.0, 1.0, help="weight of Dice; Focal gets 1 - dice_weight"),
    }
    source: ClassVar[str] = "paper 000 (Hassan et al. 2026, doi:10.5281/zenodo.20729853)"

    def __init__(
        self,
        gamma: float = 2.0,
        dice_weight: float = 0.5,
        *,
        activation: Activation = "sigmoid",
        include_background: bool = True,
    ) -> None:
        options = dict(activation=activation, include_background=include_background)
        super().__init__(
            [(1.0 - dice_weight, FocalLoss(gamma=gamma, alpha=None, **options)), (dice_weight, DiceLoss(**options))]
        )
        self.gamma = float(gamma)
        self.dice_weight = float(dice_weight)
