"""Bad input beyond the spec file: command-line arguments, resume, two launches into one folder, the tracking store.

Each refusal is checked as in ``test_bad_input.py``: the exit code or the error, the argument, field or folder named
with the fix, no Ray started, and nothing already in the sweep folder lost. The README's "Bad input" table lists
every case (grouped).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import ray
import yaml
from click.testing import CliRunner
from test_bad_input import SMALL_SPEC

from sweeper.cli import main, pareto_csv
from sweeper.launch import launch
from sweeper.paths import SweepPaths
from sweeper.preflight import SAFE_ON_RESUME, BadInputError, check_resume_spec
from sweeper.spec import dump_spec, parse_spec
from sweeper.sweep_lock import OWNER_FILE, SweepLockedError, sweep_lock

SPEC = SMALL_SPEC


def _spec(**changes):
    raw = json.loads(json.dumps(SPEC))
    for section, values in changes.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return parse_spec(raw)


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory) -> Path:
    """A finished sweep's folder: frozen spec and a leaderboard of 2 configurations x 2 folds."""
    import pandas as pd

    from sweeper.leaderboard import FINISHED, trial_row, write_leaderboard
    from sweeper.trial_config import trial_settings
    from trainables.contract import Configuration

    sweep = tmp_path_factory.mktemp("results") / "small"
    sweep.mkdir()
    spec = _spec(losses=[{"name": "dice"}, {"name": "tversky"}])
    (sweep / "spec.yaml").write_text(dump_spec(spec))
    settings = trial_settings(spec, sweep / "cache")
    rows = []
    for cid, loss, score in (("aaaa111111", "dice", 0.8), ("bbbb222222", "tversky", 0.6)):
        for fold in (0, 1):
            config = settings.for_fold(
                Configuration(arch="unet", encoder="mit_b2", loss=loss), config_id=cid, fold=fold
            )
            result = {"epoch": 1, "best_epoch": 1, "time_total_s": 5.0, "timestamp": 1_700_000_000 + fold}
            result.update({f"best.{m}": score + fold / 100 for m in ("dice", "sensitivity", "precision")})
            rows.append(trial_row(config, result, FINISHED))
    write_leaderboard(pd.DataFrame(rows), sweep)
    return sweep


