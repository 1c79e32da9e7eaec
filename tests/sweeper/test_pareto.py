"""Pareto front: checked against a brute-force definition on random points, ties and duplicates."""

import numpy as np
import pandas as pd
import pytest

from sweeper.pareto import non_dominated, pareto_table


def brute_force(points):
    keep = []
    for i, p in enumerate(points):
        dominated = any(all(q >= p) and any(q > p) for j, q in enumerate(points) if j != i)
        keep.append(not dominated)
    return np.array(keep)


@pytest.mark.parametrize("seed", range(20))
def test_matches_brute_force_on_random_points_with_ties(seed):
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 6, size=(rng.integers(1, 40), 2)).astype(float)  # small ints -> many ties
    np.testing.assert_array_equal(non_dominated(points), brute_force(points))


def test_hand_made_front():
    points = np.array([[0.9, 0.5], [0.5, 0.9], [0.7, 0.7], [0.6, 0.6], [0.9, 0.5], [0.9, 0.4]])
    # (0.6,0.6) is dominated by (0.7,0.7); (0.9,0.4) by (0.9,0.5); the duplicate (0.9,0.5) stays.
    assert non_dominated(points).tolist() == [True, True, True, False, True, False]


def test_nan_is_never_on_the_front():
    assert non_dominated(np.array([[np.nan, 1.0], [0.5, 0.5]])).tolist() == [False, True]


def test_per_class_columns_and_unknown_class_error():
    configs = pd.DataFrame(
        {
            "config_id": ["a", "b"],
            "arch": "unet",
            "encoder": "r",
            "loss": ["dice", "tversky"],
            "loss_params": "{}",
            "sensitivity": [0.8, 0.9],
            "precision": [0.9, 0.8],
            "sensitivity.stomach": [0.7, 0.6],
            "precision.stomach": [0.7, 0.6],
        }
    )
    assert pareto_table(configs)["on_front"].all()
    table = pareto_table(configs, "stomach")
    assert table.loc[table["on_front"], "config_id"].tolist() == ["a"]
    with pytest.raises(KeyError, match="classes in this sweep: \\['stomach'\\]"):
        pareto_table(configs, "liver")


def configs_with_intervals():
    return pd.DataFrame(
        {
            "config_id": ["a", "b", "c", "d"],
            "arch": "unet",
            "encoder": "r",
            "loss": ["dice", "tversky", "soft_bce", "dice"],
            "loss_params": "{}",
            "sensitivity": [0.80, 0.95, 0.70, 0.60],
            "precision": [0.90, 0.70, 0.85, 0.50],
            "sensitivity_ci_high": [0.82, 0.97, 0.83, 0.62],
            "precision_ci_high": [0.92, 0.72, 0.95, 0.52],
            "dice": [0.85, 0.80, 0.77, 0.55],
            "n_folds": 3,
        }
    )


def test_front_status_marks_dominated_within_noise():
    table = pareto_table(configs_with_intervals()).set_index("config_id")
    assert table.loc["a", "front_status"] == "front" and table.loc["b", "front_status"] == "front"
    # c is dominated by a on the means, but its interval corner (0.83, 0.95) is not dominated
    assert table.loc["c", "front_status"] == "within_noise"
    assert table.loc["d", "front_status"] == "dominated"


def test_operating_point_and_nothing_meets_it():
    from sweeper.pareto import operating_point

    configs = configs_with_intervals()
    point = operating_point(configs, min_sensitivity=0.75)
    assert point.row["config_id"] == "a"  # most precise among sensitivity >= 0.75 (a, b)
    point = operating_point(configs, min_precision=0.6)
    assert point.row["config_id"] == "b"
    none = operating_point(configs, min_sensitivity=0.99)
    assert none.row is None and none.best_available == 0.95


def configs_with_status():
    return pd.DataFrame(
        {
            "config_id": ["full", "pruned", "weak", "unsafe"],
            "arch": "unet",
            "encoder": "r",
            "loss": "dice",
            "loss_params": "{}",
            "status": ["finished", "pruned", "finished", "finished"],
            "sensitivity": [0.80, 0.95, 0.70, 0.60],
            "precision": [0.80, 0.90, 0.60, 0.99],
            "dice": [0.8, 0.9, 0.6, 0.7],
        }
    )


def test_a_configuration_pruned_before_any_fold_ended_is_partial_not_infeasible():
    from sweeper.pareto import eligibility
    from sweeper.spec import ConstraintSpec

    configs = configs_with_status()
    configs.loc[configs["config_id"] == "pruned", ["sensitivity", "precision", "dice"]] = np.nan
    floor = [ConstraintSpec(metric="sensitivity", min=0.65)]
    # from the spec's constraints, and from configs.parquet's verdict (missing means break the floor there)
    verdict = configs.assign(feasible=[True, False, True, False])
    for reasons in (eligibility(configs, floor), eligibility(verdict)):
        assert dict(zip(configs["config_id"], reasons)) == {
            "full": "",
            "pruned": "partial",  # nothing measured: no constraint broken
            "weak": "",
            "unsafe": "infeasible",
        }
    # a pruned configuration whose partial means break the floor stays infeasible
    configs.loc[configs["config_id"] == "pruned", "sensitivity"] = 0.5
    assert eligibility(configs, floor).tolist() == ["", "infeasible", "", "infeasible"]
    table = pareto_table(configs.assign(sensitivity=configs["sensitivity"].where(configs["config_id"] != "pruned")))
    assert table.set_index("config_id").loc["pruned", "front_status"] == "partial"


def test_pruned_and_infeasible_configurations_are_kept_off_the_front_and_shown_apart():
    from sweeper.pareto import operating_point
    from sweeper.spec import ConstraintSpec

    configs = configs_with_status()
    floor = [ConstraintSpec(metric="sensitivity", min=0.65)]
    table = pareto_table(configs, constraints=floor).set_index("config_id")
    # pruned dominates everything on its partial means, unsafe breaks the floor: neither is on the front
    assert table.loc["full", "front_status"] == "front" and table.loc["pruned", "front_status"] == "partial"
    assert table.loc["unsafe", "front_status"] == "infeasible" and not table.loc["unsafe", "feasible"]
    assert table.loc["weak", "front_status"] == "dominated"
    asked = pareto_table(configs, constraints=floor, include_partial=True).set_index("config_id")
    assert asked.loc["pruned", "front_status"] == "front" and asked.loc["full", "front_status"] == "dominated"
    # the operating point honours the same rules: the most sensitive config with precision >= 0.95 is unsafe
    assert operating_point(configs, min_precision=0.95).row["config_id"] == "unsafe"
    assert operating_point(configs, min_precision=0.95, constraints=floor).row is None
    assert operating_point(configs, min_sensitivity=0.75).row["config_id"] == "full"
    assert operating_point(configs, min_sensitivity=0.75, include_partial=True).row["config_id"] == "pruned"
