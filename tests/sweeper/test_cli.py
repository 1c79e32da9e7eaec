"""The command line: help a newcomer reads, validation output, the loss listing."""

import pytest
from click.testing import CliRunner

from sweeper.cli import main
from sweeper.launch import SEARCH_SPACES

# the losses the README lists as registered
DOCUMENTED_LOSSES = [
    "dice",
    "soft_bce",
    "ce",
    "weighted_ce",
    "focal",
    "tversky",
    "focal_tversky",
    "iou_xy",
    "log_dice",
    "generalized_dice",
    "focal_dice",
    "topk_dice",
    "topk_ce",
    "pm_dice",
    "calf",
]


def test_every_command_has_help():
    runner = CliRunner()
    out = runner.invoke(main, ["--help"])
    for command in [
        "validate",
        "launch",
        "leaderboard",
        "pareto",
        "ui",
        "demo",
        "losses",
        "compare",
        "report",
        "status",
    ]:
        assert command in out.output
        sub = runner.invoke(main, [command, "--help"])
        assert sub.exit_code == 0 and "Usage:" in sub.output and len(sub.output.splitlines()) > 3, command


def test_validate_ok_and_every_problem_listed(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["validate", str(SEARCH_SPACES / "demo.yaml")])
    assert out.exit_code == 0 and "OK" in out.output and "5 configurations x 2 folds" in out.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\ndata: {format: synthetic, folds: 2}\n"
        "losses: [{name: tversky, params: {alpha: 3, gama: 1}}]\nsearch: {budget: 0}\n"
    )
    out = runner.invoke(main, ["validate", str(bad)])
    assert out.exit_code != 0
    for field in ["losses.0.params.gama", "losses.0.params.alpha", "search.budget"]:
        assert field in out.output


def test_validate_lists_every_bad_input_of_a_spec_at_once(tmp_path):
    """README "Bad input": one `sweeper validate` run names every spec problem, each with its field."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nstorage: foo://bucket\ndata: {format: synthetic, folds: 2}\n"
        "model: {encoders: [resnet9000], architectures: [transformer9000]}\n"
        "losses: [{name: pm_dice, params: {gamma: [1, 2]}}, {name: iou_xy, params: {beta: 1}}]\n"
        "training: {batch_size: 0, epoch: 3}\nresources: {gpus_per_trial: 1.5}\nsearch: {budget: 2}\n"
    )
    out = CliRunner().invoke(main, ["validate", str(bad)])
    assert out.exit_code != 0 and "8 problem(s)" in out.output
    for field in [
        "storage:",
        "model.encoders",
        "model.architectures",
        "losses.0.params.gamma",
        "losses.1.params.beta",
        "training.batch_size",
        "training.epoch",
        "resources.gpus_per_trial",
    ]:
        assert field in out.output


def test_losses_lists_every_loss_with_knobs_and_source():
    out = CliRunner().invoke(main, ["losses"])
    names = {line.split(":")[0] for line in out.output.splitlines() if not line.startswith(" ")}
    assert set(DOCUMENTED_LOSSES) <= names
    assert "constraint: alpha + beta = 2" in out.output and "one per class" in out.output
    assert out.output.count("source:") == len(names)
    assert out.output.count("module: trainables.losses.") == len(names)
    assert "module: trainables.losses.tversky (TverskyLoss)" in out.output


def test_ui_warns_before_exposing_mlflow_beyond_loopback(tmp_path):
    runner = CliRunner()
    exposed = runner.invoke(main, ["ui", "--results", str(tmp_path), "--host", "0.0.0.0"])
    assert "warning: --host 0.0.0.0 exposes the MLflow UI" in exposed.output and "ssh -L 5000" in exposed.output
    local = runner.invoke(main, ["ui", "--results", str(tmp_path)])
    assert "warning" not in local.output
    assert local.exit_code != 0 and "mlflow.db not found" in local.output  # no store here: nothing served


#: run a CLI command in a fresh interpreter, then print which of torch and Ray it imported
IMPORT_PROBE = """
import json, sys
from sweeper.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print("HEAVY " + json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {"torch", "ray"})))
"""


def heavy_imports(*args: str) -> list[str]:
    """Returns the heavy packages (torch, ray) that ``sweeper ARGS`` imported; fails when the command fails."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.rsplit("HEAVY ", 1)[1])


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    """A sweep folder as a launch leaves it: frozen spec, leaderboard of 2 configurations x 2 folds, Tune folders."""
    import json

    import pandas as pd

    from sweeper.leaderboard import FINISHED, trial_row, write_leaderboard
    from sweeper.spec import dump_spec, parse_spec
    from sweeper.trial_config import trial_settings
    from trainables.contract import Configuration

    sweep = tmp_path_factory.mktemp("results") / "small"
    spec = parse_spec(
        {
            "name": "small",
            "data": {"format": "synthetic", "folds": 2},
            "losses": [{"name": "dice"}, {"name": "tversky", "params": {"alpha": "search"}}],
            "training": {"epochs": 2},
            "search": {"budget": 2},
        }
    )
    sweep.mkdir()
    (sweep / "spec.yaml").write_text(dump_spec(spec))
    settings = trial_settings(spec, sweep / "cache")
    rows = []
    for cid, loss, score in (("aaaa111111", "dice", 0.8), ("bbbb222222", "tversky", 0.6)):
        for fold in (0, 1):
            config = settings.for_fold(
                Configuration(arch="unet", encoder="mit_b2", loss=loss), config_id=cid, fold=fold
            )
            result = {
                "epoch": 2,
                "best_epoch": 2,
                "time_total_s": 5.0,
                "timestamp": 1_700_000_000 + 10 * fold,
                **{f"best.{m}": score + fold / 100 for m in ("dice", "sensitivity", "precision")},
            }
            rows.append(trial_row(config, result, FINISHED))
            folder = sweep / "ray" / "tune" / f"{loss}-{cid}-fold{fold}-x"
            folder.mkdir(parents=True)
            (folder / "params.json").write_text(json.dumps(config.to_dict()))
            (folder / "result.json").write_text(json.dumps(result) + "\n")
    write_leaderboard(pd.DataFrame(rows), sweep)
    return sweep


