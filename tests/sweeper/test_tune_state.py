"""Reading Ray Tune's experiment state from its file: hand-made files shaped like Tune 2.60's."""

import json
import os

from sweeper.tune_state import RUNNING, TERMINATED, UNKNOWN, TuneTrialState, read_tune_trials


def write_state(tune_dir, name, trial_data, mtime):
    path = tune_dir / name
    path.write_text(json.dumps({"trial_data": trial_data, "runner_data": {}, "stats": {"start_time": 0.0}}))
    os.utime(path, (mtime, mtime))
    return path


def test_reads_the_newest_state_file_with_trials_as_json_text_or_objects(tmp_path):
    write_state(
        tmp_path,
        "experiment_state-2026-01-01_00-00-00.json",
        [[json.dumps({"trial_id": "old", "status": RUNNING, "config": {}}), "{}"]],
        mtime=100,
    )
    write_state(
        tmp_path,
        "experiment_state-2026-01-02_00-00-00.json",
        [
            [json.dumps({"trial_id": "a", "status": TERMINATED, "config": {"config_id": "c1", "fold": 0}}), "{}"],
            [{"trial_id": "b", "config": {"config_id": "c1", "fold": 1}}, "{}"],  # object form, no status
        ],
        mtime=200,
    )
    assert read_tune_trials(tmp_path) == [
        TuneTrialState("a", TERMINATED, {"config_id": "c1", "fold": 0}),
        TuneTrialState("b", UNKNOWN, {"config_id": "c1", "fold": 1}),
    ]


def test_no_folder_no_file_or_a_file_caught_mid_write_reads_as_no_trials(tmp_path):
    assert read_tune_trials(tmp_path / "absent") == []
    assert read_tune_trials(tmp_path) == []
    (tmp_path / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": [["{\\"trial_')
    assert read_tune_trials(tmp_path) == []
