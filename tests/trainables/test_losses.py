"""Tests of trainables.losses: hand-computed values, independent implementations, registry behaviour.

Tolerances: hand-computed values 1e-6 (float32 arithmetic on 4 pixels); agreement with smp 1e-6
(same float32 formulas, only summation order differs); agreement with the numpy/scipy
reimplementations below 1e-5 (float64 reference vs float32 loss).

References:

- paper 001: Oshah A. A., Rgibi A. E., Alarbish A., Amin H. H. "Accurate segmentation of imbalanced
  medical images: a comparative study." 2025. doi:10.26629/jtr.2025.57
- paper 003: Furtado P. "Investigation of loss functions for improving deep segmentation of
  abdominal organs from MRI." University of Coimbra, undated manuscript; related published study:
  Furtado P. "Testing segmentation popular loss and variations in three multiclass medical imaging
  problems." J. Imaging 7(2):16, 2021. doi:10.3390/jimaging7020016
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import scipy.stats
import segmentation_models_pytorch.losses as smp_losses
import torch
import torch.nn.functional as F

from trainables.losses import (
    CALF_TRANSFORMS,
    LOSSES,
    CalfLoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    Knob,
    PMDiceLoss,
    SoftBCELoss,
    SumConstraint,
    TverskyLoss,
    WeightedSum,
    assemble_knobs,
    build_compound,
    build_loss,
    calf_statistics,
    describe_losses,
    flat_knob_space,
    loss_constraints,
    loss_knobs,
    parse_compound,
    register_loss,
    select_calf_transform,
)
from trainables.losses import _functional as LF

LN2 = math.log(2.0)
LN43 = math.log(4.0 / 3.0)
LN4 = math.log(4.0)
BCE_EXAMPLE = (LN2 + LN43) / 2  # mean BCE of _example()

# Skewness 0.84, excess kurtosis -0.66 (scipy, population moments): CALF picks natural-log BCE.
LN_BCE_AREAS = [1, 1, 2, 3, 5, 8]

# Context each loss needs to be built (the rest need none); every loss ignores the others'.
CONTEXT = {
    "weighted_ce": {"class_frequencies": [0.25, 0.25, 0.25]},
    "calf": {"foreground_areas": LN_BCE_AREAS},
}


def _build(name: str, activation: str = "sigmoid", n_classes: int = 3, **knobs):
    context = dict(CONTEXT.get(name, {}))
    if name == "weighted_ce":
        context["class_frequencies"] = [1.0 / (n_classes + 1)] * n_classes
    return build_loss(name, activation=activation, **context, **knobs)


def _example() -> tuple[torch.Tensor, torch.Tensor]:
    """1x1x2x2 example: p = sigmoid(z) = [0.5, 0.75, 0.25, 0.5], g = [1, 1, 0, 0].

    Soft sums: tp = 0.5 + 0.75 = 1.25, fp = 0.25 + 0.5 = 0.75, fn = 0.5 + 0.25 = 0.75,
    sum p = 2, sum g = 2, Dice (s = 1) = 3.5 / 5 = 0.7. Per-pixel BCE (-log p_t): ln2, ln(4/3),
    ln(4/3), ln2. Errors |g - p|: 0.5, 0.25, 0.25, 0.5.
    """
    z = torch.tensor([0.0, math.log(3.0), -math.log(3.0), 0.0]).view(1, 1, 2, 2)
    g = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    return z, g


# (name, knobs, context, expected) on _example(); adding a loss adds a row here.
HAND_CASES = [
    # 1 - (2*1.25 + 1) / (2 + 2 + 1) = 1 - 3.5/5
    ("dice", {}, {}, 0.3),
    # 1 - 2.5/4
    ("dice", {"smooth": 0.0}, {}, 0.375),
    # mean(ln2, ln4/3, ln4/3, ln2) = (ln2 + ln4/3) / 2
    ("soft_bce", {}, {}, BCE_EXAMPLE),
    # targets 0.9/0.1: pixels p=.5 give ln2; p=.75,t=.9 and p=.25,t=.1 give .9 ln(4/3) + .1 ln4
    ("soft_bce", {"smoothing": 0.2}, {}, (LN2 + 0.9 * LN43 + 0.1 * LN4) / 2),
    # sigmoid CE is BCE
    ("ce", {}, {}, BCE_EXAMPLE),
    # f = 0.25: positives weigh 1/(2*.25) = 2, negatives 1/(2*.75) = 2/3:
    # (2 ln2 + 2 ln4/3 + 2/3 ln4/3 + 2/3 ln2) / 4 = (2/3)(ln2 + ln4/3)
    ("weighted_ce", {}, {"class_frequencies": [0.25]}, 2 / 3 * (LN2 + LN43)),
    # f = 0.5: both weights 1, plain BCE
    ("weighted_ce", {}, {"class_frequencies": [0.5]}, BCE_EXAMPLE),
    # (1-p_t)^2 = .25, .0625, .0625, .25 -> mean = (.25 ln2 + .0625 ln4/3) / 2
    ("focal", {}, {}, (0.25 * LN2 + 0.0625 * LN43) / 2),
    # gamma 0: BCE
    ("focal", {"gamma": 0.0}, {}, BCE_EXAMPLE),
    # (1-p_t)^1 = .5, .25, .25, .5 -> (.5 ln2 + .25 ln4/3) / 2
    ("focal", {"gamma": 1.0}, {}, (0.5 * LN2 + 0.25 * LN43) / 2),
    # 1 - (1.25 + 1) / (1.25 + 0.3*0.75 + 0.7*0.75 + 1) = 1 - 2.25/3
    ("tversky", {}, {}, 0.25),
    # 1 - 1.25 / (1.25 + 0.3*0.75 + 0.7*0.75) = 1 - 1.25/2
    ("tversky", {"smooth": 0.0}, {}, 0.375),
    # 1 - 1.25 / (1.25 + 0.9*0.75 + 0.1*0.75) = 1 - 1.25/2
    ("tversky", {"alpha": 0.9, "beta": 0.1, "smooth": 0.0}, {}, 0.375),
    # Tversky loss 0.25 raised to 1/gamma = 3/4
    ("focal_tversky", {}, {}, 0.25**0.75),
    ("focal_tversky", {"gamma": 1.0}, {}, 0.25),
    # 0.25^(1/2)
    ("focal_tversky", {"gamma": 2.0}, {}, 0.5),
    # 1 - (1.25 + 1) / (1.25 + 0.75 + 0.75 + 1) = 1 - 2.25/3.75
    ("iou_xy", {}, {}, 0.4),
    # 1 - 1.25 / (1.25 + 0.5*0.75 + 1.5*0.75) = 1 - 1.25/2.75 = 6/11
    ("iou_xy", {"alpha": 0.5, "beta": 1.5, "smooth": 0.0}, {}, 6 / 11),
    # beta derived = 2 - 1.5 = 0.5: same sums, same 6/11
    ("iou_xy", {"alpha": 1.5, "smooth": 0.0}, {}, 6 / 11),
    # -ln 0.7
    ("log_dice", {}, {}, -math.log(0.7)),
    # (-ln 0.7)^0.5
    ("log_dice", {"gamma": 0.5}, {}, math.sqrt(-math.log(0.7))),
    # w = 1/2^2 = .25: 1 - (2*.25*1.25 + s) / (.25*(2 + 2) + s), s = 1e-5
    ("generalized_dice", {}, {}, 1 - (0.625 + 1e-5) / (1.0 + 1e-5)),
    # 1 - 0.7^(1/2)
    ("focal_dice", {}, {}, 1 - math.sqrt(0.7)),
    # beta 1: class-mean Dice = 0.3
    ("focal_dice", {"beta": 1.0}, {}, 0.3),
    # fg errors .5 (pixel 1), .25 (pixel 2); keep ceil(10% of 2) = 1: pixel 1, plus pixels 3, 4:
    # tp = .5, sum p = .5 + .25 + .5 = 1.25, sum g = 1 -> 1 - (1 + 1) / (2.25 + 1) = 5/13
    ("topk_dice", {}, {}, 5 / 13),
    ("topk_dice", {"k": 50.0}, {}, 5 / 13),
    ("topk_dice", {"k": 100.0}, {}, 0.3),
    # pixel CEs ln2, ln4/3, ln4/3, ln2: top ceil(10% of 4) = 1 -> ln2; top 2 -> ln2
    ("topk_ce", {}, {}, LN2),
    ("topk_ce", {"k": 50.0}, {}, LN2),
    # top 3 -> (2 ln2 + ln4/3) / 3
    ("topk_ce", {"k": 75.0}, {}, (2 * LN2 + LN43) / 3),
    ("topk_ce", {"k": 100.0}, {}, BCE_EXAMPLE),
    # m = .5, .25, .25, .5; num = 2 (.5*.5 + .25*.75) + e = .875 + e;
    # den = .5 (1 + .25) + .25 (1 + .5625) + .25 * .0625 + .5 * .25 + e = 1.15625 + e
    ("pm_dice", {}, {}, 1 - (0.875 + 1e-6) / (1.15625 + 1e-6)),
    # m = 1: num = 2 * 1.25 + e; den = sum g^2 + sum p^2 + e = 2 + 1.125 + e
    ("pm_dice", {"gamma": 0.0}, {}, 1 - (2.5 + 1e-6) / (3.125 + 1e-6)),
    # m = .25, .0625, .0625, .25; num = 2 (.25*.5 + .0625*.75) = .34375;
    # den = .25*1.25 + .0625*1.5625 + .0625*.0625 + .25*.25 = .4765625
    ("pm_dice", {"gamma": [2.0]}, {}, 1 - (0.34375 + 1e-6) / (0.4765625 + 1e-6)),
    # LN_BCE_AREAS select natural-log BCE
    ("calf", {}, {"foreground_areas": LN_BCE_AREAS}, BCE_EXAMPLE),
    # 0.5 * 0.3 + 0.5 * (ln2 + ln4/3) / 2
    ("dice_soft_bce", {}, {}, 0.15 + 0.25 * (LN2 + LN43)),
    # 0.8 * 0.3 + 0.2 * (ln2 + ln4/3) / 2
    ("dice_soft_bce", {"dice_weight": 0.8}, {}, 0.24 + 0.1 * (LN2 + LN43)),
    # focal (gamma 2): (.25 ln2 + .0625 ln4/3) / 2; 0.5 * focal + 0.5 * 0.3
    ("focal_plus_dice", {}, {}, 0.5 * (0.25 * LN2 + 0.0625 * LN43) / 2 + 0.15),
    # gamma 0: focal = BCE = (ln2 + ln4/3) / 2
    ("focal_plus_dice", {"gamma": 0.0}, {}, 0.25 * (LN2 + LN43) + 0.15),
]


@pytest.mark.parametrize(("name", "knobs", "context", "expected"), HAND_CASES)
def test_hand_computed_value(name, knobs, context, expected):
    z, g = _example()
    assert build_loss(name, **context, **knobs)(z, g).item() == pytest.approx(expected, abs=1e-6)


def test_every_registered_loss_has_a_hand_case():
    assert {name for name, *_ in HAND_CASES} == set(LOSSES)


def test_registry_holds_exactly_the_documented_losses():
    assert set(LOSSES) == {
        "dice",
        "soft_bce",
        "ce",
        "weighted_ce",
        "focal",
        "tversky",
        "focal_tversky",
        "iou_xy",
        "log_dice",
        "generalized_dice",
        "focal_dice",
        "topk_dice",
        "topk_ce",
        "pm_dice",
        "calf",
        "dice_soft_bce",
        "focal_plus_dice",
    }


def test_focal_loss_hand_value():
    z, g = _example()
    assert FocalLoss(gamma=2.0)(z, g).item() == pytest.approx((0.25 * LN2 + 0.0625 * LN43) / 2, abs=1e-6)
    # alpha weighting 2[alpha g + (1 - alpha)(1 - g)]: positives (ln2, ln4/3 terms of pixels 1, 2)
    # x0.5, negatives x1.5; the example is symmetric, so this equals the unweighted value
    expected = (0.5 * 0.25 * LN2 + 0.5 * 0.0625 * LN43 + 1.5 * 0.0625 * LN43 + 1.5 * 0.25 * LN2) / 4
    assert FocalLoss(gamma=2.0, alpha=0.25)(z, g).item() == pytest.approx(expected, abs=1e-6)


def test_focal_alpha_weights_positives_and_negatives():
    # p = .75 on a positive (CE ln4/3), .5 on a negative (CE ln2); gamma 0, alpha .25:
    # weights 2*.25 = .5 and 2*.75 = 1.5 -> (.5 ln4/3 + 1.5 ln2) / 2
    z = torch.tensor([math.log(3.0), 0.0]).view(1, 1, 1, 2)
    g = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    assert FocalLoss(gamma=0.0, alpha=0.25)(z, g).item() == pytest.approx((0.5 * LN43 + 1.5 * LN2) / 2, abs=1e-6)
    assert FocalLoss(gamma=0.0, alpha=None)(z, g).item() == pytest.approx((LN43 + LN2) / 2, abs=1e-6)


# (transform, expected) on _example(), for every CALF transformation.
CALF_HAND = [
    ("ln_bce", BCE_EXAMPLE),
    ("log10_bce", BCE_EXAMPLE / math.log(10.0)),
    # BCE + (1 - Dice coefficient 0.7)
    ("bce_dice", BCE_EXAMPLE + 0.3),
    # y ln(p/(1-p)): 0, ln3; (1-y) ln((1-p)/p): ln3, 0 -> -(2 ln3)/4
    ("logit", -math.log(3.0) / 2),
    # y .5 ln((1+p)/(1-p)): .5 ln3, .5 ln7; (1-y) .5 ln((2-p)/p): .5 ln7, .5 ln3 -> -(ln3 + ln7)/4
    ("fisher", -(math.log(3.0) + math.log(7.0)) / 4),
    # asin(sqrt .5) = pi/4, asin(sqrt .75) = pi/3, twice each -> -(pi/4 + pi/3)/2
    ("arcsine", -7 * math.pi / 24),
]


@pytest.mark.parametrize(("transform", "expected"), CALF_HAND)
def test_calf_transform_hand_values(transform, expected):
    z, g = _example()
    loss = CalfLoss(transform=transform)
    assert loss.transform == transform
    assert loss(z, g).item() == pytest.approx(expected, abs=1e-6)


def test_calf_hand_cases_cover_every_transform():
    assert {t for t, _ in CALF_HAND} == set(CALF_TRANSFORMS)


# ---------------------------------------------------------------- shared behaviour over LOSSES


def _random_case(n=2, c=3, h=8, w=8, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, h, w, generator=gen) * 2
    g = (torch.rand(n, c, h, w, generator=gen) < 0.3).float()
    g[:, :, 0, 0] = 1.0  # every class present in every image (smp zeroes absent classes)
    return z, g


def _random_multiclass(n=2, c=3, h=8, w=8, seed=0, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax case: one-hot target, channel 0 background, every class present in every image."""
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, c, h, w, generator=gen) * 2).to(dtype)
    labels = torch.randint(0, c, (n, h, w), generator=gen)
    labels[:, 0, :c] = torch.arange(c)
    return z, F.one_hot(labels, c).permute(0, 3, 1, 2).to(dtype)


