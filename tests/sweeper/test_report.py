"""The sweep report: built on a small hand-made sweep folder (real cache, real checkpoint, real MLflow store)."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from acdc_data import prepare_acdc_cache
from mlflow import MlflowClient

from sweeper.leaderboard import FAILED, FINISHED, trial_row, write_leaderboard
from sweeper.paths import REPORT_FILE
from sweeper.report import (
    QUALITATIVE_SLICES_FILE,
    QualitativeUnavailable,
    _overlay,
    pick_slices,
    plot_qualitative,
    write_report,
)
from sweeper.spec import dump_spec, parse_spec
from sweeper.tracking import LEVEL_TAG, SWEEP_LEVEL, default_tracking_uri, ensure_experiment
from trainables.contract import TrialConfig
from trainables.data import generate_uwmgi, prepare_cache
from trainables.models import build_model

CLASSES = ["large_bowel", "small_bowel", "stomach"]
METRICS = ["dice", "iou", "sensitivity", "specificity", "precision"]
# (config_id, loss, knobs, per-fold overall dice; None = the fold failed)
CONFIGS = [
    ("aaaa111111", "dice", {"smooth": 1.0}, [0.82, 0.80]),
    ("bbbb222222", "tversky", {"alpha": 0.3, "beta": 0.7}, [0.74, 0.77]),
    ("cccc333333", "tversky", {"alpha": 0.7, "beta": 0.3}, [0.70, None]),
]


def fold_result(dice: float, loss: str) -> dict:
    """A Tune result at its best epoch: overall and per-organ metrics; Tversky trades precision for sensitivity."""
    lean = 0.08 if loss == "tversky" else 0.0
    values = {
        "dice": dice,
        "iou": dice - 0.05,
        "sensitivity": dice + lean,
        "specificity": 0.99,
        "precision": dice - lean,
    }
    result = {"epoch": 3, "best_epoch": 3}
    for name, value in values.items():
        result[f"best.{name}"] = value
        for k, cls in enumerate(CLASSES):
            result[f"best.{name}.{cls}"] = min(value + 0.03 * (k - 1), 1.0)
    return result


def write_trial_folder(tune_dir: Path, config: dict, epochs: int, dice: float, start: float) -> Path:
    folder = tune_dir / f"{config['loss']}-{config['config_id']}-fold{config['fold']}-t{config['fold']}"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(config))
    rows = []
    for epoch in range(1, epochs + 1):
        value = dice * epoch / 3
        rows.append(
            {
                "epoch": epoch,
                "dice": value,
                "sensitivity": value + 0.05,
                "precision": value - 0.05,
                "val_loss": 1 - value,
                "timestamp": start + 10 * epoch,
                "time_this_iter_s": 10.0,
                "time_total_s": 10.0 * epoch,
                "training_iteration": epoch,
            }
        )
    pd.DataFrame(rows).to_csv(folder / "progress.csv", index=False)
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep folder laid out as `sweeper launch` leaves it, plus its MLflow store one level up."""
    results = tmp_path_factory.mktemp("results")
    sweep_dir = results / "tiny"
    spec = parse_spec(
        {
            "name": "tiny",
            "data": {
                "format": "synthetic",
                "folds": 2,
                "image_size": 32,
                "context": 1,
                "synthetic": {"cases": 2, "slices_per_scan": 6, "image_size": 32, "seed": 1},
            },
            "model": {"architectures": ["unet"], "encoders": ["resnet18"]},
            "losses": [{"name": "dice"}, {"name": "tversky", "params": {"alpha": "search", "beta": "search"}}],
            "training": {"epochs": 3},
            "search": {"budget": 3},
        }
    )
    sweep_dir.mkdir()
    (sweep_dir / "spec.yaml").write_text(dump_spec(spec))
    generate_uwmgi(sweep_dir / "data", cases=2, slices_per_scan=6, image_size=32, seed=1)
    prepare_cache(sweep_dir / "data", sweep_dir / "cache", image_size=32, n_folds=2)

    tune_dir = sweep_dir / "ray" / "tune"
    rows = []
    for cid, loss, knobs, dices in CONFIGS:
        for fold, dice in enumerate(dices):
            config = {
                "config_id": cid,
                "fold": fold,
                "arch": "unet",
                "encoder": "resnet18",
                "loss": loss,
                "loss_params": knobs,
                "context": 1,
                "classes": CLASSES,
                "epochs": 3,
                "threshold": 0.5,
                "cache_dir": str(sweep_dir / "cache"),
            }
            if dice is None:
                rows.append(
                    trial_row(
                        TrialConfig.from_dict(config), {"epoch": 1}, FAILED, error="Traceback ...\nRuntimeError: boom"
                    )
                )
                write_trial_folder(tune_dir, config, 1, 0.3, 1000.0)
                continue
            rows.append(trial_row(TrialConfig.from_dict(config), fold_result(dice, loss), FINISHED))
            folder = write_trial_folder(tune_dir, config, 3, dice, 1000.0 + 40 * fold)
            if cid == "aaaa111111" and fold == 0:  # the best configuration's weights, from a real network
                (folder / "checkpoint_000002").mkdir()
                torch.manual_seed(0)
                model = build_model("unet", "resnet18", classes=3)
                torch.save(model.state_dict(), folder / "checkpoint_000002" / "best_model.pt")
    write_leaderboard(pd.DataFrame(rows), sweep_dir)

    client = MlflowClient(default_tracking_uri(results))
    experiment = ensure_experiment(client, "tiny", (results / "mlartifacts" / "tiny").as_uri())
    run = client.create_run(experiment, tags={LEVEL_TAG: SWEEP_LEVEL}, run_name="tiny")
    return sweep_dir, run.info.run_id


