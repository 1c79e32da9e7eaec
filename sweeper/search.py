"""The search: an Optuna study behind a Ray Tune ``Searcher`` that fans each configuration out over folds.

Why our own searcher (README, "Decisions worth knowing"): Ray Tune's ``OptunaSearch`` scores each trial
alone and cannot be combined with folds in multi-objective mode. Here one Optuna trial is one
*configuration* (architecture, encoder, heads, loss, loss knobs, searched training settings); it becomes one
Tune trial per fold and repeat (``training.repeats`` seeded runs of each fold), and Optuna is told the
fold means of the objectives (each fold first averaged over its repeats) once every fold trial has
ended -- or told FAIL if any failed, never a score. Grid mode enqueues every fixed configuration into the same study, so
both modes take one path.

The budget counts *distinct* configurations. Optuna may propose a configuration it proposed
before (a loss without knobs, a categorical-only space): that Optuna trial is told the known
result without training again and does not count; after ``MAX_DUPLICATES_IN_ROW`` such proposals
in a row the space counts as used up and the search ends early.

Pruning (README "Pruning"). With ``search.pruning.folds`` a configuration is handed out ``min_folds``
folds first and more only while it ranks in the top ``1/eta`` of the configurations that reached as
many folds (:mod:`sweeper.pruning`: non-dominated sorting, ties by crowding distance, on the fold means
over the same folds). A configuration left behind, or one whose fold trial the epoch scheduler stopped
(its last epoch below ``training.epochs``), is told PRUNED -- its partial fold means kept as the user
attributes ``partial.<metric>`` with where it was pruned (``pruned_rung``, or ``stopped_fold`` and
``stopped_epoch``), never a score -- and recorded in the sweep's pruning ledger
(:func:`sweeper.leaderboard.record_pruned`), which marks it ``pruned`` in configs.parquet.

Constraints (``search.constraints``) reach Optuna as the current API has them (Optuna 5:
``Trial.set_constraint`` before the tell; samplers read ``FrozenTrial.constraints``): per bound the value
``min - mean`` (or ``mean - max``), feasible when <= 0 (:func:`constraint_values`). The fold means are
also kept as user attributes ``mean.<metric>`` (``partial.<metric>`` for a pruned configuration).
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import optuna
from ray.tune.search import Searcher

from sweeper.pruning import (
    Rungs,
    as_maximised,
    first_stopped,
    rung_levels,
    rung_number,
    scheduler_stopped,
    trial_key,
)
from sweeper.spec import TRAINING_PARAM_PREFIX, ConstraintSpec, SweepSpec
from trainables.contract import BEST_PREFIX, Configuration, TrialConfig, TrialSettings

#: consecutive proposals of already-known configurations after which the search space counts as used up
MAX_DUPLICATES_IN_ROW = 100
#: Optuna user attributes: the fold mean of a metric over every fold (told trials) or over the folds done (pruned)
MEAN_ATTR, PARTIAL_ATTR = "mean.", "partial."


def _tpe(seed: int, batch_aware: bool) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, constant_liar=batch_aware)


def _nsga2(seed: int, batch_aware: bool) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed)  # generations of proposals: batch-aware by design


def _random(seed: int, batch_aware: bool) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)  # draws ignore results and pending trials alike


def _gp(seed: int, batch_aware: bool) -> optuna.samplers.BaseSampler:
    # Optuna 5.0's GPSampler has no batch (q-) acquisition: configurations still running are not accounted for
    return optuna.samplers.GPSampler(seed=seed)


#: sampler name -> factory(seed, batch_aware). Every one of them reads the constraints each told trial
#: carries (Optuna 5: ``Trial.set_constraint``), except random, whose draws ignore results.
SAMPLERS = {"tpe": _tpe, "nsga2": _nsga2, "random": _random, "gp": _gp}


def constraint_values(constraints: list[ConstraintSpec], means: dict[str, float]) -> dict[str, float]:
    """Returns ``{name: value}`` per bound, feasible when <= 0 (Optuna's convention): ``min - mean`` for
    ``{metric, min}`` (named ``<metric>>=<min>``), ``mean - max`` for ``{metric, max}`` (``<metric><=<max>``).
    A metric without a mean counts as infeasible (+1)."""
    values = {}
    for constraint in constraints:
        mean = means.get(constraint.metric)
        if constraint.min is not None:
            values[f"{constraint.metric}>={constraint.min:g}"] = 1.0 if mean is None else constraint.min - mean
        if constraint.max is not None:
            values[f"{constraint.metric}<={constraint.max:g}"] = 1.0 if mean is None else mean - constraint.max
    return values


def config_id(configuration: Configuration) -> str:
    """Returns a short stable hash of what defines a configuration (everything except the fold)."""
    canonical = {
        "arch": configuration.arch,
        "encoder": configuration.encoder,
        "loss": configuration.loss,
        "loss_params": {k: float(f"{v:.10g}") for k, v in sorted(configuration.loss_params.items())},
    }
    if configuration.roi_ratio is not None:  # absent from ids of sweeps that do not vary it
        canonical["roi_ratio"] = float(configuration.roi_ratio)
    if configuration.heads != "multiclass":  # absent from the ids of one-network configurations
        canonical["heads"] = configuration.heads
    if configuration.training_params:  # absent from ids of sweeps that search no training setting
        canonical["training"] = _canonical_training(configuration.training_params)
    digest = hashlib.sha1(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def _canonical_training(params: dict[str, Any]) -> dict[str, Any]:
    """Returns searched training settings with floats rounded as knob values are (stable ids)."""

    def canonical(value: Any) -> Any:
        if isinstance(value, float):
            return float(f"{value:.10g}")
        if isinstance(value, dict):
            return {k: canonical(v) for k, v in sorted(value.items())}
        if isinstance(value, (list, tuple)):
            return [canonical(v) for v in value]
        return value

    return canonical(params)


def sample_training(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    """Returns the configuration's ``training_params``: each searched training setting drawn through ``trial``
    as ``training.<setting>`` (a list: categorical; a range: float, log scale by default), else ``{}``."""
    training = spec.training
    chosen = {
        name: trial.suggest_categorical(TRAINING_PARAM_PREFIX + name, values)
        for name, values in training.choices().items()
    }
    lr_range = training.lr_range()
    if lr_range is not None:
        log = True if lr_range.log is None else lr_range.log
        chosen["lr"] = trial.suggest_float(TRAINING_PARAM_PREFIX + "lr", lr_range.low, lr_range.high, log=log)
    return training.training_params(chosen)


def sample_configuration(trial: optuna.Trial, spec: SweepSpec) -> Configuration:
    """Returns one configuration drawn through ``trial``; loss knobs are named ``<loss>.<knob>``.

    The loss's fixed knob values and its Optuna dimensions come from
    :func:`trainables.losses.knobs.plan_knobs`; this only asks Optuna for each dimension.
    """
    arch, encoder, heads = sample_network(trial, spec)
    labels = spec.loss_labels()
    loss = labels[trial.suggest_categorical("loss", list(labels))]
    plan = loss.knob_plan(spec.data.classes)
    params = dict(plan.fixed)
    for dimension in plan.dimensions:
        params[dimension.knob] = trial.suggest_float(dimension.name, dimension.low, dimension.high, log=dimension.log)
    ratios = spec.data.roi_ratios
    roi_ratio = trial.suggest_categorical("roi_ratio", ratios) if ratios else None
    return Configuration(
        arch=arch,
        encoder=encoder,
        loss=loss.name,
        loss_params=dict(sorted(params.items())),
        roi_ratio=roi_ratio,
        heads=heads,
        training_params=sample_training(trial, spec),
    )


def sample_network(trial: optuna.Trial, spec: SweepSpec) -> tuple[str, str, str]:
    """Returns (architecture, encoder, heads) drawn through ``trial``: ``network`` (``arch/encoder``) when
    the spec lists ``model.networks``, else ``arch`` and ``encoder``; ``heads`` only when it has choices."""
    if spec.model.networks is not None:
        arch, encoder = trial.suggest_categorical("network", spec.model.networks).split("/")
    else:
        arch = trial.suggest_categorical("arch", spec.model.architectures)
        encoder = trial.suggest_categorical("encoder", spec.model.encoders)
    heads = spec.model.heads
    return arch, encoder, (trial.suggest_categorical("heads", heads) if len(heads) > 1 else heads[0])


def grid_params(spec: SweepSpec, entry: dict[str, Any]) -> dict[str, Any]:
    """Returns the Optuna params that fix one grid entry (``SweepSpec.grid``): the names
    :func:`sample_configuration` asks for."""
    if spec.model.networks is not None:
        fixed: dict[str, Any] = {"network": f"{entry['arch']}/{entry['encoder']}"}
    else:
        fixed = {"arch": entry["arch"], "encoder": entry["encoder"]}
    if len(spec.model.heads) > 1:
        fixed["heads"] = entry["heads"]
    fixed["loss"] = entry["loss_label"]
    if entry["roi_ratio"] is not None:
        fixed["roi_ratio"] = entry["roi_ratio"]
    fixed.update({TRAINING_PARAM_PREFIX + k: v for k, v in entry.get("training", {}).items()})
    return fixed


def create_study(spec: SweepSpec, storage: str) -> optuna.Study:
    """Returns the sweep's study in persistent ``storage``, created or reloaded."""
    search = spec.search
    sampler = SAMPLERS["random" if search.mode == "grid" else search.sampler](search.seed, search.batch_aware)
    return optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=sampler,
        directions=[obj.direction for obj in spec.search.objectives],
        load_if_exists=True,
    )