def _case(activation: str, **kwargs):
    return _random_case(**kwargs) if activation == "sigmoid" else _random_multiclass(**kwargs)


ACTIVATIONS = ["sigmoid", "softmax"]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_registered_loss_declares_valid_knobs_and_docstring(name):
    cls = LOSSES[name]
    doc = inspect.getdoc(cls)
    assert doc and doc.splitlines()[0].strip()
    assert getattr(cls, "source", "")
    params = inspect.signature(cls.__init__).parameters
    for option in ("activation", "include_background"):
        assert params[option].kind is inspect.Parameter.KEYWORD_ONLY
    for knob_name, knob in loss_knobs(name).items():
        assert isinstance(knob, Knob)
        assert knob.low <= knob.default <= knob.high
        assert params[knob_name].default == knob.default


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_perfect_prediction_is_near_zero(name, activation):
    _, g = _case(activation)
    if activation == "sigmoid":
        g[1, 2] = 0.0  # one empty organ slice, predicted empty
    z = (g * 2 - 1) * 20.0
    assert _build(name, activation)(z, g).item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_flows_and_is_finite(name, activation):
    z, g = _case(activation)
    z.requires_grad_(True)
    loss = _build(name, activation)(z, g)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_extreme_logits_give_finite_value_and_gradient(name, activation):
    _, g = _case(activation)
    gen = torch.Generator().manual_seed(1)
    z = (torch.randint(0, 2, g.shape, generator=gen).float() * 2 - 1) * 1e4  # half right, half wrong
    z.requires_grad_(True)
    loss = _build(name, activation)(z, g)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_background_batch(name, activation):
    # sigmoid: every organ channel empty; softmax: every pixel background. Predicted right
    # (logits -20 / background +20), the loss is finite with a finite gradient, and near 0
    # except Generalized Dice: all classes absent -> weights 1, score s / (sum p + s) with the
    # tiny s = 1e-5, so even sigmoid(-20) = 2e-9 on 384 elements costs (documented).
    g = torch.zeros(2, 3, 8, 8)
    if activation == "softmax":
        g[:, 0] = 1.0
    z = ((g * 2 - 1) * 20.0).requires_grad_(True)
    loss = _build(name, activation)(z, g)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    if name != "generalized_dice" or activation == "softmax":
        assert loss.item() == pytest.approx(0.0, abs=1e-4)
    else:
        total = torch.sigmoid(torch.tensor(-20.0)).item() * g.numel()
        assert loss.item() == pytest.approx(1 - 1e-5 / (total + 1e-5), rel=1e-4)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_logits_give_float32_loss(name, dtype):
    z, g = _random_case()
    loss = _build(name)(z.to(dtype), g.bool())
    reference = _build(name)(z.to(dtype).float(), g)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), abs=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_autocast_keeps_float32(name):
    z, g = _random_case()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = _build(name)(z, g)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(_build(name)(z, g).item(), abs=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_shape_mismatch_raises(name):
    z, g = _random_case()
    with pytest.raises(ValueError, match="same shape"):
        _build(name)(z, g[:, :1])


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_softmax_without_background_is_finite_and_differs_only_where_documented(name):
    z, g = _random_multiclass()
    with_bg = _build(name, "softmax")(z, g)
    without = build_loss(name, activation="softmax", include_background=False, **_context(name))(z, g)
    assert torch.isfinite(without)
    if name in ("ce", "weighted_ce", "topk_ce", "focal"):  # softmax pixel losses keep every channel
        assert without.item() == pytest.approx(with_bg.item(), abs=1e-6)


def _context(name: str) -> dict:
    return dict(CONTEXT.get(name, {}))


# ---------------------------------------------------------------- agreement with smp


@pytest.mark.parametrize("smooth", [0.0, 1.0, 4.0])
def test_dice_matches_smp_single_channel(smooth):
    # C = 1: smp's per-class mean over one class is our pooled Dice. smp's Dice is its Tversky
    # with alpha = beta = 0.5, (tp + s') / (tp + (fp + fn)/2 + s'), so its s' is our s / 2.
    z, g = _random_case(c=1)
    ours = DiceLoss(smooth=smooth)(z, g)
    theirs = smp_losses.DiceLoss(mode="multilabel", from_logits=True, smooth=smooth / 2)(z, g)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_per_class_dice_matches_smp_multichannel():
    z, g = _random_case(c=3)
    ours = 1.0 - LF.soft_dice_score(z.sigmoid(), g, smooth=1.0, dims=(0, 2, 3)).mean()
    theirs = smp_losses.DiceLoss(mode="multilabel", from_logits=True, smooth=0.5)(z, g)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    assert DiceLoss(per_class=True)(z, g).item() == pytest.approx(theirs.item(), abs=1e-6)


@pytest.mark.parametrize("include_background", [True, False])
def test_softmax_dice_matches_smp_multiclass(include_background):
    # smp multiclass: softmax, per-class Dice over (batch, pixels); classes=[1, 2] leaves out the
    # background exactly like include_background=False (paper 003's diceBK)
    z, g = _random_multiclass()
    classes = None if include_background else [1, 2]
    theirs = smp_losses.DiceLoss(mode="multiclass", smooth=0.5, classes=classes)(z, g.argmax(1))
    ours = DiceLoss(per_class=True, activation="softmax", include_background=include_background)(z, g)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 0.7), (0.7, 0.3)])
