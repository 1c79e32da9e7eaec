"""Patient-level evidence: formulas against trainables.metrics, the bootstrap against scipy, hand-computed
curves, AP, ECE, fronts, ranks and operating points, and the statistics' behaviour by simulation."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sweeper.cases import as_cases_table
from sweeper.evidence import (
    OVERALL,
    PER_IMAGE_METRICS,
    CurveBootstrap,
    EvidenceSettings,
    MetricBootstrap,
    PatientSums,
    average_precision,
    bootstrap_curves,
    bootstrap_interval,
    bootstrap_metrics,
    calibration_error_bound,
    compare_all,
    compare_pair,
    confusion_scores,
    corrected_paired_t,
    corrected_t_interval,
    curve_summary,
    expected_calibration_error,
    fold_intervals,
    front_probability,
    holm,
    matched_precision,
    object_scores,
    operating_point,
    patient_intervals,
    patient_sums,
    rank_distribution,
    reliability_curves,
    resample_weights,
    threshold_curves,
)

CLASSES = ("large_bowel", "small_bowel", "stomach")


# ------------------------------------------------------------------------------------------------
# builders


def random_cases(seed=0, configs=("cfg_a", "cfg_b"), patients=12, slices=6, n_bins=10, folds=3):
    """Random records with histograms consistent with the counts at threshold 0.5 (bin n/2 and up)."""
    rng = np.random.default_rng(seed)
    half = n_bins // 2
    rows = []
    for config in configs:
        for p in range(patients):
            for s in range(slices):
                for cls in CLASSES:
                    area = int(rng.integers(0, 60)) if rng.random() < 0.6 else 0
                    tp = int(rng.binomial(area, 0.8))
                    fp = int(rng.poisson(5)) if rng.random() < 0.5 else 0
                    fg = np.r_[
                        rng.multinomial(area - tp, np.full(half, 1 / half)),
                        rng.multinomial(tp, np.full(half, 1 / half)),
                    ]
                    bg_low = rng.multinomial(400 - area - fp, np.r_[0.9, np.full(half - 1, 0.1 / (half - 1))])
                    bg = np.r_[bg_low, rng.multinomial(fp, np.full(half, 1 / half))]
                    true_objects = int(rng.integers(1, 3)) if area else 0
                    pred_objects = int(rng.integers(0, 3)) if tp + fp else 0
                    rows.append(
                        {
                            "config_id": config,
                            "fold": p % folds,
                            "patient": f"case{p:02d}",
                            "scan": f"case{p:02d}_day0",
                            "slice": s,
                            "class": cls,
                            "area": area,
                            "tp": tp,
                            "fp": fp,
                            "fn": area - tp,
                            "tn": 400 - area - fp,
                            "nsd": rng.random() if area else np.nan,
                            "hd95": 10 * rng.random(),
                            "boundary_f1": rng.random(),
                            "objects_true": true_objects,
                            "objects_found": int(rng.integers(0, true_objects + 1)),
                            "objects_pred": pred_objects,
                            "objects_correct": int(rng.integers(0, pred_objects + 1)),
                            "hist_fg": fg.tolist(),
                            "hist_bg": bg.tolist(),
                        }
                    )
    return as_cases_table(pd.DataFrame(rows))


def sums_from_scores(score_sum, score_count, n_bins=2):
    """PatientSums of one class holding only per-image dice sums (C, P) and image counts (C, P)."""
    n_configs, n_patients = score_sum.shape
    metrics = len(PER_IMAGE_METRICS)
    summed = np.zeros((n_configs, n_patients, 1, metrics))
    counted = np.zeros_like(summed)
    summed[:, :, 0, 0], counted[:, :, 0, 0] = score_sum, score_count

    def zeros(*shape):
        return np.zeros((n_configs, n_patients, 1, *shape))

    return PatientSums(
        config_ids=tuple(f"c{i}" for i in range(n_configs)),
        patients=tuple(f"p{i}" for i in range(n_patients)),
        classes=("organ",),
        smooth=1.0,
        empty="one",
        fold=np.zeros((n_configs, n_patients), dtype=int),
        images=np.asarray(score_count, dtype=int),
        score_sum=summed,
        score_count=counted,
        counts=zeros(8),
        hist_fg=zeros(n_bins),
        hist_bg=zeros(n_bins),
        prob_sum=zeros(n_bins),
        curve_sum=zeros(n_bins + 1, 2),
        curve_count=zeros(n_bins + 1, 2),
    )


def hand_bootstrap(metrics, boot, estimate=None):
    """MetricBootstrap of one class from hand-made resampled values ``boot`` (B, C, metrics)."""
    boot = np.asarray(boot, dtype=float)
    n_configs = boot.shape[1]
    sums = sums_from_scores(np.ones((n_configs, 1)), np.ones((n_configs, 1)))
    values = np.repeat(boot[..., None], 2, axis=-1)  # overall = the one class
    estimate = values.mean(axis=0) if estimate is None else np.repeat(np.asarray(estimate, float)[..., None], 2, -1)
    return MetricBootstrap(
        sums,
        tuple(metrics),
        np.ones((boot.shape[0], 1)),
        estimate,
        values,
        np.zeros((1, *values.shape[1:])),
        EvidenceSettings(),
    )


def clustered_patients(rng, n_configs, n_patients, truth_a=8.0, truth_b=1.5):
    """Per-image score sums of patients with a skewed patient effect: truth = a / (a + b)."""
    images = rng.integers(1, 6, size=(n_configs, n_patients)) * 144  # 1-5 scans of 144 slices
    patient_mean = rng.beta(truth_a, truth_b, size=(n_configs, n_patients))
    noise = np.sqrt(images) * 0.15 * rng.standard_normal((n_configs, n_patients))
    return images * patient_mean + noise, images


# ------------------------------------------------------------------------------------------------
# formulas equal trainables.metrics on the same counts


def random_counts(rng, n=400):
    pixels = 50
    area = np.where(rng.random((n, 3)) < 0.4, 0, rng.integers(0, pixels, (n, 3)))
    tp = rng.binomial(area, 0.7)
    fp = rng.binomial(pixels - area, np.where(rng.random((n, 3)) < 0.5, 0.0, 0.1))
    fp[0] = pixels - area[0]  # an all-positive prediction (tn = 0)
    return tp, fp, area - tp, pixels - area - fp


@pytest.mark.parametrize("empty", ["one", "zero", "skip"])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_confusion_scores_equal_trainables_per_image_scores(empty, smooth):
    torch = pytest.importorskip("torch")
    from trainables.metrics import per_image_scores

    counts = random_counts(np.random.default_rng(1))
    ours = confusion_scores(*counts, smooth=smooth, empty=empty)
    theirs = per_image_scores(*(torch.tensor(c, dtype=torch.float64) for c in counts), smooth=smooth, empty=empty)
    for name, value in theirs.items():
        np.testing.assert_array_equal(ours[name], value.numpy(), err_msg=name)


@pytest.mark.parametrize("empty", ["one", "zero", "skip"])
def test_out_of_fold_estimates_equal_trainables_metrics_over_all_images(empty):
    """Per-image metrics: the mean over every validated image; pooled: the formula on summed counts."""
    torch = pytest.importorskip("torch")
    from trainables.metrics import per_image_scores, pooled_scores

    table = random_cases(seed=2, configs=("cfg_a",))
    frame = table.to_pandas()
    sums = patient_sums(table, empty=empty, classes=CLASSES)
    boot = bootstrap_metrics(sums, EvidenceSettings(resamples=100))
    counts = [torch.tensor(frame[c].to_numpy().reshape(-1, 3), dtype=torch.float64) for c in ("tp", "fp", "fn", "tn")]
    per_image = per_image_scores(*counts, smooth=1.0, empty=empty)
    pooled = pooled_scores(*counts, empty=empty)
    for name in ("dice", "iou", "sensitivity", "specificity", "precision", "accuracy"):
        m = boot.metrics.index(name)
        expected = np.nanmean(per_image[name].numpy(), axis=0)
        np.testing.assert_allclose(boot.estimate[0, m, 1:], expected, rtol=1e-12, err_msg=name)
        assert boot.estimate[0, m, 0] == pytest.approx(expected.mean(), rel=1e-12)
        m = boot.metrics.index(f"pooled_{name}")
        np.testing.assert_allclose(boot.estimate[0, m, 1:], pooled[name].numpy(), rtol=1e-12)
    # boundary metrics as recorded: NaN (not scored) left out of the mean
    nsd = frame["nsd"].to_numpy(dtype=np.float64).reshape(-1, 3)
    np.testing.assert_allclose(boot.estimate[0, boot.metrics.index("nsd"), 1:], np.nanmean(nsd, axis=0), rtol=1e-12)


def test_object_metrics_per_image_and_pooled_by_hand():
    scores = object_scores([2, 0, 0, 3], [1, 0, 0, 3], [2, 1, 0, 0], [1, 0, 0, 0], area=[50, 0, 0, 80], empty="one")
    np.testing.assert_allclose(scores["object_sensitivity"], [0.5, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(scores["object_precision"], [0.5, 0.0, 1.0, 1.0])
    zero = object_scores([2, 0], [1, 0], [2, 1], [1, 0], area=[50, 0], empty="zero")
    np.testing.assert_allclose(zero["object_precision"], [0.5, 0.0])
    skip = object_scores([2, 0], [1, 0], [2, 1], [1, 0], area=[50, 0], empty="skip")
    assert np.isnan(skip["object_sensitivity"][1]) and skip["object_sensitivity"][0] == 0.5


def test_per_image_curve_at_the_spec_threshold_is_the_leaderboard_value():
    table = random_cases(seed=3)
    sums = patient_sums(table, classes=CLASSES)
    settings = EvidenceSettings(resamples=200)
    intervals = patient_intervals(bootstrap_metrics(sums, settings)).set_index("config_id")
    curves = threshold_curves(bootstrap_curves(sums, settings))
    at_half = curves[curves["threshold"] == 0.5].set_index(["config_id", "class"])
    for cid in sums.config_ids:
        for group in (OVERALL, *CLASSES):
            key = "" if group == OVERALL else f".{group}"
            for name in ("sensitivity", "precision", "pooled_sensitivity", "pooled_precision"):
                assert at_half.loc[(cid, group), name] == pytest.approx(intervals.loc[cid, name + key], rel=1e-12)


def test_a_patient_in_two_folds_of_one_configuration_is_refused():
    frame = random_cases(seed=4, configs=("cfg_a",), patients=2).to_pandas()
    frame.loc[(frame["patient"] == "case00") & (frame["slice"] == 0), "fold"] = 2
    with pytest.raises(ValueError, match="more than one fold"):
        patient_sums(as_cases_table(frame))


# ------------------------------------------------------------------------------------------------
# the bootstrap against scipy, intervals inside the range, the fallback


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_cluster_bootstrap_interval_matches_scipy_bootstrap(method):
    """Same ratio statistic over resampled patients; scipy draws its own resamples, so agreement is
    up to Monte Carlo error (measured: about 1% of the width at 20,000 resamples)."""
    rng = np.random.default_rng(3)
    score_sum, images = clustered_patients(rng, 1, 40)
    sums = sums_from_scores(score_sum, images)
    boot = bootstrap_metrics(sums, EvidenceSettings(resamples=20_000, method=method), metrics=("dice",))
    low, high = boot.interval()
    reference = stats.bootstrap(
        (score_sum[0], images[0].astype(float)),
        lambda s, n, axis=-1: s.sum(axis) / n.sum(axis),
        paired=True,
        vectorized=True,
        n_resamples=20_000,
        method="BCa" if method == "bca" else "percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    width = reference.high - reference.low
    assert boot.estimate[0, 0, 0] == pytest.approx(score_sum.sum() / images.sum())
    assert low[0, 0, 0] == pytest.approx(reference.low, abs=0.03 * width)
    assert high[0, 0, 0] == pytest.approx(reference.high, abs=0.03 * width)


def test_bca_falls_back_to_percentile_where_every_resample_is_on_one_side():
    boot = np.array([[1.0], [2.0], [3.0], [4.0]])
    low, high = bootstrap_interval(np.array([0.5]), boot, np.array([[1.0], [2.0]]), method="bca", confidence=0.5)
    expected = np.quantile(boot[:, 0], [0.25, 0.75])
    assert (low[0], high[0]) == pytest.approx(tuple(expected))


def test_intervals_stay_inside_the_metric_range_and_few_patients_are_flagged():
    table = random_cases(seed=5, patients=8)
    intervals = patient_intervals(bootstrap_metrics(patient_sums(table), EvidenceSettings(resamples=300)))
    bounds = intervals.filter(regex="_ci_(low|high)$")
    unit = bounds.loc[:, ~bounds.columns.str.startswith("hd95")]
    assert ((unit >= 0) & (unit <= 1)).all().all()
    assert (bounds.filter(like="hd95") >= 0).all().all()
    assert intervals["few_patients"].all() and (intervals["n_patients"] == 8).all()
    assert (intervals["interval_method"] == "patient_bca").all()


def test_holm_adjustment_by_hand():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])
    adjusted = holm([0.2, np.nan, 0.01])
    assert np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02) and adjusted[0] == pytest.approx(0.2)


def test_corrected_t_interval_by_hand_and_clipped_to_the_range():
    values = np.array([0.80, 0.82, 0.84, 0.86, 0.88])
    half = stats.t.ppf(0.975, 4) * math.sqrt((1 / 5 + 1 / 4) * values.var(ddof=1))
    assert corrected_t_interval(values) == pytest.approx((0.84 - half, 0.84 + half))
    naive = stats.t.interval(0.95, 4, loc=0.84, scale=stats.sem(values))
    assert corrected_t_interval(values)[1] - corrected_t_interval(values)[0] == pytest.approx(
        (naive[1] - naive[0]) * math.sqrt((1 / 5 + 1 / 4) * 5)
    )
    # two folds as in a demo sweep: the Student-t interval leaves [0, 1]; the fallback stays inside
    assert corrected_t_interval([0.2, 0.9], bounds=(0.0, 1.0)) == (0.0, 1.0)
    trials = pd.DataFrame(
        {
            "config_id": ["a", "a", "b", "b", "b", "b"],
            "fold": [0, 1, 0, 1, 2, 3],
            "status": ["finished", "finished", "finished", "finished", "finished", "failed"],
            "precision": [0.2, 0.9, 0.5, 0.55, 0.6, 0.1],
        }
    )
    table = fold_intervals(trials, ["precision"], n_folds=5).set_index("config_id")
    assert table.loc["a", "precision_ci_low"] == 0.0 and table.loc["a", "precision_ci_high"] == 1.0
    assert table.loc["b", "n_folds"] == 3 and table.loc["b", "interval_method"] == "fold_corrected_t"
    assert (table.loc["b", "precision_ci_low"], table.loc["b", "precision_ci_high"]) == pytest.approx(
        corrected_t_interval([0.5, 0.55, 0.6], 1 / 4)
    )
    assert 0 < table.loc["b", "precision_ci_low"] < 0.5
    result = corrected_paired_t([0.81, 0.83, 0.80], [0.80, 0.80, 0.79], test_train_ratio=0.5)
    d = np.array([0.01, 0.03, 0.01])
    t = d.mean() / math.sqrt((1 / 3 + 0.5) * d.var(ddof=1))
    assert result["statistic"] == pytest.approx(t) and result["p_value"] == pytest.approx(2 * stats.t.sf(t, 2))


# ------------------------------------------------------------------------------------------------
# paired tests


def test_wilcoxon_of_all_pairs_equals_scipy_on_patient_scores():
    table = random_cases(seed=6, configs=("cfg_a", "cfg_b", "cfg_c"))
    sums = patient_sums(table)
    boot = bootstrap_metrics(sums, EvidenceSettings(resamples=200))
    pairs, _ = compare_all(boot, ["dice", "precision.stomach"])
    frame = table.to_pandas()
    frame["dice_image"] = confusion_scores(frame["tp"], frame["fp"], frame["fn"], frame["tn"])["dice"]
    per_class = frame.groupby(["config_id", "patient", "class"], observed=True)["dice_image"].mean()
    patient_dice = per_class.groupby(["config_id", "patient"], observed=True).mean().unstack("patient")
    for row in pairs[pairs["metric"] == "dice"].itertuples():
        expected = stats.wilcoxon(patient_dice.loc[row.config_a] - patient_dice.loc[row.config_b]).pvalue
        assert row.p_value == pytest.approx(expected, rel=1e-12)
    assert len(pairs) == 6 and pairs["p_holm"].ge(pairs["p_value"]).all()
    single = compare_pair(boot, "cfg_a", "cfg_c", ["dice"]).iloc[0]
    first = pairs[(pairs["metric"] == "dice") & (pairs["config_b"] == "cfg_c") & (pairs["config_a"] == "cfg_a")].iloc[0]
    assert single["p_value"] == pytest.approx(first["p_value"]) and single["ci_low"] == pytest.approx(first["ci_low"])


def test_permutation_test_is_exact_and_equals_scipy_on_one_image_per_patient():
    """One image and class per patient: the ratio statistic is the mean, so scipy's paired
    permutation test of the mean difference is the same test (2^8 swaps, enumerated)."""
    rng = np.random.default_rng(7)
    a = rng.random(8)
    b = a - 0.05 + 0.1 * rng.random(8)
    sums = sums_from_scores(np.stack([a, b]), np.ones((2, 8)))
    boot = bootstrap_metrics(sums, EvidenceSettings(resamples=1000, paired_test="permutation"), metrics=("dice",))
    ours = compare_pair(boot, "c0", "c1", ["dice"]).iloc[0]
    reference = stats.permutation_test(
        (a, b),
        lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
        permutation_type="samples",
        n_resamples=np.inf,
        vectorized=True,
    )
    assert ours["difference"] == pytest.approx(a.mean() - b.mean())
    assert ours["p_value"] == pytest.approx(reference.pvalue, rel=1e-12)


def test_pairs_on_different_patients_are_compared_on_the_common_ones():
    table = random_cases(seed=8, configs=("cfg_a", "cfg_b"), patients=10).to_pandas()
    table = table[~((table["config_id"] == "cfg_b") & table["patient"].isin(["case00", "case01"]))]
    sums = patient_sums(as_cases_table(table))
    boot = bootstrap_metrics(sums, EvidenceSettings(resamples=200))
    row = compare_pair(boot, "cfg_a", "cfg_b", ["dice"]).iloc[0]
    assert row["n_patients"] == 8
    common = table[~table["patient"].isin(["case00", "case01"])]
    dice = confusion_scores(common["tp"], common["fp"], common["fn"], common["tn"])["dice"]
    per_class = pd.Series(dice, index=common.index).groupby([common["config_id"], common["class"]]).mean()
    expected = per_class["cfg_a"].mean() - per_class["cfg_b"].mean()
    assert row["difference"] == pytest.approx(expected, rel=1e-12)


def test_indistinguishable_set_holds_the_best_and_the_close_ones():
    rng = np.random.default_rng(9)
    score_sum, images = clustered_patients(rng, 1, 85)
    base = score_sum[0] / images[0]
    shifts = np.array([0.0, -0.001, -0.05])  # the second is as good as the best, the third clearly worse
    noise = 0.01 * rng.standard_normal((3, 85))
    sums = sums_from_scores((base + shifts[:, None] + noise) * images[0], np.repeat(images, 3, axis=0))
    _, best = compare_all(bootstrap_metrics(sums, EvidenceSettings(resamples=200), metrics=("dice",)))
    best = best.set_index("config_id")
    assert best.loc["c0", "best"] or best.loc["c1", "best"]
    assert best.loc["c0", "indistinguishable"] and best.loc["c1", "indistinguishable"]
    assert not best.loc["c2", "indistinguishable"] and best.loc["c2", "rank"] == 3


# ------------------------------------------------------------------------------------------------
# front and rank probabilities (hand-made resamples)


def test_front_probability_by_hand():
    # resamples x configurations A, B, C x (sensitivity, precision)
    boot = [
        [[0.9, 0.5], [0.8, 0.6], [0.7, 0.55]],  # C dominated by B: front A, B
        [[0.9, 0.5], [0.9, 0.5], [0.95, 0.4]],  # A and B tie, C more sensitive: all three
        [[0.9, 0.7], [0.8, 0.6], [0.7, 0.5]],  # A dominates: A
        [[0.5, 0.5], [0.8, 0.6], [0.7, 0.65]],
    ]  # A dominated by B: B, C
    table = front_probability(hand_bootstrap(("sensitivity", "precision"), boot))
    overall = table[table["class"] == OVERALL].set_index("config_id")["front_probability"]
    assert overall.tolist() == [0.75, 0.75, 0.5]


def test_rank_distribution_by_hand():
    boot = [[[0.9], [0.8], [0.7]], [[0.8], [0.9], [0.7]], [[0.9], [0.9], [0.5]], [[0.7], [0.8], [0.9]]]
    table = rank_distribution(hand_bootstrap(("dice",), boot), ["dice"])
    first = table[table["config_id"] == "c0"].set_index("rank")["probability"]
    assert first.to_dict() == {1: 0.5, 2: 0.25, 3: 0.25}
    third = table[table["config_id"] == "c2"].set_index("rank")["probability"]
    assert third.to_dict() == {1: 0.25, 3: 0.75}
    hd95 = rank_distribution(hand_bootstrap(("hd95",), boot), ["hd95"])  # lower is better
    assert hd95[hd95["config_id"] == "c2"].set_index("rank")["probability"].to_dict() == {1: 0.75, 3: 0.25}


# ------------------------------------------------------------------------------------------------
# curves, AP, ECE, matched precision, operating point (hand-computed)


def one_image(prob_sum_low=None):
    """One patient, one image, one class: 4 bins, hist_fg [1, 1, 0, 2], hist_bg [5, 1, 1, 0]."""
    frame = pd.DataFrame(
        [
            {
                "config_id": "cfg",
                "fold": 0,
                "patient": "p",
                "scan": "s",
                "slice": 0,
                "class": "organ",
                "area": 4,
                "tp": 2,
                "fp": 1,
                "fn": 2,
                "tn": 6,
                "nsd": 1.0,
                "hd95": 0.0,
                "boundary_f1": 1.0,
                "objects_true": 1,
                "objects_found": 1,
                "objects_pred": 1,
                "objects_correct": 1,
                "hist_fg": [1, 1, 0, 2],
                "hist_bg": [5, 1, 1, 0],
                **({} if prob_sum_low is None else {"prob_sum_low": prob_sum_low}),
            }
        ]
    )
    return patient_sums(as_cases_table(frame))


def test_threshold_curves_and_average_precision_by_hand():
    curves = bootstrap_curves(one_image(), EvidenceSettings(resamples=100))
    table = threshold_curves(curves)
    organ = table[table["class"] == "organ"]
    assert organ["threshold"].tolist() == [0.0, 0.25, 0.5, 0.75]
    # tp = [4, 3, 2, 2], fp = [7, 2, 1, 0] at thresholds 0, 1/4, 1/2, 3/4
    np.testing.assert_allclose(organ["pooled_sensitivity"], [1, 0.75, 0.5, 0.5])
    np.testing.assert_allclose(organ["pooled_precision"], [4 / 11, 3 / 5, 2 / 3, 1])
    np.testing.assert_allclose(organ["sensitivity"], [1, 0.8, 0.6, 0.6])  # (tp + 1) / (4 + 1)
    np.testing.assert_allclose(organ["precision"], [5 / 12, 4 / 6, 3 / 4, 3 / 3])  # (tp + 1) / (tp + fp + 1)
    ap = 0.25 * 4 / 11 + 0.25 * 3 / 5 + 0 * 2 / 3 + 0.5 * 1
    summary = curve_summary(curves).set_index("class")
    assert summary.loc["organ", "average_precision"] == pytest.approx(ap)
    assert summary.loc[OVERALL, "average_precision"] == pytest.approx(ap)
    assert average_precision([1, 0.75, 0.5, 0.5, 0], [4 / 11, 3 / 5, 2 / 3, 1, 1]) == pytest.approx(ap)


def test_expected_calibration_error_by_hand():
    fg, bg = np.array([1, 1, 0, 2]), np.array([5, 1, 1, 0])
    # with the probability sums per bin: sum |fg_b - sum p| / pixels
    assert expected_calibration_error(fg, bg, np.array([0.6, 0.7, 0.6, 1.8])) == pytest.approx(1.5 / 11)
    # without: bin midpoints 1/8, 3/8, 5/8, 7/8 stand for the mean probability, within half a bin
    assert expected_calibration_error(fg, bg) == pytest.approx((0.25 + 0.25 + 0.625 + 0.25) / 11)
    assert calibration_error_bound(fg, bg, low_bin_exact=False) == pytest.approx(1 / 8)
    assert calibration_error_bound(fg, bg, low_bin_exact=True) == pytest.approx(5 / 11 / 8)
    # records with bin 0's probability sum (0.6 over its 6 pixels): exact there, midpoints elsewhere
    curves = bootstrap_curves(one_image(prob_sum_low=0.6), EvidenceSettings(resamples=100))
    row = curve_summary(curves).set_index("class").loc["organ"]
    assert row["calibration_error"] == pytest.approx((0.4 + 0.25 + 0.625 + 0.25) / 11)
    assert row["calibration_error_bound"] == pytest.approx(5 / 11 / 8)
    reliability = reliability_curves(curves.sums)
    organ = reliability[reliability["class"] == "organ"]
    np.testing.assert_allclose(organ["observed"], [1 / 6, 1 / 2, 0, 1])
    np.testing.assert_allclose(organ["confidence"], [0.1, 0.375, 0.625, 0.875])
    assert organ["pixels"].tolist() == [6, 2, 1, 2]


def test_precision_at_matched_sensitivity_takes_the_most_precise_threshold_reaching_it():
    from sweeper.evidence import _matched

    sens = np.array([1.0, 0.96, 0.91, 0.88, 0.0])
    prec = np.array([0.1, 0.6, 0.55, 0.9, 1.0])
    value, index = _matched(sens, prec, np.array([0.9, 0.95, 0.99]))
    np.testing.assert_allclose(value, [0.6, 0.6, 0.1])  # 0.9: thresholds 0-2 reach it, the most precise is 1
    assert index.tolist() == [1, 1, 0]
    table = matched_precision(
        bootstrap_curves(one_image(), EvidenceSettings(resamples=100, matched_sensitivity=(0.7,)))
    )
    row = table[table["class"] == "organ"].iloc[0]
    assert row["threshold"] == 0.25 and row["precision"] == pytest.approx(4 / 6) and row["best"]


def hand_curves(sens, sens_low, prec, prec_low):
    """CurveBootstrap of two configurations (overall only) on a 4-bin grid from hand-made curves."""
    sums = sums_from_scores(np.ones((2, 1)), np.ones((2, 1)), n_bins=4)
    sums = PatientSums(**{**sums.__dict__, "classes": ()})

    def curve(values):
        return np.concatenate([np.asarray(values, float), np.zeros((2, 1))], axis=1)[:, None, :]  # (C, 1, T)

    estimate = {"sensitivity": curve(sens), "precision": curve(prec)}
    low = {"sensitivity": curve(sens_low), "precision": curve(prec_low)}
    return CurveBootstrap(sums, EvidenceSettings(), estimate, low, dict(estimate), np.array([]), {})


def test_operating_point_most_precise_pair_whose_sensitivity_lower_bound_reaches_the_floor():
    curves = hand_curves(
        sens=[[1.0, 0.97, 0.95, 0.90], [1.0, 0.99, 0.96, 0.80]],
        sens_low=[[1.0, 0.955, 0.93, 0.85], [1.0, 0.975, 0.951, 0.70]],
        prec=[[0.1, 0.5, 0.7, 0.8], [0.1, 0.55, 0.65, 0.9]],
        prec_low=[[0.05, 0.45, 0.65, 0.75], [0.05, 0.5, 0.6, 0.85]],
    )
    point = operating_point(curves, min_sensitivity=0.95)
    assert point.found and point.config_id == "c1" and point.threshold == 0.5 and point.precision == 0.65
    assert point.sensitivity_ci_low == 0.951
    reverse = operating_point(curves, min_precision=0.6)  # the most sensitive pair with precision >= 0.6
    assert reverse.found and reverse.config_id == "c1" and reverse.threshold == 0.5
    none = operating_point(curves, min_sensitivity=1.01)
    assert not none.found and "no configuration and threshold" in none.reason and "1.0000" in none.reason
    with pytest.raises(ValueError, match="exactly one"):
        operating_point(curves)


# ------------------------------------------------------------------------------------------------
# simulation: known truth, many repetitions, vectorised


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_patient_bootstrap_interval_covers_the_truth_95_percent_of_the_time(method):
    """1000 data sets of 85 patients (UW-Madison's count) with 1-5 scans of 144 slices each, a
    skewed patient effect (mean Dice 8/9.5) and image noise: the interval of each data set is
    computed independently given the resamples, so the data sets run as 1000 "configurations"."""
    rng = np.random.default_rng(11)
    score_sum, images = clustered_patients(rng, 1000, 85)
    boot = bootstrap_metrics(sums_from_scores(score_sum, images), EvidenceSettings(method=method), metrics=("dice",))
    low, high = boot.interval()
    truth = 8.0 / 9.5
    coverage = np.mean((low[:, 0, 0] <= truth) & (truth <= high[:, 0, 0]))
    assert 0.93 <= coverage <= 0.97, coverage


def null_pairs(rng, pairs, n_patients=85):
    """``pairs`` pairs of configurations (c0, c1), (c2, c3), ... exchangeable on every patient:
    the same patient effect, independent noise."""
    score_sum, images = clustered_patients(rng, pairs, n_patients)
    mean = np.repeat(score_sum / images, 2, axis=0)
    images = np.repeat(images, 2, axis=0)
    return sums_from_scores((mean + 0.02 * rng.standard_normal(mean.shape)) * images, images)


def test_paired_tests_under_the_null_reject_at_most_6_percent():
    """500 null pairs; each pair's test and interval depend only on its own data (the resamples
    are shared, as in a sweep), so the pairs run as 1000 configurations of one bootstrap."""
    rng = np.random.default_rng(12)
    repetitions = 500
    sums = null_pairs(rng, repetitions)
    for test, resamples in (("wilcoxon", 2000), ("permutation", 200)):
        boot = bootstrap_metrics(sums, EvidenceSettings(resamples=resamples, paired_test=test), metrics=("dice",))
        rows = pd.concat([compare_pair(boot, f"c{2 * r}", f"c{2 * r + 1}", ["dice"]) for r in range(repetitions)])
        assert (rows["p_value"] < 0.05).mean() <= 0.06, test
        if test == "wilcoxon":  # the paired interval of the difference: about 5.5-6% at 85 patients (measured)
            assert (~((rows["ci_low"] <= 0) & (0 <= rows["ci_high"]))).mean() <= 0.08


def test_holm_keeps_the_family_wise_error_over_10_null_configurations():
    """500 sweeps of 10 exchangeable configurations: compare_all's Wilcoxon p-values of the 45
    pairs (computed here for every sweep at once) and Holm's adjustment; a family-wise error is a
    sweep with any adjusted p-value below 0.05."""
    from sweeper.evidence import _wilcoxon

    rng = np.random.default_rng(13)
    repetitions, n_configs = 500, 10
    score_sum, images = clustered_patients(rng, repetitions, 85)
    mean = score_sum / images  # (sweeps, patients)
    scores = mean[:, None, :] + 0.02 * rng.standard_normal((repetitions, n_configs, 85))
    a, b = np.triu_indices(n_configs, k=1)
    p = _wilcoxon(scores[:, a] - scores[:, b])  # (sweeps, 45)
    family_errors = np.array([(holm(row) < 0.05).any() for row in p])
    assert family_errors.mean() <= 0.06
    # compare_all applies exactly this: Holm over the pairs of one metric
    sums = sums_from_scores(scores[0] * images[0], np.repeat(images[:1], n_configs, axis=0))
    pairs, _ = compare_all(bootstrap_metrics(sums, EvidenceSettings(resamples=100), metrics=("dice",)))
    np.testing.assert_allclose(pairs["p_value"], p[0], rtol=1e-10)
    np.testing.assert_allclose(pairs["p_holm"], holm(p[0]), rtol=1e-10)


def test_on_correlated_folds_the_naive_t_test_over_rejects_and_the_corrected_one_does_not():
    """5-fold cross-validation of two equally good configurations on 85 patients. A fold's
    difference = mean over its test patients of a per-patient difference + mean over its training
    patients of how the training patients sway the two models: folds share 3/4 of their training
    patients, so their differences are positively correlated (Nadeau & Bengio 2003)."""
    rng = np.random.default_rng(14)
    repetitions, k, n = 4000, 5, 85
    fold = np.arange(n) % k
    test = np.stack([fold == j for j in range(k)]).astype(float)  # (k, n)
    train = 1.0 - test
    effect = rng.standard_normal((repetitions, n))  # per test patient
    sway = rng.standard_normal((repetitions, n))  # per training patient
    d = effect @ (test / test.sum(1, keepdims=True)).T + sway @ (train / train.sum(1, keepdims=True)).T
    naive = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    corrected = corrected_paired_t(d, np.zeros_like(d), test_train_ratio=17 / 68)["p_value"]
    assert np.mean(naive < 0.05) > 0.08
    assert np.mean(corrected < 0.05) <= 0.06


def test_resample_weights_draw_every_patient_population_of_the_same_size():
    weights = resample_weights(85, 500, seed=1)
    assert weights.shape == (500, 85) and (weights.sum(axis=1) == 85).all()
    assert weights.mean() == pytest.approx(1.0, abs=0.01)


# ------------------------------------------------------------------------------------------------
# one call per consumer


def test_interval_table_uses_patients_where_records_cover_the_folds_and_the_fold_fallback_elsewhere(tmp_path):
    from sweeper.cases import append_cases
    from sweeper.evidence import comparison_table, interval_table, pareto_tables, report_tables

    path = tmp_path / "cases.parquet"
    append_cases(path, random_cases(seed=15, configs=("cfg_a", "cfg_b")))
    trials = pd.DataFrame(
        [
            {"config_id": cid, "fold": f, "status": "finished", "dice": 0.7 + 0.01 * f, "dice.stomach": 0.6}
            for cid in ("cfg_a", "cfg_b", "cfg_c")
            for f in range(3)
        ]
    )
    settings = EvidenceSettings(resamples=200)
    table = interval_table(path, settings, trials=trials, metrics=["dice"]).set_index("config_id")
    assert table.loc["cfg_a", "interval_method"] == "patient_bca"
    assert table.loc["cfg_c", "interval_method"] == "fold_corrected_t"
    assert table.loc["cfg_c", "dice_ci_low"] == pytest.approx(
        corrected_t_interval([0.70, 0.71, 0.72], 1 / 2, bounds=(0, 1))[0]
    )
    assert {"dice.stomach_ci_low", "n_patients", "few_patients"} <= set(table.columns)
    patient = comparison_table(path, "cfg_a", "cfg_b", ["dice"], settings, trials=trials)
    assert patient.loc[0, "test"] == "wilcoxon" and patient.loc[0, "n_patients"] == 12
    folds = comparison_table(path, "cfg_a", "cfg_c", ["dice"], settings, trials=trials)
    assert folds.loc[0, "test"] == "fold_corrected_t" and folds.loc[0, "difference"] == pytest.approx(0.0)
    front, point = pareto_tables(path, settings, min_sensitivity=0.5)
    assert set(front["class"]) == {OVERALL, *CLASSES} and point.found
    tables = report_tables(path, settings, keys=["dice", "sensitivity"])
    assert set(tables) == {
        "intervals",
        "front",
        "ranks",
        "comparisons",
        "indistinguishable",
        "curves",
        "curve_summary",
        "reliability",
        "matched",
    }
    assert set(tables["matched"]["curve"]) == {"per_image", "pooled"}


def test_sums_read_one_configuration_at_a_time_equal_the_sums_of_all_records(tmp_path):
    from sweeper.cases import append_cases
    from sweeper.evidence import load_patient_sums

    table = random_cases(seed=16, configs=("cfg_a", "cfg_b")).to_pandas()
    table = table[~((table["config_id"] == "cfg_b") & (table["patient"] == "case03"))]  # cfg_b lacks one patient
    append_cases(tmp_path / "cases.parquet", table)
    whole = patient_sums(as_cases_table(table), classes=CLASSES)
    streamed = load_patient_sums(tmp_path / "cases.parquet", classes=CLASSES)
    assert streamed.config_ids == whole.config_ids and streamed.patients == whole.patients
    for name in ("score_sum", "score_count", "counts", "hist_fg", "curve_sum", "fold", "images"):
        np.testing.assert_allclose(getattr(streamed, name), getattr(whole, name), err_msg=name)
    assert not streamed.validated[1, streamed.patients.index("case03")]


def with_repeat(table, repeat):
    import pyarrow as pa

    return table.drop(["repeat"]).append_column("repeat", pa.array([repeat] * table.num_rows, pa.int16()))


def test_repeated_runs_count_each_case_once_as_the_mean_over_its_runs():
    import pyarrow as pa

    from sweeper.evidence import average_repeats, repeats_per_patient

    first, second = random_cases(seed=1, configs=("cfg_a",)), random_cases(seed=2, configs=("cfg_a",))
    one = patient_sums(first)
    # the same run recorded as two repeats: exactly the sums of one run
    twice = patient_sums(pa.concat_tables([with_repeat(first, 0), with_repeat(first, 1)]).unify_dictionaries())
    for name in ("images", "score_sum", "score_count", "counts", "hist_fg", "curve_sum", "curve_count"):
        assert np.allclose(getattr(twice, name), getattr(one, name)), name
    # two different runs: each sum is the mean of the two runs' sums
    two = patient_sums(pa.concat_tables([with_repeat(first, 0), with_repeat(second, 1)]).unify_dictionaries())
    other = patient_sums(second)
    assert np.allclose(two.score_sum, (one.score_sum + other.score_sum) / 2)
    assert np.allclose(two.counts, (one.counts + other.counts) / 2) and np.array_equal(two.images, one.images)
    table = pa.concat_tables([with_repeat(first, 0), with_repeat(first, 3)]).unify_dictionaries()
    assert (repeats_per_patient(table, ("cfg_a", "cfg_b"), one.patients) == [[2] * 12, [0] * 12]).all()
    assert average_repeats(one, np.ones((1, 12), dtype=int)) is one
