"""MLflow tracking from the driver: experiment = sweep, runs nested sweep > configuration > fold.

Tune callback hooks (:class:`MlflowTracker`, registered with Tune as
:class:`sweeper.callbacks.MlflowCallback`) run in the driver process, so workers need no access to the
tracking server and the store has one writer. This module imports no Ray; it reads each trial's
settings through :class:`trainables.contract.TrialConfig`. Runs nest through the
``mlflow.parentRunId`` tag (Ray's ``MLflowLoggerCallback`` has no nesting) and carry
``sweeper.level`` = ``sweep`` | ``config`` | ``fold``. Runs are found again by their tags, so a
resumed sweep reuses its runs instead of duplicating them. A tracking server that goes away
mid-sweep costs nothing: writes are kept and retried (:class:`MlflowTracker`); one unreachable at
launch stops the launch before Ray starts (:func:`check_tracking_server`). A fold run also gets its
trial's out-of-fold case records (artifact ``cases/cases.parquet``, from which
:func:`sweeper.leaderboard.rebuild_sweep_cases` restores lost ones); a configuration run, once its
folds have ended, the leaderboard's intervals (``<metric>_ci_low``/``_ci_high``) and their method
(tag ``sweeper.interval_method``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus

from sweeper.leaderboard import (
    FINISHED,
    PRUNED,
    RUNG,
    STOPPED,
    STOPPED_EPOCH,
    STOPPED_FOLD,
    fold_trial_status,
    gather_trial_cases,
    pruned_kind,
    read_pruned,
    trial_error_text,
)
from sweeper.paths import MLFLOW_ARTIFACTS, SweepPaths, mlflow_artifacts, mlflow_db
from sweeper.pruning import rung_number, scheduler_rungs, scheduler_stopped
from trainables.contract import BEST_PREFIX, BEST_WEIGHTS_FILE, REPLAYED_KEY, TrialConfig

LEVEL_TAG = "sweeper.level"
PARENT_TAG = "mlflow.parentRunId"
CONFIG_TAG = "sweeper.config_id"
FOLD_TAG = "sweeper.fold"
#: which of the fold's training.repeats seeded runs a fold run is
REPEAT_TAG = "sweeper.repeat"
ERROR_TAG = "sweeper.error"
#: a fold run the epoch scheduler stopped (``stopped``, with the epoch and its rung) or a pruned configuration run
#: (``pruned``, with why, by which pruning, at which rung, and where the scheduler stopped it): README "Pruning"
STATUS_TAG, STOPPED_EPOCH_TAG, PRUNED_AT_TAG = "sweeper.status", "sweeper.stopped_epoch", "sweeper.pruned_at"
PRUNED_RUNG_TAG, PRUNED_BY_TAG, STOPPED_FOLD_TAG = "sweeper.pruned_rung", "sweeper.pruned_by", "sweeper.stopped_fold"
#: on a configuration run: which interval its ``<metric>_ci_low``/``_ci_high`` metrics are (leaderboard's interval_method)
INTERVAL_TAG = "sweeper.interval_method"
#: the fold run's artifact folder holding its out-of-fold case records (``cases/cases.parquet``)
CASES_ARTIFACT_DIR = "cases"
SWEEP_LEVEL, CONFIG_LEVEL, FOLD_LEVEL = "sweep", "config", "fold"
#: MLflow 3's experiment tag for what an experiment is for: ``custom_model_development`` (classic training)
#: or ``genai_development`` (the ``ExperimentKind`` values of MLflow 3.17's web app and of its onboarding
#: tools). MLflow 3.17.2's own UI picks its view from the ``workflowType`` query or the view last chosen in
#: that browser, not from the tag (a feature flag in its bundle is hard-wired on): :func:`training_view_index`
#: makes the training view the browser's default instead.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_EXPERIMENT = "custom_model_development"
logger = logging.getLogger(__name__)

#: keys of a trial result that are bookkeeping, not metrics
_NOT_METRICS = {
    "epoch",
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "pid",
    "done",
    "time_since_restore",
    "iterations_since_restore",
    "checkpoint_dir_name",
}


def default_tracking_uri(results_dir: Path) -> str:
    """Returns the embedded store: ``sqlite:///RESULTS/mlflow.db``."""
    return f"sqlite:///{mlflow_db(results_dir)}"


