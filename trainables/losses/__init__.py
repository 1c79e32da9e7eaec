"""Segmentation losses behind a name -> class registry.

Every registered loss maps ``(logits, target)`` of shape (N, C, H, W) (raw logits, 0/1 target
of the same shape) to a scalar float32 tensor. By default outputs are multi-label sigmoid (one
channel per organ, organs may overlap); ``activation="softmax"`` reads them as multi-class with
the background as channel 0 and a one-hot target. Build them by name with :func:`build_loss`,
weighted sums with :func:`build_compound` / :func:`parse_compound`. How a sweep spec's ``params``
become flat knobs, Optuna dimensions and finally a built loss lives in one module,
:mod:`trainables.losses.knobs` (:func:`plan_knobs`, :func:`build_configured_loss`).
"""

from ._base import RegionLoss, SegmentationLoss
from .bce import SoftBCELoss
from .calf import CALF_TRANSFORMS, CalfLoss, calf_statistics, select_calf_transform
from .ce import CrossEntropyLoss, TopKCrossEntropyLoss, WeightedCrossEntropyLoss
from .compound import DiceSoftBCELoss, FocalPlusDiceLoss, WeightedSum, build_compound, parse_compound
from .dice import DiceLoss, FocalDiceLoss, GeneralizedDiceLoss, LogDiceLoss, TopKDiceLoss
from .focal import FocalLoss
from .knobs import (
    SEARCH,
    Dimension,
    KnobPlan,
    SearchRange,
    assemble_knobs,
    build_configured_loss,
    check_params,
    compound_terms,
    configured_knob_space,
    derived_knobs,
    expand_params,
    flat_knob_space,
    is_compound,
    plan_knobs,
    term_knobs,
)
from .pm_dice import PMDiceLoss
from .registry import (
    CONTEXT_OPTIONS,
    LOSSES,
    Knob,
    SumConstraint,
    build_loss,
    describe_losses,
    loss_constraints,
    loss_knobs,
    register_loss,
)
from .tversky import FocalTverskyLoss, IoUxyLoss, TverskyLoss

__all__ = [
    "SEARCH",
    "SearchRange",
    "Dimension",
    "KnobPlan",
    "build_configured_loss",
    "check_params",
    "compound_terms",
    "configured_knob_space",
    "derived_knobs",
    "expand_params",
    "is_compound",
    "plan_knobs",
    "term_knobs",
    "LOSSES",
    "CONTEXT_OPTIONS",
    "Knob",
    "SumConstraint",
    "register_loss",
    "build_loss",
    "loss_knobs",
    "loss_constraints",
    "flat_knob_space",
    "assemble_knobs",
    "describe_losses",
    "build_compound",
    "parse_compound",
    "calf_statistics",
    "select_calf_transform",
    "CALF_TRANSFORMS",
    "SegmentationLoss",
    "RegionLoss",
    "DiceLoss",
    "LogDiceLoss",
    "GeneralizedDiceLoss",
    "FocalDiceLoss",
    "TopKDiceLoss",
    "SoftBCELoss",
    "CrossEntropyLoss",
    "WeightedCrossEntropyLoss",
    "TopKCrossEntropyLoss",
    "FocalLoss",
    "TverskyLoss",
    "FocalTverskyLoss",
    "IoUxyLoss",
    "PMDiceLoss",
    "CalfLoss",
    "WeightedSum",
    "DiceSoftBCELoss",
    "FocalPlusDiceLoss",
]
