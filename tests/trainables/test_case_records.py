"""Tests of trainables.metrics.cases: histograms by hand and at exact grid edges, records against the
functional metrics (confusion_counts, compute_boundary_metrics, object_counts), the table's types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from trainables.metrics import (
    CASE_COLUMNS,
    CaseRecords,
    SegmentationMetrics,
    case_records,
    compute_boundary_metrics,
    confusion_counts,
    grid_counts,
    low_bin_sums,
    object_counts,
    probability_histograms,
)
from trainables.metrics import accumulator as accumulator_module

CLASSES = ("stomach", "small_bowel")


def _keys(n: int, fold: int = 2) -> pd.DataFrame:
    """Cache index rows of n slices of two scans of one patient."""
    return pd.DataFrame(
        {
            "patient": ["case7"] * n,
            "scan": [f"case7_day{i % 2}" for i in range(n)],
            "slice_number": np.arange(n) + 40,
            "fold": fold,
            "position": np.arange(n),
        }
    )


def test_histograms_by_hand_including_edges_that_rounding_would_misplace():
    f32 = np.float32
    # with 20 bins: p -> bin; float32(0.85) * 20 rounds below 17 in float32, but p >= 0.85 holds
    cases = [
        (0.0, 0),
        (0.049, 0),
        (0.05, 1),
        (np.nextafter(f32(0.5), f32(0)), 9),
        (0.5, 10),
        (0.85, 17),
        (np.nextafter(f32(0.85), f32(0)), 16),
        (0.99, 19),
        (1.0, 19),
    ]
    probs = torch.tensor([float(f32(p)) for p, _ in cases], dtype=torch.float32).view(1, 1, 1, -1)
    target = torch.tensor([i % 2 for i in range(len(cases))]).view(1, 1, 1, -1)  # alternate bg / fg
    hist = probability_histograms(probs, target, 20)
    assert hist.shape == (1, 1, 2, 20) and hist.dtype == torch.int64
    expected = np.zeros((2, 20), dtype=np.int64)
    for i, (_, b) in enumerate(cases):
        expected[i % 2, b] += 1
    assert hist[0, 0].tolist() == expected.tolist()


@pytest.mark.parametrize("n_bins", [20, 37, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_histogram_cumulative_sums_equal_thresholded_counts_at_every_grid_threshold(n_bins, dtype):
    gen = torch.Generator().manual_seed(n_bins)
    probs = torch.rand(3, 2, 16, 16, generator=gen, dtype=dtype)
    edges = torch.arange(n_bins + 1, dtype=torch.float64) / n_bins
    # every grid edge and its neighbours below and above are present (the values rounding misplaces)
    for i, e in enumerate(edges.to(dtype)):
        probs.view(-1)[3 * i : 3 * i + 3] = torch.stack(
            [torch.nextafter(e, torch.zeros((), dtype=dtype)), e, torch.nextafter(e, torch.ones((), dtype=dtype))]
        )
    probs.clamp_(0, 1)
    target = torch.rand(probs.shape, generator=gen) < 0.3
    hist = probability_histograms(probs, target, n_bins).numpy()
    tp, fp, fn, tn = grid_counts(hist[:, :, 1], hist[:, :, 0])
    for k in range(n_bins):  # k = n predicts nothing only when no p is exactly 1; checked below
        counts = confusion_counts(probs >= k / n_bins, target)
        for ours, theirs in zip((tp, fp, fn, tn), counts):
            assert np.array_equal(ours[..., k], theirs.numpy()), k
    assert (tp[..., 0] + fn[..., 0] == target.sum((2, 3)).numpy()).all()
    assert (tp[..., n_bins] == 0).all() and (fp[..., n_bins] == 0).all()


def test_both_ways_of_counting_keys_agree():
    from trainables.metrics.cases import _count_keys

    key = torch.randint(0, 50, (1000,), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_count_keys(key, 60, True), _count_keys(key, 60, False))
    assert _count_keys(key, 60, False)[50:].sum() == 0


def test_low_bin_sums_by_hand():
    probs = torch.tensor([0.01, 0.049, 0.05, 0.5, 0.02, 0.9], dtype=torch.float32).view(1, 2, 1, 3)
    sums = low_bin_sums(probs, 20)  # bin 0 of 20 is p < 0.05
    assert sums.shape == (1, 2) and sums.dtype == torch.float32
    torch.testing.assert_close(sums, torch.tensor([[0.059, 0.02]]), atol=1e-7, rtol=0)


def test_grid_counts_by_hand():
    tp, fp, fn, tn = grid_counts([[1, 0, 2, 3]], [[5, 1, 0, 0]])  # 4 bins
    assert tp.tolist() == [[6, 5, 5, 3, 0]] and fn.tolist() == [[0, 1, 1, 3, 6]]
    assert fp.tolist() == [[6, 1, 0, 0, 0]] and tn.tolist() == [[0, 5, 6, 6, 6]]


def _batch(seed: int, n: int = 4, size: int = 12):
    gen = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(n, 2, size, size, generator=gen), 3, 1, 1) * 3
    target = (torch.nn.functional.avg_pool2d(torch.randn(n, 2, size, size, generator=gen), 3, 1, 1) > 0.3).float()
    target[0, 1] = 0  # an empty slice of one class
    return smooth, target


def test_records_equal_the_functional_metrics_and_the_keys():
    logits, target = _batch(1)
    spacing = np.array([[1.5, 1.5], [1.5, 1.5], [0.8, 0.8], [0.8, 0.8]])
    metrics = SegmentationMetrics(CLASSES, threshold=0.4, spacing=None, case_bins=20)
    metrics.update(logits, target, spacing=spacing)
    keys = _keys(4)
    frame = metrics.cases.frame(keys)
    assert list(frame.columns) == list(CASE_COLUMNS) and len(frame) == 4 * 2

    probs = torch.sigmoid(logits.float())
    pred = probs >= 0.4
    tp, fp, fn, tn = (x.numpy().reshape(-1) for x in confusion_counts(pred, target))
    assert frame["tp"].tolist() == tp.tolist() and frame["fp"].tolist() == fp.tolist()
    assert frame["fn"].tolist() == fn.tolist() and frame["tn"].tolist() == tn.tolist()
    assert frame["area"].tolist() == target.sum((2, 3)).long().view(-1).tolist()
    boundary = compute_boundary_metrics(pred, target, spacing=spacing)
    for name in ("nsd", "hd95", "boundary_f1"):
        np.testing.assert_allclose(frame[name].to_numpy(), boundary[name].reshape(-1), rtol=1e-6)
    objects = object_counts(pred, target)
    for i, name in enumerate(("objects_true", "objects_found", "objects_pred", "objects_correct")):
        assert frame[name].tolist() == objects[i].reshape(-1).tolist()
    # rows image by image, classes in channel order; keys from the index rows
    assert frame["class"].tolist() == list(CLASSES) * 4
    assert frame["slice"].tolist() == [40, 40, 41, 41, 42, 42, 43, 43]
    assert frame["scan"].tolist()[:4] == ["case7_day0", "case7_day0", "case7_day1", "case7_day1"]
    assert set(frame["patient"]) == {"case7"} and set(frame["fold"]) == {2}
    # histograms give the counts at 0.4 on the grid of 20 bins (0.4 = 8/20) and cover every pixel
    fg, bg = np.stack(frame["hist_fg"].to_list()), np.stack(frame["hist_bg"].to_list())
    assert (fg[:, 8:].sum(1) == tp).all() and (bg[:, 8:].sum(1) == fp).all()
    assert ((fg.sum(1) + bg.sum(1)) == 12 * 12).all()
    low = torch.where(probs < 1 / 20, probs, 0).sum((2, 3)).view(-1)
    np.testing.assert_allclose(frame["prob_sum_low"].to_numpy(), low.numpy(), rtol=1e-5)


def test_record_types_and_parquet_round_trip(tmp_path):
    logits, target = _batch(2)
    frame = case_records(torch.sigmoid(logits), target, CLASSES, _keys(4), n_bins=30)
    types = {
        "fold": "int16",
        "slice": "int32",
        "area": "int32",
        "tp": "int32",
        "tn": "int32",
        "nsd": "float32",
        "hd95": "float32",
        "objects_true": "Int16",
        "class": "category",
    }
    for column, dtype in types.items():
        assert str(frame[column].dtype) == dtype, column
    assert all(len(h) == 30 for h in frame["hist_fg"])
    frame.to_parquet(tmp_path / "cases.parquet")
    back = pd.read_parquet(tmp_path / "cases.parquet")
    assert back["hist_bg"].to_list()[3].tolist() == frame["hist_bg"].to_list()[3].tolist()
    assert back["tp"].tolist() == frame["tp"].tolist() and list(back["class"].cat.categories) == list(CLASSES)
    import pyarrow.parquet as pq

    schema = pq.read_schema(tmp_path / "cases.parquet")
    import pyarrow as pa

    assert schema.field("hist_fg").type.equals(pa.list_(pa.field("element", pa.int32())))
    assert str(schema.field("objects_found").type) == "int16"


def test_without_boundary_metrics_boundary_is_nan_and_objects_null():
    logits, target = _batch(3)
    metrics = SegmentationMetrics(CLASSES, boundary=False, case_bins=20)
    metrics.update(logits, target)
    frame = metrics.cases.frame(_keys(4))
    assert frame["nsd"].isna().all() and frame["objects_pred"].isna().all()
    assert frame["tp"].tolist() == confusion_counts(torch.sigmoid(logits) >= 0.5, target)[0].view(-1).tolist()


def test_batches_accumulate_reset_and_chunking_change_nothing(monkeypatch):
    logits, target = _batch(4, n=6)
    whole = SegmentationMetrics(CLASSES, case_bins=25)
    whole.update(logits, target)
    expected = whole.cases.frame(_keys(6))
    monkeypatch.setattr(accumulator_module, "_CPU_CHUNK_BYTES", 1)  # one image per chunk
    split = SegmentationMetrics(CLASSES, case_bins=25)
    split.update(logits[:1], target[:1])  # forgotten by reset
    split.reset()
    assert split.cases.num_images == 0
    split.update(logits[:4], target[:4])
    split.update(logits[4:], target[4:])
    got = split.cases.frame(_keys(6))
    pd.testing.assert_frame_equal(got, expected)
    with pytest.raises(ValueError, match="one key row per image"):
        split.cases.frame(_keys(5))


def test_softmax_records_leave_background_out_and_count_the_argmax():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 3, 8, 8, generator=gen)
    labels = torch.randint(0, 3, (3, 8, 8), generator=gen)
    for include_background in (False, True):
        metrics = SegmentationMetrics(
            ("background", *CLASSES), activation="softmax", case_bins=20, include_background=include_background
        )
        metrics.update(logits, labels)
        frame = metrics.cases.frame(_keys(3))
        assert frame["class"].tolist() == list(CLASSES) * 3
        pred = torch.nn.functional.one_hot(logits.argmax(1), 3).movedim(-1, 1)
        truth = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1)
        assert frame["tp"].tolist() == confusion_counts(pred, truth)[0][:, 1:].reshape(-1).tolist()
        fg = np.stack(frame["hist_fg"].to_list())
        assert fg.sum(1).tolist() == truth[:, 1:].sum((2, 3)).reshape(-1).tolist()


def test_histograms_stay_on_the_device_until_the_frame():
    records = CaseRecords(CLASSES, 20)
    with pytest.raises(RuntimeError, match="before any add"):
        records.frame(_keys(1))
    with pytest.raises(ValueError, match="histograms"):
        records.add(torch.zeros(2, 2, 4), torch.zeros(2, 2, 2, 10))
    with pytest.raises(ValueError, match="n_bins"):
        CaseRecords(CLASSES, 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    logits, target = (x.to(device) for x in _batch(6))
    metrics = SegmentationMetrics(CLASSES, boundary=False, case_bins=20)
    metrics.update(logits, target)
    assert all(h.device.type == torch.device(device).type for h in metrics.cases._histograms)
    assert (
        metrics.cases.frame(_keys(4))["tp"].tolist()
        == confusion_counts(torch.sigmoid(logits) >= 0.5, target)[0].view(-1).tolist()
    )
