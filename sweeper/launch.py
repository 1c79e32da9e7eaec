"""Running a sweep: prepare the data once, then a Ray Tune experiment driven by :class:`FoldSearcher`.

The folders and files of a sweep are named in :mod:`sweeper.paths`.

Storage (``--storage`` or the spec's ``storage``; README "Running on a cluster"):

- unset: the sweep folder is ``RESULTS/<name>``;
- a local or NFS path ``P``: the sweep folder is ``P/<name>`` (Tune's storage, the data cache, the
  leaderboard, the Optuna study); only the MLflow store stays under ``RESULTS``;
- an object-store URI (``s3://bucket/prefix``, ``gs://...``; anything pyarrow's filesystems read):
  Tune's storage_path is ``URI/<name>/ray`` and the rest stays under ``RESULTS/<name>`` on the
  driver; the data cache is put once into Ray's object store and unpacked once per node
  (:func:`train_fold_from_object_store`), because no path is shared by every worker.

Ray: ``address`` None starts a private local Ray (never joins a cluster found in /tmp/ray, unless
``RAY_ADDRESS`` is set, as inside ``ray job submit``); ``auto`` or ``HOST:6379`` connects as a
driver; ``ray://HOST:10001`` (Ray Client) runs the whole launch as a task on the head node, so
``--results``/``--storage`` name paths on the head, and the leaderboard and Pareto files are copied
back under ``--results`` on the client (:func:`_launch_through_client`). The driver only
disconnects from a cluster it did not start. ``SWEEPER_RAY_TEMP_DIR`` sets the temp folder of a
local Ray the driver starts.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Literal

from sweeper.paths import TUNE_NAME, SweepPaths
from sweeper.preflight import BadInputError, check_disk_space, check_local_resources, check_writable
from sweeper.spec import SweepSpec, dump_spec, is_uri

SEARCH_SPACES = Path(__file__).resolve().parent.parent / "search_spaces"


class SweepExistsError(RuntimeError):
    """The sweep folder already holds a sweep and neither resume nor a new name was asked for."""


def trial_name(trial) -> str:
    """Returns ``<loss>-<config_id>-fold<k>-<trial id>``: readable in Tune's output and a short folder name."""
    config = trial.config
    return f"{config['loss']}-{config['config_id']}-fold{config['fold']}-{trial.trial_id}"


def prepare_data(spec: SweepSpec, paths: SweepPaths) -> Path:
    """Builds (or reuses) the cache of the spec's data set, any format (the synthetic one is generated
    first, once); returns the cache folder."""
    from trainables.data import prepare_dataset_cache

    data = spec.data
    root = Path(data.root) if data.root else paths.data
    return prepare_dataset_cache(
        data.format, root, paths.cache, image_size=data.image_size, n_folds=data.folds, fold_seed=data.fold_seed,
        classes=tuple(data.classes), label_mode=data.label_mode, options=data.format_options(),
        label_values=data.label_values, intensity=data.intensity.mode, window=data.intensity.window,
        clip_percentiles=data.intensity.clip_percentiles, target_spacing=data.target_spacing,
        split=data.split_file,
    )


def planned_folds(spec: SweepSpec) -> int:
    """Returns the number of fold trials the spec asks for at most (configurations x folds)."""
    configurations = len(spec.grid()) if spec.search.mode == "grid" else spec.search.budget
    return configurations * len(spec.data.folds_to_run)


def base_trial_config(spec: SweepSpec, cache_dir: Path) -> dict[str, Any]:
    """Returns the keys every fold trial shares: data settings, model weights option, training settings."""
    training = spec.training.model_dump()
    return {
        "cache_dir": str(Path(cache_dir).resolve()),
        "classes": spec.data.channel_classes,
        "activation": "softmax" if spec.data.label_mode == "multiclass" else "sigmoid",
        "context": spec.data.context,
        "augmentation": spec.data.augmentation,
        "image_size": spec.data.image_size,
        "encoder_weights": spec.model.encoder_weights,
        "cpus_per_trial": spec.resources.cpus_per_trial,
        **training,
    }


#: environment variable naming the temp folder of a local Ray started by the driver (its sockets,
#: logs and session files); lets a supervisor find -- and end -- exactly that Ray's processes
RAY_TEMP_DIR_ENV = "SWEEPER_RAY_TEMP_DIR"
CacheVia = Literal["auto", "path", "object_store"]
#: above this, the object-store route for the cache gets a warning (README: storage choices)
OBJECT_STORE_CACHE_WARN_BYTES = 2 * 1024**3
logger = logging.getLogger(__name__)


