"""The Parquet leaderboard: one row per fold trial, one row per configuration.

``SWEEP_DIR/leaderboard/trials.parquet``: one row per (``config_id``, ``fold``, ``repeat``) at the trial's
best epoch -- identity columns (:data:`IDENTITY_COLUMNS`), then every metric by its plain name
(``dice``, ``sensitivity.small_bowel``, ...). ``repeat`` counts the ``training.repeats`` seeded runs of a
fold (0 when the sweep runs each fold once).

``SWEEP_DIR/leaderboard/configs.parquet``: one row per configuration over its *finished* fold trials --
identity columns; each fold first averaged over its repeats (:func:`repeat_means`), then each metric's
fold mean under its plain name, its sample standard deviation over folds (ddof=1; NaN for a single
fold) under ``<name>_std``, its 95% Student-t interval over folds under ``<name>_ci_low`` /
``<name>_ci_high`` (:func:`sweeper.stats.t_interval`) and the seed-to-seed standard deviation within
folds under ``<name>_seed_std`` (:func:`seed_std`; NaN with one repeat); ``n_folds``, ``n_repeats`` and
``n_failed``.

Both are rewritten atomically (temp file + rename) after every ended trial by
:class:`LeaderboardWriter`, whose hooks run as a Tune callback in the driver
(:class:`sweeper.callbacks.LeaderboardCallback`). This module imports neither torch nor Ray.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from sweeper.paths import SweepPaths
from sweeper.stats import t_interval
from trainables.contract import BEST_PREFIX, TrialConfig

#: identity columns of the tables, each named once: a configuration's identity (TrialConfig's), then the fold
#: trial's bookkeeping; configs.parquet adds the fold counts
CONFIG_ID, FOLD, ARCH, ENCODER, LOSS, LOSS_PARAMS, ROI_RATIO, LOSS_DETAIL = (
    "config_id",
    "fold",
    "arch",
    "encoder",
    "loss",
    "loss_params",
    "roi_ratio",
    "loss_detail",
)
#: which of the fold's ``training.repeats`` seeded runs a row is; the searched training settings (JSON)
REPEAT, TRAINING_PARAMS = "repeat", "training_params"
STATUS, BEST_EPOCH, EPOCHS_DONE, ERROR = "status", "best_epoch", "epochs_done", "error"
N_FOLDS, N_FAILED, N_REPEATS = "n_folds", "n_failed", "n_repeats"
IDENTITY_COLUMNS = [
    CONFIG_ID,
    FOLD,
    REPEAT,
    ARCH,
    ENCODER,
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
CONFIG_IDENTITY = [CONFIG_ID, ARCH, ENCODER, LOSS, LOSS_PARAMS, ROI_RATIO, TRAINING_PARAMS, LOSS_DETAIL]
FINISHED, FAILED = "finished", "failed"
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


def seed_std(trials: pd.DataFrame, metric: str) -> float:
    """Returns the seed-to-seed standard deviation of one configuration's metric, pooled within folds:
    sqrt(sum_f sum_r (y_fr - mean_f)^2 / sum_f (R_f - 1)), the run-to-run spread with the fold's own
    difficulty taken out; NaN when no fold has two finished repeats. Give it one configuration's finished rows."""
    values = with_repeat_columns(trials)[[FOLD, metric]].dropna()
    by_fold = values.groupby(FOLD)[metric]
    squares = float((values[metric] - by_fold.transform("mean")).pow(2).sum())
    dof = int((by_fold.size() - 1).sum())
    return (squares / dof) ** 0.5 if dof > 0 else float("nan")


def aggregate(trials: pd.DataFrame) -> pd.DataFrame:
    """Returns configs.parquet's table per configuration, best dice first: each fold first averaged over its
    repeats (:func:`repeat_means`), then the fold mean, ``_std`` and interval; the within-fold seed-to-seed
    std ``_seed_std`` (:func:`seed_std`); ``n_folds`` (folds with a finished run), ``n_repeats`` (finished
    repeats of the fold with fewest) and ``n_failed`` (failed fold trials)."""
    trials = with_repeat_columns(trials)
    metrics = metric_columns(trials)
    rows = []
    for _, group in trials.groupby(CONFIG_ID, sort=False):
        done = group[group[STATUS] == FINISHED]
        folds = repeat_means(done, metrics)
        row = group.iloc[0][CONFIG_IDENTITY].to_dict()
        row[LOSS_DETAIL] = ";".join(sorted(set(group[LOSS_DETAIL]) - {""}))  # CALF may choose per fold
        row[N_FOLDS] = len(folds)
        row[N_REPEATS] = int(done.groupby(FOLD).size().min()) if len(done) else 0
        row[N_FAILED] = int((group[STATUS] == FAILED).sum())
        for name in metrics:
            values = folds[name].dropna()
            row[name] = values.mean() if len(values) else float("nan")
            row[f"{name}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = t_interval(values.to_numpy())
            row[f"{name}_seed_std"] = seed_std(done, name)
        rows.append(row)
    frame = pd.DataFrame(
        rows,
        columns=CONFIG_IDENTITY
        + [N_FOLDS, N_REPEATS, N_FAILED]
        + [c for name in metrics for c in (name, *(name + s for s in STAT_SUFFIXES))],
    )
    if "dice" in frame:
        frame = frame.sort_values("dice", ascending=False, na_position="last", kind="stable")
    return frame.reset_index(drop=True)


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


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def write_leaderboard(trials: pd.DataFrame, sweep_dir: str | Path) -> None:
    """Writes trials.parquet and configs.parquet atomically."""
    paths = SweepPaths.at(sweep_dir)
    paths.leaderboard.mkdir(parents=True, exist_ok=True)
    trials = with_repeat_columns(trials).sort_values([CONFIG_ID, FOLD, REPEAT], kind="stable").reset_index(drop=True)
    _write_atomic(trials, paths.trials_table)
    _write_atomic(aggregate(trials), paths.configs_table)


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
        write_leaderboard(pd.DataFrame(list(rows.values())), self.sweep_dir)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._record(trial_row(TrialConfig.from_dict(trial.config), trial.last_result, FINISHED))

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
