"""Faults 4-6 with real processes: one real sweep in which a trial raises every time, another's loss
becomes non-finite, and the real `mlflow server` it logs to is killed mid-sweep and started again on
the same port; an unreachable MLflow server at launch; a server that stays down to the end of the
sweep (README "When things break").

The failures come from real spec inputs, no fault-injection hook: a PAN network at 32 px (its
pyramid attention pools the 1 x 1 deepest feature map again, and PyTorch raises "Output size is too
small" in every forward), and the compound loss ``1e39*dice``, whose weight overflows float32 so the
training loss is non-finite in epoch 1. Processes are only ever ended by pid / process group.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from ray.tune import Callback

from sweeper.launch import launch
from sweeper.leaderboard import read_trials
from sweeper.paths import PENDING_FILE, SweepPaths
from sweeper.spec import parse_spec
from sweeper.tracking import (
    CONFIG_TAG,
    ERROR_TAG,
    LEVEL_TAG,
    MlflowTracker,
    TrackingUnreachableError,
    artifact_root,
    default_tracking_uri,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_cluster import free_port, tiny_spec  # noqa: E402

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
PAN_ERROR = "Output size is too small"


class FailureRecorder(Callback):
    """Driver-side record of each trial's retries (``on_trial_recover``) and final errors, by config_id."""

    def __init__(self):
        self.recovered: dict[str, int] = {}
        self.errored: dict[str, int] = {}

    def on_trial_recover(self, iteration, trials, trial, **info):
        cid = trial.config["config_id"]
        self.recovered[cid] = self.recovered.get(cid, 0) + 1

    def on_trial_error(self, iteration, trials, trial, **info):
        cid = trial.config["config_id"]
        self.errored[cid] = self.errored.get(cid, 0) + 1

    def __getstate__(self):
        return {"recovered": {}, "errored": {}}


def test_unreachable_tracking_server_fails_launch_before_ray_starts(tmp_path):
    """tracking.uri naming a closed port: launch raises at once, naming the URI and the fix; Ray was
    never started and nothing was written (no Tune folder, no frozen spec, no data cache)."""
    import ray

    uri = f"http://127.0.0.1:{free_port()}"
    spec = tiny_spec("no_server")
    spec.tracking.uri = uri
    assert not ray.is_initialized()
    start = time.monotonic()
    with pytest.raises(TrackingUnreachableError) as err:
        launch(spec, tmp_path / "results")
    message = str(err.value)
    assert uri in message and "unreachable" in message and "mlflow server" in message and "tracking.uri" in message
    assert time.monotonic() - start < 15
    assert not ray.is_initialized()
    paths = SweepPaths.of(spec, tmp_path / "results")
    # launch's writability check may leave the (empty) sweep folder; nothing else was written
    assert not paths.tune_dir.exists() and not paths.spec_file.exists() and not paths.cache.exists()


