"""Tests of trainables.metrics: hand-computed cases, empty-mask rules, accumulation, and agreement
with independent implementations (segmentation_models_pytorch, MONAI, brute-force point sets).

Tolerances: hand values and library agreement 1e-6 (float64 accumulators, exact integer counts;
MONAI's float32 distances are compared with rtol 1e-6); two-batch vs one-batch accumulation 1e-12.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import segmentation_models_pytorch.metrics as smp_metrics
import torch
from scipy.spatial.distance import cdist, directed_hausdorff

from trainables.metrics import (
    BOUNDARY_METRICS,
    CONFUSION_METRICS,
    METRIC_NAMES,
    SegmentationMetrics,
    compute_boundary_metrics,
    compute_gi_score,
    compute_metrics,
    confusion_counts,
    mean_absolute_error,
    metric_keys,
    normalized_hausdorff_3d,
    per_image_scores,
    pooled_scores,
    surface_distances,
)

CLASSES = ("stomach", "small_bowel")
SQRT3 = math.sqrt(3.0)


def _hand_example() -> tuple[torch.Tensor, torch.Tensor]:
    """2 images x 2 classes x 2x2 pixels (flattened row-major), pred and target 0/1.

    image 0, stomach:     target 1100, pred 1010 -> tp 1, fp 1, fn 1, tn 1
    image 0, small_bowel: target 0000, pred 0000 -> tp 0, fp 0, fn 0, tn 4 (empty, predicted empty)
    image 1, stomach:     target 1111, pred 1111 -> tp 4, fp 0, fn 0, tn 0
    image 1, small_bowel: target 0000, pred 1000 -> tp 0, fp 1, fn 0, tn 3 (empty, one false pixel)
    """
    target = torch.tensor([[[1, 1, 0, 0], [0, 0, 0, 0]], [[1, 1, 1, 1], [0, 0, 0, 0]]])
    pred = torch.tensor([[[1, 0, 1, 0], [0, 0, 0, 0]], [[1, 1, 1, 1], [1, 0, 0, 0]]])
    return pred.view(2, 2, 2, 2), target.view(2, 2, 2, 2)


# Scores with s = 1 per (image, class), from the counts above:
#   img0 stomach:  dice (2+1)/(2+1+1+1) = 3/5, iou 2/4, sens 2/3, spec 2/3, prec 2/3, acc (1+1+1)/(4+1) = 3/5
#   img0 bowel:    all (0+1)/(0+1) or (4+1)/(4+1) = 1
#   img1 stomach:  dice 9/9, iou 5/5, sens 5/5, spec (0+1)/(0+0+1) = 1, prec 5/5, acc 5/5
#   img1 bowel:    dice 1/(1+1) = 1/2, iou 1/2, sens 1/1 = 1, spec (3+1)/(3+1+1) = 4/5, prec 1/2, acc 4/5
HAND_SCORES = {
    "dice": [[3 / 5, 1.0], [1.0, 1 / 2]],
    "iou": [[1 / 2, 1.0], [1.0, 1 / 2]],
    "sensitivity": [[2 / 3, 1.0], [1.0, 1.0]],
    "specificity": [[2 / 3, 1.0], [1.0, 4 / 5]],
    "precision": [[2 / 3, 1.0], [1.0, 1 / 2]],
    "accuracy": [[3 / 5, 1.0], [1.0, 4 / 5]],
}


def test_confusion_counts_by_hand():
    pred, target = _hand_example()
    tp, fp, fn, tn = confusion_counts(pred, target)
    assert tp.tolist() == [[1, 0], [4, 0]]
    assert fp.tolist() == [[1, 0], [0, 1]]
    assert fn.tolist() == [[1, 0], [0, 0]]
    assert tn.tolist() == [[1, 4], [0, 3]]
    assert tp.dtype == torch.int64 and tp.shape == (2, 2)
    from_bool = confusion_counts(pred.bool(), target.bool())
    assert all(torch.equal(a, b) for a, b in zip(from_bool, (tp, fp, fn, tn)))


@pytest.mark.parametrize("metric", CONFUSION_METRICS)
def test_per_image_scores_by_hand(metric):
    scores = per_image_scores(*confusion_counts(*_hand_example()), smooth=1.0)
    assert set(scores) == set(CONFUSION_METRICS)
    torch.testing.assert_close(scores[metric], torch.tensor(HAND_SCORES[metric]), atol=1e-6, rtol=0)


# One image, one class per column: (tp, fp, fn, tn) of a 4-pixel image
#   col 0: both empty (0, 0, 0, 4); col 1: empty target, 2 false pixels (0, 2, 0, 2);
#   col 2: missed organ, empty prediction (0, 0, 3, 1); col 3: all-positive, all hit (4, 0, 0, 0)
EMPTY_COUNTS = {"tp": [0, 0, 0, 4], "fp": [0, 2, 0, 0], "fn": [0, 0, 3, 0], "tn": [4, 2, 1, 0]}
nan = math.nan
EMPTY_CASES = {  # (smooth, empty) -> metric -> 4 columns
    (1.0, "one"): {
        "dice": [1, 1 / 3, 1 / 4, 1],
        "iou": [1, 1 / 3, 1 / 4, 1],
        "sensitivity": [1, 1, 1 / 4, 1],
        "precision": [1, 1 / 3, 1, 1],
        "specificity": [1, 3 / 5, 1, 1],
        "accuracy": [1, 3 / 5, 2 / 5, 1],
    },
    (0.0, "one"): {
        "dice": [1, 0, 0, 1],
        "iou": [1, 0, 0, 1],
        "sensitivity": [1, 1, 0, 1],
        "precision": [1, 0, 1, 1],
        "specificity": [1, 1 / 2, 1, 1],
        "accuracy": [1, 1 / 2, 1 / 4, 1],
    },
    (0.0, "zero"): {
        "dice": [0, 0, 0, 1],
        "iou": [0, 0, 0, 1],
        "sensitivity": [0, 0, 0, 1],
        "precision": [0, 0, 0, 1],
        "specificity": [1, 1 / 2, 1, 0],
        "accuracy": [1, 1 / 2, 1 / 4, 1],
    },
    (1.0, "zero"): {
        "dice": [0, 0, 1 / 4, 1],
        "iou": [0, 0, 1 / 4, 1],
        "sensitivity": [0, 0, 1 / 4, 1],
        "precision": [0, 0, 1, 1],
        "specificity": [1, 3 / 5, 1, 1],
        "accuracy": [1, 3 / 5, 2 / 5, 1],
    },
    (0.0, "skip"): {
        "dice": [nan, nan, 0, 1],
        "iou": [nan, nan, 0, 1],
        "sensitivity": [nan, nan, 0, 1],
        "precision": [nan, nan, nan, 1],
        "specificity": [1, 1 / 2, 1, nan],
        "accuracy": [1, 1 / 2, 1 / 4, 1],
    },
}


@pytest.mark.parametrize(("smooth", "empty"), list(EMPTY_CASES))
def test_empty_mask_rules_by_hand(smooth, empty):
    tp, fp, fn, tn = (torch.tensor([EMPTY_COUNTS[k]], dtype=torch.float64) for k in ("tp", "fp", "fn", "tn"))
    scores = per_image_scores(tp, fp, fn, tn, smooth=smooth, empty=empty)
    for metric, expected in EMPTY_CASES[smooth, empty].items():
        torch.testing.assert_close(
            scores[metric][0],
            torch.tensor(expected, dtype=torch.float64),
            atol=1e-6,
            rtol=0,
            equal_nan=True,
            msg=metric,
        )


def test_pooled_scores_and_mae_by_hand():
    pooled = pooled_scores(*confusion_counts(*_hand_example()))
    # stomach: tp 5, fp 1, fn 1, tn 1; small_bowel: tp 0, fp 1, fn 0, tn 7 (empty target)
    expected = {
        "dice": [10 / 12, 0.0],
        "iou": [5 / 7, 0.0],
        "sensitivity": [5 / 6, 1.0],
        "specificity": [1 / 2, 7 / 8],
        "precision": [5 / 6, 0.0],
        "accuracy": [6 / 8, 7 / 8],
    }
    for metric, values in expected.items():
        torch.testing.assert_close(pooled[metric], torch.tensor(values, dtype=torch.float64), atol=1e-6, rtol=0)
    assert pooled_scores(*confusion_counts(*_hand_example()), empty="skip")["dice"][1].isnan()

    probs = torch.tensor([0.9, 0.2, 0.6, 0.0]).view(1, 1, 2, 2)
    target = torch.tensor([1, 0, 0, 0]).view(1, 1, 2, 2)
    assert mean_absolute_error(probs, target).item() == pytest.approx((0.1 + 0.2 + 0.6 + 0) / 4, abs=1e-6)


def _logits(pred: torch.Tensor) -> torch.Tensor:
    return pred.float() * 6.0 - 3.0  # 1 -> +3, 0 -> -3


def test_accumulator_per_class_overall_and_pooled_by_hand():
    pred, target = _hand_example()
    metrics = SegmentationMetrics(CLASSES, boundary=False)
    metrics.update(_logits(pred), target)
    result = metrics.compute()
    mae_img = 1 - torch.sigmoid(torch.tensor(3.0)).item()  # every pixel is off by sigmoid(-3)
    expected = {
        # per class = mean over the two images; overall = mean over the two classes
        "dice.stomach": (3 / 5 + 1) / 2,
        "dice.small_bowel": (1 + 1 / 2) / 2,
        "dice": (0.8 + 0.75) / 2,
        "iou.stomach": 0.75,
        "iou.small_bowel": 0.75,
        "iou": 0.75,
        "sensitivity.stomach": 5 / 6,
        "sensitivity.small_bowel": 1.0,
        "sensitivity": 11 / 12,
        "specificity.stomach": 5 / 6,
        "specificity.small_bowel": 0.9,
        "specificity": (5 / 6 + 0.9) / 2,
        "precision.stomach": 5 / 6,
        "precision.small_bowel": 0.75,
        "precision": 19 / 24,
        "accuracy.stomach": 4 / 5,
        "accuracy.small_bowel": 9 / 10,
        "accuracy": 17 / 20,
        # mae: stomach img0 has 2 wrong pixels (|p-g| = 1 - mae_img) and 2 right, img1 4 right
        "mae.stomach": ((2 * (1 - mae_img) + 2 * mae_img) / 4 + mae_img) / 2,
        "mae.small_bowel": (mae_img + (1 - mae_img + 3 * mae_img) / 4) / 2,
        "pooled_dice.stomach": 10 / 12,
        "pooled_dice.small_bowel": 0.0,
        "pooled_dice": 5 / 12,
        "pooled_sensitivity.small_bowel": 1.0,
        "pooled_accuracy": (6 / 8 + 7 / 8) / 2,
    }
    expected["mae"] = (expected["mae.stomach"] + expected["mae.small_bowel"]) / 2
    expected["pooled_mae"] = expected["mae"]  # equal-sized images: pooled = per-image mean
    assert set(result) == set(metric_keys(CLASSES, boundary=False))
    assert all(isinstance(v, float) for v in result.values())
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-6), key


def test_threshold_is_inclusive_and_configurable():
    target = torch.ones(1, 1, 1, 2)
    logits = torch.tensor([0.0, -0.5]).view(1, 1, 1, 2)  # sigmoid 0.5 and ~0.378
    half = SegmentationMetrics(["organ"], threshold=0.5)
    half.update(logits, target)
    assert half.compute()["sensitivity"] == pytest.approx((1 + 1) / (2 + 1))  # tp 1, fn 1
    low = SegmentationMetrics(["organ"], threshold=0.3)
    low.update(logits, target)
    assert low.compute()["sensitivity"] == pytest.approx(1.0)


def _blobs(n: int, c: int, size: int, seed: int, empty: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ellipse targets and shifted, slightly noisy predictions; with ``empty``, every 4th cell
    has an empty target and every 4th (another) an empty prediction."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    target = torch.zeros(n, c, size, size)
    pred = torch.zeros(n, c, size, size)
    stray = (torch.rand(pred.shape, generator=gen) < 0.003).float()
    for k in range(n * c):
        i, j = divmod(k, c)
        cy, cx, ry, rx, dy, dx = (
            torch.rand(6, generator=gen) * torch.tensor([0.5, 0.5, 0.25, 0.25, 0.2, 0.2]) * size
            + torch.tensor([0.25, 0.25, 0.08, 0.08, -0.1, -0.1]) * size
        ).tolist()
        if not (empty and k % 4 == 1):
            target[i, j] = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).float()
        if not (empty and k % 4 == 2):
            shifted = (((yy - cy - dy) / ry) ** 2 + ((xx - cx - dx) / rx) ** 2 <= 1).float()
            pred[i, j] = (shifted + stray[i, j]).clamp(max=1)  # with a few stray pixels
    return pred, target


def test_two_batches_equal_one_big_batch_and_reset():
    pred, target = _blobs(6, 3, 24, seed=0)
    logits = _logits(pred) + torch.randn(pred.shape, generator=torch.Generator().manual_seed(1)) * 0.5
    names = ("large_bowel", "small_bowel", "stomach")
    scans, positions = ["a", "a", "b", "b", "a", "b"], [2, 0, 1, 0, 1, 2]

    split = SegmentationMetrics(names, empty="skip", spacing=(1.5, 2.0))
    split.update(logits[:2], target[:2], scan_ids=scans[:2], positions=positions[:2])
    split.update(logits[2:], target[2:], scan_ids=scans[2:], positions=torch.tensor(positions[2:]))
    whole = SegmentationMetrics(names, empty="skip", spacing=(1.5, 2.0))
    whole.update(logits, target, scan_ids=scans, positions=positions)
    a, b = split.compute(), whole.compute()
    assert a.keys() == b.keys() == set(metric_keys(names, gi_score=True))
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-12, nan_ok=True), key

    split.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        split.compute()
    split.update(logits, target, scan_ids=scans, positions=positions)
    assert split.compute() == pytest.approx(b, abs=1e-12, nan_ok=True)


def test_update_keeps_sums_on_input_device_without_host_sync():
    metrics = SegmentationMetrics(["organ"], boundary=False)
    metrics.update(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))
    assert metrics._sums.device == torch.zeros(1).device and metrics._sums.dtype == torch.float64
    assert metrics._pooled.device == metrics._sums.device


def test_batched_path_counts_exactly_whatever_chunks_layout_and_batch_sizes(monkeypatch):
    """The batched path (sigmoid and threshold written into a reused workspace, products in place,
    on CPU a few images at a time) counts exactly what thresholding ``sigmoid(logits)`` gives,
    and MAE matches float64 |p - g|, for any chunk size, memory format and batch split."""
    from trainables.metrics import accumulator

    pred, target = _blobs(7, 3, 40, seed=3)
    logits = _logits(pred) + torch.randn(pred.shape, generator=torch.Generator().manual_seed(4))
    logits[0, 0, :2] = 0.0  # sigmoid exactly 0.5: positive
    logits[1, 1, :2] = -1e-9  # sigmoid rounds to 0.5 in float32: positive too (logits >= 0 would say no)
    probs = torch.sigmoid(logits)
    counts = torch.stack(confusion_counts(probs >= 0.5, target)).sum(dim=1).double()  # (4, C)
    mae = (probs.double() - target.double()).abs().mean(dim=(2, 3)).mean(dim=0)
    names = ("large_bowel", "small_bowel", "stomach")
    results = []
    for chunk_bytes in (1, accumulator._CPU_CHUNK_BYTES):  # one image per chunk, or the whole batch
        monkeypatch.setattr(accumulator, "_CPU_CHUNK_BYTES", chunk_bytes)
        for layout in (torch.contiguous_format, torch.channels_last):
            metrics = SegmentationMetrics(names, boundary=False)
            for part in (slice(0, 5), slice(5, 7), slice(0, 0)):  # a smaller batch reuses the workspace
                if part.stop > part.start:
                    metrics.update(logits[part].contiguous(memory_format=layout), target[part])
            assert torch.equal(metrics._pooled[:4], counts)
            result = metrics.compute()
            for i, name in enumerate(names):
                assert result[f"mae.{name}"] == pytest.approx(mae[i].item(), abs=1e-7)
            results.append(result)
    for other in results[1:]:  # float32 sums of p may round differently with the chunk shape
        for key, value in other.items():
            assert value == pytest.approx(results[0][key], abs=1e-7 if "mae" in key else 0), key


def test_chunked_softmax_with_boundary_equals_whole_batch(monkeypatch):
    from trainables.metrics import accumulator

    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(5, 4, 24, 24, generator=gen) * 3
    labels = torch.randint(0, 4, (5, 24, 24), generator=gen)
    results = []
    for chunk_bytes in (1, accumulator._CPU_CHUNK_BYTES):
        monkeypatch.setattr(accumulator, "_CPU_CHUNK_BYTES", chunk_bytes)
        metrics = SegmentationMetrics(("background", "a", "b", "c"), activation="softmax", spacing=(1.5, 1.5))
        metrics.update(logits, labels, scan_ids=["s"] * 5, positions=list(range(5)))
        results.append(metrics.compute())
    assert "gi_score" in results[0] and "nsd.a" in results[0]
    for key, value in results[1].items():
        assert value == pytest.approx(results[0][key], abs=1e-7 if "mae" in key else 0), key


def _random_masks(seed: int, shape=(5, 3, 8, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    target = (torch.rand(shape, generator=gen) < 0.4).long()
    pred = (torch.rand(shape, generator=gen) < 0.4).long()
    target[0, 0] = 0  # both empty
    pred[0, 0] = 0
    target[1, 1] = 0  # empty target, some false positives
    pred[2, 2] = 0  # missed organ
    return pred, target


SMP_FUNCTIONS = {
    "dice": smp_metrics.f1_score,
    "iou": smp_metrics.iou_score,
    "sensitivity": smp_metrics.recall,
    "specificity": smp_metrics.specificity,
    "precision": smp_metrics.precision,
    "accuracy": smp_metrics.accuracy,
}


@pytest.mark.parametrize(("empty", "zero_division"), [("one", 1.0), ("zero", 0.0)])
def test_smp_agreement_per_image_imagewise_and_pooled(empty, zero_division):
    pred, target = _random_masks(1)
    counts = confusion_counts(pred, target)
    smp_counts = smp_metrics.get_stats(pred, target, mode="multilabel")
    for ours, theirs in zip(counts, smp_counts):
        assert torch.equal(ours, theirs)

    scores = per_image_scores(*counts, smooth=0.0, empty=empty)
    pooled = pooled_scores(*counts, empty=empty)
    result = compute_metrics(pred, target, ["a", "b", "c"], smooth=0.0, empty=empty, boundary=False)
    for metric, fn in SMP_FUNCTIONS.items():
        kw = dict(zero_division=zero_division)
        none = fn(*smp_counts, reduction="none", **kw).double()
        torch.testing.assert_close(scores[metric].double(), none, atol=1e-6, rtol=0)
        # per-image mean per class, then mean over classes == smp macro-imagewise
        imagewise = fn(*smp_counts, reduction="macro-imagewise", **kw).item()
        assert result[metric] == pytest.approx(imagewise, abs=1e-6), metric
        assert result[f"{metric}.b"] == pytest.approx(none[:, 1].mean().item(), abs=1e-6)
        # pooled counts per class == smp on summed counts; their mean == smp macro
        summed = [x.sum(0, keepdim=True) for x in smp_counts]
        torch.testing.assert_close(pooled[metric], fn(*summed, reduction="none", **kw)[0].double(), atol=1e-6, rtol=0)
        assert result[f"pooled_{metric}"] == pytest.approx(fn(*smp_counts, reduction="macro", **kw).item(), abs=1e-6)


def test_monai_dice_agreement_including_ignore_empty():
    compute_dice = pytest.importorskip("monai.metrics").compute_dice  # optional test dependency

    pred, target = _random_masks(2)
    for empty, ignore_empty in (("one", False), ("skip", True)):
        ours = per_image_scores(*confusion_counts(pred, target), smooth=0.0, empty=empty)["dice"]
        theirs = compute_dice(pred.float(), target.float(), include_background=True, ignore_empty=ignore_empty)
        torch.testing.assert_close(ours.double(), theirs.double(), atol=1e-6, rtol=0, equal_nan=True)


# ---- boundary metrics -------------------------------------------------------------------------


def _square_and_shifted() -> tuple[np.ndarray, np.ndarray]:
    """10x10: target = 4x4 square rows 2-5, cols 2-5; pred = the same square one column right.

    Each boundary has 12 pixels; from either side 6 lie on the other boundary (distance 0) and 6
    at distance 1 pixel. So hd95 = 1 px, NSD(tau < 1 px) = 12/24, NSD(tau >= 1 px) = 1; the BF
    threshold 0.75% of the diagonal (0.106 px) only matches distance 0: P = R = 1/2, F1 = 1/2.
    """
    target = np.zeros((10, 10), bool)
    target[2:6, 2:6] = True
    pred = np.roll(target, 1, axis=1)
    return pred, target


@pytest.mark.parametrize(
    ("spacing", "tolerance", "nsd", "hd95"),
    [
        (None, 0.5, 0.5, 1.0),
        (None, 1.0, 1.0, 1.0),
        ((2.0, 2.0), 1.9, 0.5, 2.0),
        ((2.0, 2.0), 2.0, 1.0, 2.0),
        # anisotropic: per side 4 of the 1-px distances are along x (3 mm), 2 along y (1 mm)
        ((1.0, 3.0), 2.9, 16 / 24, 3.0),
        ((1.0, 3.0), 0.9, 12 / 24, 3.0),
    ],
)
def test_boundary_metrics_by_hand(spacing, tolerance, nsd, hd95):
    pred, target = _square_and_shifted()
    found = compute_boundary_metrics(pred[None, None], target[None, None], spacing=spacing, nsd_tolerance_mm=tolerance)
    assert found["nsd"][0, 0] == pytest.approx(nsd, abs=1e-6)
    assert found["hd95"][0, 0] == pytest.approx(hd95, abs=1e-6)
    assert found["boundary_f1"][0, 0] == pytest.approx(0.5, abs=1e-6)
    # identical masks: perfect on every boundary metric
    same = compute_boundary_metrics(target[None, None], target[None, None], spacing=spacing)
    assert (same["nsd"][0, 0], same["hd95"][0, 0], same["boundary_f1"][0, 0]) == (1.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("empty", "both_empty", "target_empty_pred_not"),
    [
        ("one", (1.0, 0.0, 1.0), (0.0, "diag", 0.0)),
        ("zero", (0.0, "diag", 0.0), (0.0, "diag", 0.0)),
        ("skip", (nan, nan, nan), (nan, nan, nan)),
    ],
)
def test_boundary_empty_mask_rules(empty, both_empty, target_empty_pred_not):
    pred, target = _square_and_shifted()
    blank = np.zeros_like(target)
    p = np.stack([blank, pred, blank])[:, None]  # both empty, empty target, empty prediction
    t = np.stack([blank, blank, target])[:, None]
    spacing = (1.5, 2.0)
    diag = math.hypot(10 * 1.5, 10 * 2.0)
    found = compute_boundary_metrics(p, t, spacing=spacing, empty=empty)
    missed = (0.0, diag, 0.0)  # a non-empty target with an empty prediction, whatever the rule
    for row, expected in enumerate((both_empty, target_empty_pred_not, missed)):
        expected = [diag if v == "diag" else v for v in expected]
        got = [found[m][row, 0] for m in BOUNDARY_METRICS]
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=f"row {row}")


def _brute_border(mask: np.ndarray) -> np.ndarray:
    """Border by hand: a mask pixel with a 4-neighbour outside the mask or the image."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _brute_boundary(pred: np.ndarray, target: np.ndarray, spacing, tau: float) -> tuple[float, float, float]:
    """Independent (nsd, hd95, bf) from all pairwise border distances (scipy cdist)."""
    bp, bt = (np.argwhere(_brute_border(m)) * np.asarray(spacing) for m in (pred, target))
    d = cdist(bp, bt)
    p_to_t, t_to_p = d.min(axis=1), d.min(axis=0)
    nsd = ((p_to_t <= tau).sum() + (t_to_p <= tau).sum()) / (len(p_to_t) + len(t_to_p))
    hd95 = max(np.percentile(p_to_t, 95), np.percentile(t_to_p, 95))
    theta = 0.0075 * math.hypot(pred.shape[0] * spacing[0], pred.shape[1] * spacing[1])
    prec, rec = (p_to_t <= theta).mean(), (t_to_p <= theta).mean()
    bf = 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)
    return nsd, hd95, bf


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")  # MONAI's own internal call
def test_boundary_metrics_match_brute_force_and_monai():
    monai_metrics = pytest.importorskip("monai.metrics")  # optional test dependency

    pred, target = _blobs(4, 2, 40, seed=3, empty=False)  # no empty cells
    spacing, tau = (1.25, 0.8), 1.7
    ours = compute_boundary_metrics(pred, target, spacing=spacing, nsd_tolerance_mm=tau)
    for i, j in np.ndindex(4, 2):
        expected = _brute_boundary(pred[i, j].numpy() > 0, target[i, j].numpy() > 0, spacing, tau)
        got = [ours[m][i, j] for m in BOUNDARY_METRICS]
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0, err_msg=f"cell {i, j}")
        d1, d2 = surface_distances(pred[i, j], target[i, j], spacing)
        assert d1.max() == pytest.approx(
            directed_hausdorff(
                np.argwhere(_brute_border(pred[i, j].numpy() > 0)) * spacing,
                np.argwhere(_brute_border(target[i, j].numpy() > 0)) * spacing,
            )[0],
            abs=1e-6,
        )
        assert d2.min() >= 0
    monai_hd = monai_metrics.compute_hausdorff_distance(
        pred, target, include_background=True, percentile=95, spacing=spacing
    )
    np.testing.assert_allclose(ours["hd95"], monai_hd.double().numpy(), rtol=1e-6, atol=0)
    monai_nsd = monai_metrics.compute_surface_dice(pred, target, [tau, tau], include_background=True, spacing=spacing)
    np.testing.assert_allclose(ours["nsd"], monai_nsd.double().numpy(), rtol=0, atol=1e-6)


