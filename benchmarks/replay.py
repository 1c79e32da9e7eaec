"""Replays pruning strategies on learning curves, offline, with the sweep's own decision code.

Shared by ``benchmarks/pruning_simulation.py`` (synthetic curves, configurations in a fixed order) and
``benchmarks/search_efficiency.py`` (a recorded real sweep, configurations proposed by Optuna's samplers).

A configuration's curves are ``values`` (folds, epochs, objectives): the objectives as each epoch's
validation reported them, larger is better; and ``select`` (folds, epochs): the metric a fold trial
keeps its best epoch by. A fold trial's record is its best epoch among those it ran -- the first epoch
of the highest ``select``, as ``trainables/train.py`` keeps it -- and a configuration's result is the
mean of its fold records.

The decisions are the sweep's own:

- epoch halving (MO-ASHA): :class:`sweeper.pruning.EpochHalving`, asked after every epoch as
  :class:`sweeper.schedulers.MoAshaScheduler` asks it;
- fold halving and the searcher's bookkeeping: :class:`sweeper.pruning.Rungs` in :func:`replay_in_order`,
  and the sweep's searcher itself, :class:`sweeper.search.FoldSearcher` with its Optuna study, in
  :func:`replay_search`.

Fold trials run one at a time, in the order the searcher hands them out (a promoted configuration's
next folds first). A real sweep runs several at once, so its rungs see arrivals in a somewhat
different order; the decisions are the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sweeper.pareto import non_dominated
from sweeper.pruning import EpochHalving, Rungs, as_maximised, rung_levels
from sweeper.stats import hypervolume_2d

#: the objectives the replays rank on, both maximised (the sweep's default search.objectives)
OBJECTIVES = ("sensitivity", "precision")


@dataclass(frozen=True)
class Strategy:
    """Which prunings run: fold halving ``(min_folds, eta)`` and MO-ASHA ``(grace_period, reduction_factor)``."""

    folds: tuple[int, float] | None = None
    moasha: tuple[int, float] | None = None

    def spec_sections(self) -> dict:
        """Returns the spec's ``search.pruning`` and ``scheduler`` sections for this strategy."""
        pruning = {"folds": {"min_folds": self.folds[0], "eta": self.folds[1]}} if self.folds else {}
        scheduler = (
            {"type": "moasha", "grace_period": self.moasha[0], "reduction_factor": self.moasha[1]}
            if self.moasha
            else {"type": "fifo"}
        )
        return {"pruning": pruning, "scheduler": scheduler}


#: strategy name -> prunings; ``full`` is full fan-out (every configuration, every fold, every epoch)
STRATEGIES = {
    "full": Strategy(),
    "folds": Strategy(folds=(1, 3.0)),
    "moasha": Strategy(moasha=(2, 3.0)),
    "both": Strategy(folds=(1, 3.0), moasha=(2, 3.0)),
    "both, gentle": Strategy(folds=(2, 2.0), moasha=(3, 2.0)),
}


def epoch_halving(strategy: Strategy, n_epochs: int, objectives=OBJECTIVES, directions=None) -> EpochHalving | None:
    """Returns the MO-ASHA decisions of ``strategy`` (None without epoch halving)."""
    if strategy.moasha is None:
        return None
    directions = list(directions or ["maximize"] * len(objectives))
    return EpochHalving(list(objectives), directions, strategy.moasha[0], strategy.moasha[1], n_epochs)


def run_fold_trial(
    values: np.ndarray, select: np.ndarray, halving: EpochHalving | None, key: str, fold: int, objectives=OBJECTIVES
) -> tuple[int, np.ndarray]:
    """Returns (epochs trained, objectives at the best epoch so far) of one fold trial of configuration ``key``.

    ``values`` (epochs, objectives) and ``select`` (epochs,) are the fold's curves. After each epoch the
    scheduler (``halving``) sees the epoch's objectives and says whether the trial goes on.
    """
    best, best_score = 0, -math.inf
    for epoch in range(len(select)):
        if select[epoch] > best_score:
            best, best_score = epoch, select[epoch]
        if halving is not None:
            result = {"epoch": epoch + 1, **dict(zip(objectives, values[epoch]))}
            if not halving.decide(key, fold, result):
                return epoch + 1, values[best]
    return len(select), values[best]


