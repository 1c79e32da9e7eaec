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

#: where `sweeper ui` serves by default
LOCAL_UI = "http://127.0.0.1:5000"

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
      sweeper leaderboard results/NAME  # configurations ranked, 95% intervals over patients
      sweeper compare results/NAME --all  # paired tests on patients, Holm-adjusted
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
        f"{len(parsed.data.folds_to_run)} folds"
        + (f" x {parsed.training.repeats} repeats" if parsed.training.repeats > 1 else "")
        + f" ({parsed.search.mode} search)"
    )


STORAGE_OPTION = click.option(
    "--storage",
    default=None,
    help="Where trials' shared files go (overrides the spec's `storage`): a local or NFS path every node "
    "mounts, or an object-store URI such as s3://bucket/prefix (see README, Running on a cluster).",
)


VERBOSE_OPTION = click.option(
    "--verbose",
    is_flag=True,
    help="Print Ray's, Tune's, Optuna's and MLflow's own output here too (default: only SWEEP_DIR/logs/sweep.log).",
)


def _run(
    parsed,
    results: Path,
    resume: bool,
    address: str | None,
    storage: str | None = None,
    verbose: bool = False,
    force_spec: bool = False,
) -> None:
    from sweeper.console import sweep_console
    from sweeper.launch import SweepExistsError, launch
    from sweeper.leaderboard import read_configs
    from sweeper.preflight import BadInputError
    from sweeper.tracking import TrackingUnreachableError

    log = None
    try:
        with sweep_console(_logs_folder(parsed, results, storage, address), verbose=verbose) as console:
            log = console.log
            if log is not None:
                console.say(f"Ray, Tune, Optuna and MLflow output: {log}  (--verbose prints it here)")
            paths = launch(parsed, results, resume=resume, address=address, storage=storage, force_spec=force_spec)
    except (BadInputError, SweepExistsError, TrackingUnreachableError) as err:
        raise click.ClickException(str(err)) from None
    except Exception as err:
        if log is None:
            raise
        raise click.ClickException(f"{type(err).__name__}: {err}\n  full log with the traceback: {log}") from None
    try:
        configs = read_configs(paths.sweep)
    except FileNotFoundError:
        where = f"in {log}" if log is not None else "above"
        raise click.ClickException(f"no trial of {parsed.name!r} ended; see Ray Tune's output {where}") from None
    failed = int(configs["n_failed"].sum())
    click.echo("")
    click.echo(f"Sweep {parsed.name!r} done: {len(configs)} configurations, {failed} failed fold trials.")
    click.echo(f"  leaderboard : {paths.leaderboard}   (sweeper leaderboard {paths.sweep})")
    click.echo(f"  pareto front: {paths.pareto_file()}   (+ .parquet, .png, .svg; one per class)")
    click.echo(
        f"  evidence    : patient-level 95% intervals in {paths.configs_table.name} (interval_method) and "
        f"{paths.intervals_table.name}; sweeper compare {paths.sweep} --all; {paths.matched_precision_table}"
    )
    remote = bool(address and address.startswith("ray://"))
    where = " on the head node (tunnel port 5000 with ssh -L)" if remote else ""
    click.echo(
        f"  MLflow UI   : sweeper ui --results {paths.results}{where}   then open "
        f"{_experiment_url(parsed, paths, remote)}"
    )
    if failed:
        raise click.ClickException(
            f"{failed} fold trial(s) failed; see the `error` column of {paths.trials_table} or MLflow"
            + (f"; full log: {log}" if log is not None else "")
        )


def _logs_folder(parsed, results: Path, storage: str | None, address: str | None) -> Path | None:
    """Returns ``SWEEP_DIR/logs`` of a local driver; None over ``ray://`` (the driver runs on the head and
    its lines come back through Ray's output) or when the paths are wrong (the launch says why)."""
    from sweeper.paths import SweepPaths
    from sweeper.preflight import BadInputError

    if address and address.startswith("ray://"):
        return None
    try:
        return SweepPaths.of(parsed, results, storage).logs
    except BadInputError:
        return None


