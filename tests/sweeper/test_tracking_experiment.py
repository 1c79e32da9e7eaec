"""The sweep's MLflow experiment is a training experiment, and `sweeper ui` opens it on its runs table with the
configuration and fold runs shown (sweeper.tracking.training_view_index)."""

import json
import re
import socket
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from sweeper import tracking
from sweeper.cli import main
from sweeper.tracking import (
    CONFIG_LEVEL,
    EXPERIMENT_KIND_TAG,
    EXPERIMENT_PAGE_STATE_KEY,
    FOLD_LEVEL,
    LEVEL_TAG,
    PARENT_TAG,
    SWEEP_LEVEL,
    TRAINING_EXPERIMENT,
    TRAINING_VIEW_APP,
    TRAINING_WORKFLOW,
    WORKFLOW_TYPE_STORAGE_KEY,
    default_tracking_uri,
    ensure_experiment,
    experiment_page,
    parent_runs,
    training_view_index,
)

BUNDLE = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"


def bundle_text(pattern: str) -> str:
    """The installed MLflow web app's chunks matching ``pattern``, joined."""
    files = sorted(BUNDLE.glob(pattern))
    assert files, f"MLflow's UI bundle ({BUNDLE / pattern}) not found"
    return "\n".join(f.read_text(errors="ignore") for f in files)


def test_training_kind_is_the_value_the_installed_mlflow_ui_knows():
    """The value is one of the experiment kinds MLflow's web app switches on (read from its bundle)."""
    text = bundle_text("main.*.js")
    assert f'CUSTOM_MODEL_DEVELOPMENT="{TRAINING_EXPERIMENT}"' in text
    assert f'"{EXPERIMENT_KIND_TAG}"' in text


def test_storage_keys_are_the_ones_the_installed_mlflow_ui_reads():
    """The view and the runs table's saved state sit where MLflow's web app reads them (its bundle): the view
    through ``useLocalStorage`` (key ``<key>_v<version>``, JSON value), the page state through its
    LocalStorageStore (``MLflowLocalStorage-<version>-<scope>-ReactComponentState``, scope ``ExperimentPage-<ids>``),
    whose ``runsExpanded`` is a part of the state it restores."""
    key, version = WORKFLOW_TYPE_STORAGE_KEY.rsplit("_v", 1)
    main_js = bundle_text("main.*.js")
    assert f'key:"{key}",version:{version},initialValue' in main_js
    assert "`${e}_v${t}`" in main_js and f'MACHINE_LEARNING="{TRAINING_WORKFLOW}"' in main_js
    prefix, store_version, scope, _ = EXPERIMENT_PAGE_STATE_KEY.split("-", 3)
    assert f'r.version="{store_version}"' in main_js and f'["{prefix}",r.version,this.scope,e].join("-")' in main_js
    assert 'reactComponentStateKey="ReactComponentState"' in main_js
    chunks = bundle_text("*.js")
    assert f'getStoreForComponent("{scope}",e).loadComponentState()' in chunks
    assert '"runsExpanded","runsPinned"' in chunks  # the restored ui-state keys


def test_the_training_view_is_injected_first_in_the_head_once():
    html = '<!doctype html><html><head><meta charset="utf-8"/><script defer src="main.js"></script></head></html>'
    once = training_view_index(html, {"3": ["abc"]})
    assert once.startswith('<!doctype html><html><head><script id="sweeper-training-view">')
    assert once.count("<script") == 2 and once.endswith('<script defer src="main.js"></script></head></html>')
    assert json.dumps(EXPERIMENT_PAGE_STATE_KEY.format(ids='["3"]')).replace("<", "\\u003c") in once
    assert training_view_index(once, {"3": ["abc"]}) == once  # idempotent
    # a second injection replaces the first: one script, the newer runs
    again = training_view_index(once, {"3": ["abc", "def"]})
    assert again.count('id="sweeper-training-view"') == 1 and '"def"' in again
    assert training_view_index(again, {"3": ["abc"]}) == once
    # html without a head: the script goes in front
    bare = training_view_index("<p>MLflow</p>")
    assert bare.startswith('<script id="sweeper-training-view">') and bare.endswith("</script><p>MLflow</p>")
    # nothing a run id holds can end the script early
    hostile = training_view_index(html, {"1": ["</script><script>alert(1)</script>"]})
    assert hostile.count("</script>") == 2


def test_the_injected_script_sets_only_what_the_browser_has_not_chosen(browser, tmp_path):
    """In Chromium: a fresh browser gets the training view and the parent runs expanded; a browser that chose
    the GenAI view, or collapsed a run, keeps its choice, and the rest of its saved state stays."""
    page = tmp_path / "index.html"
    state_key = EXPERIMENT_PAGE_STATE_KEY.format(ids='["7"]')

    html = training_view_index("<html><head></head><body>MLflow</body></html>", {"7": ["sweep", "config"]})
    script = re.search(r'<script id="sweeper-training-view">(.*?)</script>', html, re.S).group(1)
    page.write_text(html)
    browser.driver.get(page.as_uri())

    def storage_after_load(before: dict[str, str]) -> dict[str, str]:
        # The page's script runs in the open page, as on a load, after the browser's storage is set:
        # setting localStorage and then reloading races Chromium's storage commit.
        return browser.driver.execute_script(
            "localStorage.clear(); for (const [k, v] of Object.entries(arguments[0])) localStorage.setItem(k, v);"
            + script
            + "; return Object.assign({}, localStorage);",
            before,
        )

    fresh = storage_after_load({})
    assert json.loads(fresh[WORKFLOW_TYPE_STORAGE_KEY]) == TRAINING_WORKFLOW
    assert json.loads(fresh[state_key]) == {"runsExpanded": {"sweep": True, "config": True}}

    chosen = {
        WORKFLOW_TYPE_STORAGE_KEY: json.dumps("genai"),
        state_key: json.dumps({"orderByKey": "attributes.start_time", "runsExpanded": {"sweep": False}}),
        "other": "kept",
    }
    kept = storage_after_load(chosen)
    assert kept[WORKFLOW_TYPE_STORAGE_KEY] == json.dumps("genai") and kept["other"] == "kept"
    assert json.loads(kept[state_key]) == {
        "orderByKey": "attributes.start_time",
        "runsExpanded": {"sweep": False, "config": True},
    }
    assert storage_after_load(kept) == kept  # a reload changes nothing more
    browser.driver.execute_script("localStorage.clear()")


