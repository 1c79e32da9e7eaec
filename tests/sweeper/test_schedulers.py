"""MO-ASHA's decisions on a scripted stream of epoch results (no Ray cluster), and its state across a resume."""

import pickle
from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from sweeper.pruning import EpochHalving
from sweeper.schedulers import MoAshaScheduler, make_scheduler
from sweeper.spec import parse_spec

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def halving():
    # rungs at epochs 1 and 3 (grace 1, factor 3, 9 epochs: 1, 3, then 9 is the last epoch)
    return EpochHalving(["sensitivity", "precision"], ["maximize", "maximize"], 1, 3, 9)


def trial(cid, fold):
    return SimpleNamespace(config={"config_id": cid, "fold": fold}, trial_id=f"{cid}_{fold}")


def report(scheduler, cid, fold, epoch, sens, prec):
    return scheduler.on_trial_result(None, trial(cid, fold), {"epoch": epoch, "sensitivity": sens, "precision": prec})


def test_rungs_follow_grace_period_and_reduction_factor():
    assert halving().levels == [1, 3]
    assert EpochHalving(["dice"], ["maximize"], 2, 2, 10).levels == [2, 4, 8]


def test_scripted_stream_stops_dominated_trials_of_the_same_fold_only(tmp_path):
    scheduler = MoAshaScheduler(halving(), tmp_path / "state.json")
    assert report(scheduler, "a", 0, 1, 0.5, 0.5) == CONTINUE  # first arrival at rung 1 of fold 0
    assert report(scheduler, "b", 0, 1, 0.6, 0.6) == CONTINUE  # dominates a: first of 2, 1 goes on
    assert report(scheduler, "c", 0, 1, 0.4, 0.4) == STOP  # third of 3 at rung 1: outside the top 1
    assert report(scheduler, "x", 1, 1, 0.1, 0.1) == CONTINUE  # fold 1 is its own competition
    assert report(scheduler, "a", 0, 2, 0.1, 0.1) == CONTINUE  # epoch 2 is no rung
    # 4 arrivals keep floor(4/3) = 1: front 0 is {b, d}, both extreme (infinite crowding), b arrived first
    assert report(scheduler, "d", 0, 1, 0.9, 0.1) == STOP
    assert report(scheduler, "e", 0, 1, 0.95, 0.95) == CONTINUE  # dominates every other: first of 5
    # 6 arrivals keep 2: front 0 is {e, f} (f trades precision for sensitivity), so f is second
    assert report(scheduler, "f", 0, 1, 1.0, 0.0) == CONTINUE
    assert report(scheduler, "b", 0, 3, 0.7, 0.7) == CONTINUE  # first at rung 3
    assert scheduler.halving.stopped == {"c/0": 1, "d/0": 1}


def test_a_stopped_trial_stays_stopped_and_a_repeated_rung_gives_the_same_answer(tmp_path):
    scheduler = MoAshaScheduler(halving(), tmp_path / "state.json")
    report(scheduler, "a", 0, 1, 0.9, 0.9)
    assert report(scheduler, "b", 0, 1, 0.1, 0.1) == STOP
    assert report(scheduler, "b", 0, 2, 0.9, 0.9) == STOP  # a late result of a stopped trial
    assert report(scheduler, "a", 0, 1, 0.9, 0.9) == CONTINUE  # replayed after a restart


def test_state_survives_save_restore_and_unpickling_from_the_start(tmp_path):
    state_file = tmp_path / "state.json"
    scheduler = MoAshaScheduler(halving(), state_file)
    at_start = pickle.dumps(scheduler)  # what Tune keeps in tuner.pkl
    report(scheduler, "a", 0, 1, 0.9, 0.9)
    assert report(scheduler, "b", 0, 1, 0.1, 0.1) == STOP
    resumed = pickle.loads(at_start)  # Tuner.restore: the scheduler of the start reads the rungs since
    assert resumed.halving == scheduler.halving
    assert report(resumed, "b", 0, 4, 0.9, 0.9) == STOP
    assert report(resumed, "c", 0, 1, 0.2, 0.2) == STOP  # judged against a and b recorded before
    scheduler.save(str(tmp_path / "checkpoint.json"))
    fresh = MoAshaScheduler(halving())
    fresh.restore(str(tmp_path / "checkpoint.json"))
    assert fresh.halving == scheduler.halving


def test_minimised_objectives_rank_lower_first(tmp_path):
    h = EpochHalving(["hausdorff"], ["minimize"], 1, 2, 4)
    assert h.decide("a", 0, {"epoch": 1, "hausdorff": 10.0})
    assert h.decide("b", 0, {"epoch": 1, "hausdorff": 5.0})  # smaller is better: first of 2
    assert not h.decide("c", 0, {"epoch": 1, "hausdorff": 20.0})


def test_spec_builds_the_scheduler(tmp_path):
    raw = {"name": "m", "data": {"format": "synthetic", "folds": 2}, "losses": [{"name": "dice"}]}
    raw["search"] = {"budget": 2}
    assert make_scheduler(parse_spec(raw, registry=False), tmp_path) is None
    raw["scheduler"] = {"type": "moasha", "grace_period": 2, "reduction_factor": 2}
    raw["training"] = {"epochs": 8}
    scheduler = make_scheduler(parse_spec(raw, registry=False), tmp_path)
    assert scheduler.halving.levels == [2, 4] and scheduler.halving.objectives == ["sensitivity", "precision"]


def test_a_configuration_is_judged_once_per_rung_on_its_first_fold_there(tmp_path):
    h = halving()
    assert h.decide("a", 0, {"epoch": 1, "sensitivity": 0.9, "precision": 0.9})
    assert not h.decide("b", 0, {"epoch": 1, "sensitivity": 0.1, "precision": 0.1})
    # fold 1 of a: a passed rung 1 on fold 0, so it is not judged (nor recorded) again there
    assert h.decide("a", 1, {"epoch": 1, "sensitivity": 0.0, "precision": 0.0})
    # a configuration first reaching rung 1 on fold 1 is judged there, among fold 1's trials
    assert h.decide("c", 1, {"epoch": 1, "sensitivity": 0.2, "precision": 0.2})
    assert [key for key, _ in h.folds[1].arrivals[1]] == ["c"]
    assert EpochHalving.from_dict(h.to_dict()) == h


def test_the_other_folds_of_a_stopped_configuration_stop_at_their_next_result():
    h = halving()
    h.decide("a", 0, {"epoch": 1, "sensitivity": 0.9, "precision": 0.9})
    assert not h.decide("b", 0, {"epoch": 1, "sensitivity": 0.1, "precision": 0.1})
    assert not h.decide("b", 1, {"epoch": 2, "sensitivity": 0.9, "precision": 0.9})  # epoch 2 is no rung
    assert h.stopped == {"b/0": 1, "b/1": 2}
    assert h.decide("a", 1, {"epoch": 2, "sensitivity": 0.1, "precision": 0.1})