def test_read_only_commands_import_neither_torch_nor_ray(small_sweep):
    """status, leaderboard, pareto and compare read files: a user waits for neither torch nor Ray."""
    for args in (
        ["status", str(small_sweep)],
        ["leaderboard", str(small_sweep)],
        ["leaderboard", str(small_sweep), "--folds"],
        ["pareto", str(small_sweep)],
        ["pareto", str(small_sweep), "--min-sensitivity", "0.5"],
        ["compare", str(small_sweep), "aaaa", "bbbb"],
    ):
        assert heavy_imports(*args) == [], args


def test_validate_imports_no_ray():
    assert "ray" not in heavy_imports("validate", str(SEARCH_SPACES / "demo.yaml"))


def test_read_only_modules_import_neither_torch_nor_ray():
    import subprocess
    import sys

    code = (
        "import sys, sweeper.leaderboard, sweeper.pareto, sweeper.stats, sweeper.progress; "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray'}); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pareto_keeps_pruned_configurations_off_the_front_unless_asked(tmp_path):
    import pandas as pd

    from sweeper.leaderboard import record_pruned, write_leaderboard

    rows = [
        {"config_id": cid, "fold": 0, "arch": "unet", "encoder": "r", "loss": "dice", "loss_params": "{}"}
        | {"roi_ratio": float("nan"), "loss_detail": "", "status": "finished", "best_epoch": 1, "epochs_done": 1}
        | {"error": "", "sensitivity": sens, "precision": prec, "dice": 0.5}
        for cid, sens, prec in [("aaaa", 0.7, 0.7), ("bbbb", 0.9, 0.9)]
    ]
    record_pruned(tmp_path, "bbbb", reason="fold rung 1: outside the top 1/3", n_folds=1, n_stopped=0)
    write_leaderboard(pd.DataFrame(rows), tmp_path)
    result = CliRunner().invoke(main, ["pareto", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "aaaa" in result.output and "bbbb" not in result.output.split("hypervolume")[0]
    assert "1 pruned" in result.output and (tmp_path / "pareto" / "pareto_excluded.csv").is_file()
    result = CliRunner().invoke(main, ["pareto", str(tmp_path), "--include-partial"])
    assert result.exit_code == 0, result.output
    assert "bbbb" in result.output.split("hypervolume")[0]
    result = CliRunner().invoke(main, ["pareto", str(tmp_path), "--min-sensitivity", "0.8"])
    assert result.exit_code != 0 and "no configuration meets" in result.output


def test_leaderboard_of_a_sweep_written_before_patient_intervals_still_prints(tmp_path):
    import pandas as pd

    from sweeper.leaderboard import FEW_PATIENTS, INTERVAL_METHOD, N_PATIENTS, write_leaderboard
    from sweeper.paths import SweepPaths

    rows = [
        {"config_id": "aaaa", "fold": fold, "arch": "unet", "encoder": "r", "loss": "dice", "loss_params": "{}"}
        | {"roi_ratio": float("nan"), "loss_detail": "", "status": "finished", "best_epoch": 1, "epochs_done": 1}
        | {"error": "", "sensitivity": 0.7 + 0.1 * fold, "precision": 0.8, "dice": 0.5}
        for fold in (0, 1)
    ]
    write_leaderboard(pd.DataFrame(rows), tmp_path)
    table = SweepPaths.at(tmp_path).configs_table
    pd.read_parquet(table).drop(columns=[INTERVAL_METHOD, N_PATIENTS, FEW_PATIENTS]).to_parquet(table)
    result = CliRunner().invoke(main, ["leaderboard", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "aaaa" in result.output and "predates patient-level statistics" in result.output
