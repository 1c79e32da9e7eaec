"""MLflow tracking from the driver: experiment = sweep, runs nested sweep > configuration > fold.

A Ray Tune ``Callback`` (:class:`MlflowTracker`) runs in the driver process, so workers need no
access to the tracking server and the store has one writer. Runs nest through the
``mlflow.parentRunId`` tag (Ray's ``MLflowLoggerCallback`` has no nesting) and carry
``sweeper.level`` = ``sweep`` | ``config`` | ``fold``. Runs are found again by their tags, so a
resumed sweep reuses its runs instead of duplicating them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from ray.tune import Callback

from sweeper.leaderboard import trial_error_text
from trainables.train import BEST_PREFIX, BEST_WEIGHTS_FILE

LEVEL_TAG = "sweeper.level"
PARENT_TAG = "mlflow.parentRunId"
CONFIG_TAG = "sweeper.config_id"
FOLD_TAG = "sweeper.fold"
ERROR_TAG = "sweeper.error"
SWEEP_LEVEL, CONFIG_LEVEL, FOLD_LEVEL = "sweep", "config", "fold"

#: keys of a trial result that are bookkeeping, not metrics
_NOT_METRICS = {"epoch", "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "pid", "done",
                "time_since_restore", "iterations_since_restore", "checkpoint_dir_name"}


def default_tracking_uri(results_dir: Path) -> str:
    """Returns the embedded store: ``sqlite:///RESULTS/mlflow.db``."""
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def artifact_root(results_dir: Path) -> str:
    """Returns the artifact folder beside the embedded store: ``RESULTS/mlartifacts``."""
    return (Path(results_dir).resolve() / "mlartifacts").as_uri()