def replay_in_order(curves: np.ndarray, select: np.ndarray, strategy: Strategy) -> tuple[int, dict[int, np.ndarray]]:
    """Returns (fold-trial-epochs spent, {configuration: fold means} of those finishing unpruned).

    ``curves`` (configurations, folds, epochs, objectives), ``select`` (configurations, folds, epochs).
    Configurations come in index order; fold halving is :class:`sweeper.pruning.Rungs` as the searcher
    keeps them (a configuration the scheduler stopped counts at its fold rung, ranked last).
    """
    n_configs, n_folds, n_epochs, n_objectives = curves.shape
    halving = epoch_halving(strategy, n_epochs, OBJECTIVES[:n_objectives])
    fold_rungs = Rungs(eta=strategy.folds[1]) if strategy.folds else None
    levels = rung_levels(strategy.folds[0], strategy.folds[1], n_folds) if strategy.folds else [n_folds]
    spent, finished = 0, {}
    for c in range(n_configs):
        records, pruned, launched = [], False, 0
        for level in levels:
            for fold in range(launched, level):
                epochs, best = run_fold_trial(curves[c, fold], select[c, fold], halving, str(c), fold)
                spent += epochs
                records.append(best)
                if epochs < n_epochs:
                    pruned = True
                    break
            launched = level
            if pruned:
                if fold_rungs is not None:  # as the searcher does: counted at the fold rung, ranked last
                    fold_rungs.arrive(level, str(c), [np.nan] * n_objectives)
                break
            if level < n_folds and not fold_rungs.arrive(level, str(c), list(np.mean(records, axis=0))):
                pruned = True
                break
        if not pruned:
            finished[c] = np.mean(records, axis=0)
    return spent, finished


def front_hypervolume(points: np.ndarray) -> float:
    """Returns the hypervolume of the non-dominated rows of ``points`` (n, 2), reference point (0, 0)."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    return hypervolume_2d(points[non_dominated(points)], (0.0, 0.0)) if len(points) else 0.0


@dataclass
class SearchTrace:
    """One replayed search: after each configuration told complete, the fold-trial-epochs spent so far and the
    hypervolume of the front of the configurations told complete so far; ``spent`` the total."""

    epochs: list[int]
    hypervolumes: list[float]
    spent: int
    configurations: int  # distinct configurations trained
    complete: int  # of them, told complete (not pruned)

    def hypervolume_at(self, budget: float) -> float:
        """Returns the hypervolume reached within ``budget`` fold-trial-epochs (0 before the first)."""
        reached = [hv for epochs, hv in zip(self.epochs, self.hypervolumes) if epochs <= budget]
        return max(reached, default=0.0)

    @property
    def final(self) -> float:
        return self.hypervolumes[-1] if self.hypervolumes else 0.0


def replay_search(spec, curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> SearchTrace:
    """Returns the trace of the search ``spec`` describes, replayed on recorded ``curves``.

    ``spec`` (a :class:`sweeper.spec.SweepSpec`, search mode optuna) gives the sampler, its seed, the
    budget, ``search.pruning.folds`` and ``scheduler``; ``curves`` maps each ``config_id`` the spec's
    search space can produce to its ``(values, select)`` (folds, epochs, ...) in the order of
    ``spec.search.objectives``. The sweep's own searcher (:class:`sweeper.search.FoldSearcher`, on an
    in-memory Optuna study) proposes configurations with the sampler, fans them out over folds, halves
    folds and tells Optuna fold means or PRUNED, exactly as in a sweep; each fold trial's result is
    looked up instead of trained, and MO-ASHA (:class:`sweeper.pruning.EpochHalving`) stops fold trials.
    """
    import optuna
    from ray.tune.search import Searcher

    from sweeper.search import FoldSearcher
    from trainables.contract import BEST_PREFIX, TrialSettings

    objectives = [obj.metric for obj in spec.search.objectives]
    directions = [obj.direction for obj in spec.search.objectives]
    n_epochs = spec.training.epochs
    chosen = spec.scheduler
    strategy = Strategy(moasha=(chosen.grace_period, chosen.reduction_factor) if chosen.type == "moasha" else None)
    halving = epoch_halving(strategy, n_epochs, objectives, directions)
    searcher = FoldSearcher(spec, None, TrialSettings(cache_dir="-", epochs=n_epochs))
    study = searcher.study
    trace = SearchTrace([], [], 0, 0, 0)
    complete, trials = [], 0
    while (config := searcher.suggest(f"t{trials}")) not in (None, Searcher.FINISHED):
        cid, fold = config["config_id"], config["fold"]
        values, select = curves[cid]
        epochs, best = run_fold_trial(values[fold], select[fold], halving, cid, fold, objectives)
        trace.spent += epochs
        searcher.on_trial_complete(
            f"t{trials}", {"epoch": epochs, **{BEST_PREFIX + m: float(v) for m, v in zip(objectives, best)}}
        )
        trials += 1
        told = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(told) > len(complete):
            complete = told
            points = np.array([as_maximised(t.values, directions) for t in complete])
            trace.epochs.append(trace.spent)
            trace.hypervolumes.append(front_hypervolume(points))
    trace.configurations = len({t.user_attrs["config_id"] for t in study.get_trials(deepcopy=False)})
    trace.complete = len({t.user_attrs["config_id"] for t in complete})
    return trace
