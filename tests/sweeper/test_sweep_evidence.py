"""The patient-level evidence wired into a sweep folder: gathering the case records, the leaderboard's
intervals, compare, pareto, rebuilding lost records; on small synthetic case tables with known truth."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from sweeper.cases import cases_present, part_file
from sweeper.cli import main
from sweeper.evidence import interval_table, load_patient_sums
from sweeper.leaderboard import (
    LeaderboardWriter,
    compare_all_table,
    compare_pair_table,
    read_configs,
    read_trials,
    rebuild_sweep_cases,
    write_leaderboard,
)
from sweeper.paths import SweepPaths
from sweeper.spec import EvidenceSpec, dump_spec, parse_spec
from sweeper.trial_config import trial_settings
from trainables.contract import CASES_FILE, Configuration

CLASSES = ("large_bowel", "small_bowel", "stomach")
N_BINS, PIXELS, PATIENTS, FOLDS = 20, 1024, 24, 2
#: the configurations' true per-pixel sensitivity and mean false positives per slice
TRUTH = {"good000001": (0.95, 2.0), "poor000002": (0.55, 8.0), "nocase0003": (0.7, 4.0)}


def case_records(config_id, sensitivity, false_positives, seed):
    """One trial's worth of records per fold: every patient validated once (fold = patient % 2), four slices,
    each class; histograms consistent with the counts at threshold 0.5 (bin 10 and up)."""
    rng = np.random.default_rng(seed)
    half = N_BINS // 2
    rows = []
    for p in range(PATIENTS):
        rate = float(np.clip(sensitivity + rng.normal(0, 0.03), 0.01, 0.99))  # patients differ: slices correlate
        for s in range(4):
            for cls in CLASSES:
                area = int(rng.integers(5, 80)) if rng.random() < 0.7 else 0
                tp = int(rng.binomial(area, rate))
                fp = int(rng.poisson(false_positives))
                fg = np.r_[
                    rng.multinomial(area - tp, np.full(half, 1 / half)), rng.multinomial(tp, np.full(half, 1 / half))
                ]
                rest = PIXELS - area - fp
                bg = np.r_[
                    rng.multinomial(rest, np.r_[0.95, np.full(half - 1, 0.05 / (half - 1))]),
                    rng.multinomial(fp, np.full(half, 1 / half)),
                ]
                rows.append(
                    {
                        "fold": p % FOLDS,
                        "patient": f"case{p:03d}",
                        "scan": f"case{p:03d}_day0",
                        "slice": s,
                        "class": cls,
                        "area": area,
                        "tp": tp,
                        "fp": fp,
                        "fn": area - tp,
                        "tn": rest,
                        "nsd": np.nan,
                        "hd95": np.nan,
                        "boundary_f1": np.nan,
                        "objects_true": pd.NA,
                        "objects_found": pd.NA,
                        "objects_pred": pd.NA,
                        "objects_correct": pd.NA,
                        "hist_fg": fg.astype(np.int32),
                        "hist_bg": bg.astype(np.int32),
                    }
                )
    frame = pd.DataFrame(rows)
    for c in ("objects_true", "objects_found", "objects_pred", "objects_correct"):
        frame[c] = frame[c].astype("Int16")
    return frame


def fold_result(records, fold):
    """A trial's reported best-epoch metrics: the per-image means of its fold's records."""
    part = records[records["fold"] == fold]
    sens = ((part["tp"] + 1) / (part["tp"] + part["fn"] + 1)).groupby(part["class"]).mean()
    prec = ((part["tp"] + 1) / (part["tp"] + part["fp"] + 1)).groupby(part["class"]).mean()
    dice = ((2 * part["tp"] + 1) / (2 * part["tp"] + part["fp"] + part["fn"] + 1)).groupby(part["class"]).mean()
    result = {"epoch": 2, "best_epoch": 2}
    for name, values in (("sensitivity", sens), ("precision", prec), ("dice", dice)):
        result[f"best.{name}"] = float(values.mean())
        result.update({f"best.{name}.{c}": float(v) for c, v in values.items()})
    return result


def write_checkpoint(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    records.to_parquet(folder / CASES_FILE, index=False)
    return SimpleNamespace(path=str(folder))


def fake_trial(config, result, checkpoint, error_file=None):
    return SimpleNamespace(config=config.to_dict(), last_result=result, checkpoint=checkpoint, error_file=error_file)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep folder as a launch leaves it: frozen spec (200 resamples), three configurations x two folds
    ended through the leaderboard callback; two with case records in their checkpoints, one without."""
    sweep = tmp_path_factory.mktemp("results") / "evidence"
    spec = parse_spec(
        {
            "name": "evidence",
            "data": {"format": "synthetic", "folds": FOLDS},
            "losses": [{"name": "dice"}],
            "search": {"budget": 3},
            "evidence": {"resamples": 200, "min_patients": 50},
        },
        registry=False,
    )
    sweep.mkdir(parents=True)
    (sweep / "spec.yaml").write_text(dump_spec(spec))
    settings = trial_settings(spec, sweep / "cache")
    writer = LeaderboardWriter(sweep)
    for i, (cid, (sens, fp)) in enumerate(TRUTH.items()):
        records = case_records(cid, sens, fp, seed=i)
        for fold in range(FOLDS):
            config = settings.for_fold(Configuration(arch="unet", encoder="r18", loss="dice"), config_id=cid, fold=fold)
            trial_dir = sweep / "ray" / "tune" / f"dice-{cid}-fold{fold}-x"
            checkpoint = None
            if cid != "nocase0003":
                checkpoint = write_checkpoint(trial_dir / "checkpoint_000001", records[records["fold"] == fold])
            trial_dir.mkdir(parents=True, exist_ok=True)
            (trial_dir / "params.json").write_text(json.dumps(config.to_dict()))
            writer.on_trial_complete(0, [], fake_trial(config, fold_result(records, fold), checkpoint))
    return sweep


