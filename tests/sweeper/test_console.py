"""The console of a sweep: the live display fed by a stream of trials, and the libraries' output sent to a log."""

import io
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from sweeper.console import PLAIN_PREFIX, LiveDisplay, SweepProgress, showing, status_text
from sweeper.progress import ProgressPrinter

ANSI = re.compile(r"\x1b\[")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def trial(cid, fold, status, sens=None, prec=None, dice=None):
    config = {
        "config_id": cid,
        "fold": fold,
        "loss": "tversky",
        "loss_params": {},
        "arch": "unet",
        "encoder": "resnet18",
        "epochs": 3,
        "cache_dir": "cache",
    }
    result = {}
    if sens is not None:
        result = {"best.sensitivity": sens, "best.precision": prec, "best.dice": dice}
    return SimpleNamespace(config=config, status=status, last_result=result, trial_id=f"{cid}{fold}")


def fake_sweep(printer, clock, trials):
    """Feeds ``printer`` a sweep of 2 configurations x 2 folds: starts, Tune loop steps, ends (one failure)."""
    a0, a1, b0, b1 = trials
    printer.REDRAW_EVERY_S = 0.0  # Tune's loop may redraw at every step here
    printer.setup()
    for t in (a0, a1):
        t.status = "RUNNING"
        printer.on_trial_start(iteration=1, trials=trials, trial=t)
    clock.now += 40
    printer.on_step_end(iteration=2, trials=trials)
    a0.status, a0.last_result = "TERMINATED", trial("a", 0, "", 0.80, 0.50, 0.6).last_result
    printer.on_trial_complete(iteration=3, trials=trials, trial=a0)
    b0.status = "RUNNING"
    printer.on_trial_start(iteration=4, trials=trials, trial=b0)
    a1.status, a1.last_result = "TERMINATED", trial("a", 1, "", 0.60, 0.70, 0.6).last_result
    printer.on_trial_complete(iteration=5, trials=trials, trial=a1)
    b0.status = "ERROR"
    printer.on_trial_error(iteration=6, trials=trials, trial=b0)
    clock.now += 40
    b1.status = "RUNNING"
    printer.on_trial_start(iteration=7, trials=trials, trial=b1)
    b1.status, b1.last_result = "TERMINATED", trial("b", 1, "", 0.65, 0.90, 0.7).last_result
    printer.on_trial_complete(iteration=8, trials=trials, trial=b1)


def test_status_text_names_every_count_and_the_best_of_each_objective():
    p = SweepProgress(
        planned=12,
        ended=3,
        failed=1,
        stopped=1,
        configs_pruned=2,
        running=2,
        elapsed_s=80,
        eta_s=240,
        best={"sensitivity": 0.8123, "precision": 0.77},
        front=2,
    )
    assert status_text(p) == (
        "3/12 folds | 2 running, 1 failed, 1 stopped, 2 configs pruned | 1m20s elapsed, ~4m00s left | "
        "best sensitivity 0.812, precision 0.770 | front 2"
    )
    # nothing ended yet: no time left, no best, no front; stopped and pruned only once there are some
    assert status_text(SweepProgress(planned=None, running=1)) == "0/? folds | 1 running, 0 failed | 0s elapsed"
    assert "| 0 running, 0 failed, 1 config pruned |" in status_text(SweepProgress(planned=2, configs_pruned=1))


