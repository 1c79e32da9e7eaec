"""The ``sweeper`` command line.

References:

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# MLflow 3's UI opens in its GenAI view; this query opens the "Model training" view that shows runs.
MLFLOW_TRAINING_VIEW = "workflowType=machine_learning"

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

RESULTS_OPTION = click.option(
    "--results",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results"),
    show_default=True,
    help="Results root: each sweep gets RESULTS/<name>/, and the MLflow store is RESULTS/mlflow.db.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Sweep segmentation losses with evidence: Ray Tune trials, Optuna search, MLflow tracking.

    \b
    Typical path:
      sweeper demo                      # small real sweep on generated GI-format data
      sweeper validate spec.yaml        # every problem of a spec at once
      sweeper launch spec.yaml          # run it (add --resume after an interruption)
      sweeper leaderboard results/NAME  # configurations ranked, fold mean +- std
      sweeper pareto results/NAME       # sensitivity vs precision front (CSV + PNG)
      sweeper ui                        # browse every run in the MLflow UI
    """


def _load(spec_path: Path):
    from sweeper.spec import SpecError, load_spec

    try:
        return load_spec(spec_path)
    except SpecError as err:
        raise click.ClickException(str(err)) from None


@main.command()
@click.argument("spec", type=click.Path(path_type=Path))
def validate(spec: Path) -> None:
    """Check SPEC (a sweep YAML) without running anything; lists every problem, each naming its field."""
    parsed = _load(spec)
    click.echo(
        f"{spec}: OK - sweep {parsed.name!r}, {parsed.planned_configurations()} configurations x "
        f"{len(parsed.data.folds_to_run)} folds ({parsed.search.mode} search)"
    )


STORAGE_OPTION = click.option(
    "--storage",
    default=None,
    help="Where trials' shared files go (overrides the spec's `storage`): a local or NFS path every node "
    "mounts, or an object-store URI such as s3://bucket/prefix (see README, Running on a cluster).",
)


def _run(
    parsed, results: Path, resume: bool, address: str | None, storage: str | None = None, force_spec: bool = False
) -> None:
    from sweeper.launch import SweepExistsError, launch
    from sweeper.leaderboard import read_configs
    from sweeper.preflight import BadInputError
    from sweeper.tracking import TrackingUnreachableError

    try:
        paths = launch(parsed, results, resume=resume, address=address, storage=storage, force_spec=force_spec)
    except (BadInputError, SweepExistsError, TrackingUnreachableError) as err:
        raise click.ClickException(str(err)) from None
    try:
        configs = read_configs(paths.sweep)
    except FileNotFoundError:
        raise click.ClickException(f"no trial of {parsed.name!r} ended; see Ray Tune's output above") from None
    failed = int(configs["n_failed"].sum())
    click.echo("")
    click.echo(f"Sweep {parsed.name!r} done: {len(configs)} configurations, {failed} failed fold trials.")
    click.echo(f"  leaderboard : {paths.leaderboard}   (sweeper leaderboard {paths.sweep})")
    click.echo(f"  pareto front: {paths.pareto_file()}   (+ .parquet, .png, .svg; one per class)")
    where = " on the head node (tunnel port 5000 with ssh -L)" if address and address.startswith("ray://") else ""
    click.echo(
        f"  MLflow UI   : sweeper ui --results {paths.results}{where}   then open "
        f"http://127.0.0.1:5000/#/experiments?{MLFLOW_TRAINING_VIEW}"
    )
    if failed:
        raise click.ClickException(
            f"{failed} fold trial(s) failed; see the `error` column of {paths.trials_table} or MLflow"
        )


@main.command()
@click.argument("spec", type=click.Path(path_type=Path))
@RESULTS_OPTION
@click.option("--resume", is_flag=True, help="Continue an interrupted sweep of the same name.")
@click.option(
    "--address",
    default=None,
    help="Ray cluster to run on: auto, HOST:6379 or ray://HOST:10001 (default: start a local Ray).",
)
@STORAGE_OPTION
@click.option(
    "--force-spec",
    is_flag=True,
    help="With --resume: accept a spec whose resources.cpus_per_trial / gpus_per_trial changed (any other change "
    "is refused).",
)
def launch(spec: Path, results: Path, resume: bool, address: str | None, storage: str | None, force_spec: bool) -> None:
    """Run the sweep described by SPEC and write its leaderboard, Pareto fronts and MLflow runs."""
    _run(_load(spec), results, resume, address, storage, force_spec)


