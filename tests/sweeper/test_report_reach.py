"""The report's "How far each configuration got" section (Table 13, Fig. 14) from a hand-made pruned sweep."""

import re

import pandas as pd
import pytest

from sweeper.leaderboard import (
    FINISHED,
    STOPPED,
    read_configs,
    read_trials,
    record_pruned,
    trial_row,
    write_leaderboard,
)
from sweeper.report import write_report
from sweeper.report_reach import reach_cells, reach_order, reach_section
from sweeper.spec import dump_spec, parse_spec
from trainables.contract import TrialConfig


def fold(cid, f, loss="dice"):
    return TrialConfig.from_dict(
        {
            "config_id": cid,
            "fold": f,
            "arch": "unet",
            "encoder": "resnet18",
            "loss": loss,
            "loss_params": {},
            "epochs": 2,
            "cache_dir": "cache",
        }
    )


def scores(sens, prec, epoch=2):
    return {"epoch": epoch, "best_epoch": epoch, "best.dice": 0.5, "best.sensitivity": sens, "best.precision": prec}


@pytest.fixture
def pruned_sweep(tmp_path):
    """3 folds x 2 epochs, fold halving + moasha + precision >= 0.5: ``full`` finished, ``weak`` infeasible,
    ``halved`` pruned at fold rung 1, ``stopped`` stopped at fold 1 epoch 1 (rung 1)."""
    sweep = tmp_path / "tiny"
    sweep.mkdir()
    spec = parse_spec(
        {
            "name": "tiny",
            "data": {"format": "synthetic", "folds": 3},
            "losses": [{"name": "dice"}, {"name": "tversky", "params": {"alpha": "search"}}],
            "training": {"epochs": 2},
            "search": {
                "budget": 4,
                "pruning": {"folds": {"min_folds": 1, "eta": 2}},
                "constraints": [{"metric": "precision", "min": 0.5}],
            },
            "scheduler": {"type": "moasha", "grace_period": 1, "reduction_factor": 2},
        }
    )
    (sweep / "spec.yaml").write_text(dump_spec(spec))
    rows = [trial_row(fold("full", f), scores(0.8, 0.8), FINISHED) for f in range(3)]
    rows += [trial_row(fold("weak", f), scores(0.9, 0.3), FINISHED) for f in range(3)]
    rows += [trial_row(fold("halved", 0), scores(0.4, 0.6), FINISHED)]
    rows += [trial_row(fold("stopped", 0), scores(0.7, 0.7), FINISHED)]
    rows += [trial_row(fold("stopped", 1), scores(0.1, 0.1, epoch=1), STOPPED)]
    record_pruned(sweep, "halved", reason="fold rung 1: outside the top 1/2", n_folds=1, n_stopped=0, rung=1)
    record_pruned(
        sweep,
        "stopped",
        reason="fold 1 stopped at epoch 1",
        n_folds=1,
        n_stopped=1,
        rung=1,
        stopped_fold=1,
        stopped_epoch=1,
    )
    write_leaderboard(pd.DataFrame(rows), sweep)
    return sweep


def test_reach_rows_say_how_each_configuration_ended_and_how_far_it_got(pruned_sweep):
    from sweeper.leaderboard import sweep_reach
    from sweeper.report import load_sweep_spec

    reach = sweep_reach(read_configs(pruned_sweep), read_trials(pruned_sweep), load_sweep_spec(pruned_sweep))
    ordered = reach_order(reach)
    assert list(ordered["config_id"])[-1] == "weak"  # infeasible listed apart, last
    cells = {r["config_id"]: reach_cells(r) for _, r in ordered.iterrows()}
    assert cells["full"] == ["finished", "", "", "3/3", "2/2", "100%"]
    assert cells["halved"] == ["pruned", "fold halving", "rung 1: 1 of 3 folds", "1/3", "2/2", "33%"]
    assert cells["stopped"] == ["pruned", "epoch scheduler", "rung 1: fold 1 epoch 1", "2/3", "1/2", "50%"]
    assert cells["weak"] == ["infeasible", "", "precision>=0.5", "3/3", "2/2", "100%"]
    section = reach_section(reach, {}, lambda key: f"<figure id='{key}'></figure>")
    assert "<b>Table 13.</b>" in section and "1 finished, 2 pruned, 1 infeasible" in section
    assert "<figure id='fig14'>" in section
    assert section.count('<tr class="failed">') == 2 and section.count('<tr class="infeasible">') == 1


def test_the_report_of_a_pruned_sweep_shows_how_far_each_configuration_got(pruned_sweep):
    page = write_report(pruned_sweep, log_to_mlflow=False, max_slices=4).read_text()
    assert "<h2 id='reach'>How far each configuration got</h2>" in page and "href='#reach'" in page
    assert re.search(r'<figure id="fig14"><img alt="[^"]*" src="data:image/png;base64,iVBOR', page)
    assert "rung 1: 1 of 3 folds" in page and "rung 1: fold 1 epoch 1" in page and "precision&gt;=0.5" in page
    assert (pruned_sweep / "report" / "fig14_configuration_reach.png").is_file()
