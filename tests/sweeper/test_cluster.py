"""The cluster: cluster.yaml against Ray's own autoscaler schema (offline), and a real two-node Ray
cluster on this machine (two `ray start` processes, own temp dirs and ports on 127.0.0.1, stopped
by their pids only) running a sweep whose trials land on both nodes, and `sweeper launch --address
ray://...` through a real head's Ray Client server.

The helpers here (:class:`RayNode`, :func:`tiny_spec`, :func:`process_tree`) are shared with
test_faults.py.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from ray.tune import Callback

from sweeper.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
SWEEPER = str(Path(sys.executable).with_name("sweeper"))
CLASSES = ["large_bowel", "small_bowel", "stomach"]


# -- helpers (also used by test_faults.py) ------------------------------------------------------------
def tiny_spec(name: str = "tiny", *, budget: int = 1, epochs: int = 2, **resources) -> object:
    """A sweep of a few seconds per trial: synthetic data, 32 px, 2 folds, 2 batches per epoch."""
    return parse_spec(
        {
            "name": name,
            "data": {
                "format": "synthetic",
                "folds": 2,
                "image_size": 32,
                "augmentation": "none",
                "synthetic": {"cases": 4, "slices_per_scan": 8, "image_size": 32, "seed": 3},
            },
            "model": {"architectures": ["unet"], "encoders": ["resnet18"]},
            "losses": [{"name": "dice"}, {"name": "tversky", "params": {"alpha": "search"}}],
            "training": {"epochs": epochs, "batch_size": 8, "max_train_batches": 2, "lr": 1e-3},
            "search": {"budget": budget, "sampler": "random", "seed": 1},
            "resources": {"cpus_per_trial": 1, **resources},
        }
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def process_tree(root: int) -> list[int]:
    """Returns ``root`` and every live descendant (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _ppid(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def pids_mentioning(text: str) -> list[int]:
    """Returns the pids whose command line contains ``text`` (e.g. a private Ray temp dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry))
    return found


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class RayNode:
    """One Ray node started as `ray start --block` (a child of this process) with its own temp dir
    and ports on 127.0.0.1; :meth:`kill` SIGKILLs exactly its process tree, never `ray stop`.
    A head also serves Ray Client on its own free port (:attr:`client_address`, ``ray://...``; left
    unset, `ray start` would take 10001, which another Ray on the machine may hold). ``cwd`` is the
    folder `ray start`, and so the node's workers, run in."""

    def __init__(
        self,
        *,
        head_address: str | None = None,
        num_cpus: int = 1,
        resources: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ):
        self.temp_dir = tempfile.mkdtemp(prefix="swray", dir="/tmp")  # short: unix socket paths
        self.port = free_port()
        cmd = [
            RAY,
            "start",
            "--block",
            "--temp-dir",
            self.temp_dir,
            "--node-ip-address",
            "127.0.0.1",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            "--disable-usage-stats",
            "--object-store-memory",
            str(150 * 1024**2),
            "--node-manager-port",
            str(free_port()),
            "--object-manager-port",
            str(free_port()),
            "--min-worker-port",
            "0",
            "--max-worker-port",
            "0",
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--dashboard-agent-grpc-port",
            str(free_port()),
            "--runtime-env-agent-port",
            str(free_port()),
            "--metrics-export-port",
            str(free_port()),
        ]
        if head_address is None:
            cmd += [
                "--head",
                "--port",
                str(self.port),
                "--include-dashboard=false",
                "--dashboard-port",
                str(free_port()),
            ]
            client_port = free_port()
            cmd += ["--ray-client-server-port", str(client_port)]
            self.address = f"127.0.0.1:{self.port}"
            self.client_address = f"ray://127.0.0.1:{client_port}"
        else:
            cmd += ["--address", head_address]
            self.address = head_address
            if "RAY_AUTH_MODE" not in os.environ and (
                (Path.home() / ".ray" / "auth_token").is_file() or os.environ.get("RAY_AUTH_TOKEN")
            ):
                # a head `ray start` turns token auth on by itself when a token exists; a joining node doesn't
                env = {"RAY_AUTH_MODE": "token", **(env or {})}
        if resources:
            cmd += ["--resources", resources]
        self.log = open(Path(self.temp_dir) / "ray-start.log", "wb")
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
            env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", **(env or {})},
        )

    def pids(self) -> list[int]:
        """This node's processes: the `ray start` process and everything below it (raylet, workers, ...)."""
        return process_tree(self.proc.pid) + [p for p in pids_mentioning(self.temp_dir) if p != self.proc.pid]

    def kill(self) -> None:
        for _ in range(3):  # a worker forked while we kill is caught by the next round
            pids = sorted(set(self.pids()))
            if not pids or self.proc.poll() is not None and len(pids) <= 1:
                break
            kill_pids(pids)
            time.sleep(0.3)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def log_text(self) -> str:
        return (Path(self.temp_dir) / "ray-start.log").read_text(errors="replace")[-3000:]


def wait_for_nodes(address: str, count: int, timeout: float = 90) -> None:
    """Blocks until ``count`` nodes are alive in the cluster at ``address`` (connects, then disconnects)."""
    import ray

    from sweeper.ray_session import use_token_like_ray_start

    use_token_like_ray_start()  # the nodes use ~/.ray/auth_token when it exists, as `ray start` does
    ray.init(address=address, log_to_driver=False)
    try:
        deadline = time.monotonic() + timeout
        while sum(n["Alive"] for n in ray.nodes()) < count:
            assert time.monotonic() < deadline, f"only {sum(n['Alive'] for n in ray.nodes())} of {count} nodes up"
            time.sleep(0.5)
    finally:
        ray.shutdown()


@contextlib.contextmanager
def running_cluster(*workers: dict, **head_options):
    """Starts a head (``RayNode(**head_options)``) and one worker per dict of RayNode options, waits
    until all are up and yields ``[head, *workers]``; kills every node by pid at the end."""
    head = RayNode(**head_options)
    nodes = [head]
    try:
        nodes += [RayNode(head_address=head.address, **options) for options in workers]
        try:
            wait_for_nodes(head.address, len(nodes))
        except AssertionError:
            logs = "\n".join(node.log_text() for node in nodes)
            raise AssertionError(f"cluster did not come up:\n{logs}") from None
        yield nodes
    finally:
        for node in reversed(nodes):
            node.cleanup()


def assert_sweep_done(spec, sweep_dir: Path, paths) -> None:
    """One configuration x 2 folds finished: trials/configs.parquet and the Pareto front under
    ``sweep_dir``; the Optuna study and MLflow runs in the folders ``paths`` (SweepPaths) name."""
    import optuna
    from mlflow import MlflowClient

    from sweeper.leaderboard import IDENTITY_COLUMNS, read_configs, read_trials
    from sweeper.tracking import LEVEL_TAG, default_tracking_uri

    trials, configs = read_trials(sweep_dir), read_configs(sweep_dir)
    assert list(trials.columns[: len(IDENTITY_COLUMNS)]) == IDENTITY_COLUMNS
    assert len(trials) == 2 and (trials["status"] == "finished").all() and set(trials["fold"]) == {0, 1}
    assert {"dice", "sensitivity", "precision"} | {f"precision.{c}" for c in CLASSES} <= set(trials.columns)
    assert len(configs) == 1 and configs["n_folds"].tolist() == [2]
    assert (sweep_dir / "pareto" / "pareto.csv").is_file()
    study = optuna.load_study(study_name=spec.name, storage=paths.optuna_storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
    client = MlflowClient(default_tracking_uri(paths.results))
    runs = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id])
    assert sorted(r.data.tags[LEVEL_TAG] for r in runs) == ["config", "fold", "fold", "sweep"]
    assert all(r.info.status == "FINISHED" for r in runs)


