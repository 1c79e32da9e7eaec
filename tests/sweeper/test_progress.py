"""Sweep status from hand-made sweep folders, and the live one-line printer."""

import json
import os
import pickle
from types import SimpleNamespace

import pandas as pd
import pytest

from sweeper.leaderboard import FAILED, FINISHED, trial_row, write_leaderboard
from sweeper.progress import ProgressPrinter, format_duration, format_status, progress_line, read_status
from sweeper.spec import dump_spec, parse_spec
from trainables.contract import TrialConfig

T0 = 1_700_000_000.0  # spec.yaml written at T0; fold trials take 30 s, two at a time
FOLD_SECONDS = 30.0


def spec(mode="optuna"):
    raw = {
        "name": "tiny",
        "data": {"format": "synthetic", "folds": 3, "run_folds": [0, 1]},
        "model": {"architectures": ["unet"], "encoders": ["resnet18"]},
        "losses": [{"name": "dice"}, {"name": "tversky", "params": {"alpha": "search"} if mode == "optuna" else {}}],
        "training": {"epochs": 3},
        "search": {"mode": mode, "budget": 4} if mode == "optuna" else {"mode": "grid"},
    }
    return parse_spec(raw)


def config(cid, fold, loss="dice"):
    return {
        "config_id": cid,
        "fold": fold,
        "arch": "unet",
        "encoder": "resnet18",
        "loss": loss,
        "loss_params": {},
        "epochs": 3,
        "cache_dir": "cache",
    }


def fold_config(cid, fold, loss="dice"):
    return TrialConfig.from_dict(config(cid, fold, loss))


def result(dice, sensitivity, precision):
    return {
        "epoch": 3,
        "best_epoch": 3,
        "best.dice": dice,
        "best.sensitivity": sensitivity,
        "best.precision": precision,
        "time_total_s": FOLD_SECONDS,
    }


def trial_folder(tune_dir, cfg, start, epochs_done):
    folder = tune_dir / f"{cfg['loss']}-{cfg['config_id']}-fold{cfg['fold']}-x"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(cfg))
    lines = [
        {"epoch": e, "timestamp": start + 10 * e, "time_this_iter_s": 10.0, "time_total_s": 10.0 * e}
        for e in range(1, epochs_done + 1)
    ]
    (folder / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))


def tune_state(tune_dir, statuses):
    """An experiment_state file shaped like Ray Tune's: trial_data = [[trial json, runtime json], ...]."""
    data = [
        [json.dumps({"status": status, "trial_id": f"t{i}", "config": cfg}), json.dumps({})]
        for i, (cfg, status) in enumerate(statuses)
    ]
    path = tune_dir / "experiment_state-2026-01-01_00-00-00.json"
    path.write_text(json.dumps({"trial_data": data, "runner_data": {}, "stats": {"start_time": T0}}))


def new_sweep(tmp_path):
    """Returns (sweep folder, its Tune folder) holding only the frozen spec, written at T0."""
    sweep = tmp_path / "tiny"
    tune_dir = sweep / "ray" / "tune"
    tune_dir.mkdir(parents=True)
    (sweep / "spec.yaml").write_text(dump_spec(spec()))
    os.utime(sweep / "spec.yaml", (T0, T0))
    return sweep, tune_dir


@pytest.fixture
def mid_sweep(tmp_path):
    """Budget 4 x 2 folds = 8 planned: a and b done (b's fold 1 failed), c fold 0 running, c fold 1 queued."""
    sweep, tune_dir = new_sweep(tmp_path)
    rows = [
        trial_row(fold_config("a", 0), result(0.80, 0.85, 0.75), FINISHED),
        trial_row(fold_config("a", 1), result(0.82, 0.83, 0.79), FINISHED),
        trial_row(fold_config("b", 0, "tversky"), result(0.70, 0.95, 0.60), FINISHED),
        trial_row(fold_config("b", 1, "tversky"), {"epoch": 1}, FAILED, error="boom"),
    ]
    write_leaderboard(pd.DataFrame(rows), sweep)
    trial_folder(tune_dir, config("a", 0), T0 + 5, 3)  # 5 .. 35
    trial_folder(tune_dir, config("a", 1), T0 + 5, 3)  # 5 .. 35 (two at once)
    trial_folder(tune_dir, config("b", 0, "tversky"), T0 + 35, 3)
    trial_folder(tune_dir, config("b", 1, "tversky"), T0 + 35, 1)
    trial_folder(tune_dir, config("c", 0, "tversky"), T0 + 65, 1)  # running: epoch 1 done at T0 + 75
    tune_state(
        tune_dir,
        [
            (config("a", 0), "TERMINATED"),
            (config("a", 1), "TERMINATED"),
            (config("b", 0, "tversky"), "TERMINATED"),
            (config("b", 1, "tversky"), "ERROR"),
            (config("c", 0, "tversky"), "RUNNING"),
            (config("c", 1, "tversky"), "PENDING"),
        ],
    )
    return sweep


