"""The report's patient-level section, on a small sweep folder with synthetic case records (no Ray, no training).

Records of one configuration sit in leaderboard/cases.parquet; those of the others only in their trials'
checkpoints (as a sweep run before the driver gathered them leaves them); one configuration's records miss a
finished fold. The numbers in the page are checked against sweeper.evidence's own functions.
"""

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sweeper.cases
from sweeper.cases import append_cases, cases_present, read_cases
from sweeper.evidence import EvidenceSettings, fold_intervals, load_patient_sums, report_tables
from sweeper.leaderboard import FAILED, FINISHED, read_configs, trial_row, write_leaderboard
from sweeper.paths import SweepPaths
from sweeper.report import _stats_section, write_report
from sweeper.report_evidence import RANK_METRICS, evidence_section, evidence_settings, gather_cases, load_evidence
from sweeper.spec import dump_spec, parse_spec
from trainables.contract import CASES_FILE, TrialConfig

CLASSES = ["large_bowel", "small_bowel", "stomach"]
PATIENTS = [f"case{p:02d}" for p in range(8)]
N_BINS = 20
SETTINGS = EvidenceSettings(resamples=300, seed=3)
# (config_id, loss, sharpness of the predicted probabilities, folds: where the fold's records are)
CONFIGS = [
    ("aaaa111111", "dice", 4.0, {0: "leaderboard", 1: "leaderboard"}),
    ("bbbb222222", "tversky", 2.5, {0: "checkpoint", 1: "checkpoint"}),
    ("cccc333333", "focal", 1.5, {0: "checkpoint", 1: "failed"}),
    ("dddd444444", "dice", 3.0, {0: "leaderboard", 1: "nowhere"}),
]


def synthetic_records(sharpness: float, fold: int, seed: int) -> pd.DataFrame:
    """A trial's own case records (no config_id) of the fold's patients: histograms drawn so that the
    foreground leans to high probabilities (more so with ``sharpness``), the background to low ones, and the
    counts at 0.5 follow from them."""
    rng = np.random.default_rng(seed)
    keys = [(p, s, c) for p in PATIENTS[fold::2] for s in range(5) for c in CLASSES]
    n = len(keys)
    centres = (np.arange(N_BINS) + 0.5) / N_BINS
    fg_p = centres**sharpness / (centres**sharpness).sum()
    bg_p = (1 - centres) ** 8 / ((1 - centres) ** 8).sum()
    area = np.where(rng.random(n) < 0.6, rng.integers(1, 80, n), 0)
    fg = rng.multinomial(area, fg_p)
    bg = rng.multinomial(400 - area, bg_p)
    half = N_BINS // 2
    tp, fp = fg[:, half:].sum(1), bg[:, half:].sum(1)
    # one true object where the organ is present, found when half of it is; one predicted object where any
    # pixel is predicted, correct when at least half of the predicted pixels are true
    objects_true = (area > 0).astype(np.int16)
    objects_pred = (tp + fp > 0).astype(np.int16)
    objects_found = (objects_true * (2 * tp >= area)).astype(np.int16)
    objects_correct = (objects_pred * (2 * tp >= tp + fp)).astype(np.int16)
    return pd.DataFrame(
        {
            "fold": np.int16(fold),
            "patient": [k[0] for k in keys],
            "scan": [f"{k[0]}_day0" for k in keys],
            "slice": np.array([k[1] for k in keys], np.int32),
            "class": [k[2] for k in keys],
            "area": area.astype(np.int32),
            "tp": tp.astype(np.int32),
            "fp": fp.astype(np.int32),
            "fn": (area - tp).astype(np.int32),
            "tn": (400 - area - fp).astype(np.int32),
            "nsd": np.float32(np.nan),
            "hd95": np.float32(np.nan),
            "boundary_f1": np.float32(np.nan),
            "objects_true": pd.array(objects_true, dtype="Int16"),
            "objects_found": pd.array(objects_found, dtype="Int16"),
            "objects_pred": pd.array(objects_pred, dtype="Int16"),
            "objects_correct": pd.array(objects_correct, dtype="Int16"),
            "hist_fg": list(fg.astype(np.int32)),
            "hist_bg": list(bg.astype(np.int32)),
        }
    )


