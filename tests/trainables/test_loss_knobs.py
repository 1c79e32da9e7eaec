"""Loss knobs from a spec's params to the built loss (trainables.losses.knobs), on plain data."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from trainables.losses import (
    Knob,
    build_configured_loss,
    check_params,
    configured_knob_space,
    expand_params,
    plan_knobs,
    term_knobs,
)

GI = ("large_bowel", "small_bowel", "stomach")


@dataclass(frozen=True)
class Range:
    """A range as plain data (the spec's pydantic ``KnobRange`` has the same three fields)."""

    low: float
    high: float
    log: bool | None = None


def test_per_class_shorthand_expands_to_one_entry_per_class():
    assert expand_params("pm_dice", {"gamma": 2.0}, GI) == (
        {"gamma.large_bowel": 2.0, "gamma.small_bowel": 2.0, "gamma.stomach": 2.0},
        [],
    )
    assert expand_params("pm_dice", {"gamma": [1.0, 2.0, 3.0]}, GI)[0]["gamma.stomach"] == 3.0
    assert expand_params("pm_dice", {"gamma.stomach": "search"}, GI) == ({"gamma.stomach": "search"}, [])


def test_expansion_names_each_bad_key_and_its_fix():
    _, problems = expand_params("iou_xy", {"alpha": [1.0], "beta": 1.0, "gamma": 1.0}, GI)
    assert problems == [
        "params.alpha: a list is only for per-class knobs; give one number",
        "params.beta: iou_xy derives beta from alpha (constraint: they sum to 2); set only alpha, e.g. alpha: 1, "
        "and leave beta out",
        "params.gamma: iou_xy has no knob 'gamma'; its knobs are ['alpha', 'smooth']",
    ]
    _, problems = expand_params("pm_dice", {"gamma": [1.0, 2.0]}, GI)
    assert problems == [
        "params.gamma: 2 values for 3 classes ['large_bowel', 'small_bowel', 'stomach']; "
        "give one per class, in that order"
    ]


def test_check_names_values_outside_the_declared_range():
    assert check_params("tversky", {"alpha": 1.5, "beta": Range(0.2, 0.4)}, GI) == [
        "params.alpha: 1.5 is outside [0.0, 1.0]; give a value in that range"
    ]
    assert check_params("tversky", {"alpha": Range(-0.5, 0.5)}, GI) == [
        "params.alpha: -0.5 is outside [0.0, 1.0]; give a value in that range"
    ]
    assert check_params("tversky", {"alpha": Range(0.0, 0.5, log=True)}, GI) == [
        "params.alpha: a log-scale range needs low > 0"
    ]


def test_plan_splits_fixed_values_from_searched_ranges():
    plan = plan_knobs("tversky", {"alpha": Range(0.5, 0.9), "beta": 0.6}, GI)
    assert plan.fixed == {"beta": 0.6, "smooth": 1.0}  # an unset knob keeps its default
    assert plan.searched == {"alpha": Knob(0.5, 0.5, 0.9, help="weight of false positives")}  # default clamped
    searched = plan_knobs("tversky", {"alpha": "search"}, GI).searched["alpha"]
    assert (searched.low, searched.high) == (0.0, 1.0)
    with pytest.raises(ValueError, match="params.gamma: tversky has no knob"):
        plan_knobs("tversky", {"gamma": 1.0}, GI)


def test_dimensions_are_named_by_loss_and_flat_knob():
    plan = plan_knobs(
        "0.5*focal + 0.5*pm_dice", {"focal.gamma": Range(0.5, 4.0, log=True), "pm_dice.gamma": "search"}, GI
    )
    names = [(d.name, d.knob, d.low, d.high, d.log) for d in plan.dimensions]
    assert names[0] == ("0.5*focal + 0.5*pm_dice.focal.gamma", "focal.gamma", 0.5, 4.0, True)
    assert [d.knob for d in plan.dimensions[1:]] == [f"pm_dice.gamma.{c}" for c in GI]
    assert "focal.alpha" in plan.fixed and "pm_dice.gamma.stomach" not in plan.fixed


def test_constrained_pair_is_searched_through_its_first_knob():
    space = configured_knob_space("iou_xy", GI)
    assert "beta" not in space and (space["alpha"].low, space["alpha"].high) == (0.0, 2.0)
    assert term_knobs("iou_xy", {"alpha": 0.5}, GI) == [(1.0, "iou_xy", {"alpha": 0.5, "beta": 1.5})]


def test_term_knobs_split_a_compound_by_prefix():
    terms = term_knobs("0.5*focal + ce", {"focal.gamma": 1.0}, GI)
    assert terms == [(0.5, "focal", {"gamma": 1.0}), (1.0, "ce", {})]
    with pytest.raises(ValueError, match="belong to no term"):
        term_knobs("0.5*focal + ce", {"gamma": 1.0}, GI)
    with pytest.raises(KeyError, match="unknown loss 'nope'"):
        term_knobs("nope", {}, GI)


def test_planned_values_reach_the_built_loss():
    plan = plan_knobs("0.5*tversky + 0.5*pm_dice", {"tversky.alpha": 0.2, "pm_dice.gamma": [1.0, 2.0, 3.0]}, GI)
    loss = build_configured_loss("0.5*tversky + 0.5*pm_dice", plan.fixed, GI)
    tversky, pm_dice = loss.terms
    assert (tversky.alpha, tversky.beta) == (0.2, 0.7)
    assert list(pm_dice.gamma) == [1.0, 2.0, 3.0]
