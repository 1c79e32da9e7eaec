"""Leaderboard tables: best-epoch rows per fold, fold means and spreads per configuration."""

import json

import numpy as np
import pandas as pd

from sweeper.leaderboard import aggregate, read_configs, read_trials, trial_row, write_leaderboard
from trainables.contract import TrialConfig


def config(cid, fold, loss="dice"):
    return TrialConfig.from_dict(
        {
            "config_id": cid,
            "fold": fold,
            "arch": "unet",
            "encoder": "resnet18",
            "loss": loss,
            "loss_params": {"smooth": 1.0},
            "cache_dir": "cache",
        }
    )


def result(dice, sens):
    return {
        "epoch": 3,
        "dice": 0.1,
        "best_epoch": 2,
        "best.dice": dice,
        "best.sensitivity": sens,
        "best.sensitivity.stomach": sens / 2,
    }


def test_trial_row_takes_best_epoch_values_under_plain_names():
    row = trial_row(config("a", 1), result(0.8, 0.7), "finished")
    assert row["dice"] == 0.8 and row["sensitivity.stomach"] == 0.35 and row["best_epoch"] == 2
    assert row["epochs_done"] == 3 and json.loads(row["loss_params"]) == {"smooth": 1.0}


def test_aggregate_means_stds_and_failed_folds():
    trials = pd.DataFrame(
        [
            trial_row(config("a", 0), result(0.8, 0.6), "finished"),
            trial_row(config("a", 1), result(0.6, 0.4), "finished"),
            trial_row(config("b", 0, "tversky"), result(0.9, 0.9), "finished"),
            trial_row(config("b", 1, "tversky"), None, "failed", error="boom"),
        ]
    )
    configs = aggregate(trials).set_index("config_id")
    assert configs.loc["a", "dice"] == 0.7 and np.isclose(configs.loc["a", "dice_std"], np.std([0.8, 0.6], ddof=1))
    assert configs.loc["a", "n_folds"] == 2 and configs.loc["a", "n_failed"] == 0
    assert configs.loc["b", "n_folds"] == 1 and configs.loc["b", "n_failed"] == 1
    assert configs.loc["b", "dice"] == 0.9 and np.isnan(configs.loc["b", "dice_std"])
    assert aggregate(trials)["config_id"].tolist() == ["b", "a"]  # ranked by dice


def test_write_and_read_round_trip(tmp_path):
    trials = pd.DataFrame([trial_row(config("a", f), result(0.5 + f / 10, 0.5), "finished") for f in range(3)])
    write_leaderboard(trials, tmp_path)
    assert len(read_trials(tmp_path)) == 3
    assert np.isclose(read_configs(tmp_path).loc[0, "dice"], 0.6)
    assert not list((tmp_path / "leaderboard").glob(".*tmp"))  # no temp files left behind


def test_a_stopped_fold_is_kept_apart_and_a_pruned_configuration_is_marked(tmp_path):
    from sweeper.leaderboard import fold_trial_status, read_pruned, record_pruned

    stopped_config = TrialConfig.from_dict({**config("b", 0).to_dict(), "epochs": 5})
    assert fold_trial_status(stopped_config, result(0.5, 0.5)) == "stopped"  # epoch 3 of 5
    assert fold_trial_status(stopped_config, {**result(0.5, 0.5), "epoch": 5}) == "finished"
    # with the sweep's scheduler state, only the trials the scheduler stopped count as stopped
    assert fold_trial_status(stopped_config, result(0.5, 0.5), {"b/0": 3}) == "stopped"
    assert fold_trial_status(stopped_config, result(0.5, 0.5), {}) == "finished"
    trials = pd.DataFrame(
        [
            trial_row(config("a", 0), result(0.8, 0.6), "finished"),
            trial_row(config("a", 1), result(0.6, 0.4), "finished"),
            trial_row(config("b", 0), result(0.9, 0.9), "finished"),
            trial_row(stopped_config.model_copy(update={"fold": 1}), result(0.1, 0.1), "stopped"),
        ]
    )
    record_pruned(tmp_path, "b", reason="fold 1 stopped at epoch 3", n_folds=1, n_stopped=1)
    assert read_pruned(tmp_path)["b"]["n_folds"] == 1
    write_leaderboard(trials, tmp_path)
    configs = read_configs(tmp_path).set_index("config_id")
    assert configs.loc["a", "status"] == "finished" and configs.loc["a", "pruned_at"] == ""
    assert configs.loc["b", "status"] == "pruned" and configs.loc["b", "n_stopped"] == 1
    assert configs.loc["b", "n_folds"] == 1 and configs.loc["b", "dice"] == 0.9  # the stopped fold never counts
    assert "stopped at epoch 3" in configs.loc["b", "pruned_at"]


def test_configs_say_whether_they_meet_the_sweeps_constraints(tmp_path):
    from sweeper.pareto import pareto_table

    (tmp_path / "spec.yaml").write_text("name: c\nsearch:\n  constraints: [{metric: sensitivity, min: 0.5}]\n")
    trials = pd.DataFrame(
        [
            trial_row(config("a", 0), result(0.8, 0.6), "finished"),
            trial_row(config("b", 0), result(0.9, 0.4), "finished"),
        ]
    )
    write_leaderboard(trials, tmp_path)
    configs = read_configs(tmp_path).set_index("config_id")
    assert bool(configs.loc["a", "feasible"]) and not bool(configs.loc["b", "feasible"])
    # the front reads the verdict from configs.parquet when no constraints are passed
    table = pareto_table(read_configs(tmp_path).assign(precision=[0.5, 0.9])).set_index("config_id")
    assert table.loc["b", "front_status"] == "infeasible" and table.loc["a", "front_status"] == "front"
