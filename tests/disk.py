"""Keeps the test run's disk use small: sweeps write about 200 MB of weights per trial."""

import shutil
from pathlib import Path


def drop_checkpoints(root: Path) -> None:
    """Deletes the model checkpoints a sweep left under `root` (Tune's checkpoint_* folders and the weights
    logged to MLflow), keeping every table, log and report for a post-mortem. Module fixtures call it at
    teardown so a full test run does not hold gigabytes of weights nobody reads."""
    for folder in list(root.rglob("checkpoint_*")):
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    for weights in list(root.rglob("*.pt")):
        weights.unlink(missing_ok=True)
