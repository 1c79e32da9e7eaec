"""The trial loop outside Ray: reports per epoch, best-epoch bookkeeping, resume, non-finite loss."""

import math
import tempfile
from pathlib import Path

import pytest
import torch

from trainables import train as train_module
from trainables.data import generate_uwmgi, prepare_cache
from trainables.train import (
    BEST_WEIGHTS_FILE,
    CASES_FILE,
    STATE_FILE,
    NonFiniteLossError,
    TrialConfig,
    checkpoint_scratch,
    run_fold,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("gi")
    generate_uwmgi(root / "data", cases=3, slices_per_scan=6, image_size=32, seed=1)
    return prepare_cache(root / "data", root / "cache", image_size=32, n_folds=3)


def config(cache, **over):
    base = dict(
        cache_dir=str(cache),
        fold=0,
        arch="unet",
        encoder="resnet18",
        loss="tversky",
        loss_params={"alpha": 0.3, "beta": 0.7},
        config_id="x",
        image_size=32,
        epochs=2,
        batch_size=4,
        lr=1e-3,
        max_train_batches=2,
        augmentation="none",
    )
    base.update(over)
    return base


class Recorder:
    def __init__(self, keep=None):
        self.results, self.keep, self.saved = [], keep, None

    def __call__(self, metrics, checkpoint_dir):
        self.results.append(metrics)
        assert (checkpoint_dir / STATE_FILE).is_file() and (checkpoint_dir / BEST_WEIGHTS_FILE).is_file()
        if self.keep is not None and metrics["epoch"] == 1:
            import shutil

            shutil.copytree(checkpoint_dir, self.keep)


def test_reports_each_epoch_with_metrics_and_best_epoch(cache, tmp_path):
    recorder = Recorder()
    run_fold(config(cache), recorder)
    assert [r["epoch"] for r in recorder.results] == [1, 2]
    last = recorder.results[-1]
    for key in ["train_loss", "val_loss", "dice", "sensitivity.small_bowel", "best.dice", "best.precision.stomach"]:
        assert math.isfinite(last[key]), key
    best = last["best_epoch"]
    assert last["best.dice"] == recorder.results[best - 1]["dice"] == max(r["dice"] for r in recorder.results)


def test_resume_continues_from_the_checkpoint(cache, tmp_path):
    first = Recorder(keep=tmp_path / "ckpt")
    run_fold(config(cache, epochs=2), first)
    resumed = Recorder()
    run_fold(config(cache, epochs=2), resumed, checkpoint_dir=tmp_path / "ckpt")
    assert [r["epoch"] for r in resumed.results] == [2]  # epoch 1 is not trained again
    assert resumed.results[0]["lr"] == pytest.approx(first.results[1]["lr"])  # schedule restored


def test_a_trial_resumed_mid_schedule_trains_each_epoch_at_the_uninterrupted_learning_rate(cache, tmp_path):
    # SGD with Nesterov momentum, warm-up then step decay: interrupted after 2 of 5 epochs and resumed
    training = dict(
        epochs=5,
        optimizer={"name": "sgd", "momentum": 0.9, "nesterov": True},
        schedule={"name": "step", "step_epochs": 1, "factor": 0.5, "warmup_epochs": 2},
    )
    whole = Recorder()
    run_fold(config(cache, **training), whole)

    class StopAfter(Recorder):
        def __call__(self, metrics, checkpoint_dir):
            super().__call__(metrics, checkpoint_dir)
            if metrics["epoch"] == 2:
                import shutil

                shutil.copytree(checkpoint_dir, tmp_path / "epoch2")

    run_fold(config(cache, **training), StopAfter())
    resumed = Recorder()
    run_fold(config(cache, **training), resumed, checkpoint_dir=tmp_path / "epoch2")
    assert [r["epoch"] for r in resumed.results] == [3, 4, 5]
    assert [r["lr"] for r in resumed.results] == [r["lr"] for r in whole.results[2:]]
    assert [r["lr"] for r in whole.results] == pytest.approx([1e-3 * f for f in (0.55, 1.0, 0.5, 0.25, 0.125)])


def test_sparse_checkpoints_come_every_nth_epoch_and_at_the_last_and_resume_from_the_newest(cache, tmp_path):
    # checkpoint_every 2 of 3 epochs: checkpoints after epochs 2 and 3; a trial interrupted in epoch 3
    # resumes from epoch 2's
    checkpoints = {}

    def report(metrics, checkpoint_dir):
        checkpoints[metrics["epoch"]] = checkpoint_dir
        if checkpoint_dir is not None:
            import shutil

            shutil.copytree(checkpoint_dir, tmp_path / f"epoch{metrics['epoch']}")

    whole = run_fold(config(cache, epochs=3, checkpoint_every=2), report)
    assert [epoch for epoch, folder in checkpoints.items() if folder is not None] == [2, 3]
    last = torch.load(tmp_path / "epoch3" / STATE_FILE, weights_only=False)
    assert last["epoch"] == 3 and last["best_metrics"]["best_epoch"] == whole["best_epoch"]
    assert (tmp_path / "epoch3" / BEST_WEIGHTS_FILE).is_file() and (tmp_path / "epoch3" / CASES_FILE).is_file()

    resumed = Recorder()
    run_fold(config(cache, epochs=3, checkpoint_every=2), resumed, checkpoint_dir=tmp_path / "epoch2")
    assert [r["epoch"] for r in resumed.results] == [3]
    assert resumed.results[0]["lr"] == pytest.approx(whole["lr"])  # the schedule goes on where it was


def test_non_finite_loss_stops_with_a_clear_reason(cache, monkeypatch):
    class NanLoss(torch.nn.Module):
        def forward(self, logits, target):
            return logits.mean() * float("nan")

    monkeypatch.setattr(train_module, "build_configured_loss", lambda *args, **kwargs: NanLoss())
    with pytest.raises(NonFiniteLossError, match="lower training.lr"):
        run_fold(config(cache, epochs=1), Recorder())


def test_calf_reads_training_fold_statistics_and_reports_its_choice(cache):
    recorder = Recorder()
    run_fold(config(cache, loss="calf", loss_params={}, epochs=1), recorder)
    detail = recorder.results[0]["loss_detail"]
    assert detail.startswith("CalfLoss:") and detail.split(":")[1] in {
        "fisher",
        "logit",
        "arcsine",
        "log10_bce",
        "bce_dice",
        "ln_bce",
    }


def test_compound_loss_with_per_class_knobs_trains(cache):
    recorder = Recorder()
    params = {"focal.gamma": 1.0, "pm_dice.gamma.large_bowel": 2.0, "pm_dice.gamma.stomach": 0.5}
    run_fold(config(cache, loss="0.5*focal + 0.5*pm_dice", loss_params=params, epochs=1), recorder)
    assert math.isfinite(recorder.results[0]["train_loss"]) and recorder.results[0]["loss_detail"] == ""


def test_training_fold_statistics_use_training_slices_only(cache):
    from trainables.data import SliceDataset
    from trainables.train import TrialConfig, training_fold_statistics

    cfg = TrialConfig.from_dict(config(cache))
    train = SliceDataset(cache, [1, 2]).index
    stats = training_fold_statistics(train, cfg)
    areas = train[[f"area_{c}" for c in cfg.classes]].to_numpy().sum(axis=1)
    assert stats["foreground_areas"] == areas[areas > 0].tolist()
    assert stats["class_frequencies"][0] == pytest.approx(train["area_large_bowel"].sum() / (len(train) * 32 * 32))


def test_named_checkpoint_scratch_clears_what_a_killed_attempt_left_and_is_removed_after():
    leftover = Path(tempfile.gettempdir()) / "sweeper-ckpt-test0001"
    leftover.mkdir(exist_ok=True)
    (leftover / STATE_FILE).write_bytes(b"half-written by a worker killed mid-save")
    with checkpoint_scratch("test0001") as folder:
        assert folder == leftover and not any(folder.iterdir())  # the retry starts from an empty folder
        (folder / STATE_FILE).write_bytes(b"epoch 2")
    assert not folder.exists()
    with checkpoint_scratch() as unnamed:
        assert unnamed.name.startswith("sweeper-ckpt-") and unnamed.is_dir()
    assert not unnamed.exists()


class CaseRecorder(Recorder):
    """Also reads the case records each checkpoint holds."""

    def __init__(self, keep=None):
        super().__init__(keep)
        self.cases = []

    def __call__(self, metrics, checkpoint_dir):
        import pandas as pd

        from trainables.contract import CASES_FILE

        super().__call__(metrics, checkpoint_dir)
        self.cases.append(pd.read_parquet(checkpoint_dir / CASES_FILE))


def test_checkpoints_hold_the_best_epochs_case_records_consistent_with_its_metrics(cache):
    import numpy as np
    import pandas as pd

    from trainables.data import load_index
    from trainables.metrics import CASE_COLUMNS

    recorder = CaseRecorder()
    run_fold(config(cache, epochs=2, threshold_bins=20), recorder)
    last = recorder.results[-1]
    frame = recorder.cases[-1]
    pd.testing.assert_frame_equal(frame, recorder.cases[last["best_epoch"] - 1])  # the best epoch's records
    index = load_index(cache)
    val = index[index["fold"] == 0]
    classes = ("large_bowel", "small_bowel", "stomach")
    assert list(frame.columns) == list(CASE_COLUMNS) and len(frame) == len(val) * len(classes)
    assert set(frame["fold"]) == {0} and set(frame["patient"]) == set(val["patient"])
    assert sorted(set(zip(frame["scan"], frame["slice"]))) == sorted(zip(val["scan"], val["slice_number"]))
    for cls in classes:
        rows = frame[frame["class"] == cls]
        assert len(rows) == len(val) and rows["area"].sum() == val[f"area_{cls}"].sum()
        tp, fp, fn = (rows[k].to_numpy(dtype=float) for k in ("tp", "fp", "fn"))
        pooled = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()) if tp.sum() + fp.sum() + fn.sum() else 1.0
        assert last[f"best.pooled_dice.{cls}"] == pytest.approx(pooled, abs=1e-9)
        assert last[f"best.dice.{cls}"] == pytest.approx(np.mean((2 * tp + 1) / (2 * tp + fp + fn + 1)), abs=1e-9)
        assert last[f"best.nsd.{cls}"] == pytest.approx(rows["nsd"].mean(), abs=1e-6)
        true, found = rows["objects_true"].sum(), rows["objects_found"].sum()
        assert last[f"best.pooled_object_sensitivity.{cls}"] == pytest.approx(found / true if true else 1.0)
        fg, bg = np.stack(rows["hist_fg"].to_list()), np.stack(rows["hist_bg"].to_list())
        assert (fg[:, 10:].sum(1) == tp).all() and (bg[:, 10:].sum(1) == fp).all()  # 0.5 = bin 10 of 20
        assert (fg.sum(1) + bg.sum(1) == 32 * 32).all()


