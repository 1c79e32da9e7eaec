"""Multi-objective successive halving math: non-dominated sorting, crowding distance, rungs, promotion."""

import numpy as np
import pytest

from sweeper.pareto import non_dominated
from sweeper.pruning import (
    Rungs,
    as_maximised,
    crowding_distance,
    n_promoted,
    non_dominated_ranks,
    promoted,
    rank_order,
    rung_levels,
)


def test_ranks_by_hand():
    # a, b, c trade off (front 0); c dominates d (front 1); d dominates e (front 2)
    points = np.array([[1, 0], [0, 1], [0.5, 0.5], [0.4, 0.4], [0, 0]])
    assert non_dominated_ranks(points).tolist() == [0, 0, 0, 1, 2]


def test_equal_points_share_a_front_and_nan_comes_last():
    points = np.array([[0.5, 0.5], [0.5, 0.5], [np.nan, 1.0], [0.1, 0.1]])
    assert non_dominated_ranks(points).tolist() == [0, 0, 2, 1]


def test_ranks_match_peeling_fronts_with_an_independent_front_finder():
    rng = np.random.default_rng(0)
    points = rng.random((40, 3)).round(1)  # rounding makes ties
    ranks = non_dominated_ranks(points)
    remaining = np.arange(len(points))
    front = 0
    while len(remaining):
        on_front = non_dominated(points[remaining])
        assert (ranks[remaining[on_front]] == front).all()
        remaining = remaining[~on_front]
        front += 1


def test_crowding_distance_by_hand():
    # objective 0 sorted: p0 0, p1 0.2, p2 0.6, p3 1 -> p1 += 0.6, p2 += 0.8 (range 1)
    # objective 1 sorted: p3 0, p2 0.5, p1 0.7, p0 1 -> p2 += 0.7, p1 += 0.5
    points = np.array([[0, 1], [0.2, 0.7], [0.6, 0.5], [1, 0]])
    assert crowding_distance(points) == pytest.approx([np.inf, 1.1, 1.5, np.inf])
    assert rank_order(points).tolist() == [0, 3, 2, 1]
    # a range of zero adds nothing; two points are both extreme
    assert crowding_distance(np.array([[1, 0], [1, 0.5], [1, 1]])) == pytest.approx([np.inf, 1.0, np.inf])
    assert crowding_distance(np.array([[1, 2], [3, 4]])).tolist() == [np.inf, np.inf]


def test_rank_order_front_first_then_crowding_then_arrival():
    points = np.array([[0.4, 0.4], [1, 0], [0.5, 0.5], [0, 1]])
    # front 0 = rows 1, 2, 3; crowding: rows 1, 3 infinite (arrival order), row 2 finite; row 0 last
    assert rank_order(points).tolist() == [1, 3, 2, 0]


def test_promotion_keeps_the_top_one_over_eta():
    assert [n_promoted(n, 3) for n in (1, 2, 3, 5, 6, 9)] == [1, 1, 1, 1, 2, 3]
    points = np.array([[0.9, 0.9], [0.5, 0.5], [0.2, 0.95], [0.1, 0.1]])
    assert promoted(points, 0, 2) and promoted(points, 2, 2)  # both on front 0, n/eta = 2
    assert not promoted(points, 1, 2) and not promoted(points, 3, 2)


def test_rungs_are_asynchronous_and_a_repeated_arrival_keeps_its_decision():
    rungs = Rungs(eta=2)
    assert rungs.arrive(1, "a", [0.5, 0.5])  # the first arrival always goes on
    assert not rungs.arrive(1, "b", [0.4, 0.4])  # dominated by a, top 1 of 2
    assert rungs.arrive(1, "c", [0.9, 0.9])  # dominates: first of 3 (1 promoted)
    assert not rungs.arrive(1, "b", [0.4, 0.4])  # the same trial again (resumed): same decision
    assert len(rungs.arrivals[1]) == 3
    clone = Rungs.from_dict(rungs.to_dict())
    assert clone == rungs


