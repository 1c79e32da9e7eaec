"""The Parquet leaderboard: one row per fold trial, one row per configuration.

``SWEEP_DIR/leaderboard/trials.parquet``: one row per (``config_id``, ``fold``, ``repeat``) at the trial's
best epoch -- identity columns (:data:`IDENTITY_COLUMNS`), then every metric by its plain name
(``dice``, ``sensitivity.small_bowel``, ...). ``repeat`` counts the ``training.repeats`` seeded runs of a
fold (0 when the sweep runs each fold once).

``SWEEP_DIR/leaderboard/configs.parquet``: one row per configuration over its *finished* fold trials --
identity columns, ``n_folds`` (finished), ``n_repeats``, ``n_failed``, ``interval_method``,
``n_patients``, ``few_patients``, then each metric's fold mean under its plain name (each fold first
averaged over its repeats, :func:`repeat_means`), its sample standard deviation over folds (ddof=1;
NaN for a single fold) under ``<name>_std``, its interval under ``<name>_ci_low`` / ``<name>_ci_high``
and the seed-to-seed standard deviation within folds under ``<name>_seed_std`` (:func:`seed_stds`; NaN
with one repeat). The interval is the patient cluster bootstrap over the out-of-fold case records
(``interval_method`` ``patient_bca`` / ``patient_percentile``, :func:`sweeper.evidence.interval_table`;
a patient's repeated runs count as their mean) where the configuration's records cover all its
finished fold trials, else the Nadeau-Bengio corrected fold interval (``fold_corrected_t``,
:func:`sweeper.evidence.corrected_t_interval`); metrics the records cannot rebuild (``mae``,
``pooled_mae``, ``gi_score``) always take the fold interval.
Then the configuration's ``status`` (:func:`config_status`: ``finished``, ``failed`` or ``pruned``),
``n_stopped`` (fold trials the epoch scheduler stopped), ``pruned_at`` (why it was pruned),
``pruned_kind`` (``fold_halving`` or ``epoch_scheduler``; :func:`pruned_kind`), ``pruned_stage`` (where:
``rung 1: 1 of 3 folds``, ``rung 1: fold 2 epoch 1``; :func:`pruned_stage`), ``feasible`` (its fold means
meet the sweep's ``search.constraints``; true without constraints) and ``broken_constraint`` (the bounds
an infeasible one breaks, e.g. ``sensitivity>=0.9``; :func:`broken_constraints`). How far each
configuration got -- folds run, epochs reached, share of full training -- is :func:`configuration_reach`
(``sweeper status`` and the report read it).

A fold trial the epoch scheduler (``scheduler: {type: moasha}``) stopped before its last epoch is a
trials.parquet row with status ``stopped``: its best epoch so far is its record and ``epochs_done`` the
epoch it reached; it never counts towards a configuration's fold means, and its case records are not
gathered. A configuration that fold halving or the scheduler pruned is listed in
``leaderboard/pruned.json`` (written by the searcher, :func:`record_pruned`: why, the rung, and the fold and
epoch where the scheduler stopped it); its fold means cover the
folds it finished (``n_folds``), and the Pareto front leaves it out unless asked (``sweeper pareto
--include-partial``).

``SWEEP_DIR/leaderboard/cases.parquet/``: the out-of-fold case records (:mod:`sweeper.cases`), one
file per finished fold trial, gathered from the trial's checkpoint when it ends
(:func:`gather_trial_cases`); :func:`rebuild_sweep_cases` restores lost ones.
``SWEEP_DIR/leaderboard/intervals.parquet``: the patient-level rows (out-of-fold value and interval
of every metric and class) of the configurations with records.

All are written atomically (temp file + rename) after every ended trial by
:class:`LeaderboardWriter`, whose hooks run as a Tune callback in the driver
(:class:`sweeper.callbacks.LeaderboardCallback`); the bootstrap runs for the ended trial's
configuration only, the others' rows are kept. This module imports neither torch nor Ray.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sweeper.paths import SweepPaths
from sweeper.pruning import scheduler_stopped, trial_key
from trainables.contract import BEST_PREFIX, CASES_FILE, TrialConfig

if TYPE_CHECKING:
    import pyarrow as pa

    from sweeper.spec import EvidenceSpec, SweepSpec

logger = logging.getLogger(__name__)

#: identity columns of the tables, each named once: a configuration's identity (TrialConfig's), then the fold
#: trial's bookkeeping; configs.parquet adds the fold counts
CONFIG_ID, FOLD, ARCH, ENCODER, HEADS, LOSS, LOSS_PARAMS, ROI_RATIO, LOSS_DETAIL = (
    "config_id",
    "fold",
    "arch",
    "encoder",
    "heads",
    "loss",
    "loss_params",
    "roi_ratio",
    "loss_detail",
)
#: which of the fold's ``training.repeats`` seeded runs a row is; the searched training settings (JSON)
REPEAT, TRAINING_PARAMS = "repeat", "training_params"
STATUS, BEST_EPOCH, EPOCHS_DONE, ERROR = "status", "best_epoch", "epochs_done", "error"
N_FOLDS, N_FAILED, N_REPEATS = "n_folds", "n_failed", "n_repeats"
#: which interval a configuration's row holds, and over how many patients (patient bootstrap only)
INTERVAL_METHOD, N_PATIENTS, FEW_PATIENTS = "interval_method", "n_patients", "few_patients"
FOLD_INTERVAL = "fold_corrected_t"
CONFIG_COUNTS = [N_FOLDS, N_REPEATS, N_FAILED, INTERVAL_METHOD, N_PATIENTS, FEW_PATIENTS]
#: configs.parquet: the configuration's status, its fold trials the scheduler stopped, why it was pruned, and
#: whether its fold means meet the sweep's search.constraints
CONFIG_STATUS, N_STOPPED, PRUNED_AT, FEASIBLE = "status", "n_stopped", "pruned_at", "feasible"
#: configs.parquet: which pruning left it behind (:data:`PRUNED_KINDS`) and where (:func:`pruned_stage`), and the
#: constraint bounds an infeasible configuration breaks (:func:`broken_constraints`)
PRUNED_KIND, PRUNED_STAGE, BROKEN_CONSTRAINT = "pruned_kind", "pruned_stage", "broken_constraint"
#: ``pruned_kind`` values: fold halving (search.pruning.folds), the epoch scheduler (scheduler: moasha)
FOLD_HALVING, EPOCH_SCHEDULER = "fold_halving", "epoch_scheduler"
PRUNED_KINDS = (FOLD_HALVING, EPOCH_SCHEDULER)
IDENTITY_COLUMNS = [
    CONFIG_ID,
    FOLD,
    REPEAT,
    ARCH,
    ENCODER,
    HEADS,
    LOSS,
    LOSS_PARAMS,
    ROI_RATIO,
    TRAINING_PARAMS,
    LOSS_DETAIL,
    STATUS,
    BEST_EPOCH,
    EPOCHS_DONE,
    ERROR,
]
CONFIG_IDENTITY = [CONFIG_ID, ARCH, ENCODER, HEADS, LOSS, LOSS_PARAMS, ROI_RATIO, TRAINING_PARAMS, LOSS_DETAIL]
FINISHED, FAILED = "finished", "failed"
#: a fold trial stopped early by the epoch scheduler; a configuration pruned by fold halving or the scheduler
STOPPED, PRUNED = "stopped", "pruned"
#: the searcher's pruning ledger, beside the tables: {config_id: {reason, n_folds, n_stopped, rung, stopped_fold,
#: stopped_epoch}} (:func:`record_pruned`)
PRUNED_FILE = "pruned.json"
#: ledger keys: the rung it was pruned at (1-based; None: not at a rung), and where the scheduler stopped it
#: (both None when fold halving pruned it)
RUNG, STOPPED_FOLD, STOPPED_EPOCH = "rung", "stopped_fold", "stopped_epoch"
#: per metric in configs.parquet: the fold std, the t interval over folds, the seed-to-seed std within folds
STAT_SUFFIXES = ("_std", "_ci_low", "_ci_high", "_seed_std")
#: what a trials table written before a column existed holds in it
_COLUMN_DEFAULTS = {REPEAT: 0, TRAINING_PARAMS: "{}"}


def trial_row(config: TrialConfig, result: dict[str, Any] | None, status: str, error: str = "") -> dict[str, Any]:
    """Returns one trials.parquet row: identity + the best-epoch metrics of ``result`` under plain names."""
    result = result or {}
    row = {
        CONFIG_ID: config.config_id,
        FOLD: config.fold,
        REPEAT: config.repeat,
        ARCH: config.arch,
        ENCODER: config.encoder,
        HEADS: config.heads,
        LOSS: config.loss,
        LOSS_PARAMS: json.dumps(config.loss_params, sort_keys=True),
        ROI_RATIO: float("nan") if config.roi_ratio is None else float(config.roi_ratio),
        TRAINING_PARAMS: json.dumps(config.training_params, sort_keys=True),
        LOSS_DETAIL: str(result.get("loss_detail", "")),
        STATUS: status,
        BEST_EPOCH: int(result.get("best_epoch", 0)),
        EPOCHS_DONE: int(result.get("epoch", 0)),
        ERROR: error,
    }
    row.update({k.removeprefix(BEST_PREFIX): float(v) for k, v in result.items() if k.startswith(BEST_PREFIX)})
    return row


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Returns the metric columns of a trials table (everything that is not identity)."""
    return [c for c in frame.columns if c not in IDENTITY_COLUMNS]