def test_softmax_tversky_matches_smp_multiclass(include_background, alpha, beta):
    z, g = _random_multiclass()
    classes = None if include_background else [1, 2]
    theirs = smp_losses.TverskyLoss(mode="multiclass", alpha=alpha, beta=beta, smooth=1.0, classes=classes)(
        z, g.argmax(1)
    )
    ours = TverskyLoss(alpha, beta, per_class=True, activation="softmax", include_background=include_background)(z, g)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


@pytest.mark.parametrize("mode", ["multilabel", "multiclass"])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_iou_xy_one_one_matches_smp_jaccard(mode, smooth):
    activation = "sigmoid" if mode == "multilabel" else "softmax"
    z, g = _case(activation)
    y = g if mode == "multilabel" else g.argmax(1)
    theirs = smp_losses.JaccardLoss(mode=mode, smooth=smooth)(z, y)
    ours = build_loss("iou_xy", alpha=1.0, smooth=smooth, activation=activation)(z, g)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5])
def test_softmax_iou_xy_matches_numpy(include_background, alpha):
    z, g = _random_multiclass()
    p = torch.softmax(z.double(), 1).numpy()
    y = g.double().numpy()
    if not include_background:
        p, y = p[:, 1:], y[:, 1:]
    tp = (p * y).sum((0, 2, 3))
    fp = (p * (1 - y)).sum((0, 2, 3))
    fn = ((1 - p) * y).sum((0, 2, 3))
    expected = 1 - np.mean((tp + 1) / (tp + alpha * fp + (2 - alpha) * fn + 1))
    ours = build_loss("iou_xy", alpha=alpha, activation="softmax", include_background=include_background)(z, g)
    assert ours.item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.2])
