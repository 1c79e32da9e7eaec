"""FoldSearcher: one Optuna trial per configuration, one Tune trial per fold, fold means told once."""

import pickle

import optuna
import pytest
from ray.tune.search import Searcher

import sweeper.search
from sweeper.search import FoldSearcher, config_id
from sweeper.spec import parse_spec
from sweeper.trial_config import trial_settings
from trainables.contract import Configuration, TrialConfig, TrialSettings

SETTINGS = TrialSettings(cache_dir="/c")


def make_spec(**search):
    return parse_spec(
        {
            "name": "s",
            "data": {"format": "synthetic", "folds": 3, "run_folds": [0, 2]},
            "losses": [{"name": "dice"}, {"name": "tversky", "params": {"alpha": "search", "beta": 0.5}}],
            "search": {"budget": 3, **search},
        }
    )


def fake_result(sens, prec):
    return {"best.sensitivity": sens, "best.precision": prec}


def drain(searcher, prefix="t"):
    """Returns the fold configs suggested until the searcher waits or finishes."""
    out = []
    while True:
        config = searcher.suggest(f"{prefix}{len(out)}")
        if config is None or config == Searcher.FINISHED:
            return out, config
        out.append(config)


def test_fan_out_over_folds_and_tell_fold_means(tmp_path):
    searcher = FoldSearcher(make_spec(), f"sqlite:///{tmp_path}/o.db", TrialSettings(cache_dir="/c", epochs=1))
    configs, last = drain(searcher)
    assert last is None  # waits: folds are running
    ids = {c["config_id"] for c in configs}
    # each distinct configuration exactly once per fold to run
    assert sorted((c["config_id"], c["fold"]) for c in configs) == sorted((i, f) for i in ids for f in (0, 2))
    assert all(c["cache_dir"] == "/c" and c["config_id"] == config_id(TrialConfig.from_dict(c)) for c in configs)
    for i, c in enumerate(configs):
        searcher.on_trial_complete(f"t{i}", fake_result(0.5 + c["fold"] / 10, 0.8))
    assert searcher.suggest("next") == Searcher.FINISHED
    study = searcher.study
    assert len({t.user_attrs["config_id"] for t in study.trials}) == 3  # budget = distinct configurations
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.values == pytest.approx([0.6, 0.8])  # mean of folds 0 and 2
        assert trial.user_attrs["config_id"] in ids


def test_failed_fold_tells_fail_never_a_score(tmp_path):
    spec = parse_spec(
        {
            "name": "f",
            "data": {"format": "synthetic", "folds": 2},
            "losses": [{"name": "dice"}],
            "search": {"mode": "grid"},
        }
    )
    searcher = FoldSearcher(spec, f"sqlite:///{tmp_path}/o.db", SETTINGS)
    configs, _ = drain(searcher)
    assert len(configs) == 2
    searcher.on_trial_complete("t0", fake_result(0.9, 0.9))
    searcher.on_trial_complete("t1", None, error=True)
    [trial] = searcher.study.trials
    assert trial.state == optuna.trial.TrialState.FAIL and trial.values is None


def test_duplicate_configuration_is_not_retrained_nor_counted(tmp_path, monkeypatch):
    # the space counts as used up after 5 known proposals in a row instead of 100 (each is an Optuna ask and
    # tell on SQLite storage): the same rule, a twentieth of the storage writes
    monkeypatch.setattr(sweeper.search, "MAX_DUPLICATES_IN_ROW", 5)
    spec = parse_spec(
        {
            "name": "d",
            "data": {"format": "synthetic", "folds": 2},
            "losses": [{"name": "dice"}, {"name": "soft_bce"}],
            "search": {"budget": 3},
        }
    )
    searcher = FoldSearcher(spec, f"sqlite:///{tmp_path}/o.db", SETTINGS)
    configs, _ = drain(searcher)
    # only two distinct configurations exist: each trained once per fold, the space is then used up
    assert len(configs) == 4 and len({c["config_id"] for c in configs}) == 2
    for i, c in enumerate(configs):
        searcher.on_trial_complete(f"t{i}", fake_result(0.7 if c["loss"] == "dice" else 0.5, 0.6))
    assert searcher.suggest("x") == Searcher.FINISHED
    trials = searcher.study.trials
    assert len(trials) >= 2 + 5  # duplicates were asked until 5 in a row, told the known result
    for trial in trials:
        assert trial.values == [0.7 if trial.params["loss"] == "dice" else 0.5, 0.6]