def _init_ray(address: str | None) -> bool:
    """Connects to ``address`` or starts a private local Ray; returns whether this call initialised Ray.

    A driver that connected to an existing cluster only disconnects at the end (``ray.shutdown()``
    in a connected driver never stops the cluster); a local Ray it started ends with it.
    """
    import ray

    if ray.is_initialized():
        return False
    env = {"NO_ALBUMENTATIONS_UPDATE": "1"}
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _use_token_like_ray_start()
        ray.init(address=address, runtime_env={"env_vars": env})
    else:
        # "local": start a new instance even when /tmp/ray names someone else's `ray start` cluster
        temp_dir = os.environ.get(RAY_TEMP_DIR_ENV) or None
        ray.init(address="local", include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=True,
                 _temp_dir=temp_dir)
    return True


def _use_token_like_ray_start() -> None:
    """Sends this machine's Ray auth token when connecting, as `ray start` does.

    Ray 2.60's `ray start` turns token authentication on by itself when a token exists
    (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN[_PATH]``), but a driver connecting with
    ``ray.init(address=...)`` only sends it when ``RAY_AUTH_MODE=token`` is set, and is refused
    with "InvalidAuthToken". An explicit ``RAY_AUTH_MODE`` is left as it is.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: nothing to mirror
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _tracking_uri(spec: SweepSpec, paths: SweepPaths) -> tuple[str, str | None]:
    """Returns (tracking URI, artifact location for a new experiment): the spec's server, else
    ``$MLFLOW_TRACKING_URI`` (set on a cluster head by cluster.yaml), else ``RESULTS/mlflow.db``."""
    from sweeper.tracking import artifact_root, default_tracking_uri

    uri = spec.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri:
        return uri, None
    return default_tracking_uri(paths.results), f"{artifact_root(paths.results)}/{spec.name}"


def _resolve_cache_via(cache_via: CacheVia, paths: SweepPaths) -> str:
    if cache_via == "auto":
        return "object_store" if paths.storage_uri else "path"
    if cache_via not in ("path", "object_store"):
        raise ValueError(f"cache_via must be auto, path or object_store, not {cache_via!r}")
    return cache_via


def pack_cache(cache_dir: Path) -> tuple[str, bytes]:
    """Returns (key, tar bytes) of a prepared cache; the key changes when the cache does."""
    cache_dir = Path(cache_dir)
    key = hashlib.sha1((cache_dir / "cache.json").read_bytes()).hexdigest()[:16]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(cache_dir, arcname=".")
    return key, buffer.getvalue()


def unpack_cache(key: str, blob: bytes, root: str | Path | None = None) -> Path:
    """Unpacks a :func:`pack_cache` blob once per node (``<tmp>/sweeper-cache/<key>``); returns the folder.

    Concurrent trials on one node race safely: each unpacks to its own folder and renames it into
    place; the loser discards its copy.
    """
    root = Path(root or tempfile.gettempdir()) / "sweeper-cache"
    target = root / key
    if (target / "cache.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(staging, filter="data")
    try:
        os.rename(staging, target)
    except OSError:  # another trial on this node got there first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def train_fold_from_object_store(config: dict[str, Any], cache: tuple[str, bytes] | None = None) -> None:
    """Tune trainable for storage without a shared path: unpacks the cache Ray's object store
    delivered (``tune.with_parameters``) on this node, then runs :func:`trainables.train.train_fold`."""
    from trainables.train import train_fold

    key, blob = cache
    train_fold({**config, "cache_dir": str(unpack_cache(key, blob))})


#: Cloud credentials that Ray Tune copies from the driver's environment into every trial actor's
#: runtime_env (``ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE``), where Ray's runtime-env
#: agent writes them in clear to its log. Trial workers do not need the copy: on a local Ray they
#: inherit the driver's environment through the raylet it started, and cluster nodes take theirs from
#: the instance role (cluster.yaml).
CREDENTIAL_ENV_VARS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN",
                                 "AWS_SESSION_TOKEN"})


def _keep_credentials_out_of_ray_logs() -> None:
    """Stops Ray Tune from putting :data:`CREDENTIAL_ENV_VARS` into trial runtime_envs (and so into
    Ray's logs); a no-op where a Ray release no longer has that list."""
    from ray.tune.execution import class_cache

    propagated = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if propagated is not None:
        class_cache.ENV_VARS_TO_PROPAGATE = set(propagated) - CREDENTIAL_ENV_VARS


def _trainable(spec: SweepSpec, cache_dir: Path, cache_via: str):
    """Returns the fold trainable with the spec's resources (CPUs, fractional GPUs) attached."""
    from ray import tune

    from trainables.train import train_fold

    _keep_credentials_out_of_ray_logs()

    if cache_via == "object_store":
        packed = pack_cache(cache_dir)
        if len(packed[1]) > OBJECT_STORE_CACHE_WARN_BYTES:
            logger.warning("the data cache is %.1f GB; through Ray's object store it is held in the driver's memory "
                           "and copied to every node: a path every node mounts (NFS/EFS, --storage /mnt/...) "
                           "serves a cache this size better", len(packed[1]) / 1e9)
        fn = tune.with_parameters(train_fold_from_object_store, cache=packed)
    else:
        fn = train_fold
    return tune.with_resources(fn, {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial})


def tune_config(spec: SweepSpec, searcher):
    """Returns the TuneConfig: our searcher, unbounded samples, the spec's concurrency cap.

    ``resources.reuse_actors`` (default on): a fold trial that ends hands its worker process (torch,
    smp and the data cache already imported and mapped) to the next trial with the same resources
    instead of Ray starting a new one: `benchmarks/sweep_overhead.py` measured 2.14x -> 1.12x of the
    ideal wall time for 32 trials of 3 s. Nothing carries over between trials: `train_fold` seeds,
    builds its model, loader and optimiser afresh, and a killed worker is replaced as before. A
    pending trial takes whichever worker is free first, so a short trial may run where an earlier one
    ended rather than on a node whose new worker is still starting.
    """
    from ray import tune

    return tune.TuneConfig(search_alg=searcher, num_samples=-1,
                           max_concurrent_trials=spec.resources.max_concurrent,
                           reuse_actors=spec.resources.reuse_actors,
                           trial_name_creator=trial_name, trial_dirname_creator=trial_name)


def launch(spec: SweepSpec, results: str | Path = "results", *, resume: bool = False,
           address: str | None = None, storage: str | None = None, cache_via: CacheVia = "auto",
           callbacks: list | None = None) -> SweepPaths:
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

    Raises:
        SweepExistsError: the sweep folder holds a sweep and ``resume`` is false.
        sweeper.tracking.TrackingUnreachableError: the MLflow server (``tracking.uri`` or
            ``$MLFLOW_TRACKING_URI``) does not answer at launch (raised before anything is written or Ray
            starts), or stayed down through the end of the sweep (README "When things break").
    """
    if address and address.startswith("ray://"):
        return _launch_through_client(spec, results, resume=resume, address=address, storage=storage,
                                      cache_via=cache_via)
    from ray import tune

    from sweeper.leaderboard import LeaderboardWriter
    from sweeper.progress import ProgressPrinter
    from sweeper.search import FoldSearcher
    from sweeper.tracking import MlflowTracker, TrackingUnreachableError, check_tracking_server

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    paths = SweepPaths.of(spec, results, storage)
    check_local_resources(spec, address)
    check_writable(paths)
    started = paths.tune_started()
    if started and not resume:
        raise SweepExistsError(
            f"{paths.sweep} already holds sweep {spec.name!r}: pass --resume to continue it, or change `name` "
            "in the spec (or --results) to start a new one"
        )
    tracking_uri, artifact_location = _tracking_uri(spec, paths)
    check_disk_space(spec, paths, local_mlflow=artifact_location is not None)
    check_tracking_server(tracking_uri)  # an unreachable MLflow server fails here: nothing written, no Ray
    paths.sweep.mkdir(parents=True, exist_ok=True)
    if not paths.spec_file.exists():
        paths.spec_file.write_text(dump_spec(spec))

    try:
        cache_dir = prepare_data(spec, paths)
    except (OSError, ValueError, KeyError) as err:  # a data set problem, named by the reader: before Ray starts
        raise BadInputError(f"data ({spec.data.format} at {spec.data.root or paths.data}): "
                            f"{str(err).strip(chr(34))}") from err
    folds = spec.data.folds_to_run
    started_ray = _init_ray(address)
    try:
        trainable = _trainable(spec, cache_dir, _resolve_cache_via(cache_via, paths))
        if started and tune.Tuner.can_restore(paths.tune_path):
            tuner = tune.Tuner.restore(paths.tune_path, trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
            if callbacks:  # restored callbacks come from the saved experiment; add this run's extra ones
                tuner._local_tuner._run_config.callbacks = [*(tuner._local_tuner._run_config.callbacks or []),
                                                            *callbacks]
        else:
            searcher = FoldSearcher(spec, paths.optuna_storage, base_trial_config(spec, cache_dir))
            tracker = MlflowTracker(tracking_uri, spec.name, artifact_location, paths.spec_file, len(folds))
            tuner = tune.Tuner(
                trainable,
                tune_config=tune_config(spec, searcher),
                run_config=tune.RunConfig(
                    name=TUNE_NAME,
                    storage_path=paths.tune_storage,
                    callbacks=[tracker, LeaderboardWriter(paths.sweep), ProgressPrinter(planned_folds(spec)),
                               *(callbacks or [])],
                    failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    verbose=0,  # ProgressPrinter prints one line per ended trial instead of Tune's tables
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
    export_all_fronts(paths.sweep, spec)
    if unwritten is not None:
        raise unwritten
    return paths


#: the resource only a Ray head node has (Ray's own HEAD_NODE_RESOURCE_NAME, whose private module
#: moved between releases: ray._private.ray_constants, then ray._common.constants)
HEAD_NODE_RESOURCE = "node:__internal_head__"


def _launch_on_head(spec: SweepSpec, results: str, resume: bool, storage: str | None,
                    cache_via: CacheVia) -> tuple[SweepPaths, dict[str, bytes]]:
    """Runs :func:`launch` inside the cluster (a task on the head node); returns the paths there and
    the bytes of the leaderboard and Pareto files, for a client whose disk does not hold them."""
    paths = launch(spec, results, resume=resume, storage=storage, cache_via=cache_via)
    files = {}
    for folder in (paths.leaderboard, paths.pareto):
        for path in sorted(folder.glob("*")):
            if path.is_file():
                files[path.relative_to(paths.sweep).as_posix()] = path.read_bytes()
    return paths, files


def _launch_through_client(spec: SweepSpec, results: str | Path, *, resume: bool, address: str,
                           storage: str | None, cache_via: CacheVia) -> SweepPaths:
    """Ray Client (``ray://``): the Tune driver, the data preparation and the MLflow/leaderboard
    callbacks must run inside the cluster, where the paths are; so the whole launch runs as one task
    on the head node (Sweeper must be installed there, as cluster.yaml does). ``results`` and
    ``storage`` are paths on the head (relative ones from the folder `ray start` ran in there); the
    Optuna study, Tune's state and MLflow stay there. The leaderboard and Pareto files are also
    written under ``results`` as this machine resolves it, unless this machine already sees them
    there (same machine, or a shared disk at the same path); the returned paths are those that hold
    them here. The Ray auth token is sent as for ``HOST:6379`` (:func:`_use_token_like_ray_start`);
    without it a token-auth cluster answers only "ray client connection timeout"."""
    import ray

    _use_token_like_ray_start()
    ray.init(address=address, runtime_env={"env_vars": {"NO_ALBUMENTATIONS_UPDATE": "1"}})
    try:
        remote = ray.remote(num_cpus=0, resources={HEAD_NODE_RESOURCE: 0.001}, max_retries=0)(_launch_on_head)
        try:
            head_paths, files = ray.get(remote.remote(spec, str(results), resume, storage, cache_via))
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, SweepExistsError):
                raise err.cause from None  # the user's mistake, said as for a local launch, no remote traceback
            raise
    finally:
        ray.shutdown()  # disconnects the client; the cluster keeps running
    if SweepPaths.of(spec, results, storage).sweep == head_paths.sweep and all(
            (head_paths.sweep / rel).is_file() and (head_paths.sweep / rel).read_bytes() == data
            for rel, data in files.items()):
        return head_paths  # this machine sees the head's sweep folder where it asked for it
    local = SweepPaths.of(spec, results, storage if storage and is_uri(storage) else None)
    for rel, data in files.items():
        target = local.sweep / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return local


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
