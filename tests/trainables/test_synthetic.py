"""The generated stand-in looks like an MR abdomen to a segmentation network: grey levels shared between
organs and unlabelled tissue, small structures, organs inside the body."""

import cv2
import numpy as np
import pytest

from trainables.data import generate_uwmgi
from trainables.data.rle import rle_decode
from trainables.data.uwmgi import GI_CLASSES, read_uwmgi


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Returns [(images (S, H, W) float, {class: masks (S, H, W) bool})], one per generated scan."""
    root = generate_uwmgi(tmp_path_factory.mktemp("synthetic"), cases=3, slices_per_scan=20, image_size=96, seed=0)
    by_scan: dict[str, list] = {}
    for record in read_uwmgi(root):
        by_scan.setdefault(record.scan, []).append(record)
    out = []
    for records in by_scan.values():
        images = np.stack([cv2.imread(str(r.path), cv2.IMREAD_UNCHANGED).astype(np.float64) for r in records])
        shape = images.shape[1:]
        masks = {c: np.stack([rle_decode(r.rles[c], shape).astype(bool) for r in records]) for c in GI_CLASSES}
        out.append((images, masks))
    return out


def test_grey_level_alone_does_not_name_an_organ(scans):
    # the best a grey-level window can do: all pixels within the organ's own 5-95% intensity range,
    # scored by Dice against the organ; a network must use shape, texture and position instead
    for images, masks in scans:
        for cls in GI_CLASSES:
            organ = masks[cls]
            low, high = np.percentile(images[organ], [5, 95])
            window = (images >= low) & (images <= high)
            dice = 2 * (window & organ).sum() / (window.sum() + organ.sum())
            assert dice < 0.5, (cls, dice)


def test_small_bowel_has_small_structures(scans):
    # loops cut across: connected pieces under 0.5% of the slice, as in the real set
    sizes = []
    for _, masks in scans:
        for plane in masks["small_bowel"]:
            n, _, stats, _ = cv2.connectedComponentsWithStats(plane.astype(np.uint8), connectivity=8)
            sizes.extend(stats[1:n, cv2.CC_STAT_AREA] / plane.size)
    assert sizes and min(sizes) < 0.005


def body_outline(image: np.ndarray) -> np.ndarray:
    """Returns the filled outline of the largest bright region (the body, gas pockets included)."""
    bright = (image > 0.5 * np.percentile(image, 50)).astype(np.uint8)
    contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    body = np.zeros_like(bright)
    cv2.drawContours(body, [max(contours, key=cv2.contourArea)], -1, 1, -1)
    return body.astype(bool)


def test_organs_lie_inside_the_body(scans):
    for images, masks in scans:
        body = np.stack([body_outline(image) for image in images])
        for cls in GI_CLASSES:
            assert body[masks[cls]].all(), cls
