"""A tiny real sweep: real Ray, real Optuna storage, real MLflow store, real data format on disk.

The sweep is the session's shared one (tests/shared_sweep.py: launched and resumed through the command
line, with fake credentials in the environment)."""

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from disk import drop_checkpoints
from mlflow import MlflowClient
from report_checks import check_report_predicts_as_the_trial
from shared_sweep import CLASSES, FAKE_SECRETS

from sweeper.cli import main
from sweeper.launch import SweepExistsError, launch
from sweeper.leaderboard import read_configs, read_trials
from sweeper.pareto import non_dominated
from sweeper.preflight import MLFLOW_CHECKPOINT_COPIES, TUNE_CHECKPOINT_COPIES, network_bytes
from sweeper.tracking import (
    CONFIG_LEVEL,
    LEVEL_TAG,
    PARENT_TAG,
    SWEEP_LEVEL,
    default_tracking_uri,
    experiment_page,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(tiny_sweep):
    """(spec, paths) of the session's tiny sweep. This module's checks are the only ones that read its weights
    (about 200 MB a trial): they go when it ends."""
    yield tiny_sweep.spec, tiny_sweep.paths
    drop_checkpoints(tiny_sweep.paths.results)


def test_no_credential_reaches_spec_mlflow_artifacts_or_logs(tiny_sweep):
    spec, paths = tiny_sweep.spec, tiny_sweep.paths
    secrets = [value.encode() for value in FAKE_SECRETS.values()]
    read = 0
    for root in (paths.results, tiny_sweep.ray_logs):  # spec.yaml, mlflow.db, artifacts, Tune state, Ray logs
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                read += 1
                assert not any(secret in data for secret in secrets), path
    assert read > 50  # the sweep's files and the Ray session's logs were there to read
    for command in (tiny_sweep.launched, tiny_sweep.resumed):  # the console, --verbose included
        assert not any(value in command.stdout + command.stderr for value in FAKE_SECRETS.values())
    client = MlflowClient(default_tracking_uri(paths.results))
    runs = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id])
    logged = json.dumps([[r.data.params, r.data.tags] for r in runs])
    assert runs and not any(value in logged for value in FAKE_SECRETS.values())


def test_leaderboard_has_every_configuration_times_fold(sweep):
    spec, paths = sweep
    trials, configs = read_trials(paths.sweep), read_configs(paths.sweep)
    study = optuna.load_study(study_name=spec.name, storage=paths.optuna_storage)
    asked = {t.user_attrs["config_id"] for t in study.trials}
    assert set(configs["config_id"]) == asked
    assert len(trials) == len(asked) * 2 and not trials.duplicated(["config_id", "fold"]).any()
    assert (trials["status"] == "finished").all()
    for name in ["dice", "iou", "sensitivity", "specificity", "precision"] + [f"sensitivity.{c}" for c in CLASSES]:
        assert trials[name].between(0, 1).all(), name
    # configs.parquet holds the means (and stds) of trials.parquet
    means = trials.groupby("config_id")[["dice", "sensitivity", "precision.small_bowel"]].mean()
    stds = trials.groupby("config_id")["dice"].std(ddof=1)
    merged = configs.set_index("config_id")
    for cid in asked:
        assert np.allclose(
            merged.loc[cid, ["dice", "sensitivity", "precision.small_bowel"]].to_numpy(float),
            means.loc[cid].to_numpy(float),
        )
        assert np.isclose(merged.loc[cid, "dice_std"], stds.loc[cid])
        assert merged.loc[cid, "n_folds"] == 2
    # Optuna was told the fold means of the objectives
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        row = merged.loc[trial.user_attrs["config_id"]]
        assert trial.values == pytest.approx([row["sensitivity"], row["precision"]])


def test_pareto_front_is_exactly_the_non_dominated_set(sweep):
    spec, paths = sweep
    import pandas as pd

    configs = read_configs(paths.sweep)
    front = pd.read_csv(paths.sweep / "pareto" / "pareto.csv")
    points = configs[["sensitivity", "precision"]].to_numpy()
    expected = set(configs.loc[non_dominated(points), "config_id"])
    assert set(front["config_id"]) == expected
    for _, row in configs.iterrows():  # every configuration off the front is dominated by one on it
        if row["config_id"] not in expected:
            assert ((front["sensitivity"] >= row["sensitivity"]) & (front["precision"] >= row["precision"])).any()
    assert (paths.sweep / "pareto" / "pareto.png").stat().st_size > 0
    assert (paths.sweep / "pareto" / "pareto.svg").read_text().lstrip().startswith("<?xml")
    assert set(pd.read_parquet(paths.sweep / "pareto" / "pareto.parquet")["config_id"]) == expected
    for name in CLASSES:
        assert (paths.sweep / "pareto" / f"pareto_{name}.csv").is_file()