def test_soft_bce_matches_smp(smoothing):
    # smp's smooth_factor f maps 1 -> 1 - f, 0 -> f: ours with smoothing s is smp with f = s / 2.
    z, g = _random_case()
    ours = SoftBCELoss(smoothing=smoothing)(z, g)
    theirs = smp_losses.SoftBCEWithLogitsLoss(smooth_factor=smoothing / 2)(z, g)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_softmax_soft_bce_matches_bce_on_softmax_probabilities():
    z, g = _random_multiclass()
    expected = F.binary_cross_entropy(torch.softmax(z.double(), 1), g.double())
    assert SoftBCELoss(activation="softmax")(z, g).item() == pytest.approx(expected.item(), abs=1e-5)


@pytest.mark.parametrize(("alpha", "beta", "smooth"), [(0.3, 0.7, 1.0), (0.7, 0.3, 0.0), (0.5, 0.5, 1.0)])
def test_tversky_matches_smp_single_channel(alpha, beta, smooth):
    # smp's soft_tversky_score(output, target, alpha, beta): alpha multiplies fp = sum p (1 - g).
    z, g = _random_case(c=1)
    ours = TverskyLoss(alpha=alpha, beta=beta, smooth=smooth)(z, g)
    theirs = smp_losses.TverskyLoss(mode="multilabel", from_logits=True, alpha=alpha, beta=beta, smooth=smooth)(z, g)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_per_class_tversky_matches_smp_multichannel():
    z, g = _random_case(c=3)
    theirs = smp_losses.TverskyLoss(mode="multilabel", alpha=0.3, beta=0.7, smooth=1.0)(z, g)
    assert TverskyLoss(per_class=True)(z, g).item() == pytest.approx(theirs.item(), abs=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 4.0])
@pytest.mark.parametrize("channels", [1, 3])
def test_focal_matches_smp(gamma, channels):
    # smp 0.6 multilabel: mean over channels of per-channel means == our mean over all elements.
    z, g = _random_case(c=channels)
    ours = FocalLoss(gamma=gamma)(z, g)
    theirs = smp_losses.FocalLoss(mode="multilabel", alpha=None, gamma=gamma)(z, g)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


@pytest.mark.parametrize("alpha", [0.1, 0.25, 0.8])
def test_focal_alpha_is_twice_smp_alpha(alpha):
    z, g = _random_case()
    theirs = smp_losses.FocalLoss(mode="multilabel", alpha=alpha, gamma=2.0)(z, g)
    assert FocalLoss(gamma=2.0, alpha=alpha)(z, g).item() == pytest.approx(2 * theirs.item(), abs=1e-6)


def test_focal_plus_dice_is_half_smp_focal_plus_half_dice():
    z, g = _random_case(c=1)
    theirs = 0.5 * smp_losses.FocalLoss(mode="multilabel", alpha=None, gamma=2.0)(z, g) + 0.5 * (
        smp_losses.DiceLoss(mode="multilabel", smooth=0.5)(z, g)
    )
    assert build_loss("focal_plus_dice")(z, g).item() == pytest.approx(theirs.item(), abs=1e-6)


# ---------------------------------------------------------------- numpy / scipy references


def _np(z: torch.Tensor, g: torch.Tensor, activation: str = "sigmoid"):
    z64 = z.double()
    p = torch.softmax(z64, 1) if activation == "softmax" else torch.sigmoid(z64)
    return p.numpy(), g.double().numpy()


def _np_dice_per_class(p, y, smooth=1.0, axes=(0, 2, 3)):
    return (2 * (p * y).sum(axes) + smooth) / (p.sum(axes) + y.sum(axes) + smooth)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_ce_matches_numpy(activation):
    z, g = _case(activation)
    p, y = _np(z, g, activation)
    if activation == "softmax":
        expected = -(y * np.log(p)).sum(1).mean()
        assert build_loss("ce", activation="softmax")(z, g).item() == pytest.approx(
            F.cross_entropy(z, g.argmax(1)).item(), abs=1e-6
        )
    else:
        expected = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    assert build_loss("ce", activation=activation)(z, g).item() == pytest.approx(expected, abs=1e-5)


def test_sigmoid_ce_without_background_drops_channel_zero():
    z, g = _random_case()
    p, y = _np(z, g)
    expected = -(y * np.log(p) + (1 - y) * np.log(1 - p))[:, 1:].mean()
    assert build_loss("ce", include_background=False)(z, g).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_weighted_ce_matches_numpy(activation):
    z, g = _case(activation)
    p, y = _np(z, g, activation)
    freq = np.array([0.6, 0.3, 0.1])
    if activation == "softmax":
        w = 1 / (3 * freq)
        expected = -(w[None, :, None, None] * y * np.log(p)).sum(1).mean()
    else:
        pos, neg = 0.5 / freq, 0.5 / (1 - freq)
        expected = -(
            pos[None, :, None, None] * y * np.log(p) + neg[None, :, None, None] * (1 - y) * np.log(1 - p)
        ).mean()
    loss = build_loss("weighted_ce", activation=activation, class_frequencies=list(freq))
    assert loss(z, g).item() == pytest.approx(expected, abs=1e-5)


def test_weighted_ce_needs_training_frequencies():
    with pytest.raises(ValueError, match="class_frequencies"):
        build_loss("weighted_ce")
    with pytest.raises(ValueError, match="> 0"):
        build_loss("weighted_ce", class_frequencies=[0.5, 0.0])
    z, g = _random_case()
    with pytest.raises(ValueError, match="2 class_frequencies for 3 channels"):
        build_loss("weighted_ce", class_frequencies=[0.5, 0.2])(z, g)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("k", [1.0, 10.0, 37.0])
def test_topk_ce_matches_numpy(activation, k):
    z, g = _case(activation)
    p, y = _np(z, g, activation)
    if activation == "softmax":
        pixel = -(y * np.log(p)).sum(1)
    else:
        pixel = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    flat = np.sort(pixel.ravel())[::-1]
    expected = flat[: math.ceil(flat.size * k / 100)].mean()
    assert build_loss("topk_ce", k=k, activation=activation)(z, g).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_focal_softmax_and_sigmoid_match_numpy(activation):
    z, g = _case(activation)
    p, y = _np(z, g, activation)
    gamma, alpha = 1.5, 0.3
    if activation == "softmax":
        pt = (y * p).sum(1)
        fg = 1 - y[:, 0]
    else:
        pt = np.where(y > 0.5, p, 1 - p)
        fg = y
    a_t = 2 * (alpha * fg + (1 - alpha) * (1 - fg))
    expected = (a_t * (1 - pt) ** gamma * -np.log(pt)).mean()
    ours = build_loss("focal", gamma=gamma, alpha=alpha, activation=activation)(z, g)
    assert ours.item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("gamma", [0.3, 1.0, 2.0])
def test_log_dice_matches_numpy(gamma):
    z, g = _random_case()
    p, y = _np(z, g)
    expected = np.mean((-np.log(_np_dice_per_class(p, y))) ** gamma)
    assert build_loss("log_dice", gamma=gamma)(z, g).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.5])
def test_focal_dice_matches_numpy(beta):
    z, g = _random_case()
    p, y = _np(z, g)
    expected = np.mean(1 - _np_dice_per_class(p, y) ** (1 / beta))
    assert build_loss("focal_dice", beta=beta)(z, g).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("batch", [True, False])