def test_status_counts_a_sweep_in_progress(mid_sweep):
    status = read_status(mid_sweep, now=T0 + 80)
    assert (status.planned_configs, status.folds_per_config, status.planned_folds) == (4, 2, 8)
    assert (status.folds_finished, status.folds_failed, status.folds_running, status.folds_pending) == (3, 1, 1, 1)
    assert (status.configs_done, status.configs_with_failures, status.configs_seen) == (2, 1, 3)
    assert status.folds_left == 4 and not status.finished
    assert status.elapsed_s == 80.0
    assert status.mean_fold_s == FOLD_SECONDS and status.parallel == 2
    # 4 fold trials left x 75 s since the first trial started / 4 ended
    assert status.eta_s == pytest.approx(75.0)
    assert status.front_size == 2  # a (0.84, 0.77) and b (0.95, 0.60) trade sensitivity for precision
    assert status.best["config_id"] == "a" and status.best["dice"] == pytest.approx(0.81)
    [running] = status.running
    assert (running.config_id, running.fold, running.epoch, running.epochs) == ("c", 0, 1, 3)


def test_format_status_reads_as_a_summary(mid_sweep):
    text = format_status(read_status(mid_sweep, now=T0 + 80))
    assert "sweep 'tiny'" in text and ": running" in text
    assert "4/8 ended (3 finished, 1 failed), 1 running, 1 queued; 4 at most to go" in text
    assert "1m20s elapsed, ~1m15s left (mean fold trial 30s, 2 in parallel)" in text
    assert "2 configuration(s) on sensitivity vs precision; best dice 0.8100 (dice a, 2 fold(s))" in text
    assert "running       : tversky c fold 0, epoch 1/3" in text


def test_status_of_a_finished_grid_sweep_stops_the_clock(tmp_path):
    sweep = tmp_path / "tiny"
    tune_dir = sweep / "ray" / "tune"
    tune_dir.mkdir(parents=True)
    (sweep / "spec.yaml").write_text(dump_spec(spec("grid")))
    os.utime(sweep / "spec.yaml", (T0, T0))
    rows, states = [], []
    for cid, loss in (("a", "dice"), ("b", "tversky")):
        for fold in (0, 1):
            rows.append(trial_row(fold_config(cid, fold, loss), result(0.8, 0.8, 0.8), FINISHED))
            trial_folder(tune_dir, config(cid, fold, loss), T0, 3)
            states.append((config(cid, fold, loss), "TERMINATED"))
    write_leaderboard(pd.DataFrame(rows), sweep)
    tune_state(tune_dir, states)
    status = read_status(sweep, now=T0 + 3600)
    assert status.planned_folds == 4 and status.folds_finished == 4 and status.finished
    assert status.elapsed_s == 30.0 and status.eta_s == 0.0  # up to the last result, not to now
    assert status.front_size == 2  # equal points are all kept on the front
    assert ": finished" in format_status(status) and "left" not in format_status(status)


def test_status_before_any_trial_ended_and_without_a_tune_state(tmp_path):
    sweep, tune_dir = new_sweep(tmp_path)
    trial_folder(tune_dir, config("a", 0), T0 + 5, 1)  # has results, no leaderboard row: running
    status = read_status(sweep, now=T0 + 20)
    assert (status.folds_finished, status.folds_running, status.planned_folds) == (0, 1, 8)
    assert status.eta_s is None and status.front_size is None
    assert "time left unknown until a fold trial finishes" in format_status(status)


