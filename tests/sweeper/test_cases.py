"""Out-of-fold case records: schema, atomic once-only append per fold trial, read, rebuild."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweeper.cases import append_cases, as_cases_table, cases_present, cases_schema, read_cases, rebuild_cases


def records(config_id="cfg_a", fold=0, patients=("p1", "p2"), n_bins=4, offset=0):
    """Two slices per patient, classes a and b; every count consistent with its histograms."""
    rows = []
    for i, patient in enumerate(patients):
        for slice_ in (0, 1):
            for j, cls in enumerate(("a", "b")):
                fg = np.array([0, 1, 0, 2 + i + j + offset])
                bg = np.array([90 - fg.sum(), 3, 1, slice_])
                tp, fn = int(fg[2:].sum()), int(fg[:2].sum())
                fp, tn = int(bg[2:].sum()), int(bg[:2].sum())
                rows.append(
                    {
                        "config_id": config_id,
                        "fold": fold,
                        "patient": patient,
                        "scan": f"{patient}_day1",
                        "slice": slice_,
                        "class": cls,
                        "area": tp + fn,
                        "tp": tp,
                        "fp": fp,
                        "fn": fn,
                        "tn": tn,
                        "nsd": 0.9,
                        "hd95": 2.5,
                        "boundary_f1": 0.8,
                        "objects_true": 1,
                        "objects_found": 1,
                        "objects_pred": 1 + slice_,
                        "objects_correct": 1,
                        "hist_fg": fg.tolist(),
                        "hist_bg": bg.tolist(),
                    }
                )
    return pd.DataFrame(rows)


def test_schema_types_and_histogram_bins():
    schema = cases_schema(20)
    assert schema.field("hist_fg").type == pa.list_(pa.int32(), 20)
    assert schema.field("fold").type == pa.int16() and schema.field("slice").type == pa.int32()
    assert pa.types.is_dictionary(schema.field("class").type)
    table = as_cases_table(records())
    assert table.schema.field("hist_bg").type.list_size == 4
    assert table.num_rows == 8


def test_append_writes_each_fold_trial_once_and_reads_back(tmp_path):
    path = tmp_path / "cases.parquet"
    first = pd.concat([records(fold=0), records(fold=1, patients=("p3",))])
    assert append_cases(path, first) == 12
    assert cases_present(path) == {("cfg_a", 0), ("cfg_a", 1)}
    # a resumed sweep reports fold 1 again (with other numbers): nothing is added, nothing changes
    again = pd.concat([records(fold=1, patients=("p3",), offset=5), records(config_id="cfg_b", fold=0)])
    assert append_cases(path, again) == 8
    table = read_cases(path).to_pandas()
    assert len(table) == 20
    assert not table.duplicated(["config_id", "fold", "patient", "scan", "slice", "class"]).any()
    fold1 = table[(table["config_id"] == "cfg_a") & (table["fold"] == 1)]
    assert fold1["tp"].tolist() == records(fold=1, patients=("p3",)).sort_values(["slice", "class"])["tp"].tolist()
    assert [p.name for p in path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    assert set(read_cases(path, config_ids=["cfg_b"]).column("config_id").to_pylist()) == {"cfg_b"}
    assert read_cases(tmp_path / "missing.parquet").num_rows == 0
    # the folder is one dataset to any Parquet reader
    assert len(pd.read_parquet(path)) == 20


def test_readers_ignore_a_temporary_file_left_by_a_killed_writer(tmp_path):
    path = tmp_path / "cases.parquet"
    append_cases(path, records())
    (path / ".cfg_b.fold0.parquet.123.tmp").write_bytes(b"partial")
    assert read_cases(path).num_rows == 8
    assert cases_present(path) == {("cfg_a", 0)}


def test_rebuild_from_per_trial_files_adds_only_what_is_missing(tmp_path):
    artifacts = tmp_path / "mlartifacts"
    artifacts.mkdir()
    files = []
    for config_id, fold in (("cfg_a", 0), ("cfg_a", 1), ("cfg_b", 0)):
        frame = records(config_id, fold, patients=(f"p{fold}",))
        file = artifacts / f"{config_id}_{fold}.parquet"
        if config_id == "cfg_b":  # a trial's own file may lack config_id
            frame = frame.drop(columns="config_id")
            files.append((config_id, file))
        else:
            files.append(file)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), file)
    path = tmp_path / "cases.parquet"
    append_cases(path, records("cfg_a", 0, patients=("p0",)))  # one fold trial survived
    assert rebuild_cases(path, files) == 8
    assert cases_present(path) == {("cfg_a", 0), ("cfg_a", 1), ("cfg_b", 0)}
    assert rebuild_cases(path, files) == 0


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda f: f.assign(tp=f["tp"] + 1), "tp \\+ fn != area"),
        (lambda f: f.assign(hist_fg=[[h[0] + 1, *h[1:]] for h in f["hist_fg"]]), "sum\\(hist_fg\\) != area"),
        (lambda f: pd.concat([f, f.iloc[:1]]), "duplicate case"),
        (lambda f: f.assign(hist_bg=[h[:3] for h in f["hist_bg"]]), "hist_bg has 3 bins"),
        (lambda f: f.drop(columns="objects_pred"), "lack column"),
    ],
)
def test_inconsistent_records_are_refused_with_the_reason(break_it, message):
    with pytest.raises(ValueError, match=message):
        as_cases_table(break_it(records()))


def test_records_of_another_grid_are_refused(tmp_path):
    path = tmp_path / "cases.parquet"
    append_cases(path, records())
    other = records(fold=1)
    other["hist_fg"] = [[0, 0, *h] for h in other["hist_fg"]]
    other["hist_bg"] = [[0, 0, *h] for h in other["hist_bg"]]
    with pytest.raises(ValueError, match="6 histogram bins but .* 4"):
        append_cases(path, other)


def test_object_counts_not_recorded_are_null_and_leave_the_object_metrics_undefined():
    from sweeper.evidence import EvidenceSettings, bootstrap_metrics, patient_sums

    frame = records()
    for column in ("objects_true", "objects_found", "objects_pred", "objects_correct"):
        frame[column] = pd.array([None] * len(frame), dtype="Int16")
    table = as_cases_table(frame)
    assert table.column("objects_true").null_count == len(frame)
    boot = bootstrap_metrics(
        patient_sums(table),
        EvidenceSettings(resamples=100),
        metrics=("object_sensitivity", "pooled_object_precision", "dice"),
    )
    assert np.isnan(boot.estimate[0, :2]).all() and not np.isnan(boot.estimate[0, 2]).any()


def test_each_repeat_of_a_fold_trial_is_its_own_file_and_old_records_read_as_the_first(tmp_path):
    from sweeper.cases import case_runs_present

    path = tmp_path / "cases.parquet"
    old = records(fold=0)  # records without a repeat column: the first run
    assert append_cases(path, old) == 8
    second = records(fold=0, offset=3).assign(repeat=1)
    assert append_cases(path, second) == 8
    assert append_cases(path, records(fold=0, offset=9).assign(repeat=1)) == 0  # reported again: kept as it was
    assert case_runs_present(path) == {("cfg_a", 0, 0), ("cfg_a", 0, 1)}
    assert cases_present(path) == {("cfg_a", 0)}
    assert sorted(p.name for p in path.iterdir()) == ["cfg_a.fold0.parquet", "cfg_a.fold0.repeat1.parquet"]
    table = read_cases(path).to_pandas()
    assert table.groupby("repeat")["tp"].sum().to_dict() == {0: old["tp"].sum(), 1: second["tp"].sum()}
    # a part written before repeats existed has no repeat column: its file name says it is the first run
    pq.write_table(as_cases_table(records(fold=1)).drop(["repeat"]), path / "cfg_a.fold1.parquet")
    assert set(read_cases(path, config_ids=["cfg_a"]).to_pandas().query("fold == 1")["repeat"]) == {0}
