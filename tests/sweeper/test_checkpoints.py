"""The checkpoint policy: Tune keeps all, the driver deletes what the newest experiment snapshot no longer names;
a resumed fold trial takes the newest complete checkpoint on storage."""

import json
import pickle

from sweeper.checkpoints import CheckpointCleaner, remove_superseded_checkpoints, superseded_checkpoints
from sweeper.tune_state import snapshot_checkpoints
from trainables.checkpoint_files import (
    complete_checkpoint,
    fold_trial_dirs,
    fold_trial_identity,
    highest_checkpoint_index,
    newest_complete_checkpoint,
    write_manifest,
)
from trainables.contract import MANIFEST_FILE


def write_trial(tune_dir, name, epochs):
    trial = tune_dir / name
    for k in range(epochs):
        (trial / f"checkpoint_{k:06d}").mkdir(parents=True)
        (trial / f"checkpoint_{k:06d}" / "state.pt").write_bytes(b"w")
    return trial


def write_snapshot(tune_dir, newest: dict[str, list[int]], name="experiment_state-2026-01-01_00-00-00.json"):
    """A state file shaped as Tune 2.60 writes it: the checkpoint manager is a cloudpickle fallback whose bytes
    hold every checkpoint path (a plain pickle of the paths stands in for it)."""
    entries = []
    for trial, indices in newest.items():
        paths = [f"{tune_dir}/{trial}/checkpoint_{k:06d}" for k in indices]
        manager = {"_type": "CLOUDPICKLE_FALLBACK", "value": pickle.dumps(("_CheckpointManager", paths)).hex()}
        entries.append(
            [json.dumps({"trial_id": trial[-4:], "status": "RUNNING"}), json.dumps({"checkpoint_manager": manager})]
        )
    (tune_dir / name).write_text(json.dumps({"trial_data": entries, "runner_data": {}}))