def test_generalized_dice_matches_numpy(batch):
    z, g = _random_case()
    g[1, 2] = 0.0  # an absent class in image 1: its weight becomes the image's largest
    p, y = _np(z, g)
    axes = (0, 2, 3) if batch else (2, 3)
    tp, sp, sg = (p * y).sum(axes), p.sum(axes), y.sum(axes)
    w = np.where(sg > 0, 1 / np.maximum(sg, 1) ** 2, 0.0)
    w = np.where(sg > 0, w, w.max(axis=-1, keepdims=True))
    score = (2 * (w * tp).sum(-1) + 1e-5) / ((w * (sp + sg)).sum(-1) + 1e-5)
    expected = 1 - np.mean(score)
    ours = LOSSES["generalized_dice"](batch=batch)(z, g)
    assert ours.item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("gamma", [1.0, 4.0 / 3.0, 3.0])
def test_focal_tversky_matches_numpy(per_class, gamma):
    z, g = _random_case()
    p, y = _np(z, g)
    axes = (0, 2, 3) if per_class else None
    tp, fp, fn = (p * y).sum(axes), (p * (1 - y)).sum(axes), ((1 - p) * y).sum(axes)
    l_t = 1 - (tp + 1) / (tp + 0.3 * fp + 0.7 * fn + 1)
    expected = np.sum(l_t ** (1 / gamma))  # paper 001: sum over classes
    ours = FocalTverskyLoss(gamma=gamma, per_class=per_class)(z, g)
    assert ours.item() == pytest.approx(expected, abs=1e-5)


def _np_topk_dice(p, y, k, smooth=1.0):
    keep = np.ones_like(p)
    for n in range(p.shape[0]):
        for c in range(p.shape[1]):
            fg = np.flatnonzero(y[n, c].ravel() > 0.5)
            if fg.size == 0:
                continue
            errors = 1 - p[n, c].ravel()[fg]
            kept = fg[np.argsort(-errors)[: math.ceil(fg.size * k / 100)]]
            mask = np.zeros(p[n, c].size)
            mask[fg] = 0
            mask[y[n, c].ravel() < 0.5] = 1
            mask[kept] = 1
            keep[n, c] = mask.reshape(p.shape[2:])
    return 1 - np.mean(_np_dice_per_class(p * keep, y * keep, smooth))


@pytest.mark.parametrize("k", [5.0, 10.0, 50.0, 100.0])
def test_topk_dice_matches_numpy(k):
    z, g = _random_case()
    p, y = _np(z, g)
    assert build_loss("topk_dice", k=k)(z, g).item() == pytest.approx(_np_topk_dice(p, y, k), abs=1e-5)


def _np_pm_dice(p, y, gamma, eps=1e-6):
    gamma = np.broadcast_to(np.asarray(gamma, dtype=np.float64), (p.shape[1],))
    m = np.abs(y - p) ** gamma[None, :, None, None]
    num = 2 * (m * y * p).sum((2, 3)) + eps
    den = (m * (y**2 + p**2)).sum((2, 3)) + eps
    present = y.sum((2, 3)) > 0
    per_image = [1 - np.mean((num / den)[i][present[i]]) for i in range(p.shape[0]) if present[i].any()]
    return np.mean(per_image)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("gamma", [0.0, 1.0, [1.0, 2.0, 0.5]])
def test_pm_dice_matches_numpy(activation, gamma):
    z, g = _case(activation)
    if activation == "sigmoid":
        g[0, 1] = 0.0  # class 1 absent from image 0: C = 2 there
    p, y = _np(z, g, activation)
    ours = build_loss("pm_dice", gamma=gamma, activation=activation, n_classes=3)(z, g)
    assert ours.item() == pytest.approx(_np_pm_dice(p, y, gamma), abs=1e-5)


def test_pm_dice_softmax_without_background_drops_its_gamma():
    z, g = _random_multiclass()
    p, y = _np(z, g, "softmax")
    ours = build_loss("pm_dice", gamma=[5.0, 2.0, 0.5], activation="softmax", include_background=False)(z, g)
    assert ours.item() == pytest.approx(_np_pm_dice(p[:, 1:], y[:, 1:], [2.0, 0.5]), abs=1e-5)


@pytest.mark.parametrize("transform", CALF_TRANSFORMS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_calf_matches_numpy(transform, activation):
    z, g = _case(activation)
    p, y = _np(z, g, activation)
    q = np.clip(p, 1e-6, 1 - 1e-6)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    expected = {
        "fisher": -(y * 0.5 * np.log((1 + q) / (1 - q)) + (1 - y) * 0.5 * np.log((2 - q) / q)).mean(),
        "logit": -(y * np.log(q / (1 - q)) + (1 - y) * np.log((1 - q) / q)).mean(),
        "arcsine": -(y * np.arcsin(np.sqrt(q)) + (1 - y) * np.arcsin(np.sqrt(1 - q))).mean(),
        "log10_bce": -(y * np.log10(p) + (1 - y) * np.log10(1 - p)).mean(),
        "ln_bce": bce,
        "bce_dice": bce + 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1),
    }[transform]
    ours = CalfLoss(transform=transform, activation=activation)(z, g)
    assert ours.item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("transform", ["fisher", "logit", "arcsine"])
def test_calf_clamps_unbounded_transforms(transform):
    # perfect, extreme predictions: the value is the formula at p = 1 - eps, finite, not -inf
    g = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    z = torch.tensor([1e4, -1e4]).view(1, 1, 1, 2)
    q = torch.tensor(1 - 1e-6).item()  # the clamp bound as float32 rounds it
    expected = {"fisher": -math.atanh(q), "logit": -math.log(q / (1 - q)), "arcsine": -math.asin(math.sqrt(q))}
    assert CalfLoss(transform=transform)(z, g).item() == pytest.approx(expected[transform], rel=1e-3)


# ---------------------------------------------------------------- CALF selection


@pytest.mark.parametrize(
    "areas",
    [LN_BCE_AREAS, [0, 0, 0, 5, 100, 2000, 2100], [10, 9, 9, 8, 1], np.random.default_rng(0).gamma(2.0, 50.0, 200)],
)
def test_calf_statistics_are_population_moments(areas):
    skew, kurt = calf_statistics(areas)
    assert skew == pytest.approx(scipy.stats.skew(areas, bias=True), abs=1e-9)
    assert kurt == pytest.approx(scipy.stats.kurtosis(areas, fisher=True, bias=True), abs=1e-9)


def test_calf_statistics_degenerate_and_invalid():
    assert calf_statistics([7, 7, 7]) == (0.0, 0.0)  # sigma = 0: symmetric, mesokurtic
    assert calf_statistics([0]) == (0.0, 0.0)
    assert select_calf_transform(*calf_statistics([3, 3])) == "bce_dice"
    for bad in ([], [1, -2], [1, math.nan]):
        with pytest.raises(ValueError):
            calf_statistics(bad)


@pytest.mark.parametrize(
    ("skew", "kurt", "expected"),
    [
        (-3.0, 0.0, "fisher"),
        (-1.0, 5.0, "fisher"),  # S <= -1
        (-0.999, 0.0, "logit"),
        (-0.5, 0.0, "logit"),  # -1 < S <= -0.5
        (-0.499, 0.0, "arcsine"),
        (-1e-9, 0.0, "arcsine"),  # -0.5 < S < 0
        (0.0, -0.1, "log10_bce"),  # S = 0 (uncovered): joins 0 < S <= 0.5
        (0.0, 0.0, "bce_dice"),
        (0.3, -1.0, "log10_bce"),
        (0.3, 0.0, "bce_dice"),  # K >= 0
        (0.5, -1.0, "log10_bce"),  # S = 0.5 (two rows): the first, 0 < S <= 0.5
        (0.5, 1.0, "bce_dice"),
        (0.501, -1.0, "ln_bce"),
        (0.999, 3.0, "ln_bce"),
        (1.0, 0.0, "log10_bce"),  # S >= 1
        (7.0, 50.0, "log10_bce"),
    ],
)
def test_select_calf_transform_table(skew, kurt, expected):
    assert select_calf_transform(skew, kurt) == expected


