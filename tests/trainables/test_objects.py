"""Tests of trainables.metrics.objects: object-level detection by hand and against a brute-force flood fill."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
import torch

from trainables.metrics import (
    OBJECT_METRICS,
    SegmentationMetrics,
    compute_metrics,
    label_objects,
    metric_keys,
    object_counts,
    object_scores,
    pooled_object_scores,
)

CLASSES = ("stomach", "small_bowel")


def _hand_example() -> tuple[np.ndarray, np.ndarray]:
    """2 images x 2 classes x 6 x 6 masks.

    image 0, stomach: truth = a 2x4 block (8 px) and a lone pixel at (5, 5): 2 objects. The
        prediction splits the block into a 2x2 and a 2x1 piece (6 of its 8 px: found), misses the
        lone pixel, and adds a 2x2 false-positive blob: 3 predicted objects, 2 correct.
    image 0, small_bowel: truth = two diagonal pixels (2, 2), (3, 3): one 8-connected object;
        predicted (2, 2) only: half of it, found at overlap 0.5; that pixel is correct.
    image 1, stomach: nothing, nothing predicted.
    image 1, small_bowel: nothing true, one predicted blob (wrong).
    """
    target = np.zeros((2, 2, 6, 6), dtype=bool)
    pred = np.zeros_like(target)
    target[0, 0, 0:2, 0:4] = True
    target[0, 0, 5, 5] = True
    pred[0, 0, 0:2, 0:2] = True
    pred[0, 0, 0:2, 3] = True
    pred[0, 0, 4:6, 0:2] = True
    target[0, 1, 2, 2] = target[0, 1, 3, 3] = True
    pred[0, 1, 2, 2] = True
    pred[1, 1, 1:3, 1:3] = True
    return pred, target


# counts (true, found, pred, correct) per [image][class], read off the docstring above
HAND_COUNTS = [[[2, 1, 3, 2], [1, 1, 1, 1]], [[0, 0, 0, 0], [0, 0, 1, 0]]]


def test_object_counts_by_hand():
    pred, target = _hand_example()
    counts = object_counts(pred, target)
    assert counts.shape == (4, 2, 2)
    assert counts.transpose(1, 2, 0).tolist() == HAND_COUNTS
    # the diagonal pair is one object (8-connectivity); 1 of its 2 pixels is not enough at 0.6
    strict = object_counts(pred, target, min_overlap=0.6)
    assert strict[:, 0, 1].tolist() == [1, 0, 1, 1]
    assert torch.equal(
        torch.as_tensor(object_counts(torch.as_tensor(pred), torch.as_tensor(target))), torch.as_tensor(counts)
    )


@pytest.mark.parametrize(
    ("empty", "sensitivity", "precision"),
    [
        # [image][class]; image 1 has no true object in either class
        ("one", [[1 / 2, 1.0], [1.0, 1.0]], [[2 / 3, 1.0], [1.0, 0.0]]),
        ("zero", [[1 / 2, 1.0], [0.0, 0.0]], [[2 / 3, 1.0], [0.0, 0.0]]),
        ("skip", [[1 / 2, 1.0], [math.nan, math.nan]], [[2 / 3, 1.0], [math.nan, math.nan]]),
    ],
)
def test_object_scores_follow_the_empty_rule(empty, sensitivity, precision):
    scores = object_scores(object_counts(*_hand_example()), empty)
    np.testing.assert_allclose(scores["object_sensitivity"], sensitivity, atol=1e-12)
    np.testing.assert_allclose(scores["object_precision"], precision, atol=1e-12)


def test_pooled_object_scores_by_hand():
    pooled = pooled_object_scores(object_counts(*_hand_example()))
    # stomach: 1 of 2 found, 2 of 3 correct; small_bowel: 1 of 1 found, 1 of 2 correct
    np.testing.assert_allclose(pooled["object_sensitivity"], [1 / 2, 1.0], atol=1e-12)
    np.testing.assert_allclose(pooled["object_precision"], [2 / 3, 1 / 2], atol=1e-12)
    nothing = np.zeros((4, 3, 1), dtype=np.int64)
    assert pooled_object_scores(nothing)["object_precision"].tolist() == [1.0]
    assert math.isnan(pooled_object_scores(nothing, "skip")["object_sensitivity"][0])


def test_accumulator_reports_object_metrics_per_image_pooled_and_overall():
    pred, target = _hand_example()
    metrics = SegmentationMetrics(CLASSES)
    metrics.update_probs(torch.as_tensor(pred).float(), torch.as_tensor(target))
    result = metrics.compute()
    expected = {
        "object_sensitivity.stomach": (1 / 2 + 1) / 2,
        "object_sensitivity.small_bowel": 1.0,
        "object_precision.stomach": (2 / 3 + 1) / 2,
        "object_precision.small_bowel": (1 + 0) / 2,
        "object_sensitivity": (3 / 4 + 1) / 2,
        "object_precision": (5 / 6 + 1 / 2) / 2,
        "pooled_object_sensitivity.stomach": 1 / 2,
        "pooled_object_precision.small_bowel": 1 / 2,
        "pooled_object_sensitivity": (1 / 2 + 1) / 2,
        "pooled_object_precision": (2 / 3 + 1 / 2) / 2,
    }
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    assert set(result) == set(metric_keys(CLASSES))
    # two batches of one image each give the same
    split = SegmentationMetrics(CLASSES)
    for i in range(2):
        split.update_probs(torch.as_tensor(pred[i : i + 1]).float(), torch.as_tensor(target[i : i + 1]))
    assert split.compute() == pytest.approx(result, abs=1e-12, nan_ok=True)
    assert compute_metrics(torch.as_tensor(pred), torch.as_tensor(target), CLASSES) == pytest.approx(
        result, abs=1e-12, nan_ok=True
    )


def test_object_metrics_ride_on_the_boundary_switch_and_their_overlap_is_configurable():
    pred, target = _hand_example()
    off = compute_metrics(torch.as_tensor(pred), torch.as_tensor(target), CLASSES, boundary=False)
    assert not any(key.split(".")[0].removeprefix("pooled_") in OBJECT_METRICS for key in off)
    strict = compute_metrics(torch.as_tensor(pred), torch.as_tensor(target), CLASSES, object_min_overlap=0.6)
    assert strict["pooled_object_sensitivity.small_bowel"] == 0.0
    with pytest.raises(ValueError, match="object_min_overlap"):
        SegmentationMetrics(CLASSES, object_min_overlap=0.0)
    with pytest.raises(ValueError, match="min_overlap"):
        object_counts(pred, target, min_overlap=1.5)


def test_softmax_objects_leave_background_out():
    pred, target = _hand_example()
    background = ~(pred.any(axis=1, keepdims=True))
    probs = np.concatenate([background, pred], axis=1).astype(np.float32)
    truth = np.concatenate([~target.any(axis=1, keepdims=True), target], axis=1)
    # the hand example's classes overlap nowhere, so the argmax reproduces each class's mask
    result = compute_metrics(
        torch.as_tensor(probs), torch.as_tensor(truth), ("background", *CLASSES), activation="softmax"
    )
    assert result["pooled_object_precision.stomach"] == pytest.approx(2 / 3, abs=1e-12)
    assert "object_sensitivity.background" not in result


def test_labels_never_join_images_or_classes():
    masks = np.ones((2, 3, 4, 4), dtype=bool)  # every plane full: 6 objects, not one
    labels, plane = label_objects(masks)
    assert labels.max() == 6 and plane.tolist() == [-1, 0, 1, 2, 3, 4, 5]
    assert len(np.unique(labels[1, 2])) == 1


def _flood_fill_objects(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """Every 8-connected object of a 2D mask as its pixel list, by breadth-first search."""
    seen = np.zeros_like(mask, dtype=bool)
    objects = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        queue, pixels = deque([start]), []
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        objects.append(pixels)
    return objects


def _brute_counts(pred: np.ndarray, target: np.ndarray, min_overlap: float) -> list[int]:
    def hits(objects, other):
        return sum(sum(other[p] for p in obj) >= min_overlap * len(obj) for obj in objects)

    true, predicted = _flood_fill_objects(target), _flood_fill_objects(pred)
    return [len(true), hits(true, pred), len(predicted), hits(predicted, target)]


@pytest.mark.parametrize(("density", "min_overlap"), [(0.15, 0.5), (0.3, 0.5), (0.45, 0.25), (0.3, 1.0)])
def test_object_counts_match_brute_force_flood_fill(density, min_overlap):
    rng = np.random.default_rng(int(density * 100) + int(min_overlap * 10))
    target = rng.random((4, 3, 12, 12)) < density
    # a prediction that overlaps the truth in part: the truth with some pixels flipped
    pred = target ^ (rng.random(target.shape) < 0.3)
    counts = object_counts(pred, target, min_overlap=min_overlap)
    for i in range(4):
        for c in range(3):
            assert counts[:, i, c].tolist() == _brute_counts(pred[i, c], target[i, c], min_overlap), (i, c)