def test_grid_mode_enqueues_every_fixed_configuration(tmp_path):
    spec = parse_spec(
        {
            "name": "g",
            "data": {"format": "synthetic", "folds": 2},
            "model": {"architectures": ["unet", "fpn"], "encoders": ["resnet18"]},
            "losses": [{"name": "dice"}, {"name": "tversky", "params": {"alpha": 0.3, "beta": 0.7}}],
            "search": {"mode": "grid"},
        }
    )
    searcher = FoldSearcher(spec, f"sqlite:///{tmp_path}/o.db", SETTINGS)
    configs, _ = drain(searcher)
    seen = {(c["arch"], c["loss"], tuple(sorted(c["loss_params"].items()))) for c in configs}
    assert len(configs) == 8 and len(seen) == 4
    assert any(
        a == "fpn" and loss == "tversky" and dict(p)["alpha"] == 0.3 and dict(p)["beta"] == 0.7 for a, loss, p in seen
    )


def test_save_restore_continues_where_it_stopped(tmp_path):
    storage = f"sqlite:///{tmp_path}/o.db"
    searcher = FoldSearcher(make_spec(), storage, SETTINGS)
    configs, _ = drain(searcher)
    searcher.on_trial_complete("t0", fake_result(0.5, 0.5))
    searcher.save(str(tmp_path / "state.pkl"))
    clone = pickle.loads(pickle.dumps(searcher))  # as Tune pickles it with the experiment
    clone.restore(str(tmp_path / "state.pkl"))
    for i in range(1, len(configs)):
        clone.on_trial_complete(f"t{i}", fake_result(0.5, 0.5))
    assert clone.suggest("x") == Searcher.FINISHED
    assert all(
        t.state == optuna.trial.TrialState.COMPLETE for t in optuna.load_study(study_name="s", storage=storage).trials
    )


def halving_spec(**search):
    return parse_spec(
        {
            "name": "h",
            "data": {"format": "synthetic", "folds": 3},
            "losses": [{"name": "dice"}, {"name": "tversky", "params": {"alpha": "search", "beta": 0.5}}],
            "search": {"budget": 3, "pruning": {"folds": {"min_folds": 1, "eta": 2}}, **search},
        }
    )


def test_fold_halving_runs_more_folds_only_for_the_top_and_tells_the_rest_pruned(tmp_path):
    from sweeper.leaderboard import read_pruned

    searcher = FoldSearcher(halving_spec(), f"sqlite:///{tmp_path}/o.db", SETTINGS, sweep_dir=tmp_path)
    first, last = drain(searcher)
    assert last is None and [c["fold"] for c in first] == [0, 0, 0]  # min_folds: one fold each
    scores = [(0.9, 0.9), (0.5, 0.5), (0.4, 0.3)]  # the first arrival goes on; the others are dominated
    for i, score in enumerate(scores):
        searcher.on_trial_complete(f"t{i}", fake_result(*score))
    best = first[0]["config_id"]
    more, _ = drain(searcher, prefix="u")
    assert [(c["config_id"], c["fold"]) for c in more] == [(best, 1)]  # rungs 1, 2, 3 folds with eta 2
    searcher.on_trial_complete("u0", fake_result(0.8, 0.7))
    last_fold, _ = drain(searcher, prefix="v")
    assert [(c["config_id"], c["fold"]) for c in last_fold] == [(best, 2)]
    searcher.on_trial_complete("v0", fake_result(0.7, 0.5))
    assert searcher.suggest("w") == Searcher.FINISHED
    by_id = {t.user_attrs["config_id"]: t for t in searcher.study.trials}
    assert by_id[best].state == optuna.trial.TrialState.COMPLETE
    assert by_id[best].values == pytest.approx([0.8, 0.7])
    for config, score in zip(first[1:], scores[1:]):
        trial = by_id[config["config_id"]]
        assert trial.state == optuna.trial.TrialState.PRUNED and trial.values is None
        assert trial.user_attrs["partial.sensitivity"] == pytest.approx(score[0])
        assert trial.user_attrs["partial.precision"] == pytest.approx(score[1])
        assert trial.user_attrs["n_folds"] == 1 and "fold rung 1" in trial.user_attrs["pruned_at"]
        assert trial.user_attrs["pruned_rung"] == 1 and "stopped_epoch" not in trial.user_attrs
    ledger = read_pruned(tmp_path)
    assert set(ledger) == {c["config_id"] for c in first[1:]}
    assert all(entry["n_folds"] == 1 for entry in ledger.values())
    # pruned at the first fold rung (1 of 3 folds), not by the epoch scheduler
    assert all((e["rung"], e["stopped_fold"], e["stopped_epoch"]) == (1, None, None) for e in ledger.values())