def test_rung_levels_and_directions():
    assert rung_levels(1, 3, 5) == [1, 3, 5]
    assert rung_levels(1, 2, 5) == [1, 2, 4, 5]
    assert rung_levels(2, 3, 5) == [2, 5]
    assert rung_levels(1, 3, 3) == [1, 3]
    with pytest.raises(ValueError, match="eta > 1"):
        rung_levels(1, 1, 5)
    assert as_maximised([0.8, 0.2], ["maximize", "minimize"]) == [0.8, -0.2]


def test_spec_refuses_pruning_that_cannot_prune():
    from sweeper.spec import SpecError, parse_spec

    raw = {
        "name": "p",
        "data": {"format": "synthetic", "folds": 3, "run_folds": [0, 1]},
        "losses": [{"name": "dice"}],
        "training": {"epochs": 2},
        "search": {
            "budget": 2,
            "pruning": {"folds": {"min_folds": 2, "eta": 1}},
            "constraints": [{"metric": "sensitivity"}],
        },
        "scheduler": {"type": "moasha", "grace_period": 2},
    }
    with pytest.raises(SpecError) as err:
        parse_spec(raw, registry=False)
    text = str(err.value)
    assert "search.pruning.folds.eta" in text  # must be above 1
    assert "give min, max or both" in text
    raw["search"]["pruning"]["folds"]["eta"] = 2
    raw["search"]["constraints"] = [{"metric": "sensitivity", "min": 0.9}]
    with pytest.raises(SpecError) as err:
        parse_spec(raw, registry=False)
    text = str(err.value)
    assert "min_folds (2) must be below the folds to run (2)" in text
    assert "scheduler.grace_period (2) must be below training.epochs (2)" in text
    assert "checkpoint_every" not in text  # the default checkpoints every epoch


def test_rung_number_and_the_first_stopped_fold_of_a_configuration():
    from sweeper.pruning import first_stopped, rung_number

    assert [rung_number(level, [1, 2, 3]) for level in (1, 2, 3, 4)] == [1, 2, 3, None]
    stopped = {"aa/1": 2, "bb/0": 1, "aa/0": 3, "cc/2/1": 4}  # the scheduler's order: judged first
    assert first_stopped(stopped, "aa") == (1, 2)
    assert first_stopped(stopped, "cc") == (2, 4)  # a seeded repeat's key
    assert first_stopped(stopped, "dd") is None


def test_scheduler_rungs_are_read_back_from_its_state(tmp_path):
    import json

    from sweeper.pruning import SCHEDULER_STATE_FILE, EpochHalving, scheduler_rungs

    assert scheduler_rungs(tmp_path) == []  # no scheduler
    halving = EpochHalving(["sensitivity"], ["maximize"], grace_period=1, reduction_factor=2, max_epochs=6)
    (tmp_path / SCHEDULER_STATE_FILE).write_text(json.dumps(halving.to_dict()))
    assert scheduler_rungs(tmp_path) == [1, 2, 4]


def test_spec_refuses_sparse_checkpoints_with_the_epoch_scheduler():
    # a trial moasha stops must end on a checkpoint: its best weights and case records are read from it
    from sweeper.spec import SpecError, parse_spec

    raw = {
        "name": "p",
        "data": {"format": "synthetic"},
        "losses": [{"name": "dice"}],
        "training": {"epochs": 4, "checkpoint_every": 2},
        "search": {"budget": 2},
    }
    assert parse_spec(raw, registry=False).training.checkpoint_every == 2  # fifo: every trial ends on its last epoch
    raw["scheduler"] = {"type": "moasha", "grace_period": 1}
    with pytest.raises(SpecError, match=r"training.checkpoint_every \(2\) must be 1 with scheduler.type moasha"):
        parse_spec(raw, registry=False)