def test_each_finished_trial_is_gathered_once_and_a_failed_trial_adds_nothing(sweep, tmp_path):
    folder = SweepPaths.at(sweep).cases_table
    assert cases_present(folder) == {(c, f) for c in ("good000001", "poor000002") for f in range(FOLDS)}
    target = part_file(folder, "good000001", 0)
    stamp = target.stat().st_mtime_ns
    trials = read_trials(sweep)
    row = trials[(trials["config_id"] == "good000001") & (trials["fold"] == 0)].iloc[0]
    config = trial_settings(parse_spec_of(sweep), sweep / "cache").for_fold(
        Configuration(arch="unet", encoder="r18", loss="dice"), config_id="good000001", fold=0
    )
    other = write_checkpoint(tmp_path / "other", case_records("good000001", 0.1, 50.0, seed=9).query("fold == 0"))
    writer = LeaderboardWriter(sweep)
    writer.on_trial_complete(0, [], fake_trial(config, {"best.dice": row["dice"]}, other))  # a resume reports it again
    assert target.stat().st_mtime_ns == stamp and len(cases_present(folder)) == 4
    failed = settings_for(sweep).for_fold(
        Configuration(arch="unet", encoder="r18", loss="ce"), config_id="fail00004", fold=0
    )
    error_file = tmp_path / "error.txt"
    error_file.write_text("boom")
    writer.on_trial_error(0, [], fake_trial(failed, {}, other, str(error_file)))
    assert ("fail00004", 0) not in cases_present(folder)
    configs = read_configs(sweep).set_index("config_id")
    assert (
        configs.loc["fail00004", "n_failed"] == 1 and configs.loc["fail00004", "interval_method"] == "fold_corrected_t"
    )
    write_leaderboard(read_trials(sweep).query("config_id != 'fail00004'"), sweep)  # leave the fixture as it was


def parse_spec_of(sweep):
    import yaml

    return parse_spec(yaml.safe_load((sweep / "spec.yaml").read_text()), registry=False)


def settings_for(sweep):
    return trial_settings(parse_spec_of(sweep), sweep / "cache")