def _experiment_url(parsed, paths, remote: bool) -> str:
    """Returns the sweep's experiment page in the MLflow UI of `sweeper ui` (the experiment list when
    its store is on the head node or not written)."""
    from sweeper.launch import _tracking_uri
    from sweeper.tracking import experiment_page

    uri = _tracking_uri(parsed, paths)[0]
    if remote or (uri.startswith("sqlite:") and not paths.mlflow_db.is_file()):
        return f"{LOCAL_UI}/#/experiments"
    return experiment_page(uri, parsed.name, LOCAL_UI)


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
@VERBOSE_OPTION
@click.option(
    "--force-spec",
    is_flag=True,
    help="With --resume: accept a spec whose resources.cpus_per_trial / gpus_per_trial changed (any other change "
    "is refused).",
)
def launch(
    spec: Path, results: Path, resume: bool, address: str | None, storage: str | None, verbose: bool, force_spec: bool
) -> None:
    """Run the sweep described by SPEC and write its leaderboard, Pareto fronts and MLflow runs."""
    _run(_load(spec), results, resume, address, storage, verbose=verbose, force_spec=force_spec)


@main.command()
@RESULTS_OPTION
@click.option("--resume", is_flag=True, help="Continue an interrupted demo.")
@STORAGE_OPTION
@VERBOSE_OPTION
def demo(results: Path, resume: bool, storage: str | None, verbose: bool) -> None:
    """Generate a small UW-Madison-GI-format data set and run a real sweep on it (a few minutes on a laptop)."""
    from sweeper.launch import SEARCH_SPACES

    _run(_load(SEARCH_SPACES / "demo.yaml"), results, resume, None, storage, verbose)


@main.command()
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True, help="Rows to show (1 or more).")
@click.option("--folds", is_flag=True, help="Show one row per fold trial instead of per configuration.")
@click.option(
    "--rebuild-cases",
    is_flag=True,
    help="Restore lost out-of-fold case records (leaderboard/cases.parquet) from the trial checkpoints, "
    "else from the fold runs' MLflow artifacts, and recompute the intervals.",
)
def leaderboard(sweep_dir: Path, top: int, folds: bool, rebuild_cases: bool) -> None:
    """Print the configurations of SWEEP_DIR ranked by fold-mean dice, each metric with its 95% interval
    (patient bootstrap over the out-of-fold cases, or the corrected fold interval where records are missing)."""
    from sweeper.leaderboard import read_configs, read_trials

    try:
        if rebuild_cases:
            _rebuild_cases(sweep_dir)
        table = read_trials(sweep_dir) if folds else read_configs(sweep_dir)
    except FileNotFoundError as err:
        raise click.ClickException(str(err)) from None
    if folds:
        click.echo(format_leaderboard(table, top, per_fold=True))
        return
    click.echo(format_leaderboard(table, top, values=_out_of_fold_values(sweep_dir)))
    for line in interval_notes(table, sweep_dir):
        click.echo(line)


def _rebuild_cases(sweep_dir: Path) -> None:
    from sweeper.leaderboard import rebuild_sweep_cases

    done = rebuild_sweep_cases(sweep_dir)
    click.echo(
        f"case records restored: {done['from_checkpoints']} fold trial(s) from checkpoints, "
        f"{done['from_mlflow']} from MLflow; {len(done['missing'])} finished fold trial(s) still without records"
        + (f": {done['missing'][:10]}" if done["missing"] else "")
    )


def _out_of_fold_values(sweep_dir: Path):
    """intervals.parquet indexed by config_id (the out-of-fold values the patient intervals are about), or None."""
    import pandas as pd

    from sweeper.paths import SweepPaths

    path = SweepPaths.at(sweep_dir).intervals_table
    table = pd.read_parquet(path) if path.is_file() else None
    return None if table is None or table.empty else table.set_index("config_id")


