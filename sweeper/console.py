"""The console of `sweeper launch` and `sweeper demo`: one live display, our lines, and the libraries' output in a log.

- :class:`LiveDisplay` shows where the sweep stands (:class:`SweepProgress`: fold trials ended / planned,
  running, failed, stopped by the epoch scheduler, configurations pruned, elapsed and time left, the best fold-mean value so far of each objective, the
  size of the Pareto front). On a terminal it is one status bar (tqdm) redrawn in place, with the line per
  ended fold trial written above it; when the output is not a terminal (CI logs, ``ray job logs``) the
  same status is a plain line, at most every ``plain_every_s`` seconds, between the per-trial lines.
- :func:`sweep_console` sends everything Ray, Tune, Optuna and MLflow print -- the driver's output,
  the trial workers' output Ray forwards to the driver, warnings and C-level messages -- to
  ``SWEEP_DIR/logs/sweep.log`` by pointing the process's stdout and stderr (file descriptors 1 and 2) at
  that file for the length of the sweep; the display writes to a duplicate of the original stdout. With
  ``verbose`` nothing is redirected and the status comes as plain lines among the libraries' output.

:class:`sweeper.progress.ProgressPrinter` (the Tune callback) feeds the display that
:func:`sweep_console` makes current (:func:`active_display`); without one it prints its lines to stdout
as before. Imports neither Ray nor torch.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

#: the file under ``SWEEP_DIR/logs`` that receives Ray's, Tune's, Optuna's and MLflow's output
SWEEP_LOG = "sweep.log"
#: how a plain status line starts (when the output is not a terminal)
PLAIN_PREFIX = "[sweep]"


@dataclass(frozen=True)
class SweepProgress:
    """What the live display shows. Counts are fold trials (``stopped``: by the epoch scheduler) but
    ``configs_pruned`` (configurations fold halving or the scheduler left behind); ``best`` maps each objective to its best
    configuration fold mean so far (highest, or lowest for a ``minimize`` objective); ``front`` is the
    number of configurations on the sensitivity-precision front; ``eta_s`` is None until a trial ended."""

    planned: int | None
    ended: int = 0
    failed: int = 0
    stopped: int = 0
    configs_pruned: int = 0
    running: int = 0
    elapsed_s: float = 0.0
    eta_s: float | None = None
    best: dict[str, float] = field(default_factory=dict)
    front: int | None = None


def status_text(p: SweepProgress, *, with_counts: bool = True) -> str:
    """Returns the status as one line: ``3/12 folds | 2 running, 1 failed, 1 stopped, 2 configs pruned |
    1m20s elapsed, ~4m00s left | best sensitivity 0.812, precision 0.774 | front 2`` (stopped and pruned
    only once there are some; ``with_counts=False`` drops the leading ``3/12 folds``, which the terminal
    bar shows itself)."""
    from sweeper.progress import format_duration

    parts = []
    if with_counts:
        parts.append(f"{p.ended}/{p.planned if p.planned is not None else '?'} folds")
    counts = f"{p.running} running, {p.failed} failed"
    if p.stopped:
        counts += f", {p.stopped} stopped"
    if p.configs_pruned:
        counts += f", {p.configs_pruned} config{'s' if p.configs_pruned != 1 else ''} pruned"
    parts.append(counts)
    timing = f"{format_duration(p.elapsed_s)} elapsed"
    timing += f", ~{format_duration(p.eta_s)} left" if p.eta_s is not None else ""
    parts.append(timing)
    if p.best:
        parts.append("best " + ", ".join(f"{name} {value:.3f}" for name, value in p.best.items()))
    if p.front is not None:
        parts.append(f"front {p.front}")
    return " | ".join(parts)


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LiveDisplay:
    """The sweep's status on ``stream``: redrawn in place on a terminal, plain lines otherwise.

    Args:
        stream: where to write (the console).
        live: redraw in place (a tqdm bar); default: whether ``stream`` is a terminal.
        plain_every_s: least time between two plain status lines (when not ``live``).
        clock: the time source (tests pass a fake one).
    """

    def __init__(self, stream: IO[str], *, live: bool | None = None, plain_every_s: float = 30.0, clock=time.time):
        self.stream = stream
        self.live = is_terminal(stream) if live is None else live
        self.plain_every_s = plain_every_s
        self.clock = clock
        self.progress: SweepProgress | None = None
        self._bar = None
        self._last_plain: float | None = None
        self._last_plain_text: str | None = None

    # -- what ProgressPrinter calls --------------------------------------------------------------------
    def update(self, progress: SweepProgress) -> None:
        """Shows ``progress``: redraws the bar, or prints a plain line when ``plain_every_s`` has passed."""
        self.progress = progress
        if self.live:
            self._draw(progress)
        elif self._last_plain is None or self.clock() - self._last_plain >= self.plain_every_s:
            self._plain(progress)

    def write(self, line: str) -> None:
        """Prints one line (a trial that ended) above the bar, or as it is."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """Leaves the last status on the console: the bar stays drawn, or a last plain line (unless the
        last one said the same)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.progress is not None and not self.live:
            if status_text(self.progress) != self._last_plain_text:
                self._plain(self.progress)

    # -- drawing ---------------------------------------------------------------------------------------
    def _draw(self, p: SweepProgress) -> None:
        from tqdm import tqdm

        if self._bar is None:
            counted = "{bar:16} {n_fmt}/{total_fmt} folds | {desc}" if p.planned else "{n_fmt} folds | {desc}"
            self._bar = tqdm(
                total=p.planned,
                file=self.stream,
                bar_format="sweep " + counted,
                dynamic_ncols=True,
                leave=True,
                mininterval=0.0,
            )
        self._bar.total = p.planned
        self._bar.n = p.ended
        self._bar.set_description_str(status_text(p, with_counts=False), refresh=True)

    def _plain(self, p: SweepProgress) -> None:
        text = status_text(p)
        print(f"{PLAIN_PREFIX} {text}", file=self.stream, flush=True)
        self._last_plain, self._last_plain_text = self.clock(), text