@dataclass
class _Configuration:
    configuration: Configuration
    optuna_numbers: list[int]
    folds: list[int]
    repeats: int = 1
    #: fold -> the searcher's metrics (objectives, then constraint metrics) at the best epoch, averaged over
    #: the fold's repeats once all of them ended; None: one failed
    results: dict[int, list[float] | None] = field(default_factory=dict)
    #: (fold, repeat) -> one seeded run's metrics while the fold's other repeats run; None: failed
    runs: dict[tuple[int, int], list[float] | None] = field(default_factory=dict)
    told: bool = False
    launched: int = 0  # folds handed to Tune so far (the first ``launched`` of ``folds``)
    stopped: dict[int, int] = field(default_factory=dict)  # fold -> last epoch, for folds the scheduler stopped
    pruned_at: str = ""  # why it was pruned ("" if it was not)
    #: where it was pruned: ``rung``, ``stopped_fold``, ``stopped_epoch`` (None where they do not apply)
    pruned_where: dict[str, int | None] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.results) == len(self.folds)

    @property
    def launched_done(self) -> bool:
        return all(fold in self.results for fold in self.folds[: self.launched])

    def record_run(self, fold: int, repeat: int, values: list[float] | None) -> bool:
        """Records one seeded run of a fold; returns True once the fold's every repeat has ended, its
        ``results`` entry then the mean over the repeats, (1 / R) sum_r y_fr (None if one failed)."""
        self.runs[(fold, repeat)] = values
        mine = [v for (f, _), v in self.runs.items() if f == fold]
        if len(mine) < self.repeats:
            return False
        self.results[fold] = None if any(v is None for v in mine) else [sum(v) / len(v) for v in zip(*mine)]
        return True