@pytest.fixture(scope="module")
def report(sweep):
    sweep_dir, _ = sweep
    path = write_report(sweep_dir, max_slices=8)
    return path, path.read_text()


def test_report_is_written_with_every_figure_embedded(report):
    path, page = report
    assert path.name == REPORT_FILE and path.parent.name == "report"
    for key in ("fig4", "fig5", "fig6", "fig7", "fig8", "fig9"):
        match = re.search(rf'<figure id="{key}"><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
        assert match, key
        assert match.group(1).startswith("iVBOR")  # base64 of the PNG signature
    assert len(list(path.parent.glob("fig*.png"))) == 6


def test_report_holds_the_tables_and_fold_statistics(report):
    _, page = report
    for caption in (
        "Table 1.",
        "Table 2.",
        "Table 3.",
        "Table 4.",
        "95% intervals over folds",
        "Paired comparison",
        "Pareto front.",
        "Failed fold trials",
    ):
        assert caption in page, caption
    assert page.count("<table>") == 8
    # the best configuration (aaaa) compared with bbbb on two folds, with cccc on one fold only
    assert "1 common finished fold(s): no paired test" in page
    assert "RuntimeError: boom" in page
    assert "0.8100 &plusmn; 0.0141" in page  # aaaa: mean and std of dice over its two folds


def test_report_mentions_every_configuration(report):
    _, page = report
    for cid, loss, _, _ in CONFIGS:
        assert cid[:6] in page and loss in page
    assert "dice (smooth=1) aaaa11" in page and "tversky (alpha=0.3, beta=0.7) bbbb22" in page


def test_report_is_self_contained(report):
    _, page = report
    references = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page)
    assert references and all(r.startswith(("data:", "#")) for r in references), references
    assert "<link" not in page and "<script" not in page and "url(" not in page


def test_report_is_logged_on_the_sweep_run(sweep, report):
    sweep_dir, run_id = sweep
    client = MlflowClient(default_tracking_uri(sweep_dir.parent))
    logged = {Path(a.path).name for a in client.list_artifacts(run_id, "report")}
    assert REPORT_FILE in logged and "fig9_qualitative.png" in logged


