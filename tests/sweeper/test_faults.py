"""Faults with real processes: a trial's worker killed mid-epoch, a whole node killed mid-sweep, the
driver SIGKILLed mid-sweep and resumed. Each ends with a complete sweep: every configuration x fold
exactly once in trials.parquet, one FINISHED MLflow fold run each, every Optuna trial told once.

Processes are only ever ended by pid (a node's `ray start` tree, or the processes of the private
Ray temp dir a killed driver used); never `ray stop`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from sweeper.launch import launch
from sweeper.leaderboard import read_trials
from sweeper.paths import SweepPaths
from sweeper.ray_session import RAY_TEMP_DIR_ENV
from sweeper.spec import dump_spec
from sweeper.tracking import CONFIG_TAG, FOLD_TAG, LEVEL_TAG, default_tracking_uri

sys.path.insert(0, str(Path(__file__).parent))
from test_cluster import (  # noqa: E402  (shared helpers of the cluster tests)
    RayNode,
    TrialWatcher,
    kill_pids,
    pids_mentioning,
    process_tree,
    tiny_spec,
    wait_for_nodes,
)

SWEEPER = str(Path(sys.executable).with_name("sweeper"))


def assert_complete_exactly_once(spec, paths: SweepPaths, n_configs: int) -> pd.DataFrame:
    """Every configuration x fold once and finished; MLflow and Optuna agree, nothing left RUNNING."""
    trials = read_trials(paths.sweep)
    assert not trials.duplicated(["config_id", "fold"]).any()
    assert len(trials) == n_configs * len(spec.data.folds_to_run), trials[["config_id", "fold", "status"]]
    assert (trials["status"] == "finished").all(), trials[["config_id", "fold", "status", "error"]]
    assert (trials["epochs_done"] == spec.training.epochs).all()

    study = optuna.load_study(study_name=spec.name, storage=paths.optuna_storage)
    # every Optuna trial told exactly once (Optuna refuses a second tell), none left RUNNING; a proposal
    # repeating a known configuration (dice has no knobs) is its own Optuna trial, told the known result
    states = [t.state for t in study.trials]
    assert set(states) == {optuna.trial.TrialState.COMPLETE} and len(states) >= n_configs, states
    assert {t.user_attrs["config_id"] for t in study.trials} == set(trials["config_id"])
    assert trials["config_id"].nunique() == n_configs

    client = MlflowClient(default_tracking_uri(paths.results))
    runs = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id], max_results=1000)
    folds = [r for r in runs if r.data.tags[LEVEL_TAG] == "fold"]
    keys = sorted((r.data.tags[CONFIG_TAG], int(r.data.tags[FOLD_TAG])) for r in folds)
    assert keys == sorted(zip(trials["config_id"], trials["fold"].astype(int)))  # one fold run each
    assert sum(r.data.tags[LEVEL_TAG] == "config" for r in runs) == n_configs
    assert {r.info.status for r in runs} == {"FINISHED"}, [(r.info.run_name, r.info.status) for r in runs]
    return trials


@pytest.mark.slow
def test_killed_trial_worker_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL the worker process of a running trial after its first epoch: Tune restarts the trial
    from its epoch-1 checkpoint (resources.max_failures = 1) and the sweep completes."""
    spec = tiny_spec("worker_kill", budget=1, epochs=3, max_failures=1)
    killed: dict[str, int] = {}

    def kill_first_worker(trial, result):
        if not killed and result["epoch"] == 1:
            killed[trial.trial_id] = int(result["pid"])
            # a moment later, once Tune has registered the epoch-1 checkpoint (callbacks run before
            # that), while the worker is inside epoch 2
            threading.Timer(0.5, os.kill, (int(result["pid"]), signal.SIGKILL)).start()

    watcher = TrialWatcher(kill_first_worker)
    paths = launch(spec, tmp_path / "results", callbacks=[watcher])

    [(trial_id, pid)] = killed.items()
    epochs = [r["epoch"] for r in watcher.results[trial_id]]
    pids = {int(r["pid"]) for r in watcher.results[trial_id]}
    assert epochs == [1, 2, 3], epochs  # continued at epoch 2 from the checkpoint, not from scratch
    assert len(pids) == 2 and pid in pids  # ... in a new worker process
    assert_complete_exactly_once(spec, paths, n_configs=1)
    # the killed worker's checkpoint scratch folder (named by trial id) was cleared by the retry
    assert not (Path(tempfile.gettempdir()) / f"sweeper-ckpt-{trial_id}").exists()