class FoldSearcher(Searcher):
    """Asks Optuna for configurations, hands Tune one trial per fold, tells Optuna fold means.

    Args:
        spec: the sweep spec (search space, objectives, budget, folds).
        storage: Optuna storage URL, e.g. ``sqlite:////abs/sweep/optuna.db``.
        settings: what every trial shares (:func:`sweeper.trial_config.trial_settings`), completed per
            configuration and fold into the :class:`~trainables.contract.TrialConfig` Tune is handed.
    """

    def __init__(self, spec: SweepSpec, storage: str, settings: TrialSettings, *, sweep_dir=None):
        super().__init__(metric=None, mode=None)
        self._spec = spec
        self._storage = storage
        self._settings = settings
        self._sweep_dir = None if sweep_dir is None else str(sweep_dir)  # where the pruning ledger goes
        self._folds = spec.data.folds_to_run
        objectives = [obj.metric for obj in spec.search.objectives]
        # what each fold result keeps: the objectives, then the constraints' metrics (each name once)
        self._metric_names = list(dict.fromkeys([*objectives, *(c.metric for c in spec.search.constraints)]))
        self._result_keys = [BEST_PREFIX + name for name in self._metric_names]
        self._n_objectives = len(objectives)
        self._constraints = list(spec.search.constraints)
        self._directions = [obj.direction for obj in spec.search.objectives]
        halving = spec.search.pruning.folds
        self._fold_rungs = Rungs(eta=halving.eta) if halving is not None else None
        self._fold_levels = rung_levels(halving.min_folds, halving.eta, len(self._folds)) if halving else None
        grid = spec.grid() if spec.search.mode == "grid" else None
        self._budget = spec.planned_configurations()
        self._queue: deque[TrialConfig] = deque()
        self._configurations: dict[str, _Configuration] = {}
        self._trial_folds: dict[str, tuple[str, int]] = {}
        self._asked = 0  # distinct configurations asked (the budget counts these)
        self._duplicates_in_row = 0
        self._study = create_study(spec, storage)
        if grid is not None and not self._study.trials:
            for configuration in grid:
                self._study.enqueue_trial(grid_params(spec, configuration))

    # -- Tune's Searcher interface ------------------------------------------------------------
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        while not self._queue and self._asked < self._budget and not self._exhausted:
            self._ask()
        if self._queue:
            fold_config = self._queue.popleft()
            self._trial_folds[trial_id] = (fold_config.config_id, fold_config.fold, fold_config.repeat)
            return fold_config.to_dict()
        if any(not c.told for c in self._configurations.values()):
            return None  # folds still running; Tune asks again later
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._trial_folds:
            return
        cid, fold, *repeat = self._trial_folds.pop(trial_id)  # no repeat: saved before repeats existed
        entry = self._configurations[cid]
        values = None
        if not error and result is not None and all(key in result for key in self._result_keys):
            values = [float(result[key]) for key in self._result_keys]
        run = repeat[0] if repeat else 0
        if values is not None and self._was_stopped(cid, fold, result, run):
            entry.stopped[fold] = int(result["epoch"])  # a partial record, never a score
        if not entry.record_run(fold, run, values):
            return  # the fold's other repeats still run: a fold counts once all of them ended
        if entry.told:
            return  # pruned while this fold ran: kept in the leaderboard, nothing more to tell
        if entry.stopped:
            fold_stopped, epoch = next(iter(entry.stopped.items()))
            if self._fold_rungs is not None:
                # counted among the configurations at its fold rung, ranked last: the rung keeps the top 1/eta
                # of every configuration that got there, not of those the epoch scheduler let through
                self._fold_rungs.arrive(entry.launched, cid, [math.nan] * self._n_objectives)
            fold_stopped, epoch = self._judged_stop(cid) or (fold_stopped, epoch)
            self._prune(
                entry,
                f"fold {fold_stopped} stopped at epoch {epoch}",
                rung=rung_number(epoch, self._epoch_levels),
                stopped_fold=fold_stopped,
                stopped_epoch=epoch,
            )
        elif not entry.launched_done:
            return
        elif entry.complete or any(r is None for r in entry.results.values()):
            self._tell(entry)
        else:
            self._next_fold_rung(cid, entry)

    # -- persistence (Tuner.restore) ------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        state = {
            k: getattr(self, k)
            for k in ("_queue", "_configurations", "_trial_folds", "_asked", "_duplicates_in_row", "_fold_rungs")
        }
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(state, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_study", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._study = create_study(self._spec, self._storage)

    # -- internals ------------------------------------------------------------------------------
    @property
    def study(self) -> optuna.Study:
        return self._study

    @property
    def _exhausted(self) -> bool:
        """True once Optuna proposed only known configurations MAX_DUPLICATES_IN_ROW times running:
        the search space is (nearly) used up, e.g. only knob-less losses left."""
        return self._duplicates_in_row >= MAX_DUPLICATES_IN_ROW

    def _ask(self) -> None:
        trial = self._adopt_orphan() or self._study.ask()
        configuration = sample_configuration(trial, self._spec)
        cid = config_id(configuration)
        trial.set_user_attr("config_id", cid)
        for key, value in configuration.loss_params.items():
            trial.set_user_attr(f"loss_params.{key}", value)
        for key, value in configuration.training_params.items():
            trial.set_user_attr(f"training_params.{key}", value)
        entry = self._configurations.get(cid)
        if entry is not None:
            # Optuna proposed a configuration we already train or trained: reuse, never retrain.
            entry.optuna_numbers.append(trial.number)
            self._duplicates_in_row += 1
            if entry.told:
                self._tell_numbers(entry, [trial.number])
            return
        self._asked += 1
        self._duplicates_in_row = 0
        entry = _Configuration(configuration, [trial.number], list(self._folds), self._settings.repeats)
        self._configurations[cid] = entry
        self._launch(cid, entry, self._fold_levels[0] if self._fold_levels else len(self._folds))

    def _launch(self, cid: str, entry: _Configuration, up_to: int, *, first: bool = False) -> None:
        """Queues the configuration's folds up to the ``up_to``-th, each with its ``training.repeats`` seeded
        runs (``first``: ahead of everything queued)."""
        fold_configs = [
            self._settings.for_fold(entry.configuration, config_id=cid, fold=fold, repeat=repeat)
            for fold in entry.folds[entry.launched : up_to]
            for repeat in range(entry.repeats)
        ]
        entry.launched = up_to
        if first:
            self._queue.extendleft(reversed(fold_configs))
        else:
            self._queue.extend(fold_configs)

    def _next_fold_rung(self, cid: str, entry: _Configuration) -> None:
        """At a fold rung: queues the next rung's folds if the configuration ranks in the top 1/eta of those
        that reached this rung (fold means over the same folds), else prunes it."""
        level = entry.launched
        means = [sum(v) / len(v) for v in zip(*(entry.results[f] for f in entry.folds[:level]))]
        maximised = as_maximised(means[: self._n_objectives], self._directions)
        if self._fold_rungs.arrive(level, cid, maximised):
            self._launch(cid, entry, self._fold_levels[self._fold_levels.index(level) + 1], first=True)
        else:
            self._prune(
                entry,
                f"fold rung {level}: outside the top 1/{self._fold_rungs.eta:g}",
                rung=rung_number(level, self._fold_levels),
            )

    def _adopt_orphan(self) -> optuna.Trial | None:
        """Returns a RUNNING Optuna trial that no configuration of this searcher holds, else None.

        A driver killed after asking Optuna but before Tune saved the searcher leaves such a trial;
        resuming trains its configuration (same params, so the same config_id, MLflow runs and
        leaderboard rows) instead of leaving it RUNNING forever and asking a new one.
        """
        known = {n for entry in self._configurations.values() for n in entry.optuna_numbers}
        for frozen in self._study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if frozen.number not in known:
                return optuna.trial.Trial(self._study, frozen._trial_id)
        return None

    def _was_stopped(self, cid: str, fold: int, result: dict, repeat: int = 0) -> bool:
        """True when the epoch scheduler stopped this fold trial: it is in the scheduler's state in the sweep
        folder (without a sweep folder: its last epoch is below ``training.epochs``)."""
        epoch = result.get("epoch")
        if epoch is None or int(epoch) >= self._settings.epochs:
            return False
        return self._sweep_dir is None or trial_key(cid, fold, repeat) in scheduler_stopped(self._sweep_dir)

    @property
    def _epoch_levels(self) -> list[int]:
        """The epoch scheduler's rung epochs ([] without ``scheduler: {type: moasha}``)."""
        chosen = self._spec.scheduler
        if chosen.type != "moasha":
            return []
        return rung_levels(chosen.grace_period, chosen.reduction_factor, self._settings.epochs)[:-1]

    def _judged_stop(self, cid: str) -> tuple[int, int] | None:
        """Returns ``(fold, epoch)`` where the scheduler judged the configuration and stopped it (its first stopped
        fold trial in the scheduler's state; a sibling stopped after it ended at its next epoch), else None."""
        return None if self._sweep_dir is None else first_stopped(scheduler_stopped(self._sweep_dir), cid)

    def _prune(self, entry: _Configuration, reason: str, **where: int | None) -> None:
        """Tells Optuna PRUNED, drops the configuration's queued folds and records it in the pruning ledger
        (``where``: ``rung``, ``stopped_fold``, ``stopped_epoch`` of :func:`sweeper.leaderboard.record_pruned`)."""
        cid = config_id(entry.configuration)
        entry.pruned_at = reason
        entry.pruned_where = dict(where)
        self._queue = deque(c for c in self._queue if c.config_id != cid)
        self._tell(entry)
        if self._sweep_dir is not None:
            from sweeper.leaderboard import record_pruned

            finished = [f for f, r in entry.results.items() if r is not None and f not in entry.stopped]
            record_pruned(
                self._sweep_dir, cid, reason=reason, n_folds=len(finished), n_stopped=len(entry.stopped), **where
            )

    def _tell(self, entry: _Configuration) -> None:
        self._tell_numbers(entry, entry.optuna_numbers)
        entry.told = True

    def _tell_numbers(self, entry: _Configuration, numbers: list[int]) -> None:
        results = list(entry.results.values())
        measured = [r for r in results if r is not None]
        means = [sum(values) / len(values) for values in zip(*measured)] if measured else []
        storage, study_id = self._study._storage, self._study._study_id
        for number in numbers:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
            if storage.get_trial(trial_id).state.is_finished():
                continue  # already told before a driver restart
            failed = not entry.pruned_at and any(r is None for r in results)
            if not failed:
                trial = optuna.trial.Trial(self._study, trial_id)
                prefix = PARTIAL_ATTR if entry.pruned_at else MEAN_ATTR
                for name, mean in zip(self._metric_names, means):
                    trial.set_user_attr(prefix + name, mean)
                for name, value in constraint_values(self._constraints, dict(zip(self._metric_names, means))).items():
                    trial.set_constraint(name, value)
            if entry.pruned_at:
                trial.set_user_attr("pruned_at", entry.pruned_at)
                trial.set_user_attr("n_folds", len(measured) - len(entry.stopped))
                for key, value in getattr(entry, "pruned_where", {}).items():  # a state saved before it had none
                    if value is not None:
                        trial.set_user_attr(f"pruned_{key}" if key == "rung" else key, value)
                self._study.tell(number, state=optuna.trial.TrialState.PRUNED)
            elif failed:
                self._study.tell(number, state=optuna.trial.TrialState.FAIL)
            else:
                self._study.tell(number, means[: self._n_objectives])  # fold means of repeat means
