"""Faults with real processes: a trial's worker killed mid-epoch, a whole node killed mid-sweep, the
driver of a pruning sweep SIGKILLed mid-sweep and resumed. Each ends with a complete sweep: every fold
trial exactly once in trials.parquet, one FINISHED MLflow fold run each, every Optuna trial told once.

Processes are only ever ended by pid (a node's `ray start` tree, or the processes of the private
Ray temp dir a killed driver used); never `ray stop`.
"""

from __future__ import annotations

import json
import os
import re
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
from sweeper.spec import dump_spec, parse_spec
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


def _ended_fold_trials(paths: SweepPaths, epochs: int) -> dict[tuple[str, int], int]:
    """Returns ``(config_id, fold) -> epoch`` of the fold trials that ended according to their own files, not
    Tune's snapshot: a complete checkpoint of the last epoch in a trial folder (its manifest), or the epoch
    scheduler's record of stopping it (written at its decision)."""
    from sweeper.pruning import scheduler_stopped
    from trainables.checkpoint_files import checkpoint_folders, complete_checkpoint

    ended = {}
    for key, epoch in scheduler_stopped(paths.sweep).items():
        cid, fold, *_ = key.split("/")
        ended[(cid, int(fold))] = int(epoch)
    trial_dirs = sorted(paths.tune_dir.iterdir()) if paths.tune_dir.is_dir() else []
    for folder in (f for trial_dir in trial_dirs for f in checkpoint_folders(trial_dir)):
        stored = complete_checkpoint(folder)
        if stored is not None and stored.epoch >= epochs:
            ended[(stored.trial["config_id"], int(stored.trial["fold"]))] = stored.epoch
    return ended


def _wait_for_ended(paths: SweepPaths, proc: subprocess.Popen, log: Path, epochs: int, ended: int, timeout: float):
    """Waits until ``ended`` fold trials ended according to their own files (:func:`_ended_fold_trials`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        if len(_ended_fold_trials(paths, epochs)) >= ended:
            return
        time.sleep(0.2)
    raise AssertionError(f"not {ended} ended fold trial(s) within {timeout} s")


def pruning_spec(name: str):
    """4 configurations x 3 folds x 2 epochs, one trial at a time, with fold halving (min_folds 1, eta 2),
    MO-ASHA (grace 1, factor 2) and a constraint: README "Pruning"'s "done when" in a few minutes."""
    raw = tiny_spec(name, budget=4, epochs=2, max_concurrent=1).model_dump(exclude_unset=True)
    raw["data"]["folds"] = 3
    raw["data"]["synthetic"]["cases"] = 6
    raw["search"]["pruning"] = {"folds": {"min_folds": 1, "eta": 2}}
    raw["search"]["constraints"] = [{"metric": "sensitivity", "min": 0.0}]
    raw["scheduler"] = {"type": "moasha", "grace_period": 1, "reduction_factor": 2}
    return parse_spec(raw)


def _kill_driver_and_its_ray(driver: subprocess.Popen, ray_temp: str) -> None:
    """SIGKILL the driver (by its pid), then every process naming its private Ray temp dir, and their children."""
    if driver.poll() is None:
        os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
    for _ in range(3):
        pids = {p for root in pids_mentioning(ray_temp) for p in process_tree(root)}
        if not pids:
            break
        kill_pids(sorted(pids))
        time.sleep(0.5)