def test_a_resumed_trial_keeps_the_case_records_of_its_earlier_best_epoch(cache, tmp_path, monkeypatch):
    import pandas as pd

    first = CaseRecorder(keep=tmp_path / "ckpt")
    run_fold(config(cache, epochs=1), first)
    evaluate = train_module._evaluate

    def worse(*args, **kwargs):  # epoch 2 never beats epoch 1: its records must come from the checkpoint
        val_loss, scores = evaluate(*args, **kwargs)
        return val_loss, {**scores, "dice": -1.0}

    monkeypatch.setattr(train_module, "_evaluate", worse)
    resumed = CaseRecorder()
    run_fold(config(cache, epochs=2), resumed, checkpoint_dir=tmp_path / "ckpt")
    assert resumed.results[0]["best_epoch"] == 1
    pd.testing.assert_frame_equal(resumed.cases[0], first.cases[0])


def keep_checkpoints(tmp_path):
    """A report that copies each epoch's checkpoint to ``tmp_path/epoch<N>`` (as Tune copies it to storage)."""
    import shutil

    def report(metrics, checkpoint_dir):
        if checkpoint_dir is not None:
            shutil.copytree(checkpoint_dir, tmp_path / f"epoch{metrics['epoch']}")

    return report


def test_each_checkpoint_ends_with_a_manifest_of_its_files_epoch_trial_and_result(cache, tmp_path):
    from trainables.checkpoint_files import complete_checkpoint, fold_trial_identity

    whole = run_fold(config(cache, epochs=2), keep_checkpoints(tmp_path))
    stored = complete_checkpoint(tmp_path / "epoch2")
    assert stored is not None and stored.epoch == 2 and stored.trial == fold_trial_identity("x", 0, 0)
    assert stored.result == pytest.approx(whole, nan_ok=True)
    assert complete_checkpoint(tmp_path / "epoch1").epoch == 1


