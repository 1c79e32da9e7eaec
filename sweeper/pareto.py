"""The Pareto front of sensitivity vs precision over configurations (fold means), overall or per class.

A configuration is on the front when no other configuration is at least as good on both axes and
strictly better on one (both axes maximised); configurations with equal coordinates are all kept.
A configuration off the front whose 95% interval (the leaderboard's: patient bootstrap, or the fold
fallback) reaches past the front (the upper corner of its interval box is not dominated by any
front point) is ``within_noise``. The rest are ``dominated``.

With out-of-fold case records (:mod:`sweeper.cases`) the front also carries its uncertainty
(:class:`FrontEvidence`, all from one set of shared patient resamples): each configuration's
probability of being non-dominated (``front_probability``, overall and per class,
``pareto/front_probability.csv``), the precision at matched sensitivity across configurations
(``pareto/matched_precision.csv``) and the operating point as a (configuration, threshold) pair.

Two kinds of configuration are kept off the front, the front evidence and the operating point, and
shown apart (``front_status`` ``infeasible`` or ``partial``, listed in ``<stem>_excluded.csv``): those
whose fold means break one of the sweep's ``search.constraints`` (column ``feasible`` false), and those
that fold halving or the epoch scheduler pruned (``status`` ``pruned``: their means cover only the
folds they ran), unless asked for with ``include_partial``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sweeper.leaderboard import (
    CONFIG_ID,
    CONFIG_IDENTITY,
    CONFIG_STATUS,
    FEASIBLE,
    INTERVAL_METHOD,
    LOSS,
    N_FOLDS,
    PRUNED,
    PRUNED_AT,
    covered_configs,
    feasible,
    read_configs,
    read_trials,
    sweep_constraints,
    sweep_evidence_settings,
)
from sweeper.paths import SweepPaths
from sweeper.stats import hypervolume_2d

X_METRIC, Y_METRIC = "sensitivity", "precision"
HYPERVOLUME_REFERENCE = (0.0, 0.0)
FRONT, WITHIN_NOISE, DOMINATED = "front", "within_noise", "dominated"
#: kept off the front: breaks a search constraint; pruned (fold means over part of its folds)
INFEASIBLE, PARTIAL = "infeasible", "partial"
FRONT_PROBABILITY = "front_probability"
#: the ``class`` value of the overall rows of the evidence tables (sweeper.evidence.OVERALL)
OVERALL = "overall"
__all__ = ["feasible", "sweep_constraints"]  # re-exported: the CLI and the report find them here


def eligibility(configs: pd.DataFrame, constraints: Sequence = (), include_partial: bool = False) -> pd.Series:
    """Returns per configuration ``""`` (may be on the front), ``infeasible`` or ``partial`` (pruned).

    A pruned configuration with no fold mean at all (pruned before any of its fold trials ended) is
    ``partial``, not ``infeasible``: nothing was measured that could break a constraint."""
    reason = pd.Series("", index=configs.index, dtype=object)
    pruned = configs[CONFIG_STATUS].to_numpy() == PRUNED if CONFIG_STATUS in configs.columns else None
    if not include_partial and pruned is not None:
        reason[pruned] = PARTIAL
    if constraints:
        breaks = ~feasible(configs, constraints)
    elif FEASIBLE in configs.columns:  # configs.parquet carries the sweep's constraints' verdict
        breaks = ~configs[FEASIBLE].fillna(True).astype(bool).to_numpy()
    else:
        return reason
    if pruned is not None:
        measured = [m for m in {X_METRIC, Y_METRIC, "dice", *(c.metric for c in constraints)} if m in configs]
        unmeasured = configs[measured].isna().all(axis=1).to_numpy() if measured else np.zeros(len(configs), bool)
        breaks &= ~(pruned & unmeasured)
    reason[breaks] = INFEASIBLE
    return reason


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Returns a bool mask of the rows of ``points`` (n, k) that no other row dominates (maximising).

    Row j dominates row i when ``points[j] >= points[i]`` everywhere and ``>`` somewhere. Rows
    holding NaN are never on the front. O(n^2 k), fine for the hundreds of configurations of a sweep.
    """
    points = np.asarray(points, dtype=float)
    valid = ~np.isnan(points).any(axis=1)
    keep = valid.copy()
    others = points[valid]
    for i in np.flatnonzero(valid):
        dominated = np.all(others >= points[i], axis=1) & np.any(others > points[i], axis=1)
        keep[i] = not dominated.any()
    return keep


def _dominated_by_any(point: np.ndarray, front: np.ndarray) -> bool:
    return bool((np.all(front >= point, axis=1) & np.any(front > point, axis=1)).any())


def axis_columns(class_name: str | None) -> tuple[str, str]:
    """Returns the (x, y) column names: ``sensitivity``/``precision`` or their ``.<class>`` forms."""
    suffix = f".{class_name}" if class_name else ""
    return X_METRIC + suffix, Y_METRIC + suffix