def interval_notes(configs, sweep_dir: Path) -> list[str]:
    """Returns the lines under the leaderboard that say which interval each row uses and what to watch."""
    from sweeper.leaderboard import FEW_PATIENTS, FOLD_INTERVAL, INTERVAL_METHOD, N_FOLDS, N_PATIENTS
    from sweeper.leaderboard import read_trials as trials_of

    if INTERVAL_METHOD not in configs:  # a leaderboard written before patient-level statistics existed
        return [
            "",
            "intervals: Student-t over folds (this leaderboard predates patient-level statistics); "
            f"`sweeper leaderboard {sweep_dir} --rebuild-cases` recomputes them from the trials' case records",
        ]
    lines = [
        "",
        "value [95% interval]: out-of-fold value with a patient cluster bootstrap interval (interval "
        "patient_bca / patient_percentile), or, without case records, the fold mean with Nadeau-Bengio's "
        "corrected fold interval (fold_corrected_t); fold +-: fold mean +- std",
    ]
    patient = configs[configs[INTERVAL_METHOD] != FOLD_INTERVAL]
    few = patient[patient[FEW_PATIENTS].astype(bool)]
    if len(few):
        lines.append(
            f"warning: {len(few)} configuration(s) have fewer validated patients than evidence.min_patients "
            f"(fewest: {int(few[N_PATIENTS].min())}): interval coverage can fail below about 50 cases "
            "(Andre et al., MICCAI 2025 workshops); read their intervals as rough"
        )
    fallback = configs[(configs[INTERVAL_METHOD] == FOLD_INTERVAL) & (configs[N_FOLDS] > 0)]
    if len(fallback):
        from sweeper.cases import case_runs_present
        from sweeper.paths import SweepPaths

        trials = trials_of(sweep_dir)
        done = trials[trials["status"] == "finished"]
        finished = set(zip(done["config_id"], done["fold"].astype(int), done["repeat"].astype(int)))
        missing = finished - case_runs_present(SweepPaths.at(sweep_dir).cases_table)
        lines.append(
            f"{len(fallback)} configuration(s) use the fold fallback: {len(missing)} finished fold trial(s) "
            f"have no case records; `sweeper leaderboard {sweep_dir} --rebuild-cases` restores lost ones"
        )
    return lines


def format_leaderboard(table, top: int, per_fold: bool = False, values=None) -> str:
    """Returns the leaderboard as text: identity columns and main metrics.

    Per configuration: each metric as ``value [low, high]`` (the out-of-fold value of ``values``,
    intervals.parquet, where the row's interval is the patient bootstrap; else the fold mean) and dice's
    fold mean +- std; per fold: the best-epoch values."""
    import pandas as pd

    from sweeper.leaderboard import (
        ARCH,
        CONFIG_ID,
        ENCODER,
        FOLD,
        FOLD_INTERVAL,
        INTERVAL_METHOD,
        LOSS,
        LOSS_PARAMS,
        N_FOLDS,
        N_PATIENTS,
        STATUS,
    )

    metrics = ["dice", "iou", "sensitivity", "precision", "specificity"]
    shown = pd.DataFrame(
        {
            "config_id": table[CONFIG_ID],
            "loss": table[LOSS],
            "model": table[ARCH] + "/" + table[ENCODER] + _heads_suffix(table),
            "loss_params": table[LOSS_PARAMS],
        }
    )
    _training_columns(table, shown, per_fold)
    if per_fold:
        shown.insert(1, "fold", table[FOLD])
        shown["status"] = table[STATUS]
        for name in (m for m in metrics if m in table):
            shown[name] = table[name].map(lambda v: f"{v:.4f}")
        return shown.head(top).to_string(index=False)
    shown["folds"] = table[N_FOLDS]
    if INTERVAL_METHOD in table:
        shown["patients"] = table[N_PATIENTS].map(lambda v: "-" if v != v else str(int(v)))
        shown["interval"] = table[INTERVAL_METHOD]
    for name in (m for m in metrics if m in table):
        centre = table[name].to_numpy(float).copy()
        if values is not None and name in values and INTERVAL_METHOD in table:
            for i, (cid, method) in enumerate(zip(table[CONFIG_ID], table[INTERVAL_METHOD])):
                if method != FOLD_INTERVAL and cid in values.index:
                    centre[i] = values.loc[cid, name]
        nan = pd.Series(float("nan"), index=table.index)
        low, high = table.get(f"{name}_ci_low", nan), table.get(f"{name}_ci_high", nan)
        shown[name] = [
            f"{c:.3f}" + ("" if lo != lo else f" [{lo:.3f}, {hi:.3f}]") for c, lo, hi in zip(centre, low, high)
        ]
    if "dice" in table:
        std = table["dice_std"].fillna(0.0)
        shown["dice fold +-"] = [f"{m:.4f} +- {s:.4f}" for m, s in zip(table["dice"], std)]
    if "dice_seed_std" in table and table["dice_seed_std"].notna().any():
        shown["dice seed std"] = table["dice_seed_std"].map(lambda v: f"{v:.4f}")
    return shown.head(top).to_string(index=False)


def _heads_suffix(table):
    """Returns " uniclass" for the rows of one-binary-network-per-class configurations, "" for the others."""
    from sweeper.leaderboard import HEADS

    heads = table[HEADS] if HEADS in table else None
    return "" if heads is None else heads.map(lambda h: f" {h}" if h != "multiclass" else "")