class TrialWatcher(Callback):
    """A Tune callback (driver side) recording each trial's results as they arrive, and calling
    ``on_result(trial, result)`` (Tune adds the trial worker's ``pid`` to every result)."""

    def __init__(self, on_result=None):
        self.results: dict[str, list[dict]] = {}
        self.on_result = on_result

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results.setdefault(trial.trial_id, []).append(dict(result))
        if self.on_result is not None:
            self.on_result(trial, result)

    def __getstate__(self):  # Tune pickles callbacks with the experiment state
        return {"results": {}, "on_result": None}


# -- cluster.yaml -------------------------------------------------------------------------------------
def _cluster_config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_own_autoscaler_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _cluster_config()
    prepared = prepare_config(copy.deepcopy(raw))  # merges Ray's AWS defaults, as `ray up` does (offline)
    validate_config(prepared)  # jsonschema against ray/autoscaler/ray-schema.json + checks
    assert raw["provider"]["type"] == "aws"
    head = raw["available_node_types"][raw["head_node_type"]]
    workers = [t for name, t in raw["available_node_types"].items() if name != raw["head_node_type"]]
    assert "GPU" not in head["resources"]
    assert head["node_config"]["InstanceType"].startswith(("m", "c", "r"))  # a CPU head
    [gpu] = workers
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p")) and gpu["max_workers"] >= gpu["min_workers"]
    assert "IamInstanceProfile" in gpu["node_config"]
    setup = " ".join(raw["setup_commands"])
    assert "scripts/bootstrap.sh" in setup and raw["file_mounts"]


def test_cluster_yaml_keeps_dashboard_and_mlflow_off_the_internet_and_holds_no_keys():
    raw = _cluster_config()
    text = (REPO / "cluster.yaml").read_text()
    head_start = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "mlflow server" in head_start and "--host $HEAD_IP" in head_start
    assert "0.0.0.0" not in text
    assert "IpPermissions" not in raw["provider"].get("security_group", {})  # only Ray's self + SSH rules
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|aws_access_key_id|ssh_private_key", text, re.I)


