"""The sweep's MLflow experiment is a training experiment, so the UI opens it on its runs table."""

from mlflow import MlflowClient

from sweeper.tracking import (
    EXPERIMENT_KIND_TAG,
    TRAINING_EXPERIMENT,
    TRAINING_VIEW_QUERY,
    default_tracking_uri,
    ensure_experiment,
    experiment_page,
)


def test_training_kind_is_the_value_the_installed_mlflow_ui_knows():
    """The value is one of the experiment kinds MLflow's web app switches on (read from its bundle)."""
    from pathlib import Path

    import mlflow

    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    mains = list(bundle.glob("main.*.js"))
    assert mains, "MLflow's UI bundle not found"
    text = mains[0].read_text(errors="ignore")
    assert f'CUSTOM_MODEL_DEVELOPMENT="{TRAINING_EXPERIMENT}"' in text
    assert f'"{EXPERIMENT_KIND_TAG}"' in text


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
    assert experiment_page(uri, "demo", "http://127.0.0.1:5000/") == (
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}?{TRAINING_VIEW_QUERY}"
    )
    assert experiment_page(uri, "missing", "http://127.0.0.1:5000") == (
        f"http://127.0.0.1:5000/#/experiments?{TRAINING_VIEW_QUERY}"
    )


def test_cli_keeps_the_same_training_view_query():
    from sweeper.cli import MLFLOW_TRAINING_VIEW

    assert MLFLOW_TRAINING_VIEW == TRAINING_VIEW_QUERY


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
