"""The sweep spec: every problem reported at once, each naming its field; shipped specs parse."""

from pathlib import Path

import pytest
import yaml

from sweeper.spec import SpecError, dump_spec, load_spec, parse_spec

SEARCH_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def minimal(**overrides):
    raw = {
        "name": "t",
        "data": {"format": "synthetic", "folds": 2},
        "losses": [{"name": "dice"}],
        "search": {"budget": 2},
    }
    raw.update(overrides)
    return raw


def test_minimal_spec_gets_seed_000_defaults():
    spec = parse_spec(minimal())
    assert spec.training.epochs == 18 and spec.training.lr == 2e-4 and spec.training.batch_size == 16
    assert spec.data.image_size == 224 and spec.data.context == 1
    assert [o.metric for o in spec.search.objectives] == ["sensitivity", "precision"]
    assert spec.model.encoder_weights is None


def test_reuse_actors_reaches_tune_and_can_be_switched_off():
    from sweeper.launch import tune_config

    assert tune_config(parse_spec(minimal()), None).reuse_actors is True
    assert tune_config(parse_spec(minimal(resources={"reuse_actors": False})), None).reuse_actors is False


def test_every_problem_is_reported_at_once_with_its_field():
    raw = minimal(
        losses=[{"name": "nope"}, {"name": "tversky", "params": {"alpha": 1.5, "gamma": 1.0}}],
        training={"epochs": 0},
        model={"architectures": ["unet", "transformer9000"]},
    )
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    text = "\n".join(info.value.problems)
    assert "losses.0" in text and "unknown loss 'nope'" in text
    assert "losses.1" in text and "params.alpha" in text and "outside [0" in text
    assert "no knob 'gamma'" in text
    assert "training.epochs" in text
    assert "model.architectures" in text and "transformer9000" in text
    assert len(info.value.problems) >= 4


def test_grid_mode_refuses_searched_knobs():
    raw = minimal(losses=[{"name": "tversky", "params": {"alpha": "search"}}], search={"mode": "grid"})
    with pytest.raises(SpecError, match="search.mode grid needs fixed knob values"):
        parse_spec(raw)


def test_optuna_mode_needs_a_budget_and_known_objectives():
    raw = minimal(search={"objectives": [{"metric": "sensitivity.liver"}]})
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    text = "\n".join(info.value.problems)
    assert "search.budget is required" in text
    assert "sensitivity.liver" in text


def test_searched_and_fixed_knobs_split():
    spec = parse_spec(minimal(losses=[{"name": "tversky", "params": {"alpha": "search", "beta": 0.6}}]))
    loss = spec.losses[0]
    classes = spec.data.classes
    assert set(loss.searched_params(classes)) == {"alpha"}
    assert loss.fixed_params(classes)["beta"] == 0.6 and "alpha" not in loss.fixed_params(classes)


def test_preflight_names_missing_data_root_and_too_many_folds(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(minimal(data={"format": "uwmgi", "root": str(tmp_path / "absent"), "folds": 2})))
    with pytest.raises(SpecError, match="data.root: .*absent has no train.csv"):
        load_spec(path)
    path.write_text(yaml.safe_dump(minimal(data={"format": "synthetic", "folds": 5, "synthetic": {"cases": 3}})))
    with pytest.raises(SpecError, match="data.folds: 5 folds but data.synthetic.cases is 3"):
        load_spec(path)


@pytest.mark.parametrize("name", ["demo.yaml", "gi_five_losses.yaml"])
def test_shipped_specs_parse(name):
    spec = parse_spec(yaml.safe_load((SEARCH_SPACES / name).read_text()))
    assert spec.losses


def test_gi_five_losses_is_seed_000():
    spec = parse_spec(yaml.safe_load((SEARCH_SPACES / "gi_five_losses.yaml").read_text()))
    assert [loss.name for loss in spec.losses] == ["dice", "soft_bce", "dice_soft_bce", "tversky", "focal_plus_dice"]
    assert len(spec.grid()) == 5 and spec.model.encoders == ["mit_b2"]
    tversky = spec.grid()[3]["loss_params"]
    assert tversky["alpha"] == 0.3 and tversky["beta"] == 0.7


def test_per_class_knobs_expand_and_check_their_length():
    spec = parse_spec(minimal(losses=[{"name": "pm_dice", "params": {"gamma": [1.0, 2.0, 3.0]}}]))
    fixed = spec.losses[0].fixed_params(spec.data.classes)
    assert fixed == {"gamma.large_bowel": 1.0, "gamma.small_bowel": 2.0, "gamma.stomach": 3.0}
    searched = parse_spec(minimal(losses=[{"name": "pm_dice", "params": {"gamma": "search"}}]))
    assert set(searched.losses[0].searched_params(spec.data.classes)) == {
        "gamma.large_bowel",
        "gamma.small_bowel",
        "gamma.stomach",
    }  # one dimension per class
    with pytest.raises(SpecError, match="losses.0.params.gamma: 2 values for 3 classes"):
        parse_spec(minimal(losses=[{"name": "pm_dice", "params": {"gamma": [1.0, 2.0]}}]))