def _training_columns(table, shown, per_fold: bool) -> None:
    """Adds the searched training settings and the repeats to a leaderboard view, where a sweep has them."""
    from sweeper.leaderboard import N_REPEATS, REPEAT, TRAINING_PARAMS

    if TRAINING_PARAMS in table and (table[TRAINING_PARAMS] != "{}").any():
        shown["training"] = table[TRAINING_PARAMS]
    if per_fold and REPEAT in table and (table[REPEAT] > 0).any():
        shown.insert(1, "repeat", table[REPEAT])
    if not per_fold and N_REPEATS in table and (table[N_REPEATS] > 1).any():
        shown["repeats"] = table[N_REPEATS]


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
    help="Operating point: the most precise (configuration, threshold) pair whose sensitivity's lower "
    "95% bound reaches this (fold means without case records).",
)
@click.option(
    "--min-precision",
    type=click.FloatRange(0, 1),
    default=None,
    help="Operating point: the most sensitive pair whose precision's lower 95% bound reaches this.",
)
@click.option(
    "--matched",
    is_flag=True,
    help="Print the precision at matched sensitivity of every configuration (pareto/matched_precision.csv).",
)
@click.option(
    "--include-partial",
    is_flag=True,
    help="Let pruned configurations (fold means over only the folds they ran) on the front and operating point.",
)
def pareto(
    sweep_dir: Path,
    class_name: str | None,
    out: Path | None,
    min_sensitivity: float | None,
    min_precision: float | None,
    matched: bool,
    include_partial: bool = False,
) -> None:
    """Export the Pareto front of sensitivity vs precision of SWEEP_DIR and print it.

    With case records the front carries each configuration's probability of being non-dominated
    (patient resamples; pareto/front_probability.csv) and the precision at matched sensitivity is
    written beside it (pareto/matched_precision.csv). With --min-sensitivity or --min-precision, print
    the best (configuration, threshold) under that floor instead (and say clearly when none meets it).
    """
    from sweeper.pareto import export_pareto, front_evidence, write_front_evidence

    if min_sensitivity is not None and min_precision is not None:
        raise click.UsageError("give --min-sensitivity or --min-precision, not both")
    try:
        evidence = front_evidence(sweep_dir, include_partial=include_partial)
        if evidence is not None:
            write_front_evidence(sweep_dir, evidence)
        if min_sensitivity is not None or min_precision is not None:
            if evidence is None:
                _fold_operating_point(sweep_dir, class_name, min_sensitivity, min_precision, include_partial)
            else:
                _patient_operating_point(evidence, class_name, min_sensitivity, min_precision)
            return
        csv_path, png_path, front = export_pareto(
            sweep_dir, class_name, pareto_csv(out), evidence=evidence, include_partial=include_partial
        )
    except (FileNotFoundError, KeyError) as err:
        raise click.ClickException(str(err).strip('"')) from None
    click.echo(front.to_string(index=False))
    summary = json.loads(csv_path.with_suffix(".json").read_text())
    click.echo(
        f"\nhypervolume {summary['hypervolume']:.4f} (reference point (0, 0)); "
        f"{summary['n_within_noise']} more configuration(s) dominated only within their 95% interval"
    )
    if summary["n_infeasible"] or summary["n_partial"]:
        click.echo(
            f"kept off the front: {summary['n_infeasible']} infeasible (search.constraints), "
            f"{summary['n_partial']} pruned (--include-partial lets them on); listed in "
            f"{csv_path.with_name(csv_path.stem + '_excluded.csv')}"
        )
    click.echo(f"wrote {csv_path} (+ .parquet, .json) and {png_path}")
    if evidence is None:
        click.echo("no case records: no front probabilities (intervals are the corrected fold intervals)")
        return
    from sweeper.paths import SweepPaths

    paths = SweepPaths.at(sweep_dir)
    click.echo(
        "front_probability: share of patient resamples in which the configuration is non-dominated; "
        f"every configuration and class in {paths.front_probability_file()}"
    )
    click.echo(f"precision at matched sensitivity: {paths.matched_precision_table} (print it with --matched)")
    if matched:
        click.echo("")
        click.echo(format_matched(evidence.matched, class_name))


