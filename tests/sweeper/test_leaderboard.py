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
    # an entry written before rungs were recorded: the kind from its reason, the stage is the reason
    assert configs.loc["b", "pruned_kind"] == "epoch_scheduler" and configs.loc["a", "pruned_kind"] == ""
    assert configs.loc["b", "pruned_stage"] == "fold 1 stopped at epoch 3"


def test_where_a_configuration_was_pruned_reads_as_its_rung_and_stage():
    from sweeper.leaderboard import pruned_kind, pruned_stage

    folds = {"reason": "fold rung 1: outside the top 1/2", "n_folds": 1, "rung": 1, "stopped_epoch": None}
    epochs = {"reason": "fold 2 stopped at epoch 1", "n_folds": 0, "rung": 1, "stopped_fold": 2, "stopped_epoch": 1}
    assert (pruned_kind(folds), pruned_stage(folds, 3)) == ("fold_halving", "rung 1: 1 of 3 folds")
    assert pruned_stage({**folds, "n_folds": 2, "rung": 2}, 3) == "rung 2: 2 of 3 folds"
    assert (pruned_kind(epochs), pruned_stage(epochs, 3)) == ("epoch_scheduler", "rung 1: fold 2 epoch 1")
    # a sibling stopped at its next epoch, at no rung
    assert pruned_stage({**epochs, "rung": None, "stopped_epoch": 3}) == "fold 2 epoch 3"
    assert pruned_kind(None) == pruned_stage(None) == ""


def test_configuration_reach_counts_folds_run_epochs_reached_and_training_spent(tmp_path):
    from sweeper.leaderboard import configuration_reach, record_pruned

    (tmp_path / "spec.yaml").write_text("name: c\nsearch:\n  constraints: [{metric: sensitivity, min: 0.5}]\n")
    done = {**result(0.8, 0.6), "epoch": 4}
    trials = pd.DataFrame(
        [trial_row(config("full", f), done, "finished") for f in range(3)]
        + [trial_row(config("weak", f), {**done, "best.sensitivity": 0.2}, "finished") for f in range(3)]
        + [trial_row(config("halved", 0), done, "finished")]
        + [
            trial_row(config("stopped", 0), done, "finished"),
            trial_row(config("stopped", 1), result(0.1, 0.1), "stopped"),
        ]
        + [trial_row(config("new", 0), done, "finished")]
    )
    record_pruned(tmp_path, "halved", reason="fold rung 1", n_folds=1, n_stopped=0, rung=1)
    record_pruned(
        tmp_path, "stopped", reason="fold 1 stopped at epoch 3", n_folds=1, n_stopped=1, stopped_fold=1, stopped_epoch=3
    )
    write_leaderboard(trials, tmp_path)
    configs = read_configs(tmp_path)
    by_id = configs.set_index("config_id")
    assert by_id.loc["weak", "broken_constraint"] == "sensitivity>=0.5" and not by_id.loc["weak", "feasible"]
    assert by_id.loc["full", "broken_constraint"] == "" and by_id.loc["full", "feasible"]
    reach = configuration_reach(configs, read_trials(tmp_path), folds_total=3, epochs_total=4).set_index("config_id")
    assert list(reach.index) == list(configs["config_id"])  # the leaderboard's order
    assert reach.loc["full", ["outcome", "folds_run", "epochs_reached", "share_trained"]].tolist() == [
        "finished",
        3,
        4,
        1.0,
    ]
    assert reach.loc["weak", "outcome"] == "infeasible"
    assert reach.loc["halved", ["outcome", "pruned_kind", "folds_run", "epochs_reached"]].tolist() == [
        "pruned",
        "fold_halving",
        1,
        4,
    ]
    assert reach.loc["halved", "share_trained"] == 4 / 12
    stopped = reach.loc["stopped"]
    assert (stopped["pruned_kind"], stopped["pruned_stage"], stopped["epochs_reached"]) == (
        "epoch_scheduler",
        "fold 1 epoch 3",
        3,
    )
    assert stopped["share_trained"] == (4 + 3) / 12
    assert reach.loc["new", "outcome"] == "running"  # 1 of 3 folds, not pruned: the sweep goes on


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


