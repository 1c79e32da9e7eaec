"""The command line: help a newcomer reads, validation output, the loss listing."""

from click.testing import CliRunner

from sweeper.cli import main
from sweeper.launch import SEARCH_SPACES

# the losses the README lists as registered
DOCUMENTED_LOSSES = ["dice", "soft_bce", "ce", "weighted_ce", "focal", "tversky", "focal_tversky", "iou_xy",
                     "log_dice", "generalized_dice", "focal_dice", "topk_dice", "topk_ce", "pm_dice", "calf"]


def test_every_command_has_help():
    runner = CliRunner()
    out = runner.invoke(main, ["--help"])
    for command in ["validate", "launch", "leaderboard", "pareto", "ui", "demo", "losses", "compare", "report", "status"]:
        assert command in out.output
        sub = runner.invoke(main, [command, "--help"])
        assert sub.exit_code == 0 and "Usage:" in sub.output and len(sub.output.splitlines()) > 3, command


def test_validate_ok_and_every_problem_listed(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["validate", str(SEARCH_SPACES / "demo.yaml")])
    assert out.exit_code == 0 and "OK" in out.output and "6 configurations x 2 folds" in out.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {format: synthetic, folds: 2}\n"
                   "losses: [{name: tversky, params: {alpha: 3, gama: 1}}]\nsearch: {budget: 0}\n")
    out = runner.invoke(main, ["validate", str(bad)])
    assert out.exit_code != 0
    for field in ["losses.0.params.gama", "losses.0.params.alpha", "search.budget"]:
        assert field in out.output


def test_validate_lists_every_bad_input_of_a_spec_at_once(tmp_path):
    """README "Bad input": one `sweeper validate` run names every spec problem, each with its field."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstorage: foo://bucket\ndata: {format: synthetic, folds: 2}\n"
                   "model: {encoders: [resnet9000], architectures: [transformer9000]}\n"
                   "losses: [{name: pm_dice, params: {gamma: [1, 2]}}, {name: iou_xy, params: {beta: 1}}]\n"
                   "training: {batch_size: 0, epoch: 3}\nresources: {gpus_per_trial: 1.5}\nsearch: {budget: 2}\n")
    out = CliRunner().invoke(main, ["validate", str(bad)])
    assert out.exit_code != 0 and "8 problem(s)" in out.output
    for field in ["storage:", "model.encoders", "model.architectures", "losses.0.params.gamma",
                  "losses.1.params.beta", "training.batch_size", "training.epoch", "resources.gpus_per_trial"]:
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
