"""A tiny real sweep with fold halving and MO-ASHA (real Ray, Optuna storage, MLflow store), interrupted
after its second fold trial and resumed: statuses, Optuna PRUNED, nothing rerun or lost."""

import os
import signal

import optuna
import pytest
from mlflow import MlflowClient
from ray.tune import Callback

from sweeper.launch import launch
from sweeper.leaderboard import read_configs, read_pruned, read_trials
from sweeper.schedulers import STATE_FILE
from sweeper.spec import parse_spec
from sweeper.tracking import CONFIG_TAG, FOLD_TAG, LEVEL_TAG, STATUS_TAG, default_tracking_uri

pytestmark = pytest.mark.slow


def pruned_spec():
    return parse_spec(
        {
            "name": "pruned",
            "data": {
                "format": "synthetic",
                "folds": 3,
                "image_size": 32,
                "augmentation": "none",
                "synthetic": {"cases": 6, "slices_per_scan": 8, "image_size": 32, "seed": 3},
            },
            "model": {"architectures": ["unet"], "encoders": ["resnet18"]},
            "losses": [{"name": "dice"}, {"name": "tversky", "params": {"alpha": "search"}}],
            "training": {"epochs": 3, "batch_size": 8, "max_train_batches": 2, "lr": 1e-3},
            "search": {
                "budget": 4,
                "sampler": "random",
                "seed": 1,
                "pruning": {"folds": {"min_folds": 1, "eta": 2}},
                "constraints": [{"metric": "sensitivity", "min": 0.0}],
            },
            "scheduler": {"type": "moasha", "grace_period": 1, "reduction_factor": 2},
            "resources": {"cpus_per_trial": 1, "max_concurrent": 1},
        }
    )


class InterruptAfter(Callback):
    """Sends the driver SIGUSR1 (Tune's graceful stop: a last experiment snapshot) after ``n`` ended trials."""

    def __init__(self, n):
        self.n, self.ended = n, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended += 1
        if self.ended == self.n:
            os.kill(os.getpid(), signal.SIGUSR1)

    def __getstate__(self):
        return {"n": 0, "ended": 0}


def test_pruned_sweep_records_statuses_tells_optuna_and_resumes(tmp_path):
    spec = pruned_spec()
    paths = launch(spec, tmp_path, callbacks=[InterruptAfter(2)])
    before = read_trials(paths.sweep)
    assert len(before) == 2  # interrupted after the second fold trial ended
    launch(spec, tmp_path, resume=True)

    trials = read_trials(paths.sweep)
    configs = read_configs(paths.sweep).set_index("config_id")
    assert not trials.duplicated(["config_id", "fold"]).any()
    assert set(zip(before["config_id"], before["fold"])) <= set(zip(trials["config_id"], trials["fold"]))
    assert set(trials["status"]) <= {"finished", "stopped"}
    stopped = trials[trials["status"] == "stopped"]
    assert (stopped["epochs_done"] < spec.training.epochs).all()
    assert (trials.loc[trials["status"] == "finished", "epochs_done"] == spec.training.epochs).all()

    study = optuna.load_study(study_name=spec.name, storage=paths.optuna_storage)
    states = {t.user_attrs["config_id"]: t.state for t in study.trials}
    assert optuna.trial.TrialState.RUNNING not in states.values()
    pruned = {cid for cid, state in states.items() if state == optuna.trial.TrialState.PRUNED}
    assert pruned, "a 4-configuration sweep halving folds and epochs by 2 prunes something"
    assert pruned == set(configs.index[configs["status"] == "pruned"]) == set(read_pruned(paths.sweep))
    assert (configs.loc[list(pruned), "n_folds"] < 3).all()
    complete = set(configs.index) - pruned
    assert (configs.loc[list(complete), "n_folds"] == 3).all()
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert "partial.sensitivity" in trial.user_attrs and trial.values is None
        else:
            assert trial.constraints == pytest.approx({"sensitivity>=0": -trial.user_attrs["mean.sensitivity"]})
    # MLflow: stopped fold runs and pruned configuration runs are tagged, and every run is closed
    client = MlflowClient(default_tracking_uri(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id], max_results=1000)
    assert {r.info.status for r in runs} == {"FINISHED"}, [(r.info.run_name, r.info.status) for r in runs]
    tagged_stopped = {
        (r.data.tags[CONFIG_TAG], int(r.data.tags[FOLD_TAG]))
        for r in runs
        if r.data.tags[LEVEL_TAG] == "fold" and r.data.tags.get(STATUS_TAG) == "stopped"
    }
    assert tagged_stopped == set(zip(stopped["config_id"], stopped["fold"]))
    tagged_pruned = {
        r.data.tags[CONFIG_TAG]
        for r in runs
        if r.data.tags[LEVEL_TAG] == "config" and r.data.tags.get(STATUS_TAG) == "pruned"
    }
    assert tagged_pruned == pruned
    assert (paths.sweep / STATE_FILE).is_file()  # the scheduler's rungs, read back by the resumed run
    # pruned configurations are kept off the front and listed apart
    front = (paths.pareto / "pareto.csv").read_text()
    assert not any(cid in front for cid in pruned)
    assert all(cid in (paths.pareto / "pareto_excluded.csv").read_text() for cid in pruned)