@main.command()
@RESULTS_OPTION
@click.option("--resume", is_flag=True, help="Continue an interrupted demo.")
@STORAGE_OPTION
def demo(results: Path, resume: bool, storage: str | None) -> None:
    """Generate a small UW-Madison-GI-format data set and run a real sweep on it (a few minutes on a laptop)."""
    from sweeper.launch import SEARCH_SPACES

    _run(_load(SEARCH_SPACES / "demo.yaml"), results, resume, None, storage)


@main.command()
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True, help="Rows to show (1 or more).")
@click.option("--folds", is_flag=True, help="Show one row per fold trial instead of per configuration.")
def leaderboard(sweep_dir: Path, top: int, folds: bool) -> None:
    """Print the configurations of SWEEP_DIR ranked by fold-mean dice, with fold spread (mean +- std)."""
    from sweeper.leaderboard import read_configs, read_trials

    try:
        table = read_trials(sweep_dir) if folds else read_configs(sweep_dir)
    except FileNotFoundError as err:
        raise click.ClickException(str(err)) from None
    click.echo(format_leaderboard(table, top, per_fold=folds))


def format_leaderboard(table, top: int, per_fold: bool = False) -> str:
    """Returns the leaderboard as text: identity columns and main metrics as mean +- std."""
    import pandas as pd

    from sweeper.leaderboard import ARCH, CONFIG_ID, ENCODER, FOLD, LOSS, LOSS_PARAMS, N_FOLDS, STATUS

    metrics = ["dice", "iou", "sensitivity", "precision", "specificity"]
    shown = pd.DataFrame(
        {
            "config_id": table[CONFIG_ID],
            "loss": table[LOSS],
            "model": table[ARCH] + "/" + table[ENCODER],
            "loss_params": table[LOSS_PARAMS],
        }
    )
    if per_fold:
        shown.insert(1, "fold", table[FOLD])
        shown["status"] = table[STATUS]
    else:
        shown["folds"] = table[N_FOLDS]
    for name in metrics:
        if name not in table:
            continue
        if per_fold:
            shown[name] = table[name].map(lambda v: f"{v:.4f}")
        else:
            std = table[f"{name}_std"].fillna(0.0)
            shown[name] = [f"{m:.4f} +- {s:.4f}" for m, s in zip(table[name], std)]
    return shown.head(top).to_string(index=False)


@main.command()
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--class", "class_name", default=None, help="One class (e.g. small_bowel) instead of the organ mean.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the front (default SWEEP_DIR/pareto/pareto[_CLASS].csv): a file ending .csv, .parquet, "
    ".png, .svg or .json, or a stem; all five are written with that stem (--out front.png writes front.csv, "
    "front.png, ...).",
)
@click.option(
    "--min-sensitivity",
    type=click.FloatRange(0, 1),
    default=None,
    help="Operating point: the most precise configuration with sensitivity >= this.",
)
@click.option(
    "--min-precision",
    type=click.FloatRange(0, 1),
    default=None,
    help="Operating point: the most sensitive configuration with precision >= this.",
)
def pareto(
    sweep_dir: Path,
    class_name: str | None,
    out: Path | None,
    min_sensitivity: float | None,
    min_precision: float | None,
) -> None:
    """Export the Pareto front of fold-mean sensitivity vs precision of SWEEP_DIR and print it.

    With --min-sensitivity or --min-precision, print the best configuration under that floor
    instead (and say so clearly when none meets it).
    """
    from sweeper.leaderboard import ARCH, CONFIG_ID, ENCODER, LOSS, LOSS_PARAMS, N_FOLDS, read_configs
    from sweeper.pareto import axis_columns, export_pareto, operating_point

    try:
        if min_sensitivity is not None or min_precision is not None:
            if min_sensitivity is not None and min_precision is not None:
                raise click.UsageError("give --min-sensitivity or --min-precision, not both")
            point = operating_point(
                read_configs(sweep_dir),
                min_sensitivity=min_sensitivity,
                min_precision=min_precision,
                class_name=class_name,
            )
            if point.row is None:
                raise click.ClickException(
                    f"no configuration meets {point.constraint} (the best reaches {point.best_available:.4f})"
                )
            x, y = axis_columns(class_name)
            row = point.row
            click.echo(
                f"best under {point.constraint}: config {row[CONFIG_ID]} ({row[LOSS]} "
                f"{row[LOSS_PARAMS]}, {row[ARCH]}/{row[ENCODER]})"
            )
            for name in (x, y, "dice"):
                std = row.get(f"{name}_std", float("nan"))
                click.echo(
                    f"  {name:<24} {row[name]:.4f} +- {0.0 if std != std else std:.4f} over {int(row[N_FOLDS])} folds"
                )
            return
        csv_path, png_path, front = export_pareto(sweep_dir, class_name, pareto_csv(out))
    except (FileNotFoundError, KeyError) as err:
        raise click.ClickException(str(err).strip('"')) from None
    click.echo(front.to_string(index=False))
    summary = json.loads(csv_path.with_suffix(".json").read_text())
    click.echo(
        f"\nhypervolume {summary['hypervolume']:.4f} (reference point (0, 0)); "
        f"{summary['n_within_noise']} more configuration(s) dominated only within the 95% fold interval"
    )
    click.echo(f"wrote {csv_path} (+ .parquet, .json) and {png_path}")