@pytest.fixture
def busy_port():
    """A port some other server listens on."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


# --- the command line: every argument checked before anything runs -------------------------------------
#: (test id, arguments ({sweep} a finished sweep, {tmp} a scratch folder, {port} a port in use), expected text)
COMMAND_CASES = [
    ("ui_port_out_of_range", ["ui", "--results", "{sweep}/..", "--port", "99999"], ("--port", "99999 is not in")),
    ("ui_port_zero", ["ui", "--results", "{sweep}/..", "--port", "0"], ("--port", "0 is not in the range")),
    (
        "ui_port_in_use",
        ["ui", "--results", "{tmp}", "--port", "{port}"],
        ("--port {port}: cannot listen", "already in use", "pass another --port"),
    ),
    ("leaderboard_top_negative", ["leaderboard", "{sweep}", "--top", "-1"], ("--top", "-1 is not in the range x>=1")),
    ("leaderboard_top_zero", ["leaderboard", "{sweep}", "--top", "0"], ("--top", "0 is not in the range x>=1")),
    (
        "leaderboard_of_a_folder_without_sweep",
        ["leaderboard", "{tmp}/empty"],
        ("configs.parquet not found", "a sweep folder"),
    ),
    (
        "pareto_out_unknown_suffix",
        ["pareto", "{sweep}", "--out", "{tmp}/front.txt"],
        ("--out", ".txt is not a file the front is written as", ".csv, .parquet, .png, .svg, .json"),
    ),
    ("pareto_out_is_a_folder", ["pareto", "{sweep}", "--out", "{tmp}"], ("--out", "is a directory")),
    (
        "pareto_floor_above_one",
        ["pareto", "{sweep}", "--min-sensitivity", "1.5"],
        ("--min-sensitivity", "1.5 is not in the range"),
    ),
    ("pareto_both_floors", ["pareto", "{sweep}", "--min-sensitivity", "0.1", "--min-precision", "0.1"], ("not both",)),
    ("pareto_unknown_class", ["pareto", "{sweep}", "--class", "liver"], ("liver",)),
    ("compare_unknown_configuration", ["compare", "{sweep}", "zzzz", "aaaa"], ("zzzz",)),
    (
        "compare_a_configuration_with_itself",
        ["compare", "{sweep}", "aaaa", "aaaa111111"],
        ("both name configuration aaaa111111", "give two different ones"),
    ),
    ("compare_one_configuration", ["compare", "{sweep}", "aaaa"], ("give a second configuration B",)),
    ("status_of_a_folder_without_sweep", ["status", "{tmp}/empty"], ("holds no spec.yaml", "a sweep folder")),
    ("report_of_a_folder_without_sweep", ["report", "{tmp}/empty"], ("trials.parquet not found", "a sweep folder")),
    ("sweep_folder_missing", ["status", "{tmp}/nothere"], ("does not exist",)),
    ("validate_a_folder", ["validate", "{tmp}"], ("is a folder", "give the spec's YAML file")),
    ("validate_missing_file", ["validate", "{tmp}/nothere.yaml"], ("no such file", "give the path of a spec")),
    (
        "validate_not_a_text_file",
        ["validate", "{tmp}/binary.yaml"],
        ("not a text file",),
    ),
    (
        "data_inspect_class_never_in_data",
        ["data", "inspect", "{tmp}/liver.yaml", "--results", "{tmp}/results"],
        ("data.classes: ['liver'] never appear in the data set", "remove them from data.classes"),
    ),
    (
        "launch_bad_address",
        ["launch", "{tmp}/spec.yaml", "--results", "{tmp}/results", "--address", "foo"],
        ("--address 'foo' is not a Ray address", "ray://HOST:10001"),
    ),
    (
        "launch_address_without_port",
        ["launch", "{tmp}/spec.yaml", "--results", "{tmp}/results", "--address", "head:"],
        ("--address 'head:' is not a Ray address",),
    ),
]


@pytest.mark.parametrize(("args", "expect"), [c[1:] for c in COMMAND_CASES], ids=[c[0] for c in COMMAND_CASES])
def test_bad_command_line_is_refused_with_the_argument_and_the_fix(args, expect, small_sweep, tmp_path, busy_port):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81")
    (tmp_path / "empty").mkdir()
    liver = {**SPEC, "data": {**SPEC["data"], "classes": ["stomach", "liver"]}}
    (tmp_path / "liver.yaml").write_text(yaml.safe_dump(liver))
    before = sorted(p.relative_to(small_sweep) for p in small_sweep.rglob("*"))
    fill = {"sweep": str(small_sweep), "tmp": str(tmp_path), "port": str(busy_port)}
    (tmp_path / "mlflow.db").write_text("")

    done = CliRunner().invoke(main, [a.format(**fill) for a in args])

    assert done.exit_code != 0, done.output
    for text in expect:
        assert text.format(**fill) in done.output, f"{text!r} not in:\n{done.output}"
    assert "Traceback" not in done.output
    assert not ray.is_initialized()
    assert sorted(p.relative_to(small_sweep) for p in small_sweep.rglob("*")) == before, "the sweep folder changed"


def test_pareto_out_png_writes_every_file_with_its_stem_and_no_picture_over_a_csv(small_sweep, tmp_path):
    assert pareto_csv(tmp_path / "front.png") == tmp_path / "front.csv"
    assert pareto_csv(tmp_path / "front") == tmp_path / "front.csv"
    done = CliRunner().invoke(main, ["pareto", str(small_sweep), "--out", str(tmp_path / "front.png")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "front.csv").read_text().startswith("config_id")  # a CSV, not a PNG
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"


def test_ui_on_a_port_in_use_exits_at_once_without_serving(tmp_path, busy_port):
    """The process ends with an error instead of printing a URL and waiting forever."""
    (tmp_path / "mlflow.db").write_text("")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "ui", "--results", str(tmp_path), "--port", str(busy_port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "cannot listen" in done.stderr
    assert "MLflow UI on" not in done.stdout
    assert time.monotonic() - started < 60


# --- resume that cannot lie ------------------------------------------------------------------------------
def _started_sweep(results: Path, spec) -> SweepPaths:
    """A sweep folder as a launch that ran a trial leaves it: frozen spec, a Tune folder with one trial folder."""
    paths = SweepPaths.of(spec, results)
    (paths.tune_dir / "dice-aaaa-fold0-x").mkdir(parents=True)
    paths.spec_file.write_text(dump_spec(spec))
    return paths


@pytest.mark.parametrize(
    ("change", "listed"),
    [
        ({"training": {"epochs": 3}}, "training.epochs: 1 -> 3"),
        ({"losses": [{"name": "dice"}, {"name": "tversky"}]}, "losses"),
        ({"search": {"budget": 4}}, "search.budget: 1 -> 4"),
        ({"data": {"folds": 3}}, "data.folds: 2 -> 3"),
    ],
    ids=["epochs_changed", "loss_added", "budget_changed", "folds_changed"],
)
def test_resume_with_a_changed_spec_is_refused_listing_the_changes(change, listed, tmp_path):
    paths = _started_sweep(tmp_path / "results", _spec())
    frozen = paths.spec_file.read_text()

    with pytest.raises(BadInputError) as info:
        launch(_spec(**change), tmp_path / "results", resume=True)

    message = str(info.value)
    for text in ("--resume: the spec differs", listed, "a new `name`", "--force-spec"):
        assert text in message, message
    assert not ray.is_initialized()
    assert paths.spec_file.read_text() == frozen and (paths.tune_dir / "dice-aaaa-fold0-x").is_dir()


def test_force_spec_accepts_only_the_documented_safe_changes(tmp_path):
    paths = _started_sweep(tmp_path / "results", _spec())
    assert check_resume_spec(_spec(), paths) == []  # unchanged: resumes
    more_cpus = _spec(resources={"cpus_per_trial": 2})
    with pytest.raises(BadInputError, match="only resources.cpus_per_trial"):
        check_resume_spec(more_cpus, paths)
    assert check_resume_spec(more_cpus, paths, force_spec=True) == ["resources.cpus_per_trial: 1.0 -> 2.0"]
    with pytest.raises(BadInputError, match="training.epochs: 1 -> 2"):
        check_resume_spec(_spec(training={"epochs": 2}, resources={"cpus_per_trial": 2}), paths, force_spec=True)
    assert set(SAFE_ON_RESUME) == {"resources.cpus_per_trial", "resources.gpus_per_trial"}


class _RayWouldStart(Exception):
    pass


@pytest.mark.parametrize("resume", [False, True], ids=["clean_launch", "resume"])
def test_a_launch_that_failed_before_its_first_trial_does_not_block_the_next(resume, tmp_path, monkeypatch):
    """Its Tune folder (no trial in it), Optuna study and frozen spec are cleared; the new spec is frozen."""
    import sweeper.launch

    old = _spec(training={"epochs": 5})
    paths = SweepPaths.of(old, tmp_path / "results")
    paths.tune_dir.mkdir(parents=True)
    (paths.tune_dir / "tuner.pkl").write_bytes(b"state of a launch that failed")
    paths.optuna_db.write_bytes(b"a study without trials")
    paths.spec_file.write_text(dump_spec(old))

    def no_ray(address):
        raise _RayWouldStart

    monkeypatch.setattr(sweeper.launch, "start_or_join_ray", no_ray)
    new = _spec()
    with pytest.raises(_RayWouldStart):  # neither SweepExistsError nor "the spec differs"
        launch(new, tmp_path / "results", resume=resume)
    assert not paths.tune_dir.exists() and not paths.optuna_db.exists()
    assert paths.spec_file.read_text() == dump_spec(new)


# --- one sweep per folder --------------------------------------------------------------------------------
HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from sweeper.paths import SweepPaths
    from sweeper.sweep_lock import sweep_lock
    with sweep_lock(SweepPaths.at(sys.argv[1])):
        print("held", flush=True)
        time.sleep(300)
    """
)