def write_sweep(root: Path, with_records: bool = True) -> Path:
    sweep_dir = root / "tiny"
    spec = parse_spec(
        {
            "name": "tiny",
            "data": {"format": "synthetic", "folds": 2, "image_size": 32, "synthetic": {"cases": 8}},
            "model": {"architectures": ["unet"], "encoders": ["resnet18"]},
            "losses": [{"name": "dice"}, {"name": "tversky"}, {"name": "focal"}],
            "training": {"epochs": 2},
            "search": {"budget": 4},
        }
    )
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "spec.yaml").write_text(dump_spec(spec))
    paths = SweepPaths.at(sweep_dir)
    rows = []
    for c, (cid, loss, sharpness, folds) in enumerate(CONFIGS):
        for fold, where in folds.items():
            config = TrialConfig.from_dict(
                {
                    "config_id": cid,
                    "fold": fold,
                    "arch": "unet",
                    "encoder": "resnet18",
                    "loss": loss,
                    "loss_params": {},
                    "classes": CLASSES,
                    "epochs": 2,
                    "cache_dir": str(sweep_dir / "cache"),
                }
            )
            dice = 0.5 + 0.1 * sharpness + 0.01 * fold
            result = {"epoch": 2, "best_epoch": 2}
            for name in ("dice", "iou", "sensitivity", "specificity", "precision"):
                result[f"best.{name}"] = dice
                result.update({f"best.{name}.{k}": dice for k in CLASSES})
            status = FAILED if where == "failed" else FINISHED
            rows.append(trial_row(config, result if status == FINISHED else {"epoch": 1}, status))
            if not with_records:
                continue
            records = synthetic_records(sharpness, fold, seed=10 * c + fold)
            if where == "leaderboard":
                append_cases(paths.cases_table, records, config_id=cid)
            elif where in ("checkpoint", "failed"):
                folder = paths.tune_dir / f"{loss}-{cid}-fold{fold}"
                (folder / "checkpoint_000000").mkdir(parents=True)
                (folder / "params.json").write_text(json.dumps(config.to_dict()))
                # an older checkpoint with other records: the newest one is the trial's best epoch
                older = folder / "checkpoint_000000" / CASES_FILE
                synthetic_records(0.5, fold, seed=99).to_parquet(older, index=False)
                os.utime(older, (1e9, 1e9))
                (folder / "checkpoint_000001").mkdir()
                records.to_parquet(folder / "checkpoint_000001" / CASES_FILE, index=False)
    write_leaderboard(pd.DataFrame(rows), sweep_dir)
    return sweep_dir


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return write_sweep(tmp_path_factory.mktemp("evidence"))


@pytest.fixture(scope="module")
def report(sweep):
    path = write_report(sweep, log_to_mlflow=False, evidence_settings=SETTINGS)
    return path, path.read_text()


@pytest.fixture(scope="module")
def expected(sweep, report):
    """The tables sweeper.evidence computes from the same records, independently of the report."""
    sums = load_patient_sums(SweepPaths.at(sweep).cases_table, config_ids=["aaaa111111", "bbbb222222", "cccc333333"])
    return report_tables(sums, SETTINGS, keys=RANK_METRICS)


def test_records_missing_from_the_leaderboard_are_gathered_from_the_finished_trials_checkpoints(sweep, report):
    cases = SweepPaths.at(sweep).cases_table
    assert cases_present(cases) == {
        ("aaaa111111", 0),
        ("aaaa111111", 1),
        ("bbbb222222", 0),
        ("bbbb222222", 1),
        ("cccc333333", 0),
        ("dddd444444", 0),
    }  # not the failed trial's checkpoint; dddd's fold 1 has records nowhere
    gathered = read_cases(cases, config_ids=["bbbb222222"]).to_pandas()
    newest = synthetic_records(2.5, 0, seed=10)
    assert gathered[gathered["fold"] == 0]["tp"].sum() == newest["tp"].sum()  # the newest checkpoint's
    # restored as the driver restores them: the leaderboard's intervals follow
    configs = read_configs(sweep).set_index("config_id")
    assert configs.loc["bbbb222222", "interval_method"] == "patient_bca"
    assert configs.loc["dddd444444", "interval_method"] == "fold_corrected_t"


def test_report_has_every_evidence_figure_embedded_with_a_sentence(report):
    path, page = report
    for key in ("fig10", "fig11", "fig12", "fig13"):
        match = re.search(rf'<figure id="{key}"><img alt="[^"]*" src="data:image/png;base64,iVBOR', page)
        assert match, key
        caption = re.search(rf'<figure id="{key}">.*?<figcaption>(.*?)</figcaption>', page, re.S).group(1)
        assert "Shows " in caption, key
    for name in ("fig10_threshold_curves", "fig11_front_probability", "fig12_reliability", "fig13_rank_stability"):
        assert (path.parent / f"{name}.png").stat().st_size > 0
    for anchor in (
        "patient-intervals",
        "indistinguishable",
        "average-precision",
        "calibration-error",
        "matched-sensitivity",
        "front-probability",
    ):
        paragraph = re.search(rf"<p id='{anchor}'><b>Table \d+\.</b> (.*?)</p>", page)
        assert paragraph and paragraph.group(1).startswith("Shows "), anchor
    references = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page)
    assert all(r.startswith(("data:", "#")) for r in references)


