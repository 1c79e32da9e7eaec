"""A real small sweep through the command line: our lines on the console, Ray's and Tune's output in SWEEP_DIR/logs.

The sweep is the session's shared one (tests/shared_sweep.py: `sweeper launch`, then `--resume --verbose`)."""

import re

import pytest

from sweeper.console import PLAIN_PREFIX
from sweeper.launch import SEARCH_SPACES
from sweeper.spec import load_spec

pytestmark = pytest.mark.slow

#: what Ray, Tune, Optuna and MLflow print during a sweep (the issue's list of console noise)
LIBRARY_OUTPUT = [
    "Checkpoint successfully created",
    "Number of trials",
    "tensorboard",
    "A new study created",
    "mlflow.store",
    "Started a local Ray instance",
]
TRIAL_LINE = re.compile(r"^\[\d+/\d+ folds\] ")
#: lines a demo may print besides the live status (issue 18)
DEMO_LINES = 25


def test_console_holds_our_lines_and_the_log_holds_ray_and_tune(tiny_sweep):
    done = tiny_sweep.launched
    console = (done.stdout + done.stderr).splitlines()

    status = [line for line in console if line.startswith(PLAIN_PREFIX)]
    trials = [line for line in console if TRIAL_LINE.match(line)]
    other = [line for line in console if line not in status and line not in trials]
    folds = tiny_sweep.spec.planned_fold_trials()  # every configuration ran: the leaderboard test checks it
    # one line per ended fold trial, and the live status (plain: no terminal)
    assert folds >= 4 and len(trials) == folds and status
    assert any(line.startswith(f"{PLAIN_PREFIX} {folds}/{folds} folds") for line in status)
    # besides the status, a demo prints its trial lines and these: within the limit for the demo's trials
    demo_trials = load_spec(SEARCH_SPACES / "demo.yaml").planned_fold_trials()
    assert len(other) + demo_trials <= DEMO_LINES, other
    text = "\n".join(console)
    assert not [noise for noise in LIBRARY_OUTPUT if noise.lower() in text.lower()], text
    assert "#/experiments/" in text  # the experiment's own MLflow page

    log = tiny_sweep.log_before_resume  # SWEEP_DIR/logs/sweep.log after the launch
    found = [noise for noise in LIBRARY_OUTPUT if noise.lower() in log.lower()]
    assert len(found) >= 4, (found, log[-3000:])
    assert "pid=" in log  # the trial workers' output, forwarded by Ray to the driver

    # --verbose brings it back (a resume of the finished sweep: Ray and Tune start, nothing is left to run)
    again = tiny_sweep.resumed
    shown = again.stdout + again.stderr
    assert "Started a local Ray instance" in shown or "Number of trials" in shown, shown