def test_leaderboard_intervals_are_the_patient_bootstrap_where_records_cover_the_folds(sweep):
    configs = read_configs(sweep).set_index("config_id")
    assert configs.loc["good000001", "interval_method"] == "patient_bca"
    assert configs.loc["poor000002", "interval_method"] == "patient_bca"
    assert configs.loc["nocase0003", "interval_method"] == "fold_corrected_t"
    assert configs.loc["good000001", "n_patients"] == PATIENTS and configs.loc["good000001", "few_patients"]
    # the same numbers as the statistics module computes on the records directly
    sums = load_patient_sums(SweepPaths.at(sweep).cases_table, config_ids=["good000001", "poor000002"])
    direct = interval_table(sums, EvidenceSpec(resamples=200, min_patients=50)).set_index("config_id")
    for cid in ("good000001", "poor000002"):
        for key in ("sensitivity", "precision.stomach", "dice"):
            assert configs.loc[cid, f"{key}_ci_low"] == pytest.approx(direct.loc[cid, f"{key}_ci_low"])
            assert configs.loc[cid, f"{key}_ci_high"] == pytest.approx(direct.loc[cid, f"{key}_ci_high"])
    # inside the metric's range, around the value, and the truth is told apart
    lows = configs[[c for c in configs.columns if c.endswith("_ci_low")]].to_numpy(float)
    highs = configs[[c for c in configs.columns if c.endswith("_ci_high")]].to_numpy(float)
    assert np.nanmin(lows) >= 0 and np.nanmax(highs) <= 1 and np.all((lows <= highs) | np.isnan(lows))
    assert configs.loc["poor000002", "sensitivity_ci_high"] < configs.loc["good000001", "sensitivity_ci_low"]
    intervals = pd.read_parquet(SweepPaths.at(sweep).intervals_table)
    assert set(intervals["config_id"]) == {"good000001", "poor000002"}


def test_a_configuration_missing_the_records_of_a_finished_fold_falls_back_to_the_fold_interval(sweep, tmp_path):
    import shutil

    copy = tmp_path / "evidence"
    shutil.copytree(sweep, copy)
    part_file(SweepPaths.at(copy).cases_table, "poor000002", 1).unlink()
    write_leaderboard(read_trials(copy), copy)
    configs = read_configs(copy).set_index("config_id")
    assert configs.loc["poor000002", "interval_method"] == "fold_corrected_t"
    assert configs.loc["good000001", "interval_method"] == "patient_bca"
    # --rebuild-cases restores it from the trial checkpoint, once
    out = CliRunner().invoke(main, ["leaderboard", str(copy), "--rebuild-cases"])
    assert out.exit_code == 0, out.output
    assert "1 fold trial(s) from checkpoints" in out.output
    assert read_configs(copy).set_index("config_id").loc["poor000002", "interval_method"] == "patient_bca"
    again = rebuild_sweep_cases(copy, from_mlflow=False)
    assert again["from_checkpoints"] == 0 and again["missing"] == [("nocase0003", 0), ("nocase0003", 1)]


def test_lost_records_are_rebuilt_from_the_fold_runs_mlflow_artifacts(sweep, tmp_path):
    import shutil

    from mlflow import MlflowClient

    from sweeper.tracking import CONFIG_TAG, FOLD_LEVEL, FOLD_TAG, LEVEL_TAG, default_tracking_uri

    copy = tmp_path / "results" / "evidence"
    shutil.copytree(sweep, copy)
    folder = SweepPaths.at(copy).cases_table
    client = MlflowClient(default_tracking_uri(copy.parent))
    experiment = client.create_experiment("evidence", artifact_location=(tmp_path / "artifacts").as_uri())
    for cid, fold in sorted(cases_present(folder)):
        run = client.create_run(experiment, tags={LEVEL_TAG: FOLD_LEVEL, CONFIG_TAG: cid, FOLD_TAG: str(fold)})
        staged = tmp_path / "stage" / f"{cid}{fold}"
        staged.mkdir(parents=True)
        shutil.copyfile(part_file(folder, cid, fold), staged / CASES_FILE)
        client.log_artifact(run.info.run_id, str(staged / CASES_FILE), artifact_path="cases")
        client.set_terminated(run.info.run_id)
    before = read_configs(copy).set_index("config_id")
    shutil.rmtree(folder)
    shutil.rmtree(copy / "ray")  # no checkpoints either: only MLflow holds them
    done = rebuild_sweep_cases(copy)
    assert done["from_mlflow"] == 4 and done["from_checkpoints"] == 0
    after = read_configs(copy).set_index("config_id")
    assert after.loc["good000001", "interval_method"] == "patient_bca"
    assert after.loc["good000001", "dice_ci_low"] == pytest.approx(before.loc["good000001", "dice_ci_low"])
    assert rebuild_sweep_cases(copy)["from_mlflow"] == 0  # nothing twice