def test_parent_runs_are_the_sweep_and_configuration_runs_of_each_experiment(tmp_path):
    client = MlflowClient(default_tracking_uri(tmp_path))
    expected = {}
    for name in ("first", "second"):
        experiment = ensure_experiment(client, name, None)
        sweep = client.create_run(experiment, tags={LEVEL_TAG: SWEEP_LEVEL}).info.run_id
        config = client.create_run(experiment, tags={LEVEL_TAG: CONFIG_LEVEL, PARENT_TAG: sweep}).info.run_id
        client.create_run(experiment, tags={LEVEL_TAG: FOLD_LEVEL, PARENT_TAG: config})
        expected[experiment] = {sweep, config}
    client.create_experiment("empty")
    assert {experiment: set(runs) for experiment, runs in parent_runs(client).items()} == expected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("installed", [True, False])
def test_sweeper_ui_serves_the_training_view_app_when_installed(tmp_path, monkeypatch, installed):
    """`sweeper ui` starts ``mlflow server --app-name sweeper-training-view``; without the installed entry point
    (a bare checkout) it warns and serves plain MLflow."""
    MlflowClient(default_tracking_uri(tmp_path)).search_experiments()  # creates RESULTS/mlflow.db
    started = []
    monkeypatch.setattr(tracking, "training_view_installed", lambda: installed)
    monkeypatch.setattr("sweeper.cli.run_server_group", lambda command: started.append(command) or 0)
    port = _free_port()
    out = CliRunner().invoke(main, ["ui", "--results", str(tmp_path), "--port", str(port)])
    assert out.exit_code == 0, out.output
    assert (["--app-name", TRAINING_VIEW_APP] == started[0][-2:]) is installed
    assert ("not installed" in out.output) is not installed
    assert f"MLflow UI on http://127.0.0.1:{port}/#/experiments  (Ctrl-C stops it)" in out.output


def test_the_training_view_entry_point_names_the_app_factory():
    """pyproject.toml's ``mlflow.app`` entry point (what ``mlflow server --app-name`` loads) is the factory."""
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    section = pyproject.split('[project.entry-points."mlflow.app"]\n', 1)[1].split("\n[", 1)[0]
    assert f'{TRAINING_VIEW_APP} = "sweeper.tracking:{tracking.create_training_view_app.__name__}"' in section


def test_new_experiment_is_created_as_training(tmp_path):
    uri = default_tracking_uri(tmp_path)
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, "sweep", (tmp_path / "artifacts").as_uri())
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == TRAINING_EXPERIMENT
    assert ensure_experiment(client, "sweep", None) == experiment_id  # found again, not duplicated


def test_an_untagged_experiment_gets_the_tag_on_resume(tmp_path):
    uri = default_tracking_uri(tmp_path)
    client = MlflowClient(uri)
    old = client.create_experiment("older")  # as an earlier Sweeper release made it
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert ensure_experiment(client, "older", None) == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == TRAINING_EXPERIMENT


def test_experiment_page_links_the_experiment_itself(tmp_path):
    uri = default_tracking_uri(tmp_path)
    experiment_id = ensure_experiment(MlflowClient(uri), "demo", None)
    assert (
        experiment_page(uri, "demo", "http://127.0.0.1:5000/") == f"http://127.0.0.1:5000/#/experiments/{experiment_id}"
    )
    assert experiment_page(uri, "missing", "http://127.0.0.1:5000") == "http://127.0.0.1:5000/#/experiments"


def test_a_pruned_configuration_run_is_tagged_with_its_pruning_and_rung():
    from sweeper.tracking import pruned_tags

    by_folds = pruned_tags(
        {"reason": "fold rung 1: outside the top 1/2", "n_folds": 1, "rung": 1, "stopped_epoch": None}
    )
    assert by_folds == {
        "sweeper.status": "pruned",
        "sweeper.pruned_at": "fold rung 1: outside the top 1/2",
        "sweeper.pruned_by": "fold_halving",
        "sweeper.pruned_rung": "1",
    }
    by_epochs = pruned_tags({"reason": "fold 2 stopped at epoch 1", "rung": 1, "stopped_fold": 2, "stopped_epoch": 1})
    assert by_epochs["sweeper.pruned_by"] == "epoch_scheduler" and by_epochs["sweeper.pruned_rung"] == "1"
    assert (by_epochs["sweeper.stopped_fold"], by_epochs["sweeper.stopped_epoch"]) == ("2", "1")
    # a ledger entry written before rungs were recorded keeps the status and why
    assert pruned_tags({"reason": "fold 0 stopped at epoch 3"})["sweeper.pruned_by"] == "epoch_scheduler"