def test_report_without_checkpoint_or_mlflow_says_what_is_missing(sweep, tmp_path):
    sweep_dir, _ = sweep
    copy = tmp_path / "tiny"
    shutil.copytree(sweep_dir, copy, ignore=shutil.ignore_patterns("checkpoint_*", "report", "data"))
    page = write_report(copy, out_dir=tmp_path / "out").read_text()
    assert "no best_model.pt of configuration aaaa111111" in page
    assert page.count("data:image/png;base64,") == 5


def test_pick_slices_takes_the_lowest_and_the_median():
    dice = np.array([0.9, 0.1, 0.5, 0.55, 0.05, 0.6, 0.95, 0.2])
    typical, hardest = pick_slices(dice, n_typical=2, n_hardest=2)
    assert hardest == [4, 1]
    assert typical == [2, 3]  # median of all slices is 0.525


def test_overlay_tints_each_organ_and_leaves_the_rest_grey():
    image = np.array([[0.0, 1.0], [0.5, 0.25]])
    organs = np.zeros((2, 2, 2), dtype=bool)
    organs[0, 0, 0] = True  # first organ only
    organs[0, 1, 1] = organs[1, 1, 1] = True  # both organs overlap (multi-label)
    rgb = _overlay(image, organs, ["stomach", "RV"])
    stomach, rv = np.array((0.9, 0.2, 0.2)), np.array((0.8, 0.3, 0.9))  # RV: the second fallback colour
    assert np.allclose(rgb[0, 0], 0.55 * stomach)  # grey 0 tinted
    assert np.allclose(rgb[1, 1], 0.45 * (0.45 * 0.25 + 0.55 * stomach) + 0.55 * rv)  # later organ on top
    assert np.allclose(rgb[0, 1], [1.0, 1.0, 1.0]) and np.allclose(rgb[1, 0], [0.5, 0.5, 0.5])  # no organ: grey


def test_qualitative_figure_of_a_softmax_trial_uses_its_recorded_classes(tmp_path):
    """A multi-class trial recorded 4 output channels (background first) and softmax: the figure loads its
    weights into that network and scores the foreground classes only."""
    sweep_dir = tmp_path / "acdc"
    cache = prepare_acdc_cache(tmp_path / "raw", sweep_dir / "cache", size=32, slices=4, patients=2, n_folds=2)
    config = {
        "config_id": "dddd444444",
        "fold": 1,
        "arch": "unet",
        "encoder": "resnet18",
        "loss": "dice",
        "loss_params": {},
        "context": 1,
        "classes": ["background", "RV", "MYO", "LV"],
        "activation": "softmax",
        "threshold": 0.5,
        "include_background": False,
        "batch_size": 2,
        "cache_dir": str(cache),
    }
    folder = sweep_dir / "ray" / "tune" / "dice-dddd444444-fold1" / "checkpoint_000000"
    folder.mkdir(parents=True)
    (folder.parent / "params.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    torch.save(build_model("unet", "resnet18", classes=4).state_dict(), folder / "best_model.pt")
    scored = pd.DataFrame([{"config_id": "dddd444444", "loss": "dice", "dice": 0.5}])

    figure = plot_qualitative(
        sweep_dir, scored, pd.DataFrame(), None, ["RV", "MYO", "LV"], tmp_path / "fig9_qualitative.png"
    )
    assert figure.path.stat().st_size > 0 and "one-hot argmax of the softmax" in figure.caption
    shown = pd.read_csv(tmp_path / QUALITATIVE_SLICES_FILE)
    assert [c for c in shown.columns if c.startswith("dice")] == ["dice", "dice.RV", "dice.MYO", "dice.LV"]
    assert set(shown["fold"]) == {1} and shown["dice"].between(0, 1).all()

    # weights of another network: the figure is unavailable, with the reason
    torch.save(build_model("unet", "resnet18", classes=3).state_dict(), folder / "best_model.pt")
    with pytest.raises(QualitativeUnavailable, match="4 output channels"):
        plot_qualitative(sweep_dir, scored, pd.DataFrame(), None, ["RV", "MYO", "LV"], tmp_path / "again.png")