_ACTIVE: LiveDisplay | None = None


def active_display() -> LiveDisplay | None:
    """Returns the display of the sweep this process runs, while :func:`sweep_console` is open."""
    return _ACTIVE


@contextlib.contextmanager
def showing(display: LiveDisplay) -> Iterator[LiveDisplay]:
    """Makes ``display`` the current one (:func:`active_display`) for the body; closes it at the end."""
    global _ACTIVE
    _ACTIVE = display
    try:
        yield display
    finally:
        _ACTIVE = None
        display.close()


@dataclass
class Console:
    """What :func:`sweep_console` yields: the display and the log file (None when nothing is redirected)."""

    display: LiveDisplay
    log: Path | None

    def say(self, line: str) -> None:
        """Prints a line of ours on the console (above the bar)."""
        self.display.write(line)


def _stdout_fd() -> int | None:
    """Returns 1 when ``sys.stdout`` writes to file descriptor 1 (a real process, not a test runner's buffer)."""
    try:
        return 1 if sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2 else None
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return None


@contextlib.contextmanager
def sweep_console(logs: Path | None, *, verbose: bool = False, plain_every_s: float = 30.0) -> Iterator[Console]:
    """Runs the body with the sweep's console: the live display current, and (unless ``verbose``, or
    ``logs`` is None, or stdout is no file descriptor) file descriptors 1 and 2 pointing at
    ``logs/sweep.log``, appended to (a resume continues the same log).

    An exception leaving the body is written to the log with its traceback before stdout and stderr are
    restored; it then propagates (the caller prints it, with :attr:`Console.log`). A sweep folder this call
    created that holds nothing but the log afterwards (a launch refused by its checks) is removed.
    """
    log_file = None
    new_folder = logs is not None and not logs.parent.exists()
    if not verbose and logs is not None and _stdout_fd() is not None:
        try:
            logs.mkdir(parents=True, exist_ok=True)
            log_file = open(logs / SWEEP_LOG, "a", buffering=1)  # noqa: SIM115 - closed below, after the fds
        except OSError:
            log_file = None  # an unwritable sweep folder: the launch's own check says so
    if log_file is None:
        with showing(LiveDisplay(sys.stdout, live=False if verbose else None, plain_every_s=plain_every_s)) as display:
            yield Console(display, None)
        return

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(1), "w", buffering=1)
    log_file.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} sweeper (pid {os.getpid()}) =====\n")
    os.dup2(log_file.fileno(), 1)
    os.dup2(log_file.fileno(), 2)
    try:
        with showing(LiveDisplay(console, plain_every_s=plain_every_s)) as display:
            try:
                yield Console(display, logs / SWEEP_LOG)
            except BaseException:
                sys.stderr.flush()
                log_file.write(traceback.format_exc())
                raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        console.close()
        log_file.close()
        if new_folder and [p.name for p in logs.parent.iterdir()] == [logs.name]:
            shutil.rmtree(logs.parent, ignore_errors=True)  # refused before anything ran: leave no sweep folder