def repeat_row(cid, fold, repeat, dice, status="finished"):
    cfg = config(cid, fold).model_copy(update={"repeat": repeat, "repeats": 3})
    return trial_row(cfg, result(dice, dice) if status == "finished" else None, status)


def test_repeats_are_averaged_per_fold_before_the_fold_statistics_and_their_spread_is_reported_apart():
    # fold 0: 0.7, 0.8, 0.9 (mean 0.8); fold 1: 0.5, 0.7 and a failed repeat (mean 0.6)
    rows = [
        repeat_row("a", 0, 0, 0.7),
        repeat_row("a", 0, 1, 0.8),
        repeat_row("a", 0, 2, 0.9),
        repeat_row("a", 1, 0, 0.5),
        repeat_row("a", 1, 1, 0.7),
        repeat_row("a", 1, 2, None, status="failed"),
    ]
    [row] = aggregate(pd.DataFrame(rows)).to_dict("records")
    assert np.isclose(row["dice"], 0.7)  # (0.8 + 0.6) / 2, not the mean of the five runs (0.72)
    assert np.isclose(row["dice_std"], np.std([0.8, 0.6], ddof=1))  # over folds, from the fold means
    # pooled within folds: (0.01 + 0 + 0.01 + 0.01 + 0.01) / ((3 - 1) + (2 - 1))
    assert np.isclose(row["dice_seed_std"], np.sqrt(0.04 / 3))
    assert (row["n_folds"], row["n_repeats"], row["n_failed"]) == (2, 2, 1)


def pooled_within_fold_std(values_by_fold):
    """The formula on plain lists: sqrt(sum_f sum_r (y_fr - mean_f)^2 / sum_f (R_f - 1)), NaN without a dof."""
    kept = [np.asarray([v for v in fold if not np.isnan(v)]) for fold in values_by_fold]
    squares = sum(float(((v - v.mean()) ** 2).sum()) for v in kept if len(v))
    dof = sum(len(v) - 1 for v in kept if len(v))
    return np.sqrt(squares / dof) if dof > 0 else np.nan


def test_seed_stds_of_simulated_repeats_give_the_formula_and_recover_the_true_seed_spread():
    from scipy.stats import chi2

    from sweeper.leaderboard import CONFIG_IDENTITY, seed_std, seed_stds

    # 30 configurations x 4 folds x 1-6 repeats, each fold its own difficulty, seed noise of known sd per
    # configuration (0.01 to 0.1); about a tenth of the values missing, one configuration with single runs
    rng = np.random.default_rng(7)
    truth, rows = {}, []
    for c in range(30):
        cid, sd = f"c{c}", 0.01 + 0.003 * c
        truth[cid] = sd
        for fold in range(4):
            difficulty = rng.uniform(0.3, 0.9)
            for repeat in range(1 if c == 0 else int(rng.integers(1, 7))):
                dice, sens = difficulty + rng.normal(0, sd, 2)
                rows.append({"config_id": cid, "fold": fold, "repeat": repeat, "dice": dice, "sensitivity": sens})
    trials = pd.DataFrame(rows)
    trials.loc[rng.random(len(trials)) < 0.1, "sensitivity"] = np.nan

    table = seed_stds(trials, ["dice", "sensitivity"])
    assert sorted(table.index) == sorted(truth)
    for cid, part in trials.groupby("config_id"):
        for name in ("dice", "sensitivity"):
            expected = pooled_within_fold_std([g[name].tolist() for _, g in part.groupby("fold")])
            assert np.isclose(table.at[cid, name], expected, equal_nan=True), (cid, name)
            assert np.isclose(seed_std(part, name), expected, equal_nan=True), (cid, name)
    assert table.loc["c0"].isna().all()  # single runs: no seed spread
    # against the simulated seed sd: dof s^2 / sd^2 is chi-square with dof degrees of freedom per configuration,
    # so their sum over the configurations is chi-square with the summed dof; inside its central 99.8%
    dof = (trials.groupby(["config_id", "fold"]).size() - 1).groupby("config_id").sum().drop("c0")
    total = float((dof * table["dice"].drop("c0") ** 2 / pd.Series(truth).drop("c0") ** 2).sum())
    assert chi2.ppf(0.001, dof.sum()) < total < chi2.ppf(0.999, dof.sum()), (total, dof.sum())
    # and aggregate reports it under <metric>_seed_std
    identity = {name: "" for name in CONFIG_IDENTITY if name not in trials} | {"status": "finished"}
    configs = aggregate(trials.assign(**identity)).set_index("config_id")
    assert np.allclose(configs.loc[table.index, "dice_seed_std"], table["dice"], equal_nan=True)


