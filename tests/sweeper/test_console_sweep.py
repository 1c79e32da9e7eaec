"""A real small sweep through the command line: our lines on the console, Ray's and Tune's output in SWEEP_DIR/logs."""

import re
import subprocess
import sys

import pytest
import yaml

from sweeper.console import PLAIN_PREFIX, SWEEP_LOG
from sweeper.launch import SEARCH_SPACES
from sweeper.spec import load_spec

pytestmark = pytest.mark.slow

SPEC = {
    "name": "quiet",
    "data": {
        "format": "synthetic",
        "folds": 2,
        "image_size": 32,
        "synthetic": {"cases": 4, "slices_per_scan": 10, "image_size": 40, "seed": 3},
    },
    "model": {"architectures": ["unet"], "encoders": ["resnet18"], "encoder_weights": None},
    "losses": [{"name": "dice"}, {"name": "tversky", "params": {"alpha": "search"}}],
    "training": {"epochs": 2, "batch_size": 8, "max_train_batches": 2, "lr": 1e-3},
    "search": {"budget": 2, "sampler": "random", "seed": 1},
    "resources": {"cpus_per_trial": 1},
}
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


def sweeper(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "sweeper.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=900
    )


def test_console_holds_our_lines_and_the_log_holds_ray_and_tune(tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    done = sweeper("launch", "spec.yaml", "--results", "results", cwd=tmp_path)
    console = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(console)

    status = [line for line in console if line.startswith(PLAIN_PREFIX)]
    trials = [line for line in console if TRIAL_LINE.match(line)]
    other = [line for line in console if line not in status and line not in trials]
    assert len(trials) == 4 and status  # one line per ended fold trial, and the live status (plain: no terminal)
    assert any(line.startswith(f"{PLAIN_PREFIX} 4/4 folds") for line in status)
    # besides the status, a demo prints its trial lines and these: within the limit for the demo's trials
    demo_trials = load_spec(SEARCH_SPACES / "demo.yaml").planned_fold_trials()
    assert len(other) + demo_trials <= DEMO_LINES, other
    text = "\n".join(console)
    assert not [noise for noise in LIBRARY_OUTPUT if noise.lower() in text.lower()], text
    assert "#/experiments/" in text  # the experiment's own MLflow page

    log = (tmp_path / "results" / "quiet" / "logs" / SWEEP_LOG).read_text()
    found = [noise for noise in LIBRARY_OUTPUT if noise.lower() in log.lower()]
    assert len(found) >= 4, (found, log[-3000:])
    assert "pid=" in log  # the trial workers' output, forwarded by Ray to the driver

    # --verbose brings it back (a resume of the finished sweep: Ray and Tune start, nothing is left to run)
    again = sweeper("launch", "spec.yaml", "--results", "results", "--resume", "--verbose", cwd=tmp_path)
    shown = again.stdout + again.stderr
    assert again.returncode == 0, shown
    assert "Started a local Ray instance" in shown or "Number of trials" in shown, shown
