"""benchmarks/search_efficiency.py and benchmarks/replay.py: the replay spends and reaches what a hand count says,
and the recorded table holds the whole sweep."""

import csv
import json

import numpy as np
import pytest
import yaml

from benchmarks import search_efficiency
from benchmarks.replay import STRATEGIES, Strategy, replay_in_order, replay_search
from sweeper.spec import parse_spec

EPOCHS = 2
#: two configurations, neither dominating the other, each the same on every fold and epoch:
#: dice (0.9, 0.5), soft_bce (0.5, 0.9). Alone each has hypervolume 0.9 x 0.5 = 0.45; together
#: 0.9 x 0.5 + 0.5 x (0.9 - 0.5) = 0.65.
POINTS = {"dice": (0.9, 0.5), "soft_bce": (0.5, 0.9)}


def tiny_spec(strategy: Strategy, sampler: str = "random", seed: int = 0):
    spec = parse_spec(
        {
            "name": "tiny",
            "data": {"format": "synthetic", "folds": 3},
            "model": {"architectures": ["plain_unet"], "encoders": ["width16"], "encoder_weights": None},
            "losses": [{"name": "dice"}, {"name": "soft_bce"}],
            "training": {"epochs": EPOCHS},
            "search": {"mode": "grid"},
        }
    )
    return search_efficiency.search_spec(spec, sampler, seed, budget=2, strategy=strategy)


def tiny_curves(spec) -> dict:
    """The hand-made table: each configuration's point on every fold and epoch; Dice rises each epoch."""
    curves = {}
    for entry, cid in zip(spec.grid(), search_efficiency.space_config_ids(spec)):
        values = np.broadcast_to(POINTS[entry["loss"]], (3, EPOCHS, 2)).copy()
        curves[cid] = (values, np.broadcast_to(np.arange(EPOCHS, dtype=float), (3, EPOCHS)))
    return curves


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_full_fan_out_spends_every_epoch_and_reaches_the_front_of_every_configuration(sampler):
    spec = tiny_spec(STRATEGIES["full"], sampler)
    trace = replay_search(spec, tiny_curves(spec))
    assert trace.spent == 2 * 3 * EPOCHS
    assert (trace.configurations, trace.complete) == (2, 2)
    assert trace.epochs == [3 * EPOCHS, 2 * 3 * EPOCHS]  # each configuration counts once all its folds ended
    assert trace.hypervolumes == pytest.approx([0.45, 0.65])
    assert trace.hypervolume_at(3 * EPOCHS - 1) == 0.0 and trace.hypervolume_at(3 * EPOCHS) == pytest.approx(0.45)


def test_fold_halving_spends_the_counted_fold_trials():
    # min_folds 1, eta 3: both run fold 0; the first arrival at the 1-fold rung goes on (folds 1 and 2), the
    # second, not dominating it, ties on the front and loses on arrival order: 2 + 2 fold trials of 2 epochs
    spec = tiny_spec(Strategy(folds=(1, 3.0)))
    trace = replay_search(spec, tiny_curves(spec))
    assert trace.spent == (2 + 2) * EPOCHS
    assert (trace.configurations, trace.complete) == (2, 1)
    assert trace.final == pytest.approx(0.45)


def test_moasha_stops_the_second_arrival_at_its_first_rung():
    # grace 1, factor 2: a rung at epoch 1; the first configuration goes on over its 3 folds (judged once per
    # rung), the second stops after 1 epoch and is pruned
    spec = tiny_spec(Strategy(moasha=(1, 2.0)))
    trace = replay_search(spec, tiny_curves(spec))
    assert trace.spent == 3 * EPOCHS + 1
    assert trace.complete == 1 and trace.final == pytest.approx(0.45)


