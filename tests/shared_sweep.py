"""The tiny real sweep the end-to-end modules share (real Ray, Optuna storage, MLflow store; one per test session).

A user's first sweep, through the command line: ``sweeper launch spec.yaml --results results`` with
credentials a user's shell may hold in the environment and Ray's logs in a folder of their own, then
``sweeper launch ... --resume --verbose`` of the finished sweep. The launch is the costly part of each
end-to-end module (a minute or more on two cores), so the console, credential, leaderboard, MLflow, report,
case-record and relaunch checks all read this one sweep (the ``tiny_sweep`` fixture in tests/conftest.py).
What the resume might change is recorded before it: the checks of "--resume runs nothing again" compare
:attr:`TinySweep.trials_before_resume` and :attr:`TinySweep.cases_before_resume` with the sweep after it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from sweeper.console import SWEEP_LOG
from sweeper.paths import SweepPaths
from sweeper.spec import SweepSpec, parse_spec

#: the smallest spec every sharing module's checks hold on: two folds, two losses (one with a searched
#: parameter), two epochs (one MLflow point per epoch), the seed000 augmentation, case records (evidence on
#: by default; few resamples), three random configurations
SPEC = {
    "name": "tiny",
    "data": {
        "format": "synthetic",
        "folds": 2,
        "image_size": 32,
        "augmentation": "seed000",
        "synthetic": {"cases": 6, "slices_per_scan": 6, "image_size": 40, "seed": 5},
    },
    "model": {"architectures": ["unet"], "encoders": ["resnet18"], "encoder_weights": None},
    "losses": [{"name": "dice"}, {"name": "tversky", "params": {"alpha": "search"}}],
    "training": {"epochs": 2, "batch_size": 8, "max_train_batches": 2, "lr": 1e-3},
    "search": {"budget": 3, "sampler": "random", "seed": 1},
    "resources": {"cpus_per_trial": 1},
    "evidence": {"resamples": 200},
}
CLASSES = ["large_bowel", "small_bowel", "stomach"]

# Credentials a user's shell may hold; none may reach a spec, an MLflow param/tag/artifact or a log line.
FAKE_SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "fakeSecretKey9f8e7d6c5b4a",
    "MLFLOW_TRACKING_PASSWORD": "fakePassw0rd-31415",
    "RAY_AUTH_TOKEN_FAKE_FOR_TEST": "fakeRayToken-27182",
}


@dataclass(frozen=True)
class TinySweep:
    spec: SweepSpec
    paths: SweepPaths
    #: the folder the spec file is in and the commands ran from (``--results results``, relative to it)
    folder: Path
    #: Ray's session logs of both commands (``SWEEPER_RAY_TEMP_DIR``)
    ray_logs: Path
    #: ``sweeper launch`` and ``sweeper launch --resume --verbose``: exit code, stdout, stderr
    launched: subprocess.CompletedProcess
    resumed: subprocess.CompletedProcess
    #: between the two commands: trials.parquet, the case-record files' modification times (ns), SWEEP_DIR/logs/sweep.log
    trials_before_resume: pd.DataFrame
    cases_before_resume: dict[str, int]
    log_before_resume: str


def sweeper(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Runs ``python -m sweeper.cli *args`` as a user would, capturing its console."""
    return subprocess.run(
        [sys.executable, "-m", "sweeper.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def run_tiny_sweep(folder: Path, ray_logs: Path) -> TinySweep:
    """Launches the tiny sweep from ``folder`` and resumes it once (see the module's docstring)."""
    from sweeper.leaderboard import read_trials

    (folder / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    env = {**os.environ, **FAKE_SECRETS, "SWEEPER_RAY_TEMP_DIR": str(ray_logs)}
    launched = sweeper("launch", "spec.yaml", "--results", "results", cwd=folder, env=env)
    assert launched.returncode == 0, launched.stdout[-5000:] + launched.stderr[-5000:]
    spec = parse_spec(SPEC)
    paths = SweepPaths.of(spec, folder / "results")
    trials = read_trials(paths.sweep)
    cases = {p.name: p.stat().st_mtime_ns for p in paths.cases_table.iterdir()}
    log = (paths.logs / SWEEP_LOG).read_text()
    resumed = sweeper("launch", "spec.yaml", "--results", "results", "--resume", "--verbose", cwd=folder, env=env)
    assert resumed.returncode == 0, resumed.stdout[-5000:] + resumed.stderr[-5000:]
    return TinySweep(spec, paths, folder, ray_logs, launched, resumed, trials, cases, log)