def test_a_second_launch_into_a_busy_folder_is_refused_naming_the_first_and_a_killed_ones_lock_is_taken(tmp_path):
    spec = _spec()
    paths = SweepPaths.of(spec, tmp_path / "results")
    paths.sweep.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(paths.sweep)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(SweepLockedError) as info:
            launch(spec, tmp_path / "results")
        assert time.monotonic() - started < 30, "the second launch waited instead of being refused at once"
        message = str(info.value)
        for text in (str(paths.sweep), f"pid {holder.pid}", "one sweep per folder", "another `name`"):
            assert text in message, message
        assert not ray.is_initialized() and not paths.tune_dir.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with sweep_lock(paths):  # the killed driver's lock is not stale: the OS dropped it
        assert f"pid {os.getpid()}" in (paths.sweep / OWNER_FILE).read_text()
    assert not (paths.sweep / OWNER_FILE).exists()


# --- the local tracking store -----------------------------------------------------------------------------
def test_a_sqlite_tracking_store_keeps_its_artifacts_beside_it_and_the_disk_check_counts_them(tmp_path, monkeypatch):
    import sweeper.preflight
    from sweeper.launch import _tracking_uri

    store = tmp_path / "elsewhere" / "mlflow.db"
    spec = _spec(tracking={"uri": f"sqlite:///{store}"})
    paths = SweepPaths.of(spec, tmp_path / "results")
    uri, artifacts = _tracking_uri(spec, paths)
    assert uri == f"sqlite:///{store}"
    assert artifacts == f"{(store.parent / 'mlartifacts').as_uri()}/bad"

    asked = []
    real = sweeper.preflight._free_bytes
    monkeypatch.setattr(sweeper.preflight, "_free_bytes", lambda folder: asked.append(folder) or real(folder))
    monkeypatch.setattr(sweeper.preflight, "network_bytes", lambda *a, **k: 1)
    sweeper.preflight.check_disk_space(spec, paths, local_mlflow=True, mlflow_folder=store.parent)
    assert store.parent in asked and paths.results not in asked