def test_fold_halving_state_survives_save_and_restore(tmp_path):
    storage = f"sqlite:///{tmp_path}/o.db"
    searcher = FoldSearcher(halving_spec(), storage, SETTINGS)
    first, _ = drain(searcher)
    searcher.on_trial_complete("t0", fake_result(0.9, 0.9))
    searcher.save(str(tmp_path / "state.pkl"))
    clone = pickle.loads(pickle.dumps(searcher))
    clone.restore(str(tmp_path / "state.pkl"))
    clone.on_trial_complete("t1", fake_result(0.5, 0.5))  # judged against the arrival saved before
    states = {t.user_attrs["config_id"]: t.state for t in clone.study.trials}
    assert states[first[1]["config_id"]] == optuna.trial.TrialState.PRUNED


def test_a_fold_the_scheduler_stopped_prunes_its_configuration_and_drops_its_queued_folds(tmp_path):
    searcher = FoldSearcher(make_spec(), f"sqlite:///{tmp_path}/o.db", TrialSettings(cache_dir="/c", epochs=4))
    configs, _ = drain(searcher, prefix="t")
    stopped = configs[0]["config_id"]
    searcher.on_trial_complete("t0", {**fake_result(0.3, 0.2), "epoch": 2})  # stopped at epoch 2 of 4
    trial = next(t for t in searcher.study.trials if t.user_attrs["config_id"] == stopped)
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["n_folds"] == 0 and "stopped at epoch 2" in trial.user_attrs["pruned_at"]
    assert (trial.user_attrs["stopped_fold"], trial.user_attrs["stopped_epoch"]) == (configs[0]["fold"], 2)
    searcher.on_trial_complete("t1", {**fake_result(0.9, 0.9), "epoch": 4})  # its other fold ran on: recorded only
    assert trial.state == optuna.trial.TrialState.PRUNED


def test_the_ledger_records_where_the_scheduler_judged_and_stopped_a_configuration(tmp_path):
    import json

    from sweeper.leaderboard import read_pruned
    from sweeper.pruning import SCHEDULER_STATE_FILE

    spec = parse_spec(
        {
            **make_spec().model_dump(exclude_unset=True),
            "scheduler": {"type": "moasha", "grace_period": 1, "reduction_factor": 2},
        }
    )
    settings = TrialSettings(cache_dir="/c", epochs=4)  # rungs at epochs 1 and 2
    searcher = FoldSearcher(spec, f"sqlite:///{tmp_path}/o.db", settings, sweep_dir=tmp_path)
    configs, _ = drain(searcher)
    cid = configs[0]["config_id"]
    # the scheduler judged fold 2 at epoch 2 (rung 2), then stopped fold 0 at its next epoch (3)
    state = {"stopped": {f"{cid}/2": 2, f"{cid}/0": 3}}
    (tmp_path / SCHEDULER_STATE_FILE).write_text(json.dumps(state))
    searcher.on_trial_complete("t0", {**fake_result(0.3, 0.2), "epoch": 3})  # fold 0 ends first
    entry = read_pruned(tmp_path)[cid]
    assert (entry["rung"], entry["stopped_fold"], entry["stopped_epoch"]) == (2, 2, 2)
    assert entry["reason"] == "fold 2 stopped at epoch 2"


def test_constraints_reach_optuna_as_trial_constraints(tmp_path):
    spec = make_spec(constraints=[{"metric": "dice", "min": 0.5}, {"metric": "sensitivity", "max": 0.95}])
    searcher = FoldSearcher(spec, f"sqlite:///{tmp_path}/o.db", TrialSettings(cache_dir="/c", epochs=1))
    configs, _ = drain(searcher)
    for i, c in enumerate(configs):
        dice = 0.4 if c["config_id"] == configs[0]["config_id"] else 0.7
        searcher.on_trial_complete(f"t{i}", {**fake_result(0.6, 0.8), "best.dice": dice})
    for trial in searcher.study.trials:
        dice = trial.user_attrs["mean.dice"]
        # Optuna's convention: <= 0 feasible; min - mean, mean - max
        assert trial.constraints == pytest.approx({"dice>=0.5": 0.5 - dice, "sensitivity<=0.95": 0.6 - 0.95})
        assert trial.values == pytest.approx([0.6, 0.8])  # the constraint metric is not an objective


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random", "gp"])
def test_every_sampler_takes_objectives_constraints_and_the_batch_setting(tmp_path, sampler):
    from sweeper.search import create_study

    spec = make_spec(sampler=sampler, batch_aware=True, constraints=[{"metric": "sensitivity", "min": 0.5}])
    study = create_study(spec, f"sqlite:///{tmp_path}/o.db")
    assert type(study.sampler).__name__.lower().startswith(sampler[:2])
    searcher = FoldSearcher(spec, f"sqlite:///{tmp_path}/o.db", TrialSettings(cache_dir="/c", epochs=1))
    configs, _ = drain(searcher)
    for i, _config in enumerate(configs):
        searcher.on_trial_complete(f"t{i}", fake_result(0.6, 0.8))
    assert searcher.suggest("x") == Searcher.FINISHED