def local_store_folder(uri: str | None) -> Path | None:
    """Returns the folder of a local MLflow store, ``sqlite:///PATH/mlflow.db`` -> ``PATH`` (relative to the
    current folder for ``sqlite:///rel.db``, absolute for ``sqlite:////abs.db``), or None for a server."""
    text = str(uri or "")
    if not text.startswith("sqlite:///"):
        return None
    return Path(text.removeprefix("sqlite:///")).expanduser().resolve().parent


def store_artifact_location(uri: str | None, experiment: str) -> str | None:
    """Returns where a new experiment of a local store keeps its artifacts: ``mlartifacts/<experiment>`` beside
    the store (so the disk check counts them), or None for a server (the server decides)."""
    folder = local_store_folder(uri)
    return None if folder is None else f"{(folder / MLFLOW_ARTIFACTS).as_uri()}/{experiment}"


def artifact_root(results_dir: Path) -> str:
    """Returns the artifact folder beside the embedded store: ``RESULTS/mlartifacts``."""
    return mlflow_artifacts(results_dir).as_uri()


#: the TrialConfig fields logged as MLflow params of a fold run (its configuration run: all but the fold),
#: identity first, then the training settings a reader compares runs by
PARAM_FIELDS = (
    "config_id",
    "fold",
    "repeat",
    "arch",
    "encoder",
    "encoder_weights",
    "heads",
    "loss",
    "roi_ratio",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "min_lr",
    "optimizer",
    "schedule",
    "seed",
    "repeats",
    "image_size",
    "context",
    "augmentation",
    "threshold",
    "select_metric",
)


