"""FoldSearcher: one Optuna trial per configuration, one Tune trial per fold, fold means told once."""

import pickle

import optuna
import pytest
from ray.tune.search import Searcher

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


def test_duplicate_configuration_is_not_retrained_nor_counted(tmp_path):
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
    assert len(trials) > 3  # duplicates were asked, told the known result
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