def test_per_image_spacing_overrides_default():
    pred, target = _square_and_shifted()
    metrics = SegmentationMetrics(["organ"], spacing=(1.0, 1.0))
    batch = torch.from_numpy(np.stack([pred, pred]))[:, None].float()
    metrics.update(
        _logits(batch),
        torch.from_numpy(np.stack([target, target]))[:, None].float(),
        spacing=torch.tensor([[1.0, 1.0], [1.0, 3.0]]),
    )
    assert metrics.compute()["hd95.organ"] == pytest.approx((1.0 + 3.0) / 2, abs=1e-6)


# ---- GI competition score ---------------------------------------------------------------------


def test_normalized_hausdorff_and_gi_score_by_hand():
    vol = np.zeros((3, 5, 5), bool)  # (D, H, W); normalised voxel (z/2, y/4, x/4)
    a, b, ab = vol.copy(), vol.copy(), vol.copy()
    a[0, 0, 0] = True
    b[2, 4, 4] = True
    ab[0, 0, 0] = ab[0, 0, 4] = True
    assert normalized_hausdorff_3d(a, b) == pytest.approx(SQRT3, abs=1e-6)  # opposite corners
    assert normalized_hausdorff_3d(a, ab) == pytest.approx(1.0, abs=1e-6)  # one full x axis
    assert normalized_hausdorff_3d(a, a) == 0.0
    assert normalized_hausdorff_3d(vol, vol) == 0.0  # both empty: distance 0
    assert normalized_hausdorff_3d(a, vol) == normalized_hausdorff_3d(vol, a) == pytest.approx(SQRT3)  # one empty

    pred = np.stack([a, a, ab, vol, a])  # 5 classes, one scan
    target = np.stack([b, a, a, vol, vol])
    scores = compute_gi_score(pred, target)
    expected = [
        0.4 * (0 + 1 + 0) / 3 + 0.6 * 0,  # far apart: slices 0 and 2 dice 0, slice 1 both empty
        1.0,  # identical
        0.4 * (2 / 3 + 1 + 1) / 3 + 0.6 * (1 - 1 / SQRT3),  # slice 0: tp 1, |p| 2, |t| 1
        1.0,  # both empty: dice 1 on every slice, hd 0
        0.4 * (0 + 1 + 1) / 3 + 0.6 * 0,  # organ predicted where none is: hd term 0
    ]
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_normalized_hausdorff_matches_brute_force():
    gen = np.random.default_rng(4)
    pred = gen.random((6, 12, 10)) < 0.05
    target = np.zeros_like(pred)
    target[1:5, 2:9, 3:8] = True  # a box, with a hole so A's farthest point can be inside A
    target[2:4, 4:7, 4:7] = False
    scale = np.array([1 / 5, 1 / 11, 1 / 9])
    for p, t in ((pred, target), (target, pred), (target[:, ::-1], target)):
        pts_p, pts_t = np.argwhere(p) * scale, np.argwhere(t) * scale
        expected = max(directed_hausdorff(pts_p, pts_t)[0], directed_hausdorff(pts_t, pts_p)[0])
        assert normalized_hausdorff_3d(p, t) == pytest.approx(expected, abs=1e-6)