def test_calf_loss_chooses_from_training_areas_and_exposes_it():
    loss = build_loss("calf", foreground_areas=LN_BCE_AREAS)
    assert loss.transform == "ln_bce"
    assert loss.skewness == pytest.approx(scipy.stats.skew(LN_BCE_AREAS))
    assert build_loss("calf", foreground_areas=[1, 2, 3, 4, 10]).transform == "log10_bce"  # S = 1.14
    with pytest.raises(ValueError, match="exactly one of foreground_areas"):
        build_loss("calf")
    with pytest.raises(ValueError, match="exactly one"):
        CalfLoss(LN_BCE_AREAS, transform="fisher")
    with pytest.raises(ValueError, match="unknown CALF transform"):
        CalfLoss(transform="sqrt")


# ---------------------------------------------------------------- gradients


GRADCHECK_CASES = [
    ("dice", {}, "sigmoid", {}),
    ("dice", {"smooth": 0.5}, "softmax", {"per_class": True, "squared": True, "batch": False}),
    ("tversky", {}, "softmax", {"include_background": False}),
    ("focal_tversky", {"gamma": 2.0}, "sigmoid", {"per_class": True}),
    ("iou_xy", {"alpha": 0.5}, "sigmoid", {}),
    ("log_dice", {"gamma": 0.3}, "sigmoid", {}),
    ("generalized_dice", {}, "softmax", {}),
    ("focal_dice", {}, "sigmoid", {}),
    ("topk_dice", {"k": 30.0}, "sigmoid", {}),
    ("soft_bce", {"smoothing": 0.1}, "softmax", {}),
    ("ce", {}, "softmax", {}),
    ("weighted_ce", {}, "sigmoid", {"class_frequencies": [0.2, 0.3, 0.4]}),
    ("focal", {"gamma": 1.5, "alpha": 0.3}, "softmax", {}),
    ("topk_ce", {"k": 20.0}, "sigmoid", {}),
    ("calf", {}, "sigmoid", {"foreground_areas": LN_BCE_AREAS}),
]
# pm_dice is not here on purpose: its value depends on p through m, its gradient (by design)
# does not, so finite differences disagree; test_pm_dice_gradient_... checks it instead.


@pytest.mark.parametrize(("name", "knobs", "activation", "options"), GRADCHECK_CASES)
def test_gradcheck_float64(name, knobs, activation, options):
    z, g = _case(activation, n=2, c=3, h=3, w=3, seed=3)
    z, g = z.double().requires_grad_(True), g.double()
    cls_options = {k: v for k, v in options.items() if k not in ("class_frequencies", "foreground_areas")}
    context = {k: v for k, v in options.items() if k in ("class_frequencies", "foreground_areas")}
    if cls_options:
        loss = LOSSES[name](**knobs, activation=activation, **options)
    else:
        loss = build_loss(name, activation=activation, **context, **knobs)
    assert torch.autograd.gradcheck(lambda x: loss(x, g), (z,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("transform", ["fisher", "logit", "arcsine", "log10_bce", "bce_dice"])
def test_gradcheck_calf_transforms(transform):
    z, g = _random_case(n=1, c=2, h=3, w=3, seed=4)
    z, g = z.double().requires_grad_(True), g.double()
    loss = CalfLoss(transform=transform)
    assert torch.autograd.gradcheck(lambda x: loss(x, g), (z,), eps=1e-6, atol=1e-5)


def test_pm_dice_gradient_does_not_flow_through_the_modulating_term():
    z, g = _random_case(n=1, c=2, h=4, w=4, seed=5)
    z = z.double().requires_grad_(True)
    g = g.double()
    gamma = 2.0

    def pm(modulation_detached: bool):
        p = torch.sigmoid(z)
        m = (g - (p.detach() if modulation_detached else p)).abs() ** gamma
        ratio = (2 * (m * g * p).sum((2, 3)) + 1e-6) / ((m * (g**2 + p**2)).sum((2, 3)) + 1e-6)
        return 1 - ratio.mean()

    (ours,) = torch.autograd.grad(PMDiceLoss(gamma=gamma)(z, g), z)
    (detached,) = torch.autograd.grad(pm(True), z)
    (through_m,) = torch.autograd.grad(pm(False), z)
    assert torch.allclose(ours, detached, atol=1e-12)
    assert not torch.allclose(ours, through_m, atol=1e-3)  # the gradient through m is not small


# ---------------------------------------------------------------- limits and loss-specific properties


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_pm_dice_gamma_zero_is_squared_dice(activation):
    z, g = _case(activation)  # every class present in every image, so C is all classes
    squared = DiceLoss(smooth=1e-6, per_class=True, batch=False, squared=True, activation=activation)(z, g)
    assert build_loss("pm_dice", gamma=0.0, activation=activation)(z, g).item() == pytest.approx(
        squared.item(), abs=1e-6
    )


def test_pm_dice_counts_only_present_classes_and_skips_empty_images():
    z, g = _random_case(n=2, c=2)
    g[0, 1] = 0.0  # image 0: only class 0 present
    g[1] = 0.0  # image 1: nothing present -> not scored
    p = torch.sigmoid(z)
    m = (g - p).abs()
    ratio = (2 * (m * g * p).sum((2, 3)) + 1e-6) / ((m * (g + p**2)).sum((2, 3)) + 1e-6)
    assert PMDiceLoss()(z, g).item() == pytest.approx(1 - ratio[0, 0].item(), abs=1e-6)
    empty = torch.zeros_like(g)
    zz = z.clone().requires_grad_(True)
    value = PMDiceLoss()(zz, empty)
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(zz.grad).all()


def test_pm_dice_gamma_list_length_checked():
    with pytest.raises(ValueError, match="needs 3 values"):
        build_loss("pm_dice", gamma=[1.0, 2.0], n_classes=3)
    z, g = _random_case()
    with pytest.raises(ValueError, match="2 gamma values for 3 channels"):
        build_loss("pm_dice", gamma=[1.0, 2.0])(z, g)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_focal_gamma_zero_is_bce_or_ce(activation):
    z, g = _case(activation)
    reference = build_loss("soft_bce" if activation == "sigmoid" else "ce", activation=activation)(z, g)
    assert build_loss("focal", gamma=0.0, activation=activation)(z, g).item() == pytest.approx(
        reference.item(), abs=1e-6
    )


@pytest.mark.parametrize("per_class", [False, True])
def test_focal_tversky_gamma_one_is_tversky(per_class):
    z, g = _random_case()
    tversky = TverskyLoss(per_class=per_class)(z, g)
    focal = FocalTverskyLoss(gamma=1.0, per_class=per_class)(z, g)
    # pooled: exactly tversky; per class: paper 001's SUM over the 3 classes = 3 x class mean
    assert focal.item() == pytest.approx(tversky.item() * (3 if per_class else 1), abs=1e-6)


@pytest.mark.parametrize("smooth", [0.0, 0.5, 2.0])
def test_tversky_half_half_is_dice_with_doubled_smoothing(smooth):
    # (tp + s) / (tp + (fp + fn)/2 + s) == (2 tp + 2 s) / (2 tp + fp + fn + 2 s)
    z, g = _random_case()
    tversky = TverskyLoss(alpha=0.5, beta=0.5, smooth=smooth)(z, g)
    dice = DiceLoss(smooth=2 * smooth)(z, g)
    assert tversky.item() == pytest.approx(dice.item(), abs=1e-6)


def test_focal_dice_beta_one_and_topk_dice_k100_are_class_mean_dice():
    z, g = _random_case()
    dice = DiceLoss(per_class=True)(z, g).item()
    assert build_loss("focal_dice", beta=1.0)(z, g).item() == pytest.approx(dice, abs=1e-6)
    assert build_loss("topk_dice", k=100.0)(z, g).item() == pytest.approx(dice, abs=1e-6)
    assert build_loss("topk_ce", k=100.0)(z, g).item() == pytest.approx(build_loss("ce")(z, g).item(), abs=1e-6)


def test_dice_options_match_numpy():
    z, g = _random_case()
    p, y = _np(z, g)
    per_image = (2 * (p * y).sum((1, 2, 3)) + 1) / ((p**2).sum((1, 2, 3)) + (y**2).sum((1, 2, 3)) + 1)
    ours = DiceLoss(batch=False, squared=True)(z, g)
    assert ours.item() == pytest.approx(1 - per_image.mean(), abs=1e-5)
    no_bg = _np_dice_per_class(p[:, 1:], y[:, 1:])
    assert DiceLoss(per_class=True, include_background=False)(z, g).item() == pytest.approx(1 - no_bg.mean(), abs=1e-5)


def test_tversky_alpha_penalises_false_positives_beta_false_negatives():
    g = torch.zeros(1, 1, 4, 4)
    g[..., :2, :2] = 1.0  # 4 organ pixels out of 16
    over = torch.full_like(g, 3.0)  # predicts everything: FP-heavy
    under = torch.full_like(g, -3.0)  # predicts nothing: FN-heavy
    fp_weighted = TverskyLoss(alpha=0.7, beta=0.3)
    fn_weighted = TverskyLoss(alpha=0.3, beta=0.7)
    assert fp_weighted(over, g) > fn_weighted(over, g)
    assert fn_weighted(under, g) > fp_weighted(under, g)


def test_focal_gradient_finite_for_small_gamma_and_confident_pixels():
    z = torch.tensor([40.0, -40.0, 0.3, -0.2]).view(1, 1, 2, 2).requires_grad_(True)
    g = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)
    FocalLoss(gamma=0.5)(z, g).backward()
    assert torch.isfinite(z.grad).all()


def test_dice_empty_batch_predicted_empty():
    g = torch.zeros(2, 3, 4, 4)
    z = torch.full_like(g, -20.0)
    assert DiceLoss(smooth=1.0)(z, g).item() == pytest.approx(0.0, abs=1e-6)
    # smooth = 0 makes the ratio 0/0; the denominator floor turns it into loss 1, not NaN
    assert DiceLoss(smooth=0.0)(torch.full_like(g, -200.0), g).item() == pytest.approx(1.0)


def test_include_background_false_needs_two_channels():
    z, g = _random_case(c=1)
    with pytest.raises(ValueError, match="at least 2 channels"):
        build_loss("dice", include_background=False)(z, g)
    with pytest.raises(ValueError, match="activation"):
        build_loss("dice", activation="relu")


def test_weighted_sum_combines_and_validates():
    z, g = _example()
    total = WeightedSum([(2.0, DiceLoss()), (0.0, SoftBCELoss()), (1.0, TverskyLoss())])(z, g)
    assert total.item() == pytest.approx(2 * 0.3 + 0.25, abs=1e-6)
    for bad in ([], [(-1.0, DiceLoss())], [(0.0, DiceLoss())], [(math.nan, DiceLoss())]):
        with pytest.raises(ValueError):
            WeightedSum(bad)


# ---------------------------------------------------------------- compounds


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0.5*focal + 0.5*dice", [(0.5, "focal"), (0.5, "dice")]),
        ("ce + pm_dice", [(1.0, "ce"), (1.0, "pm_dice")]),
        ("ce+topk_dice", [(1.0, "ce"), (1.0, "topk_dice")]),
        (" 2 * dice ", [(2.0, "dice")]),
        ("1e-1*topk_ce + .9 * tversky", [(0.1, "topk_ce"), (0.9, "tversky")]),
        ("1e+0*ce + 0*dice", [(1.0, "ce"), (0.0, "dice")]),
    ],
)
def test_parse_compound(spec, expected):
    assert parse_compound(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("0.5*focal +", "cannot read term ''"),
        ("0.5 focal", "cannot read term"),
        ("-1*dice", "cannot read term"),
        ("0.5*nope + dice", "unknown loss 'nope'"),
        ("dice + 0.5*dice", "appears twice"),
        ("0*dice", "at least one weight"),
        ("dice * 0.5", "cannot read term"),
    ],
)
def test_parse_compound_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_compound(spec)


