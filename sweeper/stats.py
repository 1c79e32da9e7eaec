"""Fold statistics: intervals over folds, paired comparisons between configurations, hypervolume.

Small pure functions on arrays; the leaderboard and the CLI call them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def t_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Returns the Student-t interval of the mean over folds: mean -+ t_{(1+c)/2, n-1} * s / sqrt(n).

    ``s`` is the sample standard deviation (ddof 1). With fewer than two finite values the interval
    is undefined and ``(nan, nan)`` is returned. The t-interval (not a bootstrap) because fold
    counts are small (3-10) and a bootstrap over 5 values has only 126 distinct resamples.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    mean = values.mean()
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return float(mean - half), float(mean + half)


@dataclass(frozen=True)
class PairedComparison:
    """A minus B over the folds both finished."""

    metric: str
    n_folds: int
    mean_a: float
    mean_b: float
    mean_difference: float
    ci_low: float
    ci_high: float
    t_statistic: float
    p_value: float


def paired_comparison(metric: str, a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE) -> PairedComparison:
    """Returns the paired comparison of two configurations on the same folds.

    Differences d_k = a_k - b_k; their mean with a t-interval (:func:`t_interval`) and the paired
    t-test ``scipy.stats.ttest_rel`` (two-sided). Needs at least two common folds for the interval
    and test (NaN otherwise).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = a - b
    low, high = t_interval(diff, confidence)
    if len(diff) >= 2 and np.ptp(diff) > 0:
        test = stats.ttest_rel(a, b)
        t_stat, p_value = float(test.statistic), float(test.pvalue)
    elif len(diff) >= 2:  # identical differences: zero variance, the test is undefined unless all zero
        t_stat, p_value = (0.0, 1.0) if np.all(diff == 0) else (float("inf") * np.sign(diff[0]), 0.0)
    else:
        t_stat, p_value = float("nan"), float("nan")
    return PairedComparison(
        metric, len(diff), float(a.mean()), float(b.mean()), float(diff.mean()), low, high, t_stat, p_value
    )


def hypervolume_2d(points: np.ndarray, reference: tuple[float, float] = (0.0, 0.0)) -> float:
    """Returns the area dominated by ``points`` (n, 2) and bounded below by ``reference`` (both maximised).

    Points not strictly above the reference on both axes contribute nothing. For sensitivity and
    precision in [0, 1] the default reference (0, 0) makes the hypervolume the area under the
    front's staircase, 1 at most.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    pts = pts[(pts[:, 0] > reference[0]) & (pts[:, 1] > reference[1])]
    if len(pts) == 0:
        return 0.0
    pts = pts[np.argsort(-pts[:, 0], kind="stable")]  # x descending
    area, best_y = 0.0, reference[1]
    for x, y in pts:
        if y > best_y:
            area += (x - reference[0]) * (y - best_y)
            best_y = y
    return float(area)
