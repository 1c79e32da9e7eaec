"""Multi-objective successive halving: who goes on at a rung, by non-dominated sorting and crowding distance.

Pure functions and small Ray-free bookkeeping shared by the two prunings of a sweep:

- **fold halving** (:class:`sweeper.search.FoldSearcher`, ``search.pruning.folds``): a configuration first
  runs ``min_folds`` folds; at each rung (``min_folds * eta**k`` folds, the last rung every fold) it goes
  on only while it ranks in the top ``1/eta`` of the configurations that reached that rung;
- **epoch halving** (:class:`sweeper.schedulers.MoAshaScheduler`, ``scheduler: {type: moasha}``): a fold
  trial reaching epoch ``grace_period * reduction_factor**k`` goes on only while it ranks in the top
  ``1/reduction_factor`` of the trials of the same fold that reached that epoch.

The ranking is the one of NSGA-II (Deb K., Pratap A., Agarwal S., Meyarivan T. "A fast and elitist
multiobjective genetic algorithm: NSGA-II." IEEE Transactions on Evolutionary Computation 6(2):182-197,
2002. doi:10.1109/4235.996017): points are sorted into non-dominated fronts, and inside a front by
decreasing crowding distance. Using it to promote at the rungs of asynchronous successive halving is
MO-ASHA (Schmucker R., Donini M., Zafar M. B., Salinas D., Archambeau C. "Multi-objective Asynchronous
Successive Halving." arXiv:2106.12639, 2021). Decisions are asynchronous as in ASHA (Li L. et al.
"A System for Massively Parallel Hyperparameter Tuning." MLSys 2020): each arrival at a rung is judged
against the arrivals so far, never revisited; the first arrival at a rung always goes on.

All objectives are maximised here; callers negate minimised ones (:func:`as_maximised`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: the epoch scheduler's state in the sweep folder (:class:`sweeper.schedulers.MoAshaScheduler` writes it)
SCHEDULER_STATE_FILE = "moasha_state.json"


def trial_key(config_id: str, fold: int, repeat: int = 0) -> str:
    """Returns the key of a fold trial in the scheduler's state: ``<config_id>/<fold>``, and ``/<repeat>`` for
    every seeded repeat of the fold but the first (``training.repeats``)."""
    return f"{config_id}/{fold}" + (f"/{repeat}" if repeat else "")


def scheduler_stopped(sweep_dir: str | Path) -> dict[str, int]:
    """Returns the fold trials the epoch scheduler stopped, ``{"<config_id>/<fold>": epoch}`` ({} without one).

    The scheduler writes its state before Tune tells the searcher and the callbacks that the trial
    ended, so they can tell a stopped trial from a finished one by this."""
    path = Path(sweep_dir) / SCHEDULER_STATE_FILE
    return {k: int(v) for k, v in json.loads(path.read_text())["stopped"].items()} if path.is_file() else {}


def scheduler_rungs(sweep_dir: str | Path) -> list[int]:
    """Returns the epoch scheduler's rung epochs from its state in the sweep folder ([] without one)."""
    path = Path(sweep_dir) / SCHEDULER_STATE_FILE
    return EpochHalving.from_dict(json.loads(path.read_text())).levels if path.is_file() else []


def first_stopped(stopped: dict[str, int], config_id: str) -> tuple[int, int] | None:
    """Returns ``(fold, epoch)`` of the first of the configuration's fold trials in the scheduler's ``stopped``
    (:func:`scheduler_stopped`), else None. The first is the one judged at a rung: the scheduler records it
    before the siblings it stops at their next epoch, and its state keeps that order."""
    for key, epoch in stopped.items():
        cid, fold, *_ = key.split("/")
        if cid == config_id:
            return int(fold), int(epoch)
    return None


def rung_number(level: int, levels: Sequence[int]) -> int | None:
    """Returns the 1-based rung of ``level`` (a fold count or an epoch) among ``levels``, None when it is none."""
    return list(levels).index(level) + 1 if level in levels else None


def as_maximised(values: Sequence[float], directions: Sequence[str]) -> list[float]:
    """Returns ``values`` with each minimised objective negated, so that larger is better everywhere."""
    return [float(v) if d == "maximize" else -float(v) for v, d in zip(values, directions)]


def _as_matrix(points) -> np.ndarray:
    """Returns ``points`` as a float (n, k) array (one objective given as a vector becomes one column)."""
    points = np.asarray(points, dtype=float)
    return points[:, None] if points.ndim == 1 else points