def test_accumulator_gi_score_stacks_slices_by_position():
    pred_vol, target_vol = _blobs(1, 2, 12, seed=5, empty=False)
    gen = torch.Generator().manual_seed(6)
    target = (torch.rand(4, 2, 12, 12, generator=gen) < 0.1).float()
    pred = (torch.rand(4, 2, 12, 12, generator=gen) < 0.1).float()
    target[3] = 0
    pred[3] = 0  # an empty slice inside the scan
    order = [2, 0, 3, 1]  # positions of the 4 slices as they arrive
    metrics = SegmentationMetrics(["a", "b"])
    metrics.update(_logits(pred), target, scan_ids=["s1"] * 4, positions=order)
    metrics.update(_logits(pred_vol), target_vol, scan_ids=["s2"], positions=[7])
    result = metrics.compute()
    stacked = np.argsort(order)  # arrival index of position 0, 1, 2, 3
    s1 = compute_gi_score(pred[stacked].numpy().transpose(1, 0, 2, 3), target[stacked].numpy().transpose(1, 0, 2, 3))
    s2 = compute_gi_score(pred_vol.numpy().transpose(1, 0, 2, 3), target_vol.numpy().transpose(1, 0, 2, 3))
    assert result["gi_score.b"] == pytest.approx((s1[1] + s2[1]) / 2, abs=1e-6)
    assert result["gi_score"] == pytest.approx((s1.mean() + s2.mean()) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="already added"):
        metrics.update(_logits(pred[:1]), target[:1], scan_ids=["s1"], positions=[0])


