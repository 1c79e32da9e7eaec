"""Running a sweep: prepare the data once, then a Ray Tune experiment driven by :class:`FoldSearcher`.

:func:`launch` is the orchestration; each concern it calls has its own module:

- :mod:`sweeper.paths`: every folder and file of the sweep (:class:`~sweeper.paths.SweepPaths`);
- :mod:`sweeper.preflight`: every check before Ray starts, each raising ``BadInputError``;
- :mod:`sweeper.ray_session`: starting or joining Ray, the Ray Client relay to the head
  (``ray://``), the credential guard;
- :mod:`sweeper.cache_transport`: how trials get the data cache (a shared path or Ray's object store);
- :mod:`sweeper.pareto`: the fronts exported at the end (:func:`~sweeper.pareto.export_all_fronts`).

Storage (``--storage`` or the spec's ``storage``; README "Running on a cluster"):

- unset: the sweep folder is ``RESULTS/<name>``;
- a local or NFS path ``P``: the sweep folder is ``P/<name>`` (Tune's storage, the data cache, the
  leaderboard, the Optuna study); only the MLflow store stays under ``RESULTS``;
- an object-store URI (``s3://bucket/prefix``, ``gs://...``; anything pyarrow's filesystems read):
  Tune's storage_path is ``URI/<name>/ray`` and the rest stays under ``RESULTS/<name>`` on the
  driver; the data cache is put once into Ray's object store and unpacked once per node
  (:func:`sweeper.cache_transport.train_fold_from_object_store`), because no path is shared by every
  worker.
"""

from __future__ import annotations

import os
from pathlib import Path

from sweeper.cache_transport import CacheVia, fold_trainable, resolve_cache_via
from sweeper.paths import TUNE_NAME, SweepPaths
from sweeper.preflight import (
    BadInputError,
    check_address,
    check_classes_present,
    check_disk_space,
    check_local_resources,
    check_results_root,
    check_resume_spec,
    check_tracking_environment,
    check_writable,
)
from sweeper.ray_session import keep_credentials_out_of_ray_logs, launch_through_client, start_or_join_ray
from sweeper.spec import SweepSpec, dump_spec

SEARCH_SPACES = Path(__file__).resolve().parent.parent / "search_spaces"


class SweepExistsError(RuntimeError):
    """The sweep folder already holds a sweep and neither resume nor a new name was asked for."""


def trial_name(trial) -> str:
    """Returns ``<loss>-<config_id>-fold<k>[-r<repeat>]-<trial id>``: readable in Tune's output and a short
    folder name."""
    from trainables.contract import TrialConfig

    config = TrialConfig.from_dict(trial.config)
    repeat = f"-r{config.repeat}" if config.repeat else ""
    return f"{config.loss}-{config.config_id}-fold{config.fold}{repeat}-{trial.trial_id}"


def prepare_data(spec: SweepSpec, paths: SweepPaths) -> Path:
    """Builds (or reuses) the cache of the spec's data set, any format (the synthetic one is generated
    first, once); returns the cache folder."""
    from trainables.data import prepare_dataset_cache

    data = spec.data
    root = Path(data.root) if data.root else paths.data
    return prepare_dataset_cache(
        data.format,
        root,
        paths.cache,
        image_size=data.image_size,
        n_folds=data.folds,
        fold_seed=data.fold_seed,
        classes=tuple(data.classes),
        label_mode=data.label_mode,
        options=data.format_options(),
        label_values=data.label_values,
        intensity=data.intensity.mode,
        window=data.intensity.window,
        clip_percentiles=data.intensity.clip_percentiles,
        target_spacing=data.target_spacing,
        split=data.split_file,
    )


def _tracking_uri(spec: SweepSpec, paths: SweepPaths) -> tuple[str, str | None]:
    """Returns (tracking URI, artifact location for a new experiment): the spec's server, else
    ``$MLFLOW_TRACKING_URI`` (set on a cluster head by cluster.yaml), else ``RESULTS/mlflow.db``."""
    from sweeper.tracking import artifact_root, default_tracking_uri, store_artifact_location

    uri = spec.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri:  # a local store (sqlite:///...) keeps its artifacts beside it; a server decides itself
        return uri, store_artifact_location(uri, spec.name)
    return default_tracking_uri(paths.results), f"{artifact_root(paths.results)}/{spec.name}"


