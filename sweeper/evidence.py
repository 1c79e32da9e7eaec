"""Patient-level evidence from out-of-fold case records: intervals, paired tests, fronts, thresholds.

Every validation patient is validated exactly once across the folds of a configuration, so the
out-of-fold case records (:mod:`sweeper.cases`) hold one prediction per patient: the patient, not
the fold, is the unit that is replicated. Everything here resamples patients (a cluster bootstrap:
slices of one patient are correlated and travel together) and keeps the statistic the leaderboard
shows, a ratio over the resampled patients' images:

- a per-image metric (dice, iou, sensitivity, specificity, precision, accuracy, nsd, hd95,
  boundary_f1, object_sensitivity, object_precision) is ``sum of per-image scores / number of
  scored images`` over the patients drawn (each patient as often as it is drawn), per class;
- a pooled metric (``pooled_<m>``) is the formula applied to counts summed over those patients;
- the overall value is the mean over classes of the per-class values (README "Metrics").

Resampling patients with the same weights for every configuration ("shared resamples") is what
makes the joint statements possible: the probability of being on the front, the rank
distribution, the paired differences and the precision at matched sensitivity all come from one
set of resampled patient populations. That is why the bootstrap is written here, on per-patient
sums (one matrix product gives every configuration's resampled totals), rather than through
``scipy.stats.bootstrap``, which draws its own resamples per call; the tests check it against
``scipy.stats.bootstrap`` on the same statistic.

Layout: metric formulas (numpy mirrors of ``trainables.metrics``), per-patient sums
(:func:`patient_sums`), the bootstrap and its intervals, the fold-level fallback (Nadeau-Bengio),
paired comparisons, front and rank probabilities, threshold curves and calibration, then the
DataFrame functions the leaderboard, ``compare``, ``pareto`` and the report call.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import sparse, special, stats

from sweeper.cases import COUNT_COLUMNS, OBJECT_COLUMNS, as_cases_table, cases_present, read_cases
from sweeper.spec import EvidenceSpec

__all__ = [
    "LOWER_IS_BETTER",
    "METRICS",
    "OVERALL",
    "PER_IMAGE_METRICS",
    "POOLED_METRICS",
    "CurveBootstrap",
    "EvidenceSettings",
    "MetricBootstrap",
    "OperatingPoint",
    "PatientSums",
    "average_precision",
    "average_repeats",
    "bootstrap_curves",
    "bootstrap_interval",
    "bootstrap_metrics",
    "calibration_error_bound",
    "compare_all",
    "compare_pair",
    "comparison_all_tables",
    "comparison_table",
    "concat_sums",
    "confusion_scores",
    "corrected_paired_t",
    "corrected_t_interval",
    "curve_summary",
    "expected_calibration_error",
    "finished_fold_rows",
    "fold_intervals",
    "front_probability",
    "holm",
    "interval_table",
    "load_patient_sums",
    "matched_precision",
    "object_scores",
    "operating_point",
    "pareto_tables",
    "patient_intervals",
    "patient_scores",
    "patient_sums",
    "rank_distribution",
    "reliability_curves",
    "report_tables",
    "repeats_per_patient",
    "resample_weights",
    "threshold_curves",
]

EmptyRule = Literal["one", "zero", "skip"]
_FILL = {"one": 1.0, "zero": 0.0, "skip": math.nan}

#: overall value = mean over classes; the name used in the ``class`` column of the tables
OVERALL = "overall"
CONFUSION_METRICS = ("dice", "iou", "sensitivity", "specificity", "precision", "accuracy")
BOUNDARY_METRICS = ("nsd", "hd95", "boundary_f1")
OBJECT_METRICS = ("object_sensitivity", "object_precision")
#: per-image metrics: averaged over the scored images of the patients drawn
PER_IMAGE_METRICS = (*CONFUSION_METRICS, *BOUNDARY_METRICS, *OBJECT_METRICS)
#: summed counts of a patient and class, in this order
POOLED_COUNTS = ("tp", "fp", "fn", "tn", "objects_true", "objects_found", "objects_pred", "objects_correct")
#: pooled metrics: the formula on counts summed over the patients drawn
POOLED_METRICS = (*(f"pooled_{m}" for m in CONFUSION_METRICS), *(f"pooled_{m}" for m in OBJECT_METRICS))
METRICS = (*PER_IMAGE_METRICS, *POOLED_METRICS)
#: smaller is better (mirrors trainables.metrics.LOWER_IS_BETTER for the metrics computed here)
LOWER_IS_BETTER = frozenset({"hd95"})
#: metrics about the organ: an empty ground truth takes the empty rule's value (trainables' FOREGROUND_METRICS)
_ORGAN_METRICS = frozenset({"dice", "iou", "sensitivity", "precision", *OBJECT_METRICS})


def metric_range(metric: str) -> tuple[float, float]:
    """Return the (lowest, highest) value ``metric`` can take: [0, inf) mm for hd95, [0, 1] otherwise."""
    return (0.0, math.inf) if metric == "hd95" else (0.0, 1.0)


#: the spec's ``evidence:`` section (:class:`sweeper.spec.EvidenceSpec`, declared once there): resamples,
#: method, confidence, min_patients, seed, paired_test, matched_sensitivity. The histogram bins are no
#: setting here: they are read from the records (``training.threshold_bins`` made them)
EvidenceSettings = EvidenceSpec


# --------------------------------------------------------------------------------------------------
# Metric formulas: numpy mirrors of trainables.metrics (equal on the same counts, tested)


def _check_empty(empty: str) -> None:
    if empty not in _FILL:
        raise ValueError(f"empty must be one of {tuple(_FILL)} but got {empty!r}")


def _ratio(num: np.ndarray, den: np.ndarray, smooth: float, target_empty: np.ndarray | None, empty: str) -> np.ndarray:
    """``(num + s) / (den + s)``; a 0/0, and under "zero"/"skip" an empty target, take the rule's value."""
    num = num + smooth
    den = den + smooth
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.divide(num, den, out=num)
    undefined = den == 0 if smooth <= 0 else None  # with s > 0 the denominator is never 0
    if target_empty is not None and empty != "one":
        undefined = target_empty if undefined is None else undefined | target_empty
    if undefined is not None:
        out[np.broadcast_to(undefined, out.shape)] = _FILL[empty]
    return out


def confusion_scores(
    tp, fp, fn, tn, smooth: float = 1.0, empty: EmptyRule = "one", names: Iterable[str] = CONFUSION_METRICS
) -> dict[str, np.ndarray]:
    """Return each confusion metric of the counts, shaped like ``tp`` (float64).

    The formulas and empty rule of ``trainables.metrics.per_image_scores`` (paper 000 eqs 4-8 and
    paper 002's accuracy), smoothing ``s`` added to numerator and denominator::

        dice        = (2 tp + s) / (2 tp + fp + fn + s)      iou       = (tp + s) / (tp + fp + fn + s)
        sensitivity = (tp + s) / (tp + fn + s)               precision = (tp + s) / (tp + fp + s)
        specificity = (tn + s) / (tn + fp + s)               accuracy  = (tp + tn + s) / (tp + fp + fn + tn + s)

    ``empty``: a 0/0 (only with s = 0) scores 1 ("one"), 0 ("zero") or NaN ("skip"); under "zero"
    and "skip" an empty target (tp + fn = 0) also takes that value on dice, iou, sensitivity and
    precision. With ``s = 0`` on summed counts these are the pooled metrics.
    """
    _check_empty(empty)
    tp, fp, fn, tn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn, tn))
    pairs = {  # (numerator, denominator), built only for the metrics asked for
        "dice": lambda: (2 * tp, 2 * tp + fp + fn),
        "iou": lambda: (tp, tp + fp + fn),
        "sensitivity": lambda: (tp, tp + fn),
        "specificity": lambda: (tn, tn + fp),
        "precision": lambda: (tp, tp + fp),
        "accuracy": lambda: (tp + tn, tp + fp + fn + tn),
    }
    target_empty = (tp + fn) == 0 if empty != "one" else None
    return {m: _ratio(*pairs[m](), smooth, target_empty if m in _ORGAN_METRICS else None, empty) for m in names}


def object_scores(
    objects_true, objects_found, objects_pred, objects_correct, area, empty: EmptyRule = "one"
) -> dict[str, np.ndarray]:
    """Return object_sensitivity = found / true and object_precision = correct / pred (unsmoothed).

    Objects are connected components (CASES_SCHEMA: a true object is found when the prediction
    covers at least ``object_min_overlap`` of it; a predicted one is correct when the truth covers
    that share of it). Counts of a few objects are not smoothed (s = 1 would make one missed
    object of one score 0.5). A 0/0 (no true object, resp. no predicted object) takes the empty
    rule's value, as does an empty target (``area`` 0) under "zero"/"skip". On summed counts these
    are the pooled object metrics (Metrics Reloaded's detection sensitivity and PPV: Maier-Hein et
    al., Metrics reloaded: recommendations for image analysis validation, Nature Methods 21, 2024,
    DOI 10.1038/s41592-023-02151-z).
    """
    _check_empty(empty)
    true, found, pred, correct = (
        np.asarray(x, dtype=np.float64) for x in (objects_true, objects_found, objects_pred, objects_correct)
    )
    target_empty = np.asarray(area) == 0
    return {
        "object_sensitivity": _ratio(found, true, 0.0, target_empty, empty),
        "object_precision": _ratio(correct, pred, 0.0, target_empty, empty),
    }