def test_report_names_the_interval_method_and_flags_few_patients(report):
    _, page = report
    method = re.search(r"<b id='interval-method'>(.*?)</b>", page).group(1)
    assert "bias-corrected and accelerated (BCa) bootstrap over patients" in method and "300 resamples" in method
    note = re.search(r"<p class='note' id='few-patients'>(.*?)</p>", page).group(1)
    assert "4 validated patient(s)" in note and "fewer than the 50" in note and "André et al." in note


def test_patient_intervals_in_the_report_are_evidence_values(report, expected):
    _, page = report
    intervals = expected["intervals"].set_index("config_id")
    for cid in ("aaaa111111", "bbbb222222", "cccc333333"):
        r = intervals.loc[cid]
        assert f"{r['dice']:.4f} [{r['dice_ci_low']:.4f}, {r['dice_ci_high']:.4f}]" in page, cid
        low, high = r["dice.stomach_ci_low"], r["dice.stomach_ci_high"]
        assert f"{r['dice.stomach']:.4f} [{low:.4f}, {high:.4f}]" in page, cid
        for name in ("object_sensitivity", "object_precision"):  # recorded: shown
            assert f"{r[name]:.4f} [{r[f'{name}_ci_low']:.4f}, {r[f'{name}_ci_high']:.4f}]" in page, (cid, name)
    assert intervals.loc["cccc333333", "n_patients"] == 4 and intervals.loc["aaaa111111", "n_patients"] == 8


def test_configuration_whose_records_miss_a_fold_keeps_the_fold_interval(sweep, report):
    _, page = report
    assert "Without case records of every finished fold" in page and "dice dddd44" in page
    trials = pd.read_parquet(SweepPaths.at(sweep).trials_table)
    fallback = fold_intervals(trials[trials["config_id"] == "dddd444444"], ["dice"], n_folds=2).iloc[0]
    table = re.search(r"<p id='patient-intervals'>.*?<tbody>(.*?)</tbody>", page, re.S).group(1)
    row = re.search(r"<tr><td class=\"l\">dice dddd44</td>(.*?)</tr>", table).group(1)
    assert "folds, corrected t" in row
    assert f"{fallback['dice']:.4f} [{fallback['dice_ci_low']:.4f}, {fallback['dice_ci_high']:.4f}]" in row


def test_average_precision_calibration_and_matched_precision_are_evidence_values(report, expected):
    _, page = report
    summary = expected["curve_summary"].set_index(["config_id", "class"])
    for cid in ("aaaa111111", "cccc333333"):
        for group in ("overall", "stomach"):
            r = summary.loc[(cid, group)]
            ap = (r["average_precision"], r["average_precision_ci_low"], r["average_precision_ci_high"])
            assert "{:.4f} [{:.4f}, {:.4f}]".format(*ap) in page, (cid, group)
            ece = (r["calibration_error"], r["calibration_error_ci_low"], r["calibration_error_ci_high"])
            assert "{:.4f} [{:.4f}, {:.4f}]".format(*ece) in page, (cid, group)
    matched = expected["matched"]
    matched = matched[(matched["curve"] == "per_image") & (matched["class"] == "overall")]
    reached = matched[matched["precision"].notna()]
    assert len(reached)
    for _, r in reached.iterrows():
        text = f"{r['precision']:.4f} [{r['precision_ci_low']:.4f}, {r['precision_ci_high']:.4f}] at {r['threshold']:g}"
        assert text in page, (r["config_id"], r["target_sensitivity"])
        if not r["best"]:
            diff = f"{r['difference']:+.4f} [{r['difference_ci_low']:+.4f}, {r['difference_ci_high']:+.4f}]"
            assert diff in page


def test_front_probabilities_and_ranks_are_evidence_values(report, expected):
    _, page = report
    front = expected["front"]
    row = re.search(r"<p id='front-probability'>.*?<tbody>(.*?)</tbody>", page, re.S).group(1)
    for cid in ("aaaa111111", "bbbb222222", "cccc333333"):
        mine = front[front["config_id"] == cid]
        cells = re.search(rf"{cid[:6]}</td>(.*?)</tr>", row).group(1)
        for probability in mine["front_probability"]:
            assert f"<td>{probability:.3f}</td>" in cells, cid
    best = expected["indistinguishable"]
    best = best[(best["metric"] == "dice") & best["best"]]["config_id"].iloc[0]
    table = re.search(r"<p id='indistinguishable'>.*?<tbody>(.*?)</tbody>", page, re.S).group(1)
    assert re.search(rf"{best[:6]}</td><td><span class='sig'>1 \(best\)", table)


