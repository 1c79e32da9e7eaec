"""Starting or joining Ray for a sweep, the Ray Client relay to the head, and the credential guard.

Ray: ``address`` None starts a private local Ray (never joins a cluster found in /tmp/ray, unless
``RAY_ADDRESS`` is set, as inside ``ray job submit``); ``auto`` or ``HOST:6379`` connects as a
driver (:func:`start_or_join_ray`); ``ray://HOST:10001`` (Ray Client) runs the whole launch as a
task on the head node, so ``--results``/``--storage`` name paths on the head, and the leaderboard
and Pareto files are copied back under ``--results`` on the client (:func:`launch_through_client`).
The driver only disconnects from a cluster it did not start. ``SWEEPER_RAY_TEMP_DIR``
(:data:`RAY_TEMP_DIR_ENV`) sets the temp folder of a local Ray the driver starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sweeper.paths import SweepPaths

if TYPE_CHECKING:
    from sweeper.cache_transport import CacheVia
    from sweeper.spec import SweepSpec

#: environment variable naming the temp folder of a local Ray started by the driver (its sockets,
#: logs and session files); lets a supervisor find -- and end -- exactly that Ray's processes
RAY_TEMP_DIR_ENV = "SWEEPER_RAY_TEMP_DIR"
#: environment of every Ray worker of the sweep (Albumentations' update check stays off the network)
WORKER_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1"}
#: the resource only a Ray head node has (Ray's own HEAD_NODE_RESOURCE_NAME, whose private module
#: moved between releases: ray._private.ray_constants, then ray._common.constants)
HEAD_NODE_RESOURCE = "node:__internal_head__"
#: Cloud credentials that Ray Tune copies from the driver's environment into every trial actor's
#: runtime_env (``ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE``), where Ray's runtime-env
#: agent writes them in clear to its log. Trial workers do not need the copy: on a local Ray they
#: inherit the driver's environment through the raylet it started, and cluster nodes take theirs from
#: the instance role (cluster.yaml).
CREDENTIAL_ENV_VARS = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"}
)


def start_or_join_ray(address: str | None) -> bool:
    """Connects to ``address`` or starts a private local Ray; returns whether this call initialised Ray.

    A driver that connected to an existing cluster only disconnects at the end (``ray.shutdown()``
    in a connected driver never stops the cluster); a local Ray it started ends with it.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        use_token_like_ray_start()
        ray.init(address=address, runtime_env={"env_vars": dict(WORKER_ENV)})
    else:
        # "local": start a new instance even when /tmp/ray names someone else's `ray start` cluster
        temp_dir = os.environ.get(RAY_TEMP_DIR_ENV) or None
        ray.init(
            address="local",
            include_dashboard=False,
            runtime_env={"env_vars": dict(WORKER_ENV)},
            log_to_driver=True,
            _temp_dir=temp_dir,
        )
    return True


def use_token_like_ray_start() -> None:
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


def keep_credentials_out_of_ray_logs() -> None:
    """Stops Ray Tune from putting :data:`CREDENTIAL_ENV_VARS` into trial runtime_envs (and so into
    Ray's logs); a no-op where a Ray release no longer has that list."""
    from ray.tune.execution import class_cache

    propagated = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if propagated is not None:
        class_cache.ENV_VARS_TO_PROPAGATE = set(propagated) - CREDENTIAL_ENV_VARS


def launch_on_head(
    spec: SweepSpec, results: str, resume: bool, storage: str | None, cache_via: CacheVia
) -> tuple[SweepPaths, dict[str, bytes]]:
    """Runs :func:`sweeper.launch.launch` inside the cluster (a task on the head node); returns the paths
    there and the bytes of the leaderboard and Pareto files, for a client whose disk does not hold them."""
    from sweeper.launch import launch

    paths = launch(spec, results, resume=resume, storage=storage, cache_via=cache_via)
    files = {}
    for folder in (paths.leaderboard, paths.pareto):
        for path in sorted(folder.rglob("*")):  # rglob: the case records are a folder of one file per fold trial
            if path.is_file() and not path.name.startswith("."):
                files[path.relative_to(paths.sweep).as_posix()] = path.read_bytes()
    return paths, files


def launch_through_client(
    spec: SweepSpec, results: str | Path, *, resume: bool, address: str, storage: str | None, cache_via: CacheVia
) -> SweepPaths:
    """Ray Client (``ray://``): the Tune driver, the data preparation and the MLflow/leaderboard
    callbacks must run inside the cluster, where the paths are; so the whole launch runs as one task
    on the head node (Sweeper must be installed there, as cluster.yaml does). ``results`` and
    ``storage`` are paths on the head (relative ones from the folder `ray start` ran in there); the
    Optuna study, Tune's state and MLflow stay there. The leaderboard and Pareto files are also
    written under ``results`` as this machine resolves it, unless this machine already sees them
    there (same machine, or a shared disk at the same path); the returned paths are those that hold
    them here. The Ray auth token is sent as for ``HOST:6379`` (:func:`use_token_like_ray_start`);
    without it a token-auth cluster answers only "ray client connection timeout"."""
    import ray

    from sweeper.launch import SweepExistsError
    from sweeper.spec import is_uri

    use_token_like_ray_start()
    ray.init(address=address, runtime_env={"env_vars": dict(WORKER_ENV)})
    try:
        remote = ray.remote(num_cpus=0, resources={HEAD_NODE_RESOURCE: 0.001}, max_retries=0)(launch_on_head)
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
        for rel, data in files.items()
    ):
        return head_paths  # this machine sees the head's sweep folder where it asked for it
    local = SweepPaths.of(spec, results, storage if storage and is_uri(storage) else None)
    for rel, data in files.items():
        target = local.sweep / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return local