def test_replay_in_order_keeps_each_fold_trials_best_epoch_and_counts_fold_halving():
    # 3 configurations x 3 folds x 2 epochs; the record is the epoch of the higher select, not the last one
    curves = np.zeros((3, 3, 2, 2))
    curves[0, :, 0], curves[0, :, 1] = (0.8, 0.8), (0.1, 0.1)  # best at epoch 1
    curves[1, :, :] = (0.5, 0.5)
    curves[2, :, :] = (0.9, 0.9)
    select = curves.sum(axis=-1)
    spent, finished = replay_in_order(curves, select, STRATEGIES["full"])
    assert spent == 3 * 3 * 2 and set(finished) == {0, 1, 2}
    np.testing.assert_allclose(finished[0], [0.8, 0.8])
    # fold halving (1, 3): c0 first at the rung (goes on); c1 dominated by c0 (stops); c2 dominates both (goes on)
    spent, finished = replay_in_order(curves, select, STRATEGIES["folds"])
    assert spent == (3 + 1 + 3) * 2 and set(finished) == {0, 2}


def test_export_reads_every_epoch_of_tune_records_and_load_gives_folds_by_epochs(tmp_path):
    for cid, fold in [("a", 0), ("a", 1), ("b", 0), ("b", 1)]:
        trial = tmp_path / "ray" / "tune" / f"{cid}-{fold}"
        trial.mkdir(parents=True)
        params = {"config_id": cid, "fold": fold, "loss": "dice", "loss_params": {"smooth": 1.0}, "lr": 0.001}
        (trial / "params.json").write_text(json.dumps(params))
        results = [
            {"epoch": e, **{m: 0.1 * e + fold + (cid == "b") for m in search_efficiency.METRICS}} for e in (1, 2, 2)
        ]
        results[2]["dice"] = 7.0  # epoch 2 reported again (a resumed trial): the last report counts
        (trial / "result.json").write_text("\n".join(json.dumps(r) for r in results))
    table = tmp_path / "curves.csv"
    assert search_efficiency.export_curves(tmp_path, path=table) == 2 * 2 * 2
    curves = search_efficiency.load_curves(table)
    values, select = curves["b"]
    assert values.shape == (2, 2, 2) and select.shape == (2, 2)
    np.testing.assert_allclose(values[1, 0], [2.1, 2.1])  # fold 1, epoch 1: sensitivity, precision
    assert select[1, 1] == 7.0


def test_load_refuses_a_configuration_missing_an_epoch(tmp_path):
    table = tmp_path / "curves.csv"
    with open(table, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*search_efficiency.IDENTITY, *search_efficiency.METRICS])
        for cid, epochs in [("a", (1, 2)), ("b", (1,))]:
            for e in epochs:
                writer.writerow([cid, "dice", "", "0.001", 0, e, *[0.5] * len(search_efficiency.METRICS)])
    with pytest.raises(ValueError, match="configuration b lacks"):
        search_efficiency.load_curves(table)


def test_the_recorded_table_holds_every_configuration_fold_and_epoch_of_its_spec():
    spec = search_efficiency.recorded_spec()
    curves = search_efficiency.load_curves()
    ids = search_efficiency.space_config_ids(spec)
    assert len(ids) >= 40 and set(ids) == set(curves)
    for values, select in curves.values():
        assert values.shape == (3, spec.training.epochs, 2) and select.shape == (3, spec.training.epochs)
        assert np.all((values >= 0) & (values <= 1))


@pytest.mark.parametrize("strategy", ["folds", "moasha", "both"])
def test_the_demos_pruned_twin_is_the_demo_with_its_prunings_and_validates(strategy):
    raw = yaml.safe_load(search_efficiency.DEMO_SPEC.read_text())
    twin = parse_spec(search_efficiency.pruned_spec(raw, strategy))
    demo = parse_spec(raw)
    assert twin.name == "demo_pruned"
    assert (twin.scheduler.type == "moasha") == (strategy != "folds")
    assert (twin.search.pruning.folds is not None) == (strategy != "moasha")
    # everything else is the demo's: the same configurations on the same data; MO-ASHA needs a
    # checkpoint every epoch (the demo keeps one per fold trial), which the spec would otherwise refuse
    assert twin.grid() == demo.grid() and twin.data == demo.data
    assert twin.training.checkpoint_every == (1 if strategy != "folds" else demo.training.checkpoint_every)
    assert twin.training.model_copy(update={"checkpoint_every": 4}) == demo.training