def _trainable(spec: SweepSpec, cache_dir: Path, cache_via: str):
    """Returns the fold trainable with the spec's resources (CPUs, fractional GPUs) attached."""
    from ray import tune

    keep_credentials_out_of_ray_logs()
    fn = fold_trainable(cache_dir, cache_via)
    return tune.with_resources(fn, {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial})


def tune_config(spec: SweepSpec, searcher, scheduler=None):
    """Returns the TuneConfig: our searcher, the spec's trial scheduler (:func:`sweeper.schedulers.make_scheduler`;
    None: Tune's FIFO), unbounded samples, the spec's concurrency cap.

    ``resources.reuse_actors`` (default on): a fold trial that ends hands its worker process (torch,
    smp and the data cache already imported and mapped) to the next trial with the same resources
    instead of Ray starting a new one: `benchmarks/sweep_overhead.py` measured 2.14x -> 1.12x of the
    ideal wall time for 32 trials of 3 s. Nothing carries over between trials: `train_fold` seeds,
    builds its model, loader and optimiser afresh, and a killed worker is replaced as before. A
    pending trial takes whichever worker is free first, so a short trial may run where an earlier one
    ended rather than on a node whose new worker is still starting.
    """
    from ray import tune

    return tune.TuneConfig(
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=-1,
        max_concurrent_trials=spec.resources.max_concurrent,
        reuse_actors=spec.resources.reuse_actors,
        trial_name_creator=trial_name,
        trial_dirname_creator=trial_name,
    )


def launch(
    spec: SweepSpec,
    results: str | Path = "results",
    *,
    resume: bool = False,
    address: str | None = None,
    storage: str | None = None,
    cache_via: CacheVia = "auto",
    callbacks: list | None = None,
    force_spec: bool = False,
) -> SweepPaths:
    """Runs (or resumes) the sweep to the end and exports its Pareto fronts; returns its folders.

    Args:
        spec: the sweep.
        results: results root (MLflow store; sweep folders unless ``storage`` is a path).
        resume: continue the sweep found in the sweep folder.
        address: Ray cluster (``auto``, ``HOST:6379``, ``ray://HOST:10001``); None: a private local Ray.
        storage: overrides ``spec.storage`` (local/NFS path or object-store URI).
        cache_via: how trials get the data cache: ``path`` (a folder every worker sees),
            ``object_store`` (put once in Ray's object store, unpacked once per node) or ``auto``
            (object store exactly when Tune's storage is an object-store URI).
        callbacks: extra Tune callbacks (tests watch trials through them); not passed on over ``ray://``,
            where the driver runs on the head.
        force_spec: on resume, accept a spec that differs from the sweep's frozen one in the fields
            :data:`sweeper.preflight.SAFE_ON_RESUME` only (any other difference is refused).

    Raises:
        SweepExistsError: the sweep folder holds a sweep and ``resume`` is false.
        sweeper.sweep_lock.SweepLockedError: another launch runs in the same sweep folder.
        BadInputError: anything found wrong before Ray starts (README "Bad input"), a spec changed on resume too.
        sweeper.tracking.TrackingUnreachableError: the MLflow server (``tracking.uri`` or
            ``$MLFLOW_TRACKING_URI``) does not answer at launch (raised before anything is written or Ray
            starts), or stayed down through the end of the sweep (README "When things break").
    """
    check_address(address)
    if address and address.startswith("ray://"):
        return launch_through_client(
            spec, results, resume=resume, address=address, storage=storage, cache_via=cache_via
        )
    from sweeper.sweep_lock import sweep_lock

    paths = SweepPaths.of(spec, results, storage)
    check_results_root(paths)
    check_writable(paths)
    with sweep_lock(paths):  # one launch per sweep folder, taken before anything is written into it
        return _launch(spec, paths, resume, address, cache_via, callbacks, force_spec)


