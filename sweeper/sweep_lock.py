"""One launch per sweep folder at a time: :func:`sweep_lock`.

The lock is an OS file lock (``flock`` through the ``filelock`` library) on ``SWEEP_DIR/launch.lock``,
taken before the launch writes anything into the folder and held until it returns. The OS drops it
when the holding process ends, however it ends, so the lock of a killed driver is never stale: the
next launch simply takes it. Beside it, ``launch.owner`` names the holder (pid, host, start time)
for the message a second launch gets.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from sweeper.preflight import BadInputError

if TYPE_CHECKING:
    from sweeper.paths import SweepPaths

LOCK_FILE = "launch.lock"
OWNER_FILE = "launch.owner"


class SweepLockedError(BadInputError):
    """Another launch is running in the same sweep folder."""


def lock_owner(paths: SweepPaths) -> str:
    """Returns who holds the sweep folder's lock, as its ``launch.owner`` says (or that it is unknown)."""
    try:
        return (paths.sweep / OWNER_FILE).read_text().strip() or "an unknown process"
    except OSError:
        return "an unknown process"


@contextlib.contextmanager
def sweep_lock(paths: SweepPaths) -> Iterator[None]:
    """Holds the sweep folder's launch lock for the ``with`` block; raises :class:`SweepLockedError` at once,
    naming the running launch, when another process holds it."""
    paths.sweep.mkdir(parents=True, exist_ok=True)
    lock = FileLock(paths.sweep / LOCK_FILE, timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise SweepLockedError(
            f"{paths.sweep} is in use by another launch ({lock_owner(paths)}): one sweep per folder at a time. "
            "Wait for it to end (sweeper status " + str(paths.sweep) + "), stop it, or give this spec another "
            "`name` (or --results)"
        ) from None
    owner = paths.sweep / OWNER_FILE
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        owner.write_text(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
        yield
    finally:
        with contextlib.suppress(OSError):
            owner.unlink()
        lock.release()
