"""Checks of `sweeper report` on a real sweep, shared by the end-to-end modules (one sweep per label mode).

The qualitative figure must be predicted the way the trial scores: the slices it shows carry the dice
that SegmentationMetrics gives on the logits of the trial's own network (built here straight from the
trial's recorded settings, not through the report's code), and the report's inference over the whole
validation fold gives back the per-class dice the trial recorded in trials.parquet. The patient-level
section (figures 10-13) is drawn from the case records the trials wrote.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from sweeper.cli import main
from sweeper.leaderboard import read_trials
from sweeper.paths import REPORT_FILE, SweepPaths
from sweeper.report import QUALITATIVE_SLICES_FILE
from trainables.contract import BEST_WEIGHTS_FILE, TrialConfig
from trainables.data import SliceDataset
from trainables.inference import load_network, predict_slices, validation_slices
from trainables.metrics import SegmentationMetrics
from trainables.models import build_model


def trial_folder(sweep_dir: Path, config_id: str, fold: int) -> tuple[TrialConfig, Path]:
    """Returns (settings, best weights) of one fold trial of a sweep."""
    for params_file in SweepPaths.at(sweep_dir).tune_dir.glob("*/params.json"):
        trial = TrialConfig.from_dict(json.loads(params_file.read_text()))
        if trial.config_id == config_id and trial.fold == fold:
            return trial, max(params_file.parent.glob(f"checkpoint_*/{BEST_WEIGHTS_FILE}"))
    raise AssertionError(f"no trial folder of {config_id} fold {fold}")


def check_report_predicts_as_the_trial(sweep_dir: Path, out: Path, reported: list[str]) -> pd.DataFrame:
    """Runs `sweeper report` into ``out`` and checks its qualitative figure against the trial's definitions;
    returns the table of the slices the figure shows."""
    result = CliRunner().invoke(main, ["report", str(sweep_dir), "--out", str(out), "--no-mlflow"])
    assert result.exit_code == 0, result.output
    page = (out / REPORT_FILE).read_text()
    assert re.search(r'<figure id="fig9"><img alt="[^"]*" src="data:image/png;base64,iVBOR', page)
    assert (out / "fig9_qualitative.png").stat().st_size > 0
    # the patient-level section, from the out-of-fold case records the trials wrote (a tiny sweep: few patients)
    for key in ("fig10", "fig11", "fig12", "fig13"):
        assert re.search(rf'<figure id="{key}"><img alt="[^"]*" src="data:image/png;base64,iVBOR', page), key
    assert "id='interval-method'" in page and "id='few-patients'" in page and "id='no-case-records'" not in page
    assert SweepPaths.at(sweep_dir).cases_table.is_dir()

    shown = pd.read_csv(out / QUALITATIVE_SLICES_FILE)
    assert len(shown) >= 2 and set(shown["kind"]) <= {"typical", "hardest"} and "hardest" in set(shown["kind"])
    assert [c.removeprefix("dice.") for c in shown.columns if c.startswith("dice.")] == reported
    [config_id], [fold] = shown["config_id"].unique(), shown["fold"].unique()
    trial, weights = trial_folder(sweep_dir, config_id, int(fold))

    # the trial's network, rebuilt from the settings it recorded, scored slice by slice by the trial's metrics
    classes, context = trial.classes, trial.context
    model = build_model(trial.arch, trial.encoder, in_channels=2 * context + 1, classes=len(classes))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    dataset = SliceDataset(trial.cache_dir, [trial.fold], context=context)
    position = {slice_id: i for i, slice_id in enumerate(dataset.index["id"])}
    with torch.inference_mode():
        for _, row in shown.iterrows():
            image, mask = dataset[position[row["id"]]]
            metrics = SegmentationMetrics(
                classes,
                threshold=trial.threshold,
                boundary=False,
                activation=trial.activation,
                include_background=trial.include_background,
            )
            metrics.update(model(image[None]), mask[None])
            scores = metrics.compute()
            assert row["dice"] == pytest.approx(scores["dice"], abs=1e-6), row["id"]
            for name in reported:
                assert row[f"dice.{name}"] == pytest.approx(scores[f"dice.{name}"], abs=1e-6), (row["id"], name)

    # the report's inference over the whole validation fold gives back what the trial recorded
    everything = predict_slices(trial, load_network(trial, weights), validation_slices(trial))
    trials = read_trials(sweep_dir).set_index(["config_id", "fold"])
    recorded = trials.loc[(config_id, int(fold))]
    means = everything.dice.mean(axis=0)
    for name, mean in zip(everything.classes, means):
        assert mean == pytest.approx(recorded[f"dice.{name}"], abs=1e-4), name
    assert everything.classes == tuple(reported)
    return shown