def trial_params(config: TrialConfig) -> dict[str, str]:
    """Returns the MLflow params of a fold trial: identity, loss knobs (``loss.<knob>``), training settings."""
    values = config.model_dump(mode="json", include=set(PARAM_FIELDS))
    params = {key: values[key] for key in PARAM_FIELDS if values[key] is not None}
    params.update({f"loss.{k}": v for k, v in config.loss_params.items()})
    # the optimiser and schedule settings as JSON ({"name": "sgd", "momentum": 0.9, ...})
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else str(v) for k, v in params.items()}


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Returns the reportable metrics of a Tune result (numbers only, bookkeeping dropped)."""
    return {
        k: float(v)
        for k, v in result.items()
        if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class TrackingUnreachableError(RuntimeError):
    """The MLflow tracking server cannot be reached (at launch, or through a whole outage)."""


def is_server_uri(uri: str | None) -> bool:
    """True for a tracking server (``http(s)://``); False for sqlite/file stores, which need no probe."""
    return str(uri or "").startswith(("http://", "https://"))


def server_reachable(uri: str, timeout: float = 5.0) -> str | None:
    """Returns None when the MLflow server at ``uri`` answers ``GET /health``, else why it does not."""
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            response.read()
    except Exception as err:  # noqa: BLE001 - refused, timed out, HTTP error: all mean not usable
        return str(getattr(err, "reason", None) or err)
    return None


def check_tracking_server(uri: str | None, timeout: float = 5.0) -> None:
    """Raises :class:`TrackingUnreachableError` naming ``uri`` and the fix when a tracking server
    does not answer; does nothing for sqlite/file stores. Called by ``launch`` before Ray starts."""
    if not is_server_uri(uri):
        return
    why = server_reachable(uri, timeout)
    if why is not None:
        raise TrackingUnreachableError(
            f"MLflow tracking server {uri} is unreachable ({why}); nothing was started. Start it "
            f"(mlflow server --host ... --port ...), or fix tracking.uri in the spec / $MLFLOW_TRACKING_URI "
            "(leave both unset to log to RESULTS/mlflow.db), then launch again"
        )


#: MLflow's HTTP retry settings while the tracker writes: fail fast, the tracker's own buffer retries
#: (MLflow's defaults, 7 retries with backoff, would block the Tune driver for minutes per call)
_FAST_FAIL_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


@contextlib.contextmanager
def _fast_fail():
    """Sets :data:`_FAST_FAIL_ENV` (only where the user set nothing) for the duration of a flush."""
    added = {k: v for k, v in _FAST_FAIL_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class MlflowTracker:
    """Writes the sweep to MLflow from the Tune driver (Tune callback hooks, Ray-free;
    :class:`sweeper.callbacks.MlflowCallback` registers them with Tune).

    Every Tune event becomes a write *event* (plain data: configs, metrics with their timestamps
    and steps) queued in order and flushed at once. When the tracking server is unreachable (a
    write fails and ``GET /health`` fails too) the events stay queued and are retried on the next
    Tune event, at most every ``retry_every_s``; the sweep itself (trials, leaderboard, Optuna) goes
    on. At the end of the sweep the tracker waits up to ``max_wait_s`` for the server; if it is still
    down the unwritten events are saved to ``SWEEP_DIR/mlflow_pending.pkl`` and
    :class:`TrackingUnreachableError` says to run ``sweeper launch SPEC --resume`` once the server is
    back: the resumed tracker writes them first. Replays are idempotent: runs are found by their
    tags, missing params are added, and a metric with the same key, step, value and timestamp is
    stored once by MLflow. A write that fails while the server answers is a real error and raised; a
    sqlite/file store has no outage, its errors are raised at once as before.

    Args:
        tracking_uri: MLflow tracking URI (``sqlite:///...`` or ``http://host:5000``).
        experiment: experiment name (the sweep name).
        artifact_location: where a new experiment stores artifacts (ignored for an existing one).
        spec_file: the frozen spec, logged as an artifact of the sweep run (its folder is the sweep's).
        n_folds: fold trials per configuration (folds x training.repeats); a configuration run closes when
            all have ended.
        max_wait_s: how long the end of the sweep waits for an unreachable server.
        retry_every_s: the least time between two retries of queued events during an outage.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        artifact_location: str | None,
        spec_file: Path,
        n_folds: int,
        max_wait_s: float = 300.0,
        retry_every_s: float = 2.0,
    ):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.spec_file = str(spec_file)
        self.n_folds = n_folds
        self.max_wait_s = max_wait_s
        self.retry_every_s = retry_every_s
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._sweep_run: str | None = None
        self._run_ids: dict[tuple, str] = {}
        self._pending: list[tuple] = []
        self._retry_at = 0.0
        self.buffered_max = 0  # most events ever queued at once (0: never an outage)

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        state = self.__dict__.copy()
        state.update(_client=None, _run_ids={}, _pending=[], _retry_at=0.0)
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    @property
    def sweep_dir(self) -> Path:
        """The sweep folder (the frozen spec's)."""
        return Path(self.spec_file).parent

    @property
    def pending_file(self) -> Path:
        return SweepPaths.at(Path(self.spec_file).parent).mlflow_pending

    # -- Tune hooks: each queues one event and flushes ------------------------------------------
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        self._pending = []
        if self.pending_file.is_file():  # an earlier run ended during an outage: its events go first
            self._pending = pickle.loads(self.pending_file.read_bytes())
            self.pending_file.unlink()  # held in memory now; saved again if the server is down at the end
        self._push(("setup",))

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._push(("start", TrialConfig.from_dict(trial.config)))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        config = TrialConfig.from_dict(trial.config)
        replayed = bool(result.get(REPLAYED_KEY))
        self._push(("result", config, step, numeric_metrics(result), int(time.time() * 1000), replayed))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        detail = (trial.last_result or {}).get("loss_detail")
        best = None
        if trial.checkpoint is not None:
            path = Path(trial.checkpoint.path) / BEST_WEIGHTS_FILE
            best = str(path) if path.is_file() else None
        config = TrialConfig.from_dict(trial.config)
        stopped = fold_trial_status(config, trial.last_result, scheduler_stopped(self.sweep_dir)) == STOPPED
        # a stopped trial's records are of a partial model: not gathered (nor is it a finished fold)
        cases = (
            None
            if stopped
            else gather_trial_cases(self.sweep_dir, config.config_id, config.fold, trial.checkpoint, config.repeat)
        )
        summary = self._config_summary(trials, trial, False)
        if stopped:
            epoch = int(trial.last_result["epoch"])
            self._push(("stopped", config, epoch, rung_number(epoch, scheduler_rungs(self.sweep_dir))))
        self._push(("complete", config, detail, best, summary, None if cases is None else str(cases)))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        reason = trial_error_text(trial)[-4000:]
        summary = self._config_summary(trials, trial, True)
        self._push(("error", TrialConfig.from_dict(trial.config), reason, summary))

    def on_experiment_end(self, trials, **info) -> None:
        self._push(("end", sum(t.status == "ERROR" for t in trials)))
        if not self._flush(self.max_wait_s):
            self._give_up()

    # -- the queue -----------------------------------------------------------------------------
    def _push(self, event: tuple) -> None:
        self._pending.append(event)
        if time.monotonic() >= self._retry_at:
            self._flush(0.0)

    def _flush(self, wait_s: float) -> bool:
        """Writes queued events in order; returns True when none is left. While the server is down,
        retries every ``retry_every_s`` for up to ``wait_s`` seconds (0: one try)."""
        deadline = time.monotonic() + wait_s
        while self._pending:
            try:
                with _fast_fail():
                    self._apply(self._pending[0])
            except Exception as err:  # noqa: BLE001 - sorted below: outage (keep) or real error (raise)
                why = server_reachable(self.tracking_uri) if is_server_uri(self.tracking_uri) else None
                if why is None:
                    raise  # the store answers: a real error, not an outage
                self.buffered_max = max(self.buffered_max, len(self._pending))
                self._retry_at = time.monotonic() + self.retry_every_s
                logger.warning(
                    "MLflow server %s unreachable (%s; %s): %d write(s) kept and retried; the sweep goes on",
                    self.tracking_uri,
                    why,
                    type(err).__name__,
                    len(self._pending),
                )
                if time.monotonic() + self.retry_every_s > deadline:
                    return False
                time.sleep(self.retry_every_s)
                continue
            self._pending.pop(0)
        return True

    def _give_up(self) -> None:
        self.pending_file.write_bytes(pickle.dumps(self._pending))
        n = len(self._pending)
        self._pending = []
        raise TrackingUnreachableError(
            f"MLflow server {self.tracking_uri} stayed unreachable for {self.max_wait_s:.0f} s: {n} MLflow write(s) "
            f"(runs, metrics, statuses) are kept in {self.pending_file}. The leaderboard and the Optuna study are "
            "complete. Once the server is back, run `sweeper launch SPEC --resume` (same --results) to write them"
        )

    def _apply(self, event: tuple) -> None:
        """Writes one queued event: ``(kind, *args)`` goes to ``_write_<kind>(*args)``."""
        kind, *args = event
        getattr(self, f"_write_{kind}")(*args)

    def _write_setup(self) -> None:
        self._experiment_id = ensure_experiment(self.client, self.experiment, self.artifact_location)
        self._sweep_run = self._find_or_create((SWEEP_LEVEL,), {LEVEL_TAG: SWEEP_LEVEL}, run_name=self.experiment)
        if not self.client.list_artifacts(self._sweep_run):
            self.client.log_artifact(self._sweep_run, self.spec_file)
        self.client.update_run(self._sweep_run, status="RUNNING")

    def _write_start(self, config: TrialConfig) -> None:
        self.client.update_run(self._fold_run(config), status="RUNNING")

    def _write_result(
        self, config: TrialConfig, step: int, values: dict[str, float], now: int, replayed: bool = False
    ) -> None:
        run_id = self._fold_run(config)
        if replayed and values and self._has_step(run_id, next(iter(values)), step):
            return  # a result reported again from its checkpoint, logged already by the driver that died
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        self.client.log_batch(run_id, metrics=metrics, synchronous=True)

    def _has_step(self, run_id: str, key: str, step: int) -> bool:
        """True when the run's metric ``key`` holds a value at ``step``."""
        return any(m.step == step for m in self.client.get_metric_history(run_id, key))

    def _write_complete(
        self, config: TrialConfig, detail: str | None, best: str | None, summary, cases: str | None = None
    ) -> None:
        run_id = self._fold_run(config)
        if detail:
            self.client.set_tag(run_id, "sweeper.loss_detail", detail)
        if best and Path(best).is_file() and not self.client.list_artifacts(run_id, "checkpoint"):
            self.client.log_artifact(run_id, best, artifact_path="checkpoint")
        if cases and Path(cases).is_file() and not self.client.list_artifacts(run_id, CASES_ARTIFACT_DIR):
            self._log_cases(run_id, Path(cases))
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        self._close_config(config, summary)

    def _write_stopped(self, config: TrialConfig, epoch: int, rung: int | None = None) -> None:
        run_id = self._fold_run(config)
        self.client.set_tag(run_id, STATUS_TAG, STOPPED)
        self.client.set_tag(run_id, STOPPED_EPOCH_TAG, str(epoch))
        if rung is not None:  # stopped at a rung (a sibling of a stopped fold stops at its next epoch, at none)
            self.client.set_tag(run_id, PRUNED_RUNG_TAG, str(rung))

    def _write_error(self, config: TrialConfig, reason: str, summary) -> None:
        run_id = self._fold_run(config)
        self.client.set_tag(run_id, ERROR_TAG, reason)
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        self._close_config(config, summary)

    def _write_end(self, failed: int) -> None:
        self.client.set_tag(self._sweep_run, "sweeper.failed_trials", str(failed))
        self.client.set_terminated(self._sweep_run, "FINISHED" if not failed else "FAILED")

    # -- runs -----------------------------------------------------------------------------------
    def _find_or_create(self, key: tuple, tags: dict[str, str], run_name: str, params: dict | None = None) -> str:
        if key in self._run_ids:
            return self._run_ids[key]
        filters = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items() if k != PARENT_TAG)
        found = self.client.search_runs([self._experiment_id], filter_string=filters, max_results=1)
        if found:
            run_id = found[0].info.run_id
            # a replay after an outage may find a run whose params never arrived
            missing = {k: v for k, v in (params or {}).items() if k not in found[0].data.params}
        else:
            run_id = self.client.create_run(self._experiment_id, tags=tags, run_name=run_name).info.run_id
            missing = params or {}
        if missing:
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in missing.items()], synchronous=True)
        self._run_ids[key] = run_id
        return run_id

    def _config_run(self, config: TrialConfig) -> str:
        cid = config.config_id
        params = {k: v for k, v in trial_params(config).items() if k not in ("fold", "repeat")}
        return self._find_or_create(
            (CONFIG_LEVEL, cid),
            {LEVEL_TAG: CONFIG_LEVEL, CONFIG_TAG: cid, PARENT_TAG: self._sweep_run},
            run_name=f"{config.loss}-{config.arch}-{config.encoder}-{cid}",
            params=params,
        )

    def _fold_run(self, config: TrialConfig) -> str:
        cid, fold, repeat = config.config_id, config.fold, config.repeat
        parent = self._config_run(config)
        return self._find_or_create(
            (FOLD_LEVEL, cid, fold, repeat),
            {LEVEL_TAG: FOLD_LEVEL, CONFIG_TAG: cid, FOLD_TAG: str(fold), REPEAT_TAG: str(repeat), PARENT_TAG: parent},
            run_name=f"{config.loss}-{cid}-fold{fold}" + (f"-repeat{repeat}" if repeat else ""),
            params=trial_params(config),
        )

    def _config_summary(self, trials, trial, failed: bool) -> tuple | None:
        """Returns (fold means of the ``best.*`` metrics over finished folds, status, timestamp, intervals,
        interval method, why it was pruned or "", its pruning-ledger entry or None) of the trial's configuration once
        all its folds have ended (a pruned one: all it started), else None; taken when the event happens, written
        with it."""
        cid = TrialConfig.from_dict(trial.config).config_id
        others = [t for t in trials if t is not trial and TrialConfig.from_dict(t.config).config_id == cid]
        ended = [t for t in others if t.status in ("TERMINATED", "ERROR")] + [trial]
        # a pruned configuration (the searcher told Optuna before this hook) closes once its started folds end
        pruned = read_pruned(self.sweep_dir).get(cid)
        if len(ended) < (len(others) + 1 if pruned else self.n_folds):
            return None
        stopped = scheduler_stopped(self.sweep_dir)
        finished = [
            t
            for t in [*(t for t in others if t.status == "TERMINATED"), *([] if failed else [trial])]
            if fold_trial_status(TrialConfig.from_dict(t.config), t.last_result, stopped) == FINISHED
        ]  # a fold the scheduler stopped is no score
        keys = [k for k in (finished[0].last_result if finished else {}) if k.startswith(BEST_PREFIX)]
        means = []
        for key in keys:
            by_fold: dict[int, list[float]] = {}  # a fold's repeats are averaged first, as the leaderboard does
            for t in finished:
                if key in t.last_result:
                    by_fold.setdefault(TrialConfig.from_dict(t.config).fold, []).append(t.last_result[key])
            if by_fold:
                fold_means = [sum(v) / len(v) for v in by_fold.values()]
                means.append((key.removeprefix(BEST_PREFIX), sum(fold_means) / len(fold_means)))
        failed_any = any(t.status == "ERROR" for t in others) or failed
        status = "FAILED" if failed_any else "FINISHED"
        intervals, method = self._config_intervals(cid, finished)
        return means, status, int(time.time() * 1000), intervals, method, (pruned or {}).get("reason", ""), pruned

    def _config_intervals(self, cid: str, finished: list) -> tuple[list[tuple[str, float]], str]:
        """Returns the configuration's intervals as the leaderboard computes them (patient bootstrap over its
        gathered case records, else the corrected fold interval) as ``(<metric>_ci_low|_ci_high, value)``
        pairs and the interval method; taken when its last fold ends, so a replay logs the same numbers."""
        import pandas as pd

        from sweeper.leaderboard import (
            CONFIG_ID,
            FINISHED,
            INTERVAL_METHOD,
            aggregate,
            patient_interval_rows,
            sweep_evidence_settings,
            trial_row,
        )

        rows = [trial_row(TrialConfig.from_dict(t.config), t.last_result, FINISHED) for t in finished]
        if not rows:
            return [], ""
        trials = pd.DataFrame(rows)
        settings, n_folds = sweep_evidence_settings(self.sweep_dir)
        patient = patient_interval_rows(self.sweep_dir, trials, [cid], settings)
        row = aggregate(trials, patient, n_folds=n_folds, confidence=settings.confidence)
        row = row[row[CONFIG_ID] == cid].iloc[0]
        values = [
            (name, float(row[name]))
            for name in row.index
            if name.endswith(("_ci_low", "_ci_high")) and pd.notna(row[name])
        ]
        return values, str(row[INTERVAL_METHOD])

    def _log_cases(self, run_id: str, part: Path) -> None:
        """Logs a fold trial's gathered records as ``cases/cases.parquet`` of its fold run (the name
        :func:`sweeper.leaderboard.rebuild_sweep_cases` restores from)."""
        import shutil
        import tempfile

        from trainables.contract import CASES_FILE

        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(part, Path(tmp) / CASES_FILE)
            self.client.log_artifact(run_id, str(Path(tmp) / CASES_FILE), artifact_path=CASES_ARTIFACT_DIR)

    def _close_config(self, config: TrialConfig, summary) -> None:
        """Logs the fold means (and the leaderboard's intervals, when the summary holds them) on the
        configuration run and closes it (when all its folds have ended)."""
        if summary is None:
            return
        means, status, now, *rest = summary  # older saved events hold 3, 5 or 6 items
        intervals, method = rest[:2] if rest else ([], None)
        pruned_at = rest[2] if len(rest) > 2 else ""
        entry = (rest[3] if len(rest) > 3 else None) or {"reason": pruned_at}
        run_id = self._config_run(config)
        if pruned_at:
            for key, value in pruned_tags(entry).items():
                self.client.set_tag(run_id, key, value)
        metrics = [Metric(k, v, now, 0) for k, v in [*means, *intervals]]
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000], synchronous=True)
        if method:
            self.client.set_tag(run_id, INTERVAL_TAG, method)
        self.client.set_terminated(run_id, status)