def _classes(configs: pd.DataFrame) -> list[str]:
    prefix = X_METRIC + "."
    return sorted(
        c[len(prefix) :]
        for c in configs.columns
        if c.startswith(prefix) and not c.endswith(("_std", "_ci_low", "_ci_high"))
    )


def pareto_table(
    configs: pd.DataFrame,
    class_name: str | None = None,
    front_probability: pd.DataFrame | None = None,
    *,
    constraints: Sequence = (),
    include_partial: bool = False,
) -> pd.DataFrame:
    """Returns every configuration with its axis values, intervals, ``feasible``, ``on_front`` and
    ``front_status`` (front, within_noise, dominated; infeasible or partial for those kept off the front).

    ``front_probability``: :attr:`FrontEvidence.front` (every class); adds the column
    ``front_probability`` for ``class_name`` (NaN for configurations without case records).
    Rows: front first (by increasing sensitivity), then the others.
    """
    x, y = axis_columns(class_name)
    missing = [c for c in (x, y) if c not in configs.columns]
    if missing:
        raise KeyError(f"the leaderboard has no column {missing}; classes in this sweep: {_classes(configs)}")
    extra = [c for axis in (x, y) for c in (f"{axis}_std", f"{axis}_ci_low", f"{axis}_ci_high") if c in configs.columns]
    extra += [
        c
        for c in ("dice", N_FOLDS, INTERVAL_METHOD, CONFIG_STATUS, PRUNED_AT)
        if c in configs.columns and c not in (x, y)
    ]
    identity = [c for c in CONFIG_IDENTITY if c in configs.columns]
    table = configs[identity + [x, y] + extra].copy()
    excluded = eligibility(configs, constraints, include_partial).to_numpy()
    table[FEASIBLE] = excluded != INFEASIBLE  # overrides configs.parquet's column of the same name
    points = table[[x, y]].to_numpy(dtype=float, copy=True)
    points[excluded != ""] = np.nan  # never on the front, never pushing others off it
    table["on_front"] = non_dominated(points)
    front = points[table["on_front"].to_numpy()]
    status = []
    for i, on_front in enumerate(table["on_front"]):
        if on_front:
            status.append(FRONT)
            continue
        if excluded[i]:
            status.append(excluded[i])
            continue
        upper = np.array([_upper(table, i, x), _upper(table, i, y)])
        noisy = np.all(np.isfinite(upper)) and not _dominated_by_any(upper, front)
        status.append(WITHIN_NOISE if noisy else DOMINATED)
    table["front_status"] = status
    if front_probability is not None:
        group = front_probability[front_probability["class"] == (class_name or OVERALL)]
        table[FRONT_PROBABILITY] = table["config_id"].map(group.set_index("config_id")[FRONT_PROBABILITY])
    return table.sort_values(["on_front", x], ascending=[False, True], kind="stable").reset_index(drop=True)


def _upper(table: pd.DataFrame, i: int, axis: str) -> float:
    column = f"{axis}_ci_high"
    value = table[column].iloc[i] if column in table.columns else np.nan
    return float(value) if np.isfinite(value) else float(table[axis].iloc[i])


def front_hypervolume(table: pd.DataFrame, class_name: str | None = None) -> float:
    """Returns the hypervolume of the front of a :func:`pareto_table` (reference point (0, 0))."""
    x, y = axis_columns(class_name)
    return hypervolume_2d(table.loc[table["on_front"], [x, y]].to_numpy(), HYPERVOLUME_REFERENCE)


@dataclass(frozen=True)
class OperatingPoint:
    """The best configuration under a floor on one axis, or ``row=None`` when none meets it."""

    constraint: str
    row: pd.Series | None
    best_available: float


def operating_point(
    configs: pd.DataFrame,
    *,
    min_sensitivity: float | None = None,
    min_precision: float | None = None,
    class_name: str | None = None,
    constraints: Sequence = (),
    include_partial: bool = False,
) -> OperatingPoint:
    """Returns the configuration with the highest precision among those with sensitivity >= floor
    (or the highest sensitivity under a precision floor), on fold means; ties broken by dice.
    Configurations breaking a search constraint, and pruned ones unless ``include_partial``, are left out."""
    if (min_sensitivity is None) == (min_precision is None):
        raise ValueError("give exactly one of min_sensitivity or min_precision")
    x, y = axis_columns(class_name)
    floor_col, goal_col, floor = (x, y, min_sensitivity) if min_sensitivity is not None else (y, x, min_precision)
    constraint = f"{floor_col} >= {floor}"
    if floor_col not in configs.columns:
        raise KeyError(f"the leaderboard has no column {floor_col!r}; classes in this sweep: {_classes(configs)}")
    configs = configs[eligibility(configs, constraints, include_partial).to_numpy() == ""]
    eligible = configs[configs[floor_col] >= floor]
    best_available = float(configs[floor_col].max()) if len(configs) else float("nan")
    if eligible.empty:
        return OperatingPoint(constraint, None, best_available)
    order = [goal_col] + (["dice"] if "dice" in eligible.columns else [])
    row = eligible.sort_values(order, ascending=False, kind="stable").iloc[0]
    return OperatingPoint(constraint, row, best_available)