def non_dominated_ranks(points: np.ndarray) -> np.ndarray:
    """Returns each row's front number (0: non-dominated, 1: non-dominated once front 0 is removed, ...).

    Deb et al. (2002)'s fast non-dominated sort, O(n^2 k) for n points of k objectives (maximised).
    A row holding NaN is ranked after every finite row (its own last front).
    """
    points = _as_matrix(points)
    n = len(points)
    ranks = np.full(n, -1, dtype=int)
    valid = ~np.isnan(points).any(axis=1)
    finite = points[valid]
    # beats[a, b]: a dominates b (at least as good everywhere, better somewhere)
    at_least = np.all(finite[:, None, :] >= finite[None, :, :], axis=2)
    better = np.any(finite[:, None, :] > finite[None, :, :], axis=2)
    beats = at_least & better
    count = beats.sum(axis=0)  # how many rows dominate each row
    current = np.flatnonzero(count == 0)
    front = 0
    finite_ranks = np.full(len(finite), -1, dtype=int)
    while len(current):
        finite_ranks[current] = front
        count = count - beats[current].sum(axis=0)
        count[finite_ranks >= 0] = -1  # ranked already
        current = np.flatnonzero(count == 0)
        front += 1
    ranks[valid] = finite_ranks
    ranks[~valid] = front
    return ranks


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """Returns each row's crowding distance within its set (one front), Deb et al. (2002), section III-B.

    Per objective the rows are sorted; the two extreme rows get infinity, an inner row adds the gap
    between its two neighbours divided by the objective's range (max - min; a zero range adds nothing).
    The distance is the sum over objectives. Two or fewer rows are all extreme (infinity).
    """
    points = _as_matrix(points)
    n, k = points.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for m in range(k):
        order = np.argsort(points[:, m], kind="stable")
        values = points[order, m]
        distance[order[0]] = distance[order[-1]] = np.inf
        spread = values[-1] - values[0]
        if spread <= 0:
            continue
        distance[order[1:-1]] += (values[2:] - values[:-2]) / spread
    return distance


def rank_order(points: np.ndarray) -> np.ndarray:
    """Returns row indices best first: by front number, then by decreasing crowding distance within a front,
    then by row order (earlier arrival first)."""
    points = _as_matrix(points)
    ranks = non_dominated_ranks(points)
    crowding = np.zeros(len(points))
    for front in np.unique(ranks):
        members = np.flatnonzero(ranks == front)
        finite = ~np.isnan(points[members]).any(axis=1)
        crowding[members[finite]] = crowding_distance(points[members[finite]])
    return np.array(sorted(range(len(points)), key=lambda i: (ranks[i], -crowding[i], i)), dtype=int)


def n_promoted(n: int, eta: float) -> int:
    """Returns how many of ``n`` arrivals at a rung make the top ``1/eta``: ``max(1, floor(n / eta))``.

    The floor follows ASHA (a trial goes on when it is among the top n/eta); at least one goes on, so
    the first arrival at a rung always does.
    """
    return max(1, math.floor(n / eta))


def promoted(points: np.ndarray, candidate: int, eta: float) -> bool:
    """True when row ``candidate`` of ``points`` (all arrivals at a rung, itself included) is in the top
    ``1/eta`` of :func:`rank_order`."""
    order = list(rank_order(points))
    return order.index(candidate) < n_promoted(len(points), eta)


def rung_levels(first: int, eta: float, last: int) -> list[int]:
    """Returns the rungs ``first, first*eta, first*eta**2, ...`` (rounded down) below ``last``, then ``last``."""
    if first < 1 or eta <= 1:
        raise ValueError(f"rungs need first >= 1 and eta > 1, but got first={first}, eta={eta}")
    levels, level = [], float(first)
    while int(level) < last:
        if not levels or int(level) > levels[-1]:
            levels.append(int(level))
        level *= eta
    return [*levels, last]