def test_a_checkpoint_of_the_last_epoch_reports_its_result_once_and_trains_nothing(cache, tmp_path, monkeypatch):
    from trainables.contract import REPLAYED_KEY

    whole = run_fold(config(cache, epochs=2), keep_checkpoints(tmp_path))

    def no_training(*args, **kwargs):
        raise AssertionError("a trial that had ended trains again")

    monkeypatch.setattr(train_module, "make_loaders", no_training)
    reports = []
    again = run_fold(config(cache, epochs=2), lambda m, d: reports.append((m, d)), checkpoint_dir=tmp_path / "epoch2")
    [(metrics, folder)] = reports
    assert folder == tmp_path / "epoch2" and metrics[REPLAYED_KEY] is True and again == metrics
    assert {k: v for k, v in metrics.items() if k != REPLAYED_KEY} == pytest.approx(whole, nan_ok=True)


def test_a_replayed_checkpoint_is_reported_again_then_training_goes_on(cache, tmp_path):
    from trainables.contract import REPLAYED_KEY

    run_fold(config(cache, epochs=2), keep_checkpoints(tmp_path))
    resumed = Recorder()
    run_fold(config(cache, epochs=2), resumed, checkpoint_dir=tmp_path / "epoch1", replay=True)
    assert [(r["epoch"], r.get(REPLAYED_KEY, False)) for r in resumed.results] == [(1, True), (2, False)]