def test_enough_patients_leave_no_note(sweep, report):
    trials = pd.read_parquet(SweepPaths.at(sweep).trials_table)
    evidence = load_evidence(sweep, trials, None, EvidenceSettings(resamples=200, min_patients=4))
    section = evidence_section(evidence, {}, CLASSES, lambda key: f"<figure id='{key}'></figure>")
    assert "id='few-patients'" not in section and "<figure id='fig13'>" in section
    assert "id='interval-method'" in section


def test_old_sweep_without_case_records_says_so_and_keeps_the_fold_statistics(tmp_path):
    sweep_dir = write_sweep(tmp_path, with_records=False)
    path = write_report(sweep_dir, log_to_mlflow=False, evidence_settings=SETTINGS)
    page = path.read_text()
    note = re.search(r"<p class='note' id='no-case-records'>(.*?)</p>", page).group(1)
    assert "no out-of-fold case records" in note
    assert "95% intervals over folds" in page and "Table 1." in page
    assert not list(path.parent.glob("fig1[0-3]_*.png")) and "fig10" not in page
    assert not SweepPaths.at(sweep_dir).cases_table.exists()


@pytest.mark.parametrize(
    ("methods", "caption", "column"),
    [
        (None, "95% intervals over folds</b> (Student t", False),
        (["fold_corrected_t", "fold_corrected_t"], "95% intervals over folds</b> (Nadeau-Bengio corrected t", True),
        (["patient_bca", "fold_corrected_t"], "95% intervals of the leaderboard</b>", True),
    ],
)
def test_fold_statistics_name_the_interval_each_leaderboard_row_holds(methods, caption, column):
    configs = pd.DataFrame(
        {
            "config_id": ["aaaa111111", "bbbb222222"],
            "n_folds": [2, 2],
            "n_failed": [0, 0],
            "dice": [0.8, 0.7],
            "dice_ci_low": [0.7, 0.6],
            "dice_ci_high": [0.9, 0.8],
        }
    )
    if methods is not None:
        configs["interval_method"] = methods
    labels = {"aaaa111111": "dice aaaa11", "bbbb222222": "dice bbbb22"}
    page = _stats_section(configs, pd.DataFrame(columns=["config_id", "fold", "status"]), labels, None)
    assert caption in page
    assert ("<th>interval</th>" in page) is column
    if methods is not None and "patient_bca" in methods:
        assert "<td>patients, BCa</td>" in page and "<td>folds, corrected t</td>" in page


def test_a_broken_checkpoint_file_is_left_out_and_the_others_gathered(tmp_path):
    sweep_dir = write_sweep(tmp_path)
    broken = next(SweepPaths.at(sweep_dir).tune_dir.glob(f"*cccc333333-fold0/checkpoint_000001/{CASES_FILE}"))
    broken.write_bytes(b"not parquet")
    trials = pd.read_parquet(SweepPaths.at(sweep_dir).trials_table)
    path, source = gather_cases(sweep_dir, trials)
    assert {k for k in cases_present(path) if k[0] != "aaaa111111"} == {
        ("bbbb222222", 0),
        ("bbbb222222", 1),
        ("dddd444444", 0),
    }
    assert "2 fold trial(s) restored" in source


def test_a_sweep_folder_that_cannot_be_written_shows_the_records_present(tmp_path, monkeypatch):
    sweep_dir = write_sweep(tmp_path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sweeper.cases, "append_cases", refuse)
    trials = pd.read_parquet(SweepPaths.at(sweep_dir).trials_table)
    evidence = load_evidence(sweep_dir, trials, None, SETTINGS)
    assert evidence.config_ids == ["aaaa111111"] and "restored" not in evidence.source
    assert evidence.left_out == ["bbbb222222", "cccc333333", "dddd444444"]
    assert set(evidence.fallback["config_id"]) == set(evidence.left_out)
    assert set(evidence.fallback["interval_method"]) == {"fold_corrected_t"}


def test_the_report_takes_the_spec_evidence_section_unless_told_otherwise():
    spec = parse_spec(
        {
            "name": "tiny",
            "data": {"format": "synthetic"},
            "model": {"architectures": ["unet"], "encoders": ["resnet18"]},
            "losses": [{"name": "dice"}],
            "search": {"budget": 2},
            "evidence": {"resamples": 500, "method": "percentile"},
        }
    )
    assert evidence_settings(spec).resamples == 500 and evidence_settings(spec).method == "percentile"
    assert evidence_settings(spec, SETTINGS) is SETTINGS
    assert evidence_settings(None) == EvidenceSettings()