@dataclass
class Rungs:
    """Asynchronous successive-halving bookkeeping for one group of competitors (one fold, or the sweep).

    ``arrivals[level]`` keeps, in arrival order, ``(key, maximised values)`` of everything that reached
    that level. :meth:`arrive` records an arrival and says whether it goes on. Plain data: it pickles and
    round-trips through :meth:`to_dict` / :meth:`from_dict`.
    """

    eta: float
    arrivals: dict[int, list[tuple[str, list[float]]]] = field(default_factory=dict)

    def arrive(self, level: int, key: str, values: Sequence[float]) -> bool:
        """Records ``key`` at ``level`` (a repeated arrival replaces the earlier one: a trial resumed from a
        checkpoint may report the same epoch twice) and returns whether it goes on."""
        entries = self.arrivals.setdefault(level, [])
        keys = [k for k, _ in entries]
        if key in keys:
            entries[keys.index(key)] = (key, list(values))
            position = keys.index(key)
        else:
            entries.append((key, list(values)))
            position = len(entries) - 1
        points = np.array([v for _, v in entries[: position + 1]], dtype=float)
        return promoted(points, position, self.eta)

    def to_dict(self) -> dict:
        return {"eta": self.eta, "arrivals": {str(k): [[key, v] for key, v in e] for k, e in self.arrivals.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Rungs:
        return cls(
            eta=float(data["eta"]),
            arrivals={int(k): [(key, list(v)) for key, v in e] for k, e in data["arrivals"].items()},
        )


@dataclass
class EpochHalving:
    """MO-ASHA's decisions for fold trials (Ray-free; :class:`sweeper.schedulers.MoAshaScheduler` drives it).

    A fold trial reporting epoch ``e`` in :attr:`levels` (``grace_period * reduction_factor**k`` below
    ``max_epochs``) arrives at that rung of its fold's :class:`Rungs`, with the objectives it reported for
    that epoch (maximised); it goes on only in the top ``1/reduction_factor`` of the same fold's trials
    at that rung. A trial once stopped stays stopped: a result it reports later (its last checkpoint
    replayed after a driver restart) is stopped again.

    Once one fold trial of a configuration is stopped, the searcher prunes the configuration, so its other
    fold trials still running stop at their next result.

    A configuration is judged once per rung, on the first of its folds to reach it; its other folds
    pass that rung unjudged. Judging every fold would compound the halving: the trials of a later fold
    are those of configurations that already survived the first, so the top ``1/reduction_factor`` of
    them is a far smaller share of all configurations (``benchmarks/pruning_simulation.py`` measured the
    true front's survival falling from about a half to a few percent that way).
    """

    objectives: list[str]
    directions: list[str]
    grace_period: int
    reduction_factor: float
    max_epochs: int
    folds: dict[int, Rungs] = field(default_factory=dict)
    stopped: dict[str, int] = field(default_factory=dict)  # "<config_id>/<fold>" -> epoch it was stopped at
    passed: dict[str, list[int]] = field(default_factory=dict)  # config_id -> rungs passed (on any fold)

    @property
    def levels(self) -> list[int]:
        """The rung epochs (the last epoch is no rung: the trial ends there anyway)."""
        return rung_levels(self.grace_period, self.reduction_factor, self.max_epochs)[:-1]

    def decide(self, config_id: str, fold: int, result: dict, repeat: int = 0) -> bool:
        """Returns whether the fold trial goes on after reporting ``result`` (it holds ``epoch`` and the
        objectives under their plain names)."""
        key = trial_key(config_id, fold, repeat)
        if key in self.stopped:
            return False
        epoch = result.get("epoch")
        if any(stopped.split("/")[0] == config_id for stopped in self.stopped):
            # a sibling fold was stopped, so the searcher pruned the configuration: this fold is no use either
            self.stopped[key] = int(epoch or 0)
            return False
        if epoch is None or int(epoch) not in self.levels:
            return True
        rungs = self.folds.setdefault(int(fold), Rungs(eta=self.reduction_factor))
        judged_here = any(k == config_id for k, _ in rungs.arrivals.get(int(epoch), []))
        if int(epoch) in self.passed.get(config_id, []) and not judged_here:
            return True  # judged at this rung on another fold
        values = [result.get(name, float("nan")) for name in self.objectives]
        if rungs.arrive(int(epoch), config_id, as_maximised(values, self.directions)):
            passed = self.passed.setdefault(config_id, [])
            if int(epoch) not in passed:
                passed.append(int(epoch))
            return True
        self.stopped[key] = int(epoch)
        return False

    def to_dict(self) -> dict:
        return {
            "objectives": self.objectives,
            "directions": self.directions,
            "grace_period": self.grace_period,
            "reduction_factor": self.reduction_factor,
            "max_epochs": self.max_epochs,
            "folds": {str(fold): rungs.to_dict() for fold, rungs in self.folds.items()},
            "stopped": self.stopped,
            "passed": self.passed,
        }

    @classmethod
    def from_dict(cls, data: dict) -> EpochHalving:
        return cls(
            objectives=list(data["objectives"]),
            directions=list(data["directions"]),
            grace_period=int(data["grace_period"]),
            reduction_factor=float(data["reduction_factor"]),
            max_epochs=int(data["max_epochs"]),
            folds={int(fold): Rungs.from_dict(r) for fold, r in data["folds"].items()},
            stopped={k: int(v) for k, v in data["stopped"].items()},
            passed={k: [int(e) for e in v] for k, v in data.get("passed", {}).items()},
        )
