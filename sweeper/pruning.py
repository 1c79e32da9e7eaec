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

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def as_maximised(values: Sequence[float], directions: Sequence[str]) -> list[float]:
    """Returns ``values`` with each minimised objective negated, so that larger is better everywhere."""
    return [float(v) if d == "maximize" else -float(v) for v, d in zip(values, directions)]


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` is at least as good as ``b`` on every objective and better on one (maximising)."""
    return bool(np.all(a >= b) and np.any(a > b))


def non_dominated_ranks(points: np.ndarray) -> np.ndarray:
    """Returns each row's front number (0: non-dominated, 1: non-dominated once front 0 is removed, ...).

    Deb et al. (2002)'s fast non-dominated sort, O(n^2 k) for n points of k objectives (maximised).
    A row holding NaN is ranked after every finite row (its own last front).
    """
    points = np.asarray(points, dtype=float).reshape(len(points), -1)
    n = len(points)
    ranks = np.full(n, -1, dtype=int)
    valid = ~np.isnan(points).any(axis=1)
    index = np.flatnonzero(valid)
    dominated_by = {i: [] for i in index}  # i -> rows that i dominates
    count = {i: 0 for i in index}  # how many rows dominate i
    for a in index:
        for b in index:
            if a != b and dominates(points[a], points[b]):
                dominated_by[a].append(b)
                count[b] += 1
    current = [i for i in index if count[i] == 0]
    front = 0
    while current:
        following = []
        for i in current:
            ranks[i] = front
            for j in dominated_by[i]:
                count[j] -= 1
                if count[j] == 0:
                    following.append(j)
        current = following
        front += 1
    ranks[~valid] = front
    return ranks


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """Returns each row's crowding distance within its set (one front), Deb et al. (2002), section III-B.

    Per objective the rows are sorted; the two extreme rows get infinity, an inner row adds the gap
    between its two neighbours divided by the objective's range (max - min; a zero range adds nothing).
    The distance is the sum over objectives. Two or fewer rows are all extreme (infinity).
    """
    points = np.asarray(points, dtype=float).reshape(len(points), -1)
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
    points = np.asarray(points, dtype=float).reshape(len(points), -1)
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