def test_boundary_off_and_no_scans_leave_keys_out():
    pred, target = _blobs(2, 2, 16, seed=7)
    off = SegmentationMetrics(["a", "b"], boundary=False)
    off.update(_logits(pred), target, scan_ids=["s", "s"], positions=[0, 1])
    assert set(off.compute()) == set(metric_keys(["a", "b"], boundary=False))
    on = SegmentationMetrics(["a", "b"])
    on.update(_logits(pred), target)
    keys = set(on.compute())
    assert keys == set(metric_keys(["a", "b"])) and "gi_score" not in keys
    assert set(METRIC_NAMES) <= keys and {"nsd.a", "hd95.b", "boundary_f1.a", "pooled_dice.b"} <= keys


def test_compute_metrics_equals_accumulator():
    pred, target = _blobs(3, 2, 16, seed=8)
    probs = torch.sigmoid(_logits(pred) + torch.randn(pred.shape, generator=torch.Generator().manual_seed(9)))
    acc = SegmentationMetrics(["a", "b"], spacing=(1.5, 1.5))
    acc.update(torch.logit(probs), target)
    functional = compute_metrics(probs, target, ["a", "b"], spacing=(1.5, 1.5))
    assert functional.keys() == acc.compute().keys()
    assert functional == pytest.approx(acc.compute(), abs=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(class_names=[]),
        dict(class_names=["a", "a"]),
        dict(class_names=["a"], threshold=1.0),
        dict(class_names=["a"], smooth=-1.0),
        dict(class_names=["a"], empty="nan"),
        dict(class_names=["a"], spacing=(1.0, 0.0)),
        dict(class_names=["a"], nsd_tolerance_mm=-1),
    ],
)
def test_constructor_validates(kwargs):
    with pytest.raises(ValueError):
        SegmentationMetrics(**kwargs)