def test_build_compound_sums_registered_losses_with_context():
    z, g = _random_multiclass()
    compound = build_compound(
        [(0.5, "focal", {"gamma": 2.0}), (0.5, "dice", {}), (1.0, "pm_dice", {"gamma": [1.0, 2.0, 2.0]})],
        activation="softmax",
        include_background=False,
    )
    options = dict(activation="softmax", include_background=False)
    expected = (
        0.5 * FocalLoss(2.0, **options)(z, g)
        + 0.5 * DiceLoss(**options)(z, g)
        + PMDiceLoss([1.0, 2.0, 2.0], **options)(z, g)
    )
    assert compound(z, g).item() == pytest.approx(expected.item(), abs=1e-6)
    pairs = build_compound(parse_compound("ce + pm_dice"))
    zz, gg = _random_case()
    assert pairs(zz, gg).item() == pytest.approx(
        (build_loss("ce")(zz, gg) + build_loss("pm_dice")(zz, gg)).item(), abs=1e-6
    )


def test_focal_plus_dice_is_the_compound_of_focal_and_dice():
    z, g = _random_case()
    compound = build_compound(parse_compound("0.5*focal + 0.5*dice"))
    assert build_loss("focal_plus_dice")(z, g).item() == pytest.approx(compound(z, g).item(), abs=1e-6)


def test_build_compound_errors_name_the_problem():
    with pytest.raises(KeyError, match="nope"):
        build_compound([(1.0, "nope", {})])
    with pytest.raises(ValueError, match="no knob 'alpha'"):
        build_compound([(1.0, "dice", {"alpha": 0.3})])
    with pytest.raises(ValueError, match="weights must be finite"):
        build_compound([(-1.0, "dice", {})])


# ---------------------------------------------------------------- registry


def test_build_loss_unknown_name_lists_known():
    with pytest.raises(KeyError, match="unknown loss 'nope'.*dice"):
        build_loss("nope")
    with pytest.raises(KeyError, match="nope"):
        loss_knobs("nope")


def test_build_loss_unknown_knob_names_loss_and_knob():
    with pytest.raises(ValueError, match=r"loss 'dice' has no knob 'alpha'.*smooth"):
        build_loss("dice", alpha=0.3)


@pytest.mark.parametrize(
    ("name", "knob", "value"),
    [
        ("tversky", "alpha", 1.5),
        ("soft_bce", "smoothing", 0.3),
        ("focal_plus_dice", "gamma", -1.0),
        ("focal_tversky", "gamma", 0.5),
        ("iou_xy", "alpha", 2.5),
    ],
)
def test_build_loss_out_of_range_names_loss_knob_and_range(name, knob, value):
    spec = loss_knobs(name)[knob]
    message = rf"loss '{name}': knob '{knob}'={value} is outside \[{spec.low}, {spec.high}\]"
    with pytest.raises(ValueError, match=message):
        build_loss(name, **{knob: value})