def with_repeat_columns(trials: pd.DataFrame) -> pd.DataFrame:
    """Returns a trials table with the columns a table written before repeats existed lacks (repeat 0, no
    searched training settings)."""
    missing = {k: v for k, v in _COLUMN_DEFAULTS.items() if k not in trials.columns}
    return trials.assign(**missing) if missing else trials


def repeat_means(trials: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Returns one row per (configuration, fold): each metric's mean over the fold's repeats (NaN left out).

    The fold, not the seeded run, is the unit of the fold statistics: with ``training.repeats`` R, a
    fold's value is (1 / R) sum_r y_fr, so the fold std and interval measure fold-to-fold variation
    and the repeats only make each fold's value less noisy. Give it finished rows."""
    trials = with_repeat_columns(trials)
    metrics = metric_columns(trials) if metrics is None else metrics
    return trials.groupby([CONFIG_ID, FOLD], sort=False)[metrics].mean().reset_index()


def seed_stds(trials: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Returns the seed-to-seed standard deviation of each configuration's metrics, pooled within folds: per
    configuration and metric, sqrt(sum_f sum_r (y_fr - mean_f)^2 / sum_f (R_f - 1)) over its non-missing
    values, the run-to-run spread with the fold's own difficulty taken out; NaN where no fold has two
    finished repeats. One row per configuration (index ``config_id``), one column per metric, all in one
    grouping. Give it finished rows."""
    trials = with_repeat_columns(trials)
    metrics = metric_columns(trials) if metrics is None else metrics
    values = trials[metrics].astype(float)
    by_fold = values.groupby([trials[CONFIG_ID], trials[FOLD]], sort=False)
    squares = (values - by_fold.transform("mean")).pow(2).groupby(trials[CONFIG_ID], sort=False).sum()
    dof = (by_fold.count() - 1).clip(lower=0).groupby(level=0, sort=False).sum()
    return (squares / dof).pow(0.5).where(dof > 0).rename_axis(CONFIG_ID)


def seed_std(trials: pd.DataFrame, metric: str) -> float:
    """Returns :func:`seed_stds` of one configuration's metric (NaN when no fold has two finished repeats).
    Give it one configuration's finished rows."""
    table = seed_stds(with_repeat_columns(trials).assign(**{CONFIG_ID: ""}), [metric])
    return float(table.iloc[0, 0]) if len(table) else float("nan")


def fold_trial_status(config: TrialConfig, result: dict[str, Any] | None, stopped: dict[str, int] | None = None) -> str:
    """Returns ``stopped`` for a fold trial the epoch scheduler stopped, else ``finished`` (an ended trial).

    ``stopped``: the scheduler's stopped trials (:func:`sweeper.pruning.scheduler_stopped` of the sweep
    folder); without it, a trial whose last epoch is below ``config.epochs`` counts as stopped."""
    if stopped is not None:
        return STOPPED if trial_key(config.config_id, config.fold, config.repeat) in stopped else FINISHED
    epoch = (result or {}).get("epoch")
    return STOPPED if epoch is not None and int(epoch) < config.epochs else FINISHED


def config_status(n_failed: int, pruned: bool) -> str:
    """Returns a configuration's status: ``pruned`` (fold halving or the scheduler left it behind),
    ``failed`` (a fold trial failed), else ``finished`` (every ended fold trial finished)."""
    return PRUNED if pruned else FAILED if n_failed else FINISHED


def record_pruned(
    sweep_dir: str | Path,
    cid: str,
    *,
    reason: str,
    n_folds: int,
    n_stopped: int,
    rung: int | None = None,
    stopped_fold: int | None = None,
    stopped_epoch: int | None = None,
) -> None:
    """Adds a pruned configuration to the sweep's pruning ledger (atomic rewrite): why (``reason``), its
    finished folds (``n_folds``), its fold trials the scheduler stopped (``n_stopped``), the rung it was
    pruned at (1-based: fold halving's rung of ``min_folds * eta**(rung-1)`` folds, or the scheduler's rung
    of ``grace_period * reduction_factor**(rung-1)`` epochs) and, when the epoch scheduler stopped it, the
    fold and epoch (``stopped_fold``, ``stopped_epoch``)."""
    ledger = read_pruned(sweep_dir)
    ledger[cid] = {
        "reason": reason,
        N_FOLDS: n_folds,
        N_STOPPED: n_stopped,
        RUNG: rung,
        STOPPED_FOLD: stopped_fold,
        STOPPED_EPOCH: stopped_epoch,
    }
    path = SweepPaths.at(sweep_dir).leaderboard / PRUNED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(ledger, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_pruned(sweep_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Returns the pruning ledger ``{config_id: {reason, n_folds, n_stopped, rung, stopped_fold, stopped_epoch}}``
    ({} when nothing was pruned; a ledger written before the rung was recorded lacks the last three)."""
    path = SweepPaths.at(sweep_dir).leaderboard / PRUNED_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def bound_checks(constraint, values: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Returns ``(name, met)`` per bound of a constraint over fold means ``values``: ``<metric>>=<min>`` met where
    ``mean >= min``, ``<metric><=<max>`` where ``mean <= max`` (the names Optuna is told); NaN meets neither."""
    checks = []
    with np.errstate(invalid="ignore"):
        if constraint.min is not None:
            checks.append((f"{constraint.metric}>={constraint.min:g}", values >= constraint.min))
        if constraint.max is not None:
            checks.append((f"{constraint.metric}<={constraint.max:g}", values <= constraint.max))
    return checks


def broken_constraints(configs: pd.DataFrame, constraints: Sequence) -> list[str]:
    """Returns, per configuration, the bounds its fold means break, ``"; "``-joined (``""``: it meets them all;
    :func:`bound_checks`). A missing mean breaks every bound on it (no fold trial finished yet).
    ``constraints``: items with ``metric``, ``min`` and ``max`` (:class:`sweeper.spec.ConstraintSpec`)."""
    broken: list[list[str]] = [[] for _ in range(len(configs))]
    for constraint in constraints:
        values = (
            configs[constraint.metric].to_numpy(dtype=float)
            if constraint.metric in configs.columns
            else np.full(len(configs), np.nan)
        )
        for name, met in bound_checks(constraint, values):
            for i in np.flatnonzero(~met):
                broken[i].append(name)
    return ["; ".join(names) for names in broken]


def pruned_kind(entry: dict[str, Any] | None) -> str:
    """Returns which pruning a ledger entry (:func:`read_pruned`) records: ``epoch_scheduler`` when the scheduler
    stopped one of its fold trials, ``fold_halving`` otherwise, ``""`` for no entry (not pruned)."""
    if not entry:
        return ""
    stopped = entry.get(STOPPED_EPOCH) is not None or "stopped at epoch" in str(entry.get("reason", ""))
    return EPOCH_SCHEDULER if stopped else FOLD_HALVING


def pruned_stage(entry: dict[str, Any] | None, folds_total: int | None = None) -> str:
    """Returns where a ledger entry's configuration was pruned, for a person: ``rung 1: 1 of 3 folds`` (fold
    halving), ``rung 2: fold 0 epoch 2`` (the scheduler; without ``rung 2:`` when the stop was at no rung),
    the ledger's reason for an entry written before rungs were recorded, ``""`` for no entry."""
    if not entry:
        return ""
    rung = entry.get(RUNG)
    prefix = f"rung {rung}: " if rung is not None else ""
    if entry.get(STOPPED_EPOCH) is not None:
        return f"{prefix}fold {entry.get(STOPPED_FOLD)} epoch {entry[STOPPED_EPOCH]}"
    if rung is not None:
        of = f" of {folds_total}" if folds_total else ""
        return f"{prefix}{entry[N_FOLDS]}{of} fold{'s' if (folds_total or entry[N_FOLDS]) != 1 else ''}"
    return str(entry.get("reason", ""))


def feasible(configs: pd.DataFrame, constraints: Sequence) -> np.ndarray:
    """Returns a bool mask of the configurations whose fold means meet every constraint
    (``metric >= min`` and ``metric <= max``; a missing mean fails; :func:`broken_constraints`)."""
    return np.array([not broken for broken in broken_constraints(configs, constraints)], dtype=bool)


def sweep_constraints(sweep_dir: str | Path) -> list:
    """Returns the ``search.constraints`` of a sweep's frozen spec.yaml ([] when it has none or no spec)."""
    import yaml

    from sweeper.spec import ConstraintSpec  # pydantic only: no torch

    spec_file = SweepPaths.at(sweep_dir).spec_file
    if not spec_file.is_file():
        return []
    raw = yaml.safe_load(spec_file.read_text()) or {}
    return [ConstraintSpec.model_validate(c) for c in (raw.get("search") or {}).get("constraints") or []]


def aggregate(
    trials: pd.DataFrame,
    intervals: pd.DataFrame | None = None,
    *,
    n_folds: int | None = None,
    confidence: float = 0.95,
    pruned: dict[str, dict[str, Any]] | None = None,
    folds_total: int | None = None,
) -> pd.DataFrame:
    """Returns configs.parquet's table: fold mean, ``_std``, interval, seed std and counts per configuration,
    best dice first. Each fold is first averaged over its repeats (:func:`repeat_means`); ``_seed_std`` is
    the within-fold seed-to-seed std (:func:`seed_stds`); ``n_folds`` counts folds with a finished run,
    ``n_repeats`` the finished repeats of the fold with fewest, ``n_failed`` failed fold trials.

    ``intervals``: patient-level rows (:func:`sweeper.evidence.interval_table`, one per configuration
    whose case records cover its finished folds); their ``_ci_low``/``_ci_high`` replace the fold
    interval of every metric they hold. Every other interval is Nadeau & Bengio's corrected fold
    interval (:func:`sweeper.evidence.corrected_t_interval`; ``n_folds``, the sweep's number of
    folds, sets n_test/n_train = 1/(n_folds - 1); default: the folds seen), clipped to the metric's range.
    ``pruned``: the pruning ledger (:func:`read_pruned`): those configurations' ``status`` is ``pruned``, with
    ``pruned_kind`` and ``pruned_stage`` (:func:`pruned_kind`, :func:`pruned_stage`; ``folds_total``: the folds
    each configuration runs, for the stage's ``1 of 3 folds``).
    """
    from sweeper.evidence import corrected_t_interval, metric_range

    trials = with_repeat_columns(trials)
    pruned = pruned or {}

    metrics = metric_columns(trials)
    split = n_folds if n_folds is not None else max(int(trials[FOLD].nunique()), 2)
    patient = {} if intervals is None or intervals.empty else intervals.set_index(CONFIG_ID).to_dict("index")
    seed = seed_stds(trials[trials[STATUS] == FINISHED], metrics)
    rows = []
    for cid, group in trials.groupby(CONFIG_ID, sort=False):
        done = group[group[STATUS] == FINISHED]
        folds = repeat_means(done, metrics)
        row = group.iloc[0][CONFIG_IDENTITY].to_dict()
        row[LOSS_DETAIL] = ";".join(sorted(set(group[LOSS_DETAIL]) - {""}))  # CALF may choose per fold
        row[N_FOLDS] = len(folds)
        row[N_REPEATS] = int(done.groupby(FOLD).size().min()) if len(done) else 0
        row[N_FAILED] = int((group[STATUS] == FAILED).sum())
        own = patient.get(cid)
        row[INTERVAL_METHOD] = own[INTERVAL_METHOD] if own else FOLD_INTERVAL
        row[N_PATIENTS] = float(own[N_PATIENTS]) if own else math.nan
        row[FEW_PATIENTS] = bool(own[FEW_PATIENTS]) if own else False
        row[N_STOPPED] = int((group[STATUS] == STOPPED).sum())
        row[CONFIG_STATUS] = config_status(row[N_FAILED], row[CONFIG_ID] in pruned)
        entry = pruned.get(row[CONFIG_ID])
        row[PRUNED_AT] = (entry or {}).get("reason", "")
        row[PRUNED_KIND] = pruned_kind(entry)
        row[PRUNED_STAGE] = pruned_stage(entry, folds_total)
        for name in metrics:
            values = folds[name].dropna()
            row[name] = values.mean() if len(values) else float("nan")
            row[f"{name}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
            if own and f"{name}_ci_low" in own:
                row[f"{name}_ci_low"], row[f"{name}_ci_high"] = own[f"{name}_ci_low"], own[f"{name}_ci_high"]
            else:
                bounds = metric_range(name.partition(".")[0])
                row[f"{name}_ci_low"], row[f"{name}_ci_high"] = corrected_t_interval(
                    values.to_numpy(float), 1.0 / (split - 1), confidence, bounds
                )
            row[f"{name}_seed_std"] = seed.at[cid, name] if cid in seed.index else float("nan")
        rows.append(row)
    frame = pd.DataFrame(
        rows,
        columns=CONFIG_IDENTITY
        + CONFIG_COUNTS
        + [CONFIG_STATUS, N_STOPPED, PRUNED_AT, PRUNED_KIND, PRUNED_STAGE]
        + [c for name in metrics for c in (name, *(name + s for s in STAT_SUFFIXES))],
    )
    if "dice" in frame:
        frame = frame.sort_values("dice", ascending=False, na_position="last", kind="stable")
    return frame.reset_index(drop=True)


#: configuration_reach: how far a configuration got, and how it ended (``outcome``: :data:`REACH_OUTCOMES`)
FOLDS_RUN, FOLDS_TOTAL, EPOCHS_REACHED, EPOCHS_TOTAL, SHARE_TRAINED, OUTCOME = (
    "folds_run",
    "folds_total",
    "epochs_reached",
    "epochs_total",
    "share_trained",
    "outcome",
)
RUNNING_OUTCOME, INFEASIBLE_OUTCOME = "running", "infeasible"
#: outcomes in the order they are told apart: pruned first (its means are partial), then failed, still running,
#: infeasible (every fold ended, a constraint broken), finished
REACH_OUTCOMES = (PRUNED, FAILED, RUNNING_OUTCOME, INFEASIBLE_OUTCOME, FINISHED)


def configuration_reach(
    configs: pd.DataFrame, trials: pd.DataFrame, folds_total: int, epochs_total: int, repeats: int = 1
) -> pd.DataFrame:
    """Returns how far each configuration of configs.parquet got, one row each in its order: ``config_id``,
    ``outcome`` (pruned, failed, running, infeasible, finished; :data:`REACH_OUTCOMES`), ``pruned_kind``,
    ``pruned_stage``, ``broken_constraint``, ``folds_run`` (folds with an ended fold trial) of
    ``folds_total``, ``epochs_reached`` (the fewest epochs one of its fold trials that did not fail reached:
    a stopped one's epoch) of ``epochs_total``, and ``share_trained`` = sum of its fold trials' epochs /
    (folds_total x repeats x epochs_total), the share of full fan-out training it took."""
    trials = with_repeat_columns(trials)
    rows = []
    for _, config in configs.iterrows():
        own = trials[trials[CONFIG_ID] == config[CONFIG_ID]]
        trained = own[own[STATUS] != FAILED]
        status = config.get(CONFIG_STATUS, FAILED if config.get(N_FAILED, 0) else FINISHED)
        folds_run = int(own[FOLD].nunique())
        if status in (PRUNED, FAILED):
            outcome = status
        elif folds_run < folds_total:
            outcome = RUNNING_OUTCOME
        elif not bool(config.get(FEASIBLE, True)):
            outcome = INFEASIBLE_OUTCOME
        else:
            outcome = FINISHED
        rows.append(
            {
                CONFIG_ID: config[CONFIG_ID],
                OUTCOME: outcome,
                PRUNED_KIND: config.get(PRUNED_KIND, ""),
                PRUNED_STAGE: config.get(PRUNED_STAGE, ""),
                BROKEN_CONSTRAINT: config.get(BROKEN_CONSTRAINT, ""),
                FOLDS_RUN: folds_run,
                FOLDS_TOTAL: int(folds_total),
                EPOCHS_REACHED: int(trained[EPOCHS_DONE].min()) if len(trained) else 0,
                EPOCHS_TOTAL: int(epochs_total),
                SHARE_TRAINED: float(own[EPOCHS_DONE].sum()) / max(folds_total * repeats * epochs_total, 1),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[CONFIG_ID, OUTCOME, PRUNED_KIND, PRUNED_STAGE, BROKEN_CONSTRAINT]
        + [FOLDS_RUN, FOLDS_TOTAL, EPOCHS_REACHED, EPOCHS_TOTAL, SHARE_TRAINED],
    )


def prunes_or_constrains(spec: SweepSpec | None, sweep_dir: str | Path, trials: pd.DataFrame) -> bool:
    """True when a sweep prunes or constrains: its spec asks for fold halving, an epoch scheduler or
    constraints, or its folder shows pruned configurations or stopped fold trials (a spec that is gone)."""
    if spec is not None and (
        spec.search.pruning.folds is not None or spec.scheduler.type != "fifo" or bool(spec.search.constraints)
    ):
        return True
    return bool(read_pruned(sweep_dir)) or bool(len(trials) and (trials[STATUS] == STOPPED).any())


def sweep_reach(configs: pd.DataFrame, trials: pd.DataFrame, spec: SweepSpec | None) -> pd.DataFrame:
    """Returns :func:`configuration_reach` with the folds, epochs and repeats of the sweep's spec (without one:
    the most folds and epochs the trials show, one repeat)."""
    if spec is not None:
        return configuration_reach(
            configs, trials, len(spec.data.folds_to_run), spec.training.epochs, spec.training.repeats
        )
    folds = int(trials.groupby(CONFIG_ID)[FOLD].nunique().max()) if len(trials) else 1
    return configuration_reach(configs, trials, folds, int(trials[EPOCHS_DONE].max()) if len(trials) else 1)


def resolve_config(trials: pd.DataFrame, key: str) -> str:
    """Returns the config_id that ``key`` (a config_id or a unique prefix of one) names."""
    ids = sorted(set(trials[CONFIG_ID]))
    matches = [c for c in ids if c.startswith(key)]
    if len(matches) != 1:
        raise KeyError(
            f"{key!r} matches {len(matches)} configurations; give a config_id from "
            f"`sweeper leaderboard` (known: {ids[:10]}{' ...' if len(ids) > 10 else ''})"
        )
    return matches[0]


def compare_configs(trials: pd.DataFrame, a: str, b: str, metrics: list[str]) -> pd.DataFrame:
    """Returns one row per metric comparing configurations ``a`` and ``b`` on their common finished folds."""
    from dataclasses import asdict

    from sweeper.stats import paired_comparison

    a, b = resolve_config(trials, a), resolve_config(trials, b)
    done = trials[trials[STATUS] == FINISHED]
    known = [m for m in metrics if m in trials.columns]
    left = repeat_means(done[done[CONFIG_ID] == a], known).set_index(FOLD)  # a fold's repeats averaged first
    right = repeat_means(done[done[CONFIG_ID] == b], known).set_index(FOLD)
    folds = sorted(set(left.index) & set(right.index))
    if len(folds) < 2:
        raise ValueError(f"{a} and {b} share {len(folds)} finished fold(s); a paired comparison needs 2 or more")
    unknown = [m for m in metrics if m not in trials.columns]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; columns of trials.parquet: {metric_columns(trials)}")
    rows = [
        asdict(paired_comparison(m, left.loc[folds, m].to_numpy(), right.loc[folds, m].to_numpy())) for m in metrics
    ]
    return pd.DataFrame(rows)


def _patient_sums(sweep_dir: str | Path, config_ids: list[str]):
    """Per-patient sums of the records of ``config_ids`` (None when the list is empty)."""
    if not config_ids:
        return None
    from sweeper.evidence import load_patient_sums

    return load_patient_sums(SweepPaths.at(sweep_dir).cases_table, config_ids=config_ids)


def compare_pair_table(sweep_dir: str | Path, a: str, b: str, keys: Iterable[str]) -> pd.DataFrame:
    """Returns ``sweeper compare SWEEP A B``'s table (:func:`sweeper.evidence.comparison_table`).

    Both configurations with case records covering their finished folds: paired on the patients both
    validated (paired bootstrap interval of A - B, Wilcoxon signed-rank or permutation p-value,
    ``test`` says which). Otherwise the labelled fold fallback, ``test`` ``fold_corrected_t``:
    Nadeau & Bengio's corrected paired t over the common finished folds."""
    from sweeper.evidence import comparison_table

    trials = read_trials(sweep_dir)
    settings, n_folds = sweep_evidence_settings(sweep_dir)
    a, b = resolve_config(trials, a), resolve_config(trials, b)
    covered = covered_configs(sweep_dir, trials, [a, b])
    sums = _patient_sums(sweep_dir, covered) if len(covered) == 2 else None
    if sums is None:
        unknown = [k for k in keys if k not in trials.columns]
        if unknown:
            raise KeyError(f"unknown metric(s) {unknown}; columns of trials.parquet: {metric_columns(trials)}")
    return comparison_table(sums, a, b, list(keys), settings, trials=trials, n_folds=n_folds)


def compare_all_table(sweep_dir: str | Path, keys: Iterable[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Returns ``sweeper compare SWEEP --all``'s tables and writes them (``leaderboard/comparisons.csv``,
    ``indistinguishable.csv``): every pair with Holm-adjusted p-values (one family per metric), and per
    metric the configurations not distinguishable from the best (:func:`sweeper.evidence.compare_all`).

    Over the configurations whose case records cover their finished folds when there are two or
    more; the configurations left out are returned third. Otherwise the labelled fold fallback:
    every pair's corrected paired t over common folds, Holm-adjusted, the best by fold mean."""
    from sweeper.evidence import comparison_all_tables

    keys = list(keys)
    trials = read_trials(sweep_dir)
    settings, n_folds = sweep_evidence_settings(sweep_dir)
    finished = list(dict.fromkeys(trials.loc[trials[STATUS] == FINISHED, CONFIG_ID]))
    covered = covered_configs(sweep_dir, trials)
    if len(covered) >= 2:
        pairs, best = comparison_all_tables(_patient_sums(sweep_dir, covered), keys, settings)
        left_out = [c for c in finished if c not in covered]
    else:
        pairs, best = _fold_compare_all(trials, finished, keys, settings, n_folds)
        left_out = []
    paths = SweepPaths.at(sweep_dir)
    paths.leaderboard.mkdir(parents=True, exist_ok=True)
    pairs.to_csv(paths.comparisons_table, index=False)
    best.to_csv(paths.indistinguishable_table, index=False)
    return pairs, best, left_out


def _fold_compare_all(trials, ids, keys, settings, n_folds) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fold-level fallback of compare --all: corrected paired t for every pair, Holm per metric."""
    import itertools

    from sweeper.evidence import LOWER_IS_BETTER, comparison_table, holm

    unknown = [k for k in keys if k not in trials.columns]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; columns of trials.parquet: {metric_columns(trials)}")
    if len(ids) < 2:
        raise ValueError(f"{len(ids)} configuration(s) finished a fold: nothing to compare")
    pairs = pd.concat(
        [
            comparison_table(None, a, b, keys, settings, trials=trials, n_folds=n_folds)
            for a, b in itertools.combinations(ids, 2)
        ],
        ignore_index=True,
    )
    pairs["p_holm"] = float("nan")
    for key in keys:
        rows = pairs["metric"] == key
        pairs.loc[rows, "p_holm"] = holm(pairs.loc[rows, "p_value"].to_numpy(float))
    means = repeat_means(trials[trials[STATUS] == FINISHED], keys).groupby(CONFIG_ID)[keys].mean()  # of fold means
    frames = []
    for key in keys:
        values = means.loc[ids, key]
        lower = key.partition(".")[0] in LOWER_IS_BETTER
        best = values.idxmin() if lower else values.idxmax()
        part = pairs[(pairs["metric"] == key) & ((pairs["config_a"] == best) | (pairs["config_b"] == best))]
        other = part["config_b"].where(part["config_a"] == best, part["config_a"])
        vs_best = dict(zip(other, part["p_holm"]))
        ranks = values.rank(ascending=lower, method="min")
        frames.append(
            pd.DataFrame(
                {
                    "metric": key,
                    CONFIG_ID: ids,
                    "value": values.to_numpy(),
                    "rank": ranks.to_numpy(),
                    "best": [c == best for c in ids],
                    "p_holm_vs_best": [vs_best.get(c, float("nan")) for c in ids],
                    "indistinguishable": [c == best or vs_best.get(c, 0.0) > settings.alpha for c in ids],
                }
            )
        )
    return pairs, pd.concat(frames, ignore_index=True)


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def write_leaderboard(trials: pd.DataFrame, sweep_dir: str | Path, refresh: Iterable[str] | None = None) -> None:
    """Writes trials.parquet, intervals.parquet and configs.parquet atomically.

    ``refresh``: the configurations whose patient-level intervals are computed again (an ended
    trial's); the others keep their rows of intervals.parquet. None: every configuration's.
    """
    paths = SweepPaths.at(sweep_dir)
    paths.leaderboard.mkdir(parents=True, exist_ok=True)
    trials = with_repeat_columns(trials).sort_values([CONFIG_ID, FOLD, REPEAT], kind="stable").reset_index(drop=True)
    # rows a sweep wrote before heads existed (resumed with this version): one network
    trials[HEADS] = trials[HEADS].fillna("multiclass") if HEADS in trials else "multiclass"
    settings, n_folds = sweep_evidence_settings(sweep_dir)
    spec = frozen_sweep_spec(sweep_dir)
    ids = list(dict.fromkeys(trials[CONFIG_ID]))
    redo = ids if refresh is None else [c for c in ids if c in set(refresh)]
    parts = [patient_interval_rows(sweep_dir, trials, redo, settings)]
    if refresh is not None and paths.intervals_table.is_file():
        kept = pd.read_parquet(paths.intervals_table)
        parts.append(kept[kept[CONFIG_ID].isin(set(ids) - set(redo))])
    parts = [p for p in parts if len(p)]
    intervals = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    _write_atomic(trials, paths.trials_table)
    if len(intervals) or paths.intervals_table.is_file():
        _write_atomic(intervals, paths.intervals_table)
    configs = aggregate(
        trials,
        intervals,
        n_folds=n_folds,
        confidence=settings.confidence,
        pruned=read_pruned(sweep_dir),
        folds_total=len(spec.data.folds_to_run) if spec else None,
    )
    broken = broken_constraints(configs, sweep_constraints(sweep_dir))
    at = configs.columns.get_loc(PRUNED_STAGE) + 1
    configs.insert(at, FEASIBLE, np.array([not b for b in broken], dtype=bool))
    configs.insert(at + 1, BROKEN_CONSTRAINT, broken)
    _write_atomic(configs, paths.configs_table)


# -- the out-of-fold case records and the patient-level intervals -----------------------------------------------
def frozen_sweep_spec(sweep_dir: str | Path) -> SweepSpec | None:
    """Returns the sweep's frozen spec.yaml, parsed without the loss registry (None when the folder holds none
    or it does not parse; the latter logged)."""
    import yaml

    from sweeper.spec import SpecError, parse_spec

    spec_file = SweepPaths.at(sweep_dir).spec_file
    if spec_file.is_file():
        try:
            return parse_spec(yaml.safe_load(spec_file.read_text()), str(spec_file), registry=False)
        except (SpecError, yaml.YAMLError) as err:
            logger.warning("%s: %s; the sweep's settings are taken as the defaults", spec_file, err)
    return None


def sweep_evidence_settings(sweep_dir: str | Path) -> tuple[EvidenceSpec, int | None]:
    """Returns the sweep's ``evidence:`` settings and its number of folds, from its frozen spec (defaults
    and None when the folder holds none)."""
    from sweeper.spec import EvidenceSpec

    spec = frozen_sweep_spec(sweep_dir)
    return (spec.evidence, spec.data.folds) if spec else (EvidenceSpec(), None)


def covered_configs(sweep_dir: str | Path, trials: pd.DataFrame, config_ids: Iterable[str] | None = None) -> list[str]:
    """Returns the configurations (of ``config_ids``, default all) with at least one finished fold trial whose
    case records cover every finished fold trial: those get patient-level statistics."""
    from sweeper.cases import case_runs_present

    present = case_runs_present(SweepPaths.at(sweep_dir).cases_table)
    done = with_repeat_columns(trials[trials[STATUS] == FINISHED])
    wanted = None if config_ids is None else set(config_ids)
    covered = []
    for cid, group in done.groupby(CONFIG_ID, sort=False):
        runs = zip(group[FOLD], group[REPEAT])
        if (wanted is None or cid in wanted) and all((cid, int(f), int(r)) in present for f, r in runs):
            covered.append(cid)
    return covered


def patient_interval_rows(
    sweep_dir: str | Path, trials: pd.DataFrame, config_ids: Iterable[str], settings: EvidenceSpec
) -> pd.DataFrame:
    """Returns the patient-level interval rows (:func:`sweeper.evidence.interval_table`) of those of
    ``config_ids`` whose records cover their finished folds; empty when none does.

    Each configuration is resampled on its own patients (one at a time, with the settings' seed), so
    its row is the same whether computed when its trial ends, by the tracker, or in a full rebuild.
    A statistic that cannot be computed (records that break its assumptions) is logged and leaves
    the fold interval."""
    from sweeper.evidence import interval_table, load_patient_sums

    folder = SweepPaths.at(sweep_dir).cases_table
    rows = []
    for cid in covered_configs(sweep_dir, trials, config_ids):
        try:
            sums = load_patient_sums(folder, config_ids=[cid])
            rows.append(interval_table(sums, settings, trials=trials[trials[CONFIG_ID] == cid]))
        except (ValueError, KeyError, OSError) as err:
            logger.warning("patient-level intervals of %s not computed (%s); fold intervals used", cid, err)
    if not rows:
        return pd.DataFrame()
    table = pd.concat(rows, ignore_index=True)
    return table[table[INTERVAL_METHOD] != FOLD_INTERVAL].reset_index(drop=True)


def read_checkpoint_cases(checkpoint) -> pa.Table | None:
    """Returns the case records in a Tune checkpoint (its ``cases.parquet``), or None when it holds none.

    ``checkpoint``: anything with ``path`` (and optionally a pyarrow ``filesystem``: object-store storage)."""
    import pyarrow.parquet as pq

    if checkpoint is None:
        return None
    path = f"{str(checkpoint.path).rstrip('/')}/{CASES_FILE}"
    filesystem = getattr(checkpoint, "filesystem", None)
    if filesystem is None:
        return pq.read_table(path) if Path(path).is_file() else None
    import pyarrow.fs

    if filesystem.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    return pq.read_table(path, filesystem=filesystem)


def gather_trial_cases(sweep_dir: str | Path, config_id: str, fold: int, checkpoint, repeat: int = 0) -> Path | None:
    """Adds a finished fold trial's case records (from its checkpoint) to ``leaderboard/cases.parquet``.

    Returns the trial's file there, or None when the trial left no records. Idempotent: a fold trial
    already gathered is not read again (the tracker and the leaderboard both call it; a resumed sweep
    adds nothing twice). Records that fail :func:`sweeper.cases.as_cases_table`'s checks are logged and
    skipped: the sweep goes on with the fold interval for that configuration."""
    from sweeper.cases import append_cases, case_runs_present, part_file

    folder = SweepPaths.at(sweep_dir).cases_table
    target = part_file(folder, config_id, fold, repeat)
    if (config_id, int(fold), int(repeat)) in case_runs_present(folder):
        return target
    try:
        records = read_checkpoint_cases(checkpoint)
        if records is None:
            return None
        append_cases(folder, _with_repeat(records, repeat), config_id=config_id)
    except (ValueError, OSError, KeyError) as err:
        logger.warning("case records of %s fold %s not gathered: %s", config_id, fold, err)
        return None
    return target if target.is_file() else None


def _latest_checkpoint_cases(trial_dir: Path) -> Path | None:
    """The cases.parquet of the newest checkpoint of a Tune trial folder (``checkpoint_<n>``)."""
    found = [c / CASES_FILE for c in trial_dir.glob("checkpoint_*") if (c / CASES_FILE).is_file()]
    if not found:
        return None
    return max(found, key=lambda f: int(f.parent.name.rpartition("_")[2] or -1))


def rebuild_sweep_cases(
    sweep_dir: str | Path, tracking_uri: str | None = None, *, from_mlflow: bool = True, force: bool = True
) -> dict[str, Any]:
    """Restores the case records of every finished fold trial missing from ``leaderboard/cases.parquet``:
    first from the trial checkpoints under ``ray/tune``, then (``from_mlflow``) from the fold runs' MLflow
    artifacts (``cases/cases.parquet``); then recomputes the intervals (always with ``force``, else only
    when something was restored). Never duplicates a fold trial. The end of a launch calls it without
    MLflow: a driver killed between a trial's end and its callback leaves nothing missing.

    ``tracking_uri``: the MLflow store (default: the spec's ``tracking.uri``, ``$MLFLOW_TRACKING_URI``,
    else ``RESULTS/mlflow.db`` beside the sweep folder). Returns the counts ``from_checkpoints``,
    ``from_mlflow`` and the fold trials still ``missing`` (config_id, fold), with the repeat after the fold
    for every repeat but the first."""
    from sweeper.cases import append_cases, case_runs_present

    paths = SweepPaths.at(sweep_dir)
    trials = read_trials(sweep_dir)
    finished = trials[trials[STATUS] == FINISHED]
    wanted = {(r[CONFIG_ID], int(r[FOLD]), int(r[REPEAT])) for _, r in finished.iterrows()}
    missing = wanted - case_runs_present(paths.cases_table)
    report: dict[str, Any] = {"from_checkpoints": 0, "from_mlflow": 0}
    if missing and paths.tune_dir.is_dir():
        for params in paths.tune_dir.glob("*/params.json"):
            try:
                config = TrialConfig.from_dict(json.loads(params.read_text()))
            except ValueError:
                continue
            key = (config.config_id, config.fold, config.repeat)
            file = _latest_checkpoint_cases(params.parent) if key in missing else None
            if file is not None and _append_file(
                paths.cases_table, file, config.config_id, append_cases, config.repeat
            ):
                report["from_checkpoints"] += 1
                missing.discard(key)
    if missing and from_mlflow:
        report["from_mlflow"] = _cases_from_mlflow(paths, missing, tracking_uri, append_cases)
        missing -= case_runs_present(paths.cases_table)
    report["missing"] = sorted(key if key[2] else key[:2] for key in missing)  # the repeat named past the first
    if force or report["from_checkpoints"] or report["from_mlflow"]:
        write_leaderboard(trials, sweep_dir)
    return report


def _with_repeat(records: pa.Table, repeat: int) -> pa.Table:
    """A trial's records (its checkpoint's or MLflow's file) with the trial's ``repeat`` column added."""
    import pyarrow

    if "repeat" in records.column_names:
        return records
    return records.append_column("repeat", pyarrow.array([int(repeat)] * records.num_rows, pyarrow.int16()))


def _append_file(folder: Path, file: Path, config_id: str, append_cases, repeat: int = 0) -> bool:
    import pyarrow.parquet as pq

    try:
        return append_cases(folder, _with_repeat(pq.read_table(file), repeat), config_id=config_id) > 0
    except (ValueError, OSError) as err:
        logger.warning("%s: case records not restored: %s", file, err)
        return False


def _cases_from_mlflow(
    paths: SweepPaths, missing: set[tuple[str, int, int]], tracking_uri: str | None, append_cases
) -> int:
    """Restores the ``missing`` fold trials' records from their MLflow fold runs; returns how many."""
    import tempfile

    from mlflow import MlflowClient

    from sweeper.tracking import CONFIG_TAG, FOLD_LEVEL, FOLD_TAG, LEVEL_TAG, REPEAT_TAG, default_tracking_uri

    name = paths.sweep.name
    if tracking_uri is None:
        import yaml

        spec = yaml.safe_load(paths.spec_file.read_text()) if paths.spec_file.is_file() else {}
        name = spec.get("name", name)
        uri = (spec.get("tracking") or {}).get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri and not paths.mlflow_db.is_file():
            return 0
        tracking_uri = uri or default_tracking_uri(paths.results)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return 0
    restored = 0
    runs = client.search_runs([experiment.experiment_id], f"tags.`{LEVEL_TAG}` = '{FOLD_LEVEL}'", max_results=50_000)
    for run in runs:
        tags = run.data.tags
        key = (tags.get(CONFIG_TAG), int(tags.get(FOLD_TAG, -1)), int(tags.get(REPEAT_TAG, 0)))
        if key not in missing or run.info.status != "FINISHED":
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                file = client.download_artifacts(run.info.run_id, f"cases/{CASES_FILE}", tmp)
            except Exception as err:  # noqa: BLE001 - a run without the artifact: nothing to restore
                logger.info("fold run %s holds no case records (%s)", run.info.run_id, err)
                continue
            restored += _append_file(paths.cases_table, Path(file), key[0], append_cases, key[2])
    return restored


def read_trials(sweep_dir: str | Path) -> pd.DataFrame:
    """Returns trials.parquet of a sweep; FileNotFoundError says what to run when it is missing."""
    return with_repeat_columns(_read(SweepPaths.at(sweep_dir).trials_table))


def read_configs(sweep_dir: str | Path) -> pd.DataFrame:
    """Returns configs.parquet of a sweep."""
    return _read(SweepPaths.at(sweep_dir).configs_table)


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: is {path.parent.parent} a sweep folder "
            "(results/<sweep name>) with at least one ended trial?"
        )
    return pd.read_parquet(path)


class LeaderboardWriter:
    """Tune callback hooks: upserts the ended trial's row by (config_id, fold, repeat) and rewrites both tables.

    Ray-free; :class:`sweeper.callbacks.LeaderboardCallback` registers it with Tune."""

    def __init__(self, sweep_dir: str | Path):
        self.sweep_dir = str(sweep_dir)

    def _rows(self) -> dict[tuple[str, int, int], dict[str, Any]]:
        path = SweepPaths.at(self.sweep_dir).trials_table
        if not path.is_file():
            return {}
        table = with_repeat_columns(pd.read_parquet(path))
        return {(r[CONFIG_ID], int(r[FOLD]), int(r[REPEAT])): r for r in table.to_dict("records")}

    def _record(self, row: dict[str, Any]) -> None:
        rows = self._rows()
        rows[(row[CONFIG_ID], row[FOLD], row[REPEAT])] = row
        write_leaderboard(pd.DataFrame(list(rows.values())), self.sweep_dir, refresh=[row[CONFIG_ID]])

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        config = TrialConfig.from_dict(trial.config)
        status = fold_trial_status(config, trial.last_result, scheduler_stopped(self.sweep_dir))
        if status == FINISHED:  # a stopped trial's records are of a partial model: not evidence
            gather_trial_cases(self.sweep_dir, config.config_id, config.fold, trial.checkpoint, config.repeat)
        self._record(trial_row(config, trial.last_result, status))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._record(
            trial_row(
                TrialConfig.from_dict(trial.config), trial.last_result, FAILED, error=trial_error_text(trial)[-2000:]
            )
        )


def trial_error_text(trial) -> str:
    """Returns the traceback Tune saved for a failed trial."""
    error_file = getattr(trial, "error_file", None)
    if error_file and Path(error_file).is_file():
        return Path(error_file).read_text()
    return "trial failed (Tune saved no error file)"
