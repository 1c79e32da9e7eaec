"""Time of the patient-level statistics and size of cases.parquet at the full UW-Madison scale.

Run on one core: ``taskset -c 0 .venv/bin/python benchmarks/statistics_simulation.py`` (the script also pins
BLAS and OpenMP to one thread). It writes synthetic out-of-fold case records for 50 configurations
x 85 patients x 38,496 slices x 3 classes (274 scans of 144 or 80 slices, 5 patient-grouped
folds) into a temporary ``cases.parquet`` through :func:`sweeper.cases.append_cases`, then times,
with the default :class:`~sweeper.evidence.EvidenceSettings` (2000 resamples, BCa):

- reading the records and summing them per patient, one configuration at a time;
- every configuration's interval of every metric and class (``patient_intervals``);
- the probability of being on the (sensitivity, precision) front, overall and per class;
- the compare-all table (every pair, Holm-adjusted Wilcoxon p-values, the set not distinguishable
  from the best) for dice, sensitivity and precision;
- and, beyond the issue's target, the threshold curves with AP, calibration, precision at matched
  sensitivity, the operating point and the rank distributions.

It prints the size of cases.parquet per configuration (target <= 5 MB) with and without the
optional probability sum of bin 0 (``prob_sum_low``). The synthetic records are deliberately less compressible than
a trained model's: foreground probabilities spread over the upper half of the bins (a trained
model puts most in the last bin) and a band of background pixels along every organ border spread
over the lower half. Options: ``--configs`` (default 50), ``--bins`` (default 20), ``--keep DIR``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from sweeper.cases import append_cases
from sweeper.evidence import (
    EvidenceSettings,
    bootstrap_curves,
    bootstrap_metrics,
    compare_all,
    curve_summary,
    front_probability,
    load_patient_sums,
    matched_precision,
    operating_point,
    patient_intervals,
    rank_distribution,
    resample_weights,
    threshold_curves,
)

CLASSES = ("large_bowel", "small_bowel", "stomach")
PIXELS = 224 * 224
PATIENTS, SCANS, SLICES, FOLDS = 85, 274, 38_496, 5


def layout(seed: int = 0) -> dict[str, np.ndarray]:
    """Patients, scans (144 or 80 slices, summing to 38,496), slices and folds of the data set."""
    rng = np.random.default_rng(seed)
    long_scans = (SLICES - 80 * SCANS) // 64  # 144 a + 80 (SCANS - a) = SLICES
    per_scan = np.r_[np.full(long_scans, 144), np.full(SCANS - long_scans, 80)]
    rng.shuffle(per_scan)
    owner = np.sort(np.r_[np.arange(PATIENTS), rng.integers(0, PATIENTS, SCANS - PATIENTS)])
    fold_of_patient = rng.permutation(np.arange(PATIENTS) % FOLDS)
    scan = np.repeat(np.arange(SCANS), per_scan)
    patient = owner[scan]
    return {
        "patient": patient,
        "scan": scan,
        "slice": np.concatenate([np.arange(n) for n in per_scan]),
        "fold": fold_of_patient[patient],
        "per_scan": per_scan,
    }


def synthetic_cases(config_id: str, seed: int, n_bins: int = 20, prob_sum: bool = True) -> pa.Table:
    """Case records of one configuration: organs over a contiguous range of each scan (about the
    UW-Madison shares of slices with each organ), a patient effect on sensitivity, false positives
    on and off the organs; ``skill`` and ``shift`` vary with ``seed`` across configurations."""
    lay = layout()
    rng = np.random.default_rng(seed)
    skill, shift = rng.normal(0, 0.3), rng.normal(0, 0.3)
    n, k = len(lay["slice"]), len(CLASSES)
    rows = n * k
    position = lay["slice"] / lay["per_scan"][lay["scan"]]
    offset = rng.normal(0, 0.05, (SCANS, k))[lay["scan"]]
    z = (position[:, None] - np.array([0.45, 0.5, 0.35]) - offset) / np.array([0.19, 0.15, 0.12])
    present = (np.abs(z) < 1).ravel()
    area = np.where(np.abs(z) < 1, np.maximum(1, 3000 * (1 - z**2) * rng.lognormal(0, 0.3, (n, k))), 0)
    area = area.astype(np.int64).ravel()
    patient_effect = np.repeat(rng.normal(0, 0.5, PATIENTS)[lay["patient"]], k)
    sensitivity = 1 / (1 + np.exp(-(2.0 + skill + patient_effect + rng.normal(0, 0.7, rows))))
    tp = rng.binomial(area, sensitivity)
    fn = area - tp
    fp = np.where(present, rng.binomial(area, 0.15 * np.exp(shift)), 0)
    fp += np.where(rng.random(rows) < 0.05, rng.geometric(0.01, rows), 0)  # stray false positives
    tn = PIXELS - tp - fp - fn
    half = n_bins // 2
    high = np.geomspace(1, 30, half)[None, :]
    low_fg = np.linspace(0.5, 1.5, half)[None, :]
    low_bg = np.geomspace(1, 0.05, half - 1)[None, :]
    fg = np.zeros((rows, n_bins), np.int64)
    bg = np.zeros((rows, n_bins), np.int64)
    fg[:, half:] = rng.multinomial(tp, high / high.sum())
    fg[:, :half] = rng.multinomial(fn, low_fg / low_fg.sum())
    bg[:, half:] = rng.multinomial(fp, high[:, ::-1] / high.sum())
    band = np.minimum(
        tn, np.where(present, 6 * np.sqrt(area) * rng.lognormal(0, 0.5, rows), rng.poisson(np.exp(shift) * 20, rows))
    ).astype(np.int64)
    bg[:, 1:half] = rng.multinomial(band, low_bg / low_bg.sum())
    bg[:, 0] = tn - band
    dice = (2 * tp + 1) / (2 * tp + fp + fn + 1)
    objects_true = np.where(present, rng.integers(1, 4, rows), 0)
    objects_found = rng.binomial(objects_true, 0.9)
    objects_pred = objects_found + (fp > 0) * rng.integers(0, 2, rows)
    columns = {
        "config_id": pa.array([config_id] * rows).dictionary_encode(),
        "fold": np.repeat(lay["fold"], k).astype(np.int16),
        "patient": pa.array(np.char.add("case", np.repeat(lay["patient"], k).astype(str))).dictionary_encode(),
        "scan": pa.array(np.char.add("scan", np.repeat(lay["scan"], k).astype(str))).dictionary_encode(),
        "slice": np.repeat(lay["slice"], k).astype(np.int32),
        "class": pa.DictionaryArray.from_arrays(np.tile(np.arange(k, dtype=np.int32), n), list(CLASSES)),
        "area": area.astype(np.int32),
        "tp": tp.astype(np.int32),
        "fp": fp.astype(np.int32),
        "fn": fn.astype(np.int32),
        "tn": tn.astype(np.int32),
        "nsd": np.clip(dice + rng.normal(0, 0.05, rows), 0, 1).astype(np.float32),
        "hd95": np.where(present, rng.lognormal(1.5, 0.6, rows), np.where(fp > 0, 316.8, 0.0)).astype(np.float32),
        "boundary_f1": np.clip(dice + rng.normal(0, 0.05, rows), 0, 1).astype(np.float32),
        "objects_true": objects_true.astype(np.int16),
        "objects_found": objects_found.astype(np.int16),
        "objects_pred": objects_pred.astype(np.int16),
        "objects_correct": np.minimum(objects_found, objects_pred).astype(np.int16),
        "hist_fg": pa.FixedSizeListArray.from_arrays(pa.array(fg.ravel().astype(np.int32)), n_bins),
        "hist_bg": pa.FixedSizeListArray.from_arrays(pa.array(bg.ravel().astype(np.int32)), n_bins),
    }
    if prob_sum:  # bin 0's pixels: mostly far background, probabilities near 0
        columns["prob_sum_low"] = ((fg[:, 0] + bg[:, 0]) * 0.05 * rng.beta(1, 4, rows) / n_bins).astype(np.float32)
    return pa.table(columns)


def folder_size(path: Path, config_id: str) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.name.startswith(f"{config_id}.fold"))


def timed(label: str, times: dict[str, float], function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    times[label] = time.perf_counter() - start
    print(f"  {label:<58s} {times[label]:7.2f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=50)
    parser.add_argument("--bins", type=int, default=20)
    parser.add_argument("--keep", type=Path, default=None, help="write cases.parquet here and keep it")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="sweeper-statistics-"))
    path = root / "cases.parquet"
    ids = [f"cfg{i:03d}" for i in range(args.configs)]
    print(
        f"{platform.machine()}, {os.cpu_count()} cores visible, affinity {sorted(os.sched_getaffinity(0))}, "
        f"BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}"
    )
    print(
        f"writing synthetic records: {args.configs} configurations x {PATIENTS} patients x {SLICES} slices x "
        f"{len(CLASSES)} classes, {args.bins} bins ...",
        flush=True,
    )
    start = time.perf_counter()
    rows = 0
    for i, cid in enumerate(ids):
        rows += append_cases(path, synthetic_cases(cid, seed=i, n_bins=args.bins))
    print(f"  {rows:,} records written in {time.perf_counter() - start:.0f} s")
    sizes = np.array([folder_size(path, cid) for cid in ids]) / 1e6
    plain = root / "without_prob_sum"
    append_cases(plain, synthetic_cases(ids[0], seed=0, n_bins=args.bins, prob_sum=False))
    plain_size = folder_size(plain, ids[0]) / 1e6
    print(
        f"cases.parquet per configuration: {sizes.mean():.2f} MB mean, {sizes.max():.2f} MB max "
        f"(with prob_sum_low); {plain_size:.2f} MB without it; target <= 5 MB"
    )

    settings = EvidenceSettings(threshold_bins=args.bins)
    times: dict[str, float] = {}
    print(f"timings ({settings.resamples} resamples, {settings.method}):")
    sums = timed("read records and sum per patient (one config at a time)", times, load_patient_sums, path)
    weights = resample_weights(len(sums.patients), settings.resamples, settings.seed)
    boot = timed(
        "bootstrap of every metric and class (shared resamples)",
        times,
        bootstrap_metrics,
        sums,
        settings,
        weights=weights,
    )
    timed("intervals table (patient_intervals)", times, patient_intervals, boot)
    timed("front probability, overall and per class", times, front_probability, boot)
    pairs, best = timed(
        "compare-all: dice, sensitivity, precision (Holm)",
        times,
        compare_all,
        boot,
        ["dice", "sensitivity", "precision"],
    )
    reading = next(iter(times))
    target = sum(value for key, value in times.items() if key != reading)
    curves = timed(
        "threshold curves, AP, ECE, matched precision (bootstrap)", times, bootstrap_curves, sums, settings, weights
    )
    timed(
        "curve tables, matched precision, operating point",
        times,
        lambda: (
            threshold_curves(curves),
            curve_summary(curves),
            matched_precision(curves),
            operating_point(curves, min_sensitivity=0.95),
        ),
    )
    timed(
        "rank distributions of dice, sensitivity, precision",
        times,
        rank_distribution,
        boot,
        ["dice", "sensitivity", "precision"],
    )
    print(
        f"intervals + front + compare-all: {target:.1f} s (target < 30 s); "
        f"with reading: {target + times[reading]:.1f} s; everything: {sum(times.values()):.1f} s"
    )
    print(
        f"compare-all: {len(pairs):,} rows; not distinguishable from the best dice: "
        f"{int(best[best['metric'] == 'dice']['indistinguishable'].sum())} configuration(s)"
    )
    if args.keep is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