def test_plain_lines_when_the_output_is_not_a_terminal(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("sweeper.progress.time.time", clock)
    out = io.StringIO()
    printer = ProgressPrinter(planned_folds=4, objectives=[("sensitivity", "maximize"), ("precision", "maximize")])
    trials = [trial("a", 0, "PENDING"), trial("a", 1, "PENDING"), trial("b", 0, "PENDING"), trial("b", 1, "PENDING")]
    display = LiveDisplay(out, plain_every_s=30, clock=clock)
    assert not display.live  # a StringIO is no terminal
    with showing(display):
        fake_sweep(printer, clock, trials)
    lines = out.getvalue().splitlines()
    assert not ANSI.search(out.getvalue()) and "\r" not in out.getvalue()  # no terminal codes in a CI log

    ended = [line for line in lines if line.startswith("[") and not line.startswith(PLAIN_PREFIX)]
    status = [line for line in lines if line.startswith(PLAIN_PREFIX)]
    # the one line per ended trial stays, in order
    assert [line.split(" | ")[0] for line in ended] == [
        "[1/4 folds] tversky cfg a.. fold 0 finished: dice 0.60 sens 0.80 prec 0.50",
        "[2/4 folds] tversky cfg a.. fold 1 finished: dice 0.60 sens 0.60 prec 0.70",
        "[3/4 folds] tversky cfg b.. fold 0 FAILED",
        "[4/4 folds] tversky cfg b.. fold 1 finished: dice 0.70 sens 0.65 prec 0.90",
    ]
    # status lines: the first at once, then at most one per 30 s of the fake clock, and the last state at close
    assert status == [
        f"{PLAIN_PREFIX} 0/4 folds | 1 running, 0 failed | 0s elapsed",
        f"{PLAIN_PREFIX} 0/4 folds | 2 running, 0 failed | 40s elapsed",
        f"{PLAIN_PREFIX} 3/4 folds | 1 running, 1 failed | 1m20s elapsed, ~27s left | "
        "best sensitivity 0.700, precision 0.600 | front 1",
        f"{PLAIN_PREFIX} 4/4 folds | 0 running, 1 failed | 1m20s elapsed, ~0s left | "
        "best sensitivity 0.700, precision 0.900 | front 2",
    ]
    assert len(lines) == len(ended) + len(status)


def test_minimised_objective_keeps_its_lowest_fold_mean():
    printer = ProgressPrinter(objectives=[("hd95", "minimize"), ("dice", "maximize")])
    printer.objective_values = {
        "a": {0: {"hd95": 8.0, "dice": 0.7}, 1: {"hd95": 6.0, "dice": 0.8}},
        "b": {0: {"hd95": 9.0}},
    }
    assert printer.best_so_far() == {"hd95": 7.0, "dice": pytest.approx(0.75)}


def test_terminal_redraws_one_bar_in_place_with_the_trial_lines_above(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("sweeper.progress.time.time", clock)
    out = io.StringIO()
    printer = ProgressPrinter(planned_folds=4)
    trials = [trial("a", 0, "PENDING"), trial("a", 1, "PENDING"), trial("b", 0, "PENDING"), trial("b", 1, "PENDING")]
    with showing(LiveDisplay(out, live=True, clock=clock)):
        fake_sweep(printer, clock, trials)
    text = out.getvalue()
    assert "\r" in text  # redrawn in place
    assert PLAIN_PREFIX not in text
    final = text.rsplit("\r", 1)[-1]
    assert "4/4 folds | 0 running, 1 failed | 1m20s elapsed" in final and "front 2" in final
    assert "[3/4 folds] tversky cfg b.. fold 0 FAILED" in text
    assert text.endswith("\n")  # the bar stays on the console when the sweep ends


def test_printer_without_a_display_prints_only_its_lines(capsys):
    printer = ProgressPrinter(planned_folds=2)
    done = trial("a", 0, "TERMINATED", 0.8, 0.5, 0.6)
    printer.setup()
    printer.on_trial_start(iteration=1, trials=[done], trial=done)
    printer.on_step_end(iteration=1, trials=[done])
    printer.on_trial_complete(iteration=2, trials=[done], trial=done)
    assert capsys.readouterr().out.count("\n") == 1


NOISY_LIBRARY = textwrap.dedent(
    """
    import logging, os, subprocess, sys
    from pathlib import Path
    from sweeper.console import sweep_console

    logs, mode = Path(sys.argv[1]), sys.argv[2]
    logging.basicConfig()
    with sweep_console(logs, verbose=mode == "verbose") as console:
        console.say("ours: a trial ended")
        print("print from a library")
        logging.getLogger("ray.tune").warning("a warning from a library")
        os.write(2, b"C-level stderr\\n")
        subprocess.run(["echo", "a child process"], check=True)
        if mode == "error":
            raise RuntimeError("the sweep broke")
    print("ours: the summary")
    """
)


def run_noisy(tmp_path, mode, sweep_written=True):
    """Runs NOISY_LIBRARY as a process of its own (real file descriptors, not a terminal); with
    ``sweep_written`` the sweep folder holds a file besides the log, as after a launch that started."""
    if sweep_written:
        (tmp_path / "sweep").mkdir()
        (tmp_path / "sweep" / "spec.yaml").write_text("name: sweep\n")
    return subprocess.run(
        [sys.executable, "-c", NOISY_LIBRARY, str(tmp_path / "sweep" / "logs"), mode],
        capture_output=True,
        text=True,
        timeout=120,
    )


LIBRARY_LINES = ["print from a library", "a warning from a library", "C-level stderr", "a child process"]


def test_libraries_output_goes_to_the_sweep_log_and_ours_to_the_console(tmp_path):
    done = run_noisy(tmp_path, "quiet")
    assert done.returncode == 0, done.stderr
    console = done.stdout + done.stderr
    assert "ours: a trial ended" in done.stdout and "ours: the summary" in done.stdout
    assert not any(line in console for line in LIBRARY_LINES), console
    log = (tmp_path / "sweep" / "logs" / "sweep.log").read_text()
    assert all(line in log for line in LIBRARY_LINES), log
    assert "ours: a trial ended" not in log


def test_verbose_leaves_the_libraries_output_on_the_console(tmp_path):
    done = run_noisy(tmp_path, "verbose")
    assert done.returncode == 0, done.stderr
    console = done.stdout + done.stderr
    assert all(line in console for line in LIBRARY_LINES) and "ours: a trial ended" in console
    assert not (tmp_path / "sweep" / "logs").exists()


def test_an_error_reaches_the_console_and_its_traceback_the_log(tmp_path):
    done = run_noisy(tmp_path, "error")
    assert done.returncode == 1
    assert "RuntimeError: the sweep broke" in done.stderr  # after the console is restored
    log = (tmp_path / "sweep" / "logs" / "sweep.log").read_text()
    assert "Traceback" in log and "RuntimeError: the sweep broke" in log


def test_a_launch_refused_before_anything_ran_leaves_no_sweep_folder(tmp_path):
    done = run_noisy(tmp_path, "error", sweep_written=False)
    assert done.returncode == 1 and "RuntimeError: the sweep broke" in done.stderr
    assert not (tmp_path / "sweep").exists()


def test_a_printer_saved_by_an_earlier_release_resumes_with_the_display(monkeypatch):
    """A resumed sweep restores the printer Tune pickled, possibly before the display's counters existed."""
    import pickle

    old = ProgressPrinter(planned_folds=2)
    for name in ("objectives", "stopped", "pruned_configs", "sweep_dir", "objective_values", "_drawn_at"):
        del old.__dict__[name]
    old.pruned = 1  # an earlier release counted stopped fold trials as "pruned"
    printer = pickle.loads(pickle.dumps(old))
    fresh = ProgressPrinter()
    fresh.set_state(old.get_state())
    for restored in (printer, fresh):
        restored.setup()
        done = trial("a", 0, "TERMINATED", 0.8, 0.5, 0.6)
        out = io.StringIO()
        with showing(LiveDisplay(out, plain_every_s=0)):
            restored.on_trial_complete(iteration=1, trials=[done], trial=done)
        assert "best sensitivity 0.800, precision 0.500" in out.getvalue()
        assert "1 stopped" in out.getvalue() and restored.stopped == 1