def _launch(
    spec: SweepSpec,
    paths: SweepPaths,
    resume: bool,
    address: str | None,
    cache_via: CacheVia,
    callbacks: list | None,
    force_spec: bool,
) -> SweepPaths:
    """The body of :func:`launch`, under the sweep folder's lock."""
    from ray import tune

    from sweeper.callbacks import CheckpointCleanupCallback, LeaderboardCallback, MlflowCallback, ProgressCallback
    from sweeper.checkpoints import checkpoint_config
    from sweeper.pareto import export_all_fronts
    from sweeper.schedulers import make_scheduler
    from sweeper.search import FoldSearcher
    from sweeper.tracking import TrackingUnreachableError, check_tracking_server, local_store_folder
    from sweeper.trial_config import trial_settings

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    check_local_resources(spec, address)
    started = paths.trials_started()
    if started and not resume:
        raise SweepExistsError(
            f"{paths.sweep} already holds sweep {spec.name!r}: pass --resume to continue it, or change `name` "
            "in the spec (or --results) to start a new one"
        )
    resumed_changes = check_resume_spec(spec, paths, force_spec=force_spec) if started else []
    if not spec.tracking.uri:
        check_tracking_environment()
    tracking_uri, artifact_location = _tracking_uri(spec, paths)
    check_disk_space(
        spec, paths, local_mlflow=artifact_location is not None, mlflow_folder=local_store_folder(tracking_uri)
    )
    check_tracking_server(tracking_uri)  # an unreachable MLflow server fails here: nothing written, no Ray
    if not started:  # what a launch that failed before its first trial left must not block this one
        paths.clear_unstarted()
    paths.sweep.mkdir(parents=True, exist_ok=True)
    if not paths.spec_file.exists() or resumed_changes:
        paths.spec_file.write_text(dump_spec(spec))
    if local_store_folder(tracking_uri) is not None:
        local_store_folder(tracking_uri).mkdir(parents=True, exist_ok=True)

    try:
        cache_dir = prepare_data(spec, paths)
    except (OSError, ValueError, KeyError) as err:  # a data set problem, named by the reader: before Ray starts
        raise BadInputError(
            f"data ({spec.data.format} at {spec.data.root or paths.data}): {str(err).strip(chr(34))}"
        ) from err
    check_classes_present(cache_dir, spec.data)
    folds = spec.data.folds_to_run
    started_ray = start_or_join_ray(address)
    try:
        trainable = _trainable(spec, cache_dir, resolve_cache_via(cache_via, paths))
        if started and tune.Tuner.can_restore(paths.tune_path):
            tuner = tune.Tuner.restore(
                paths.tune_path,
                trainable=trainable,
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
            )
            if callbacks:  # restored callbacks come from the saved experiment; add this run's extra ones
                tuner._local_tuner._run_config.callbacks = [
                    *(tuner._local_tuner._run_config.callbacks or []),
                    *callbacks,
                ]
        else:
            searcher = FoldSearcher(spec, paths.optuna_storage, trial_settings(spec, cache_dir), sweep_dir=paths.sweep)
            tracker = MlflowCallback(
                tracking_uri, spec.name, artifact_location, paths.spec_file, len(folds) * spec.training.repeats
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune_config(spec, searcher, make_scheduler(spec, paths.sweep)),
                run_config=tune.RunConfig(
                    name=TUNE_NAME,
                    storage_path=paths.tune_storage,
                    callbacks=[
                        tracker,
                        LeaderboardCallback(paths.sweep),
                        ProgressCallback(
                            spec.planned_fold_trials(),
                            objectives=[(o.metric, o.direction) for o in spec.search.objectives],
                            sweep_dir=paths.sweep,
                        ),
                        *([] if paths.storage_uri else [CheckpointCleanupCallback(paths.tune_dir)]),
                        *(callbacks or []),
                    ],
                    failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
                    checkpoint_config=checkpoint_config(paths),  # no forced snapshot per epoch
                    verbose=0,  # ProgressCallback prints one line per ended trial instead of Tune's tables
                ),
            )
        unwritten = None
        try:
            tuner.fit()
        except TrackingUnreachableError as err:  # every trial ended; only MLflow writes wait for --resume
            unwritten = err
    finally:
        if started_ray:
            import ray

            ray.shutdown()  # a connected driver only disconnects; a local Ray it started ends here
    if paths.trials_table.is_file():  # records a killed driver did not gather, from the trials' checkpoints
        from sweeper.leaderboard import rebuild_sweep_cases

        rebuild_sweep_cases(paths.sweep, from_mlflow=False, force=False)
    export_all_fronts(paths.sweep, spec.data.classes)
    if unwritten is not None:
        raise unwritten
    return paths
