"""Running a sweep: prepare the data once, then a Ray Tune experiment driven by :class:`FoldSearcher`.

Folder of a sweep (``SWEEP_DIR = RESULTS/<spec.name>``)::

    spec.yaml        frozen copy of the spec
    data/            the generated data set (synthetic format only)
    cache/           prepared arrays + index.parquet that trials read
    optuna.db        the Optuna study (SQLite)
    ray/tune/        Ray Tune's experiment folder (state, trial checkpoints)
    leaderboard/     trials.parquet, configs.parquet
    pareto/          pareto.csv (+ per class), PNGs

MLflow lives one level up, shared by the sweeps of a results root: ``RESULTS/mlflow.db`` and
``RESULTS/mlartifacts/`` (unless ``tracking.uri`` names a server).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.spec import SweepSpec, dump_spec

TUNE_NAME = "tune"
SEARCH_SPACES = Path(__file__).resolve().parent.parent / "search_spaces"


class SweepExistsError(RuntimeError):
    """The sweep folder already holds a sweep and neither resume nor a new name was asked for."""


@dataclass(frozen=True)
class SweepPaths:
    results: Path
    sweep: Path

    @classmethod
    def of(cls, spec: SweepSpec, results: str | Path) -> SweepPaths:
        results = Path(results).expanduser().resolve()
        return cls(results, results / spec.name)

    @property
    def spec_file(self) -> Path:
        return self.sweep / "spec.yaml"

    @property
    def cache(self) -> Path:
        return self.sweep / "cache"

    @property
    def tune_dir(self) -> Path:
        return self.sweep / "ray" / TUNE_NAME

    @property
    def optuna_storage(self) -> str:
        return f"sqlite:///{self.sweep / 'optuna.db'}"


def trial_name(trial) -> str:
    """Returns ``<loss>-<config_id>-fold<k>-<trial id>``: readable in Tune's output and a short folder name."""
    config = trial.config
    return f"{config['loss']}-{config['config_id']}-fold{config['fold']}-{trial.trial_id}"


def prepare_data(spec: SweepSpec, paths: SweepPaths) -> Path:
    """Generates the synthetic data set when asked, builds (or reuses) the cache; returns the cache folder."""
    from trainables.data import generate_uwmgi, prepare_cache

    data = spec.data
    if data.format == "synthetic":
        root = Path(data.root) if data.root else paths.sweep / "data"
        if not (root / "train.csv").is_file():
            s = data.synthetic
            generate_uwmgi(root, cases=s.cases, days_per_case=s.days_per_case, slices_per_scan=s.slices_per_scan,
                           image_size=s.image_size, seed=s.seed)
    else:
        root = Path(data.root)
    return prepare_cache(root, paths.cache, image_size=data.image_size, n_folds=data.folds,
                         fold_seed=data.fold_seed, classes=tuple(data.classes))


def base_trial_config(spec: SweepSpec, cache_dir: Path) -> dict[str, Any]:
    """Returns the keys every fold trial shares: data settings, model weights option, training settings."""
    training = spec.training.model_dump()
    return {
        "cache_dir": str(Path(cache_dir).resolve()),
        "classes": list(spec.data.classes),
        "context": spec.data.context,
        "augmentation": spec.data.augmentation,
        "image_size": spec.data.image_size,
        "encoder_weights": spec.model.encoder_weights,
        **training,
    }


def _init_ray(address: str | None) -> bool:
    """Connects to ``address`` or starts a local Ray; returns whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    env = {"NO_ALBUMENTATIONS_UPDATE": "1"}
    if address:
        ray.init(address=address, runtime_env={"env_vars": env})
    else:
        ray.init(include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=True)
    return True


def launch(spec: SweepSpec, results: str | Path = "results", *, resume: bool = False,
           address: str | None = None) -> SweepPaths:
    """Runs (or resumes) the sweep to the end and exports its Pareto fronts; returns its folders.

    Raises:
        SweepExistsError: the sweep folder holds a sweep and ``resume`` is false.
    """
    from ray import tune

    from sweeper.leaderboard import LeaderboardWriter
    from sweeper.search import FoldSearcher
    from sweeper.tracking import MlflowTracker, artifact_root, default_tracking_uri
    from trainables.train import train_fold

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    paths = SweepPaths.of(spec, results)
    started = paths.tune_dir.exists()
    if started and not resume:
        raise SweepExistsError(
            f"{paths.sweep} already holds sweep {spec.name!r}: pass --resume to continue it, or change `name` "
            "in the spec (or --results) to start a new one"
        )
    paths.sweep.mkdir(parents=True, exist_ok=True)
    if not paths.spec_file.exists():
        paths.spec_file.write_text(dump_spec(spec))

    cache_dir = prepare_data(spec, paths)
    tracking_uri = spec.tracking.uri or default_tracking_uri(paths.results)
    folds = spec.data.folds_to_run
    trainable = tune.with_resources(
        train_fold, {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial}
    )
    started_ray = _init_ray(address)
    try:
        if started and tune.Tuner.can_restore(str(paths.tune_dir)):
            tuner = tune.Tuner.restore(str(paths.tune_dir), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
        else:
            searcher = FoldSearcher(spec, paths.optuna_storage, base_trial_config(spec, cache_dir))
            tracker = MlflowTracker(tracking_uri, spec.name, None if spec.tracking.uri else
                                    f"{artifact_root(paths.results)}/{spec.name}", paths.spec_file, len(folds))
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1,
                                            max_concurrent_trials=spec.resources.max_concurrent,
                                            trial_name_creator=trial_name, trial_dirname_creator=trial_name),
                run_config=tune.RunConfig(
                    name=TUNE_NAME,
                    storage_path=str(paths.sweep / "ray"),
                    callbacks=[tracker, LeaderboardWriter(paths.sweep)],
                    failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    verbose=1,
                ),
            )
        tuner.fit()
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    export_all_fronts(paths.sweep, spec)
    return paths


def export_all_fronts(sweep_dir: Path, spec: SweepSpec) -> list[Path]:
    """Writes the overall front and one per class; returns the CSV paths (none when no trial finished)."""
    from sweeper.leaderboard import read_configs
    from sweeper.pareto import X_METRIC, export_pareto

    try:
        configs = read_configs(sweep_dir)
    except FileNotFoundError:
        return []
    if X_METRIC not in configs.columns or configs[X_METRIC].isna().all():
        return []  # no fold trial finished: nothing to rank
    written = [export_pareto(sweep_dir)[0]]
    written += [export_pareto(sweep_dir, class_name=c)[0] for c in spec.data.classes]
    return written