@dataclass(frozen=True)
class FrontEvidence:
    """The front's patient-level evidence, all from one set of shared patient resamples of the
    configurations whose case records cover their finished folds.

    ``front``: :func:`sweeper.evidence.front_probability` (config_id, class, sensitivity, precision,
    on_front, front_probability; class ``overall`` and each class); ``matched``:
    :func:`sweeper.evidence.matched_precision` of the per-image and the pooled curves; ``curves``:
    the :class:`sweeper.evidence.CurveBootstrap` the operating point is chosen on."""

    front: pd.DataFrame
    matched: pd.DataFrame
    curves: object


def front_evidence(sweep_dir: str | Path, *, include_partial: bool = False) -> FrontEvidence | None:
    """Returns the sweep's :class:`FrontEvidence`, or None when no configuration has case records; configurations
    breaking ``search.constraints``, and pruned ones unless ``include_partial``, are left out."""
    from sweeper.evidence import (
        CURVES,
        bootstrap_curves,
        bootstrap_metrics,
        front_probability,
        load_patient_sums,
        matched_precision,
        resample_weights,
    )

    try:
        trials = read_trials(sweep_dir)
    except FileNotFoundError:
        return None
    covered = covered_configs(sweep_dir, trials)
    configs = read_configs(sweep_dir)
    eligible = set(configs.loc[eligibility(configs, sweep_constraints(sweep_dir), include_partial) == "", CONFIG_ID])
    covered = [c for c in covered if c in eligible]
    if not covered:
        return None
    settings, _ = sweep_evidence_settings(sweep_dir)
    sums = load_patient_sums(SweepPaths.at(sweep_dir).cases_table, config_ids=covered)
    weights = resample_weights(len(sums.patients), settings.resamples, settings.seed)
    front = front_probability(bootstrap_metrics(sums, settings, [X_METRIC, Y_METRIC], weights), X_METRIC, Y_METRIC)
    curves = bootstrap_curves(sums, settings, weights)
    matched = pd.concat([matched_precision(curves, c) for c in CURVES], ignore_index=True)
    return FrontEvidence(front, matched, curves)


def write_front_evidence(sweep_dir: str | Path, evidence: FrontEvidence) -> list[Path]:
    """Writes ``pareto/front_probability.csv`` (+ .parquet) and ``pareto/matched_precision.csv``; returns them."""
    paths = SweepPaths.at(sweep_dir)
    paths.pareto.mkdir(parents=True, exist_ok=True)
    written = [paths.front_probability_file(".csv"), paths.front_probability_file(".parquet")]
    evidence.front.to_csv(written[0], index=False)
    evidence.front.to_parquet(written[1], index=False)
    evidence.matched.to_csv(paths.matched_precision_table, index=False)
    return [*written, paths.matched_precision_table]


_UNSET = object()


def export_pareto(
    sweep_dir: str | Path,
    class_name: str | None = None,
    out: str | Path | None = None,
    evidence=_UNSET,
    *,
    include_partial: bool = False,
) -> tuple[Path, Path, pd.DataFrame]:
    """Writes the front as CSV and Parquet (front rows), a PNG and an SVG of all configurations with 95%
    interval error bars, ``<stem>.json`` (hypervolume, reference point, counts) and ``<stem>_excluded.csv``
    (configurations kept off the front: infeasible under the sweep's constraints, or pruned); returns CSV
    path, PNG path, front.

    Default paths: ``SWEEP_DIR/pareto/pareto.csv`` or ``pareto_<class>.csv``; the other files sit
    beside the CSV with the same stem. ``evidence``: a :class:`FrontEvidence` (or None: no records);
    by default computed here, and then also written (:func:`write_front_evidence`). With it the
    front rows and the plot carry each configuration's ``front_probability``.
    """
    if evidence is _UNSET:
        evidence = front_evidence(sweep_dir, include_partial=include_partial)
        if evidence is not None:
            write_front_evidence(sweep_dir, evidence)
    table = pareto_table(
        read_configs(sweep_dir),
        class_name,
        None if evidence is None else evidence.front,
        constraints=sweep_constraints(sweep_dir),
        include_partial=include_partial,
    )
    csv_path = Path(out) if out else SweepPaths.at(sweep_dir).pareto_file(class_name)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    front = table[table["on_front"]].drop(columns="on_front")
    front.to_csv(csv_path, index=False)
    front.to_parquet(csv_path.with_suffix(".parquet"), index=False)
    summary = {
        "class": class_name,
        "axes": list(axis_columns(class_name)),
        "hypervolume": front_hypervolume(table, class_name),
        "reference_point": list(HYPERVOLUME_REFERENCE),
        "n_configurations": len(table),
        "n_front": int(table["on_front"].sum()),
        "n_within_noise": int((table["front_status"] == WITHIN_NOISE).sum()),
        "n_infeasible": int((table["front_status"] == INFEASIBLE).sum()),
        "n_partial": int((table["front_status"] == PARTIAL).sum()),
        "include_partial": include_partial,
    }
    excluded = table[table["front_status"].isin([INFEASIBLE, PARTIAL])].drop(columns="on_front")
    excluded.to_csv(csv_path.with_name(f"{csv_path.stem}_excluded.csv"), index=False)
    csv_path.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    png_path = csv_path.with_suffix(".png")
    plot_front(table, class_name, png_path)
    return csv_path, png_path, front