def test_a_configuration_stopped_by_the_scheduler_counts_at_its_fold_rung_ranked_last(tmp_path):
    searcher = FoldSearcher(halving_spec(), f"sqlite:///{tmp_path}/o.db", TrialSettings(cache_dir="/c", epochs=4))
    first, _ = drain(searcher)
    searcher.on_trial_complete("t0", {**fake_result(0.3, 0.3), "epoch": 2})  # stopped: pruned, counted last
    searcher.on_trial_complete("t1", {**fake_result(0.2, 0.2), "epoch": 4})  # 2 arrivals keep 1: it is first
    more, _ = drain(searcher, prefix="u")
    assert [(c["config_id"], c["fold"]) for c in more] == [(first[1]["config_id"], 1)]


def test_fold_halving_decides_as_the_benchmarks_independent_replay(tmp_path):
    """The searcher, driven one fold trial at a time, prunes the same configurations and spends the same
    fold trials as benchmarks/pruning_simulation.py's replay of fold halving on the same results."""
    import importlib.util
    from pathlib import Path

    import numpy as np

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "pruning_simulation.py"
    spec_ = importlib.util.spec_from_file_location("pruning_simulation", path)
    simulation = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(simulation)
    n_configs, n_folds = 12, 5
    _, curves = simulation.simulate_curves(np.random.default_rng(7), n_configs, n_folds, 1, 2.0)
    spent, finished = simulation.replay(curves, simulation.Strategy(folds=(1, 2.0)))
    assert spent < n_configs * n_folds and 0 < len(finished) < n_configs  # something was pruned

    spec = parse_spec(
        {
            "name": "r",
            "data": {"format": "synthetic", "folds": n_folds},
            "losses": [{"name": "tversky", "params": {"alpha": "search", "beta": 0.5}}],
            "search": {"budget": n_configs, "sampler": "random", "pruning": {"folds": {"min_folds": 1, "eta": 2}}},
        }
    )
    searcher = FoldSearcher(spec, f"sqlite:///{tmp_path}/o.db", TrialSettings(cache_dir="/c", epochs=1))
    order: list[str] = []  # config_id of the c-th configuration handed out
    trials = 0
    while (config := searcher.suggest(f"t{trials}")) not in (None, Searcher.FINISHED):
        if config["config_id"] not in order:
            order.append(config["config_id"])
        c, fold = order.index(config["config_id"]), config["fold"]
        searcher.on_trial_complete(f"t{trials}", {**fake_result(*curves[c, fold, 0]), "epoch": 1})
        trials += 1
    assert trials == spent
    complete = {
        order.index(t.user_attrs["config_id"])
        for t in searcher.study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
    }
    assert complete == set(finished)


def test_repeats_run_each_fold_with_its_own_seed_and_optuna_gets_fold_means_of_repeat_means(tmp_path):
    spec = make_spec(budget=1)
    searcher = FoldSearcher(spec, f"sqlite:///{tmp_path}/o.db", TrialSettings(cache_dir="/c", repeats=3))
    configs, last = drain(searcher)
    assert last is None
    runs = [TrialConfig.from_dict(c) for c in configs]
    assert sorted((r.fold, r.repeat) for r in runs) == [(f, r) for f in (0, 2) for r in range(3)]
    assert len({r.run_seed for r in runs}) == 6 and len({r.config_id for r in runs}) == 1  # one configuration
    # fold 0: repeats 0.1, 0.2, 0.6 -> 0.3; fold 2: 0.5 (x3) -> 0.5; Optuna: (0.3 + 0.5) / 2 = 0.4
    values = {(0, 0): 0.1, (0, 1): 0.2, (0, 2): 0.6, (2, 0): 0.5, (2, 1): 0.5, (2, 2): 0.5}
    for i, run in enumerate(runs):
        assert searcher.study.trials[0].state == optuna.trial.TrialState.RUNNING  # told only after the last
        searcher.on_trial_complete(f"t{i}", fake_result(values[(run.fold, run.repeat)], 0.9))
    assert searcher.suggest("next") == Searcher.FINISHED
    [trial] = searcher.study.trials
    assert trial.values == pytest.approx([0.4, 0.9])