def test_objective_direction_follows_the_metric_and_the_trial_agrees_which_are_lower_is_better():
    from sweeper.spec import LOWER_IS_BETTER
    from trainables.metrics import LOWER_IS_BETTER as TRIAL_LOWER_IS_BETTER

    assert LOWER_IS_BETTER == TRIAL_LOWER_IS_BETTER
    spec = _spec(search={"objectives": [{"metric": "hd95"}, {"metric": "mae.stomach"}, {"metric": "dice"}]})
    assert [o.direction for o in spec.search.objectives] == ["minimize", "minimize", "maximize"]


@pytest.mark.slow
def test_a_real_sweep_is_neither_cleared_by_a_relaunch_nor_resumed_under_a_changed_spec(tiny_sweep):
    """After a real (tiny) sweep, the session's shared one (tests/shared_sweep.py): a clean relaunch is refused
    and keeps every file; --resume with more epochs is refused listing the change, before Ray; --resume with the
    same spec ran nothing again."""
    from shared_sweep import SPEC as TINY

    from sweeper.launch import SweepExistsError
    from sweeper.leaderboard import read_trials

    spec, paths = tiny_sweep.spec, tiny_sweep.paths
    finished = tiny_sweep.trials_before_resume
    assert len(finished) == spec.planned_fold_trials() and paths.trials_started()
    files = sorted(p.relative_to(paths.sweep) for p in paths.sweep.rglob("*") if p.name not in ("launch.lock",))

    with pytest.raises(SweepExistsError):
        launch(spec, paths.results)
    raw = json.loads(json.dumps(TINY))
    raw["training"]["epochs"] += 1
    with pytest.raises(BadInputError, match=f"training.epochs: {spec.training.epochs} -> {spec.training.epochs + 1}"):
        launch(parse_spec(raw), paths.results, resume=True)
    assert not ray.is_initialized()
    assert sorted(p.relative_to(paths.sweep) for p in paths.sweep.rglob("*") if p.name != "launch.lock") == files

    assert read_trials(paths.sweep)[["config_id", "fold"]].equals(finished[["config_id", "fold"]])


def test_the_readme_bad_input_section_lists_every_case():
    from test_bad_input import CASES

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    ids = [c.id for c in CASES] + [c[0] for c in COMMAND_CASES]
    missing = [i for i in ids if f"`{i}`" not in section]
    assert not missing, f"README 'Bad input' lacks rows for {missing}"
