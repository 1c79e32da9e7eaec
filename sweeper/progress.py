"""Where a sweep stands: fold trials done / failed / running, time left, the current Pareto front.

:func:`read_status` reads only files, so it works from another shell while a sweep runs (or after
it died): the leaderboard (``trials.parquet``, ended trials), Ray Tune's newest
``experiment_state-*.json`` (trial statuses) and each trial folder's ``result.json`` (per-epoch
timestamps), plus ``spec.yaml`` for what was planned. :class:`ProgressPrinter` is the live
counterpart: Tune callback hooks printing one line per ended trial in the driver
(:class:`sweeper.callbacks.ProgressCallback` registers them). This module imports neither torch nor Ray:
trial settings are read through :class:`trainables.contract.TrialConfig`, the frozen spec without the
loss registry.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from sweeper.leaderboard import (
    CONFIG_ID,
    EPOCH_SCHEDULER,
    EPOCHS_DONE,
    FAILED,
    FINISHED,
    FOLD,
    FOLD_HALVING,
    INFEASIBLE_OUTCOME,
    LOSS,
    N_FOLDS,
    OUTCOME,
    PRUNED_KIND,
    REPEAT,
    RUNG,
    STATUS,
    STOPPED,
    fold_trial_status,
    pruned_kind,
    prunes_or_constrains,
    read_configs,
    read_pruned,
    read_trials,
    sweep_reach,
)
from sweeper.pareto import X_METRIC, Y_METRIC, eligibility, non_dominated, pareto_table
from sweeper.paths import SweepPaths
from sweeper.pruning import scheduler_stopped
from sweeper.spec import SweepSpec, parse_spec
from sweeper.tune_state import PENDING, RUNNING, read_tune_trials
from trainables.contract import BEST_PREFIX, REPLAYED_KEY, TrialConfig


@dataclass(frozen=True)
class RunningTrial:
    """A fold trial that has started and not ended: which one and how far it got."""

    loss: str
    config_id: str
    fold: int
    epoch: int
    epochs: int | None
    elapsed_s: float


@dataclass(frozen=True)
class PruningCounts:
    """What pruning and constraints did to a sweep: configurations ``finished`` (every fold, feasible),
    ``infeasible`` (every fold, a constraint broken), ``pruned`` by pruning kind (``fold_halving``,
    ``epoch_scheduler``) and rung (None: at no rung), and fold trials ``stopped`` by the epoch they reached."""

    finished: int = 0
    infeasible: int = 0
    pruned: dict[str, dict[int | None, int]] = field(default_factory=dict)
    stopped: dict[int, int] = field(default_factory=dict)

    @property
    def n_pruned(self) -> int:
        return sum(n for rungs in self.pruned.values() for n in rungs.values())


def pruning_counts(reach: pd.DataFrame, ledger: dict[str, dict[str, Any]], trials: pd.DataFrame) -> PruningCounts:
    """Returns the :class:`PruningCounts` of a sweep from its :func:`sweeper.leaderboard.configuration_reach`,
    its pruning ledger (:func:`sweeper.leaderboard.read_pruned`, for the rungs) and its trials table."""
    pruned: dict[str, dict[int | None, int]] = {}
    for cid, kind in zip(reach[CONFIG_ID], reach[PRUNED_KIND]):
        if kind:
            rung = ledger.get(cid, {}).get(RUNG)
            rungs = pruned.setdefault(kind, {})
            rungs[rung] = rungs.get(rung, 0) + 1
    stopped = trials.loc[trials[STATUS] == STOPPED, EPOCHS_DONE].astype(int).value_counts().sort_index()
    return PruningCounts(
        finished=int((reach[OUTCOME] == FINISHED).sum()),
        infeasible=int((reach[OUTCOME] == INFEASIBLE_OUTCOME).sum()),
        pruned={kind: pruned[kind] for kind in (FOLD_HALVING, EPOCH_SCHEDULER) if kind in pruned},
        stopped={int(epoch): int(n) for epoch, n in stopped.items()},
    )


def format_pruning(counts: PruningCounts) -> str:
    """Returns ``2 finished, 3 pruned (fold halving: 2 at rung 1; epoch scheduler: 1 at rung 1), 1 infeasible
    configuration(s); 2 fold trial(s) stopped (1 at epoch 1, 1 at epoch 2)``."""

    def rungs(by_rung: dict[int | None, int]) -> str:
        ordered = sorted(by_rung.items(), key=lambda item: (item[0] is None, item[0] or 0))
        return ", ".join(f"{n} at rung {r}" if r is not None else f"{n} at no rung" for r, n in ordered)

    kinds = "; ".join(f"{kind.replace('_', ' ')}: {rungs(by_rung)}" for kind, by_rung in counts.pruned.items())
    text = f"{counts.finished} finished, {counts.n_pruned} pruned" + (f" ({kinds})" if kinds else "")
    text += f", {counts.infeasible} infeasible configuration(s)"
    n_stopped = sum(counts.stopped.values())
    epochs = ", ".join(f"{n} at epoch {e}" for e, n in counts.stopped.items())
    return text + f"; {n_stopped} fold trial(s) stopped" + (f" ({epochs})" if epochs else "")


@dataclass(frozen=True)
class SweepStatus:
    """A snapshot of one sweep folder; counts are fold trials unless the name says configurations.

    ``planned_folds`` is configurations x folds from the spec (the Optuna budget or the grid
    size); with Optuna it is an upper bound, since a configuration proposed twice is trained once.
    ``eta_s`` = fold trials left x wall-clock time per ended fold trial since the first trial started
    (throughput, so parallel slots and Ray's start-up per trial are included); None until a fold
    trial has ended. ``mean_fold_s`` (the trainables' own time) and ``parallel`` (most fold trials
    seen running at once) are shown for information.
    """

    name: str
    sweep_dir: Path
    search_mode: str
    folds_per_config: int
    planned_configs: int | None
    planned_folds: int | None
    folds_finished: int
    folds_failed: int
    folds_running: int
    folds_pending: int
    configs_seen: int
    configs_done: int
    configs_with_failures: int
    elapsed_s: float
    mean_fold_s: float | None
    parallel: int
    eta_s: float | None
    front_size: int | None
    best: dict[str, Any] | None
    finished: bool
    last_activity_s: float | None
    running: list[RunningTrial] = field(default_factory=list)
    #: fold trials the epoch scheduler stopped; what pruning and constraints did (None: nothing to say)
    folds_stopped: int = 0
    pruning: PruningCounts | None = None

    @property
    def folds_ended(self) -> int:
        return self.folds_finished + self.folds_failed + self.folds_stopped

    @property
    def folds_left(self) -> int | None:
        """Fold trials not ended yet (running included), or None when the plan is unknown."""
        if self.planned_folds is None:
            return None
        return max(self.planned_folds - self.folds_ended, 0)


def read_status(sweep_dir: str | Path, now: float | None = None) -> SweepStatus:
    """Returns the :class:`SweepStatus` of ``sweep_dir`` from its files (no Ray, no MLflow needed).

    Args:
        sweep_dir: ``RESULTS/<sweep name>``.
        now: the current time (seconds since the epoch); default ``time.time()`` (tests pin it).

    Raises:
        FileNotFoundError: ``sweep_dir`` holds neither ``spec.yaml`` nor a Ray Tune folder.
    """
    sweep_dir = Path(sweep_dir)
    now = time.time() if now is None else now
    paths = SweepPaths.at(sweep_dir)
    tune_dir, spec_file = paths.tune_dir, paths.spec_file
    if not spec_file.is_file() and not tune_dir.is_dir():
        raise FileNotFoundError(
            f"{sweep_dir} holds no spec.yaml and no ray/tune folder: is it a sweep folder "
            "(RESULTS/<sweep name>) of `sweeper launch`?"
        )
    spec = _frozen_spec(spec_file)
    folds_per_config = len(spec.data.folds_to_run) if spec else 1
    runs_per_config = folds_per_config * (spec.training.repeats if spec else 1)  # fold trials x repeats
    planned_configs = spec.planned_configurations() if spec else None
    planned_folds = spec.planned_fold_trials() if spec else None
    folders = _trial_folders(tune_dir)
    states = _tune_states(tune_dir)

    try:
        ended = read_trials(sweep_dir)
    except FileNotFoundError:
        ended = pd.DataFrame(columns=[CONFIG_ID, FOLD, REPEAT, STATUS, LOSS])
    ended_keys = {
        (cid, int(fold), int(repeat)): status
        for cid, fold, repeat, status in zip(ended[CONFIG_ID], ended[FOLD], ended[REPEAT], ended[STATUS])
    }
    finished = sum(s == FINISHED for s in ended_keys.values())
    failed = sum(s == FAILED for s in ended_keys.values())
    stopped = sum(s == STOPPED for s in ended_keys.values())

    # Running: the Tune state says RUNNING (or, without a state file, a folder with results) and the
    # leaderboard has not recorded it as ended.
    running_keys, pending = set(), 0
    for key, status in states.items():
        if key in ended_keys:
            continue
        if status == RUNNING:
            running_keys.add(key)
        elif status == PENDING:
            pending += 1
    if not states:
        running_keys = {key for key, info in folders.items() if key not in ended_keys and info["results"]}

    durations = [
        info["duration_s"]
        for key, info in folders.items()
        if ended_keys.get(key) == FINISHED and info["duration_s"] is not None
    ]
    mean_fold = float(np.mean(durations)) if durations else None
    running = []
    for key in sorted(running_keys):
        info = folders.get(key, {})
        running.append(
            RunningTrial(
                loss=info.get("loss", "?"),
                config_id=key[0],
                fold=key[1],
                epoch=info.get("epoch", 0),
                epochs=info.get("epochs"),
                elapsed_s=max(now - info["start"], 0.0) if info.get("start") is not None else 0.0,
            )
        )
    intervals = [
        (info["start"], now if key in running_keys else info["end"])
        for key, info in folders.items()
        if info.get("start") is not None and info.get("end") is not None
    ]
    parallel = max(_max_overlap(intervals), len(running), 1)

    starts = [info["start"] for info in folders.values() if info.get("start") is not None]
    if spec_file.is_file():
        starts.append(spec_file.stat().st_mtime)
    begin = min(starts) if starts else now
    activity = [info["end"] for info in folders.values() if info.get("end") is not None]
    last_result = max(activity) if activity else None

    done = (
        not running
        and not pending
        and (
            (planned_folds is not None and finished + failed + stopped >= planned_folds)
            or _fronts_written_after(sweep_dir, last_result)
        )
    )
    end = last_result if done and last_result is not None else now

    n_ended = finished + failed + stopped
    folds_left = None if planned_folds is None else max(planned_folds - n_ended, 0)
    eta = None
    trial_starts = [info["start"] for info in folders.values() if info.get("start") is not None]
    if folds_left is not None and n_ended and trial_starts:
        # Observed wall-clock per ended fold trial since the first one started: unlike the trainable's
        # own time_total_s it includes the parallel slots and Ray's per-trial start-up (about a third
        # of a demo trial), so it does not promise too early an end.
        per_trial = (end - min(trial_starts)) / n_ended
        eta = 0.0 if done else folds_left * per_trial

    configs_seen = configs_done = configs_failed = 0
    front, best, pruning = None, None, None
    if len(ended):
        by_config = ended.groupby(CONFIG_ID)[STATUS]
        configs_failed = int(by_config.apply(lambda s: (s == FAILED).any()).sum())
        configs_done = int((by_config.size() >= runs_per_config).sum())
        configs_seen = len(set(ended[CONFIG_ID]) | {k[0] for k in running_keys})
        front, best = _front_and_best(sweep_dir)
        pruning = _pruning(sweep_dir, spec, ended)
    else:
        configs_seen = len({k[0] for k in running_keys})

    return SweepStatus(
        name=spec.name if spec else sweep_dir.name,
        sweep_dir=sweep_dir,
        search_mode=spec.search.mode if spec else "?",
        folds_per_config=folds_per_config,
        planned_configs=planned_configs,
        planned_folds=planned_folds,
        folds_finished=finished,
        folds_failed=failed,
        folds_running=len(running),
        folds_pending=pending,
        configs_seen=configs_seen,
        configs_done=configs_done,
        configs_with_failures=configs_failed,
        elapsed_s=max(end - begin, 0.0),
        mean_fold_s=mean_fold,
        parallel=parallel,
        eta_s=eta,
        front_size=front,
        best=best,
        finished=done,
        last_activity_s=None if last_result is None else max(now - last_result, 0.0),
        running=running,
        folds_stopped=stopped,
        pruning=pruning,
    )


def format_status(status: SweepStatus) -> str:
    """Returns a few lines for a person: progress, time, front, and what is running now."""
    s = status
    state = "finished" if s.finished else ("running" if s.folds_running else "not running (interrupted or queued)")
    planned = "?" if s.planned_folds is None else str(s.planned_folds)
    bound = " at most" if s.search_mode == "optuna" and not s.finished else ""
    lines = [f"sweep {s.name!r} ({s.sweep_dir}): {state}"]
    stopped = f", {s.folds_stopped} stopped" if s.folds_stopped else ""
    lines.append(
        f"  fold trials   : {s.folds_ended}/{planned} ended ({s.folds_finished} finished, "
        f"{s.folds_failed} failed{stopped}), {s.folds_running} running, {s.folds_pending} queued"
        + (f"; {s.folds_left}{bound} to go" if s.folds_left is not None and not s.finished else "")
    )
    configs_planned = "?" if s.planned_configs is None else str(s.planned_configs)
    lines.append(
        f"  configurations: {s.configs_done}/{configs_planned} with every fold ended "
        f"({s.configs_with_failures} with a failed fold), {s.configs_seen} started; "
        f"{s.folds_per_config} fold(s) each, {s.search_mode} search"
    )
    if s.pruning is not None:
        lines.append(f"  pruning       : {format_pruning(s.pruning)}")
    timing = f"  time          : {format_duration(s.elapsed_s)} elapsed"
    if not s.finished:
        timing += (
            f", ~{format_duration(s.eta_s)} left"
            if s.eta_s is not None
            else ", time left unknown until a fold trial finishes"
        )
    if s.mean_fold_s is not None:
        timing += f" (mean fold trial {format_duration(s.mean_fold_s)}, {s.parallel} in parallel)"
    lines.append(timing)
    if s.front_size is not None:
        best = ""
        if s.best:
            best = (
                f"; best dice {s.best['dice']:.4f} ({s.best['loss']} {s.best['config_id']}, "
                f"{s.best['n_folds']} fold(s))"
            )
        lines.append(f"  pareto front  : {s.front_size} configuration(s) on sensitivity vs precision{best}")
    for r in s.running:
        of = f"/{r.epochs}" if r.epochs else ""
        lines.append(
            f"  running       : {r.loss} {r.config_id} fold {r.fold}, epoch {r.epoch}{of}, "
            f"{format_duration(r.elapsed_s)}"
        )
    if not s.finished and not s.folds_running and s.last_activity_s is not None:
        lines.append(
            f"  last result {format_duration(s.last_activity_s)} ago; if the driver stopped, continue with "
            "`sweeper launch SPEC --resume`"
        )
    return "\n".join(lines)


def _pruning(sweep_dir: Path, spec: SweepSpec | None, trials: pd.DataFrame) -> PruningCounts | None:
    """Returns the sweep's :class:`PruningCounts` when it prunes or constrains
    (:func:`sweeper.leaderboard.prunes_or_constrains`), else None."""
    if not prunes_or_constrains(spec, sweep_dir, trials):
        return None
    try:
        configs = read_configs(sweep_dir)
    except FileNotFoundError:
        return None
    return pruning_counts(sweep_reach(configs, trials, spec), read_pruned(sweep_dir), trials)


def format_duration(seconds: float | None) -> str:
    """Returns ``45s``, ``3m05s`` or ``2h14m``."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(seconds, 0.0)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


# -- reading the folder ------------------------------------------------------------------------------
def _frozen_spec(spec_file: Path) -> SweepSpec | None:
    """Returns the sweep's frozen spec (validated at launch, so re-read without the loss registry), or None."""
    if not spec_file.is_file():
        return None
    return parse_spec(yaml.safe_load(spec_file.read_text()), str(spec_file), registry=False)


def _trial_config(config: Any) -> TrialConfig | None:
    """Returns the TrialConfig Tune recorded for a trial, or None for what is not one (a foreign folder)."""
    try:
        return TrialConfig.from_dict(config)
    except (ValidationError, TypeError):
        return None


def _tune_states(tune_dir: Path) -> dict[tuple[str, int, int], str]:
    """Returns (config_id, fold, repeat) -> Tune status from the newest experiment state (:mod:`sweeper.tune_state`)."""
    statuses = {}
    for trial in read_tune_trials(tune_dir):
        config = _trial_config(trial.config)
        if config is not None:
            statuses[(config.config_id, config.fold, config.repeat)] = trial.status
    return statuses


def _trial_folders(tune_dir: Path) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Returns (config_id, fold, repeat) -> loss, epochs, epoch reached, start/end times, duration per trial folder."""
    out: dict[tuple[str, int, int], dict[str, Any]] = {}
    if not tune_dir.is_dir():
        return out
    for folder in sorted(p for p in tune_dir.iterdir() if (p / "params.json").is_file()):
        try:
            config = _trial_config(json.loads((folder / "params.json").read_text()))
        except (OSError, ValueError):
            continue
        if config is None:
            continue
        results = _read_results(folder / "result.json")
        info: dict[str, Any] = {
            "loss": config.loss,
            "epochs": config.epochs,
            "results": len(results),
            "epoch": 0,
            "start": None,
            "end": None,
            "duration_s": None,
        }
        if results:
            first, last = results[0], results[-1]
            info["epoch"] = int(last.get("epoch", last.get("training_iteration", 0)))
            info["end"] = float(last.get("timestamp", folder.stat().st_mtime))
            info["duration_s"] = float(last.get("time_total_s", 0.0)) or None
            info["start"] = float(first.get("timestamp", info["end"])) - float(first.get("time_this_iter_s", 0.0))
        else:
            info["start"] = folder.stat().st_mtime
        key = (config.config_id, config.fold, config.repeat)
        if key not in out or info["results"] >= out[key]["results"]:  # a rerun folder of the same trial
            out[key] = info
    return out


def _read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # the line Tune is writing right now
            continue
    return rows


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1]))
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def _fronts_written_after(sweep_dir: Path, last_result: float | None) -> bool:
    """True when the sweep's end-of-run export (pareto/pareto.json) is newer than its last result."""
    summary = SweepPaths.at(sweep_dir).pareto_file(suffix=".json")
    return last_result is not None and summary.is_file() and summary.stat().st_mtime >= last_result


def _front_and_best(sweep_dir: Path) -> tuple[int | None, dict[str, Any] | None]:
    try:
        configs = read_configs(sweep_dir)
    except FileNotFoundError:
        return None, None
    scored = configs.dropna(subset=[c for c in (X_METRIC, Y_METRIC, "dice") if c in configs.columns])
    if scored.empty or X_METRIC not in scored or Y_METRIC not in scored:
        return None, None
    front = int(pareto_table(scored)["on_front"].sum())
    best = None
    eligible = scored[eligibility(scored).to_numpy() == ""]  # pruned (partial means) and infeasible ones are no best
    if "dice" in eligible and len(eligible):
        row = eligible.sort_values("dice", ascending=False, kind="stable").iloc[0]
        best = {
            "config_id": row[CONFIG_ID],
            "loss": row[LOSS],
            "dice": float(row["dice"]),
            "n_folds": int(row[N_FOLDS]),
        }
    return front, best


# -- live printing --------------------------------------------------------------------------------------
def progress_line(
    *,
    ended: int,
    planned: int | None,
    loss: str,
    config_id: str,
    fold: int,
    outcome: str,
    metrics: dict[str, float],
    running: int,
    failed: int,
    elapsed_s: float,
    eta_s: float | None,
    front: int | None,
    epoch: int | None = None,
    note: str = "",
) -> str:
    """Returns the one-line summary :class:`ProgressPrinter` prints for an ended fold trial: ``finished:`` with
    its scores, ``stopped at epoch k`` (``epoch``: where the epoch scheduler stopped it), or ``FAILED``,
    then ``note`` (e.g. ``config pruned at rung 1 (fold halving)``)."""
    shown = " ".join(
        f"{short} {metrics[name]:.2f}"
        for name, short in (("dice", "dice"), ("sensitivity", "sens"), ("precision", "prec"))
        if name in metrics
    )
    what = f"{outcome}: {shown}" if shown and outcome == "finished" else outcome
    if outcome == STOPPED and epoch is not None:
        what = f"{STOPPED} at epoch {epoch}"
    what += f"; {note}" if note else ""
    left = f", ~{format_duration(eta_s)} left" if eta_s is not None else ""
    front_part = f" | front: {front}" if front is not None else ""
    return (
        f"[{ended}/{planned if planned is not None else '?'} folds] {loss} cfg {config_id[:4]}.. fold {fold} "
        f"{what} | {running} running, {failed} failed | {format_duration(elapsed_s)} elapsed{left}{front_part}"
    )


def pruned_note(entry: dict[str, Any]) -> str:
    """Returns what the live line says of a configuration just pruned, from its ledger entry
    (:func:`sweeper.leaderboard.read_pruned`): ``config pruned at rung 1 (fold halving)``."""
    rung = entry.get(RUNG)
    where = f" at rung {rung}" if rung is not None else ""
    return f"config pruned{where} ({pruned_kind(entry).replace('_', ' ')})"


def replayed_line(config: TrialConfig, result: dict[str, Any]) -> str:
    """Returns the line saying that a fold trial reported a result again from a checkpoint on storage instead of
    training (a ``--resume`` after the driver died; :func:`trainables.train.train_fold`)."""
    key = f"{config.config_id}/{config.fold}" + (f"/{config.repeat}" if config.repeat else "")
    epoch = int(result.get("epoch", 0))
    which = "its final checkpoint" if epoch >= config.epochs else f"its epoch-{epoch} checkpoint"
    return f"fold trial {key} ({config.loss}): resumed from {which} on storage"


class ProgressPrinter:
    """Tune callback hooks: one compact line per ended fold trial in the driver, and the live display
    (:mod:`sweeper.console`) of the sweep's status while :func:`sweeper.console.sweep_console` is open
    (Ray-free; :class:`sweeper.callbacks.ProgressCallback` registers them with Tune).

    Keeps only plain numbers and strings, so it pickles with the experiment (Tune saves callbacks
    for ``--resume``) and its counts carry over a resume through :meth:`get_state`.

    Args:
        planned_folds: fold trials the sweep plans (configurations x folds), or None if unknown.
        stream: ``"stdout"`` or ``"stderr"`` (where lines go without a live display).
        objectives: ``(metric, direction)`` pairs of the search (``maximize`` or ``minimize``); the display
            shows the best configuration fold mean of each. Default: sensitivity and precision, maximised.
        sweep_dir: the sweep folder, whose scheduler state tells a stopped fold trial from a finished one and
            whose pruning ledger (:func:`sweeper.leaderboard.read_pruned`; the searcher writes it before this
            hook runs) the configurations pruned and their rungs. Without it a trial ending before its last
            epoch counts as stopped, and its configuration as pruned.
    """

    #: least seconds between two redraws of the status from Tune's loop (``on_step_end``)
    REDRAW_EVERY_S = 1.0

    def __init__(
        self,
        planned_folds: int | None = None,
        stream: str = "stdout",
        objectives: list[tuple[str, str]] | None = None,
        sweep_dir: str | Path | None = None,
    ):
        self.planned_folds = planned_folds
        self.stream = stream
        self.objectives = list(objectives or [(X_METRIC, "maximize"), (Y_METRIC, "maximize")])
        self.sweep_dir = None if sweep_dir is None else str(sweep_dir)
        self.started_at: float | None = None
        self.failed = 0
        self.stopped = 0
        self.pruned_configs: list[str] = []  # in the order their pruning was printed
        self.ended: list[str] = []
        # config_id -> fold -> (sensitivity, precision), finished folds only
        self.scores: dict[str, dict[tuple[int, int], tuple[float, float]]] = {}  # (fold, repeat) -> point
        # config_id -> (fold, repeat) -> {objective metric: value}, finished fold trials only
        self.objective_values: dict[str, dict[tuple[int, int], dict[str, float]]] = {}
        self._drawn_at = 0.0

    def get_state(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fill_defaults()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fill_defaults()

    def _fill_defaults(self) -> None:
        """Gives a printer saved by an earlier release (a resumed sweep) the attributes added since."""
        self.__dict__.setdefault("objectives", [(X_METRIC, "maximize"), (Y_METRIC, "maximize")])
        if "pruned" in self.__dict__:  # an earlier release's count of stopped fold trials
            self.stopped = self.__dict__.pop("pruned")
        self.__dict__.setdefault("stopped", 0)
        self.__dict__.setdefault("pruned_configs", [])
        self.__dict__.setdefault("sweep_dir", None)
        self.__dict__.setdefault("objective_values", {})
        self.__dict__.setdefault("_drawn_at", 0.0)

    def setup(self, **info) -> None:
        if self.started_at is None:
            self.started_at = time.time()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.show(trials)

    def on_step_end(self, iteration, trials, **info) -> None:
        if time.monotonic() - self._drawn_at >= self.REDRAW_EVERY_S:
            self.show(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if result.get(REPLAYED_KEY):
            self.emit(replayed_line(TrialConfig.from_dict(trial.config), result))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._ended(trials, trial, self.completed_outcome(trial))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._ended(trials, trial, "FAILED")

    def completed_outcome(self, trial) -> str:
        """Returns how a trial Tune completed ended: ``finished``, or ``stopped`` when the epoch scheduler
        ended it early (its best epoch so far is a record, not a score)."""
        stopped = None if self.sweep_dir is None else scheduler_stopped(self.sweep_dir)
        return fold_trial_status(TrialConfig.from_dict(trial.config), trial.last_result, stopped)

    def _newly_pruned(self, config_id: str, outcome: str) -> str:
        """Returns the note on the configuration's pruning when this trial's end pruned it ("" otherwise), and
        counts it once."""
        if config_id in self.pruned_configs:
            return ""
        if self.sweep_dir is not None:
            entry = read_pruned(self.sweep_dir).get(config_id)
        else:  # no ledger: the searcher prunes the configuration of a stopped fold trial
            entry = {"reason": "stopped at epoch"} if outcome == STOPPED else None
        if entry is None:
            return ""
        self.pruned_configs.append(config_id)
        return pruned_note(entry)

    def _ended(self, trials, trial, outcome: str) -> None:
        if self.started_at is None:
            self.started_at = time.time()
        config, result = TrialConfig.from_dict(trial.config), trial.last_result or {}
        key = f"{config.config_id}/{config.fold}" + (f"/{config.repeat}" if config.repeat else "")
        if key not in self.ended:
            self.ended.append(key)
        metrics = {k.removeprefix(BEST_PREFIX): float(v) for k, v in result.items() if k.startswith(BEST_PREFIX)}
        if outcome == "finished":
            if X_METRIC in metrics and Y_METRIC in metrics:
                point = (metrics[X_METRIC], metrics[Y_METRIC])
                self.scores.setdefault(config.config_id, {})[(config.fold, config.repeat)] = point
            values = {name: metrics[name] for name, _ in self.objectives if name in metrics}
            if values:
                self.objective_values.setdefault(config.config_id, {})[(config.fold, config.repeat)] = values
        elif outcome == STOPPED:
            self.stopped += 1
        elif outcome == "FAILED":
            self.failed += 1
        note = self._newly_pruned(config.config_id, outcome)
        status = self.progress(trials, ending=trial)
        line = progress_line(
            ended=status.ended,
            planned=self.planned_folds,
            loss=config.loss,
            config_id=config.config_id,
            fold=config.fold,
            outcome=outcome,
            metrics=metrics,
            running=status.running,
            failed=self.failed,
            elapsed_s=status.elapsed_s,
            eta_s=status.eta_s,
            front=status.front,
            epoch=int(result["epoch"]) if outcome == STOPPED and "epoch" in result else None,
            note=note,
        )
        self.emit(line)
        self.show(trials, ending=trial)

    def progress(self, trials, ending=None):
        """Returns the :class:`sweeper.console.SweepProgress` of the sweep now (``ending``: a trial that has
        ended but that Tune may still list as running)."""
        from sweeper.console import SweepProgress

        elapsed = time.time() - self.started_at if self.started_at is not None else 0.0
        eta = None
        if self.planned_folds is not None and self.ended:  # throughput so far: parallel slots and start-up included
            eta = max(self.planned_folds - len(self.ended), 0) * elapsed / len(self.ended)
        return SweepProgress(
            planned=self.planned_folds,
            ended=len(self.ended),
            failed=self.failed,
            stopped=self.stopped,
            configs_pruned=len(self.pruned_configs),
            running=sum(t.status == RUNNING and t is not ending for t in trials),
            elapsed_s=elapsed,
            eta_s=eta,
            best=self.best_so_far(),
            front=self.front_size(),
        )

    def best_so_far(self) -> dict[str, float]:
        """Returns each objective's best configuration fold mean so far (max, or min for ``minimize``)."""
        best: dict[str, float] = {}
        values = self.objective_values
        for name, direction in self.objectives:
            means = [
                float(np.mean([fold[name] for fold in folds.values() if name in fold]))
                for folds in values.values()
                if any(name in fold for fold in folds.values())
            ]
            if means:
                best[name] = min(means) if direction == "minimize" else max(means)
        return best

    def front_size(self) -> int | None:
        """Returns how many configurations (fold means so far) are on the sensitivity-precision front."""
        if not self.scores:
            return None
        points = np.array([np.mean(list(folds.values()), axis=0) for folds in self.scores.values()])
        return int(non_dominated(points).sum())

    def show(self, trials, ending=None) -> None:
        """Updates the live display, when one is open (:func:`sweeper.console.active_display`)."""
        from sweeper.console import active_display

        display = active_display()
        self._drawn_at = time.monotonic()
        if display is not None:
            display.update(self.progress(trials, ending=ending))

    def emit(self, line: str) -> None:
        import sys

        from sweeper.console import active_display

        display = active_display()
        if display is not None:
            display.write(line)
        else:
            print(line, file=sys.stderr if self.stream == "stderr" else sys.stdout, flush=True)
