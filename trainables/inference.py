"""A fold trial's inference: its network, its validation slices, its probabilities and predictions.

The trial (:mod:`trainables.train`) and the sweep report (``sweeper.report``) both go through these
functions, so what the report shows is what the trial scored:

- :func:`build_network`: the trial's network: its architecture and encoder, ``2 * context + 1``
  input channels, one output channel per entry of ``classes`` (under softmax, background channel 0
  included), from one network or one binary network per class (``heads``);
- :func:`validation_slices`: the fold's validation slices, read from the prepared cache with the
  trial's 2.5D context;
- :func:`load_network`: that network holding a trial's saved weights, in evaluation mode on the CPU;
- :func:`probabilities`: the activation the trial's loss applies (sigmoid per channel, or softmax
  over the channels), the function the losses call;
- :func:`predict_slices`: probabilities of chosen validation slices in batches on the CPU, the
  predicted masks as the trial's metrics define them (``p >= threshold`` under sigmoid, the one-hot
  argmax under softmax) and each slice's dice as the trial's metrics compute it.

``cfg`` is the trial's settings, a :class:`trainables.contract.TrialConfig` (the report reads it from
the trial's Tune ``params.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from trainables.contract import TrialConfig
from trainables.data import SliceDataset
from trainables.heads import HEADS
from trainables.losses._functional import activate
from trainables.metrics import SegmentationMetrics, confusion_counts, per_image_scores
from trainables.metrics.confusion import probability_planes
from trainables.models import build_model

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SlicePredictions",
    "build_network",
    "load_network",
    "organ_channels",
    "predict_slices",
    "predicted_masks",
    "probabilities",
    "reported_channels",
    "validation_slices",
]


def build_network(cfg: TrialConfig, *, pretrained: bool = True) -> nn.Module:
    """Returns the trial's network (logits, no activation), as the trial trains it: one network, or one
    binary network per class combined into the same logits (``heads: uniclass``, :mod:`trainables.heads`).

    ``pretrained=False`` builds it without the encoder's pretrained weights (nothing downloaded):
    for loading a trained trial's own weights over it.
    """

    def network(classes: int) -> nn.Module:
        return build_model(
            cfg.arch,
            cfg.encoder,
            in_channels=2 * cfg.context + 1,
            classes=classes,
            encoder_weights=cfg.encoder_weights if pretrained else None,
            image_size=cfg.image_size,
        )

    return HEADS[cfg.heads].network(cfg, network)


def validation_slices(cfg: TrialConfig, cache_dir: str | Path | None = None) -> SliceDataset:
    """Returns the trial's validation slices (fold ``cfg.fold``, the trial's context, no augmentation).

    ``cache_dir``: the prepared cache, when it is no longer where the trial read it (default
    ``cfg.cache_dir``).
    """
    return SliceDataset(cache_dir or cfg.cache_dir, [cfg.fold], context=cfg.context)


def load_network(cfg: TrialConfig, weights: str | Path) -> nn.Module:
    """Returns the trial's network holding the weights saved at ``weights`` (a state dict), on the
    CPU in evaluation mode.

    Raises:
        RuntimeError: the weights do not fit the network the settings describe (torch's message
            names the mismatched layers).
    """
    model = build_network(cfg, pretrained=False)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def probabilities(logits: Tensor, activation: str) -> Tensor:
    """Returns per-pixel probabilities: ``sigmoid(logits)`` (multi-label) or ``softmax(logits, dim=1)``
    (multi-class); the activation every loss applies (``SegmentationLoss.probabilities``)."""
    return activate(logits.float(), activation)


def predicted_masks(probs: Tensor, threshold: float, activation: str) -> Tensor:
    """Returns the (N, C, H, W) bool prediction of (N, C, H, W) probabilities, as the metrics take it:
    ``p >= threshold`` under sigmoid, the one-hot of the channel argmax under softmax."""
    return probability_planes(probs, threshold, activation, torch.float32)[:, :, 1] != 0


def reported_channels(cfg: TrialConfig) -> slice:
    """Returns the channels the trial's metrics report: all, or all but background channel 0 under
    softmax without ``include_background`` (``SegmentationMetrics.reported_classes``)."""
    metrics = SegmentationMetrics(
        cfg.classes,
        threshold=cfg.threshold,
        boundary=False,
        activation=cfg.activation,
        include_background=cfg.include_background,
    )
    return slice(len(cfg.classes) - len(metrics.reported_classes), None)


def organ_channels(cfg: TrialConfig) -> slice:
    """Returns the channels that are organs (drawn in an overlay): all under sigmoid; under softmax
    all but background channel 0, whatever the metrics report."""
    return slice(1, None) if cfg.activation == "softmax" else slice(0, None)


@dataclass(frozen=True)
class SlicePredictions:
    """A trained network's predictions on some validation slices, with the trial's per-slice scores.

    Attributes:
        rows: the slices' rows of the cache index (``id``, ``scan``, ``position``, ``has_<class>``, ...).
        images: (N, H, W) the centre slice of each 2.5D input.
        truth: (N, C, H, W) bool ground truth, every model channel.
        pred: (N, C, H, W) bool prediction, every model channel (:func:`predicted_masks`).
        classes: the reported classes (``dice`` columns), e.g. ``("RV", "MYO", "LV")``.
        dice: (N, len(classes)) per-slice dice of each reported class, the trial's per-image dice
            (:func:`trainables.metrics.per_image_scores` of :func:`trainables.metrics.confusion_counts`).
    """

    rows: pd.DataFrame
    images: np.ndarray
    truth: np.ndarray
    pred: np.ndarray
    classes: tuple[str, ...]
    dice: np.ndarray

    @property
    def slice_dice(self) -> np.ndarray:
        """Returns (N,) each slice's overall dice: the mean over the reported classes (classes NaN
        under the empty rule left out), as the metrics average classes."""
        defined = ~np.isnan(self.dice)
        total = np.where(defined, self.dice, 0.0).sum(axis=1)
        return np.where(defined.any(axis=1), total / np.maximum(defined.sum(axis=1), 1), np.nan)


@torch.inference_mode()
def predict_slices(
    cfg: TrialConfig,
    model: nn.Module,
    dataset: SliceDataset,
    positions: Sequence[int] | None = None,
    batch_size: int | None = None,
) -> SlicePredictions:
    """Returns the predictions of ``model`` on the slices at ``positions`` of ``dataset`` (default all).

    Runs in batches of ``batch_size`` (default the trial's ``cfg.batch_size``) on the model's device
    (the CPU for :func:`load_network`), and keeps the masks as bool arrays.
    """
    chosen = np.arange(len(dataset)) if positions is None else np.asarray(positions, dtype=int)
    step = int(batch_size or cfg.batch_size)
    device = next(model.parameters()).device
    reported = reported_channels(cfg)
    images, truths, preds, dice = [], [], [], []
    for start in range(0, len(chosen), step):
        batch = [dataset[int(i)] for i in chosen[start : start + step]]
        x = torch.stack([b[0] for b in batch]).to(device)
        y = torch.stack([b[1] for b in batch]).to(device)
        pred = predicted_masks(probabilities(model(x), cfg.activation), cfg.threshold, cfg.activation)
        truth = y != 0
        counts = (c.double() for c in confusion_counts(pred[:, reported], truth[:, reported]))  # float64 as the metrics
        dice.append(per_image_scores(*counts)["dice"].cpu().numpy())
        images.append(x[:, cfg.context].cpu().numpy())
        truths.append(truth.cpu().numpy())
        preds.append(pred.cpu().numpy())
    n_classes = len(cfg.classes)
    empty = np.zeros((0, n_classes, 0, 0), dtype=bool)
    return SlicePredictions(
        rows=dataset.index.iloc[chosen].reset_index(drop=True),
        images=np.concatenate(images) if images else np.zeros((0, 0, 0), dtype=np.float32),
        truth=np.concatenate(truths) if truths else empty,
        pred=np.concatenate(preds) if preds else empty,
        classes=tuple(cfg.classes)[reported],
        dice=np.concatenate(dice) if dice else np.zeros((0, len(tuple(cfg.classes)[reported]))),
    )