class MlflowServer:
    """A real `mlflow server` (its own process group) on 127.0.0.1:port, SQLite store under ``root``."""

    def __init__(self, root: Path, port: int):
        self.root, self.port = root, port
        self.uri = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.log = open(root / "mlflow-server.log", "ab")

    def start(self, timeout: float = 90) -> None:
        self.proc = subprocess.Popen(
            [
                MLFLOW,
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "mlflow-server.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=2).read()
                return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"mlflow server on {self.uri} did not answer within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server's own group: uvicorn and its workers
            self.proc.wait(timeout=30)


class ServerOutage(Callback):
    """Stops ``server`` at the first trial result (after MlflowTracker wrote it: callbacks run in
    order) and starts it again on the same port ``down_s`` seconds later, from a timer thread."""

    def __init__(self, server: MlflowServer, down_s: float):
        self.server, self.down_s = server, down_s
        self.timer: threading.Timer | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.timer is None:
            self.server.stop()
            self.timer = threading.Timer(self.down_s, self.server.start)
            self.timer.start()

    def __getstate__(self):  # Tune pickles callbacks with the experiment state
        return {"server": None, "down_s": self.down_s, "timer": None}


def _runs(client: MlflowClient, experiment: str) -> list:
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=100)


@pytest.mark.slow
def test_failing_trials_and_an_mlflow_outage_in_one_sweep(tmp_path, caplog):
    """One real sweep (local Ray, a real `mlflow server`, the Optuna study in SQLite), fold 0 only,
    max_failures 1. Optuna (random, seed 2) draws three configurations:

    - unet + dice trains normally;
    - unet + 1e39*dice: the loss is non-finite in epoch 1 (case 5);
    - pan + 1e39*dice: PAN raises in every forward at 32 px (case 4).

    The MLflow server is SIGKILLed right after the first epoch result was logged and started again
    on the same port 4 s later (case 6, mid-sweep). The failing trials are retried once, then
    recorded failed with their reason (trials.parquet `error`, MLflow FAILED + `sweeper.error`) and
    told FAIL to Optuna; unet + dice finishes; every run and every epoch's metrics reach MLflow
    exactly once although the server was down when most of them happened."""
    server = MlflowServer(tmp_path, free_port())
    server.start()
    outage = ServerOutage(server, down_s=4.0)
    recorder = FailureRecorder()
    spec = parse_spec(
        {
            "name": "trial_faults",
            "data": {
                "format": "synthetic",
                "folds": 2,
                "run_folds": [0],
                "image_size": 32,
                "augmentation": "none",
                "synthetic": {"cases": 4, "slices_per_scan": 8, "image_size": 32, "seed": 3},
            },
            "model": {"architectures": ["unet", "pan"], "encoders": ["resnet18"]},
            "losses": [{"name": "dice"}, {"name": "1e39*dice"}],
            "training": {"epochs": 2, "batch_size": 8, "max_train_batches": 2, "lr": 1e-3},
            "search": {"mode": "optuna", "budget": 3, "sampler": "random", "seed": 2},
            "resources": {"cpus_per_trial": 1, "max_failures": 1},
            "tracking": {"uri": server.uri},
        }
    )
    try:
        with caplog.at_level(logging.WARNING, logger="sweeper.tracking"):
            paths = launch(spec, tmp_path / "results", callbacks=[recorder, outage])
        assert outage.timer is not None, "no trial reported a result"
        outage.timer.join()
        assert any("unreachable" in r.getMessage() and "kept and retried" in r.getMessage() for r in caplog.records), (
            "the outage never reached the tracker"
        )

        # -- trials.parquet: the reasons ------------------------------------------------------------
        trials = read_trials(paths.sweep).set_index(["arch", "loss"])
        assert sorted(trials.index) == [("pan", "1e39*dice"), ("unet", "1e39*dice"), ("unet", "dice")]
        ok = trials.loc[("unet", "dice")]
        assert ok["status"] == "finished" and ok["epochs_done"] == 2 and ok["error"] == ""
        non_finite = re.compile(
            r"1e39\*dice loss became (nan|inf) in epoch 1 \(config \w+, fold 0\); lower training.lr"
        )
        expected = {("unet", "1e39*dice"): non_finite, ("pan", "1e39*dice"): re.compile(PAN_ERROR)}
        failed = {}
        for key, pattern in expected.items():
            row = trials.loc[key]
            assert row["status"] == "failed" and row["epochs_done"] == 0, row
            assert pattern.search(row["error"]), row["error"][-600:]
            failed[row["config_id"]] = pattern
        # each failing configuration ran max_failures + 1 = 2 times: one retry, then failed
        assert recorder.recovered == {cid: 1 for cid in failed}, recorder.recovered
        assert recorder.errored == {cid: 1 for cid in failed}, recorder.errored

        # -- Optuna: FAIL for the failing configurations, the search went on ------------------------
        study = optuna.load_study(study_name=spec.name, storage=paths.optuna_storage)
        states = {t.user_attrs["config_id"]: t.state for t in study.trials}
        assert states == {
            **{cid: optuna.trial.TrialState.FAIL for cid in failed},
            ok["config_id"]: optuna.trial.TrialState.COMPLETE,
        }
        assert (paths.sweep / "pareto" / "pareto.csv").is_file()  # the front of what finished

        # -- MLflow, through the restarted server: every run once, nothing lost ---------------------
        client = MlflowClient(server.uri)
        runs = _runs(client, spec.name)
        folds = {r.data.tags[CONFIG_TAG]: r for r in runs if r.data.tags[LEVEL_TAG] == "fold"}
        configs = {r.data.tags[CONFIG_TAG]: r for r in runs if r.data.tags[LEVEL_TAG] == "config"}
        [sweep] = [r for r in runs if r.data.tags[LEVEL_TAG] == "sweep"]
        assert len(runs) == 7 and len(folds) == len(configs) == 3, [r.info.run_name for r in runs]
        for cid, pattern in failed.items():
            assert folds[cid].info.status == "FAILED" and configs[cid].info.status == "FAILED"
            assert pattern.search(folds[cid].data.tags[ERROR_TAG]), folds[cid].data.tags[ERROR_TAG][-600:]
        fold, config = folds[ok["config_id"]], configs[ok["config_id"]]
        assert fold.info.status == config.info.status == "FINISHED"
        assert fold.data.params["fold"] == "0" and fold.data.params["loss"] == "dice"
        for key in ("train_loss", "val_loss", "dice", "best.dice"):
            steps = [m.step for m in client.get_metric_history(fold.info.run_id, key)]
            assert sorted(steps) == [1, 2], (key, steps)  # each epoch exactly once
        assert [a.path for a in client.list_artifacts(fold.info.run_id, "checkpoint")] == ["checkpoint/best_model.pt"]
        assert config.data.metrics["dice"] == pytest.approx(ok["dice"])  # fold mean (one fold)
        assert sweep.info.status == "FAILED" and sweep.data.tags["sweeper.failed_trials"] == "2"
        assert not (paths.sweep / PENDING_FILE).exists()
    finally:
        if outage.timer is not None:
            outage.timer.join()
        server.stop()
        server.log.close()


def _trial(config: dict, status: str, last_result: dict | None = None):
    """What MlflowTracker reads of a Tune Trial: config, status, last_result, checkpoint, error_file."""
    return types.SimpleNamespace(
        config=config,
        status=status,
        last_result=last_result or {},
        checkpoint=None,
        error_file=None,
        trial_id=f"t{config['fold']}",
    )


def test_tracker_keeps_writes_through_a_long_outage_and_a_resume_writes_them(tmp_path):
    """The server stays down to the end of the sweep: the tracker waits max_wait_s, saves its
    unwritten events beside the spec and raises an error that says to --resume; the resumed
    tracker (here on a store that answers) writes them first, each once."""
    spec_file = tmp_path / "sweep" / "spec.yaml"
    spec_file.parent.mkdir()
    spec_file.write_text("name: s\n")
    config = {
        "config_id": "c1",
        "fold": 0,
        "arch": "unet",
        "encoder": "resnet18",
        "loss": "dice",
        "loss_params": {"smooth": 1.0},
        "epochs": 1,
        "cache_dir": "cache",
    }
    result = {"epoch": 1, "train_loss": 0.5, "dice": 0.25, "best.dice": 0.25, "best_epoch": 1}
    down = f"http://127.0.0.1:{free_port()}"
    tracker = MlflowTracker(down, "s", artifact_root(tmp_path), spec_file, n_folds=1, max_wait_s=0.5, retry_every_s=0.1)
    trial = _trial(config, "RUNNING")
    tracker.setup()
    tracker.on_trial_start(0, [trial], trial)
    tracker.on_trial_result(0, [trial], trial, result)
    trial.status, trial.last_result = "TERMINATED", result
    tracker.on_trial_complete(0, [trial], trial)
    with pytest.raises(TrackingUnreachableError) as err:
        tracker.on_experiment_end([trial])
    pending = spec_file.parent / PENDING_FILE
    assert down in str(err.value) and "--resume" in str(err.value) and str(pending) in str(err.value)
    assert pending.is_file()

    store = default_tracking_uri(tmp_path)
    resumed = MlflowTracker(store, "s", artifact_root(tmp_path), spec_file, n_folds=1)
    resumed.setup()
    assert not pending.exists()
    resumed.on_experiment_end([trial])
    client = MlflowClient(store)
    runs = _runs(client, "s")
    assert sorted(r.data.tags[LEVEL_TAG] for r in runs) == ["config", "fold", "sweep"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    [fold] = [r for r in runs if r.data.tags[LEVEL_TAG] == "fold"]
    assert [(m.step, m.value) for m in client.get_metric_history(fold.info.run_id, "dice")] == [(1, 0.25)]
    assert fold.data.params["loss.smooth"] == "1.0"


def test_a_result_replayed_from_a_checkpoint_is_logged_once(tmp_path):
    """A resumed trial reports the result of its newest checkpoint on storage again (``replayed``): the fold
    run gets that epoch once, whether the driver that died had logged it or not."""
    from trainables.contract import REPLAYED_KEY

    spec_file = tmp_path / "sweep" / "spec.yaml"
    spec_file.parent.mkdir()
    spec_file.write_text("name: s\n")
    config = {"config_id": "c1", "fold": 0, "arch": "unet", "encoder": "resnet18", "loss": "dice", "epochs": 2}
    config["cache_dir"] = "cache"
    store = default_tracking_uri(tmp_path)
    first, second = ({"epoch": e, "dice": 0.1 * e, "best.dice": 0.1 * e, "best_epoch": e} for e in (1, 2))
    killed = MlflowTracker(store, "s", artifact_root(tmp_path), spec_file, n_folds=1)
    trial = _trial(config, "RUNNING")
    killed.setup()
    killed.on_trial_result(0, [trial], trial, first)
    killed.on_trial_result(0, [trial], trial, second)  # ... then the driver dies before Tune's next snapshot

    resumed = MlflowTracker(store, "s", artifact_root(tmp_path), spec_file, n_folds=1)
    resumed.setup()
    resumed.on_trial_result(0, [trial], trial, {**second, REPLAYED_KEY: True})
    later = {"epoch": 3, "dice": 0.3}
    resumed.on_trial_result(0, [trial], trial, {**later, REPLAYED_KEY: True})  # never logged: logged now
    client = MlflowClient(store)
    [fold] = [r for r in _runs(client, "s") if r.data.tags[LEVEL_TAG] == "fold"]
    assert sorted(m.step for m in client.get_metric_history(fold.info.run_id, "dice")) == [1, 2, 3]
    assert REPLAYED_KEY not in fold.data.metrics