#: the files ``sweeper pareto`` writes, all with one stem
PARETO_SUFFIXES = (".csv", ".parquet", ".png", ".svg", ".json")


def pareto_csv(out: Path | None) -> Path | None:
    """Returns the CSV path of ``pareto --out``: the stem of a path ending in one of :data:`PARETO_SUFFIXES` (so
    ``front.png`` never overwrites a CSV with a picture), or the path + ``.csv``; refuses another suffix."""
    if out is None:
        return None
    if out.suffix.lower() in PARETO_SUFFIXES:
        return out.with_suffix(".csv")
    if out.suffix:
        raise click.BadParameter(
            f"{out}: {out.suffix} is not a file the front is written as; end it with one of "
            f"{', '.join(PARETO_SUFFIXES)} (all are written with that stem) or give a stem",
            param_hint="--out",
        )
    return out.with_name(out.name + ".csv")


@main.command()
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("config_a")
@click.argument("config_b")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    default=("dice", "sensitivity", "precision"),
    show_default=True,
    help="Metric to compare (repeatable), e.g. --metric sensitivity.small_bowel.",
)
def compare(sweep_dir: Path, config_a: str, config_b: str, metrics: tuple[str, ...]) -> None:
    """Paired comparison of two configurations (config_id or a unique prefix) over the folds both finished.

    Prints A - B per metric: mean difference, 95% t-interval and the paired t-test p-value.
    """
    from sweeper.leaderboard import compare_configs, read_trials

    try:
        table = compare_configs(read_trials(sweep_dir), config_a, config_b, list(metrics))
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise click.ClickException(str(err).strip('"')) from None
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


@main.command()
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for report.html and its PNGs (default SWEEP_DIR/report).",
)
@click.option("--no-mlflow", is_flag=True, help="Do not log the report on the sweep's MLflow run.")
def report(sweep_dir: Path, out: Path | None, no_mlflow: bool) -> None:
    """Write one self-contained HTML report of SWEEP_DIR and log it to MLflow.

    Its figures and tables are those of Hassan et al. 2026, "Loss function analysis for
    class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI"
    (doi:10.5281/zenodo.20729853), computed for this sweep.
    """
    from sweeper.report import write_report

    try:
        path = write_report(sweep_dir, out, log_to_mlflow=not no_mlflow)
    except FileNotFoundError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {path} (self-contained: open it in a browser; the PNGs sit beside it)")


@main.command()
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def status(sweep_dir: Path) -> None:
    """Show how far SWEEP_DIR got: fold trials done / failed / running, time left, Pareto front size."""
    from sweeper.progress import format_status, read_status

    try:
        click.echo(format_status(read_status(sweep_dir)))
    except FileNotFoundError as err:
        raise click.ClickException(str(err)) from None


@main.group()
def data() -> None:
    """Look at a spec's data set before sweeping."""