@pytest.mark.slow
def test_sigkilled_driver_of_a_pruning_sweep_resumes_with_every_trial_exactly_once(tmp_path):
    """SIGKILL `sweeper launch` of a sweep with fold halving, MO-ASHA and a constraint as soon as two fold trials
    ended according to their own files (Tune's snapshot may not record them yet), end that driver's own local
    Ray, then `sweeper launch --resume`: every fold trial ran exactly once (none rerun: those that ended before
    the kill are reported again from their final checkpoint on storage, none lost), Optuna was told every
    configuration (PRUNED with partial means, or COMPLETE with its constraint), and the leaderboard, MLflow,
    `sweeper pareto`, `sweeper status` and the report show what was pruned, where."""
    from sweeper.leaderboard import read_configs, read_pruned, sweep_reach
    from sweeper.report import write_report
    from sweeper.schedulers import STATE_FILE
    from sweeper.tracking import PRUNED_BY_TAG, PRUNED_RUNG_TAG, STATUS_TAG, STOPPED_EPOCH_TAG
    from sweeper.tune_state import TERMINATED, read_tune_trials

    spec = pruning_spec("driver_kill")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(dump_spec(spec))
    results = tmp_path / "results"
    ray_temp = tempfile.mkdtemp(prefix="swdrv", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, RAY_TEMP_DIR_ENV: ray_temp, "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("RAY_ADDRESS", None)
    paths = SweepPaths.of(spec, results)
    log = open(tmp_path / "driver.log", "wb")  # a file, not a pipe: a full pipe would stall the driver
    try:
        driver = subprocess.Popen(
            [SWEEPER, "launch", str(spec_file), "--results", str(results)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            # killed as soon as two fold trials ended, whether or not Tune's snapshot records them yet (README
            # "When things break": one that ended after the last snapshot is reported again, not rerun)
            _wait_for_ended(paths, driver, tmp_path / "driver.log", spec.training.epochs, ended=2, timeout=300)
        finally:
            _kill_driver_and_its_ray(driver, ray_temp)
            log.close()
        ended = _ended_fold_trials(paths, spec.training.epochs)
        assert 2 <= len(ended) < 12  # killed mid-sweep
        snapshotted = {
            (t.config["config_id"], int(t.config["fold"]))
            for t in read_tune_trials(paths.tune_dir)
            if t.status == TERMINATED
        }
        print(f"ended at the kill: {sorted(ended)}; of them in Tune's snapshot: {sorted(snapshotted & set(ended))}")

        resumed = subprocess.run(
            [SWEEPER, "launch", str(spec_file), "--results", str(results), "--resume"],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    finally:
        leftovers = {p for root in pids_mentioning(ray_temp) for p in process_tree(root)}
        kill_pids(sorted(leftovers))
        shutil.rmtree(ray_temp, ignore_errors=True)

    # the leaderboard: each fold trial once, what ended before the kill kept; stopped ones before the last epoch
    trials = read_trials(paths.sweep)
    assert not trials.duplicated(["config_id", "fold", "repeat"]).any()
    assert set(ended) <= set(zip(trials["config_id"], trials["fold"].astype(int)))
    done = trials.set_index(["config_id", "fold"])["epochs_done"]
    assert {key: int(done[key]) for key in ended} == ended  # what ended before the kill kept its epochs
    assert set(trials["status"]) <= {"finished", "stopped"}, trials[["config_id", "fold", "status", "error"]]
    stopped = trials[trials["status"] == "stopped"]
    assert (stopped["epochs_done"] < spec.training.epochs).all()
    assert (trials.loc[trials["status"] == "finished", "epochs_done"] == spec.training.epochs).all()
    assert (paths.sweep / STATE_FILE).is_file()  # the scheduler's rungs, read back by the resumed driver

    # Optuna: four configurations, each told once; the pruned ones PRUNED with their partial fold means
    configs = read_configs(paths.sweep).set_index("config_id")
    ledger = read_pruned(paths.sweep)
    study = optuna.load_study(study_name=spec.name, storage=paths.optuna_storage)
    states = {t.user_attrs["config_id"]: t.state for t in study.trials}
    assert set(states) == set(trials["config_id"]) == set(configs.index) and len(states) == 4
    assert optuna.trial.TrialState.RUNNING not in states.values()
    pruned = {cid for cid, state in states.items() if state == optuna.trial.TrialState.PRUNED}
    assert pruned, "4 configurations halving folds and epochs by 2 prune something"
    assert pruned == set(configs.index[configs["status"] == "pruned"]) == set(ledger)
    assert (configs.loc[sorted(pruned), "n_folds"] < 3).all()
    assert (configs.loc[sorted(set(configs.index) - pruned), "n_folds"] == 3).all()  # none lost
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert "partial.sensitivity" in trial.user_attrs and trial.values is None
        else:
            assert trial.constraints == pytest.approx({"sensitivity>=0": -trial.user_attrs["mean.sensitivity"]})
    # the leaderboard says by which pruning and where
    for cid in pruned:
        entry, row = ledger[cid], configs.loc[cid]
        if entry["stopped_epoch"] is not None:
            assert row["pruned_kind"] == "epoch_scheduler"
            assert f"fold {entry['stopped_fold']} epoch {entry['stopped_epoch']}" in row["pruned_stage"]
        else:
            assert row["pruned_kind"] == "fold_halving" and entry["rung"] is not None
            assert row["pruned_stage"] == f"rung {entry['rung']}: {row['n_folds']} of 3 folds"

    # MLflow: one fold run per fold trial, none rerun (each epoch logged once), every run closed, pruned and
    # stopped ones tagged with the rung
    client = MlflowClient(default_tracking_uri(results))
    runs = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id], max_results=1000)
    assert {r.info.status for r in runs} == {"FINISHED"}, [(r.info.run_name, r.info.status) for r in runs]
    folds = {(r.data.tags[CONFIG_TAG], int(r.data.tags[FOLD_TAG])): r for r in runs if r.data.tags[LEVEL_TAG] == "fold"}
    assert sorted(folds) == sorted(zip(trials["config_id"], trials["fold"].astype(int)))
    for (cid, fold), epoch in ended.items():  # ended before the kill: not rerun, each epoch logged once
        steps = sorted(m.step for m in client.get_metric_history(folds[(cid, fold)].info.run_id, "dice"))
        assert steps == list(range(1, epoch + 1)), (cid, fold, steps)
    console = resumed.stdout + resumed.stderr
    for cid, fold in set(ended) - snapshotted:  # ended after the last snapshot: reported again from storage
        assert re.search(rf"fold trial {cid}/{fold} \(.*\): resumed from its", console), (cid, fold, console[-3000:])
    for cid, fold, epoch in zip(stopped["config_id"], stopped["fold"], stopped["epochs_done"]):
        tags = folds[(cid, int(fold))].data.tags
        assert (tags[STATUS_TAG], tags[STOPPED_EPOCH_TAG]) == ("stopped", str(epoch))
    assert {k for k, r in folds.items() if r.data.tags.get(STATUS_TAG) == "stopped"} == set(
        zip(stopped["config_id"], stopped["fold"].astype(int))
    )
    config_runs = {r.data.tags[CONFIG_TAG]: r.data.tags for r in runs if r.data.tags[LEVEL_TAG] == "config"}
    assert len(config_runs) == 4
    assert {cid for cid, tags in config_runs.items() if tags.get(STATUS_TAG) == "pruned"} == pruned
    for cid in pruned:
        assert config_runs[cid][PRUNED_BY_TAG] == configs.loc[cid, "pruned_kind"]
        rung = ledger[cid]["rung"]
        assert config_runs[cid].get(PRUNED_RUNG_TAG) == (None if rung is None else str(rung))

    # `sweeper pareto` keeps pruned and infeasible configurations off the front and lists them apart
    front = subprocess.run([SWEEPER, "pareto", str(paths.sweep)], env=env, capture_output=True, text=True, timeout=120)
    assert front.returncode == 0, front.stderr[-3000:]
    left_out = pruned | set(configs.index[~configs["feasible"].astype(bool)])
    on_front = pd.read_csv(paths.pareto / "pareto.csv")
    assert not set(on_front["config_id"]) & left_out
    excluded = pd.read_csv(paths.pareto / "pareto_excluded.csv").set_index("config_id")
    assert set(excluded.index) == left_out
    # a pruned configuration without a finished fold has no means: it is partial there, never infeasible
    unmeasured = [cid for cid in pruned if pd.isna(configs.loc[cid, "sensitivity"])]
    assert (excluded.loc[unmeasured, "front_status"] == "partial").all()
    summary = json.loads((paths.pareto / "pareto.json").read_text())
    assert summary["n_infeasible"] + summary["n_partial"] == len(left_out) and "kept off the front" in front.stdout

    # `sweeper status` counts what was pruned, by which pruning, and the stopped fold trials
    shown = subprocess.run([SWEEPER, "status", str(paths.sweep)], env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-3000:]
    reach = sweep_reach(read_configs(paths.sweep), trials, spec)
    assert ": finished" in shown.stdout
    assert f"{(reach['outcome'] == 'finished').sum()} finished, {len(pruned)} pruned (" in shown.stdout
    assert f"; {len(stopped)} fold trial(s) stopped" in shown.stdout

    # the report: how far each configuration got, the pruned ones with their stage
    page = write_report(paths.sweep, max_slices=8, log_to_mlflow=False).read_text()
    assert "How far each configuration got" in page and '<figure id="fig14">' in page
    assert all(configs.loc[cid, "pruned_stage"] in page for cid in pruned)


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