def test_a_single_run_per_fold_has_no_seed_spread_and_old_tables_read_as_repeat_zero(tmp_path):
    trials = pd.DataFrame([trial_row(config("a", 0), result(0.8, 0.6), "finished")])
    assert trials["repeat"].tolist() == [0] and trials["training_params"].tolist() == ["{}"]
    assert np.isnan(aggregate(trials)["dice_seed_std"].iloc[0])
    old = trials.drop(columns=["repeat", "training_params"])  # written before repeats existed
    write_leaderboard(old, tmp_path)
    assert read_trials(tmp_path)["repeat"].tolist() == [0]
    assert read_configs(tmp_path)["n_repeats"].tolist() == [1]


def test_the_writer_keeps_one_row_per_fold_and_repeat(tmp_path):
    from sweeper.leaderboard import LeaderboardWriter

    writer = LeaderboardWriter(tmp_path)
    for repeat, dice in ((0, 0.5), (1, 0.7), (1, 0.9)):  # repeat 1 reported twice: the last row stays
        writer._record(repeat_row("a", 0, repeat, dice))
    trials = read_trials(tmp_path)
    assert trials[["repeat", "dice"]].values.tolist() == [[0, 0.5], [1, 0.9]]
    assert read_configs(tmp_path)["dice"].tolist() == [0.7]


def test_compare_pairs_folds_after_averaging_their_repeats():
    from sweeper.leaderboard import compare_configs

    rows = [repeat_row("a", f, r, 0.5 + 0.1 * f + 0.01 * r) for f in range(3) for r in range(3)]
    rows += [repeat_row("b", f, r, 0.5 + 0.1 * f) for f in range(3) for r in range(2)]
    table = compare_configs(pd.DataFrame(rows), "a", "b", ["dice"])
    [row] = table.to_dict("records")
    assert row["n_folds"] == 3 and np.isclose(row["mean_difference"], 0.01)  # a: each fold 0.01 above b


def test_case_records_are_gathered_per_repeat_and_cover_a_configuration_once_every_repeat_has_them(tmp_path):
    from types import SimpleNamespace

    from test_cases import records

    from sweeper.cases import read_cases
    from sweeper.leaderboard import covered_configs, gather_trial_cases

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    records(config_id="a", fold=0).drop(columns=["config_id"]).to_parquet(checkpoint / "cases.parquet")
    trials = pd.DataFrame([repeat_row("a", 0, 0, 0.5), repeat_row("a", 0, 1, 0.6)])
    first = gather_trial_cases(tmp_path, "a", 0, SimpleNamespace(path=str(checkpoint)), repeat=0)
    assert first.name == "a.fold0.parquet" and covered_configs(tmp_path, trials) == []  # repeat 1 not yet
    second = gather_trial_cases(tmp_path, "a", 0, SimpleNamespace(path=str(checkpoint)), repeat=1)
    assert second.name == "a.fold0.repeat1.parquet" and covered_configs(tmp_path, trials) == ["a"]
    assert sorted(set(read_cases(first.parent).column("repeat").to_pylist())) == [0, 1]