def pruned_tags(entry: dict[str, Any]) -> dict[str, str]:
    """Returns the tags of a pruned configuration's run from its pruning-ledger entry
    (:func:`sweeper.leaderboard.read_pruned`): status ``pruned``, why, by which pruning (``fold_halving`` or
    ``epoch_scheduler``), the rung, and the fold and epoch where the scheduler stopped it (those it records)."""
    tags = {STATUS_TAG: PRUNED, PRUNED_AT_TAG: str(entry.get("reason", "")), PRUNED_BY_TAG: pruned_kind(entry)}
    for tag, key in ((PRUNED_RUNG_TAG, RUNG), (STOPPED_FOLD_TAG, STOPPED_FOLD), (STOPPED_EPOCH_TAG, STOPPED_EPOCH)):
        if entry.get(key) is not None:
            tags[tag] = str(entry[key])
    return tags


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Returns the id of experiment ``name``, created (with ``artifact_location``) when missing.

    Created through the client, not ``mlflow.set_experiment``, which leaks into the environment. The
    experiment carries :data:`EXPERIMENT_KIND_TAG` = :data:`TRAINING_EXPERIMENT` (an older experiment of
    the same name gets it on resume), so the MLflow UI opens it on its runs table, not its GenAI view.
    """
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.tags.get(EXPERIMENT_KIND_TAG) != TRAINING_EXPERIMENT:
            client.set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT)
        return existing.experiment_id
    return client.create_experiment(
        name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT}
    )


def experiment_page(tracking_uri: str, name: str, ui_url: str) -> str:
    """Returns the MLflow UI page of experiment ``name``, ``UI_URL/#/experiments/<id>`` (`sweeper ui` opens it on
    its runs table: :func:`training_view_index`), or the UI's experiment list when the store does not hold it (or
    cannot be read)."""
    base = ui_url.rstrip("/")
    try:
        experiment = MlflowClient(tracking_uri).get_experiment_by_name(name)
    except Exception:  # noqa: BLE001 - a link is a convenience: any store problem falls back to the list
        experiment = None
    if experiment is None:
        return f"{base}/#/experiments"
    return f"{base}/#/experiments/{experiment.experiment_id}"


#: the ``mlflow.app`` entry point (pyproject.toml) that `sweeper ui` passes to ``mlflow server --app-name``
TRAINING_VIEW_APP = "sweeper-training-view"
#: where MLflow 3.17's web app keeps the view it shows, "Model training" (``machine_learning``) or GenAI
#: (``genai``, its default), as JSON in the browser's localStorage (its ``useLocalStorage`` hook names the key
#: ``<key>_v<version>``, here ``mlflow.workflowType`` version 1); a ``workflowType`` query overrides it
WORKFLOW_TYPE_STORAGE_KEY = "mlflow.workflowType_v1"
TRAINING_WORKFLOW = "machine_learning"
#: where the web app keeps an experiment page's runs-table state (its LocalStorageStore 1.1, scope
#: ``ExperimentPage-<JSON list of the sorted experiment ids>``); its ``runsExpanded`` maps a run id to whether
#: the run's child runs are shown (MLflow shows them collapsed until the + beside the run is clicked)
EXPERIMENT_PAGE_STATE_KEY = "MLflowLocalStorage-1.1-ExperimentPage-{ids}-ReactComponentState"
_TRAINING_VIEW_SCRIPT_ID = "sweeper-training-view"
# Sets the training view unless this browser already holds a choice, and marks each parent run expanded unless
# the browser holds a choice for it (a run the user collapsed stays collapsed); the rest of the saved state is
# kept. Storage errors (disabled localStorage) leave MLflow's defaults.
_TRAINING_VIEW_SCRIPT = """<script id="%(id)s">(function () {
  try {
    var store = window.localStorage, view = %(view)s, expand = %(expand)s;
    if (store.getItem(view[0]) === null) store.setItem(view[0], JSON.stringify(view[1]));
    Object.keys(expand).forEach(function (key) {
      var state = JSON.parse(store.getItem(key) || "{}"), shown = state.runsExpanded || {};
      expand[key].forEach(function (run) { if (!(run in shown)) shown[run] = true; });
      state.runsExpanded = shown;
      store.setItem(key, JSON.stringify(state));
    });
  } catch (error) {}
})();</script>"""


def _script_json(value: Any) -> str:
    """``value`` as JSON that cannot end the ``<script>`` element it sits in."""
    return json.dumps(value).replace("<", "\\u003c")


def training_view_index(html: str, expand: dict[str, list[str]] | None = None) -> str:
    """Returns MLflow's ``index.html`` with a script, first in its ``<head>`` (before MLflow's own, deferred
    one), that opens the UI in its training view with the runs of ``expand`` (experiment id -> parent run
    ids) expanded, in a browser that has no choice of its own yet: it sets
    :data:`WORKFLOW_TYPE_STORAGE_KEY` and the ``runsExpanded`` entries of :data:`EXPERIMENT_PAGE_STATE_KEY`
    only where they are unset. Idempotent: an earlier injection is replaced; html without ``<head>`` gets
    the script in front."""
    start = html.find(f'<script id="{_TRAINING_VIEW_SCRIPT_ID}">')
    if start >= 0:
        html = html[:start] + html[html.index("</script>", start) + len("</script>") :]
    by_key = {
        EXPERIMENT_PAGE_STATE_KEY.format(ids=json.dumps([experiment_id])): runs
        for experiment_id, runs in (expand or {}).items()
    }
    script = _TRAINING_VIEW_SCRIPT % {
        "id": _TRAINING_VIEW_SCRIPT_ID,
        "view": _script_json([WORKFLOW_TYPE_STORAGE_KEY, TRAINING_WORKFLOW]),
        "expand": _script_json(by_key),
    }
    head = html.lower().find("<head")
    if head < 0:
        return script + html
    at = html.index(">", head) + 1
    return html[:at] + script + html[at:]


def parent_runs(client: MlflowClient) -> dict[str, list[str]]:
    """Returns, per experiment id, the ids of the active sweep and configuration runs (the runs with runs
    nested in them), for :func:`training_view_index`."""
    experiments: list[str] = []
    token = None
    while True:
        page = client.search_experiments(page_token=token)
        experiments += [e.experiment_id for e in page]
        token = page.token
        if not token:
            break
    parents: dict[str, list[str]] = {}
    token = None
    while experiments:
        page = client.search_runs(experiments, f"tags.`{LEVEL_TAG}` != '{FOLD_LEVEL}'", page_token=token)
        for run in page:
            parents.setdefault(run.info.experiment_id, []).append(run.info.run_id)
        token = page.token
        if not token:
            break
    return parents


def _serve_training_view_index():
    """MLflow's ``/`` route, serving :func:`training_view_index` of its ``index.html``."""
    from flask import Response, current_app
    from mlflow.server import BACKEND_STORE_URI_ENV_VAR

    html = (Path(current_app.static_folder) / "index.html").read_text(encoding="utf-8")
    try:
        expand = parent_runs(MlflowClient(os.environ[BACKEND_STORE_URI_ENV_VAR]))
    except Exception:  # noqa: BLE001 - the page still opens, with the runs collapsed
        logger.exception("cannot list the parent runs to expand; the runs table opens collapsed")
        expand = {}
    response = Response(training_view_index(html, expand), mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    return response


def create_training_view_app():
    """MLflow's tracking server app with :func:`training_view_index` on its ``/`` route: the factory behind
    the ``mlflow.app`` entry point :data:`TRAINING_VIEW_APP` (``mlflow server --app-name``), ASGI (wrapped as
    MLflow wraps its own) when the server runs under uvicorn, MLflow's default."""
    from mlflow.environment_variables import _MLFLOW_SGI_NAME
    from mlflow.server import app

    app.view_functions["serve"] = _serve_training_view_index
    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(app)
    return app


def training_view_installed() -> bool:
    """Whether this environment's package metadata holds the :data:`TRAINING_VIEW_APP` entry point (an
    install of the package; a bare checkout on ``PYTHONPATH`` has none)."""
    from importlib.metadata import entry_points

    return any(e.name == TRAINING_VIEW_APP for e in entry_points(group="mlflow.app"))


def runs_by_level(tracking_uri: str, experiment: str) -> dict[str, list]:
    """Returns the experiment's runs grouped by ``sweeper.level`` (for checks and the leaderboard rebuild)."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    grouped: dict[str, list] = {}
    for run in client.search_runs([exp.experiment_id], max_results=5000):
        grouped.setdefault(run.data.tags.get(LEVEL_TAG, "?"), []).append(run)
    return grouped
