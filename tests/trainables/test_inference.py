"""A fold trial's inference (trainables.inference): the network, the activation, the metrics' prediction
and per-slice dice, on a multi-label cache (generated GI slices) and a multi-class one (ACDC-layout NIfTI).

Every per-slice and per-fold score is checked against SegmentationMetrics fed the raw logits, the path
the trial's validation takes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from acdc_data import prepare_acdc_cache

from trainables.contract import TrialConfig
from trainables.data import generate_uwmgi, prepare_cache
from trainables.inference import (
    SlicePredictions,
    build_network,
    load_network,
    organ_channels,
    predict_slices,
    predicted_masks,
    probabilities,
    reported_channels,
    validation_slices,
)
from trainables.losses import build_loss
from trainables.metrics import SegmentationMetrics

ACDC = ["RV", "MYO", "LV"]


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gi")
    generate_uwmgi(tmp / "data", cases=2, slices_per_scan=6, image_size=16, seed=4)
    cache = prepare_cache(tmp / "data", tmp / "cache", image_size=16, n_folds=2)
    return TrialConfig.from_dict(
        {
            "cache_dir": str(cache),
            "fold": 0,
            "arch": "unet",
            "encoder": "resnet18",
            "loss": "dice",
            "image_size": 16,
            "batch_size": 3,
        }
    )


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("acdc")
    cache = prepare_acdc_cache(tmp / "acdc", tmp / "cache", size=16, slices=4, patients=3, n_folds=3)
    return TrialConfig.from_dict(
        {
            "cache_dir": str(cache),
            "fold": 1,
            "arch": "unet",
            "encoder": "resnet18",
            "loss": "dice",
            "image_size": 16,
            "batch_size": 3,
            "activation": "softmax",
            "classes": ["background", *ACDC],
        }
    )


def test_predicted_masks_are_the_metrics_prediction_by_hand():
    probs = torch.tensor([0.2, 0.5, 0.49, 0.9]).reshape(1, 1, 2, 2)
    assert predicted_masks(probs, 0.5, "sigmoid").flatten().tolist() == [False, True, False, True]
    # softmax: one channel per pixel, the largest probability, whatever the threshold
    probs = torch.tensor([[0.6, 0.1], [0.3, 0.2], [0.1, 0.7]]).reshape(1, 3, 1, 2)
    pred = predicted_masks(probs, 0.9, "softmax")
    assert pred[0, :, 0, 0].tolist() == [True, False, False]
    assert pred[0, :, 0, 1].tolist() == [False, False, True]


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_probabilities_are_the_losses_activation(activation):
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    target = torch.zeros_like(logits)
    loss = build_loss("dice", activation=activation)
    expected, _ = loss.probabilities(logits, target)
    assert torch.equal(probabilities(logits, activation), expected)
    assert torch.equal(
        probabilities(logits, activation), logits.softmax(dim=1) if activation == "softmax" else logits.sigmoid()
    )


def test_channels_reported_and_drawn(multilabel, multiclass):
    assert reported_channels(multilabel) == slice(0, None) and organ_channels(multilabel) == slice(0, None)
    assert reported_channels(multiclass) == slice(1, None) and organ_channels(multiclass) == slice(1, None)
    with_background = multiclass.model_copy(update={"include_background": True})
    assert reported_channels(with_background) == slice(0, None)  # reported, yet never drawn as an organ
    assert organ_channels(with_background) == slice(1, None)


def test_slice_dice_is_the_mean_over_defined_classes_by_hand():
    dice = np.array([[1.0, 0.5, 0.0], [np.nan, 0.25, 0.75], [np.nan, np.nan, np.nan]])
    predictions = SlicePredictions(
        rows=None,
        images=np.zeros((3, 1, 1)),
        truth=np.zeros((3, 3, 1, 1), bool),
        pred=np.zeros((3, 3, 1, 1), bool),
        classes=("a", "b", "c"),
        dice=dice,
    )
    assert predictions.slice_dice[:2].tolist() == [0.5, 0.5]
    assert np.isnan(predictions.slice_dice[2])


@pytest.mark.parametrize("heads", ["multiclass", "uniclass"])
@pytest.mark.parametrize("mode", ["multilabel", "multiclass"])
def test_predictions_score_as_the_trial_validation_scores(mode, heads, request, tmp_path):
    cfg = request.getfixturevalue(mode).model_copy(update={"heads": heads})
    torch.manual_seed(1)
    network = build_network(cfg).eval()
    assert network(torch.zeros(1, 2 * cfg.context + 1, 16, 16)).shape[1] == len(cfg.classes)
    torch.save(network.state_dict(), tmp_path / "best_model.pt")
    model = load_network(cfg, tmp_path / "best_model.pt")
    dataset = validation_slices(cfg)
    predictions = predict_slices(cfg, model, dataset)
    n = len(dataset)
    assert predictions.pred.shape == predictions.truth.shape == (n, len(cfg.classes), 16, 16)
    assert list(predictions.rows["id"]) == list(dataset.index["id"])
    if mode == "multiclass":
        assert predictions.classes == tuple(ACDC)
        assert (predictions.pred.sum(axis=1) == 1).all()  # one class per pixel, background included
        assert (predictions.truth.sum(axis=1) == 1).all()
    else:
        assert predictions.classes == tuple(cfg.classes)

    # the trial's validation path: raw logits into SegmentationMetrics, one slice at a time and all at once
    everything = SegmentationMetrics(
        cfg.classes,
        threshold=cfg.threshold,
        boundary=False,
        activation=cfg.activation,
        include_background=cfg.include_background,
    )
    with torch.inference_mode():
        for i in range(n):
            image, mask = dataset[i]
            logits = model(image[None])
            one = SegmentationMetrics(
                cfg.classes,
                threshold=cfg.threshold,
                boundary=False,
                activation=cfg.activation,
                include_background=cfg.include_background,
            )
            one.update(logits, mask[None])
            scores = one.compute()
            assert predictions.slice_dice[i] == pytest.approx(scores["dice"], abs=1e-9)
            assert predictions.dice[i] == pytest.approx([scores[f"dice.{c}"] for c in predictions.classes], abs=1e-9)
            everything.update(logits, mask[None])
    fold = everything.compute()
    assert predictions.dice.mean(axis=0) == pytest.approx([fold[f"dice.{c}"] for c in predictions.classes], abs=1e-9)

    chosen = predict_slices(cfg, model, dataset, [n - 1, 0], batch_size=1)
    assert list(chosen.rows["id"]) == [dataset.index["id"].iloc[n - 1], dataset.index["id"].iloc[0]]
    assert np.array_equal(chosen.pred, predictions.pred[[n - 1, 0]])


def test_weights_of_another_network_are_refused(multiclass, multilabel, tmp_path):
    torch.save(build_network(multilabel).state_dict(), tmp_path / "three_channels.pt")
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_network(multiclass, tmp_path / "three_channels.pt")
