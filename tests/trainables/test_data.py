"""Data part of a trial: RLE, the UW-Madison GI reader, the synthetic generator, the cache, 2.5D slices."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from trainables.data import (
    GI_CLASSES,
    SliceDataset,
    build_augmentation,
    generate_uwmgi,
    load_index,
    prepare_cache,
    read_uwmgi,
    rle_decode,
    rle_encode,
)
from trainables.data import cache as cache_module

SMALL = dict(cases=4, slices_per_scan=10, image_size=32, seed=1)


@pytest.fixture(scope="module")
def gi_root(tmp_path_factory) -> Path:
    return generate_uwmgi(tmp_path_factory.mktemp("gi") / "data", **SMALL)


@pytest.fixture(scope="module")
def cache_dir(gi_root, tmp_path_factory) -> Path:
    return prepare_cache(gi_root, tmp_path_factory.mktemp("cache"), image_size=32, n_folds=2)


def _copy(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


# --- RLE -------------------------------------------------------------------------------------


def _random_masks():
    rng = np.random.default_rng(0)
    single_first = np.zeros((5, 7), np.uint8)
    single_first[0, 0] = 1
    single_last = np.zeros((5, 7), np.uint8)
    single_last[-1, -1] = 1
    return [
        np.zeros((5, 7), np.uint8),
        np.ones((5, 7), np.uint8),
        single_first,
        single_last,
        (rng.random((13, 9)) < 0.3).astype(np.uint8),
        (rng.random((16, 16)) < 0.7).astype(np.uint8),
    ]


@pytest.mark.parametrize("mask", _random_masks(), ids=["empty", "full", "first", "last", "sparse", "dense"])
def test_rle_round_trip(mask):
    rle = rle_encode(mask)
    decoded = rle_decode(rle, mask.shape)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, mask)
    assert (rle == "") == (not mask.any())


def test_rle_is_row_major_with_one_indexed_starts():
    expected = np.array([[0, 1, 1], [0, 0, 0]], np.uint8)  # pixels (0,1), (0,2)
    np.testing.assert_array_equal(rle_decode("2 2", (2, 3)), expected)
    np.testing.assert_array_equal(rle_decode("3 2", (2, 3)), np.array([[0, 0, 1], [1, 0, 0]], np.uint8))
    assert rle_encode(np.array([[0, 0, 0], [0, 1, 1]])) == "5 2"
    assert rle_encode(np.array([[1, 0, 0], [0, 0, 1]])) == "1 1 6 1"


@pytest.mark.parametrize("empty", ["", "  ", None, float("nan")])
def test_rle_empty_values_decode_to_empty_mask(empty):
    assert not rle_decode(empty, (3, 4)).any()


@pytest.mark.parametrize("bad", ["1", "0 2", "5 3", "a b"])
def test_rle_rejects_malformed_or_out_of_range(bad):
    with pytest.raises(ValueError):
        rle_decode(bad, (2, 3))


# --- generator -------------------------------------------------------------------------------


def test_generator_writes_uwmgi_format(gi_root):
    table = pd.read_csv(gi_root / "train.csv", keep_default_na=False)
    assert list(table.columns) == ["id", "class", "segmentation"]
    assert table["id"].str.fullmatch(r"case\d+_day\d+_slice_\d{4}").all()
    assert set(table["class"]) == set(GI_CLASSES)
    assert (table.groupby("id")["class"].count() == len(GI_CLASSES)).all()
    pngs = sorted((gi_root / "train").glob("case*/case*_day*/scans/slice_*.png"))
    assert len(pngs) == table["id"].nunique() == SMALL["cases"] * SMALL["slices_per_scan"]
    sizes = set()
    for png in pngs[:: SMALL["slices_per_scan"] - 1]:
        _, _, w, h, pw, ph = png.stem.split("_")
        image = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint16 and image.shape == (int(h), int(w))
        assert np.asarray(Image.open(png)).shape == (int(h), int(w))
        assert 100 < image.max() < 10_000
        assert len(pw.split(".")[1]) == 2 and float(pw) > 0 and float(ph) > 0
        sizes.add(image.shape)
    assert len(sizes) > 1  # some cases need resizing


def test_generator_is_deterministic_by_seed(tmp_path):
    args = dict(cases=2, slices_per_scan=6, image_size=24)
    a = generate_uwmgi(tmp_path / "a", seed=5, **args)
    b = generate_uwmgi(tmp_path / "b", seed=5, **args)
    c = generate_uwmgi(tmp_path / "c", seed=6, **args)
    assert (a / "train.csv").read_bytes() == (b / "train.csv").read_bytes()
    assert (a / "train.csv").read_bytes() != (c / "train.csv").read_bytes()
    png = next((a / "train").rglob("*.png")).relative_to(a)
    assert (a / png).read_bytes() == (b / png).read_bytes()


def test_generator_imbalance_resembles_uwmgi(tmp_path):
    root = generate_uwmgi(tmp_path / "d", cases=8, slices_per_scan=40, image_size=24, seed=2)
    table = pd.read_csv(root / "train.csv", keep_default_na=False)
    present = table.assign(on=table["segmentation"] != "").pivot(index="id", columns="class", values="on")
    prevalence = present.mean()
    empty_share = 1 - present.any(axis=1).mean()
    assert 0.45 <= empty_share <= 0.70
    assert prevalence["large_bowel"] > prevalence["small_bowel"] > prevalence["stomach"] > 0.1
    assert (present.sum(axis=1) >= 2).any()  # organs overlap in slices (multi-label)


def test_generator_refuses_foreign_folder(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileExistsError):
        generate_uwmgi(tmp_path, cases=1, slices_per_scan=2, image_size=16)


# --- reader ----------------------------------------------------------------------------------


def test_read_uwmgi_records(gi_root):
    records = read_uwmgi(gi_root)
    assert len(records) == SMALL["cases"] * SMALL["slices_per_scan"]
    keys = [(r.case, r.day, r.slice_number) for r in records]
    assert keys == sorted(keys)
    assert [r.case for r in records][:: SMALL["slices_per_scan"]] == [1, 8, 15, 22]  # numeric, not text order
    for r in records[:: SMALL["slices_per_scan"]]:
        assert cv2.imread(str(r.path), cv2.IMREAD_UNCHANGED).shape == (r.height, r.width)
        assert set(r.rles) == set(GI_CLASSES)
        assert r.spacing[0] in (1.5, 1.63)


def test_read_uwmgi_missing_png_names_it(gi_root, tmp_path):
    root = _copy(gi_root, tmp_path)
    victim = next((root / "train" / "case8").rglob("slice_0003_*.png"))
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=r"case8_day\d+_slice_0003.*slice_0003_W_H_PW_PH\.png"):
        read_uwmgi(root)


def test_read_uwmgi_unknown_class_names_csv(gi_root, tmp_path):
    root = _copy(gi_root, tmp_path)
    csv = root / "train.csv"
    csv.write_text(csv.read_text().replace("stomach", "liver", 1))
    with pytest.raises(ValueError, match=r"train\.csv.*liver"):
        read_uwmgi(root)


def test_read_uwmgi_size_mismatch_names_png(gi_root, tmp_path):
    root = _copy(gi_root, tmp_path)
    png = next((root / "train" / "case1").rglob("slice_0002_*.png"))
    _, number, w, h, pw, ph = png.stem.split("_")
    wrong = png.with_name(f"slice_{number}_{int(w) + 1}_{h}_{pw}_{ph}.png")
    png.rename(wrong)
    with pytest.raises(ValueError, match=str(wrong.name)):
        read_uwmgi(root)


def test_read_uwmgi_malformed_id_and_missing_files(gi_root, tmp_path):
    root = _copy(gi_root, tmp_path)
    csv = root / "train.csv"
    csv.write_text(csv.read_text().replace("_slice_0001", "_slice_1", 1))
    with pytest.raises(ValueError, match=r"malformed id 'case1_day\d+_slice_1'"):
        read_uwmgi(root)
    csv.unlink()
    with pytest.raises(FileNotFoundError, match="train.csv"):
        read_uwmgi(root)
    with pytest.raises(FileNotFoundError, match="train"):
        read_uwmgi(tmp_path / "nowhere")


# --- cache -----------------------------------------------------------------------------------


def test_cache_folds_are_grouped_by_patient(cache_dir):
    index = load_index(cache_dir)
    assert (index.groupby("case")["fold"].nunique() == 1).all()
    assert sorted(index["fold"].unique()) == [0, 1]
    assert index.groupby("fold")["case"].nunique().min() >= 1


def test_cache_index_columns_and_dtypes(cache_dir, gi_root):
    index = load_index(cache_dir)
    assert len(index) == SMALL["cases"] * SMALL["slices_per_scan"]
    for col in ["case", "day", "slice_number", "position", "n_slices", "fold"]:
        assert pd.api.types.is_integer_dtype(index[col]), col
    for col in ["spacing_h", "spacing_w"]:
        assert pd.api.types.is_float_dtype(index[col]), col
    for cls in GI_CLASSES:
        assert pd.api.types.is_bool_dtype(index[f"has_{cls}"]), cls
    assert pd.api.types.is_string_dtype(index["scan"])
    assert (index["scan"] == "case" + index["case"].astype(str) + "_day" + index["day"].astype(str)).all()
    per_scan = index.groupby("scan")
    assert (per_scan["position"].apply(lambda p: list(p) == list(range(len(p))))).all()
    assert (index["n_slices"] == per_scan["position"].transform("size")).all()
    # spacing is rescaled with the image: a 48-pixel-wide scan resized to 32 has 1.5x coarser pixels
    records = {r.id: r for r in read_uwmgi(gi_root)}
    for row in index.itertuples():
        rec = records[row.id]
        assert row.spacing_w == pytest.approx(rec.spacing[1] * rec.width / 32)
        assert row.spacing_h == pytest.approx(rec.spacing[0] * rec.height / 32)
        for cls in GI_CLASSES:
            assert getattr(row, f"has_{cls}") == bool(rec.rles[cls])


def test_cache_masks_equal_rle_at_original_size_and_images_are_minmax(cache_dir, gi_root):
    index = load_index(cache_dir)
    records = {r.id: r for r in read_uwmgi(gi_root)}
    checked = 0
    for scan, rows in index.groupby("scan"):
        images = np.load(cache_dir / "scans" / f"{scan}.npy")
        masks = np.load(cache_dir / "scans" / f"{scan}_mask.npy")
        assert images.dtype == np.float16 and images.shape == (len(rows), 32, 32)
        assert masks.dtype == np.uint8 and masks.shape == (len(rows), len(GI_CLASSES), 32, 32)
        assert images.min() >= 0.0 and images.max() <= 1.0  # resizing (area/linear) stays in range
        for row in rows.itertuples():
            rec = records[row.id]
            if (rec.height, rec.width) != (32, 32):
                continue
            assert images[row.position].min() == 0.0 and images[row.position].max() == 1.0
            raw = cv2.imread(str(rec.path), cv2.IMREAD_UNCHANGED).astype(np.float32)
            expected = (raw - raw.min()) / (raw.max() - raw.min())
            np.testing.assert_allclose(images[row.position], expected, atol=1e-3)
            for c, cls in enumerate(GI_CLASSES):
                np.testing.assert_array_equal(masks[row.position, c], rle_decode(rec.rles[cls], (32, 32)))
            checked += 1
    assert checked > 0


def test_cache_second_call_reuses_without_reading(gi_root, tmp_path, monkeypatch):
    out = prepare_cache(gi_root, tmp_path / "c", image_size=24, n_folds=3)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    def forbidden(*args, **kwargs):
        raise AssertionError("read_uwmgi must not run for a complete cache")

    monkeypatch.setattr(cache_module, "read_uwmgi", forbidden)
    assert prepare_cache(gi_root, tmp_path / "c", image_size=24, n_folds=3) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes
    with pytest.raises(AssertionError, match="must not run"):  # other parameters rebuild
        prepare_cache(gi_root, tmp_path / "c", image_size=24, n_folds=2)
    monkeypatch.undo()
    # the failed rebuild removed cache.json first, so the half-state is not taken as complete
    with pytest.raises(FileNotFoundError, match="cache.json"):
        load_index(tmp_path / "c")
    prepare_cache(gi_root, tmp_path / "c", image_size=24, n_folds=2)
    assert sorted(load_index(tmp_path / "c")["fold"].unique()) == [0, 1]


def test_cache_rejects_more_folds_than_patients(gi_root, tmp_path):
    with pytest.raises(ValueError, match=r"n_folds=5.*4 patients"):
        prepare_cache(gi_root, tmp_path / "c", image_size=16, n_folds=5)


# --- dataset ---------------------------------------------------------------------------------


def _scan_images(cache_dir: Path, scan: str) -> np.ndarray:
    return np.load(cache_dir / "scans" / f"{scan}.npy").astype(np.float32)


def test_dataset_25d_channels_and_scan_edges(cache_dir):
    ds = SliceDataset(cache_dir, folds=[0, 1])
    assert len(ds) == len(ds.index) == SMALL["cases"] * SMALL["slices_per_scan"]
    scan = ds.index["scan"].iloc[0]
    volume = _scan_images(cache_dir, scan)
    rows = ds.index.index[ds.index["scan"] == scan]
    first, middle, last = rows[0], rows[4], rows[-1]

    image, mask = ds[first]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert mask.dtype == torch.float32 and mask.shape == (len(GI_CLASSES), 32, 32)
    np.testing.assert_array_equal(image[0], volume[0])  # missing neighbour -> the target slice
    np.testing.assert_array_equal(image[1], volume[0])
    np.testing.assert_array_equal(image[2], volume[1])

    image, _ = ds[middle]
    for k in range(3):
        np.testing.assert_array_equal(image[k], volume[3 + k])

    image, _ = ds[last]
    np.testing.assert_array_equal(image[1], volume[-1])
    np.testing.assert_array_equal(image[2], volume[-1])
    np.testing.assert_array_equal(image[0], volume[-2])

    assert SliceDataset(cache_dir, folds=[0], context=2)[0][0].shape == (5, 32, 32)


def test_dataset_selects_folds_and_pickles_small(cache_dir):
    val = SliceDataset(cache_dir, folds=[1])
    train = SliceDataset(cache_dir, folds=[0])
    assert set(val.index["case"]).isdisjoint(train.index["case"])
    assert len(val) + len(train) == SMALL["cases"] * SMALL["slices_per_scan"]
    assert train.classes == GI_CLASSES
    with pytest.raises(ValueError, match="folds"):
        SliceDataset(cache_dir, folds=[7])
    train[0]  # opens arrays; they must not travel with the pickle
    clone = pickle.loads(pickle.dumps(train))
    assert len(pickle.dumps(train)) < 50_000
    torch.testing.assert_close(clone[3][0], train[3][0])


def test_dataset_with_dataloader_and_augmentation(cache_dir):
    ds = SliceDataset(cache_dir, folds=[0], transform=build_augmentation(32))
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(0))
    n = 0
    for image, mask in loader:
        assert image.shape[1:] == (3, 32, 32) and image.dtype == torch.float32
        assert mask.shape[1:] == (len(GI_CLASSES), 32, 32) and mask.dtype == torch.float32
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert torch.isfinite(image).all()
        n += len(image)
    assert n == len(ds)


def test_augmentation_keeps_shapes_and_binary_masks():
    assert build_augmentation(32, "none") is None
    aug = build_augmentation(32)
    rng = np.random.default_rng(0)
    image = rng.random((32, 32, 3), dtype=np.float32)
    mask = np.zeros((32, 32, 3), np.uint8)
    mask[8:20, 10:24, 0] = 1
    mask[12:30, 4:16, 2] = 1
    for _ in range(20):
        out = aug(image=image, mask=mask)
        assert out["image"].shape == (32, 32, 3) and out["image"].dtype == np.float32
        assert out["mask"].shape == (32, 32, 3)
        assert set(np.unique(out["mask"]).tolist()) <= {0, 1}
    with pytest.raises((KeyError, ValueError)):
        build_augmentation(32, "extreme")


def test_roi_ratio_subset_reaches_the_ratio_both_ways():
    import pandas as pd

    from trainables.data import roi_ratio_subset

    index = pd.DataFrame({"has_a": [True] * 30 + [False] * 70, "has_b": [False] * 100, "slice": range(100)})
    low = roi_ratio_subset(index, 0.1, ("a", "b"), seed=1)  # 30/70 > 0.1: subsample present to 7
    assert low["has_a"].sum() == 7 and (~low["has_a"]).sum() == 70
    high = roi_ratio_subset(index, 1.0, ("a", "b"), seed=1)  # 30/70 < 1: subsample absent to 30
    assert high["has_a"].sum() == 30 and (~high["has_a"]).sum() == 30
    assert high["slice"].is_monotonic_increasing
    with pytest.raises(ValueError, match="roi_ratio must be > 0"):
        roi_ratio_subset(index, 0.0, ("a", "b"))