@pytest.mark.slow
def test_killed_node_trials_are_rescheduled_on_the_head(tmp_path):
    """Kill the second node (its raylet and trial workers) while it runs a trial: the trial is
    retried from its checkpoint on the head and the sweep completes."""
    fast_health_check = {
        "RAY_health_check_period_ms": "500",
        "RAY_health_check_timeout_ms": "500",
        "RAY_health_check_failure_threshold": "3",
        "RAY_health_check_initial_delay_ms": "0",
    }
    head = RayNode(num_cpus=1, env=fast_health_check)
    worker = None
    try:
        worker = RayNode(head_address=head.address, num_cpus=1)
        wait_for_nodes(head.address, 2)
        on_worker: set[str] = set()
        seen: dict[str, list[tuple[int, str]]] = {}  # trial -> (epoch, node) of each result

        def kill_worker_node(trial, result):
            node = "worker" if int(result["pid"]) in process_tree(worker.proc.pid) else "head"
            seen.setdefault(trial.trial_id, []).append((int(result["epoch"]), node))
            if not on_worker and node == "worker":
                on_worker.add(trial.trial_id)
                threading.Timer(0.5, worker.kill).start()  # after Tune registered the epoch-1 checkpoint

        # a fresh worker per trial, so that one fold trial surely runs on the second node (with reuse_actors
        # the head's ended trial may hand its worker to the other fold first)
        spec = tiny_spec("node_kill", budget=1, epochs=2, max_failures=2, reuse_actors=False)
        watcher = TrialWatcher(kill_worker_node)
        paths = launch(spec, tmp_path / "results", address=head.address, callbacks=[watcher])

        assert on_worker, "no trial ran on the second node"
        [trial_id] = on_worker
        # epoch 1 on the second node, then (node gone) epoch 2 on the head from the epoch-1 checkpoint
        assert seen[trial_id] == [(1, "worker"), (2, "head")], seen
        assert head.proc.poll() is None and worker.proc.poll() is not None
        assert_complete_exactly_once(spec, paths, n_configs=1)
    finally:
        if worker is not None:
            worker.cleanup()
        head.cleanup()


def _wait_for_rows(sweep_dir: Path, proc: subprocess.Popen, log: Path, rows: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    path = sweep_dir / "leaderboard" / "trials.parquet"
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        if path.is_file():
            try:
                if len(pd.read_parquet(path)) >= rows:
                    return
            except Exception:  # noqa: BLE001 - caught mid-rename
                pass
        time.sleep(0.3)
    raise AssertionError(f"no {rows} ended trial(s) within {timeout} s")


@pytest.mark.slow
def test_sigkilled_driver_resumes_with_every_configuration_and_fold_exactly_once(tmp_path):
    """SIGKILL `sweeper launch` after its first trial ended, end that driver's own local Ray (by the
    pids of its private temp dir), then `sweeper launch --resume`: the sweep completes once."""
    spec = tiny_spec("driver_kill", budget=1, epochs=2, max_concurrent=1)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(dump_spec(spec))
    results = tmp_path / "results"
    ray_temp = tempfile.mkdtemp(prefix="swdrv", dir="/tmp")
    env = {**os.environ, RAY_TEMP_DIR_ENV: ray_temp, "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / "driver.log", "wb")  # a file, not a pipe: a full pipe would stall the driver
    driver = subprocess.Popen(
        [SWEEPER, "launch", str(spec_file), "--results", str(results)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    paths = SweepPaths.of(spec, results)
    try:
        _wait_for_rows(paths.sweep, driver, tmp_path / "driver.log", rows=1, timeout=240)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
        log.close()
        # the killed driver's local Ray: every process naming its private temp dir, and their children
        for _ in range(3):
            pids = {p for root in pids_mentioning(ray_temp) for p in process_tree(root)}
            if not pids:
                break
            kill_pids(sorted(pids))
            time.sleep(0.5)
    interrupted = read_trials(paths.sweep)
    assert len(interrupted) == 1  # fold 0 ended, fold 1 was pending or running

    resumed = subprocess.run(
        [SWEEPER, "launch", str(spec_file), "--results", str(results), "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    try:
        assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
        trials = assert_complete_exactly_once(spec, paths, n_configs=1)
        # what had finished before the kill is kept (not lost, not duplicated)
        before = set(zip(interrupted["config_id"], interrupted["fold"]))
        assert before <= set(zip(trials["config_id"], trials["fold"]))
    finally:
        leftovers = {p for root in pids_mentioning(ray_temp) for p in process_tree(root)}
        kill_pids(sorted(leftovers))
        shutil.rmtree(ray_temp, ignore_errors=True)


def test_resumed_searcher_adopts_the_optuna_trial_a_killed_driver_left_running(tmp_path):
    """The driver asked Optuna, then died before Tune saved the searcher: the study holds a RUNNING
    trial no saved state knows. A searcher on the same study trains that configuration (same
    config_id, so the same MLflow runs and leaderboard rows) instead of leaving it RUNNING forever."""
    from sweeper.search import FoldSearcher
    from trainables.contract import TrialSettings

    spec = tiny_spec("orphan", budget=2)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = FoldSearcher(spec, storage, TrialSettings(cache_dir="/x"))
    asked = first.suggest("t0")
    assert [t.state for t in first.study.trials] == [optuna.trial.TrialState.RUNNING]
    # the driver is killed here; the resumed run's searcher never saw `first`'s state
    second = FoldSearcher(spec, storage, TrialSettings(cache_dir="/x"))
    again = [second.suggest(f"r{i}") for i in range(2)]
    assert [(c["config_id"], c["fold"]) for c in again] == [(asked["config_id"], 0), (asked["config_id"], 1)]
    assert len(second.study.trials) == 1  # adopted, not asked anew
    second.on_trial_complete("r0", {"best.sensitivity": 0.5, "best.precision": 0.4})
    second.on_trial_complete("r1", {"best.sensitivity": 0.7, "best.precision": 0.6})
    [trial] = second.study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.values == pytest.approx([0.6, 0.5])