def test_status_counts_what_pruning_and_constraints_did(tmp_path):
    from sweeper.leaderboard import STOPPED, record_pruned

    sweep, tune_dir = new_sweep(tmp_path)
    raw = spec().model_dump(exclude_unset=True)
    raw["search"]["constraints"] = [{"metric": "precision", "min": 0.5}]
    raw["search"]["pruning"] = {"folds": {"min_folds": 1, "eta": 2}}
    raw["scheduler"] = {"type": "moasha", "grace_period": 1, "reduction_factor": 2}
    (sweep / "spec.yaml").write_text(dump_spec(parse_spec(raw)))
    rows = [
        trial_row(fold_config("a", 0), result(0.8, 0.8, 0.8), FINISHED),
        trial_row(fold_config("a", 1), result(0.8, 0.8, 0.8), FINISHED),
        trial_row(fold_config("b", 0), result(0.85, 0.9, 0.3), FINISHED),  # breaks precision >= 0.5
        trial_row(fold_config("b", 1), result(0.85, 0.9, 0.3), FINISHED),
        trial_row(fold_config("c", 0), result(0.9, 0.5, 0.5), FINISHED),  # fold halving: rung 1
        trial_row(fold_config("d", 0), {**result(0.2, 0.2, 0.2), "epoch": 1}, STOPPED),  # scheduler: rung 1
    ]
    record_pruned(sweep, "c", reason="fold rung 1", n_folds=1, n_stopped=0, rung=1)
    record_pruned(
        sweep, "d", reason="fold 0 stopped at epoch 1", n_folds=0, n_stopped=1, rung=1, stopped_fold=0, stopped_epoch=1
    )
    write_leaderboard(pd.DataFrame(rows), sweep)
    status = read_status(sweep, now=T0 + 80)
    assert status.folds_stopped == 1 and status.folds_ended == 6
    assert status.best["config_id"] == "a"  # b is infeasible, c's dice is over one fold only (pruned)
    counts = status.pruning
    assert (counts.finished, counts.infeasible, counts.n_pruned) == (1, 1, 2)
    assert counts.pruned == {"fold_halving": {1: 1}, "epoch_scheduler": {1: 1}} and counts.stopped == {1: 1}
    text = format_status(status)
    assert "6/8 ended (5 finished, 0 failed, 1 stopped)" in text
    assert (
        "pruning       : 1 finished, 2 pruned (fold halving: 1 at rung 1; epoch scheduler: 1 at rung 1), "
        "1 infeasible configuration(s); 1 fold trial(s) stopped (1 at epoch 1)"
    ) in text


def test_a_sweep_without_pruning_or_constraints_says_nothing_of_them(mid_sweep):
    assert read_status(mid_sweep, now=T0 + 80).pruning is None
    assert "pruning       :" not in format_status(read_status(mid_sweep, now=T0 + 80))


def test_format_pruning_names_rungs_in_order():
    from sweeper.progress import PruningCounts, format_pruning

    counts = PruningCounts(
        finished=0, infeasible=0, pruned={"fold_halving": {2: 1, 1: 3}, "epoch_scheduler": {None: 1}}
    )
    assert format_pruning(counts) == (
        "0 finished, 5 pruned (fold halving: 3 at rung 1, 1 at rung 2; epoch scheduler: 1 at no rung), "
        "0 infeasible configuration(s); 0 fold trial(s) stopped"
    )


def test_status_of_a_folder_that_is_no_sweep(tmp_path):
    with pytest.raises(FileNotFoundError, match="no spec.yaml and no ray/tune folder"):
        read_status(tmp_path)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.4, "59s"), (80, "1m20s"), (3725, "1h02m"), (None, "?")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_printer_says_where_a_trial_was_stopped_and_a_configuration_pruned(tmp_path, capsys):
    import json as json_

    from sweeper.leaderboard import record_pruned
    from sweeper.pruning import SCHEDULER_STATE_FILE

    printer = ProgressPrinter(planned_folds=6, sweep_dir=tmp_path)
    printer.setup()
    (tmp_path / SCHEDULER_STATE_FILE).write_text(json_.dumps({"stopped": {"bb/0": 1}}))
    # the searcher wrote the ledger before the callbacks hear of the trial's end
    record_pruned(tmp_path, "aa", reason="fold rung 1", n_folds=1, n_stopped=0, rung=1)
    halved = fake_trial("aa", 0, "TERMINATED", res=result(0.5, 0.5, 0.5))
    printer.on_trial_complete(iteration=1, trials=[halved], trial=halved)
    record_pruned(tmp_path, "bb", reason="fold 0 stopped at epoch 1", n_folds=0, n_stopped=1, rung=1, stopped_epoch=1)
    stopped = fake_trial("bb", 0, "TERMINATED", res={**result(0.2, 0.2, 0.2), "epoch": 1})
    printer.on_trial_complete(iteration=2, trials=[halved, stopped], trial=stopped)
    first, second = capsys.readouterr().out.strip().splitlines()
    assert "fold 0 finished: dice 0.50 sens 0.50 prec 0.50; config pruned at rung 1 (fold halving) |" in first
    assert "fold 0 stopped at epoch 1; config pruned at rung 1 (epoch scheduler) |" in second
    progress = printer.progress([halved, stopped])
    assert (progress.stopped, progress.configs_pruned) == (1, 2)
    # a later fold trial of a pruned configuration does not count it again
    other = fake_trial("aa", 1, "TERMINATED", res=result(0.5, 0.5, 0.5))
    printer.on_trial_complete(iteration=3, trials=[other], trial=other)
    assert "pruned" not in capsys.readouterr().out and printer.progress([]).configs_pruned == 2


