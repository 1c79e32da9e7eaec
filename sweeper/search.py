"""The search: an Optuna study behind a Ray Tune ``Searcher`` that fans each configuration out over folds.

Why our own searcher (README, "Decisions worth knowing"): Ray Tune's ``OptunaSearch`` scores each trial
alone and cannot be combined with folds in multi-objective mode. Here one Optuna trial is one
*configuration* (architecture, encoder, loss, loss knobs, searched training settings); it becomes one
Tune trial per fold and repeat (``training.repeats`` seeded runs of each fold), and Optuna is told the
fold means of the objectives (each fold first averaged over its repeats) once every fold trial has
ended -- or told FAIL if any failed, never a score. Grid mode enqueues every fixed configuration into the same study, so
both modes take one path.

The budget counts *distinct* configurations. Optuna may propose a configuration it proposed
before (a loss without knobs, a categorical-only space): that Optuna trial is told the known
result without training again and does not count; after ``MAX_DUPLICATES_IN_ROW`` such proposals
in a row the space counts as used up and the search ends early.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import optuna
from ray.tune.search import Searcher

from sweeper.spec import TRAINING_PARAM_PREFIX, SweepSpec
from trainables.contract import BEST_PREFIX, Configuration, TrialConfig, TrialSettings

#: consecutive proposals of already-known configurations after which the search space counts as used up
MAX_DUPLICATES_IN_ROW = 100

SAMPLERS = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


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
    arch = trial.suggest_categorical("arch", spec.model.architectures)
    encoder = trial.suggest_categorical("encoder", spec.model.encoders)
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
        training_params=sample_training(trial, spec),
    )


def create_study(spec: SweepSpec, storage: str) -> optuna.Study:
    """Returns the sweep's study in persistent ``storage``, created or reloaded."""
    mode = spec.search.mode
    sampler = SAMPLERS["random" if mode == "grid" else spec.search.sampler](spec.search.seed)
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
    #: (fold, repeat) -> the fold trial's objective values, None when it failed
    results: dict[tuple[int, int], list[float] | None] = field(default_factory=dict)
    told: bool = False

    @property
    def complete(self) -> bool:
        return len(self.results) == len(self.folds) * self.repeats


def fold_means(results: dict[tuple[int, int], list[float]]) -> list[float]:
    """Returns the objectives' mean over folds of each fold's mean over its repeats (the value Optuna is told):
    mean_f (1 / R_f) sum_r y_fr, so a fold with more finished repeats weighs no more than another."""
    by_fold: dict[int, list[list[float]]] = {}
    for key, values in results.items():
        fold = key[0] if isinstance(key, tuple) else key  # a fold alone: saved before repeats existed
        by_fold.setdefault(fold, []).append(values)
    per_fold = [[sum(v) / len(v) for v in zip(*runs)] for runs in by_fold.values()]
    return [sum(v) / len(v) for v in zip(*per_fold)]


class FoldSearcher(Searcher):
    """Asks Optuna for configurations, hands Tune one trial per fold, tells Optuna fold means.

    Args:
        spec: the sweep spec (search space, objectives, budget, folds).
        storage: Optuna storage URL, e.g. ``sqlite:////abs/sweep/optuna.db``.
        settings: what every trial shares (:func:`sweeper.trial_config.trial_settings`), completed per
            configuration and fold into the :class:`~trainables.contract.TrialConfig` Tune is handed.
    """

    def __init__(self, spec: SweepSpec, storage: str, settings: TrialSettings):
        super().__init__(metric=None, mode=None)
        self._spec = spec
        self._storage = storage
        self._settings = settings
        self._folds = spec.data.folds_to_run
        self._objectives = [BEST_PREFIX + obj.metric for obj in spec.search.objectives]
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
                fixed = {
                    "arch": configuration["arch"],
                    "encoder": configuration["encoder"],
                    "loss": configuration["loss_label"],
                }
                if configuration["roi_ratio"] is not None:
                    fixed["roi_ratio"] = configuration["roi_ratio"]
                fixed.update({TRAINING_PARAM_PREFIX + k: v for k, v in configuration["training"].items()})
                self._study.enqueue_trial(fixed)

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
        if not error and result is not None and all(key in result for key in self._objectives):
            values = [float(result[key]) for key in self._objectives]
        entry.results[(fold, repeat[0] if repeat else 0)] = values
        if entry.complete:
            self._tell(entry)

    # -- persistence (Tuner.restore) ------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        state = {
            k: getattr(self, k) for k in ("_queue", "_configurations", "_trial_folds", "_asked", "_duplicates_in_row")
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
        repeats = self._settings.repeats
        self._configurations[cid] = _Configuration(configuration, [trial.number], list(self._folds), repeats)
        for fold in self._folds:
            for repeat in range(repeats):
                self._queue.append(self._settings.for_fold(configuration, config_id=cid, fold=fold, repeat=repeat))

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

    def _tell(self, entry: _Configuration) -> None:
        self._tell_numbers(entry, entry.optuna_numbers)
        entry.told = True

    def _tell_numbers(self, entry: _Configuration, numbers: list[int]) -> None:
        results = list(entry.results.values())
        for number in numbers:
            if self._study.trials[number].state.is_finished():
                continue  # already told before a driver restart
            if any(r is None for r in results):
                self._study.tell(number, state=optuna.trial.TrialState.FAIL)
            else:
                self._study.tell(number, fold_means(entry.results))
