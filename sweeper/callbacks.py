"""The driver's Ray Tune callbacks: the one module that subclasses ``ray.tune.Callback``.

Each callback's hooks live, Ray-free, with their domain -- the MLflow tracker in
:mod:`sweeper.tracking`, the leaderboard writer in :mod:`sweeper.leaderboard`, the progress printer in
:mod:`sweeper.progress` -- so the read-only commands (``status``, ``leaderboard``, ``pareto``,
``compare``) import those modules without Ray. Here each becomes a Tune ``Callback``: the domain class
comes first in the bases, so its hooks (and ``get_state``/``set_state``) win over Tune's no-op
defaults.
"""

from __future__ import annotations

from ray.tune import Callback

from sweeper.checkpoints import CheckpointCleaner
from sweeper.leaderboard import LeaderboardWriter
from sweeper.progress import ProgressPrinter
from sweeper.tracking import MlflowTracker


class MlflowCallback(MlflowTracker, Callback):
    """Writes the sweep's runs to MLflow (:class:`sweeper.tracking.MlflowTracker`)."""


class LeaderboardCallback(LeaderboardWriter, Callback):
    """Rewrites trials.parquet and configs.parquet after each ended trial (:class:`sweeper.leaderboard.LeaderboardWriter`)."""


class ProgressCallback(ProgressPrinter, Callback):
    """Prints one line per ended fold trial (:class:`sweeper.progress.ProgressPrinter`)."""


class CheckpointCleanupCallback(CheckpointCleaner, Callback):
    """Deletes trial checkpoints the newest experiment snapshot no longer needs (:class:`sweeper.checkpoints.CheckpointCleaner`)."""