def test_compare_pairs_two_configurations_on_their_patients(sweep):
    table = compare_pair_table(sweep, "good", "poor", ["sensitivity", "precision"]).set_index("metric")
    assert (table["test"] == "wilcoxon").all() and (table["n_patients"] == PATIENTS).all()
    assert table.loc["sensitivity", "ci_low"] > 0 and table.loc["sensitivity", "p_value"] < 1e-4
    assert table.loc["precision", "ci_low"] > 0  # fewer false positives too
    fallback = compare_pair_table(sweep, "good", "nocase", ["sensitivity"])
    assert fallback.loc[0, "test"] == "fold_corrected_t" and fallback.loc[0, "n_folds"] == FOLDS
    with pytest.raises(KeyError, match="matches 0"):
        compare_pair_table(sweep, "zzz", "poor", ["dice"])


def test_compare_all_holm_adjusts_and_names_the_configurations_not_distinguishable_from_the_best(sweep):
    pairs, best, left_out = compare_all_table(sweep, ["sensitivity"])
    assert (
        left_out == ["nocase0003"] and len(pairs) == 1 and pairs.loc[0, "p_holm"] <= pairs.loc[0, "p_value"] * 1 + 1e-12
    )
    top = best[best["best"]].iloc[0]
    assert top["config_id"] == "good000001" and not best.set_index("config_id").loc["poor000002", "indistinguishable"]
    paths = SweepPaths.at(sweep)
    assert pd.read_csv(paths.comparisons_table).shape[0] == 1 and paths.indistinguishable_table.is_file()
    out = CliRunner().invoke(main, ["compare", str(sweep), "--all", "--metric", "sensitivity"])
    assert out.exit_code == 0, out.output
    assert "best good000001" in out.output and "left out" in out.output and "nocase0003" in out.output


def test_compare_cli_says_which_test_it_ran(sweep):
    out = CliRunner().invoke(main, ["compare", str(sweep), "good", "poor", "--metric", "dice"])
    assert out.exit_code == 0, out.output
    assert "wilcoxon" in out.output and f"paired on {PATIENTS} patients" in out.output
    assert "warning: fewer patients" in out.output
    out = CliRunner().invoke(main, ["compare", str(sweep), "good", "nocase", "--metric", "dice"])
    assert out.exit_code == 0 and "fold_corrected_t" in out.output and "fallback" in out.output
    assert CliRunner().invoke(main, ["compare", str(sweep), "good"]).exit_code != 0


def test_pareto_carries_front_probabilities_and_the_matched_precision_table(sweep, tmp_path):
    out = CliRunner().invoke(main, ["pareto", str(sweep), "--matched"])
    assert out.exit_code == 0, out.output
    paths = SweepPaths.at(sweep)
    front = pd.read_csv(paths.pareto_file())
    assert "front_probability" in front and front.set_index("config_id").loc["good000001", "front_probability"] > 0.9
    probability = pd.read_parquet(paths.front_probability_file(".parquet"))
    assert set(probability["class"]) == {"overall", *CLASSES}
    assert set(probability["config_id"]) == {"good000001", "poor000002"}
    assert probability["front_probability"].between(0, 1).all()
    matched = pd.read_csv(paths.matched_precision_table)
    assert {"target_sensitivity", "threshold", "precision_ci_low", "difference_ci_high"} <= set(matched.columns)
    assert "precision at matched sensitivity" in out.output and "sensitivity >= 0.8" in out.output
    assert paths.pareto_file(suffix=".png").stat().st_size > 0


def test_pareto_min_sensitivity_returns_a_configuration_and_a_threshold_or_says_none_does(sweep):
    out = CliRunner().invoke(main, ["pareto", str(sweep), "--min-sensitivity", "0.8"])
    assert out.exit_code == 0, out.output
    assert "config good000001 at threshold" in out.output and "sensitivity" in out.output
    # threshold 0 reaches any sensitivity floor (everything is predicted); a precision floor this high is out of reach
    out = CliRunner().invoke(main, ["pareto", str(sweep), "--min-precision", "0.99", "--class", "stomach"])
    assert out.exit_code != 0 and "none meets the floor" in out.output and "lower bound" in out.output