def test_compound_losses_take_prefixed_knobs():
    spec = parse_spec(minimal(losses=[{"name": "0.5*focal + 0.5*dice", "params": {"focal.gamma": "search"}}]))
    loss = spec.losses[0]
    assert set(loss.searched_params(spec.data.classes)) == {"focal.gamma"}
    assert loss.fixed_params(spec.data.classes)["dice.smooth"] == 1.0
    with pytest.raises(SpecError, match="unknown loss 'nope'"):
        parse_spec(minimal(losses=[{"name": "0.5*nope + dice"}]))


def test_constrained_knob_is_derived_not_given():
    with pytest.raises(SpecError, match="params.beta: iou_xy derives beta from alpha.*set only alpha"):
        parse_spec(minimal(losses=[{"name": "iou_xy", "params": {"beta": 1.5}}]))


def test_one_loss_at_several_fixed_settings_is_a_grid_only():
    losses = [{"name": "iou_xy", "params": {"alpha": 1.0}}, {"name": "iou_xy", "params": {"alpha": 0.5}}]
    grid = parse_spec(minimal(losses=losses, search={"mode": "grid"})).grid()
    assert [g["loss_label"] for g in grid] == ["iou_xy[0]", "iou_xy[1]"]
    with pytest.raises(SpecError, match="search.mode optuna lists each loss once"):
        parse_spec(minimal(losses=losses))


@pytest.mark.parametrize(
    "name", ["format_nifti_acdc.yaml", "format_dicom_chaos.yaml", "format_image_folder_kvasir.yaml"]
)
def test_shipped_format_specs_parse(name):
    spec = parse_spec(yaml.safe_load((SEARCH_SPACES / name).read_text()))
    assert spec.data.format in {"nifti", "dicom", "image_folder"}
    if spec.data.label_mode == "multiclass":
        assert spec.data.channel_classes[0] == "background"


def test_planned_configurations_count_the_grid_or_the_budget():
    raw = {
        "name": "p",
        "data": {"format": "synthetic", "folds": 4, "run_folds": [0, 2, 3], "roi_ratios": [0.4, 0.1]},
        "model": {"architectures": ["unet", "fpn"], "encoders": ["resnet18"]},
        "losses": [
            {"name": "dice"},
            {"name": "tversky", "params": {"alpha": 0.3}},
            {"name": "tversky", "params": {"alpha": 0.7}},
        ],
        "search": {"mode": "grid"},
    }
    grid = parse_spec(raw)
    assert grid.planned_configurations() == len(grid.grid()) == 2 * 3 * 2
    assert grid.planned_fold_trials() == 12 * 3
    optuna = parse_spec({**raw, "losses": raw["losses"][:2], "search": {"budget": 5}})
    assert (optuna.planned_configurations(), optuna.planned_fold_trials()) == (5, 15)
    # a sweep's frozen spec re-read without the registries (no torch) plans the same
    again = parse_spec(yaml.safe_load(dump_spec(grid)), registry=False)
    assert (again.planned_configurations(), again.planned_fold_trials()) == (12, 36)


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"lr": -1e-3}, "training.lr: a learning rate must be greater than 0"),
        ({"lr": "fast"}, "training.lr: give a learning rate (e.g. 2e-4), a list of them, search, or {low, high, log}"),
        ({"lr": {"low": 1e-2, "high": 1e-4}}, "training.lr: low (0.01) must be below high (0.0001)"),
        ({"optimizer": "rmsprop"}, "training.optimizer: unknown optimizer 'rmsprop'; choose from adamw, adam, sgd"),
        ({"optimizer": {"name": "adam", "momentum": 0.9}}, "training.optimizer: adam.momentum: Extra inputs"),
        ({"optimizer": {"name": "sgd", "momentum": 0, "nesterov": True}}, "nesterov needs momentum > 0"),
        ({"optimizer": ["adam", "adam"]}, "training.optimizer: an optimizer is listed twice"),
        ({"schedule": {"name": "poly", "power": 0}}, "training.schedule.poly.power: Input should be greater than 0"),
        ({"repeats": 0}, "training.repeats: Input should be greater than or equal to 1"),
    ],
)
def test_a_wrong_optimizer_schedule_or_learning_rate_is_named_once_with_its_fix(training, message):
    with pytest.raises(SpecError) as err:
        parse_spec(minimal(training=training))
    assert len(err.value.problems) == 1 and message in err.value.problems[0]


def test_grid_mode_refuses_a_searched_learning_rate_and_counts_listed_choices():
    with pytest.raises(SpecError, match="training.lr: search.mode grid needs fixed learning rates"):
        parse_spec(minimal(training={"lr": "search"}, search={"mode": "grid"}))
    spec = parse_spec(minimal(training={"lr": [1e-3, 1e-4], "repeats": 3}, search={"mode": "grid"}))
    assert spec.planned_configurations() == 2 * len(spec.losses) and spec.training.lr_range() is None
    assert spec.planned_fold_trials() == spec.planned_configurations() * len(spec.data.folds_to_run) * 3
    assert parse_spec(minimal(training={"lr": "search"}, search={"budget": 2})).training.lr_range().log
    assert spec.training.lr_bounds() == (1e-4, 1e-3)
