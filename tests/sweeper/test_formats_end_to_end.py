"""A multi-class NIfTI data set (ACDC layout) swept end to end: softmax, background channel, diceBK."""

import pytest
from acdc_data import write_acdc
from disk import drop_checkpoints
from report_checks import check_report_predicts_as_the_trial

from sweeper.launch import launch
from sweeper.leaderboard import read_trials
from sweeper.spec import parse_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def acdc_sweep(tmp_path_factory):
    """A grid sweep (2 losses, fold 0 of 2, one short epoch) of the ACDC-layout data, softmax with background."""
    tmp_path = tmp_path_factory.mktemp("acdc_sweep")
    root = write_acdc(tmp_path / "acdc", size=32, slices=6, patients=4, noise=30.0)
    spec = parse_spec(
        {
            "name": "acdc_tiny",
            "data": {
                "format": "nifti",
                "root": str(root),
                "classes": ["RV", "MYO", "LV"],
                "label_mode": "multiclass",
                "label_values": {1: "RV", 2: "MYO", 3: "LV"},
                "nifti": {
                    "images": "*/patient*_frame[0-9][0-9].nii.gz",
                    "labels": "{dir}/{stem}_gt.nii.gz",
                    "patient_pattern": r"^(patient\d+)/",
                },
                "image_size": 32,
                "folds": 2,
                "run_folds": [0],
            },
            "model": {"architectures": ["unet"], "encoders": ["resnet18"]},
            "losses": [{"name": "dice"}, {"name": "ce + pm_dice"}],
            "training": {"epochs": 1, "batch_size": 4, "max_train_batches": 2, "loss_include_background": False},
            "search": {"mode": "grid"},
            "resources": {"cpus_per_trial": 1},
        }
    )
    paths = launch(spec, tmp_path / "results")
    yield paths
    drop_checkpoints(paths.results)


def test_multiclass_nifti_sweep(acdc_sweep):
    trials = read_trials(acdc_sweep.sweep)
    assert (trials["status"] == "finished").all(), trials["error"].tolist()
    assert len(trials) == 2
    for name in ["dice.RV", "dice.MYO", "dice.LV", "hd95.LV", "pooled_dice.MYO"]:
        assert trials[name].between(0, 10**6).all(), name
    assert not any("background" in column for column in trials.columns)  # reported classes: foreground only


def test_report_of_the_multiclass_sweep_predicts_as_the_trial(acdc_sweep, tmp_path):
    """The qualitative figure of a softmax sweep: the trial's 4-channel network, argmax prediction, dice of
    the foreground classes only (background neither reported nor drawn)."""
    shown = check_report_predicts_as_the_trial(acdc_sweep.sweep, tmp_path / "report", ["RV", "MYO", "LV"])
    assert not any("background" in column for column in shown.columns)
