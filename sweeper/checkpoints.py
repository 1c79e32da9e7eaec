"""How fold trials keep their checkpoints: resume from the last epoch without a forced snapshot per epoch.

Each epoch ``trainables.train.train_fold`` reports one checkpoint that holds everything a trial needs:
the training state to resume from (``state.pt``), the best epoch's weights (``best_model.pt``) and its
out-of-fold case records (``cases.parquet``). So only a trial's newest checkpoint matters.

Ray Tune (2.60, ``_ExperimentCheckpointManager.on_trial_checkpoint``) forces an experiment-state snapshot
(the file ``Tuner.restore`` reads) every ``CheckpointConfig(num_to_keep)`` checkpoints of a trial, so
that the snapshot never names a checkpoint it has deleted; with ``num_to_keep=1`` that is one snapshot
per trial per epoch, and the warning "Experiment state snapshotting has been triggered multiple times".

The policy (:func:`checkpoint_config`, :class:`CheckpointCleaner`):

- Tune keeps every checkpoint (``num_to_keep=None``) and so forces no snapshot; it snapshots on its own
  period (``TUNE_GLOBAL_CHECKPOINT_S``, default "auto": at least every 10 s, at most 5 % of the time)
  and once more at the end;
- the driver deletes a trial's checkpoints older than the one the newest snapshot on disk names
  (:func:`sweeper.tune_state.snapshot_checkpoints`), after each checkpoint (at most every
  ``every_s`` seconds) and at the end of the sweep. A resume reads that snapshot, so it always finds
  the checkpoint it resumes from; a trial retried within the same driver resumes from its newest
  checkpoint, which is never deleted. A running trial holds the checkpoints written since the last
  snapshot (one or two for a trial whose epochs take more than a few seconds), an ended one its last.

Because only older checkpoints are deleted, the ones a trial wrote after the last snapshot survive a
killed driver, and a resumed trial takes them (:func:`trainables.train.train_fold`): each checkpoint
ends with a manifest of its files and sizes, its epoch and the result reported with it
(:mod:`trainables.checkpoint_files`); the trial resumes from the newest complete one on storage when
it is newer than the one the snapshot names, and one of its last epoch is reported again instead of
trained. The trial then moves Tune's checkpoint counter (restored from the snapshot) past its folder's
highest, so a new checkpoint never lands in a folder already there.

With an object-store ``--storage`` the driver cannot list Tune's folder, so there Tune deletes
(``num_to_keep=1``) and forces its snapshots as before, and a resumed trial takes the checkpoint Tune
names.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

from sweeper.paths import SweepPaths
from sweeper.tune_state import snapshot_checkpoints

_CHECKPOINT_DIR = re.compile(r"checkpoint_(\d{6})")


def checkpoint_config(paths: SweepPaths):
    """Returns the Tune ``CheckpointConfig`` of the sweep: keep all (the driver cleans up, no forced
    snapshot) on a local or NFS storage; keep one (Tune deletes, a snapshot each epoch) on an object store."""
    from ray import tune

    return tune.CheckpointConfig(num_to_keep=1 if paths.storage_uri else None)


def superseded_checkpoints(trial_dir: Path, newest_in_snapshot: int) -> list[Path]:
    """Returns the checkpoint folders of ``trial_dir`` older than ``checkpoint_<newest_in_snapshot>``."""
    old = []
    for folder in trial_dir.glob("checkpoint_*"):
        match = _CHECKPOINT_DIR.fullmatch(folder.name)
        if match and folder.is_dir() and int(match.group(1)) < newest_in_snapshot:
            old.append(folder)
    return sorted(old)


def remove_superseded_checkpoints(tune_dir: str | Path) -> list[Path]:
    """Deletes, in every trial folder of ``tune_dir``, the checkpoints older than the newest one Tune's
    newest snapshot names for that trial; returns what was deleted (nothing when no snapshot is readable)."""
    tune_dir = Path(tune_dir)
    newest = snapshot_checkpoints(tune_dir)
    if not newest:
        return []
    removed = []
    for name, index in newest.items():
        trial_dir = tune_dir / name
        if not trial_dir.is_dir():
            continue
        for folder in superseded_checkpoints(trial_dir, index):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class CheckpointCleaner:
    """Tune callback hooks (Ray-free; :class:`sweeper.callbacks.CheckpointCleanupCallback` registers them):
    :func:`remove_superseded_checkpoints` after a trial checkpoint (at most every ``every_s`` seconds) and
    at the end of the sweep, after Tune's last snapshot.

    Args:
        tune_dir: Tune's local experiment folder (``SWEEP_DIR/ray/tune``).
        every_s: the least time between two clean-ups while trials run.
    """

    def __init__(self, tune_dir: str | Path, every_s: float = 5.0):
        self.tune_dir = str(tune_dir)
        self.every_s = every_s
        self._next = 0.0

    def get_state(self) -> dict[str, Any]:
        return {"tune_dir": self.tune_dir, "every_s": self.every_s}

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._next = 0.0

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every_s
            remove_superseded_checkpoints(self.tune_dir)

    def on_experiment_end(self, trials, **info) -> None:
        remove_superseded_checkpoints(self.tune_dir)
