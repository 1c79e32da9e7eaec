"""Optimisers and learning-rate schedules: built from the spec's training section, the learning rate of
every epoch checked against hand-computed values and torch's own schedulers, resume exact."""

import math

import pytest
import torch
from pydantic import ValidationError

from trainables.contract import TrainingSettings
from trainables.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler


def settings(**over) -> TrainingSettings:
    return TrainingSettings(**{"epochs": 10, "lr": 0.01, "min_lr": 1e-4, **over})


def learning_rates(training: TrainingSettings, epochs: int | None = None, state: dict | None = None) -> list[float]:
    """The learning rate each epoch trains with (one optimiser step, then one schedule step per epoch)."""
    params = [torch.nn.Parameter(torch.ones(2))]
    optimizer = build_optimizer(params, training)
    scheduler = build_scheduler(optimizer, training)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    rates = []
    for _ in range(training.epochs if epochs is None else epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        params[0].grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
    learning_rates.last = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    return rates


def test_each_optimizer_is_torchs_own_with_the_spec_settings():
    params = [torch.nn.Parameter(torch.ones(2))]
    adamw = build_optimizer(params, settings(weight_decay=0.05))
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 0.05
    adam = build_optimizer(params, settings(optimizer={"name": "adam", "betas": [0.8, 0.99]}, weight_decay=1e-4))
    assert type(adam) is torch.optim.Adam and adam.defaults["betas"] == (0.8, 0.99)
    assert adam.defaults["weight_decay"] == 1e-4 and adam.defaults["lr"] == 0.01
    sgd = build_optimizer(params, settings(optimizer={"name": "sgd", "momentum": 0.9, "nesterov": True}))
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.9 and sgd.defaults["nesterov"]
    assert set(OPTIMIZERS) == {"adamw", "adam", "sgd"}


def test_an_optimizer_or_schedule_is_named_by_its_name_alone_and_a_wrong_one_is_refused():
    training = settings(optimizer="sgd", schedule="poly")
    assert training.optimizer.name == "sgd" and training.optimizer.momentum == 0.9
    assert training.schedule.name == "poly" and training.schedule.power == 0.9
    with pytest.raises(ValidationError, match="adamw"):
        settings(optimizer="rmsprop")
    with pytest.raises(ValidationError, match="nesterov needs momentum"):
        settings(optimizer={"name": "sgd", "momentum": 0, "nesterov": True})
    with pytest.raises(ValidationError, match="step_epochs"):
        settings(schedule={"name": "cosine", "step_epochs": 3})  # a knob of another schedule


def test_sgd_with_nesterov_momentum_steps_as_written_out():
    # v1 = g, update with nesterov: g + m v1; lr 0.1, m 0.9, g = 1: p = 1 - 0.1 (1 + 0.9) = 0.81
    params = [torch.nn.Parameter(torch.ones(1))]
    nesterov = {"name": "sgd", "momentum": 0.9, "nesterov": True}
    optimizer = build_optimizer(params, settings(lr=0.1, weight_decay=0.0, optimizer=nesterov))
    params[0].grad = torch.ones(1)
    optimizer.step()
    assert params[0].item() == pytest.approx(0.81)


def test_cosine_poly_step_and_constant_follow_their_formulas():
    lr, low, n = 0.01, 1e-4, 10
    cosine = [low + (lr - low) * (1 + math.cos(math.pi * e / n)) / 2 for e in range(n)]
    assert learning_rates(settings()) == pytest.approx(cosine)
    poly = [lr * (1 - e / n) ** 0.9 for e in range(n)]
    assert learning_rates(settings(schedule="poly")) == pytest.approx(poly)
    # paper 003: x 0.9 every 20 epochs, here every 3
    step = [lr * 0.9 ** (e // 3) for e in range(n)]
    assert learning_rates(settings(schedule={"name": "step", "step_epochs": 3, "factor": 0.9})) == pytest.approx(step)
    assert learning_rates(settings(schedule="constant")) == pytest.approx([lr] * n)


def test_a_warm_up_ramps_linearly_then_hands_over_to_the_schedule():
    lr, w, s, n = 0.01, 3, 0.1, 10
    rates = learning_rates(settings(schedule={"name": "poly", "power": 2.0, "warmup_epochs": w}))
    ramp = [lr * (s + (1 - s) * e / w) for e in range(w)]
    after = [lr * (1 - e / (n - w)) ** 2.0 for e in range(n - w)]
    assert rates == pytest.approx(ramp + after)
    rates = learning_rates(settings(schedule={"name": "cosine", "warmup_epochs": 2, "warmup_start_factor": 0.5}))
    assert rates[:3] == pytest.approx([0.005, 0.0075, 0.01])
    assert rates[-1] == pytest.approx(1e-4 + (0.01 - 1e-4) * (1 + math.cos(math.pi * 7 / 8)) / 2)


@pytest.mark.parametrize(
    ("schedule", "reference"),
    [
        ("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=1e-4)),
        ({"name": "poly", "power": 0.9}, lambda o: torch.optim.lr_scheduler.PolynomialLR(o, 10, power=0.9)),
        ({"name": "step", "step_epochs": 4, "factor": 0.5}, lambda o: torch.optim.lr_scheduler.StepLR(o, 4, 0.5)),
        ("constant", lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0)),
    ],
)
def test_each_schedule_matches_torchs_scheduler(schedule, reference):
    param = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([param], lr=0.01)
    scheduler = reference(optimizer)
    expected = []
    for _ in range(10):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert learning_rates(settings(schedule=schedule)) == pytest.approx(expected, rel=1e-12)
    assert set(SCHEDULES) == {"cosine", "poly", "step", "constant"}


@pytest.mark.parametrize(
    "schedule",
    [
        "cosine",
        {"name": "poly", "warmup_epochs": 2},
        {"name": "step", "step_epochs": 2, "factor": 0.5, "warmup_epochs": 3},
        {"name": "cosine", "warmup_epochs": 4},
    ],
)
@pytest.mark.parametrize("stop", [1, 2, 3, 5])
def test_a_schedule_resumed_from_its_state_continues_exactly(schedule, stop):
    training = settings(schedule=schedule, optimizer="sgd")
    uninterrupted = learning_rates(training)
    first = learning_rates(training, epochs=stop)
    rest = learning_rates(training, epochs=training.epochs - stop, state=learning_rates.last)
    assert first + rest == uninterrupted  # exact, not approximately


def test_a_schedule_stepped_every_batch_counts_its_lengths_in_batches():
    # paper 004: poly per iteration; 2 epochs of 3 batches, warm-up 1 epoch
    training = settings(epochs=3, schedule={"name": "poly", "power": 1.0, "step_every": "batch", "warmup_epochs": 1})
    params = [torch.nn.Parameter(torch.ones(1))]
    optimizer = build_optimizer(params, training)
    scheduler = build_scheduler(optimizer, training, batches_per_epoch=3)
    rates = []
    for _ in range(9):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    ramp = [0.01 * (0.1 + 0.9 * b / 3) for b in range(3)]
    assert rates == pytest.approx(ramp + [0.01 * (1 - b / 6) for b in range(6)])
    stepped = settings(epochs=4, schedule={"name": "step", "step_epochs": 2, "factor": 0.5, "step_every": "batch"})
    scheduler = build_scheduler(build_optimizer([torch.nn.Parameter(torch.ones(1))], stepped), stepped, 5)
    assert scheduler.step_size == 10  # 2 epochs of 5 batches
    assert build_scheduler(build_optimizer(params, settings()), settings(), batches_per_epoch=5).T_max == 10