def test_mlflow_holds_nested_sweep_config_fold_runs(sweep):
    spec, paths = sweep
    client = MlflowClient(default_tracking_uri(paths.results))
    experiment = client.get_experiment_by_name(spec.name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    by_level = {}
    for run in runs:
        by_level.setdefault(run.data.tags[LEVEL_TAG], []).append(run)
    [sweep_run] = by_level["sweep"]
    configs = read_configs(paths.sweep)
    assert len(by_level["config"]) == len(configs)
    assert len(by_level["fold"]) == 2 * len(configs)
    config_runs = {r.info.run_id: r for r in by_level["config"]}
    assert all(r.data.tags[PARENT_TAG] == sweep_run.info.run_id for r in by_level["config"])
    assert all(r.data.tags[PARENT_TAG] in config_runs for r in by_level["fold"])
    assert all(r.info.status == "FINISHED" for r in runs)
    fold_run = by_level["fold"][0]
    assert {"arch", "encoder", "loss", "fold", "config_id"} <= set(fold_run.data.params)
    history = client.get_metric_history(fold_run.info.run_id, "dice")
    assert [m.step for m in history] == [1, 2]  # one point per epoch
    assert [a.path for a in client.list_artifacts(fold_run.info.run_id, "checkpoint")] == ["checkpoint/best_model.pt"]
    assert [a.path for a in client.list_artifacts(sweep_run.info.run_id)] == ["spec.yaml"]
    # configuration runs carry the fold means
    cid = config_runs[fold_run.data.tags[PARENT_TAG]].data.tags["sweeper.config_id"]
    mean = configs.set_index("config_id").loc[cid, "dice"]
    assert config_runs[fold_run.data.tags[PARENT_TAG]].data.metrics["dice"] == pytest.approx(mean)


def test_checkpoints_on_disk_match_the_launch_disk_estimate(sweep):
    """The pre-launch disk check (README "Disk space") counts 4 fp32 copies of the network per trial in Tune's
    folder and 1 in the MLflow store; the files a real sweep wrote must agree within 3%."""
    spec, paths = sweep
    network = network_bytes(
        "unet", "resnet18", in_channels=2 * spec.data.context + 1, classes=len(spec.data.channel_classes)
    )
    trials = [d for d in paths.tune_dir.iterdir() if d.is_dir()]
    assert len(trials) == 2 * len(read_configs(paths.sweep))
    for trial in trials:
        [checkpoint] = trial.glob("checkpoint_*")  # an ended trial keeps its last one (sweeper/checkpoints.py)
        written = sum(f.stat().st_size for f in checkpoint.iterdir())
        assert written == pytest.approx(TUNE_CHECKPOINT_COPIES * network, rel=0.03), trial.name
    logged = list((paths.results / "mlartifacts").rglob("best_model.pt"))
    assert len(logged) == len(trials)
    assert all(f.stat().st_size == pytest.approx(MLFLOW_CHECKPOINT_COPIES * network, rel=0.03) for f in logged)


def test_relaunch_without_resume_is_refused_and_resume_finishes_without_duplicates(tiny_sweep):
    spec, paths = tiny_sweep.spec, tiny_sweep.paths
    with pytest.raises(SweepExistsError, match="--resume"):
        launch(spec, paths.results)
    before = tiny_sweep.trials_before_resume  # the shared sweep was resumed once (sweeper launch --resume)
    after = read_trials(paths.sweep)
    assert len(after) == len(before) and not after.duplicated(["config_id", "fold"]).any()
    client = MlflowClient(default_tracking_uri(paths.results))
    experiment = client.get_experiment_by_name(spec.name)
    assert len(client.search_runs([experiment.experiment_id], max_results=1000)) == 1 + 3 * len(
        read_configs(paths.sweep)
    )


def test_cli_leaderboard_and_pareto(sweep):
    spec, paths = sweep
    runner = CliRunner()
    out = runner.invoke(main, ["leaderboard", str(paths.sweep)])
    assert out.exit_code == 0, out.output
    assert "+-" in out.output and "tversky" in out.output
    out = runner.invoke(
        main, ["pareto", str(paths.sweep), "--class", "small_bowel", "--out", str(paths.sweep / "sb.csv")]
    )
    assert out.exit_code == 0, out.output
    assert (paths.sweep / "sb.csv").is_file() and (paths.sweep / "sb.png").is_file()
    out = runner.invoke(main, ["pareto", str(paths.sweep), "--class", "liver"])
    assert out.exit_code != 0 and "small_bowel" in out.output


def test_report_of_the_multilabel_sweep_predicts_as_the_trial(sweep, tmp_path):
    """The qualitative figure of a sigmoid sweep: the trial's network, per-organ threshold, dice of every organ."""
    _, paths = sweep
    check_report_predicts_as_the_trial(paths.sweep, tmp_path / "report", CLASSES)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving_ui(results, experiment: str):
    """Runs `sweeper ui` on ``results`` until the experiment answers; yields its base URL; stops it on exit."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeper.cli", "ui", "--results", str(results), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        body = None
        for _ in range(240):
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}"
                )
                body = json.loads(urllib.request.urlopen(req, timeout=2).read())
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.5)
        assert body is not None, proc.stdout.read().decode()[-2000:] if proc.poll() is not None else "no answer"
        assert body["experiment"]["name"] == experiment
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=10).status == 200  # the UI's page
        yield f"http://127.0.0.1:{port}", body["experiment"]["experiment_id"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # the server and its workers stop with the command: the port is free again (SO_REUSEADDR: a browser's
    # closed connections may linger in TIME_WAIT, which is no listener)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


# The MLflow UI asks for the signed-in user on every load; without MLflow's auth app (Sweeper binds to
# 127.0.0.1 and enables none) the server answers 404, which Chromium logs as a failed resource.
MLFLOW_AUTH_PROBE = "/ajax-api/2.0/mlflow/users/current"
# the browser's notice that a resize was redrawn on the next frame (benign; MLflow's run page shows it once a
# configuration run holds its many interval metrics), not a page error
RESIZE_OBSERVER_NOTICE = "ResizeObserver loop completed with undelivered notifications"


def test_report_and_mlflow_ui_open_in_headless_chromium(sweep, browser):
    spec, paths = sweep
    out = CliRunner().invoke(main, ["report", str(paths.sweep)])
    assert out.exit_code == 0, out.output
    report = paths.sweep / "report" / "report.html"

    console = browser.open(report.as_uri(), until_text="Table 3.")
    figures = browser.driver.execute_script(
        "return [...document.querySelectorAll('figure')].map(f => [f.id, f.querySelector('img')?.naturalWidth ?? 0])"
    )
    browser.screenshot("report", full_page=True)
    assert browser.errors(console) == []
    assert {fig: width > 0 for fig, width in figures} == {f"fig{k}": True for k in range(4, 14)}  # 10-13: patient level

    client = MlflowClient(default_tracking_uri(paths.results))
    runs = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id])
    sweep_run = next(r for r in runs if r.data.tags[LEVEL_TAG] == SWEEP_LEVEL)
    configs = [r for r in runs if r.data.tags[LEVEL_TAG] == CONFIG_LEVEL]
    with serving_ui(paths.results, spec.name) as (url, experiment_id):
        # the experiment's own page, bare, as `sweeper launch` prints it, in a browser that never chose a view: the
        # UI opens on its runs table in the training view (not the GenAI view) with no click, every run counted,
        # and the configurations and their folds shown nested under the sweep without expanding anything
        printed = experiment_page(default_tracking_uri(paths.results), spec.name, url)
        assert printed == f"{url}/#/experiments/{experiment_id}"
        console = browser.open(printed, until_text=f"{len(runs)} matching runs")
        assert f"/#/experiments/{experiment_id}/runs" in browser.driver.current_url
        assert "workflowType=machine_learning" in browser.driver.current_url
        browser.wait_until(
            lambda: all(any(f"/runs/{run.info.run_id}" in link for link in browser.links()) for run in runs),
            "a row (a link to its page) for every run, nested ones included",
            timeout_s=30,
        )
        browser.screenshot("mlflow-runs")
        assert browser.errors(console, allowed=(MLFLOW_AUTH_PROBE,)) == []

        page = f"{url}/#/experiments/{experiment_id}/runs"
        # the sweep run's page lists the logged report among its artifacts
        console = browser.open(f"{page}/{sweep_run.info.run_id}/artifacts", until_text="report")
        browser.screenshot("mlflow-sweep-run-artifacts")
        assert browser.errors(console, allowed=(MLFLOW_AUTH_PROBE,)) == []

        # a configuration's page shows its fold-mean metrics
        console = browser.open(f"{page}/{configs[0].info.run_id}", until_text=configs[0].info.run_name)
        browser.wait_for_text("sensitivity")
        browser.screenshot("mlflow-config-run")
        assert browser.errors(console, allowed=(MLFLOW_AUTH_PROBE, RESIZE_OBSERVER_NOTICE)) == []