def test_update_rejects_wrong_channel_count_shapes_and_scan_arguments():
    metrics = SegmentationMetrics(CLASSES)
    with pytest.raises(ValueError, match="stomach"):
        metrics.update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="same shape"):
        metrics.update(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 3))
    with pytest.raises(ValueError, match="together"):
        metrics.update(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), scan_ids=["s"])
    with pytest.raises(ValueError, match="one scan id"):
        metrics.update(torch.zeros(2, 2, 2, 2), torch.zeros(2, 2, 2, 2), scan_ids=["s"], positions=[0])
    with pytest.raises(ValueError, match="spacing"):
        metrics.update(torch.zeros(2, 2, 2, 2), torch.zeros(2, 2, 2, 2), spacing=torch.ones(3, 2))


# --- multi-class softmax mode ------------------------------------------------------------------

SOFTMAX_CLASSES = ("background", "RV", "LV")


def _softmax_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2 images x 3 channels x 2x2: logits, their argmax one-hot, and a one-hot target."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 2, 2, generator=gen)
    pred = torch.nn.functional.one_hot(logits.argmax(1), 3).movedim(-1, 1)
    labels = torch.tensor([[[0, 1], [2, 2]], [[1, 1], [0, 0]]])
    target = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1)
    return logits, pred, target