def fake_trial(cid, fold, status, loss="tversky", res=None):
    return SimpleNamespace(
        config=config(cid, fold, loss), status=status, last_result=res or {}, trial_id=f"{cid}{fold}"
    )


def test_printer_prints_one_line_per_ended_trial(capsys):
    printer = pickle.loads(pickle.dumps(ProgressPrinter(planned_folds=12)))  # Tune pickles callbacks
    printer.setup()
    printer.started_at -= 80  # as if the sweep started 80 s ago
    done = fake_trial("3f1d2a9b00", 1, "TERMINATED", res=result(0.612, 0.701, 0.523))
    trials = [done, fake_trial("x", 0, "RUNNING"), fake_trial("y", 0, "RUNNING"), fake_trial("z", 0, "PENDING")]
    printer.on_trial_complete(iteration=1, trials=trials, trial=done)
    line = capsys.readouterr().out.strip()
    assert line.startswith(
        "[1/12 folds] tversky cfg 3f1d.. fold 1 finished: dice 0.61 sens 0.70 prec 0.52 "
        "| 2 running, 0 failed | 1m20s elapsed, ~14m40s left | front: 1"
    )
    failed = trials[2]
    failed.status = "ERROR"
    printer.on_trial_error(iteration=2, trials=trials, trial=failed)
    line = capsys.readouterr().out.strip()
    assert "[2/12 folds] tversky cfg y.. fold 0 FAILED | 1 running, 1 failed | 1m20s elapsed, ~6m40s left" in line
    # the counts survive the pickling Tune does when it saves the experiment for --resume
    assert pickle.loads(pickle.dumps(printer)).ended == ["3f1d2a9b00/1", "y/0"]


def test_printer_says_once_when_a_trial_reports_again_from_its_checkpoint_on_storage(capsys):
    from trainables.contract import REPLAYED_KEY

    printer = ProgressPrinter(planned_folds=6)
    trial = fake_trial("3f1d2a9b00", 1, "RUNNING")
    printer.on_trial_result(iteration=1, trials=[trial], trial=trial, result={"epoch": 3, REPLAYED_KEY: True})
    printer.on_trial_result(iteration=2, trials=[trial], trial=trial, result={"epoch": 2, REPLAYED_KEY: True})
    printer.on_trial_result(iteration=3, trials=[trial], trial=trial, result={"epoch": 3})  # trained: no line
    assert capsys.readouterr().out.splitlines() == [
        "fold trial 3f1d2a9b00/1 (tversky): resumed from its final checkpoint on storage",
        "fold trial 3f1d2a9b00/1 (tversky): resumed from its epoch-2 checkpoint on storage",
    ]


def test_printer_front_counts_configurations_on_fold_means():
    printer = ProgressPrinter()
    for cid, fold, s, p in (("a", 0, 0.9, 0.5), ("a", 1, 0.7, 0.5), ("b", 0, 0.6, 0.6), ("c", 0, 0.5, 0.4)):
        printer.scores.setdefault(cid, {})[fold] = (s, p)
    assert printer.front_size() == 2  # a (0.8, 0.5) and b (0.6, 0.6); c is dominated


def test_progress_line_without_plan_or_metrics():
    line = progress_line(
        ended=3,
        planned=None,
        loss="dice",
        config_id="abcdef",
        fold=0,
        outcome="finished",
        metrics={},
        running=0,
        failed=0,
        elapsed_s=5,
        eta_s=None,
        front=None,
    )
    assert line == "[3/? folds] dice cfg abcd.. fold 0 finished | 0 running, 0 failed | 5s elapsed"