@data.command("inspect")
@click.argument("spec", type=click.Path(path_type=Path))
@RESULTS_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON instead of text.")
def data_inspect(spec: Path, results: Path, as_json: bool) -> None:
    """Prepare (or reuse) SPEC's data cache and show what the adapter found: patients, scans, slices, image
    sizes, spacings, class prevalence, empty slices, folds and CALF statistics; a data problem names its file."""
    from sweeper.inspect_data import format_inspection, inspect_dataset
    from sweeper.launch import prepare_data
    from sweeper.paths import SweepPaths
    from sweeper.preflight import BadInputError, check_classes_present

    parsed = _load(spec)
    try:
        cache = prepare_data(parsed, SweepPaths.of(parsed, results))
    except (OSError, ValueError, KeyError) as err:
        raise click.ClickException(f"data: {err}") from None
    facts = inspect_dataset(cache)
    try:
        check_classes_present(cache, parsed.data)
    except BadInputError as err:
        raise click.ClickException(str(err)) from None
    click.echo(json.dumps(facts, indent=2, default=str) if as_json else format_inspection(facts))


@main.command()
@RESULTS_OPTION
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Anything but loopback exposes the UI without login (a warning says so); "
    "keep it local and tunnel with ssh.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
def ui(results: Path, host: str, port: int) -> None:
    """Serve the MLflow UI on the results root's tracking store (RESULTS/mlflow.db)."""
    from sweeper.paths import mlflow_db
    from sweeper.tracking import artifact_root, default_tracking_uri

    if host not in LOOPBACK_HOSTS:
        click.echo(
            f"warning: --host {host} exposes the MLflow UI, with every run, checkpoint and artifact and no "
            f"login, to anyone who can reach port {port}; keep the default 127.0.0.1 and tunnel with "
            f"`ssh -L {port}:127.0.0.1:{port} HOST` instead",
            err=True,
        )
    if not mlflow_db(results).is_file():
        raise click.ClickException(
            f"{mlflow_db(results)} not found: run a sweep first (sweeper demo) "
            "or pass --results pointing at its results folder"
        )
    problem = port_problem(host, port)
    if problem:
        raise click.ClickException(problem)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        default_tracking_uri(results),
        "--default-artifact-root",
        artifact_root(results),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    click.echo(f"MLflow UI on http://{host}:{port}/#/experiments?{MLFLOW_TRAINING_VIEW}  (Ctrl-C stops it)")
    raise SystemExit(run_server_group(command))


def port_problem(host: str, port: int) -> str | None:
    """Returns why a server cannot listen on ``host:port`` (in use, an unknown host), found by binding it once
    before the server starts (MLflow's server would print its URL and wait without serving), or None."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        return f"--host {host}: not an address of this machine ({err.strerror or err}); use 127.0.0.1 (the default)"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            return (
                f"--port {port}: cannot listen on {host}:{port} ({err.strerror or err}); another server (perhaps "
                "an earlier `sweeper ui`) uses it: stop it, or pass another --port (e.g. --port 5001)"
            )
    return None


def run_server_group(command: list[str], grace_s: float = 10.0) -> int:
    """Runs a server in its own process group and returns its exit code; SIGINT/SIGTERM to this
    process stop the whole group (MLflow's uvicorn workers and job runner included), so nothing
    outlives the command."""
    import signal
    import time

    proc = subprocess.Popen(command, start_new_session=True)

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        os._exit(128 + signum)  # not SystemExit: threads started by imported libraries would keep us alive

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # poll rather than block in waitpid: a signal caught by another thread (imported libraries start
    # some) would not interrupt the wait, and the handler runs only between bytecodes of this thread
    while proc.poll() is None:
        time.sleep(0.2)
    sys.stdout.flush()
    os._exit(proc.returncode)


@main.command()
def losses() -> None:
    """List every registered loss: its module, knobs (default, range), constraints and source.

    A spec names a loss by its registered name or as a weighted sum such as
    "0.5*focal + 0.5*dice"; knobs of a sum are prefixed by the term (focal.gamma).
    """
    from trainables.losses import describe_losses

    for entry in describe_losses():
        click.echo(f"{entry['name']}: {entry['summary']}")
        click.echo(f"    module: {entry['module']} ({entry['class']})")
        click.echo(f"    source: {entry.get('source', '')}")
        for knob, info in entry["knobs"].items():
            scale = ", log" if info.get("log") else ""
            per_class = f"  (one per class: {knob}.<class>)" if info.get("per_class") else ""
            click.echo(
                f"    {knob} = {info['default']:g}  in [{info['low']:g}, {info['high']:g}{scale}]"
                f"  {info.get('help', '')}{per_class}"
            )
        for constraint in entry.get("constraints", []):
            click.echo(f"    constraint: {constraint} (the second knob is derived from the first)")


if __name__ == "__main__":
    main()
