"""Bad input, one row per case of the README's "Bad input" table: each is rejected before Ray starts.

Every case goes through what `sweeper launch spec.yaml` does -- :func:`load_spec` (pydantic + preflight),
then :func:`sweeper.launch.launch` -- and must fail with a message naming the field, file or folder and
the fix, while Ray was never initialised and no Tune folder was made. Data cases corrupt a tiny
generated UW-Madison GI data set (2 patients x 4 slices of 32 px). Tests run as root, for whom no
permission bit stops a write, so "results folder not writable" is a results path that is an existing
file, or a path under a file.
"""

from __future__ import annotations

import copy
import csv
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import ray
import yaml

from sweeper.launch import launch
from sweeper.preflight import BadInputError
from sweeper.spec import SpecError, load_spec

# --- helpers --------------------------------------------------------------------------------------


def _rows(root: Path) -> list[list[str]]:
    with open(root / "train.csv", newline="") as fh:
        return list(csv.reader(fh))


def _write_rows(root: Path, rows: list[list[str]]) -> None:
    with open(root / "train.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def _set_rle(root: Path, rle: str) -> None:
    """Gives the first slice's stomach row of case1 the segmentation ``rle``."""
    rows = _rows(root)
    for row in rows:
        if row[0] == "case1_day1_slice_0001" and row[1] == "stomach":
            row[2] = rle
    _write_rows(root, rows)


def _png(root: Path, number: int = 2) -> Path:
    return next((root / "train/case1/case1_day1/scans").glob(f"slice_{number:04d}_*.png"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(40, len(data) // 3)])  # header (IHDR) intact, pixels cut off


def _colour(path: Path) -> None:
    h, w = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape
    cv2.imwrite(str(path), np.zeros((h, w, 3), np.uint16))


def _resize_png(path: Path, rename: bool) -> None:
    cv2.imwrite(str(path), np.zeros((48, 48), np.uint16))
    if rename:  # a consistent name: slice_0002_48_48_1.50_1.50.png, another size than the scan's others
        parts = path.name.split("_")
        path.rename(path.with_name("_".join([parts[0], parts[1], "48", "48", *parts[4:]])))


def _one_slice_scan(root: Path) -> None:
    for number in (2, 3, 4):
        _png(root, number).unlink()
    _write_rows(
        root, [r for r in _rows(root) if not r[0].startswith("case1_day1_slice_000") or r[0] == "case1_day1_slice_0001"]
    )


def _duplicate_row(root: Path) -> None:
    rows = _rows(root)
    _write_rows(root, rows + [rows[1]])


def _add_row(root: Path, row: list[str]) -> None:
    _write_rows(root, _rows(root) + [row])


def _header_only(root: Path) -> None:
    _write_rows(root, _rows(root)[:1])


def _drop_column(root: Path) -> None:
    _write_rows(root, [r[:2] for r in _rows(root)])


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "taken"
    path.write_text("a file, not a folder\n")
    return path


def _a_sweep_folder(tmp_path: Path) -> Path:
    """``results/other``: a sweep folder given as --results (its frozen spec inside)."""
    sweep = tmp_path / "results" / "other"
    sweep.mkdir(parents=True)
    (sweep / "spec.yaml").write_text("name: other\n")
    (sweep / "optuna.db").write_bytes(b"")
    return sweep


@dataclass
class Case:
    """One bad input: spec overrides, an optional corruption of the GI data set, an environment."""

    id: str
    expect: tuple[str, ...]  # substrings of the message: the field / file, and the fix
    spec: dict[str, Any] = field(default_factory=dict)
    corrupt: Callable[[Path], None] | None = None  # gets the data root of a generated GI data set
    results: Callable[[Path], Path] | None = None  # gets tmp_path, returns the --results path
    storage: str | None = None  # --storage
    free_disk: int | None = None  # bytes the disk reports free (a full disk cannot be made here safely)
    yaml_edit: Callable[[str, Path], str] | None = None  # gets the spec's YAML text and tmp_path, returns new text
    address: str | None = None  # --address
    env: dict[str, str] = field(default_factory=dict)  # environment variables of the launch


def _yaml_append(text: str) -> Callable[[str, Path], str]:
    """Appends ``text`` (``TMP`` standing for tmp_path) to the spec's YAML: a section or key given twice."""
    return lambda spec, tmp: spec + text.replace("TMP", str(tmp))


def _loss(name: str, **params: Any) -> dict[str, Any]:
    return {"losses": [{"name": name, "params": params}]}


def _drop_slice(root: Path, number: int = 2) -> None:
    """Removes slice ``number`` of case1_day1 (its PNG and rows): a gap inside the scan."""
    _png(root, number).unlink()
    _write_rows(root, [r for r in _rows(root) if r[0] != f"case1_day1_slice_{number:04d}"])


_SYNTHETIC = {"format": "synthetic", "folds": 2, "synthetic": {"cases": 2, "slices_per_scan": 4, "image_size": 32}}


CASES = [
    # --- the spec: pydantic, all problems at once -------------------------------------------------
    Case("unknown_loss", ("losses.0", "unknown loss 'nope'", "sweeper losses"), {"losses": [{"name": "nope"}]}),
    Case(
        "unknown_encoder", ("model.encoders", "resnet9000", "such as mit_b2"), {"model": {"encoders": ["resnet9000"]}}
    ),
    Case(
        "unknown_architecture",
        ("model.architectures", "transformer9000", "choose from"),
        {"model": {"architectures": ["transformer9000"]}},
    ),
    Case(
        "knob_out_of_range",
        ("losses.0.params.alpha", "1.5 is outside [0.0, 1.0]", "give a value in that range"),
        _loss("tversky", alpha=1.5),
    ),
    Case(
        "knob_range_reversed",
        ("losses.0.params.alpha", "low (0.9) must be below high (0.1)", "low < high"),
        _loss("tversky", alpha={"low": 0.9, "high": 0.1}),
    ),
    Case("unknown_knob", ("losses.0.params.gamma", "no knob 'gamma'", "its knobs are"), _loss("tversky", gamma=1.0)),
    Case(
        "constraint_derived_knob_given",
        ("losses.0.params.beta", "derives beta from alpha", "set only alpha"),
        _loss("iou_xy", alpha=1.5, beta=1.0),
    ),
    Case(
        "constraint_knob_out_of_range",
        ("losses.0.params.alpha", "2.5 is outside [0.0, 2.0]"),
        _loss("iou_xy", alpha=2.5),
    ),
    Case(
        "per_class_gamma_count",
        ("losses.0.params.gamma", "2 values for 3 classes", "give one per class"),
        _loss("pm_dice", gamma=[1.0, 2.0]),
    ),
    Case(
        "list_for_scalar_knob",
        ("losses.0.params.alpha", "only for per-class knobs", "give one number"),
        _loss("tversky", alpha=[0.3, 0.5]),
    ),
    Case("zero_batch_size", ("training.batch_size", "greater than or equal to 1"), {"training": {"batch_size": 0}}),
    Case("zero_epochs", ("training.epochs", "greater than or equal to 1"), {"training": {"epochs": 0}}),
    Case("negative_lr", ("training.lr", "greater than 0"), {"training": {"lr": -0.001}}),
    Case(
        "unknown_field", ("training.epoch", "unknown field", "fix its spelling", "epochs"), {"training": {"epoch": 3}}
    ),
    Case("bad_sweep_name", ("name:", "letters, digits"), {"name": "my/sweep"}),
    Case(
        "unknown_format", ("data.format", "'uwmgi'", "'nifti'"), {"data": {"format": "nrrd", "root": "/x", "folds": 2}}
    ),
    Case(
        "unknown_format_option",
        ("data.synthetic.case", "unknown field", "fix its spelling", "cases, days_per_case"),
        {"data": {"format": "synthetic", "folds": 2, "synthetic": {"case": 3}}},
    ),
    Case(
        "no_data_root",
        ("data.root is required", "the one holding train.csv"),
        {"data": {"format": "uwmgi", "folds": 2}},
    ),
    Case(
        "context_out_of_range",
        ("data.context", "less than or equal to 5"),
        {"data": {"format": "synthetic", "folds": 2, "context": 9}},
    ),
    Case(
        "run_fold_outside_folds",
        ("data.run_folds [3]", "list folds below data.folds"),
        {"data": {"format": "synthetic", "folds": 2, "run_folds": [3]}},
    ),
    Case(
        "grid_with_searched_knob",
        ("search.mode grid", "losses.0.params.alpha", "give numbers"),
        {**_loss("tversky", alpha="search"), "search": {"mode": "grid"}},
    ),
    Case("optuna_without_budget", ("search.budget is required",), {"search": {"mode": "optuna"}}),
    Case(
        "unknown_objective",
        ("search.objectives.0.metric", "sensitivity.liver", "choose from"),
        {"search": {"budget": 2, "objectives": [{"metric": "sensitivity.liver"}]}},
    ),
    Case(
        "unknown_select_metric",
        ("training.select_metric", "'iou3d'", "choose from"),
        {"training": {"select_metric": "iou3d"}},
    ),
    Case("loss_listed_twice", ("losses:", "list it once"), {"losses": [{"name": "dice"}, {"name": "dice"}]}),
    Case(
        "fractional_gpus_above_one",
        ("resources.gpus_per_trial", "fractions below 1", "whole number"),
        {"resources": {"gpus_per_trial": 1.5}},
    ),
    Case(
        "zero_max_concurrent",
        ("resources.max_concurrent", "greater than or equal to 1"),
        {"resources": {"max_concurrent": 0}},
    ),
    Case("unknown_storage_scheme_in_spec", ("storage:", "'foo://'", "s3://"), {"storage": "foo://bucket"}),
    # --- the spec against the files and the machine (preflight, then launch before Ray) ---------------
    Case(
        "more_folds_than_patients",
        ("data.folds", "5 folds", "generate at least as many patients"),
        {"data": {"format": "synthetic", "folds": 5, "synthetic": {"cases": 3}}},
    ),
    Case(
        "more_folds_than_patients_gi",
        ("data.folds", "only 2 patients", "use at most 2 folds"),
        {"data": {"folds": 3}},
        corrupt=lambda root: None,
    ),
    Case(
        "data_root_without_train_csv",
        ("data.root", "has no train.csv", "point it at"),
        corrupt=lambda root: (root / "train.csv").unlink(),
    ),
    Case(
        "gpus_per_trial_beyond_any_node",
        ("resources.gpus_per_trial", "64 GPUs per trial", "give at most"),
        {"resources": {"gpus_per_trial": 64}},
    ),
    Case(
        "cpus_per_trial_beyond_any_node",
        ("resources.cpus_per_trial", "100000 CPUs per trial", "give at most"),
        {"resources": {"cpus_per_trial": 100000}},
    ),
    # --- the data: a generated UW-Madison GI set, corrupted ----------------------------------------
    Case(
        "missing_png",
        ("slice_0002_W_H_PW_PH.png", "case1_day1_slice_0002", "restore the PNG"),
        corrupt=lambda root: _png(root).unlink(),
    ),
    Case(
        "not_a_png",
        ("slice_0002_", "not a PNG file", "replace it"),
        corrupt=lambda root: _png(root).write_bytes(b"this is not an image"),
    ),
    Case("truncated_png", ("slice_0002_", "cannot read it", "replace it"), corrupt=lambda root: _truncate(_png(root))),
    Case(
        "colour_png", ("slice_0002_", "single-channel (grey)", "replace it"), corrupt=lambda root: _colour(_png(root))
    ),
    Case(
        "malformed_rle",
        ("train.csv", "case1_day1_slice_0001", "'stomach'", "must hold integers", "fix the segmentation"),
        corrupt=lambda root: _set_rle(root, "12 x"),
    ),
    Case(
        "odd_rle",
        ("train.csv", "case1_day1_slice_0001", "odd count", "fix the segmentation"),
        corrupt=lambda root: _set_rle(root, "1 2 3"),
    ),
    Case(
        "rle_past_the_image",
        ("train.csv", "case1_day1_slice_0001", "has only 1024 pixels", "runs inside the image"),
        corrupt=lambda root: _set_rle(root, "1000 100"),
    ),
    Case(
        "rle_start_zero",
        ("train.csv", "case1_day1_slice_0001", ">= 1 (1-indexed)", "fix the segmentation"),
        corrupt=lambda root: _set_rle(root, "0 5"),
    ),
    Case(
        "duplicate_id",
        ("train.csv, line", "duplicated row for id", "keep one row per (id, class)"),
        corrupt=_duplicate_row,
    ),
    Case(
        "unknown_class",
        ("train.csv", "unknown class(es) ['liver']", "list the class in data.classes"),
        corrupt=lambda root: _add_row(root, ["case1_day1_slice_0001", "liver", ""]),
    ),
    Case(
        "malformed_id",
        ("train.csv, line", "malformed id 'case1_slice_1'", "caseN_dayM_slice_XXXX"),
        corrupt=lambda root: _add_row(root, ["case1_slice_1", "stomach", ""]),
    ),
    Case(
        "scan_with_one_slice",
        ("train.csv", "case1_day1 has only one slice", "restore its other slices"),
        corrupt=_one_slice_scan,
    ),
    Case(
        "mixed_sizes_in_one_scan",
        ("slice_0002_48_48", "differs from the scan's first slice", "replace it"),
        corrupt=lambda root: _resize_png(_png(root), rename=True),
    ),
    Case(
        "png_size_not_its_name",
        ("slice_0002_32_32", "its name says", "with the PNG's own size"),
        corrupt=lambda root: _resize_png(_png(root), rename=False),
    ),
    Case("empty_data_set", ("train.csv lists no slices", "point data.root at the full data set"), corrupt=_header_only),
    Case(
        "empty_train_csv_file",
        ("train.csv is empty", "restore the data set's train.csv"),
        corrupt=lambda root: (root / "train.csv").write_text(""),
    ),
    Case(
        "train_csv_missing_column",
        ("train.csv", "missing column(s) ['segmentation']", "expected columns"),
        corrupt=_drop_column,
    ),
    # --- the environment -----------------------------------------------------------------------------
    Case(
        "results_folder_is_a_file",
        ("results folder (--results)", "taken", "not a writable folder", "pass a folder you can write to"),
        results=_a_file,
    ),
    Case(
        "results_folder_under_a_file",
        ("results folder (--results)", "taken/results", "pass a folder you can write to"),
        results=lambda tmp: _a_file(tmp) / "results",
    ),
    Case(
        "results_folder_is_a_sweep_folder",
        ("results folder (--results)", "is a sweep folder (it holds spec.yaml)", "pass the results root"),
        results=lambda tmp: _a_sweep_folder(tmp),
    ),
    Case(
        "storage_path_is_a_file",
        ("sweep folder (--storage", "taken/bad", "pass a folder you can write to"),
        storage="FILE",
    ),
    Case("unknown_storage_scheme_option", ("storage (--storage", "'foo://'", "s3://"), storage="foo://bucket"),
    # --- wrong results the types alone accepted: cross-field and semantic checks of the spec ---------------
    Case(
        "name_of_the_mlflow_store",
        ("name: 'mlartifacts' is the results folder's MLflow store",),
        {"name": "mlartifacts"},
    ),
    Case(
        "lower_is_better_objective_maximised",
        ("search.objectives.0", "'hd95', whose lower values are better", "use direction minimize"),
        {"search": {"budget": 1, "objectives": [{"metric": "hd95", "direction": "maximize"}]}},
    ),
    Case(
        "higher_is_better_objective_minimised",
        ("search.objectives.0", "'dice', whose higher values are better", "use direction maximize"),
        {"search": {"budget": 1, "objectives": [{"metric": "dice", "direction": "minimize"}]}},
    ),
    Case(
        "objective_listed_twice",
        ("search.objectives: 'dice' is listed twice", "list each metric once"),
        {"search": {"budget": 1, "objectives": [{"metric": "dice"}, {"metric": "dice"}]}},
    ),
    Case(
        "tversky_alpha_beta_zero",
        ("losses.0.params: alpha and beta are all 0", "zero gradient", "give at least one a positive value"),
        _loss("tversky", alpha=0.0, beta=0.0),
    ),
    Case(
        "focal_tversky_alpha_beta_zero",
        ("losses.0.params: alpha and beta are all 0", "focal_tversky is constant"),
        _loss("focal_tversky", alpha=0.0, beta=0.0),
    ),
    Case(
        "compound_tversky_term_zero",
        ("losses.0.params: tversky.alpha and tversky.beta are all 0", "give at least one a positive value"),
        {"losses": [{"name": "0.5*tversky + 0.5*dice", "params": {"tversky.alpha": 0.0, "tversky.beta": 0.0}}]},
    ),
    Case(
        "min_lr_above_lr",
        ("training.min_lr (0.001) is above training.lr (0.0001)", "give min_lr at most lr"),
        {"training": {"lr": 1e-4, "min_lr": 1e-3}},
    ),
    Case("search_seed_negative", ("search.seed: -1", "from 0 to 4294967295"), {"search": {"budget": 1, "seed": -1}}),
    Case("training_seed_too_large", ("training.seed: 4294967296", "from 0 to"), {"training": {"seed": 2**32}}),
    Case("fold_seed_negative", ("data.fold_seed: -5", "from 0 to"), {"data": {**_SYNTHETIC, "fold_seed": -5}}),
    Case(
        "encoder_weights_misspelt",
        ("model.encoder_weights: 'imagnet'", "encoder resnet18", "['imagenet'", "leave it out"),
        {"model": {"encoders": ["resnet18"], "encoder_weights": "imagnet"}},
    ),
    Case(
        "encoder_weights_of_another_encoder",
        ("model.encoder_weights: 'ssl'", "encoder mit_b0", "choose from ['imagenet']"),
        {"model": {"encoders": ["resnet18", "mit_b0"], "encoder_weights": "ssl"}},
    ),
    Case("run_folds_empty", ("data.run_folds is empty", "leave it out"), {"data": {**_SYNTHETIC, "run_folds": []}}),
    Case(
        "class_listed_twice",
        ("data.classes lists ['stomach'] twice", "list each class once"),
        {"data": {**_SYNTHETIC, "classes": ["stomach", "stomach"]}},
    ),
    Case("no_classes", ("data.classes is empty", "list the classes"), {"data": {**_SYNTHETIC, "classes": []}}),
    Case(
        "roi_ratio_listed_twice",
        ("data.roi_ratios lists a ratio twice", "list each once"),
        {"data": {**_SYNTHETIC, "roi_ratios": [0.5, 0.5]}},
    ),
    Case(
        "section_of_another_format",
        ("data.nifti: options of format nifti, but data.format is synthetic", "remove the section"),
        {"data": {**_SYNTHETIC, "nifti": {"images": "imagesTr"}}},
    ),
    Case(
        "window_without_window_mode",
        ("data.intensity.window_center applies only to mode window", "data.intensity.mode: window"),
        {"data": {**_SYNTHETIC, "intensity": {"window_center": 40}}},
    ),
    Case(
        "clip_percentiles_reversed",
        ("data.intensity.clip_percentiles", "0 <= lo < hi <= 100"),
        {"data": {**_SYNTHETIC, "intensity": {"clip_percentiles": [99, 1]}}},
    ),
    Case(
        "background_setting_under_multilabel",
        ("training.include_background applies only to data.label_mode multiclass", "remove it"),
        {"training": {"include_background": True}},
    ),
    Case(
        "loss_background_setting_under_multilabel",
        ("training.loss_include_background applies only to data.label_mode multiclass",),
        {"training": {"loss_include_background": False}},
    ),
    Case(
        "budget_with_grid_search",
        ("search.budget applies to search.mode optuna", "a grid runs every configuration (1 here)"),
        {"search": {"mode": "grid", "budget": 5}},
    ),
    Case(
        "image_size_a_network_cannot_take",
        ("data.image_size: fpn with resnet18 needs a size divisible by 32, not 48", "use 32 or 64"),
        {"data": {**_SYNTHETIC, "image_size": 48}, "model": {"architectures": ["fpn"], "encoders": ["resnet18"]}},
    ),
    # --- messages in the user's words: one line per mistake, no pydantic internals --------------------------
    Case(
        "knob_value_not_a_number",
        ("1 problem(s)", "losses.0.params.alpha: 'abc' is not accepted here", "give a number"),
        _loss("tversky", alpha="abc"),
    ),
    Case(
        "loss_not_a_mapping",
        ("losses.0: Input should be a valid dictionary",),
        {"losses": ["dice"]},
    ),
    # --- YAML that is not what the user wrote -------------------------------------------------------------
    Case(
        "section_given_twice",
        ("key 'training' is given twice", "merge them into one"),
        yaml_edit=_yaml_append("training:\n  lr: 0.1\n"),
    ),
    Case(
        "key_given_twice_in_a_section",
        ("key 'epochs' is given twice", "merge them into one"),
        yaml_edit=lambda text, tmp: text.replace("  epochs: 1\n", "  epochs: 1\n  epochs: 3\n"),
    ),
    # --- the tracking store and the Ray address: refused before Ray, not inside it ----------------------------
    Case(
        "tracking_uri_without_scheme",
        ("tracking.uri: 'localhost:5000' has no scheme", "http://localhost:5000", "sqlite:///"),
        {"tracking": {"uri": "localhost:5000"}},
    ),
    Case(
        "tracking_uri_unknown_scheme",
        ("tracking.uri: 'ftp://host/x' has unknown scheme 'ftp://'", "http://HOST:PORT"),
        {"tracking": {"uri": "ftp://host/x"}},
    ),
    Case(
        "tracking_store_folder_uncreatable",
        ("tracking.uri: the store's folder", "taken/sub cannot be created", "a folder you can write to"),
        yaml_edit=lambda text, tmp: text + f"tracking:\n  uri: sqlite:///{_a_file(tmp)}/sub/mlflow.db\n",
    ),
    Case(
        "tracking_environment_without_scheme",
        ("$MLFLOW_TRACKING_URI: 'localhost:5000' has no scheme", "http://localhost:5000", "or unset it"),
        env={"MLFLOW_TRACKING_URI": "localhost:5000"},
    ),
    Case(
        "address_not_a_ray_address",
        ("--address 'foo' is not a Ray address", "auto", "HOST:6379", "ray://HOST:10001"),
        address="foo",
    ),
    Case("address_port_out_of_range", ("--address 'head:99999' is not a Ray address",), address="head:99999"),
    Case("address_with_http_scheme", ("--address 'http://head:8265'", "ray://HOST:10001"), address="http://head:8265"),
    # --- the data against the spec -------------------------------------------------------------------------
    Case(
        "class_the_data_never_contains",
        ("data.classes: ['liver'] never appear in the data set", "remove them from data.classes"),
        {"data": {"classes": ["large_bowel", "small_bowel", "stomach", "liver"]}},
        corrupt=lambda root: None,
    ),
    Case(
        "uwmgi_scan_with_a_slice_gap",
        ("scan case1_day1 has missing slice(s)", "jump from 0001 to 0003", "restore the missing slices"),
        corrupt=_drop_slice,
    ),
    Case(
        "data_root_missing",
        ("data.root:", "has no train.csv", "point it at the UW-Madison GI folder"),
        corrupt=lambda root: shutil.rmtree(root),
    ),
    Case(
        "data_root_is_a_file",
        ("data.root:", "is a file", "give the folder holding the data set"),
        corrupt=lambda root: (shutil.rmtree(root), root.write_text("not a folder\n")),
    ),
    Case(
        "split_file_is_a_folder",
        ("data.split_file:", "is a folder", "give the split YAML/JSON file"),
        {"data": {"split_file": "."}},
        corrupt=lambda root: None,
    ),
    Case(
        "disk_too_small_for_checkpoints",
        (
            "disk space at",
            "16 fold trials still to run need about",
            "GB is free",
            "point --results/--storage at a larger disk",
            "search.budget",
        ),
        {"search": {"budget": 8}},
        free_disk=1024**3,
    ),
]


@pytest.fixture(scope="module")
def gi_template(tmp_path_factory) -> Path:
    from trainables.data import generate_uwmgi

    return generate_uwmgi(tmp_path_factory.mktemp("gi") / "data", cases=2, slices_per_scan=4, image_size=32, seed=3)


#: the smallest valid spec (generated data, one loss, one configuration, one epoch); each bad input edits a copy
SMALL_SPEC: dict[str, Any] = {
    "name": "bad",
    "data": {
        "format": "synthetic",
        "folds": 2,
        "image_size": 32,
        "synthetic": {"cases": 2, "slices_per_scan": 4, "image_size": 32},
    },
    "losses": [{"name": "dice"}],
    "search": {"budget": 1},
    "training": {"epochs": 1},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
}


def _spec(case: Case, root: Path | None) -> dict[str, Any]:
    raw: dict[str, Any] = copy.deepcopy(SMALL_SPEC)
    if root is not None:
        raw["data"] = {"format": "uwmgi", "root": str(root), "folds": 2, "image_size": 32}
    for key, value in case.spec.items():
        raw[key] = (
            {**raw[key], **value}
            if isinstance(value, dict)
            and key in ("data", "training", "resources")
            and not ("format" in value and key == "data")
            else value
        )
    return raw


def test_table_has_at_least_80_cases_with_unique_ids():
    ids = [c.id for c in CASES]
    assert len(ids) >= 80 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_rejected_before_ray_with_field_and_fix(
    case: Case, tmp_path: Path, gi_template: Path, monkeypatch: pytest.MonkeyPatch
):
    if case.free_disk is not None:
        real = shutil.disk_usage
        monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=case.free_disk))
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    root = None
    if case.corrupt is not None:
        root = shutil.copytree(gi_template, tmp_path / "data")
        case.corrupt(root)
    spec_file = tmp_path / "spec.yaml"
    text = yaml.safe_dump(_spec(case, root), sort_keys=False)
    spec_file.write_text(case.yaml_edit(text, tmp_path) if case.yaml_edit else text)
    results = case.results(tmp_path) if case.results else tmp_path / "results"
    storage = str(_a_file(tmp_path)) if case.storage == "FILE" else case.storage
    assert not ray.is_initialized()

    with pytest.raises((SpecError, BadInputError)) as info:
        launch(load_spec(spec_file), results, storage=storage, address=case.address)  # `sweeper launch spec.yaml`

    message = str(info.value)
    for text in case.expect:
        assert text in message, f"{text!r} not in:\n{message}"
    assert not ray.is_initialized(), "Ray started before the bad input was found"
    assert not list(tmp_path.rglob("tune")), "a Tune experiment folder was made"
