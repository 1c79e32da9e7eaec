"""The demo's spec: paper 000's trade-off as a grid, and a size that fits its few minutes on 2 cores."""

import math

import yaml

from sweeper.launch import SEARCH_SPACES
from sweeper.spec import parse_spec

# What the demo may cost: fold trials x optimiser steps x slices per step x pixels per slice. The
# shipped demo (10 fold trials x 60 steps x 8 slices x 64 x 64 pixels) needs about 4 minutes of 2
# cores' CPU time (README); a change that trains more must earn its minutes and update the README.
MAX_FOLD_TRIALS = 10
MAX_PIXEL_STEPS = 10 * 60 * 8 * 64 * 64


def demo_spec():
    return parse_spec(yaml.safe_load((SEARCH_SPACES / "demo.yaml").read_text()))


def test_demo_is_paper_000_five_losses_as_a_grid():
    spec = demo_spec()
    assert spec.search.mode == "grid"  # fixed configurations: the trade-off does not hang on random draws
    assert [loss.name for loss in spec.losses] == ["dice", "soft_bce", "dice_soft_bce", "tversky", "focal_plus_dice"]
    tversky = next(c for c in spec.grid() if c["loss"] == "tversky")["loss_params"]
    assert tversky["beta"] > tversky["alpha"]  # the sensitive side of the trade-off against soft_bce
    assert [o.metric for o in spec.search.objectives] == ["sensitivity", "precision"]
    assert spec.data.format == "synthetic" and spec.model.encoder_weights is None  # nothing to download


def test_demo_plans_trials_that_fit_its_budget():
    spec = demo_spec()
    data, options, training = spec.data, spec.data.options, spec.training
    assert spec.planned_fold_trials() <= MAX_FOLD_TRIALS
    # patient-grouped folds: a fold trial trains on the patients outside its validation fold
    training_patients = options.cases - options.cases // data.folds
    slices = training_patients * options.days_per_case * options.slices_per_scan
    steps = training.epochs * math.ceil(slices / training.batch_size)
    if training.max_train_batches is not None:
        steps = min(steps, training.epochs * training.max_train_batches)
    pixel_steps = spec.planned_fold_trials() * steps * training.batch_size * data.image_size**2
    assert pixel_steps <= MAX_PIXEL_STEPS
    assert spec.resources.cpus_per_trial == 1 and spec.resources.gpus_per_trial == 0  # 2 trials at a time on 2 cores
