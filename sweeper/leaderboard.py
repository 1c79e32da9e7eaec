"""The Parquet leaderboard: one row per fold trial, one row per configuration.

``SWEEP_DIR/leaderboard/trials.parquet``: one row per (``config_id``, ``fold``) at the trial's best
epoch -- identity columns (:data:`IDENTITY_COLUMNS`), then every metric by its plain name
(``dice``, ``sensitivity.small_bowel``, ...).

``SWEEP_DIR/leaderboard/configs.parquet``: one row per configuration over its *finished* folds --
identity columns, each metric's fold mean under its plain name, its sample standard deviation
(ddof=1; NaN for a single fold) under ``<name>_std`` and its 95% Student-t interval over folds under
``<name>_ci_low`` / ``<name>_ci_high`` (:func:`sweeper.stats.t_interval`), ``n_folds`` (finished)
and ``n_failed``; then the configuration's ``status`` (:func:`config_status`: ``finished``, ``failed`` or
``pruned``), ``n_stopped`` (fold trials the epoch scheduler stopped), ``pruned_at`` (why it was pruned)
and ``feasible`` (its fold means meet the sweep's ``search.constraints``; true without constraints).

A fold trial the epoch scheduler (``scheduler: {type: moasha}``) stopped before its last epoch is a
trials.parquet row with status ``stopped``: its best epoch so far is its record and ``epochs_done`` the
epoch it reached; it never counts towards a configuration's fold means. A configuration that fold
halving or the scheduler pruned is listed in ``leaderboard/pruned.json`` (written by the searcher,
:func:`record_pruned`); its fold means cover the folds it finished (``n_folds``), and the Pareto front
leaves it out unless asked (``sweeper pareto --include-partial``).

Both are rewritten atomically (temp file + rename) after every ended trial by
:class:`LeaderboardWriter`, whose hooks run as a Tune callback in the driver
(:class:`sweeper.callbacks.LeaderboardCallback`). This module imports neither torch nor Ray.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
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
STATUS, BEST_EPOCH, EPOCHS_DONE, ERROR = "status", "best_epoch", "epochs_done", "error"
N_FOLDS, N_FAILED = "n_folds", "n_failed"
#: configs.parquet: the configuration's status, its fold trials the scheduler stopped, why it was pruned, and
#: whether its fold means meet the sweep's search.constraints
CONFIG_STATUS, N_STOPPED, PRUNED_AT, FEASIBLE = "status", "n_stopped", "pruned_at", "feasible"
IDENTITY_COLUMNS = [
    CONFIG_ID,
    FOLD,
    ARCH,
    ENCODER,
    LOSS,
    LOSS_PARAMS,
    ROI_RATIO,
    LOSS_DETAIL,
    STATUS,
    BEST_EPOCH,
    EPOCHS_DONE,
    ERROR,
]
CONFIG_IDENTITY = [CONFIG_ID, ARCH, ENCODER, LOSS, LOSS_PARAMS, ROI_RATIO, LOSS_DETAIL]
FINISHED, FAILED = "finished", "failed"
#: a fold trial stopped early by the epoch scheduler; a configuration pruned by fold halving or the scheduler
STOPPED, PRUNED = "stopped", "pruned"
#: the searcher's pruning ledger, beside the tables: {config_id: {reason, n_folds, n_stopped}}
PRUNED_FILE = "pruned.json"
STAT_SUFFIXES = ("_std", "_ci_low", "_ci_high")


def trial_row(config: TrialConfig, result: dict[str, Any] | None, status: str, error: str = "") -> dict[str, Any]:
    """Returns one trials.parquet row: identity + the best-epoch metrics of ``result`` under plain names."""
    result = result or {}
    row = {
        CONFIG_ID: config.config_id,
        FOLD: config.fold,
        ARCH: config.arch,
        ENCODER: config.encoder,
        LOSS: config.loss,
        LOSS_PARAMS: json.dumps(config.loss_params, sort_keys=True),
        ROI_RATIO: float("nan") if config.roi_ratio is None else float(config.roi_ratio),
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


def fold_trial_status(config: TrialConfig, result: dict[str, Any] | None) -> str:
    """Returns ``stopped`` when the trial's last epoch is below ``config.epochs`` (the scheduler stopped
    it), else ``finished``."""
    epoch = (result or {}).get("epoch")
    return STOPPED if epoch is not None and int(epoch) < config.epochs else FINISHED


def config_status(n_failed: int, pruned: bool) -> str:
    """Returns a configuration's status: ``pruned`` (fold halving or the scheduler left it behind),
    ``failed`` (a fold trial failed), else ``finished`` (every ended fold trial finished)."""
    return PRUNED if pruned else FAILED if n_failed else FINISHED


def record_pruned(sweep_dir: str | Path, cid: str, *, reason: str, n_folds: int, n_stopped: int) -> None:
    """Adds a pruned configuration to the sweep's pruning ledger (atomic rewrite)."""
    ledger = read_pruned(sweep_dir)
    ledger[cid] = {"reason": reason, N_FOLDS: n_folds, N_STOPPED: n_stopped}
    path = SweepPaths.at(sweep_dir).leaderboard / PRUNED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(ledger, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_pruned(sweep_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Returns the pruning ledger ``{config_id: {reason, n_folds, n_stopped}}`` ({} when nothing was pruned)."""
    path = SweepPaths.at(sweep_dir).leaderboard / PRUNED_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def feasible(configs: pd.DataFrame, constraints: Sequence) -> np.ndarray:
    """Returns a bool mask of the configurations whose fold means meet every constraint
    (``metric >= min`` and ``metric <= max``; a missing mean fails). ``constraints``: items with
    ``metric``, ``min`` and ``max`` attributes (:class:`sweeper.spec.ConstraintSpec`)."""
    ok = np.ones(len(configs), dtype=bool)
    for constraint in constraints:
        if constraint.metric not in configs.columns:  # no fold trial finished yet: nothing meets it
            ok[:] = False
            continue
        values = configs[constraint.metric].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            if constraint.min is not None:
                ok &= values >= constraint.min
            if constraint.max is not None:
                ok &= values <= constraint.max
    return ok


def sweep_constraints(sweep_dir: str | Path) -> list:
    """Returns the ``search.constraints`` of a sweep's frozen spec.yaml ([] when it has none or no spec)."""
    import yaml

    from sweeper.spec import ConstraintSpec  # pydantic only: no torch

    spec_file = SweepPaths.at(sweep_dir).spec_file
    if not spec_file.is_file():
        return []
    raw = yaml.safe_load(spec_file.read_text()) or {}
    return [ConstraintSpec.model_validate(c) for c in (raw.get("search") or {}).get("constraints") or []]


def aggregate(trials: pd.DataFrame, pruned: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """Returns configs.parquet's table: fold mean, ``_std`` and counts per configuration, best dice first;
    ``pruned`` is the pruning ledger (:func:`read_pruned`)."""
    pruned = pruned or {}
    metrics = metric_columns(trials)
    rows = []
    for _, group in trials.groupby(CONFIG_ID, sort=False):
        done = group[group[STATUS] == FINISHED]
        row = group.iloc[0][CONFIG_IDENTITY].to_dict()
        row[LOSS_DETAIL] = ";".join(sorted(set(group[LOSS_DETAIL]) - {""}))  # CALF may choose per fold
        row[N_FOLDS] = len(done)
        row[N_FAILED] = int((group[STATUS] == FAILED).sum())
        row[N_STOPPED] = int((group[STATUS] == STOPPED).sum())
        row[CONFIG_STATUS] = config_status(row[N_FAILED], row[CONFIG_ID] in pruned)
        row[PRUNED_AT] = pruned.get(row[CONFIG_ID], {}).get("reason", "")
        for name in metrics:
            values = done[name].dropna()
            row[name] = values.mean() if len(values) else float("nan")
            row[f"{name}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = t_interval(values.to_numpy())
        rows.append(row)
    frame = pd.DataFrame(
        rows,
        columns=CONFIG_IDENTITY
        + [N_FOLDS, N_FAILED, CONFIG_STATUS, N_STOPPED, PRUNED_AT]
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
    left = done[done[CONFIG_ID] == a].set_index(FOLD)
    right = done[done[CONFIG_ID] == b].set_index(FOLD)
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
    trials = trials.sort_values([CONFIG_ID, FOLD], kind="stable").reset_index(drop=True)
    _write_atomic(trials, paths.trials_table)
    configs = aggregate(trials, read_pruned(sweep_dir))
    configs.insert(configs.columns.get_loc(PRUNED_AT) + 1, FEASIBLE, feasible(configs, sweep_constraints(sweep_dir)))
    _write_atomic(configs, paths.configs_table)


def read_trials(sweep_dir: str | Path) -> pd.DataFrame:
    """Returns trials.parquet of a sweep; FileNotFoundError says what to run when it is missing."""
    return _read(SweepPaths.at(sweep_dir).trials_table)


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
    """Tune callback hooks: upserts the ended trial's row by (config_id, fold) and rewrites both tables.

    Ray-free; :class:`sweeper.callbacks.LeaderboardCallback` registers it with Tune."""

    def __init__(self, sweep_dir: str | Path):
        self.sweep_dir = str(sweep_dir)

    def _rows(self) -> dict[tuple[str, int], dict[str, Any]]:
        path = SweepPaths.at(self.sweep_dir).trials_table
        if not path.is_file():
            return {}
        return {(r[CONFIG_ID], int(r[FOLD])): r for r in pd.read_parquet(path).to_dict("records")}

    def _record(self, row: dict[str, Any]) -> None:
        rows = self._rows()
        rows[(row[CONFIG_ID], row[FOLD])] = row
        write_leaderboard(pd.DataFrame(list(rows.values())), self.sweep_dir)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        config = TrialConfig.from_dict(trial.config)
        self._record(trial_row(config, trial.last_result, fold_trial_status(config, trial.last_result)))

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