def format_matched(matched, class_name: str | None) -> str:
    """Returns the per-image precision-at-matched-sensitivity table of one class (overall by default) as text."""
    rows = matched[(matched["curve"] == "per_image") & (matched["class"] == (class_name or "overall"))]
    lines = [
        "precision at matched sensitivity (per-image curves; the most precise grid threshold reaching each "
        "target; difference to the most precise configuration with its paired 95% interval: an interval "
        "excluding 0 says the loss changes precision beyond moving the threshold)"
    ]
    for target, part in rows.groupby("target_sensitivity", sort=True):
        lines.append(f"  sensitivity >= {target:g}:")
        for _, r in part.sort_values("precision", ascending=False, na_position="last").iterrows():
            if r["threshold"] != r["threshold"]:
                lines.append(f"    {r['config_id']}: never reaches it")
                continue
            lines.append(
                f"    {r['config_id']}  threshold {r['threshold']:.3f}  precision {r['precision']:.4f} "
                f"[{r['precision_ci_low']:.4f}, {r['precision_ci_high']:.4f}]"
                + (
                    "  (best)"
                    if r["best"]
                    else f"  difference {r['difference']:+.4f} [{r['difference_ci_low']:+.4f}, "
                    f"{r['difference_ci_high']:+.4f}]"
                )
            )
    return "\n".join(lines)


def _patient_operating_point(evidence, class_name, min_sensitivity, min_precision) -> None:
    from sweeper.evidence import OVERALL, operating_point

    point = operating_point(
        evidence.curves, min_sensitivity=min_sensitivity, min_precision=min_precision, group=class_name or OVERALL
    )
    if not point.found:
        raise click.ClickException(f"none meets the floor: {point.reason}")
    click.echo(
        f"operating point ({point.reason}; patient-bootstrap 95% intervals, {point.curve} curve, "
        f"{point.group}): config {point.config_id} at threshold {point.threshold:g}"
    )
    click.echo(
        f"  sensitivity {point.sensitivity:.4f} [{point.sensitivity_ci_low:.4f}, {point.sensitivity_ci_high:.4f}]"
    )
    click.echo(f"  precision   {point.precision:.4f} [{point.precision_ci_low:.4f}, {point.precision_ci_high:.4f}]")


def _fold_operating_point(sweep_dir, class_name, min_sensitivity, min_precision, include_partial=False) -> None:
    """The fallback without case records: the best configuration at the spec's threshold, on fold means."""
    from sweeper.leaderboard import ARCH, CONFIG_ID, ENCODER, LOSS, LOSS_PARAMS, N_FOLDS, read_configs
    from sweeper.pareto import axis_columns, operating_point, sweep_constraints

    point = operating_point(
        read_configs(sweep_dir),
        min_sensitivity=min_sensitivity,
        min_precision=min_precision,
        class_name=class_name,
        constraints=sweep_constraints(sweep_dir),
        include_partial=include_partial,
    )
    if point.row is None:
        raise click.ClickException(
            f"no configuration meets {point.constraint} (the best reaches {point.best_available:.4f})"
        )
    x, y = axis_columns(class_name)
    row = point.row
    click.echo(
        f"best under {point.constraint} (fold means at the spec's threshold: no case records): config "
        f"{row[CONFIG_ID]} ({row[LOSS]} {row[LOSS_PARAMS]}, {row[ARCH]}/{row[ENCODER]})"
    )
    for name in (x, y, "dice"):
        std = row.get(f"{name}_std", float("nan"))
        click.echo(f"  {name:<24} {row[name]:.4f} +- {0.0 if std != std else std:.4f} over {int(row[N_FOLDS])} folds")


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
@click.argument("config_a", required=False)
@click.argument("config_b", required=False)
@click.option("--all", "all_pairs", is_flag=True, help="Compare every pair (Holm-adjusted) instead of A and B.")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    default=("dice", "sensitivity", "precision"),
    show_default=True,
    help="Metric to compare (repeatable), e.g. --metric sensitivity.small_bowel.",
)
def compare(sweep_dir: Path, config_a: str | None, config_b: str | None, all_pairs: bool, metrics) -> None:
    """Paired comparison of configurations A and B (config_id or a unique prefix) on the same patients,
    or of every pair with --all.

    A - B per metric: the paired patient-bootstrap 95% interval of the difference and the Wilcoxon
    signed-rank p-value on the patients' own scores (evidence.paired_test). --all adds Holm-adjusted
    p-values (one family per metric) and prints the configurations not distinguishable from the best.
    Without case records: the labelled fold fallback (Nadeau-Bengio corrected paired t over common folds).
    """
    from sweeper.leaderboard import compare_all_table, compare_pair_table

    if all_pairs == (config_a is not None):
        raise click.UsageError("give two configurations A B, or --all")
    if not all_pairs and config_b is None:
        raise click.UsageError("give a second configuration B (or --all)")
    try:
        if all_pairs:
            pairs, best, left_out = compare_all_table(sweep_dir, list(metrics))
            click.echo(format_compare_all(pairs, best, left_out, sweep_dir))
            return
        refuse_same_configuration(sweep_dir, config_a, config_b)
        table = compare_pair_table(sweep_dir, config_a, config_b, list(metrics))
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise click.ClickException(str(err).strip('"')) from None
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    click.echo(_test_note(table))