def export_all_fronts(sweep_dir: str | Path, classes: Sequence[str]) -> list[Path]:
    """Writes the overall front and one per class (the end of a launch), with the front evidence computed
    once for all; returns the CSV paths (none when no fold trial finished)."""
    try:
        configs = read_configs(sweep_dir)
    except FileNotFoundError:
        return []
    if X_METRIC not in configs.columns or configs[X_METRIC].isna().all():
        return []  # no fold trial finished: nothing to rank
    evidence = front_evidence(sweep_dir)
    if evidence is not None:
        write_front_evidence(sweep_dir, evidence)
    written = [export_pareto(sweep_dir, evidence=evidence)[0]]
    written += [export_pareto(sweep_dir, class_name=c, evidence=evidence)[0] for c in classes]
    return written


def plot_front(table: pd.DataFrame, class_name: str | None, path: Path) -> None:
    """Draws every configuration (colour = loss) with 95% intervals and the front as a staircase;
    saves it at ``path`` (PNG) and beside it as SVG (vector, for papers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = axis_columns(class_name)
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=120)
    if FRONT_PROBABILITY in table:  # each configuration's probability of being non-dominated, beside its point
        for _, row in table.dropna(subset=[FRONT_PROBABILITY, x, y]).iterrows():
            ax.annotate(
                f"{row[FRONT_PROBABILITY]:.2f}", (row[x], row[y]), xytext=(4, 4), textcoords="offset points", fontsize=7
            )
    for loss, group in table.groupby(LOSS):
        xerr = _errors(group, x)
        yerr = _errors(group, y)
        marker_face = ["none" if s in (DOMINATED, INFEASIBLE, PARTIAL) else None for s in group["front_status"]]
        points = ax.errorbar(
            group[x], group[y], xerr=xerr, yerr=yerr, fmt="o", ms=6, capsize=2, alpha=0.85, label=loss, elinewidth=0.8
        )
        if any(face == "none" for face in marker_face):
            points[0].set_markerfacecolor("none")
    front = table[table["on_front"]].sort_values(x)
    ax.step(front[x], front[y], where="post", color="k", ls="--", lw=1, label="Pareto front")
    _clip_unit_axis(ax.get_xlim, ax.set_xlim)  # fold intervals of 2 folds can span the whole range
    _clip_unit_axis(ax.get_ylim, ax.set_ylim)
    which = _interval_label(table)
    ax.set_xlabel(f"{x} (fold mean, 95% {which})")
    ax.set_ylabel(f"{y} (fold mean, 95% {which})")
    title = "Sensitivity vs precision" + (f": {class_name}" if class_name else " (mean over organs)")
    if FRONT_PROBABILITY in table:
        title += "\nlabels: probability of being on the front (patient resamples)"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)


def _interval_label(table: pd.DataFrame) -> str:
    methods = set(table[INTERVAL_METHOD].dropna()) if INTERVAL_METHOD in table else set()
    if methods and all(m.startswith("patient") for m in methods):
        return "patient-bootstrap interval"
    if methods and not any(m.startswith("patient") for m in methods):
        return "corrected fold interval"
    return "interval: patient bootstrap or fold fallback" if methods else "interval"


def _clip_unit_axis(get, set_) -> None:
    low, high = get()
    set_(max(low, -0.02), min(high, 1.02))


def _errors(group: pd.DataFrame, axis: str):
    low, high = f"{axis}_ci_low", f"{axis}_ci_high"
    if low not in group.columns or group[low].isna().all():
        return None
    lower = (group[axis] - group[low]).clip(lower=0).fillna(0).to_numpy()
    upper = (group[high] - group[axis]).clip(lower=0).fillna(0).to_numpy()
    return np.vstack([lower, upper])