def trial_params(config: dict[str, Any]) -> dict[str, str]:
    """Returns the MLflow params of a fold trial: identity, loss knobs (``loss.<knob>``), training settings."""
    identity = ("config_id", "fold", "arch", "encoder", "encoder_weights", "loss", "roi_ratio")
    training = ("epochs", "batch_size", "lr", "weight_decay", "min_lr", "seed", "image_size", "context",
                "augmentation", "threshold", "select_metric")
    params = {key: config.get(key) for key in identity + training if config.get(key) is not None}
    params.update({f"loss.{k}": v for k, v in config.get("loss_params", {}).items()})
    return {k: str(v) for k, v in params.items()}


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Returns the reportable metrics of a Tune result (numbers only, bookkeeping dropped)."""
    return {
        k: float(v) for k, v in result.items()
        if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class MlflowTracker(Callback):
    """Writes the sweep to MLflow from the Tune driver.

    Args:
        tracking_uri: MLflow tracking URI (``sqlite:///...`` or ``http://host:5000``).
        experiment: experiment name (the sweep name).
        artifact_location: where a new experiment stores artifacts (ignored for an existing one).
        spec_file: the frozen spec, logged as an artifact of the sweep run.
        n_folds: folds per configuration; a configuration run closes when all have ended.
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None, spec_file: Path,
                 n_folds: int):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.spec_file = str(spec_file)
        self.n_folds = n_folds
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._sweep_run: str | None = None
        self._run_ids: dict[tuple, str] = {}

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        state = self.__dict__.copy()
        state.update(_client=None, _run_ids={})
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    # -- Tune hooks ---------------------------------------------------------------------------
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        self._experiment_id = ensure_experiment(self.client, self.experiment, self.artifact_location)
        self._sweep_run = self._find_or_create((SWEEP_LEVEL,), {LEVEL_TAG: SWEEP_LEVEL}, run_name=self.experiment)
        if not self.client.list_artifacts(self._sweep_run):
            self.client.log_artifact(self._sweep_run, self.spec_file)
        self.client.update_run(self._sweep_run, status="RUNNING")

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        run_id = self._fold_run(trial.config)
        self.client.update_run(run_id, status="RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run_id = self._fold_run(trial.config)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in numeric_metrics(result).items()]
        self.client.log_batch(run_id, metrics=metrics, synchronous=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id = self._fold_run(trial.config)
        detail = (trial.last_result or {}).get("loss_detail")
        if detail:
            self.client.set_tag(run_id, "sweeper.loss_detail", detail)
        if trial.checkpoint is not None:
            best = Path(trial.checkpoint.path) / BEST_WEIGHTS_FILE
            if best.is_file():
                self.client.log_artifact(run_id, str(best), artifact_path="checkpoint")
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        self._maybe_close_config(trials, trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id = self._fold_run(trial.config)
        reason = trial_error_text(trial)
        self.client.set_tag(run_id, ERROR_TAG, reason[-4000:])
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        self._maybe_close_config(trials, trial, failed=True)

    def on_experiment_end(self, trials, **info) -> None:
        if self._sweep_run is not None:
            failed = any(t.status == "ERROR" for t in trials)
            self.client.set_tag(self._sweep_run, "sweeper.failed_trials", str(sum(t.status == "ERROR" for t in trials)))
            self.client.set_terminated(self._sweep_run, "FINISHED" if not failed else "FAILED")

    # -- runs -----------------------------------------------------------------------------------
    def _find_or_create(self, key: tuple, tags: dict[str, str], run_name: str, params: dict | None = None) -> str:
        if key in self._run_ids:
            return self._run_ids[key]
        filters = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items() if k != PARENT_TAG)
        found = self.client.search_runs([self._experiment_id], filter_string=filters, max_results=1)
        if found:
            run_id = found[0].info.run_id
        else:
            run_id = self.client.create_run(self._experiment_id, tags=tags, run_name=run_name).info.run_id
            if params:
                self.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()], synchronous=True)
        self._run_ids[key] = run_id
        return run_id

    def _config_run(self, config: dict[str, Any]) -> str:
        cid = config["config_id"]
        params = {k: v for k, v in trial_params(config).items() if k != "fold"}
        return self._find_or_create(
            (CONFIG_LEVEL, cid),
            {LEVEL_TAG: CONFIG_LEVEL, CONFIG_TAG: cid, PARENT_TAG: self._sweep_run},
            run_name=f"{config['loss']}-{config['arch']}-{config['encoder']}-{cid}",
            params=params,
        )

    def _fold_run(self, config: dict[str, Any]) -> str:
        cid, fold = config["config_id"], int(config["fold"])
        parent = self._config_run(config)
        return self._find_or_create(
            (FOLD_LEVEL, cid, fold),
            {LEVEL_TAG: FOLD_LEVEL, CONFIG_TAG: cid, FOLD_TAG: str(fold), PARENT_TAG: parent},
            run_name=f"{config['loss']}-{cid}-fold{fold}",
            params=trial_params(config),
        )

    def _maybe_close_config(self, trials, trial, failed: bool) -> None:
        """Logs the fold means on the configuration run and closes it once all its folds have ended."""
        cid = trial.config["config_id"]
        others = [t for t in trials if t.config.get("config_id") == cid and t is not trial]
        ended = [t for t in others if t.status in ("TERMINATED", "ERROR")] + [trial]
        if len(ended) < self.n_folds:
            return
        finished = [t for t in others if t.status == "TERMINATED"] + ([] if failed else [trial])
        run_id = self._config_run(trial.config)
        keys = [k for k in (finished[0].last_result if finished else {}) if k.startswith(BEST_PREFIX)]
        now = int(time.time() * 1000)
        metrics = []
        for key in keys:
            values = [t.last_result[key] for t in finished if key in t.last_result]
            if values:
                metrics.append(Metric(key.removeprefix(BEST_PREFIX), sum(values) / len(values), now, 0))
        if metrics:
            self.client.log_batch(run_id, metrics=metrics, synchronous=True)
        status = "FINISHED" if len(finished) == len(ended) else "FAILED"
        self.client.set_terminated(run_id, status)


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Returns the id of experiment ``name``, created (with ``artifact_location``) when missing.

    Created through the client, not ``mlflow.set_experiment``, which leaks into the environment.
    """
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


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