def test_a_failed_repeat_fails_its_configuration(tmp_path):
    searcher = FoldSearcher(make_spec(budget=1), f"sqlite:///{tmp_path}/o.db", TrialSettings(cache_dir="/c", repeats=2))
    configs, _ = drain(searcher)
    for i in range(len(configs)):
        searcher.on_trial_complete(f"t{i}", None if i == 1 else fake_result(0.5, 0.5), error=i == 1)
    assert searcher.study.trials[0].state == optuna.trial.TrialState.FAIL


def training_spec(mode: str, **training):
    search = {"mode": "grid"} if mode == "grid" else {"budget": 4, "sampler": "random"}
    return parse_spec(
        {
            "name": "t",
            "data": {"format": "synthetic", "folds": 2, "run_folds": [0]},
            "losses": [{"name": "dice"}],
            "training": training,
            "search": search,
        }
    )


def test_a_searched_learning_rate_and_optimizer_are_optuna_dimensions_and_part_of_the_identity(tmp_path):
    spec = training_spec(
        "optuna", lr={"low": 1e-4, "high": 1e-2}, optimizer=["adam", {"name": "sgd", "nesterov": True}]
    )
    searcher = FoldSearcher(spec, f"sqlite:///{tmp_path}/o.db", trial_settings(spec, "/c"))
    configs, _ = drain(searcher)
    runs = [TrialConfig.from_dict(c) for c in configs]
    assert len(runs) == 4 and len({r.config_id for r in runs}) == 4
    for run, trial in zip(runs, searcher.study.trials):
        assert 1e-4 <= run.lr <= 1e-2 and run.lr == trial.params["training.lr"] == run.training_params["lr"]
        assert run.optimizer.name == trial.params["training.optimizer"] == run.training_params["optimizer"]["name"]
        assert run.optimizer.name != "sgd" or run.optimizer.nesterov
        assert trial.distributions["training.lr"].log  # a learning rate is searched on a log scale
    same = runs[0].configuration.model_copy(update={"training_params": {**runs[0].training_params, "lr": 0.5}})
    assert config_id(same) != runs[0].config_id


def test_grid_mode_enumerates_listed_learning_rates_and_optimizers(tmp_path):
    spec = training_spec("grid", lr=[1e-3, 1e-4], optimizer=["adamw", "sgd"])
    assert spec.planned_configurations() == 4
    searcher = FoldSearcher(spec, f"sqlite:///{tmp_path}/o.db", trial_settings(spec, "/c"))
    configs, _ = drain(searcher)
    assert sorted((c["lr"], c["optimizer"]["name"]) for c in configs) == [
        (1e-4, "adamw"),
        (1e-4, "sgd"),
        (1e-3, "adamw"),
        (1e-3, "sgd"),
    ]


def test_a_sweep_that_searches_no_training_setting_keeps_its_configuration_ids(tmp_path):
    spec = training_spec("grid", lr=3e-4, optimizer={"name": "sgd", "momentum": 0.8})
    searcher = FoldSearcher(spec, f"sqlite:///{tmp_path}/o.db", trial_settings(spec, "/c"))
    [config], _ = drain(searcher)
    run = TrialConfig.from_dict(config)
    assert run.training_params == {} and run.lr == 3e-4 and run.optimizer.momentum == 0.8
    # the id a configuration had before training settings could be searched
    assert config_id(Configuration(arch="unet", encoder="mit_b2", loss="dice", loss_params={"smooth": 1.0})) == (
        "fdbd6b3a7b"
    )


def test_under_fold_halving_a_fold_counts_once_all_its_repeats_ended(tmp_path):
    settings = TrialSettings(cache_dir="/c", repeats=2)
    searcher = FoldSearcher(halving_spec(budget=1), f"sqlite:///{tmp_path}/o.db", settings)
    first, _ = drain(searcher)
    assert [(c["fold"], c["repeat"]) for c in first] == [(0, 0), (0, 1)]  # min_folds: fold 0, both seeds
    searcher.on_trial_complete("t0", fake_result(0.9, 0.9))
    assert drain(searcher, prefix="u")[0] == []  # fold 0's second seed still runs: no rung decision yet
    searcher.on_trial_complete("t1", fake_result(0.7, 0.5))
    more, _ = drain(searcher, prefix="v")
    assert [(c["fold"], c["repeat"]) for c in more] == [(1, 0), (1, 1)]