def _pooled_values(counts: np.ndarray, empty: str, names: Sequence[str] = POOLED_METRICS) -> dict[str, np.ndarray]:
    """Pooled metrics ``names`` of summed counts ``(..., 8)`` (:data:`POOLED_COUNTS`), each ``(...)``."""
    tp, fp, fn, tn, o_true, o_found, o_pred, o_correct = np.moveaxis(counts, -1, 0)
    confusion = [n.removeprefix("pooled_") for n in names if n.removeprefix("pooled_") in CONFUSION_METRICS]
    out = {f"pooled_{m}": v for m, v in confusion_scores(tp, fp, fn, tn, 0.0, empty, names=confusion).items()}
    if any(n.removeprefix("pooled_") in OBJECT_METRICS for n in names):
        objects = object_scores(o_true, o_found, o_pred, o_correct, tp + fn, empty=empty)
        out.update({f"pooled_{m}": v for m, v in objects.items()})
    return out


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """Mean over the defined values (NaN where none is), without numpy's empty-slice warning."""
    defined = ~np.isnan(x)
    count = defined.sum(axis=axis)
    total = np.where(defined, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# --------------------------------------------------------------------------------------------------
# Per-patient sums: everything a statistic needs, linear in the patients


@dataclass(frozen=True)
class PatientSums:
    """Sums over each patient's images of every configuration, the bootstrap's sufficient statistics.

    Shapes: C configurations, P patients (the union over configurations), K classes, M
    :data:`PER_IMAGE_METRICS`, n histogram bins, T = n + 1 thresholds (k / n for k < n, and a last
    point where no pixel is predicted). A configuration that did not validate a patient has zeros
    there (``validated`` False).
    """

    config_ids: tuple[str, ...]
    patients: tuple[str, ...]
    classes: tuple[str, ...]
    smooth: float
    empty: str
    fold: np.ndarray  # (C, P) int, -1 where not validated
    images: np.ndarray  # (C, P) images of the patient
    score_sum: np.ndarray  # (C, P, K, M) sum of the per-image scores that are defined
    score_count: np.ndarray  # (C, P, K, M) number of images with a defined score
    counts: np.ndarray  # (C, P, K, 8) summed POOLED_COUNTS
    hist_fg: np.ndarray  # (C, P, K, n) summed histogram over true-foreground pixels
    hist_bg: np.ndarray  # (C, P, K, n) summed histogram over true-background pixels
    prob_sum: np.ndarray  # (C, P, K, n) summed probability per bin: bin midpoint x pixels, bin 0 as recorded
    curve_sum: np.ndarray  # (C, P, K, T, 2) per-image sensitivity, precision at each threshold: sums
    curve_count: np.ndarray  # (C, P, K, T, 2) and numbers of images scored
    low_bin_exact: bool = False  # prob_sum's bin 0 is the recorded sum (records with prob_sum_low)

    @property
    def validated(self) -> np.ndarray:
        """(C, P) bool: the configuration holds records of the patient."""
        return self.images > 0

    @property
    def n_bins(self) -> int:
        return self.hist_fg.shape[-1]

    @property
    def thresholds(self) -> np.ndarray:
        """The n grid thresholds k / n (k = 0 .. n - 1) where counts are exact."""
        return np.arange(self.n_bins) / self.n_bins

    def index(self, config_id: str) -> int:
        """Position of ``config_id`` (a unique prefix is enough)."""
        if config_id in self.config_ids:
            return self.config_ids.index(config_id)
        matches = [i for i, c in enumerate(self.config_ids) if c.startswith(config_id)]
        if len(matches) != 1:
            raise KeyError(f"{config_id!r} matches {len(matches)} configurations with case records")
        return matches[0]


def _string_codes(column: pa.ChunkedArray, order: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer code of each value of a string column and the values in code order (``order`` or sorted)."""
    array = column.combine_chunks()
    if not pa.types.is_dictionary(array.type):
        array = array.cast(pa.string()).dictionary_encode()
    values = array.dictionary.to_pylist()
    indices = array.indices.to_numpy(zero_copy_only=False)
    used = sorted({values[i] for i in np.unique(indices)})
    names = tuple(order) if order is not None else tuple(used)
    position = {name: i for i, name in enumerate(names)}
    missing = [v for v in used if v not in position]
    if missing:
        raise ValueError(f"records hold {missing} not in {list(names)}")
    lookup = np.array([position.get(v, -1) for v in values], dtype=np.int64)
    return lookup[indices], names


def _list_matrix(column: pa.ChunkedArray, rows: np.ndarray, n_bins: int) -> np.ndarray:
    array = column.take(pa.array(rows)).combine_chunks()
    return array.flatten().to_numpy(zero_copy_only=False).reshape(-1, n_bins)


def _reverse_cumsum(hist: np.ndarray) -> np.ndarray:
    """Counts at or above each threshold, (..., n + 1): ``out[k] = sum_{b >= k} hist[b]``, the last 0."""
    out = np.zeros((*hist.shape[:-1], hist.shape[-1] + 1))
    out[..., :-1] = np.cumsum(hist[..., ::-1], axis=-1)[..., ::-1]
    return out


def _curve_sums(fg: np.ndarray, bg: np.ndarray, per_group, smooth: float, empty: str) -> tuple[np.ndarray, np.ndarray]:
    """Per (patient, class) sums and counts of the per-image sensitivity and precision at every
    threshold k / n and at "nothing predicted": each (P, K, n + 1, 2).

    From the histograms (CASES_SCHEMA) tp(k) = sum_{b >= k} hist_fg[b], fp(k) = sum_{b >= k} hist_bg[b],
    with :func:`confusion_scores`' formulas and empty rule. Sensitivity (tp(k) + s) / (area + s) is
    linear in the histogram for a fixed image, so its sum is the cumulated sum of histograms
    weighted by 1 / (area + s): no (images x thresholds) array. Precision is not, and is computed
    per image.
    """
    fill = _FILL[empty]
    area = fg.sum(axis=1)
    target_empty = area == 0
    undefined = (area + smooth == 0) | (target_empty if empty != "one" else False)
    weight = np.where(undefined, 0.0, 1.0 / np.where(undefined, 1.0, area + smooth))
    defined = (~undefined).astype(np.float64)
    sens_sum = _reverse_cumsum(per_group(weight[:, None] * fg)) + smooth * per_group(weight)[..., None]
    sens_count = np.repeat(per_group(defined)[..., None], fg.shape[1] + 1, axis=-1)
    if not math.isnan(fill):
        filled = per_group(undefined.astype(np.float64))[..., None]
        sens_sum = sens_sum + fill * filled
        sens_count = sens_count + filled

    tp = _reverse_cumsum(fg)
    den = _reverse_cumsum(bg)
    den += tp
    den += smooth
    tp += smooth
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.divide(tp, den, out=tp)
    bad = den == 0 if smooth <= 0 else np.zeros(den.shape, dtype=bool)
    if empty != "one":
        bad |= target_empty[:, None]
    counted = np.ones(den.shape)
    if bad.any():
        precision[bad] = 0.0 if math.isnan(fill) else fill
        if math.isnan(fill):
            counted[bad] = 0.0
    prec_sum, prec_count = per_group(precision), per_group(counted)
    return np.stack([sens_sum, prec_sum], axis=-1), np.stack([sens_count, prec_count], axis=-1)


class _GroupSum:
    """Sums any per-record block (rows, ...) per (patient, class): (P, K, ...), one sparse product
    with the records' indicator matrix."""

    def __init__(self, group: np.ndarray, n_patients: int, n_classes: int):
        self.shape = (n_patients, n_classes)
        self.indicator = sparse.csr_matrix(
            (np.ones(len(group)), (group, np.arange(len(group)))), shape=(n_patients * n_classes, len(group))
        )

    def __call__(self, block: np.ndarray) -> np.ndarray:
        flat = block.reshape(block.shape[0], -1)
        return np.asarray(self.indicator @ flat).reshape(*self.shape, *block.shape[1:])


def patient_sums(
    cases: pa.Table | pd.DataFrame,
    *,
    smooth: float = 1.0,
    empty: EmptyRule = "one",
    config_ids: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
) -> PatientSums:
    """Return the per-patient sums of the case records of every configuration (or of ``config_ids``).

    Per-image scores are computed from each record's counts with :func:`confusion_scores` and
    :func:`object_scores` (``smooth``, ``empty`` as the trials used: README "Metrics"); the
    boundary metrics are taken as recorded (NaN = not scored). Patients are the union over the
    configurations; configurations are processed one at a time so memory stays that of one.

    Raises:
        ValueError: a patient validated in two folds of one configuration (records that are not
            out-of-fold), or a configuration of ``config_ids`` without records.
    """
    _check_empty(empty)
    table = cases if isinstance(cases, pa.Table) else as_cases_table(cases, check=False)
    config_code, config_names = _string_codes(table.column("config_id"), config_ids)
    patient_code, patients = _string_codes(table.column("patient"), None)
    class_code, class_names = _string_codes(table.column("class"), classes)
    n_configs, n_patients, n_classes = len(config_names), len(patients), len(class_names)
    n_bins = table.schema.field("hist_fg").type.list_size
    n_metrics, thresholds = len(PER_IMAGE_METRICS), n_bins + 1
    low_exact = "prob_sum_low" in table.column_names

    shape = (n_configs, n_patients, n_classes)
    out = {
        "fold": np.full((n_configs, n_patients), -1, dtype=np.int64),
        "images": np.zeros((n_configs, n_patients), dtype=np.int64),
        "score_sum": np.zeros((*shape, n_metrics)),
        "score_count": np.zeros((*shape, n_metrics)),
        "counts": np.zeros((*shape, len(POOLED_COUNTS))),
        "hist_fg": np.zeros((*shape, n_bins)),
        "hist_bg": np.zeros((*shape, n_bins)),
        "prob_sum": np.zeros((*shape, n_bins)),
        "curve_sum": np.zeros((*shape, thresholds, 2)),
        "curve_count": np.zeros((*shape, thresholds, 2)),
    }
    order = np.argsort(config_code, kind="stable")
    bounds = np.searchsorted(config_code[order], np.arange(n_configs + 1))
    fold_column = table.column("fold").to_numpy()
    for c in range(n_configs):
        rows = order[bounds[c] : bounds[c + 1]]
        if len(rows) == 0:
            raise ValueError(f"no case records of configuration {config_names[c]!r}")
        p, k = patient_code[rows], class_code[rows]
        group = p * n_classes + k
        per_group = _GroupSum(group, n_patients, n_classes)

        col = {
            name: table.column(name).take(pa.array(rows)).to_numpy()
            for name in (*COUNT_COLUMNS, *OBJECT_COLUMNS, "nsd", "hd95", "boundary_f1")
        }
        conf = confusion_scores(col["tp"], col["fp"], col["fn"], col["tn"], smooth, empty)
        objects = object_scores(*(col[n] for n in OBJECT_COLUMNS), col["area"], empty)
        scores = np.stack(
            [
                *(conf[m] for m in CONFUSION_METRICS),
                *(col[m].astype(np.float64) for m in BOUNDARY_METRICS),
                *(objects[m] for m in OBJECT_METRICS),
            ],
            axis=1,
        )
        defined = ~np.isnan(scores)
        out["score_sum"][c] = per_group(np.where(defined, scores, 0.0))
        out["score_count"][c] = per_group(defined.astype(np.float64))
        out["counts"][c] = per_group(np.stack([col[n].astype(np.float64) for n in POOLED_COUNTS], axis=1))
        fg = _list_matrix(table.column("hist_fg"), rows, n_bins).astype(np.float64)
        bg = _list_matrix(table.column("hist_bg"), rows, n_bins).astype(np.float64)
        out["hist_fg"][c] = per_group(fg)
        out["hist_bg"][c] = per_group(bg)
        # probability sums per bin: the midpoints, bin 0's recorded sum where the records hold it
        midpoint = (np.arange(n_bins) + 0.5) / n_bins
        out["prob_sum"][c] = (out["hist_fg"][c] + out["hist_bg"][c]) * midpoint
        if low_exact:
            low = table.column("prob_sum_low").take(pa.array(rows)).to_numpy(zero_copy_only=False)
            out["prob_sum"][c][..., 0] = per_group(np.nan_to_num(low.astype(np.float64))[:, None])[..., 0]
        out["curve_sum"][c], out["curve_count"][c] = _curve_sums(fg, bg, per_group, smooth, empty)

        folds = fold_column[rows]
        first = np.full(n_patients, -1, dtype=np.int64)
        first[p] = folds  # one of each patient's folds: any record with another one is an error
        if np.any(first[p] != folds):
            bad = patients[int(p[np.flatnonzero(first[p] != folds)[0]])]
            raise ValueError(
                f"patient {bad!r} is validated in more than one fold of configuration "
                f"{config_names[c]!r}: case records must be out-of-fold"
            )
        out["fold"][c] = first
        per_class_images = np.bincount(group, minlength=n_patients * n_classes).reshape(n_patients, n_classes)
        out["images"][c] = per_class_images.max(axis=1)
    sums = PatientSums(
        config_ids=config_names,
        patients=patients,
        classes=class_names,
        smooth=smooth,
        empty=empty,
        low_bin_exact=low_exact,
        **out,
    )
    # several seeded runs of a fold (training.repeats): each case counts once, as the mean over its runs
    return average_repeats(sums, repeats_per_patient(table, config_names, patients))


def finished_fold_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """Return the finished rows of a trials table (trials.parquet), one per (configuration, fold): where a
    fold ran several seeded repeats (``repeat``), each numeric column is their mean, so the fold-level
    statistics see folds, never repeats, as their unit (the leaderboard's ``repeat_means``)."""
    done = trials[trials["status"] == "finished"] if "status" in trials else trials
    if "repeat" not in done or not done.duplicated(["config_id", "fold"]).any():
        return done
    numeric = [c for c in done.select_dtypes("number").columns if c not in ("fold", "repeat")]
    means = done.groupby(["config_id", "fold"], sort=False)[numeric].mean().reset_index()
    return means.assign(status="finished")


def repeats_per_patient(cases: pa.Table, config_ids: Sequence[str], patients: Sequence[str]) -> np.ndarray:
    """Return (C, P) the number of seeded runs (distinct ``repeat`` values) that validated each patient in each
    configuration; 1 where the records have no ``repeat`` column, 0 where a patient was not validated."""
    out = np.zeros((len(config_ids), len(patients)), dtype=np.int64)
    frame = cases.select([c for c in ("config_id", "patient", "repeat") if c in cases.column_names]).to_pandas()
    if "repeat" not in frame:
        frame["repeat"] = 0
    counts = frame.astype({"config_id": str, "patient": str}).groupby(["config_id", "patient"])["repeat"].nunique()
    row, col = {c: i for i, c in enumerate(config_ids)}, {p: i for i, p in enumerate(patients)}
    for (config, patient), n in counts.items():
        if config in row and patient in col:
            out[row[config], col[patient]] = n
    return out


def average_repeats(sums: PatientSums, repeats: np.ndarray) -> PatientSums:
    """Return ``sums`` with each (configuration, patient) divided by its number of seeded runs ``repeats`` (C, P).

    With ``training.repeats`` R, every image of a patient is validated R times, once per seed, and the
    sums hold all R records: dividing by R makes them the mean over the repeats of each case, so a
    patient weighs as much as with one run and the patient, not the seeded run, stays the unit the
    bootstrap resamples. Ratio statistics (a per-image mean, a pooled metric) are the same before and
    after; what changes is every absolute total (``images``, counts, histograms)."""
    if np.all(repeats <= 1):
        return sums
    scale = np.where(repeats > 0, repeats, 1).astype(np.float64)

    def per_patient(block: np.ndarray) -> np.ndarray:
        return block / scale.reshape(*scale.shape, *([1] * (block.ndim - 2)))

    additive = ("score_sum", "score_count", "counts", "hist_fg", "hist_bg", "prob_sum", "curve_sum", "curve_count")
    return dataclasses.replace(
        sums,
        images=sums.images // np.where(repeats > 0, repeats, 1),
        **{name: per_patient(getattr(sums, name)) for name in additive},
    )


def concat_sums(parts: Sequence[PatientSums]) -> PatientSums:
    """Return the sums of several configurations' :class:`PatientSums` as one (patients: the union).

    Lets the records be read and summed one configuration at a time (the full UW-Madison set is
    about 115,000 records per configuration) and the statistics run on all of them together.
    """
    if not parts:
        raise ValueError("no per-patient sums to concatenate")
    first = parts[0]
    for part in parts[1:]:
        if (part.classes, part.smooth, part.empty, part.n_bins) != (
            first.classes,
            first.smooth,
            first.empty,
            first.n_bins,
        ):
            raise ValueError("per-patient sums differ in classes, smoothing, empty rule or histogram bins")
    patients = tuple(sorted(set().union(*(p.patients for p in parts))))
    position = {name: i for i, name in enumerate(patients)}

    def gather(name: str, fill: float = 0.0) -> np.ndarray:
        blocks = []
        for part in parts:
            block = getattr(part, name)
            out = np.full((block.shape[0], len(patients), *block.shape[2:]), fill, dtype=block.dtype)
            out[:, [position[p] for p in part.patients]] = block
            blocks.append(out)
        return np.concatenate(blocks)

    return PatientSums(
        config_ids=tuple(c for p in parts for c in p.config_ids),
        patients=patients,
        classes=first.classes,
        smooth=first.smooth,
        empty=first.empty,
        fold=gather("fold", -1),
        images=gather("images"),
        score_sum=gather("score_sum"),
        score_count=gather("score_count"),
        counts=gather("counts"),
        hist_fg=gather("hist_fg"),
        hist_bg=gather("hist_bg"),
        prob_sum=gather("prob_sum"),
        curve_sum=gather("curve_sum"),
        curve_count=gather("curve_count"),
        low_bin_exact=all(p.low_bin_exact for p in parts),
    )


def load_patient_sums(
    path,
    *,
    smooth: float = 1.0,
    empty: EmptyRule = "one",
    config_ids: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
) -> PatientSums:
    """Return the per-patient sums of the case records under ``path`` (``leaderboard/cases.parquet``),
    read and summed one configuration at a time (all configurations, or ``config_ids``)."""
    present = sorted({cid for cid, _ in cases_present(path)})
    wanted = present if config_ids is None else [c for c in config_ids if c in present]
    if not wanted:
        raise ValueError(f"no case records under {path}" + ("" if config_ids is None else f" for {list(config_ids)}"))
    parts = []
    for cid in wanted:
        table = read_cases(path, config_ids=[cid])
        parts.append(patient_sums(table, smooth=smooth, empty=empty, config_ids=[cid], classes=classes))
        classes = parts[0].classes  # one class order for every configuration
    return concat_sums(parts)


# --------------------------------------------------------------------------------------------------
# The bootstrap: shared patient resamples and intervals


def resample_weights(n_patients: int, resamples: int, seed: int = 0) -> np.ndarray:
    """Return (resamples, n_patients) weights: how often each patient is drawn in each resample.

    Each row draws ``n_patients`` patients with replacement (a multinomial with equal
    probabilities), the nonparametric bootstrap of the patients; a statistic that sums over
    patients becomes one matrix product with these rows.
    """
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=resamples)
    return counts.astype(np.float64)  # float: the products with the sums run in BLAS


def _weighted_totals(block: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_p weights[b, p] block[c, p, ...]`` for every resample b: (B, C, ...), one matrix product."""
    n_configs, n_patients = block.shape[:2]
    flat = np.moveaxis(block, 1, 0).reshape(n_patients, -1)
    return (np.asarray(weights, dtype=np.float64) @ flat).reshape(weights.shape[0], n_configs, *block.shape[2:])


def _leave_one_out_totals(block: np.ndarray) -> np.ndarray:
    """Totals without patient p, for every p: (P, C, ...) (the jackknife of the patients)."""
    return block.sum(axis=1)[None] - np.moveaxis(block, 1, 0)


def _quantiles(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Quantile of ``values`` along axis 0 at a level per entry, NaNs left out (numpy's "linear" rule)."""
    ordered = np.sort(values, axis=0)  # NaN sort last
    count = (~np.isnan(values)).sum(axis=0)
    position = np.clip(levels, 0.0, 1.0) * np.maximum(count - 1, 0)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, np.maximum(count - 1, 0))
    low = np.take_along_axis(ordered, below[None], axis=0)[0]
    high = np.take_along_axis(ordered, above[None], axis=0)[0]
    result = low + (high - low) * (position - below)
    return np.where(count > 0, result, np.nan)


def bootstrap_interval(
    estimate: np.ndarray,
    boot: np.ndarray,
    jack: np.ndarray | None = None,
    jack_mask: np.ndarray | None = None,
    method: str = "bca",
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the (low, high) bootstrap interval of every entry of ``estimate``.

    Args:
        estimate: the statistic on the data, any shape S.
        boot: (B, *S) the statistic on each resample (NaN resamples are left out).
        jack: (P, *S) the statistic without each patient (needed by "bca").
        jack_mask: (P, *S) or broadcastable: which leave-one-out values count (a configuration's
            own patients); all when None.
        method: "percentile": quantiles alpha/2 and 1 - alpha/2 of ``boot``; "bca": Efron's (1987)
            bias-corrected and accelerated levels
            ``Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`` for z = Phi^-1(alpha/2), Phi^-1(1 - alpha/2), with
            ``z0 = Phi^-1(share of resamples below the estimate, ties counted half)`` and the
            acceleration ``a = sum d^3 / (6 (sum d^2)^1.5)``, d = jackknife mean - jackknife value
            (as ``scipy.stats.bootstrap``). Where every resample lies on one side of the estimate
            (z0 infinite) the percentile interval is returned for that entry.

    Both are quantiles of the resampled statistic, so they stay inside its range.
    """
    estimate = np.asarray(estimate, dtype=np.float64)
    boot = np.asarray(boot, dtype=np.float64)
    alpha = 1.0 - confidence
    levels = np.array([alpha / 2, 1 - alpha / 2])
    shape = (2, *estimate.shape)
    if method == "percentile":
        adjusted = np.broadcast_to(levels.reshape(2, *([1] * estimate.ndim)), shape)
    elif method == "bca":
        if jack is None:
            raise ValueError("method 'bca' needs the jackknife values (jack)")
        adjusted = _bca_levels(estimate, boot, np.asarray(jack, dtype=np.float64), jack_mask, levels)
    else:
        raise ValueError(f"method must be 'bca' or 'percentile' but got {method!r}")
    low = _quantiles(boot, adjusted[0])
    high = _quantiles(boot, adjusted[1])
    undefined = np.isnan(estimate)
    return np.where(undefined, np.nan, low), np.where(undefined, np.nan, high)


def _bca_levels(estimate, boot, jack, jack_mask, levels) -> np.ndarray:
    """(2, *S) BCa quantile levels; the percentile levels where the bias correction is infinite."""
    valid = ~np.isnan(boot)
    n_valid = valid.sum(axis=0)
    below = np.where(valid, boot < estimate, False).sum(axis=0) + 0.5 * np.where(valid, boot == estimate, False).sum(
        axis=0
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        share = below / n_valid
        z0 = special.ndtri(share)
        mask = ~np.isnan(jack) if jack_mask is None else (np.broadcast_to(jack_mask, jack.shape) & ~np.isnan(jack))
        n_jack = mask.sum(axis=0)
        mean = np.where(mask, jack, 0.0).sum(axis=0) / n_jack
        d = np.where(mask, mean - jack, 0.0)
        spread = (d**2).sum(axis=0)
        accel = np.where(spread > 0, (d**3).sum(axis=0) / (6.0 * spread**1.5), 0.0)
        z = special.ndtri(levels).reshape(2, *([1] * estimate.ndim))
        adjusted = special.ndtr(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    percentile = np.broadcast_to(levels.reshape(2, *([1] * estimate.ndim)), adjusted.shape)
    return np.where(np.isfinite(z0) & np.isfinite(adjusted), adjusted, percentile)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Return Holm's step-down adjusted p-values (Holm, A simple sequentially rejective multiple
    test procedure, Scandinavian Journal of Statistics 6(2), 1979).

    With the m p-values sorted ascending, ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) p(j))``;
    rejecting where ``p_adj <= alpha`` keeps the family-wise error at most alpha under any
    dependence. NaN p-values are left out of the family and stay NaN.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    defined = np.flatnonzero(~np.isnan(p))
    if len(defined) == 0:
        return out
    order = defined[np.argsort(p[defined], kind="stable")]
    m = len(order)
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


# --------------------------------------------------------------------------------------------------
# Metric values of totals, and the shared bootstrap of every configuration


def _metric_values(
    score_sum: np.ndarray, score_count: np.ndarray, counts: np.ndarray, empty: str, metrics: Sequence[str]
) -> np.ndarray:
    """(..., len(metrics), 1 + K) values: overall (mean over classes) then each class, from totals
    ``score_sum``/``score_count`` (..., K, M) and ``counts`` (..., K, 8)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    pooled = _pooled_values(counts, empty, [m for m in metrics if m in POOLED_METRICS])
    columns = []
    for metric in metrics:
        if metric in pooled:
            columns.append(pooled[metric])
            continue
        i = PER_IMAGE_METRICS.index(metric)
        total, count = score_sum[..., i], score_count[..., i]
        with np.errstate(invalid="ignore", divide="ignore"):
            columns.append(np.where(count > 0, total / np.where(count > 0, count, 1), np.nan))
    per_class = np.stack(columns, axis=-2)  # (..., metrics, K)
    return np.concatenate([_nanmean(per_class, axis=-1)[..., None], per_class], axis=-1)


def _check_metrics(metrics: Iterable[str] | None) -> tuple[str, ...]:
    metrics = METRICS if metrics is None else tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    return metrics


@dataclass(frozen=True)
class MetricBootstrap:
    """Every configuration's metric values on the data, on shared patient resamples and leaving
    each patient out. Value arrays are indexed [..., configuration, metric, group], group 0 the
    overall value and 1 + k class k."""

    sums: PatientSums
    metrics: tuple[str, ...]
    weights: np.ndarray  # (B, P)
    estimate: np.ndarray  # (C, metrics, 1 + K)
    boot: np.ndarray  # (B, C, metrics, 1 + K)
    jack: np.ndarray  # (P, C, metrics, 1 + K)
    settings: EvidenceSettings = field(default_factory=EvidenceSettings)

    @property
    def groups(self) -> tuple[str, ...]:
        return (OVERALL, *self.sums.classes)

    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high), each (C, metrics, 1 + K), by ``settings.method``."""
        mask = self.sums.validated.T[:, :, None, None]
        return bootstrap_interval(
            self.estimate, self.boot, self.jack, mask, self.settings.method, self.settings.confidence
        )


def bootstrap_metrics(
    sums: PatientSums,
    settings: EvidenceSettings | None = None,
    metrics: Iterable[str] | None = None,
    weights: np.ndarray | None = None,
) -> MetricBootstrap:
    """Return every configuration's ``metrics`` on the data and on ``settings.resamples`` shared
    patient resamples (one weight matrix for all configurations), and their jackknife values.

    Each resample draws the patients of the union with replacement; a configuration's value on it
    is its ratio estimator over the drawn patients it validated (its point estimate's statistic).
    """
    settings = settings or EvidenceSettings()
    metrics = _check_metrics(metrics)
    if weights is None:
        weights = resample_weights(len(sums.patients), settings.resamples, settings.seed)
    blocks = (sums.score_sum, sums.score_count, sums.counts)
    totals = [b.sum(axis=1) for b in blocks]
    estimate = _metric_values(*totals, sums.empty, metrics)
    boot = _metric_values(*(_weighted_totals(b, weights) for b in blocks), sums.empty, metrics)
    jack = _metric_values(*(_leave_one_out_totals(b) for b in blocks), sums.empty, metrics)
    return MetricBootstrap(sums, metrics, weights, estimate, boot, jack, settings)


def patient_scores(sums: PatientSums, metrics: Iterable[str] | None = None) -> np.ndarray:
    """Return each patient's own value of each metric: (C, P, metrics, 1 + K), NaN where not validated.

    A per-image metric: the mean over the patient's scored images; a pooled one: the formula on
    the patient's summed counts; overall: the mean over classes. These are the paired tests' units.
    """
    values = _metric_values(sums.score_sum, sums.score_count, sums.counts, sums.empty, _check_metrics(metrics))
    return np.where(sums.validated[:, :, None, None], values, np.nan)


# --------------------------------------------------------------------------------------------------
# The fold-level fallback (no case records): Nadeau and Bengio's corrected resampled t


def _test_train_ratio(k: int, test_train_ratio: float | None) -> float:
    return 1.0 / (k - 1) if test_train_ratio is None else float(test_train_ratio)


def corrected_t_interval(
    values: Sequence[float] | np.ndarray,
    test_train_ratio: float | None = None,
    confidence: float = 0.95,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> tuple[float, float]:
    """Return the corrected resampled t interval of a mean over k folds, clipped to ``bounds``.

    Nadeau & Bengio (Inference for the generalization error, Machine Learning 52, 2003, DOI
    10.1023/A:1024068626366): fold results share training data, so their variance understates the
    mean's; the corrected variance is ``(1/k + n_test/n_train) s^2``, s^2 the fold values' sample
    variance, with Student-t quantiles on k - 1 degrees of freedom:
    ``mean -+ t_{(1+c)/2, k-1} sqrt((1/k + n_test/n_train) s^2)``. ``test_train_ratio`` is
    n_test/n_train (default 1/(k - 1), k-fold with equal folds). NaN with fewer than 2 finite values.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    k = len(values)
    if k < 2:
        return math.nan, math.nan
    variance = (1.0 / k + _test_train_ratio(k, test_train_ratio)) * values.var(ddof=1)
    half = stats.t.ppf((1 + confidence) / 2, k - 1) * math.sqrt(variance)
    mean = values.mean()
    return float(max(mean - half, bounds[0])), float(min(mean + half, bounds[1]))


def corrected_paired_t(
    a, b, test_train_ratio: float | None = None, confidence: float = 0.95
) -> dict[str, float | np.ndarray]:
    """Return the corrected resampled paired t-test of two configurations on the same k folds.

    Differences d_j = a_j - b_j; ``t = mean(d) / sqrt((1/k + n_test/n_train) s_d^2)`` on k - 1
    degrees of freedom (Nadeau & Bengio 2003), two-sided p-value, and the matching interval of the
    mean difference. ``a``, ``b``: (..., k) fold values, folds on the last axis (NaN: fold
    missing); the results have the leading shape (floats for 1-D input). Keys: n_folds,
    difference, ci_low, ci_high, statistic, p_value. Zero variance gives t = 0 (p = 1) when the
    mean difference is 0, else an infinite t (p = 0); fewer than 2 folds, NaN.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    defined = np.isfinite(d)
    k = defined.sum(axis=-1)
    d0 = np.where(defined, d, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = d0.sum(axis=-1) / k
        variance = (np.where(defined, d - mean[..., None], 0.0) ** 2).sum(axis=-1) / (k - 1)
        ratio = 1.0 / (k - 1) if test_train_ratio is None else float(test_train_ratio)
        se = np.sqrt((1.0 / k + ratio) * variance)
        statistic = np.where(
            se > 0, mean / np.where(se > 0, se, 1.0), np.where(mean == 0, 0.0, np.copysign(np.inf, mean))
        )
        df = np.maximum(k - 1, 1)
        p_value = np.where(statistic == 0, 1.0, 2 * stats.t.sf(np.abs(statistic), df))
        half = stats.t.ppf((1 + confidence) / 2, df) * se
    few = k < 2
    out = {
        "n_folds": k,
        "difference": np.where(k > 0, mean, np.nan),
        "ci_low": np.where(few, np.nan, mean - half),
        "ci_high": np.where(few, np.nan, mean + half),
        "statistic": np.where(few, np.nan, statistic),
        "p_value": np.where(few, np.nan, p_value),
    }
    if d.ndim == 1:
        return {key: (int(v) if key == "n_folds" else float(v)) for key, v in out.items()}
    return out


# --------------------------------------------------------------------------------------------------
# Tables: intervals per configuration (patient bootstrap, or the fold fallback)


def _keys(boot: MetricBootstrap, keys: Iterable[str]) -> list[tuple[str, int, int]]:
    """(key, metric index, group index) of leaderboard-style keys: ``dice`` (overall) or ``dice.stomach``."""
    out = []
    for key in keys:
        metric, _, cls = key.partition(".")
        if metric not in boot.metrics:
            raise KeyError(f"unknown metric {metric!r}; known: {', '.join(boot.metrics)}")
        if cls and cls not in boot.sums.classes:
            raise KeyError(f"unknown class {cls!r} in {key!r}; classes: {', '.join(boot.sums.classes)}")
        out.append((key, boot.metrics.index(metric), 1 + boot.sums.classes.index(cls) if cls else 0))
    return out


def _all_keys(boot: MetricBootstrap) -> list[str]:
    return [m for m in boot.metrics] + [f"{m}.{c}" for m in boot.metrics for c in boot.sums.classes]


def patient_intervals(boot: MetricBootstrap) -> pd.DataFrame:
    """Return one row per configuration: its out-of-fold value of every metric and class with the
    patient-bootstrap interval.

    Columns: ``config_id, n_patients, n_images, few_patients`` (fewer validated patients than
    ``min_patients``), ``interval_method`` (``patient_bca`` or ``patient_percentile``), then per
    key (``dice``, ``dice.stomach``, ...) the value, ``<key>_ci_low`` and ``<key>_ci_high``. The
    value is the ratio estimator over all out-of-fold images (for a per-image metric, the mean over
    every validated image; it equals the mean of the fold means when folds hold equal numbers of
    images); the interval is the range of that statistic over patient resamples (``settings``).
    """
    sums, settings = boot.sums, boot.settings
    low, high = boot.interval()
    n_patients = sums.validated.sum(axis=1)
    frame = {
        "config_id": list(sums.config_ids),
        "n_patients": n_patients,
        "n_images": sums.images.sum(axis=1),
        "few_patients": n_patients < settings.min_patients,
        "interval_method": f"patient_{settings.method}",
    }
    for key, m, g in _keys(boot, _all_keys(boot)):
        frame[key] = boot.estimate[:, m, g]
        frame[f"{key}_ci_low"] = low[:, m, g]
        frame[f"{key}_ci_high"] = high[:, m, g]
    return pd.DataFrame(frame)


def fold_intervals(
    trials: pd.DataFrame,
    metrics: Iterable[str],
    *,
    n_folds: int | None = None,
    test_train_ratio: float | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Return the fold-level fallback interval of each configuration without case records.

    Per configuration of ``trials`` (one row per fold trial, as trials.parquet; rows with a
    ``status`` other than "finished" are left out) and metric column: the fold mean and the
    Nadeau-Bengio corrected t interval (:func:`corrected_t_interval`), clipped to the metric's
    range. ``test_train_ratio`` defaults to 1 / (n_folds - 1), ``n_folds`` the sweep's number of
    folds (default: the number of distinct folds in ``trials``). Columns: ``config_id, n_folds,
    interval_method`` ("fold_corrected_t"), then ``<metric>, <metric>_ci_low, <metric>_ci_high``.
    """
    done = finished_fold_rows(trials)
    split = n_folds if n_folds is not None else max(int(trials["fold"].nunique()), 2)
    ratio = _test_train_ratio(split, test_train_ratio)
    rows = []
    for cid, group in done.groupby("config_id", sort=False):
        row = {"config_id": cid, "n_folds": len(group), "interval_method": "fold_corrected_t"}
        for key in metrics:
            values = group[key].dropna().to_numpy(dtype=np.float64)
            row[key] = float(values.mean()) if len(values) else math.nan
            low, high = corrected_t_interval(values, ratio, confidence, metric_range(key.partition(".")[0]))
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = low, high
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Paired comparisons on the same patients


def _select(sums: PatientSums, picks: Sequence[int], keep: np.ndarray | None = None) -> PatientSums:
    """The configurations ``picks`` of ``sums`` (in that order), with only the ``keep`` patients' records."""
    picks = list(picks)

    def part(x):
        x = x[picks]
        return x if keep is None else x * keep.reshape(1, -1, *([1] * (x.ndim - 2)))

    return PatientSums(
        config_ids=tuple(sums.config_ids[i] for i in picks),
        patients=sums.patients,
        classes=sums.classes,
        smooth=sums.smooth,
        empty=sums.empty,
        fold=sums.fold[picks] if keep is None else np.where(keep, sums.fold[picks], -1),
        images=part(sums.images),
        score_sum=part(sums.score_sum),
        score_count=part(sums.score_count),
        counts=part(sums.counts),
        hist_fg=part(sums.hist_fg),
        hist_bg=part(sums.hist_bg),
        prob_sum=part(sums.prob_sum),
        curve_sum=part(sums.curve_sum),
        curve_count=part(sums.curve_count),
        low_bin_exact=sums.low_bin_exact,
    )


def _pair_sums(sums: PatientSums, a: int, b: int, keep: np.ndarray | None = None) -> PatientSums:
    """Configurations a and b of ``sums`` (in that order), with only the ``keep`` patients' records."""
    return _select(sums, [a, b], keep)


def _restricted(boot: MetricBootstrap, a: int, b: int) -> tuple[MetricBootstrap, np.ndarray]:
    """The bootstrap of configurations a and b (in that order) on the patients both validated, on
    the same resamples as ``boot``, and that patient mask."""
    sums = boot.sums
    common = sums.validated[a] & sums.validated[b]
    if np.array_equal(common, sums.validated[a]) and np.array_equal(common, sums.validated[b]):
        pick = [a, b]
        return MetricBootstrap(
            _pair_sums(sums, a, b),
            boot.metrics,
            boot.weights,
            boot.estimate[pick],
            boot.boot[:, pick],
            boot.jack[:, pick],
            boot.settings,
        ), common
    pair = _pair_sums(sums, a, b, common.astype(np.float64))
    return bootstrap_metrics(pair, boot.settings, boot.metrics, boot.weights), common


def _difference_interval(pair: MetricBootstrap, common: np.ndarray) -> tuple[np.ndarray, ...]:
    """Estimate and (low, high) of value(a) - value(b), (metrics, 1 + K), on the pair's resamples."""
    estimate = pair.estimate[0] - pair.estimate[1]
    boot = pair.boot[:, 0] - pair.boot[:, 1]
    jack = pair.jack[:, 0] - pair.jack[:, 1]
    low, high = bootstrap_interval(
        estimate, boot, jack, common[:, None, None], pair.settings.method, pair.settings.confidence
    )
    return estimate, low, high


#: up to this many nonzero differences with ties, the signed-rank null is enumerated (2^n sign sets)
_ENUMERATE_UP_TO = 13


def _signed_rank_enumerated(x: np.ndarray) -> np.ndarray:
    """Exact two-sided signed-rank p-values of rows ``x`` (rows, n), ties and zeros allowed.

    Zeros are dropped (Wilcoxon's rule), tied |d| share their mean rank, and every one of the 2^n
    sign assignments is enumerated: p = 2 min(P(T+ >= t), P(T+ <= t)), capped at 1. This is the
    test ``scipy.stats.wilcoxon`` runs for n <= 13 with ties, where it calls
    ``permutation_test`` row by row (seconds per pair); here one matrix product per row.
    """
    p = np.ones(x.shape[0])
    for i, row in enumerate(x):
        row = row[row != 0]
        n = len(row)
        if n == 0:
            continue
        ranks = stats.rankdata(np.abs(row))
        observed = ranks[row > 0].sum()
        signs = (np.arange(2**n)[:, None] >> np.arange(n)[None]) & 1
        null = signs @ ranks
        tolerance = 1e-9 * ranks.sum()
        upper = np.mean(null >= observed - tolerance)
        lower = np.mean(null <= observed + tolerance)
        p[i] = min(1.0, 2 * min(upper, lower))
    return p


def _wilcoxon_rows(x: np.ndarray) -> np.ndarray:
    """Two-sided signed-rank p-values of complete rows ``x`` (rows, n), each with a nonzero value.

    ``scipy.stats.wilcoxon``'s choice made per row (its "auto" decides once for the whole array):
    the normal approximation above 50 patients; the exact null distribution up to 50 without ties
    or zeros; with ties or zeros the normal approximation above 13 and
    :func:`_signed_rank_enumerated` up to 13.
    """
    n = x.shape[1]
    if n > 50:
        return stats.wilcoxon(x, axis=1, method="asymptotic").pvalue
    magnitude = np.sort(np.abs(x), axis=1)
    tied = (x == 0).any(axis=1) | ((np.diff(magnitude, axis=1) == 0) & (magnitude[:, 1:] > 0)).any(axis=1)
    p = np.empty(x.shape[0])
    if (~tied).any():
        p[~tied] = stats.wilcoxon(x[~tied], axis=1, method="exact").pvalue
    if tied.any():
        small = np.count_nonzero(x[tied], axis=1) <= _ENUMERATE_UP_TO
        rows = np.flatnonzero(tied)
        if small.any():
            p[rows[small]] = _signed_rank_enumerated(x[rows[small]])
        if (~small).any():
            p[rows[~small]] = stats.wilcoxon(x[rows[~small]], axis=1, method="asymptotic").pvalue
    return p


def _wilcoxon(d: np.ndarray) -> np.ndarray:
    """Two-sided Wilcoxon signed-rank p-values of ``d`` (..., P) along the last axis, NaNs left out.

    Zero differences are dropped (Wilcoxon's rule, ``scipy.stats.wilcoxon``'s default); the method
    per row as :func:`_wilcoxon_rows`. Identical configurations (every difference 0) get p = 1; a
    row without a defined difference, NaN.
    """
    d = np.asarray(d, dtype=np.float64)
    flat = d.reshape(-1, d.shape[-1])
    p = np.full(flat.shape[0], np.nan)
    defined = ~np.isnan(flat)
    nonzero = (defined & (flat != 0)).sum(axis=1)
    p[(defined.sum(axis=1) > 0) & (nonzero == 0)] = 1.0
    test = nonzero > 0
    complete = test & defined.all(axis=1)
    if complete.any():
        p[complete] = _wilcoxon_rows(flat[complete])
    for row in np.flatnonzero(test & ~complete):  # rows with NaNs: each its own length
        values = flat[row][defined[row]]
        p[row] = _wilcoxon_rows(values[None])[0]
    return p.reshape(d.shape[:-1])


def _sign_flips(n_patients: int, resamples: int, seed: int) -> tuple[np.ndarray, bool]:
    """(R, P) 0/1 swap indicators and whether they enumerate every assignment (exact test)."""
    if 2**n_patients <= resamples:
        grid = (np.arange(2**n_patients)[:, None] >> np.arange(n_patients)[None]) & 1
        return grid.astype(np.float64), True
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, size=(resamples, n_patients)).astype(np.float64), False


def _permutation(pair: MetricBootstrap, common: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Two-sided sign-flip permutation p-values (metrics, 1 + K) of value(a) - value(b).

    Under the null hypothesis that a and b are exchangeable on each patient, swapping the two
    configurations' records of any set of patients leaves the distribution unchanged. Each
    permutation swaps a random set (or, with 2^P <= resamples, every set) and recomputes the same
    ratio statistic as the interval; written by hand because the statistic needs both configurations'
    per-patient sums swapped together (``scipy.stats.permutation_test``'s paired mode swaps single
    values). p = (1 + #{|T*| >= |T|}) / (R + 1) for random swaps (Phipson & Smyth, Permutation
    p-values should never be zero, Statistical Applications in Genetics and Molecular Biology 9(1),
    2010, DOI 10.2202/1544-6115.1585); #{|T*| >= |T|} / 2^P when exact.
    """
    sums, settings = pair.sums, pair.settings
    idx = np.flatnonzero(common)
    blocks = [block[:, idx] for block in (sums.score_sum, sums.score_count, sums.counts)]
    flips, exact = _sign_flips(len(idx), settings.resamples, settings.seed + 1)
    totals_a, totals_b = [], []
    for block in blocks:
        delta = block[1] - block[0]  # (P, ...): what a gains when patient p is swapped
        shift = (flips @ delta.reshape(len(idx), -1)).reshape(flips.shape[0], *delta.shape[1:])
        totals_a.append(block[0].sum(axis=0) + shift)
        totals_b.append(block[1].sum(axis=0) - shift)
    null = _metric_values(*totals_a, sums.empty, pair.metrics) - _metric_values(*totals_b, sums.empty, pair.metrics)
    tolerance = 1e-12 * np.maximum(np.abs(observed), 1e-300)
    extreme = (np.abs(null) >= np.abs(observed) - tolerance).sum(axis=0)
    if exact:
        return extreme / flips.shape[0]
    return (1.0 + extreme) / (flips.shape[0] + 1.0)


_PAIR_COLUMNS = (
    "metric",
    "config_a",
    "config_b",
    "n_patients",
    "value_a",
    "value_b",
    "difference",
    "ci_low",
    "ci_high",
    "test",
    "p_value",
    "few_patients",
)


def _pair_columns(
    boot: MetricBootstrap, a: int, b: int, keys: list[tuple[str, int, int]], scores: np.ndarray
) -> dict[str, np.ndarray]:
    """Columns (one entry per key) of the paired comparison of configurations a and b, plus the
    positions ``_key``, ``_a``, ``_b`` used to order and group the rows. ``scores``: the two
    configurations' patient scores (2, P, metrics, 1 + K)."""
    settings = boot.settings
    pair, common = _restricted(boot, a, b)
    difference, low, high = _difference_interval(pair, common)
    if settings.paired_test == "wilcoxon":
        d = (scores[0] - scores[1])[common]  # (P_common, metrics, 1 + K)
        p = _wilcoxon(np.moveaxis(d, 0, -1))
    else:
        p = _permutation(pair, common, difference)
    m = np.array([k[1] for k in keys])
    g = np.array([k[2] for k in keys])
    n = int(common.sum())
    return {
        "_key": np.arange(len(keys)),
        "_a": np.full(len(keys), a),
        "_b": np.full(len(keys), b),
        "n_patients": np.full(len(keys), n),
        "value_a": pair.estimate[0, m, g],
        "value_b": pair.estimate[1, m, g],
        "difference": difference[m, g],
        "ci_low": low[m, g],
        "ci_high": high[m, g],
        "p_value": p[m, g],
    }


def _shared_pair_columns(boot: MetricBootstrap, pairs: list[tuple[int, int]], keys, scores) -> dict[str, np.ndarray]:
    """:func:`_pair_columns` of every pair validated on the same patients at once: the differences'
    intervals from the shared resamples and one vectorised Wilcoxon call. Entries pair-major."""
    settings = boot.settings
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    m = np.array([k[1] for k in keys])
    g = np.array([k[2] for k in keys])
    estimate = boot.estimate[a][:, m, g] - boot.estimate[b][:, m, g]  # (pairs, keys)
    diff_boot = boot.boot[:, a][:, :, m, g] - boot.boot[:, b][:, :, m, g]
    diff_jack = boot.jack[:, a][:, :, m, g] - boot.jack[:, b][:, :, m, g]
    validated = boot.sums.validated[a].T[:, :, None]  # (P, pairs, 1): a and b validated the same patients
    low, high = bootstrap_interval(estimate, diff_boot, diff_jack, validated, settings.method, settings.confidence)
    d = scores[a][:, :, m, g] - scores[b][:, :, m, g]  # (pairs, P, keys)
    d = np.where(boot.sums.validated[a][:, :, None], d, np.nan)
    p = _wilcoxon(np.moveaxis(d, 1, -1))  # (pairs, keys)
    n_keys = len(keys)
    return {
        "_key": np.tile(np.arange(n_keys), len(pairs)),
        "_a": np.repeat(a, n_keys),
        "_b": np.repeat(b, n_keys),
        "n_patients": np.repeat(boot.sums.validated[a].sum(axis=1), n_keys),
        "value_a": boot.estimate[a][:, m, g].ravel(),
        "value_b": boot.estimate[b][:, m, g].ravel(),
        "difference": estimate.ravel(),
        "ci_low": low.ravel(),
        "ci_high": high.ravel(),
        "p_value": p.ravel(),
    }


def _pairs_frame(boot: MetricBootstrap, keys, blocks: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """The comparison table of concatenated column blocks, ordered by key, then a, then b."""
    columns = {name: np.concatenate([block[name] for block in blocks]) for name in blocks[0]}
    order = np.lexsort((columns["_b"], columns["_a"], columns["_key"]))
    columns = {name: values[order] for name, values in columns.items()}
    ids = np.array(boot.sums.config_ids, dtype=object)
    names = np.array([k[0] for k in keys], dtype=object)
    frame = pd.DataFrame(
        {
            "metric": names[columns["_key"]],
            "config_a": ids[columns["_a"]],
            "config_b": ids[columns["_b"]],
            **{c: columns[c] for c in _PAIR_COLUMNS if c in columns},
            "test": boot.settings.paired_test,
            "few_patients": columns["n_patients"] < boot.settings.min_patients,
        }
    )
    return frame[list(_PAIR_COLUMNS)]


def compare_pair(boot: MetricBootstrap, a: str, b: str, keys: Iterable[str] = ("dice",)) -> pd.DataFrame:
    """Return the paired comparison of configurations ``a`` and ``b`` (ids or unique prefixes), one
    row per key (``dice``, ``sensitivity.stomach``, ...), on the patients both validated.

    Columns: ``metric, config_a, config_b, n_patients, value_a, value_b, difference`` (a - b, the
    leaderboard statistic on the common patients), ``ci_low, ci_high`` (patient-bootstrap interval
    of the difference: both configurations on the same resampled patients), ``test`` and
    ``p_value`` (``settings.paired_test``: Wilcoxon signed-rank on the patients' own scores, or the
    sign-flip permutation test of the difference), ``few_patients``.
    """
    keys = _keys(boot, keys)
    i, j = boot.sums.index(a), boot.sums.index(b)
    scores = patient_scores(_pair_sums(boot.sums, i, j), boot.metrics)
    return _pairs_frame(boot, keys, [_pair_columns(boot, i, j, keys, scores)])


def compare_all(boot: MetricBootstrap, keys: Iterable[str] = ("dice",)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return every pair's comparison with Holm-adjusted p-values, and the configurations not
    distinguishable from the best.

    First table: :func:`compare_pair`'s columns for every pair (a before b in the order of the
    configurations) and ``p_holm``: Holm's adjustment over all pairs of one key (one family per
    metric). Second table, per key and configuration: ``value``, ``rank`` (1 = best; hd95 lower is
    better), ``best``, ``p_holm_vs_best`` and ``indistinguishable`` (the best itself, and every
    configuration whose adjusted p-value against the best exceeds 1 - confidence).
    """
    keys = _keys(boot, keys)
    scores = patient_scores(boot.sums, boot.metrics)
    pairs = list(itertools.combinations(range(len(boot.sums.config_ids)), 2))
    if not pairs:
        return pd.DataFrame(columns=[*_PAIR_COLUMNS, "p_holm"]), _indistinguishable(boot, keys, None)
    validated = boot.sums.validated
    shared = [(a, b) for a, b in pairs if np.array_equal(validated[a], validated[b])]
    blocks = []
    if boot.settings.paired_test == "wilcoxon" and shared:
        blocks.append(_shared_pair_columns(boot, shared, keys, scores))
        shared_set = set(shared)
        pairs = [pair for pair in pairs if pair not in shared_set]
    blocks += [_pair_columns(boot, a, b, keys, scores[[a, b]]) for a, b in pairs]
    table = _pairs_frame(boot, keys, blocks)
    p_holm = np.empty(len(table))
    key_of_row = table["metric"].to_numpy()
    for key, _, _ in keys:
        rows = np.flatnonzero(key_of_row == key)
        p_holm[rows] = holm(table["p_value"].to_numpy()[rows])
    table["p_holm"] = p_holm
    return table, _indistinguishable(boot, keys, table)


def _rank(values: np.ndarray, metric: str, axis: int) -> np.ndarray:
    """Competition ranks (1 = best, ties share the best rank) along ``axis``; NaN values rank NaN."""
    signed = values if metric in LOWER_IS_BETTER else -values
    return stats.rankdata(signed, method="min", axis=axis, nan_policy="omit")


def _indistinguishable(boot: MetricBootstrap, keys, table: pd.DataFrame | None) -> pd.DataFrame:
    """Per key and configuration: value, rank, best, Holm p-value against the best, indistinguishable."""
    ids = boot.sums.config_ids
    position = {cid: i for i, cid in enumerate(ids)}
    frames = []
    for key, m, g in keys:
        values = boot.estimate[:, m, g]
        if np.all(np.isnan(values)):
            continue
        ranks = _rank(values, boot.metrics[m], axis=0)
        best = int(np.nanargmin(ranks))
        vs_best = np.full(len(ids), np.nan)
        if table is not None:
            part = table[table["metric"] == key]
            a = part["config_a"].map(position).to_numpy()
            b = part["config_b"].map(position).to_numpy()
            with_best = (a == best) | (b == best)
            vs_best[np.where(a == best, b, a)[with_best]] = part["p_holm"].to_numpy()[with_best]
        is_best = np.arange(len(ids)) == best
        frames.append(
            pd.DataFrame(
                {
                    "metric": key,
                    "config_id": list(ids),
                    "value": values,
                    "rank": ranks,
                    "best": is_best,
                    "p_holm_vs_best": np.where(is_best, np.nan, vs_best),
                    "indistinguishable": is_best | (vs_best > boot.settings.alpha),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------------------------------
# Uncertainty of the front and of the ranking, from the shared resamples


def _non_dominated(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-dominated mask along the last axis (both maximised): no other point at least as good on
    both and better on one. Undefined (NaN) points are never on the front and dominate nothing."""
    xi, yi = x[..., :, None], y[..., :, None]
    xj, yj = x[..., None, :], y[..., None, :]
    dominated = ((xj >= xi) & (yj >= yi) & ((xj > xi) | (yj > yi))).any(axis=-1)
    return ~dominated & ~np.isnan(x) & ~np.isnan(y)


def front_probability(boot: MetricBootstrap, x: str = "sensitivity", y: str = "precision") -> pd.DataFrame:
    """Return, per configuration and group (overall and each class), the probability of being on
    the front of (x, y): the share of the shared patient resamples in which no other configuration
    is at least as good on both and better on one.

    Columns: ``config_id, class, <x>, <y>`` (out-of-fold values), ``on_front`` (on the front of
    the values) and ``front_probability``. Lower-is-better metrics are negated before comparing.
    """
    for name in (x, y):
        if name not in boot.metrics:
            raise KeyError(f"metric {name!r} is not in the bootstrap ({', '.join(boot.metrics)})")
    mx, my = boot.metrics.index(x), boot.metrics.index(y)
    sx = -1.0 if x in LOWER_IS_BETTER else 1.0
    sy = -1.0 if y in LOWER_IS_BETTER else 1.0
    # (B, G, C): each resample and group, the configurations' points
    bx = np.moveaxis(sx * boot.boot[:, :, mx, :], 1, 2)
    by = np.moveaxis(sy * boot.boot[:, :, my, :], 1, 2)
    probability = _non_dominated(bx, by).mean(axis=0)  # (G, C)
    on_front = _non_dominated(sx * boot.estimate[:, mx, :].T, sy * boot.estimate[:, my, :].T)
    rows = []
    for g, group in enumerate(boot.groups):
        for c, cid in enumerate(boot.sums.config_ids):
            rows.append(
                {
                    "config_id": cid,
                    "class": group,
                    x: boot.estimate[c, mx, g],
                    y: boot.estimate[c, my, g],
                    "on_front": bool(on_front[g, c]),
                    "front_probability": probability[g, c],
                }
            )
    return pd.DataFrame(rows)


def rank_distribution(boot: MetricBootstrap, keys: Iterable[str] = ("dice",)) -> pd.DataFrame:
    """Return the bootstrap distribution of each configuration's rank per key (challengeR's blob
    plot: Wiesenfarth et al., Methods and open-source toolkit for analyzing and visualizing
    challenge results, Scientific Reports 11, 2021, DOI 10.1038/s41598-021-82017-6).

    Long table: ``metric, config_id, rank, probability`` (share of resamples in which the
    configuration has that rank, 1 = best, ties sharing the best rank) for every rank that occurs,
    with ``point_rank`` (rank of the out-of-fold values) and ``mean_rank``.
    """
    rows = []
    ids = boot.sums.config_ids
    for key, m, g in _keys(boot, keys):
        metric = boot.metrics[m]
        ranks = _rank(boot.boot[:, :, m, g], metric, axis=1)  # (B, C)
        point = _rank(boot.estimate[:, m, g], metric, axis=0)
        n = len(ids)
        for c, cid in enumerate(ids):
            r = ranks[:, c]
            r = r[~np.isnan(r)].astype(np.int64)
            if len(r) == 0:
                continue
            share = np.bincount(r, minlength=n + 1) / len(r)
            for rank in np.flatnonzero(share):
                rows.append(
                    {
                        "metric": key,
                        "config_id": cid,
                        "rank": int(rank),
                        "probability": share[rank],
                        "point_rank": point[c],
                        "mean_rank": r.mean(),
                    }
                )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Threshold curves, average precision, calibration, matched operating points

#: the two kinds of curve: per-image means (the leaderboard's sensitivity and precision) and pooled pixel counts
CURVES = ("per_image", "pooled")
_CURVE_COLUMNS = {"per_image": ("sensitivity", "precision"), "pooled": ("pooled_sensitivity", "pooled_precision")}


def average_precision(sensitivity: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Return the average precision of curves over ascending thresholds, along the last axis.

    The last point is "nothing predicted" (sensitivity 0 for pooled counts). Non-interpolated, as
    scikit-learn's ``average_precision_score``: ``AP = sum_t (R_t - R_{t+1}) P_t``, each recall step
    weighted by the precision at the threshold that reaches it (linear interpolation between PR
    points overstates the area: Davis & Goadrich, The relationship between precision-recall and
    ROC curves, ICML 2006, DOI 10.1145/1143844.1143874). On a threshold grid this is the AP of the
    grid's operating points, a lower bound of the per-pixel AP's step area.
    """
    sensitivity = np.asarray(sensitivity, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    steps = sensitivity[..., :-1] - sensitivity[..., 1:]
    return (steps * np.nan_to_num(precision[..., :-1])).sum(axis=-1)


def expected_calibration_error(
    hist_fg: np.ndarray, hist_bg: np.ndarray, prob_sum: np.ndarray | None = None
) -> np.ndarray:
    """Return the expected calibration error of binned probabilities, along the last axis (bins).

    ``ECE = sum_b (n_b / N) |o_b - c_b|`` with n_b the pixels of bin b, o_b the share of them that
    are foreground and c_b their mean predicted probability (Naeini, Cooper & Hauskrecht, Obtaining
    well calibrated probabilities using Bayesian binning, AAAI 2015; Guo et al., On calibration of
    modern neural networks, ICML 2017), i.e. ``sum_b |fg_b - sum of p in b| / N``. ``prob_sum``:
    the per-bin sums of p (default: the bin midpoints times the pixels, see
    :func:`calibration_error_bound`). Over all pixels of an image ECE is dominated by the
    background; read it with the reliability curve (Mehrtash et al., Confidence calibration and
    predictive uncertainty estimation for deep medical image segmentation, IEEE TMI 39(12), 2020,
    DOI 10.1109/TMI.2020.3006437).
    """
    fg = np.asarray(hist_fg, dtype=np.float64)
    bg = np.asarray(hist_bg, dtype=np.float64)
    pixels = fg + bg
    if prob_sum is None:
        n_bins = fg.shape[-1]
        prob_sum = pixels * (np.arange(n_bins) + 0.5) / n_bins
    total = pixels.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.abs(fg - prob_sum).sum(axis=-1) / np.where(total > 0, total, 1), np.nan)


def calibration_error_bound(hist_fg: np.ndarray, hist_bg: np.ndarray, low_bin_exact: bool) -> np.ndarray:
    """Return how far :func:`expected_calibration_error` can be from the ECE of the exact bin means.

    A bin whose mean probability is taken as its midpoint is off by at most half a bin width, so
    the ECE by at most ``sum over those bins of n_b / (2 n N)``. With the recorded sum of bin 0
    (``prob_sum_low``) only bins 1..n-1 count, which hold few pixels in a segmentation; without it
    the bound is 1 / (2 n) (0.025 at 20 bins), about the size of a typical pixel ECE.
    """
    fg = np.asarray(hist_fg, dtype=np.float64)
    pixels = fg + np.asarray(hist_bg, dtype=np.float64)
    approximate = pixels[..., 1:] if low_bin_exact else pixels
    total = pixels.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = approximate.sum(axis=-1) / np.where(total > 0, total, 1)
    return np.where(total > 0, share / (2 * fg.shape[-1]), np.nan)


def _with_overall(per_class: np.ndarray, class_axis: int) -> np.ndarray:
    """Prepend the mean over classes (NaN-aware) along ``class_axis``: groups = (overall, *classes)."""
    overall = np.expand_dims(_nanmean(per_class, axis=class_axis), class_axis)
    return np.concatenate([overall, per_class], axis=class_axis)


def _curve_values(curve_sum, curve_count, fg, bg, prob, empty: str) -> dict[str, np.ndarray]:
    """Curves (..., 1 + K, T) and summaries (..., 1 + K) from totals: ``curve_sum``/``curve_count``
    (..., K, T, 2), histograms ``fg``/``bg``/``prob`` (..., K, n) (``prob`` may be None)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        per_image = np.where(curve_count > 0, curve_sum / np.where(curve_count > 0, curve_count, 1), np.nan)
    zero = np.zeros((*fg.shape[:-1], 1))
    tp = np.concatenate([np.cumsum(fg[..., ::-1], axis=-1)[..., ::-1], zero], axis=-1)
    fp = np.concatenate([np.cumsum(bg[..., ::-1], axis=-1)[..., ::-1], zero], axis=-1)
    pooled = confusion_scores(
        tp, fp, tp[..., :1] - tp, fp[..., :1] - fp, 0.0, empty, names=("sensitivity", "precision")
    )
    area = fg.sum(axis=-1)
    ap = np.where(area > 0, average_precision(pooled["sensitivity"], pooled["precision"]), np.nan)
    ece = expected_calibration_error(fg, bg, prob)
    k_axis = fg.ndim - 2
    return {
        "sensitivity": _with_overall(per_image[..., 0], k_axis),
        "precision": _with_overall(per_image[..., 1], k_axis),
        "pooled_sensitivity": _with_overall(pooled["sensitivity"], k_axis),
        "pooled_precision": _with_overall(pooled["precision"], k_axis),
        "average_precision": _with_overall(ap, k_axis),
        "calibration_error": _with_overall(ece, k_axis),
    }


def _matched(sensitivity: np.ndarray, precision: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision at each target sensitivity and the threshold index giving it: (S, ...) each.

    Among the grid thresholds (the last, "nothing predicted" point excluded) whose sensitivity
    reaches the target, the most precise one (the higher threshold on ties): an operating point a
    user can set, where interpolating between grid points would not be one (Davis & Goadrich 2006).
    """
    sens = sensitivity[..., :-1]
    prec = np.nan_to_num(precision[..., :-1], nan=-np.inf)
    reach = sens[None] >= np.asarray(targets).reshape(-1, *([1] * sens.ndim)) - 1e-12
    candidate = np.where(reach, prec[None], -np.inf)
    # argmax of the reversed axis: the last (highest) threshold among equal maxima
    last = candidate.shape[-1] - 1 - np.argmax(candidate[..., ::-1], axis=-1)
    value = np.take_along_axis(candidate, last[..., None], axis=-1)[..., 0]
    found = np.isfinite(value)
    return np.where(found, value, np.nan), np.where(found, last, -1)


@dataclass(frozen=True)
class CurveBootstrap:
    """Threshold curves, AP, calibration error and precision at matched sensitivity of every
    configuration, with patient-bootstrap intervals (the same resamples as :class:`MetricBootstrap`
    when given the same weights). Curves are (C, 1 + K, T) with T = bins + 1 (the last point:
    nothing predicted); summaries (C, 1 + K); matched precision (C, targets, 1 + K)."""

    sums: PatientSums
    settings: EvidenceSettings
    estimate: dict[str, np.ndarray]
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    targets: np.ndarray
    matched: dict[str, dict[str, np.ndarray]]  # curve -> estimate, threshold, boot (B, ...), jack (P, ...)

    @property
    def groups(self) -> tuple[str, ...]:
        return (OVERALL, *self.sums.classes)


def bootstrap_curves(
    sums: PatientSums, settings: EvidenceSettings | None = None, weights: np.ndarray | None = None
) -> CurveBootstrap:
    """Return every configuration's threshold curves and their summaries with intervals.

    One configuration at a time (its resampled histograms are the memory-heavy part), on the shared
    patient resamples ``weights`` (default: :func:`resample_weights` of ``settings``, the same as
    :func:`bootstrap_metrics` draws). Overall curves are the mean over classes at each threshold
    (one threshold for every class, as a deployed model would use).
    """
    settings = settings or EvidenceSettings()
    if weights is None:
        weights = resample_weights(len(sums.patients), settings.resamples, settings.seed)
    targets = np.asarray(settings.matched_sensitivity, dtype=np.float64)
    names = (
        "sensitivity",
        "precision",
        "pooled_sensitivity",
        "pooled_precision",
        "average_precision",
        "calibration_error",
    )
    estimate = {n: [] for n in names}
    low = {n: [] for n in names}
    high = {n: [] for n in names}
    matched = {curve: {"estimate": [], "threshold": [], "boot": [], "jack": []} for curve in CURVES}
    for c in range(len(sums.config_ids)):
        blocks = [sums.curve_sum[c], sums.curve_count[c], sums.hist_fg[c], sums.hist_bg[c], sums.prob_sum[c]]
        total = [b.sum(axis=0) for b in blocks]
        boot_total = [_weighted_totals(b[None], weights)[:, 0] for b in blocks]
        jack_total = [_leave_one_out_totals(b[None])[:, 0] for b in blocks]
        est = _curve_values(*total, sums.empty)
        bv = _curve_values(*boot_total, sums.empty)
        jv = _curve_values(*jack_total, sums.empty)
        mask = sums.validated[c]
        for name in names:
            lo, hi = bootstrap_interval(
                est[name],
                bv[name],
                jv[name],
                mask.reshape(-1, *([1] * est[name].ndim)),
                settings.method,
                settings.confidence,
            )
            estimate[name].append(est[name])
            low[name].append(lo)
            high[name].append(hi)
        for curve, (xs, ys) in _CURVE_COLUMNS.items():
            value, threshold = _matched(est[xs], est[ys], targets)
            matched[curve]["estimate"].append(value)
            matched[curve]["threshold"].append(threshold)
            matched[curve]["boot"].append(_matched(bv[xs], bv[ys], targets)[0])
            matched[curve]["jack"].append(_matched(jv[xs], jv[ys], targets)[0])
    stack = {n: np.stack(v) for n, v in estimate.items()}
    return CurveBootstrap(
        sums=sums,
        settings=settings,
        estimate=stack,
        low={n: np.stack(v) for n, v in low.items()},
        high={n: np.stack(v) for n, v in high.items()},
        targets=targets,
        matched={
            curve: {
                "estimate": np.stack(d["estimate"]),
                "threshold": np.stack(d["threshold"]),
                "boot": np.stack(d["boot"], axis=2),
                "jack": np.stack(d["jack"], axis=2),
            }
            for curve, d in matched.items()
        },
    )  # matched boot (S, B, C, G), jack (S, P, C, G)


def threshold_curves(curves: CurveBootstrap) -> pd.DataFrame:
    """Return the sensitivity-precision curves: one row per configuration, group and grid threshold.

    Columns: ``config_id, class, threshold``, then ``sensitivity, precision`` (per-image means, the
    leaderboard's metrics, at that threshold) and ``pooled_sensitivity, pooled_precision`` (pixel
    counts summed), each with ``_ci_low``/``_ci_high`` (patient bootstrap). Counts at grid
    thresholds k / bins are exact (CASES_SCHEMA).
    """
    sums = curves.sums
    thresholds = sums.thresholds
    frames = []
    for c, cid in enumerate(sums.config_ids):
        for g, group in enumerate(curves.groups):
            part = {"config_id": cid, "class": group, "threshold": thresholds}
            for name in ("sensitivity", "precision", "pooled_sensitivity", "pooled_precision"):
                part[name] = curves.estimate[name][c, g, :-1]
                part[f"{name}_ci_low"] = curves.low[name][c, g, :-1]
                part[f"{name}_ci_high"] = curves.high[name][c, g, :-1]
            frames.append(pd.DataFrame(part))
    return pd.concat(frames, ignore_index=True)


def curve_summary(curves: CurveBootstrap) -> pd.DataFrame:
    """Return per configuration and group the average precision (pooled pixel counts on the
    threshold grid, :func:`average_precision`) and the expected calibration error
    (:func:`expected_calibration_error`), each with its patient-bootstrap interval, and
    ``calibration_error_bound`` (:func:`calibration_error_bound`: how far the ECE can be from the
    exact bin means' ECE). Overall values are the mean over classes."""
    sums = curves.sums
    fg, bg = sums.hist_fg.sum(axis=1), sums.hist_bg.sum(axis=1)  # (C, K, n)
    bound = _with_overall(calibration_error_bound(fg, bg, sums.low_bin_exact), 1)
    rows = []
    for c, cid in enumerate(sums.config_ids):
        for g, group in enumerate(curves.groups):
            row = {"config_id": cid, "class": group}
            for name in ("average_precision", "calibration_error"):
                row[name] = curves.estimate[name][c, g]
                row[f"{name}_ci_low"] = curves.low[name][c, g]
                row[f"{name}_ci_high"] = curves.high[name][c, g]
            row["calibration_error_bound"] = bound[c, g]
            rows.append(row)
    return pd.DataFrame(rows)


def reliability_curves(sums: PatientSums) -> pd.DataFrame:
    """Return the reliability curve of every configuration and group: one row per probability bin.

    Columns: ``config_id, class, bin, bin_low, bin_high, confidence`` (mean predicted probability
    of the bin's pixels: the bin midpoint, and for bin 0 the recorded mean where the records hold
    ``prob_sum_low``), ``observed`` (share of the bin's pixels that are foreground) and
    ``pixels``. The overall curve pools the classes' pixels.
    """
    n_bins = sums.n_bins

    def with_pooled(block):  # (C, P, K, n) -> (C, 1 + K, n): all classes' pixels, then each class
        per_class = block.sum(axis=1)
        return np.concatenate([per_class.sum(axis=1, keepdims=True), per_class], axis=1)

    fg, bg, prob = with_pooled(sums.hist_fg), with_pooled(sums.hist_bg), with_pooled(sums.prob_sum)
    pixels = fg + bg
    midpoint = np.broadcast_to((np.arange(n_bins) + 0.5) / n_bins, pixels.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.where(pixels > 0, fg / np.where(pixels > 0, pixels, 1), np.nan)
        confidence = np.where(pixels > 0, prob / np.where(pixels > 0, pixels, 1), midpoint)
    frames = []
    groups = (OVERALL, *sums.classes)
    for c, cid in enumerate(sums.config_ids):
        for g, group in enumerate(groups):
            frames.append(
                pd.DataFrame(
                    {
                        "config_id": cid,
                        "class": group,
                        "bin": np.arange(n_bins),
                        "bin_low": np.arange(n_bins) / n_bins,
                        "bin_high": (np.arange(n_bins) + 1) / n_bins,
                        "confidence": confidence[c, g],
                        "observed": observed[c, g],
                        "pixels": pixels[c, g].astype(np.int64),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def matched_precision(curves: CurveBootstrap, curve: str = "per_image") -> pd.DataFrame:
    """Return each configuration's precision at matched sensitivity, with intervals and the
    difference to the most precise configuration.

    For each target sensitivity of ``settings.matched_sensitivity`` and group: the most precise
    grid threshold whose sensitivity reaches the target (:func:`_matched`; re-chosen on every
    resample, so the interval includes the choice of the threshold), its precision with the
    patient-bootstrap interval, and ``difference`` = this precision - the best configuration's, with
    the paired interval on the same resamples. A difference interval that excludes 0 says the
    loss changes precision beyond what moving the threshold does. ``curve``: "per_image" (the
    leaderboard's sensitivity and precision) or "pooled".
    """
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {CURVES} but got {curve!r}")
    sums, settings = curves.sums, curves.settings
    d = curves.matched[curve]
    est, thr, boot, jack = d["estimate"], d["threshold"], d["boot"], d["jack"]  # est (C, S, G); boot (S, B, C, G)
    boot = np.moveaxis(boot, 0, 2)  # (B, C, S, G)
    jack = np.moveaxis(jack, 0, 2)  # (P, C, S, G)
    validated = sums.validated.T[:, :, None, None]  # (P, C, 1, 1)
    low, high = bootstrap_interval(est, boot, jack, validated, settings.method, settings.confidence)
    best = np.argmax(np.nan_to_num(est, nan=-np.inf), axis=0)  # (S, G)
    s_idx, g_idx = np.indices(best.shape)
    diff_est = est - est[best, s_idx, g_idx][None]
    diff_boot = boot - boot[:, best, s_idx, g_idx][:, None]
    diff_jack = jack - jack[:, best, s_idx, g_idx][:, None]
    both = validated & sums.validated.T[:, best][:, None]  # (P, C, S, G)
    dlow, dhigh = bootstrap_interval(diff_est, diff_boot, diff_jack, both, settings.method, settings.confidence)
    x_name, y_name = _CURVE_COLUMNS[curve]
    thresholds = sums.thresholds
    rows = []
    for c, cid in enumerate(sums.config_ids):
        for s, target in enumerate(curves.targets):
            for g, group in enumerate(curves.groups):
                t = thr[c, s, g]
                rows.append(
                    {
                        "config_id": cid,
                        "class": group,
                        "curve": curve,
                        "target_sensitivity": target,
                        "threshold": thresholds[t] if t >= 0 else np.nan,
                        x_name: curves.estimate[x_name][c, g, t] if t >= 0 else np.nan,
                        y_name: est[c, s, g],
                        f"{y_name}_ci_low": low[c, s, g],
                        f"{y_name}_ci_high": high[c, s, g],
                        "best": bool(best[s, g] == c),
                        "difference": diff_est[c, s, g],
                        "difference_ci_low": dlow[c, s, g],
                        "difference_ci_high": dhigh[c, s, g],
                    }
                )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class OperatingPoint:
    """A (configuration, threshold) pair chosen under a floor, or ``found`` False with the reason."""

    found: bool
    reason: str
    config_id: str | None = None
    group: str = OVERALL
    curve: str = "per_image"
    threshold: float = math.nan
    sensitivity: float = math.nan
    sensitivity_ci_low: float = math.nan
    sensitivity_ci_high: float = math.nan
    precision: float = math.nan
    precision_ci_low: float = math.nan
    precision_ci_high: float = math.nan


def operating_point(
    curves: CurveBootstrap,
    *,
    min_sensitivity: float | None = None,
    min_precision: float | None = None,
    group: str = OVERALL,
    curve: str = "per_image",
) -> OperatingPoint:
    """Return the best (configuration, threshold) pair whose interval clears a floor, or why none does.

    With ``min_sensitivity``: among all configurations and grid thresholds whose sensitivity's
    lower interval bound reaches the floor, the most precise (point estimate; ties: the more
    sensitive, then the higher threshold). With ``min_precision``: the reverse (the most sensitive
    pair whose precision's lower bound reaches the floor). The lower bound is that of the
    two-sided ``confidence`` interval, so the floor holds with one-sided confidence
    (1 + confidence) / 2 for the chosen pair; choosing among many pairs is not corrected for.
    """
    if (min_sensitivity is None) == (min_precision is None):
        raise ValueError("give exactly one of min_sensitivity and min_precision")
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {CURVES} but got {curve!r}")
    if group not in curves.groups:
        raise KeyError(f"unknown class {group!r}; known: {', '.join(curves.groups)}")
    g = curves.groups.index(group)
    x_name, y_name = _CURVE_COLUMNS[curve]
    sens, prec = curves.estimate[x_name][:, g, :-1], curves.estimate[y_name][:, g, :-1]  # (C, n)
    sens_low, prec_low = curves.low[x_name][:, g, :-1], curves.low[y_name][:, g, :-1]
    if min_sensitivity is not None:
        floor, bound, goal, other, what = min_sensitivity, sens_low, prec, sens, "sensitivity"
    else:
        floor, bound, goal, other, what = min_precision, prec_low, sens, prec, "precision"
    feasible = np.nan_to_num(bound, nan=-np.inf) >= floor
    if not feasible.any():
        c, t = np.unravel_index(np.argmax(np.nan_to_num(bound, nan=-np.inf)), bound.shape)
        reason = (
            f"no configuration and threshold has a {what} lower bound >= {floor:g}; the highest is "
            f"{bound[c, t]:.4f} ({curves.sums.config_ids[c]} at threshold {curves.sums.thresholds[t]:g})"
        )
        return OperatingPoint(found=False, reason=reason, group=group, curve=curve)
    thresholds = np.broadcast_to(curves.sums.thresholds, goal.shape)
    # lexicographic: goal, then the other metric, then the threshold; infeasible pairs last
    order = np.lexsort(
        (thresholds[feasible], np.nan_to_num(other[feasible], nan=-np.inf), np.nan_to_num(goal[feasible], nan=-np.inf))
    )
    c, t = (idx[order[-1]] for idx in np.nonzero(feasible))
    return OperatingPoint(
        found=True,
        reason=f"most {'precise' if what == 'sensitivity' else 'sensitive'} pair with {what} lower bound >= {floor:g}",
        config_id=curves.sums.config_ids[c],
        group=group,
        curve=curve,
        threshold=float(curves.sums.thresholds[t]),
        sensitivity=float(sens[c, t]),
        sensitivity_ci_low=float(sens_low[c, t]),
        sensitivity_ci_high=float(curves.high[x_name][c, g, t]),
        precision=float(prec[c, t]),
        precision_ci_low=float(prec_low[c, t]),
        precision_ci_high=float(curves.high[y_name][c, g, t]),
    )


# --------------------------------------------------------------------------------------------------
# One call per consumer: the leaderboard, `sweeper compare`, `sweeper pareto` and the report


def _as_sums(cases, smooth: float, empty: str, config_ids: Sequence[str] | None = None) -> PatientSums:
    """Per-patient sums of ``cases``: a ``cases.parquet`` path, records (Arrow or pandas) or sums."""
    if isinstance(cases, PatientSums):
        return cases
    if isinstance(cases, (pa.Table, pd.DataFrame)):
        return patient_sums(cases, smooth=smooth, empty=empty, config_ids=config_ids)
    return load_patient_sums(cases, smooth=smooth, empty=empty, config_ids=config_ids)


def _covered(sums: PatientSums, trials: pd.DataFrame | None) -> list[str]:
    """Configurations whose case records cover every finished fold trial (all, without ``trials``)."""
    if trials is None:
        return list(sums.config_ids)
    done = finished_fold_rows(trials)
    covered = []
    for c, cid in enumerate(sums.config_ids):
        folds = set(done.loc[done["config_id"] == cid, "fold"].astype(int))
        if folds <= {int(f) for f in np.unique(sums.fold[c]) if f >= 0}:
            covered.append(cid)
    return covered


def interval_table(
    cases,
    settings: EvidenceSettings | None = None,
    *,
    trials: pd.DataFrame | None = None,
    metrics: Iterable[str] | None = None,
    n_folds: int | None = None,
    smooth: float = 1.0,
    empty: EmptyRule = "one",
) -> pd.DataFrame:
    """Return every configuration's value and interval of every metric, saying which interval it is.

    Configurations whose case records cover all their finished folds get the patient bootstrap
    (:func:`patient_intervals`, ``interval_method`` ``patient_bca`` / ``patient_percentile``);
    the others of ``trials`` (one row per fold trial, as trials.parquet) get the fold-level
    Nadeau-Bengio interval of the metric columns they have (:func:`fold_intervals`,
    ``fold_corrected_t``). ``cases``: the ``cases.parquet`` path, records, or per-patient sums
    (None: no records at all). The value column ``<key>`` is the out-of-fold value on patient rows
    and the fold mean on fallback rows, each the centre its interval is about.
    """
    settings = settings or EvidenceSettings()
    frames = []
    covered: list[str] = []
    if cases is not None:
        sums = _as_sums(cases, smooth, empty)
        covered = _covered(sums, trials)
        if covered:
            sub = sums if len(covered) == len(sums.config_ids) else _select(sums, [sums.index(c) for c in covered])
            frames.append(patient_intervals(bootstrap_metrics(sub, settings, metrics)))
    if trials is not None:
        rest = trials[~trials["config_id"].isin(covered)]
        if len(rest):
            keys = [
                c
                for c in rest.columns
                if c.partition(".")[0] in METRICS and not c.endswith(("_std", "_ci_low", "_ci_high"))
            ]
            if metrics is not None:
                keys = [k for k in keys if k.partition(".")[0] in set(metrics)]
            frames.append(fold_intervals(rest, keys, n_folds=n_folds, confidence=settings.confidence))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _resolve(names: Sequence[str], key: str) -> str:
    matches = [n for n in names if n == key] or [n for n in names if n.startswith(key)]
    if len(matches) != 1:
        raise KeyError(f"{key!r} matches {len(matches)} configurations")
    return matches[0]


def _fold_comparison(
    trials: pd.DataFrame, a: str, b: str, keys: Sequence[str], n_folds: int | None, confidence: float
) -> pd.DataFrame:
    """The fold-level fallback of a paired comparison: Nadeau-Bengio's corrected paired t on the
    folds both configurations finished."""
    done = finished_fold_rows(trials)
    left = done[done["config_id"] == a].set_index("fold")
    right = done[done["config_id"] == b].set_index("fold")
    folds = sorted(set(left.index) & set(right.index))
    split = n_folds if n_folds is not None else max(int(trials["fold"].nunique()), 2)
    rows = []
    for key in keys:
        va, vb = left.loc[folds, key].to_numpy(float), right.loc[folds, key].to_numpy(float)
        test = corrected_paired_t(va, vb, 1.0 / (split - 1), confidence)
        rows.append(
            {
                "metric": key,
                "config_a": a,
                "config_b": b,
                "n_patients": np.nan,
                "value_a": float(np.nanmean(va)) if len(va) else np.nan,
                "value_b": float(np.nanmean(vb)) if len(vb) else np.nan,
                "difference": test["difference"],
                "ci_low": test["ci_low"],
                "ci_high": test["ci_high"],
                "test": "fold_corrected_t",
                "p_value": test["p_value"],
                "few_patients": False,
                "n_folds": len(folds),
            }
        )
    return pd.DataFrame(rows)


def comparison_table(
    cases,
    a: str,
    b: str,
    keys: Iterable[str] = ("dice",),
    settings: EvidenceSettings | None = None,
    *,
    trials: pd.DataFrame | None = None,
    n_folds: int | None = None,
    smooth: float = 1.0,
    empty: EmptyRule = "one",
) -> pd.DataFrame:
    """Return ``sweeper compare SWEEP A B``'s table: the patient-level paired comparison
    (:func:`compare_pair`) when both configurations' case records cover their finished folds, else
    the fold-level fallback (``test`` "fold_corrected_t": Nadeau-Bengio's corrected paired t on the
    common finished folds of ``trials``)."""
    settings = settings or EvidenceSettings()
    keys = list(keys)
    if cases is not None:
        sums = _as_sums(cases, smooth, empty)
        covered = _covered(sums, trials)
        try:
            ia, ib = _resolve(sums.config_ids, a), _resolve(sums.config_ids, b)
        except KeyError:  # a configuration without records: the fold fallback below
            ia = ib = None
        if ia in covered and ib in covered:
            picked = _select(sums, [sums.index(ia), sums.index(ib)])
            metrics = sorted({k.partition(".")[0] for k in keys})
            return compare_pair(bootstrap_metrics(picked, settings, metrics), ia, ib, keys)
    if trials is None:
        raise ValueError(f"no case records of {a!r} and {b!r} and no fold table to fall back on")
    ids = sorted(set(trials["config_id"]))
    return _fold_comparison(trials, _resolve(ids, a), _resolve(ids, b), keys, n_folds, settings.confidence)


def comparison_all_tables(
    cases,
    keys: Iterable[str] = ("dice",),
    settings: EvidenceSettings | None = None,
    *,
    smooth: float = 1.0,
    empty: EmptyRule = "one",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``sweeper compare SWEEP --all``'s tables (:func:`compare_all`) over the configurations
    with case records: every pair with Holm-adjusted p-values, and the set not distinguishable
    from the best."""
    keys = list(keys)
    metrics = sorted({k.partition(".")[0] for k in keys})
    return compare_all(bootstrap_metrics(_as_sums(cases, smooth, empty), settings, metrics), keys)


def pareto_tables(
    cases,
    settings: EvidenceSettings | None = None,
    *,
    x: str = "sensitivity",
    y: str = "precision",
    min_sensitivity: float | None = None,
    min_precision: float | None = None,
    group: str = OVERALL,
    smooth: float = 1.0,
    empty: EmptyRule = "one",
) -> tuple[pd.DataFrame, OperatingPoint | None]:
    """Return ``sweeper pareto``'s evidence: the front probabilities (:func:`front_probability`)
    and, with a floor, the operating point (:func:`operating_point`; curves of the per-image
    metrics, or of the pooled ones when x is ``pooled_sensitivity``)."""
    settings = settings or EvidenceSettings()
    sums = _as_sums(cases, smooth, empty)
    weights = resample_weights(len(sums.patients), settings.resamples, settings.seed)
    front = front_probability(bootstrap_metrics(sums, settings, [x, y], weights), x, y)
    if min_sensitivity is None and min_precision is None:
        return front, None
    curve = "pooled" if x.startswith("pooled_") else "per_image"
    point = operating_point(
        bootstrap_curves(sums, settings, weights),
        min_sensitivity=min_sensitivity,
        min_precision=min_precision,
        group=group,
        curve=curve,
    )
    return front, point


def report_tables(
    cases,
    settings: EvidenceSettings | None = None,
    *,
    keys: Iterable[str] = ("dice",),
    x: str = "sensitivity",
    y: str = "precision",
    smooth: float = 1.0,
    empty: EmptyRule = "one",
) -> dict[str, pd.DataFrame]:
    """Return every table the report draws, all from one set of patient resamples: ``intervals``,
    ``front``, ``ranks`` (of ``keys``), ``comparisons`` and ``indistinguishable`` (compare-all of
    ``keys``), ``curves``, ``curve_summary``, ``reliability``, ``matched`` (per-image and pooled)."""
    settings = settings or EvidenceSettings()
    sums = _as_sums(cases, smooth, empty)
    weights = resample_weights(len(sums.patients), settings.resamples, settings.seed)
    boot = bootstrap_metrics(sums, settings, weights=weights)
    curves = bootstrap_curves(sums, settings, weights)
    keys = list(keys)
    comparisons, indistinguishable = compare_all(boot, keys)
    return {
        "intervals": patient_intervals(boot),
        "front": front_probability(boot, x, y),
        "ranks": rank_distribution(boot, keys),
        "comparisons": comparisons,
        "indistinguishable": indistinguishable,
        "curves": threshold_curves(curves),
        "curve_summary": curve_summary(curves),
        "reliability": reliability_curves(sums),
        "matched": pd.concat([matched_precision(curves, c) for c in CURVES], ignore_index=True),
    }