def test_leaderboard_cli_shows_intervals_their_method_and_the_few_patients_warning(sweep):
    out = CliRunner().invoke(main, ["leaderboard", str(sweep)])
    assert out.exit_code == 0, out.output
    assert "patient_bca" in out.output and "fold_corrected_t" in out.output and "+-" in out.output
    assert "fewer validated patients than evidence.min_patients" in out.output
    assert "2 finished fold trial(s) have no case records" in out.output


PROBE = """
import json, sys
from sweeper.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print("HEAVY " + json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {"torch", "ray"})))
"""


def test_evidence_commands_import_neither_torch_nor_ray(sweep):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for args in (
        ["leaderboard", str(sweep)],
        ["compare", str(sweep), "good", "poor"],
        ["compare", str(sweep), "--all"],
        ["pareto", str(sweep), "--min-sensitivity", "0.8"],
    ):
        done = subprocess.run(
            [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300, env=env
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout.rsplit("HEAVY ", 1)[1]) == [], args


def test_spec_evidence_section_and_one_bins_setting():
    spec = parse_spec_of_dict({"evidence": {"resamples": 500, "method": "percentile", "min_patients": 30}})
    assert (
        spec.evidence.resamples == 500
        and spec.evidence.method == "percentile"
        and spec.evidence.alpha == pytest.approx(0.05)
    )
    from sweeper.spec import SpecError

    with pytest.raises(SpecError, match="training.threshold_bins"):
        parse_spec_of_dict({"evidence": {"threshold_bins": 50}})
    with pytest.raises(SpecError, match="evidence.method"):
        parse_spec_of_dict({"evidence": {"method": "studentized"}})


def parse_spec_of_dict(extra):
    return parse_spec(
        {"name": "s", "data": {"format": "synthetic"}, "losses": [{"name": "dice"}], "search": {"budget": 1}, **extra},
        registry=False,
    )


def test_mlflow_fold_runs_get_the_records_and_configuration_runs_the_leaderboard_intervals(sweep, tmp_path):
    import shutil

    from mlflow import MlflowClient

    from sweeper.tracking import (
        CONFIG_LEVEL,
        INTERVAL_TAG,
        LEVEL_TAG,
        MlflowTracker,
        artifact_root,
        default_tracking_uri,
    )

    copy = tmp_path / "evidence"
    shutil.copytree(sweep, copy)
    store = default_tracking_uri(tmp_path)
    tracker = MlflowTracker(store, "evidence", artifact_root(tmp_path), copy / "spec.yaml", n_folds=FOLDS)
    tracker.setup()
    settings = settings_for(copy)
    trials = []
    for fold in range(FOLDS):
        config = settings.for_fold(
            Configuration(arch="unet", encoder="r18", loss="dice"), config_id="good000001", fold=fold
        )
        checkpoint = SimpleNamespace(
            path=str(copy / "ray" / "tune" / f"dice-good000001-fold{fold}-x" / "checkpoint_000001")
        )
        result = {"best.dice": 0.8, "best.sensitivity": 0.9}
        trials.append(
            SimpleNamespace(**vars(fake_trial(config, result, checkpoint)), status="TERMINATED", trial_id=f"t{fold}")
        )
    for trial in trials:
        tracker.on_trial_complete(0, trials, trial)
    tracker.on_experiment_end(trials)
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("evidence").experiment_id
    runs = client.search_runs([experiment])
    folds = [r for r in runs if r.data.tags[LEVEL_TAG] == "fold"]
    assert len(folds) == FOLDS
    assert all(
        [a.path for a in client.list_artifacts(r.info.run_id, "cases")] == ["cases/cases.parquet"] for r in folds
    )
    [config_run] = [r for r in runs if r.data.tags[LEVEL_TAG] == CONFIG_LEVEL]
    row = read_configs(copy).set_index("config_id").loc["good000001"]
    assert config_run.data.tags[INTERVAL_TAG] == "patient_bca"
    for key in ("dice_ci_low", "dice_ci_high", "sensitivity_ci_high"):  # the metrics the trials reported
        assert config_run.data.metrics[key] == pytest.approx(row[key])
