"""Fold statistics against scipy on hand-made fold tables; hypervolume against brute force."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sweeper.leaderboard import aggregate, compare_configs, trial_row
from sweeper.stats import hypervolume_2d, paired_comparison, t_interval
from trainables.contract import TrialConfig


def test_t_interval_matches_scipy():
    values = np.array([0.81, 0.84, 0.79, 0.86, 0.83])
    expected = stats.t.interval(0.95, df=4, loc=values.mean(), scale=stats.sem(values))
    assert t_interval(values) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(t_interval(np.array([0.5]))).all()


def test_paired_comparison_matches_scipy_ttest_rel():
    a = np.array([0.90, 0.88, 0.91, 0.87, 0.89])
    b = np.array([0.86, 0.87, 0.88, 0.86, 0.85])
    result = paired_comparison("dice", a, b)
    reference = stats.ttest_rel(a, b)
    assert result.mean_difference == pytest.approx(0.026)
    assert result.p_value == pytest.approx(reference.pvalue, abs=1e-12)
    assert result.t_statistic == pytest.approx(reference.statistic, abs=1e-12)
    assert (result.ci_low, result.ci_high) == pytest.approx(t_interval(a - b))
    assert result.ci_low > 0  # a is better on every fold


def test_compare_configs_on_a_fold_table():
    def row(cid, fold, dice):
        return trial_row(
            TrialConfig(config_id=cid, fold=fold, arch="unet", encoder="r", loss="dice", cache_dir="c"),
            {"best.dice": dice},
            "finished",
        )

    trials = pd.DataFrame(
        [row("aaa1", f, 0.8 + f / 100) for f in range(3)] + [row("bbb2", f, 0.7 + f / 50) for f in range(3)]
    )
    table = compare_configs(trials, "aaa", "bbb", ["dice"])
    expected = stats.ttest_rel([0.80, 0.81, 0.82], [0.70, 0.72, 0.74])
    assert table.loc[0, "p_value"] == pytest.approx(expected.pvalue)
    with pytest.raises(KeyError, match="matches 0 configurations"):
        compare_configs(trials, "zzz", "bbb", ["dice"])


def test_configs_table_without_case_records_carries_corrected_fold_intervals():
    """No case records: Nadeau & Bengio's corrected fold interval (3 folds: n_test/n_train = 1/2), clipped to [0, 1]."""
    rows = [
        trial_row(
            TrialConfig(config_id="a", fold=f, arch="u", encoder="e", loss="dice", cache_dir="c"),
            {"best.dice": v},
            "finished",
        )
        for f, v in enumerate([0.7, 0.8, 0.9])
    ]
    configs = aggregate(pd.DataFrame(rows))
    values = np.array([0.7, 0.8, 0.9])
    half = stats.t.ppf(0.975, 2) * np.sqrt((1 / 3 + 1 / 2) * values.var(ddof=1))
    assert (configs.loc[0, "dice_ci_low"], configs.loc[0, "dice_ci_high"]) == pytest.approx(
        (values.mean() - half, min(values.mean() + half, 1.0))
    )
    assert configs.loc[0, "interval_method"] == "fold_corrected_t"
    naive = t_interval(values)  # the plain Student t over folds is narrower: folds share training data
    assert configs.loc[0, "dice_ci_low"] < naive[0]


def brute_force_area(points, resolution=400):
    grid = (np.arange(resolution) + 0.5) / resolution
    xs, ys = np.meshgrid(grid, grid)
    covered = np.zeros_like(xs, dtype=bool)
    for x, y in points:
        covered |= (xs <= x) & (ys <= y)
    return covered.mean()


@pytest.mark.parametrize("seed", range(8))
def test_hypervolume_matches_brute_force_with_ties_and_duplicates(seed):
    rng = np.random.default_rng(seed)
    points = rng.integers(1, 20, size=(12, 2)) / 20  # on the grid: exact for the brute force
    points = np.vstack([points, points[:3]])  # duplicates
    assert hypervolume_2d(points) == pytest.approx(brute_force_area(points), abs=1e-9)


def test_hypervolume_hand_case():
    # staircase of (0.9, 0.5) and (0.5, 0.9): 0.9*0.5 + 0.5*(0.9-0.5) = 0.65
    assert hypervolume_2d(np.array([[0.9, 0.5], [0.5, 0.9], [0.4, 0.4]])) == pytest.approx(0.65)
    assert hypervolume_2d(np.empty((0, 2))) == 0.0