def test_softmax_predicts_the_argmax_and_drops_background_from_every_key():
    logits, pred, target = _softmax_example()
    soft = SegmentationMetrics(SOFTMAX_CLASSES, activation="softmax", boundary=True)
    soft.update(logits, target)
    got = soft.compute()
    assert soft.reported_classes == ("RV", "LV")
    assert set(got) == set(metric_keys(("RV", "LV")))
    assert not any(k.endswith(".background") for k in got)
    # the same hard foreground masks scored as multi-label channels give the same confusion metrics
    ref = SegmentationMetrics(("RV", "LV"), boundary=True)
    ref.update_probs(pred[:, 1:].float(), target[:, 1:])
    expected = ref.compute()
    for key in got:
        if key.split(".")[0] not in ("mae", "pooled_mae"):
            assert got[key] == pytest.approx(expected[key], abs=1e-12), key
    # mae uses the softmax probabilities of the foreground channels
    probs = torch.softmax(logits, 1)[:, 1:]
    assert got["mae.RV"] == pytest.approx((probs[:, 0] - target[:, 1]).abs().mean().item(), abs=1e-6)


def test_softmax_include_background_label_map_targets_and_compute_metrics():
    logits, pred, target = _softmax_example()
    with_bg = SegmentationMetrics(SOFTMAX_CLASSES, activation="softmax", include_background=True, boundary=False)
    with_bg.update(logits, target.argmax(1))  # an (N, H, W) label map equals its one-hot
    got = with_bg.compute()
    assert "dice.background" in got
    one_hot = SegmentationMetrics(SOFTMAX_CLASSES, activation="softmax", include_background=True, boundary=False)
    one_hot.update(logits, target)
    assert got == pytest.approx(one_hot.compute())
    functional = compute_metrics(
        torch.softmax(logits, 1), target, SOFTMAX_CLASSES, activation="softmax", boundary=False
    )
    assert set(functional) == set(metric_keys(("RV", "LV"), boundary=False))
    # the threshold does not matter under softmax: a 0.4 probability that wins the argmax is positive
    probs = torch.tensor([[0.3, 0.4, 0.3]]).view(1, 3, 1, 1)
    hit = compute_metrics(
        probs, torch.tensor([[1]]).view(1, 1, 1), SOFTMAX_CLASSES, activation="softmax", boundary=False, smooth=0.0
    )
    assert hit["dice.RV"] == 1.0


def test_softmax_constructor_and_label_map_validation():
    with pytest.raises(ValueError, match="activation must be one of"):
        SegmentationMetrics(SOFTMAX_CLASSES, activation="relu")
    with pytest.raises(ValueError, match="softmax without background needs >= 2 channels"):
        SegmentationMetrics(("background",), activation="softmax")
    metrics = SegmentationMetrics(SOFTMAX_CLASSES, activation="softmax", boundary=False)
    with pytest.raises(ValueError, match=r"channel indices 0\.\.2"):
        metrics.update(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 3))
    # sigmoid keys and values are unchanged by the new arguments
    logits, _, target = _softmax_example()
    a = SegmentationMetrics(SOFTMAX_CLASSES, boundary=False)
    b = SegmentationMetrics(SOFTMAX_CLASSES, boundary=False, activation="sigmoid", include_background=False)
    a.update(logits, target)
    b.update(logits, target)
    assert a.compute() == b.compute() and "dice.background" in a.compute()