def refuse_same_configuration(sweep_dir: Path, a: str, b: str) -> None:
    """Raises a usage error when A and B (config_ids or prefixes) name one configuration: a comparison with
    itself would print a difference of 0 as if it were a finding."""
    from sweeper.leaderboard import read_trials, resolve_config

    trials = read_trials(sweep_dir)
    same = resolve_config(trials, a)
    if same == resolve_config(trials, b):
        raise click.BadParameter(
            f"{a!r} and {b!r} both name configuration {same}; give two different ones (sweeper leaderboard lists them)",
            param_hint="CONFIG_B",
        )


def _test_note(table) -> str:
    tests = set(table["test"])
    if tests == {"fold_corrected_t"}:
        return (
            "test fold_corrected_t: fallback without case records, Nadeau-Bengio corrected paired t over the "
            "folds both finished (ci: its interval of the mean difference)"
        )
    note = (
        f"paired on {int(table['n_patients'].max())} patients: ci = patient-bootstrap 95% interval of A - B "
        f"(both on the same resampled patients); p_value: {', '.join(sorted(tests))} test on patient-level scores"
    )
    if table["few_patients"].astype(bool).any():
        note += "\nwarning: fewer patients than evidence.min_patients: interval coverage can fail below about 50"
    return note


def format_compare_all(pairs, best, left_out: list[str], sweep_dir: Path) -> str:
    """Returns compare --all's summary: per metric the best and the set not distinguishable from it."""
    from sweeper.leaderboard import sweep_evidence_settings
    from sweeper.paths import SweepPaths

    alpha = sweep_evidence_settings(sweep_dir)[0].alpha
    lines = []
    fallback = len(pairs) and set(pairs["test"]) == {"fold_corrected_t"}
    for metric, part in best.groupby("metric", sort=False):
        top = part[part["best"]].iloc[0]
        same = part[part["indistinguishable"] & ~part["best"]].sort_values("rank")
        rows = pairs[pairs["metric"] == metric]
        listed = ", ".join(f"{r.config_id} ({r.value:.4f}, p={r.p_holm_vs_best:.3g})" for r in same.itertuples())
        lines.append(
            f"{metric}: best {top['config_id']} ({top['value']:.4f}); not distinguishable from it "
            f"(Holm-adjusted p > {alpha:.3g}): {listed or 'none'}; "
            f"{int((rows['p_holm'] <= alpha).sum())} of {len(rows)} pairs differ"
        )
    n_pairs = len(pairs[["config_a", "config_b"]].drop_duplicates()) if len(pairs) else 0
    lines.append(
        f"{n_pairs} pairs compared "
        + (
            "with the fold fallback (no case records: Nadeau-Bengio corrected paired t over common folds)"
            if fallback
            else "on their common patients (paired bootstrap intervals, "
            + ", ".join(sorted(set(pairs["test"])))
            + " test)"
        )
    )
    if left_out:
        lines.append(f"left out (no case records for every finished fold): {', '.join(left_out)}")
    paths = SweepPaths.at(sweep_dir)
    lines.append(f"wrote {paths.comparisons_table} and {paths.indistinguishable_table}")
    return "\n".join(lines)


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
    """Serve the MLflow UI on the results root's tracking store (RESULTS/mlflow.db), opening on its runs table."""
    from sweeper.paths import mlflow_db
    from sweeper.tracking import TRAINING_VIEW_APP, artifact_root, default_tracking_uri, training_view_installed

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
    if training_view_installed():
        command += ["--app-name", TRAINING_VIEW_APP]
    else:
        click.echo(
            f"warning: the {TRAINING_VIEW_APP} app is not installed (`pip install -e .` in the Sweeper checkout "
            'installs it): plain MLflow opens in its GenAI view; its "Model training" switch (top left) shows '
            "the runs",
            err=True,
        )
    click.echo(f"MLflow UI on http://{host}:{port}/#/experiments  (Ctrl-C stops it)")
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