def test_a_newer_complete_checkpoint_on_storage_wins_over_the_one_tune_names(cache, tmp_path):
    import shutil

    from trainables.train import newer_checkpoint_on_storage

    run_fold(config(cache, epochs=2), keep_checkpoints(tmp_path / "kept"))
    trial = tmp_path / "tversky-x-fold0-t1"
    shutil.copytree(tmp_path / "kept" / "epoch1", trial / "checkpoint_000000")  # the snapshot names this one
    shutil.copytree(tmp_path / "kept" / "epoch2", trial / "checkpoint_000001")  # written after the snapshot
    cfg = TrialConfig.from_dict(config(cache, epochs=2))
    newer = newer_checkpoint_on_storage(trial, "t1", cfg, trial / "checkpoint_000000")
    assert newer is not None and newer.path == trial / "checkpoint_000001" and newer.epoch == 2
    assert newer_checkpoint_on_storage(trial, "t1", cfg, None).epoch == 2  # Tune names none
    assert newer_checkpoint_on_storage(trial, "t1", cfg, trial / "checkpoint_000001") is None  # Tune's is newest
    (trial / "checkpoint_000001" / BEST_WEIGHTS_FILE).write_bytes(b"cut")  # half-copied when the driver died
    assert newer_checkpoint_on_storage(trial, "t1", cfg, trial / "checkpoint_000000") is None
    other_fold = TrialConfig.from_dict(config(cache, epochs=2, fold=1))
    assert newer_checkpoint_on_storage(trial, "t1", other_fold, None) is None