def test_a_broken_cluster_yaml_is_rejected_offline():
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = _cluster_config()
    broken["available_node_types"]["gpu_worker"]["min_wokers"] = 1  # typo: schema forbids unknown keys
    with pytest.raises(Exception, match="min_wokers"):
        validate_config(prepare_config(broken))


# -- a real two-node cluster --------------------------------------------------------------------------
@pytest.fixture
def two_nodes():
    with running_cluster({"num_cpus": 1, "resources": '{"second_node": 1}'}, num_cpus=1) as (head, worker):
        yield head, worker


@pytest.mark.slow
def test_sweep_on_an_existing_two_node_cluster_uses_both_nodes(two_nodes, tmp_path):
    from sweeper.cache_transport import pack_cache
    from sweeper.launch import launch

    head, worker = two_nodes
    placement: dict[str, set[str]] = {}

    def where(trial, result):
        pid = int(result["pid"])
        node = (
            "worker" if pid in process_tree(worker.proc.pid) else "head" if pid in process_tree(head.proc.pid) else "?"
        )
        placement.setdefault(trial.trial_id, set()).add(node)

    # a fresh worker per trial: with reuse_actors (the default) the second of two short fold trials may take
    # the first one's worker as it ends, before the other node's new worker has started (seen under load)
    spec = tiny_spec("two_nodes", budget=1, epochs=1, reuse_actors=False)
    # the cache travels through Ray's object store (the route for s3:// storage) and is unpacked per node
    paths = launch(
        spec,
        tmp_path / "results",
        address=head.address,
        storage=str(tmp_path / "shared"),
        cache_via="object_store",
        callbacks=[TrialWatcher(where)],
    )

    # both nodes ran a trial (1 CPU each, 2 concurrent fold trials)
    assert {n for nodes in placement.values() for n in nodes} == {"head", "worker"}, placement
    # the driver only disconnected: the cluster it did not start is still up
    assert head.proc.poll() is None and worker.proc.poll() is None
    wait_for_nodes(head.address, 2, timeout=10)

    # storage path: sweep folder, Tune storage, cache and leaderboard under --storage; MLflow under results
    assert paths.sweep == (tmp_path / "shared" / "two_nodes").resolve()
    assert (paths.sweep / "ray" / "tune").is_dir() and (paths.sweep / "cache" / "index.parquet").is_file()
    key, _ = pack_cache(paths.cache)
    assert (Path(tempfile.gettempdir()) / "sweeper-cache" / key / "cache.json").is_file()  # unpacked on the nodes
    # results identical in shape to a local run
    assert_sweep_done(spec, paths.sweep, paths)


@pytest.fixture
def client_head(tmp_path):
    """A one-node cluster (2 CPUs) whose head serves Ray Client; `ray start` runs in ``tmp_path/head``."""
    (tmp_path / "head").mkdir()
    with running_cluster(num_cpus=2, cwd=tmp_path / "head") as (head,):
        yield head


@pytest.mark.slow
def test_sweeper_launch_through_ray_client_runs_on_the_head_and_returns_the_results(client_head, tmp_path):
    from sweeper.paths import SweepPaths
    from sweeper.spec import dump_spec

    head, client = client_head, tmp_path / "client"
    client.mkdir()
    spec = tiny_spec("via_client", budget=1, epochs=1)
    (client / "spec.yaml").write_text(dump_spec(spec))
    env = dict(os.environ)
    if env.get("RAY_AUTH_MODE") == "token":
        del env["RAY_AUTH_MODE"]  # set in this process by wait_for_nodes; a user's shell has the token file only

    # --results is relative: the head resolves it in its own folder, the client in its own
    command = [SWEEPER, "launch", "spec.yaml", "--results", "results", "--address", head.client_address]
    run = subprocess.run(command, cwd=client, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-5000:]}\n{head.log_text()}"
    assert "Sweep 'via_client' done: 1 configurations, 0 failed fold trials." in run.stdout

    # the sweep ran on the head: Tune's state, the Optuna study and MLflow are in the head's folder
    on_head = SweepPaths.of(spec, tmp_path / "head" / "results")
    assert on_head.tune_dir.is_dir() and (on_head.results / "mlflow.db").is_file()
    # the leaderboard and the Pareto files were copied to the client's --results, and only they
    on_client = client / "results" / "via_client"
    assert sorted(p.name for p in on_client.iterdir()) == ["leaderboard", "pareto"]
    for rel in ("leaderboard/trials.parquet", "leaderboard/configs.parquet", "pareto/pareto.csv"):
        assert (on_client / rel).read_bytes() == (on_head.sweep / rel).read_bytes(), rel
    assert_sweep_done(spec, on_client, on_head)
    assert head.proc.poll() is None  # the client only disconnected: the cluster is still up
