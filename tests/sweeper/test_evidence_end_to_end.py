"""A tiny real sweep (real Ray, Optuna storage, MLflow store) whose trials record their validation cases:
the driver gathers them once, keeps them through --resume, and the leaderboard, compare, pareto and
MLflow show patient-level statistics. The sweep is the session's shared one (tests/shared_sweep.py)."""

import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from sweeper.cases import cases_present, read_cases
from sweeper.cli import main
from sweeper.leaderboard import read_configs, read_trials
from sweeper.tracking import CONFIG_LEVEL, CONFIG_TAG, FOLD_LEVEL, INTERVAL_TAG, LEVEL_TAG, default_tracking_uri

pytestmark = pytest.mark.slow


def test_a_sweep_gathers_its_case_records_once_and_reports_patient_level_statistics(tiny_sweep):
    spec, paths = tiny_sweep.spec, tiny_sweep.paths
    trials = read_trials(paths.sweep)
    finished = {(r.config_id, int(r.fold)) for r in trials.itertuples() if r.status == "finished"}
    assert len(finished) == spec.planned_fold_trials() >= 4

    # gathered: one file per finished fold trial, every patient validated once per configuration
    assert cases_present(paths.cases_table) == finished
    records = read_cases(paths.cases_table).to_pandas()
    patients = set(pd.read_parquet(paths.cache / "index.parquet")["patient"].astype(str))
    for _, part in records.groupby("config_id", observed=True):
        assert set(part["patient"].astype(str)) == patients
        assert part.groupby("patient", observed=True)["fold"].nunique().max() == 1

    # --resume adds nothing twice (the shared sweep was resumed once, `sweeper launch --resume`): the same
    # files as before it, none rewritten, and no record twice
    assert {p.name: p.stat().st_mtime_ns for p in paths.cases_table.iterdir()} == tiny_sweep.cases_before_resume
    assert not records.duplicated(["config_id", "fold", "patient", "scan", "slice", "class"]).any()

    # the leaderboard's intervals are the patient bootstrap, inside the metric's range
    configs = read_configs(paths.sweep)
    assert (configs["interval_method"] == "patient_bca").all()
    assert (configs["n_patients"] == len(patients)).all() and configs["few_patients"].all()
    for name in ("dice", "sensitivity", "precision.stomach"):
        assert configs[f"{name}_ci_low"].between(0, 1).all() and configs[f"{name}_ci_high"].between(0, 1).all()
        assert (configs[f"{name}_ci_low"] <= configs[f"{name}_ci_high"]).all()

    # MLflow: the fold runs hold the records, the configuration runs the intervals and their method
    client = MlflowClient(default_tracking_uri(paths.results))
    experiment = client.get_experiment_by_name(spec.name).experiment_id
    folds = client.search_runs([experiment], f"tags.`{LEVEL_TAG}` = '{FOLD_LEVEL}'")
    assert len(folds) == len(finished)
    assert all(
        [a.path for a in client.list_artifacts(r.info.run_id, "cases")] == ["cases/cases.parquet"] for r in folds
    )
    by_id = configs.set_index("config_id")
    for run in client.search_runs([experiment], f"tags.`{LEVEL_TAG}` = '{CONFIG_LEVEL}'"):
        row = by_id.loc[run.data.tags[CONFIG_TAG]]
        assert run.data.tags[INTERVAL_TAG] == "patient_bca"
        assert run.data.metrics["dice_ci_low"] == pytest.approx(row["dice_ci_low"])
        assert run.data.metrics["sensitivity_ci_high"] == pytest.approx(row["sensitivity_ci_high"])

    # compare pairs on patients; compare --all and pareto write their tables
    runner = CliRunner()
    a, b = sorted(by_id.index)[:2]
    out = runner.invoke(main, ["compare", str(paths.sweep), a, b])
    assert out.exit_code == 0 and "wilcoxon" in out.output and f"paired on {len(patients)} patients" in out.output
    out = runner.invoke(main, ["compare", str(paths.sweep), "--all", "--metric", "dice"])
    assert out.exit_code == 0, out.output
    assert paths.comparisons_table.is_file() and paths.indistinguishable_table.is_file()
    front = pd.read_csv(paths.pareto_file())  # written by the launch
    assert front["front_probability"].between(0, 1).all()
    assert set(pd.read_csv(paths.front_probability_file())["class"]) == {"overall", *spec.data.classes}
    assert paths.matched_precision_table.is_file()
    out = runner.invoke(main, ["pareto", str(paths.sweep), "--min-sensitivity", "0.3"])
    assert out.exit_code == 0, out.output
    assert "at threshold" in out.output