def test_snapshot_names_each_trials_newest_checkpoint(tmp_path):
    write_snapshot(tmp_path, {"dice-aa-fold0-0001": [0, 1, 2], "dice-aa-fold1-0002": [0]})
    assert snapshot_checkpoints(tmp_path) == {"dice-aa-fold0-0001": 2, "dice-aa-fold1-0002": 0}
    assert snapshot_checkpoints(tmp_path / "none") is None
    (tmp_path / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": [[')  # caught mid-write
    assert snapshot_checkpoints(tmp_path) is None


def test_only_checkpoints_older_than_the_snapshots_are_deleted(tmp_path):
    running = write_trial(tmp_path, "tversky-bb-fold0-0003", 4)  # epoch 4 written since the last snapshot
    ended = write_trial(tmp_path, "dice-aa-fold0-0001", 3)
    fresh = write_trial(tmp_path, "dice-aa-fold1-0002", 1)
    write_snapshot(tmp_path, {running.name: [0, 1, 2], ended.name: [0, 1, 2], fresh.name: [0]})
    assert superseded_checkpoints(running, 2) == [running / "checkpoint_000000", running / "checkpoint_000001"]

    removed = remove_superseded_checkpoints(tmp_path)
    assert len(removed) == 4
    # a resume reads the snapshot: it finds checkpoint 2; the newer one (epoch 4) stays for a retry in this driver
    assert sorted(p.name for p in running.iterdir()) == ["checkpoint_000002", "checkpoint_000003"]
    assert sorted(p.name for p in ended.iterdir()) == ["checkpoint_000002"]
    assert sorted(p.name for p in fresh.iterdir()) == ["checkpoint_000000"]


def test_no_snapshot_deletes_nothing(tmp_path):
    trial = write_trial(tmp_path, "dice-aa-fold0-0001", 3)
    assert remove_superseded_checkpoints(tmp_path) == []
    assert len(list(trial.iterdir())) == 3


def test_cleaner_is_throttled_while_trials_run_and_always_cleans_at_the_end(tmp_path):
    trial = write_trial(tmp_path, "dice-aa-fold0-0001", 2)
    write_snapshot(tmp_path, {trial.name: [0, 1]})
    cleaner = pickle.loads(pickle.dumps(CheckpointCleaner(tmp_path, every_s=60)))  # Tune pickles callbacks
    cleaner.on_checkpoint(iteration=1, trials=[], trial=None, checkpoint=None)
    assert [p.name for p in trial.iterdir()] == ["checkpoint_000001"]
    (trial / "checkpoint_000002").mkdir()
    write_snapshot(tmp_path, {trial.name: [1, 2]})
    cleaner.on_checkpoint(iteration=2, trials=[], trial=None, checkpoint=None)  # within every_s: nothing
    assert len(list(trial.iterdir())) == 2
    cleaner.on_experiment_end(trials=[])
    assert [p.name for p in trial.iterdir()] == ["checkpoint_000002"]


# -- which checkpoint a resumed fold trial takes: complete ones (manifest), the newest on storage -------------------

TRIAL = fold_trial_identity("aa", 0)


def write_checkpoint(folder, epoch, trial=TRIAL):
    """A checkpoint as run_fold writes it: its files, then the manifest naming them."""
    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(b"s" * (100 + epoch))
    (folder / "best_model.pt").write_bytes(b"b" * 50)
    write_manifest(folder, {"epoch": epoch, "best.dice": 0.5, "loss_detail": ""}, trial)
    return folder


def test_a_checkpoint_is_complete_only_when_every_file_its_manifest_lists_has_its_size(tmp_path):
    folder = write_checkpoint(tmp_path / "checkpoint_000000", epoch=2)
    stored = complete_checkpoint(folder)
    assert stored is not None and stored.epoch == 2 and stored.trial == TRIAL
    assert stored.result == {"epoch": 2, "best.dice": 0.5, "loss_detail": ""}

    missing = write_checkpoint(tmp_path / "missing", epoch=2)
    (missing / "best_model.pt").unlink()
    truncated = write_checkpoint(tmp_path / "truncated", epoch=2)
    (truncated / "state.pt").write_bytes(b"s" * 10)  # the copy cut short
    unlisted = write_checkpoint(tmp_path / "no_manifest", epoch=2)
    (unlisted / MANIFEST_FILE).unlink()
    cut = write_checkpoint(tmp_path / "cut_manifest", epoch=2)
    (cut / MANIFEST_FILE).write_text((cut / MANIFEST_FILE).read_text()[:20])
    for folder in (missing, truncated, unlisted, cut):
        assert complete_checkpoint(folder) is None, folder.name


def test_the_newest_complete_checkpoint_is_chosen_by_epoch_across_the_fold_trials_folders(tmp_path):
    own = tmp_path / "dice-aa-fold0-t2"
    write_checkpoint(own / "checkpoint_000000", epoch=1)
    write_checkpoint(own / "checkpoint_000001", epoch=2)
    half = write_checkpoint(own / "checkpoint_000002", epoch=3)
    (half / "best_model.pt").unlink()  # epoch 3's copy was cut short: not a candidate
    assert newest_complete_checkpoint([own], TRIAL).epoch == 2
    assert highest_checkpoint_index(own) == 2 and highest_checkpoint_index(tmp_path / "none") == -1

    # the same fold trial under an earlier trial id (started after the last snapshot): its folder counts
    earlier = tmp_path / "dice-aa-fold0-t1"
    write_checkpoint(earlier / "checkpoint_000000", epoch=4)
    write_checkpoint(
        tmp_path / "dice-aa-fold0-r1-t3" / "checkpoint_000005", epoch=9, trial=fold_trial_identity("aa", 0, 1)
    )
    write_checkpoint(tmp_path / "dice-aa-fold1-t4" / "checkpoint_000005", epoch=9, trial=fold_trial_identity("aa", 1))
    assert fold_trial_dirs(own, "t2") == [own, earlier]  # not repeat 1, not fold 1
    assert fold_trial_dirs(own, "other") == [own]
    assert newest_complete_checkpoint(fold_trial_dirs(own, "t2"), TRIAL).path == earlier / "checkpoint_000000"
    # a folder of another fold trial is never taken, whatever its name
    assert newest_complete_checkpoint([tmp_path / "dice-aa-fold1-t4"], TRIAL) is None
