"""Which checkpoint a fold trial resumes from: complete ones, proven by their manifest, and the newest on storage.

Each checkpoint a trial reports ends with :data:`~trainables.contract.MANIFEST_FILE` (:func:`write_manifest`):
the name and size of every other file in it, the epoch, the fold trial (``config_id``, ``fold``, ``repeat``)
and the result reported with it. Tune copies a checkpoint to storage file by file, so a driver or worker
killed during the copy leaves a folder with files missing or cut short; :func:`complete_checkpoint` accepts
a folder only when its manifest reads and every file it lists is there with its size.

Why the trial looks on storage at all: ``tune.get_checkpoint()`` after a ``--resume`` is the checkpoint that
Tune's last experiment snapshot named, and the driver may have died seconds after it, once the trial had
written newer checkpoints or even ended. The driver's clean-up (:mod:`sweeper.checkpoints`) deletes only
checkpoints older than the one the snapshot names, so those newer ones survive;
:func:`newest_complete_checkpoint` finds the newest of them by epoch (folder numbers are Tune's counter,
which restarts from the snapshot's after a resume). A fold trial started after that snapshot is not in
Tune's restored state at all: the resumed searcher hands the same configuration and fold out again under a
new trial id, so the folders of the same fold trial under other trial ids count as its own
(:func:`fold_trial_dirs`). Plain files only, no torch, no Ray.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.contract import MANIFEST_FILE

#: a trial checkpoint's folder as Tune names it, ``checkpoint_<index, 6 digits>``
CHECKPOINT_DIR = re.compile(r"checkpoint_(\d{6})")


@dataclass(frozen=True)
class StoredCheckpoint:
    """A complete checkpoint: its folder, epoch, fold trial and the result reported with it."""

    path: Path
    epoch: int
    trial: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)


def fold_trial_identity(config_id: str, fold: int, repeat: int = 0) -> dict[str, Any]:
    """Returns what names a fold trial in a manifest: the same configuration, fold and seeded repeat train the
    same way under any Tune trial id."""
    return {"config_id": str(config_id), "fold": int(fold), "repeat": int(repeat)}


def write_manifest(folder: str | Path, result: Mapping[str, Any], trial: Mapping[str, Any]) -> Path:
    """Writes the manifest of a checkpoint folder whose other files are all written: each file's name and
    size, the epoch (``result["epoch"]``), the fold trial (:func:`fold_trial_identity`) and ``result``."""
    folder = Path(folder)
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}
    manifest = {"files": files, "epoch": int(result["epoch"]), "trial": dict(trial), "result": dict(result)}
    path = folder / MANIFEST_FILE
    path.write_text(json.dumps(manifest))
    return path


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """Returns the manifest of a checkpoint folder, or None when it has none or it is cut short or malformed."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST_FILE).read_text())
        files, epoch = manifest["files"], int(manifest["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, dict) or not isinstance(manifest.get("result"), dict):
        return None
    return {**manifest, "epoch": epoch}


def complete_checkpoint(folder: str | Path) -> StoredCheckpoint | None:
    """Returns the checkpoint in ``folder`` when it is complete (its manifest reads and every file it lists is
    there with the size it lists), else None."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    for name, size in manifest["files"].items():
        path = folder / name
        try:
            if not path.is_file() or path.stat().st_size != int(size):
                return None
        except (OSError, TypeError, ValueError):
            return None
    return StoredCheckpoint(folder, manifest["epoch"], dict(manifest.get("trial") or {}), manifest["result"])


def checkpoint_folders(trial_dir: str | Path) -> list[Path]:
    """Returns the ``checkpoint_NNNNNN`` folders of a trial folder, by index."""
    trial_dir = Path(trial_dir)
    if not trial_dir.is_dir():
        return []
    found = [p for p in trial_dir.iterdir() if CHECKPOINT_DIR.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: p.name)


def highest_checkpoint_index(trial_dir: str | Path) -> int:
    """Returns the largest ``NNNNNN`` of the trial folder's checkpoint folders, -1 when it has none."""
    folders = checkpoint_folders(trial_dir)
    return int(CHECKPOINT_DIR.fullmatch(folders[-1].name).group(1)) if folders else -1


def fold_trial_dirs(trial_dir: str | Path, trial_id: str) -> list[Path]:
    """Returns the trial's folder, then the folders of the same fold trial under other Tune trial ids.

    Trial folders are named ``<fold trial>-<trial id>`` (:func:`sweeper.launch.trial_name`); a folder
    whose name does not end with ``trial_id`` has no recognisable siblings."""
    trial_dir = Path(trial_dir)
    suffix = f"-{trial_id}"
    if not trial_id or not trial_dir.name.endswith(suffix) or not trial_dir.parent.is_dir():
        return [trial_dir]
    stem = trial_dir.name.removesuffix(suffix)
    siblings = [
        p
        for p in sorted(trial_dir.parent.iterdir())
        if p != trial_dir and p.is_dir() and p.name.startswith(stem + "-") and "-" not in p.name[len(stem) + 1 :]
    ]
    return [trial_dir, *siblings]


def newest_complete_checkpoint(trial_dirs: Iterable[str | Path], trial: Mapping[str, Any]) -> StoredCheckpoint | None:
    """Returns the complete checkpoint of the fold trial ``trial`` (:func:`fold_trial_identity`) with the highest
    epoch among the checkpoint folders of ``trial_dirs`` (the first folder wins a tie), else None."""
    best: StoredCheckpoint | None = None
    for trial_dir in trial_dirs:
        for folder in checkpoint_folders(trial_dir):
            stored = complete_checkpoint(folder)
            if stored is None or stored.trial != dict(trial):
                continue
            if best is None or stored.epoch > best.epoch:
                best = stored
    return best