@pytest.mark.parametrize("value", [math.nan, math.inf, "0.5", True, None])
def test_build_loss_rejects_non_numbers(value):
    with pytest.raises(ValueError, match="knob 'alpha' must be a finite number"):
        build_loss("tversky", alpha=value)


def test_build_loss_sets_knobs_and_defaults():
    loss = build_loss("tversky", alpha=0.6)
    assert (loss.alpha, loss.beta, loss.smooth) == (0.6, 0.7, 1.0)
    assert build_loss("tversky", alpha=1).alpha == 1.0  # ints accepted, stored as float
    assert build_loss("dice", smooth=1.0).smooth == 1.0  # the old signature


def test_build_loss_passes_context_only_to_losses_that_take_it():
    loss = build_loss(
        "dice",
        activation="softmax",
        include_background=False,
        class_frequencies=[0.1],
        foreground_areas=[1, 2],
        n_classes=3,
    )
    assert (loss.activation, loss.include_background) == ("softmax", False)
    assert build_loss("weighted_ce", class_frequencies=[0.1, 0.2]).class_frequencies == [0.1, 0.2]


def test_per_class_knob_takes_list_or_scalar_and_checks_each_value():
    assert build_loss("pm_dice", gamma=[1, 2.5, 0]).gamma == [1.0, 2.5, 0.0]
    assert build_loss("pm_dice", gamma=2).gamma == 2.0
    with pytest.raises(ValueError, match=r"knob 'gamma\[1\]'=7.0 is outside \[0.0, 5.0\]"):
        build_loss("pm_dice", gamma=[1.0, 7.0])
    with pytest.raises(ValueError, match="empty list"):
        build_loss("pm_dice", gamma=[])
    with pytest.raises(ValueError, match="finite number"):
        build_loss("dice", smooth=[1.0])  # lists only for per-class knobs


def test_sum_constraint_derives_or_checks():
    assert (build_loss("iou_xy", alpha=0.5).beta) == 1.5
    assert (build_loss("iou_xy", beta=0.5).alpha) == 1.5
    with pytest.raises(ValueError, match=r"alpha \+ beta must sum to 2.0"):
        build_loss("iou_xy", alpha=0.5, beta=0.5)
    with pytest.raises(ValueError, match="alpha \\+ beta = 2"):
        LOSSES["iou_xy"](alpha=0.5, beta=0.5)


def test_flat_knob_space_expands_per_class_and_drops_derived():
    classes = ["background", "liver", "spleen"]
    flat = flat_knob_space("pm_dice", classes)
    assert list(flat) == ["gamma.background", "gamma.liver", "gamma.spleen"]
    assert all((k.default, k.low, k.high, k.per_class) == (1.0, 0.0, 5.0, False) for k in flat.values())
    iou = flat_knob_space("iou_xy", classes)
    assert set(iou) == {"alpha", "smooth"}
    assert (iou["alpha"].low, iou["alpha"].high) == (0.0, 2.0)
    assert flat_knob_space("tversky", classes) == loss_knobs("tversky")


def _flatten(name: str, knobs: dict, class_names) -> dict:
    """The search's view of build_loss kwargs, written independently of flat_knob_space."""
    derived = {c.derived for c in loss_constraints(name)}
    flat = {}
    for key, value in knobs.items():
        if key in derived:
            continue
        if loss_knobs(name)[key].per_class:
            flat.update({f"{key}.{c}": v for c, v in zip(class_names, value)})
        else:
            flat[key] = value
    return flat


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_flat_space_and_assemble_round_trip_for_every_loss(name):
    classes = ["large_bowel", "small_bowel", "stomach"]
    flat = flat_knob_space(name, classes)
    # a sample at the top of each range, then assemble -> build_loss must accept it
    sample = {k: knob.high for k, knob in flat.items()}
    kwargs = assemble_knobs(name, sample, classes)
    loss = _build(name, **kwargs)
    z, g = _random_case()
    assert torch.isfinite(loss(z, g))
    # and back: flattening the kwargs gives the sample again
    assert _flatten(name, kwargs, classes) == sample
    assert set(kwargs) == set(loss_knobs(name))


def test_assemble_knobs_gathers_per_class_and_derives():
    classes = ["background", "lesion"]
    assert assemble_knobs("pm_dice", {"gamma.lesion": 2.0, "gamma.background": 1.0}, classes) == {"gamma": [1.0, 2.0]}
    assert assemble_knobs("pm_dice", {"gamma.lesion": 2.0}, classes) == {"gamma": [1.0, 2.0]}  # default fills
    assert assemble_knobs("iou_xy", {"alpha": 0.5}, classes) == {"alpha": 0.5, "beta": 1.5}
    knobs = {"alpha": 0.25, "beta": 1.75, "smooth": 0.5}
    assert assemble_knobs("iou_xy", _flatten("iou_xy", knobs, classes), classes) == knobs
    for bad in ({"gamma": 1.0}, {"gamma.liver": 1.0}, {"nope": 1.0}):
        with pytest.raises(ValueError):
            assemble_knobs("pm_dice", bad, classes)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(default=2.0, low=0.0, high=1.0),
        dict(default=0.5, low=0.0, high=1.0, log=True),
        dict(default=math.nan, low=0.0, high=1.0),
    ],
)
def test_knob_rejects_inconsistent_declarations(kwargs):
    with pytest.raises(ValueError):
        Knob(**kwargs)


def test_sum_constraint_rejects_bad_declarations():
    with pytest.raises(ValueError):
        SumConstraint(knobs=("alpha",), total=1.0)
    with pytest.raises(ValueError):
        SumConstraint(knobs=("alpha", "alpha"), total=1.0)


def test_register_loss_rejects_duplicates_and_bad_declarations():
    with pytest.raises(ValueError, match="already registered"):
        register_loss("dice")(DiceLoss)

    class NoDoc(torch.nn.Module):
        knobs = {}

    class DefaultMismatch(torch.nn.Module):
        """Doc."""

        knobs = {"w": Knob(0.5, 0.0, 1.0)}

        def __init__(self, w: float = 0.4):
            super().__init__()

    class BadConstraint(torch.nn.Module):
        """Doc."""

        knobs = {"a": Knob(0.5, 0.0, 1.0), "b": Knob(0.2, 0.0, 1.0)}
        constraints = (SumConstraint(("a", "b"), 1.0),)  # defaults sum to 0.7

        def __init__(self, a: float = 0.5, b: float = 0.2):
            super().__init__()

    for cls in (NoDoc, DefaultMismatch, BadConstraint):
        with pytest.raises(TypeError):
            register_loss("_test_only")(cls)
    assert "_test_only" not in LOSSES


def test_describe_losses_lists_every_loss_with_knob_ranges():
    rows = describe_losses()
    assert [r["name"] for r in rows] == sorted(LOSSES)
    tversky = next(r for r in rows if r["name"] == "tversky")
    assert tversky["summary"].startswith("Soft Tversky loss")
    assert (tversky["module"], tversky["class"]) == ("trainables.losses.tversky", "TverskyLoss")
    assert tversky["knobs"]["alpha"] == {
        "default": 0.3,
        "low": 0.0,
        "high": 1.0,
        "log": False,
        "help": "weight of false positives",
        "per_class": False,
    }
    iou = next(r for r in rows if r["name"] == "iou_xy")
    assert iou["constraints"] == ["alpha + beta = 2.0"] and "003" in iou["source"]
    assert next(r for r in rows if r["name"] == "pm_dice")["knobs"]["gamma"]["per_class"] is True
