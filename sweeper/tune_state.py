"""Ray Tune's saved experiment state, read from its file without Ray: which trials exist and their status.

Tune (2.x, checked on 2.60: ``TuneController.save_to_dir``) writes
``<experiment folder>/experiment_state-<timestamp>.json`` in place while it runs::

    {"trial_data": [[<trial state>, <runtime metadata>], ...], "runner_data": {...}, "stats": {...}}

where each ``<trial state>`` is the JSON text (in older files the object) of ``Trial.__getstate__``,
holding among others ``trial_id``, ``status`` (:data:`PENDING`, :data:`RUNNING`, :data:`PAUSED`,
:data:`TERMINATED`, :data:`ERROR`) and ``config``. The format is Tune's private one; this module
is the only place that parses it, so a change of Tune's format is mended here. Imports neither
torch nor Ray.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the experiment-state files of a Tune experiment folder (one per driver run; the newest is current)
TUNE_STATE_GLOB = "experiment_state-*.json"
#: Tune's trial statuses (``ray.tune.experiment.Trial.PENDING`` ...)
PENDING, RUNNING, PAUSED, TERMINATED, ERROR = "PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR"
#: the status of a trial state that names none
UNKNOWN = "?"


@dataclass(frozen=True)
class TuneTrialState:
    """One trial as Tune's newest experiment state records it."""

    trial_id: str
    status: str
    config: Mapping[str, Any] = field(default_factory=dict)


def newest_state_file(tune_dir: str | Path) -> Path | None:
    """Returns the newest ``experiment_state-*.json`` of a Tune experiment folder (by modification time, then
    name), or None when the folder holds none."""
    tune_dir = Path(tune_dir)
    if not tune_dir.is_dir():
        return None
    files = sorted(tune_dir.glob(TUNE_STATE_GLOB), key=lambda p: (p.stat().st_mtime, p.name))
    return files[-1] if files else None


def read_tune_trials(tune_dir: str | Path) -> list[TuneTrialState]:
    """Returns the trials of the newest experiment state of ``tune_dir``, in Tune's order; empty when there is
    no state file or it was caught mid-write (Tune rewrites it in place)."""
    path = newest_state_file(tune_dir)
    if path is None:
        return []
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [_trial(entry[0]) for entry in state.get("trial_data", [])]


def _trial(raw: str | Mapping[str, Any]) -> TuneTrialState:
    trial = json.loads(raw) if isinstance(raw, str) else raw
    return TuneTrialState(
        trial_id=str(trial.get("trial_id", "")), status=trial.get("status", UNKNOWN), config=trial.get("config", {})
    )


#: a trial checkpoint's folder as Tune names it, ``<trial folder>/checkpoint_<index, 6 digits>``
_CHECKPOINT_PATH = re.compile(rb"([^/\\\x00-\x1f]+)[/\\]checkpoint_(\d{6})")


def snapshot_checkpoints(tune_dir: str | Path) -> dict[str, int] | None:
    """Returns, per trial folder name, the index of the newest trial checkpoint the newest experiment state
    records (what ``Tuner.restore`` would resume that trial from); None when there is no readable state file.

    Tune keeps each trial's checkpoint list in the state's runtime metadata (``checkpoint_manager``), as a
    cloudpickle fallback (``{"_type": "CLOUDPICKLE_FALLBACK", "value": <hex>}``) whose bytes hold each
    checkpoint's path; the paths are read from those bytes without unpickling (no Ray needed). A trial
    with no checkpoint yet is absent.
    """
    path = newest_state_file(tune_dir)
    if path is None:
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    newest: dict[str, int] = {}
    for entry in state.get("trial_data", []):
        if len(entry) < 2:
            continue
        meta = json.loads(entry[1]) if isinstance(entry[1], str) else entry[1]
        manager = meta.get("checkpoint_manager") if isinstance(meta, Mapping) else None
        raw = manager.get("value") if isinstance(manager, Mapping) else None
        try:
            data = bytes.fromhex(raw) if isinstance(raw, str) else b""
        except ValueError:
            continue
        for folder, index in _CHECKPOINT_PATH.findall(data):
            name = folder.decode(errors="replace")
            newest[name] = max(newest.get(name, -1), int(index))
    return newest
