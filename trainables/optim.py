"""The optimiser and the learning-rate schedule of a trial, built from ``training.optimizer`` and ``training.schedule``.

Both are registries (name -> builder) over torch's own classes: ``torch.optim.AdamW`` / ``Adam`` / ``SGD``
and ``torch.optim.lr_scheduler``'s ``CosineAnnealingLR``, ``PolynomialLR``, ``StepLR``, ``ConstantLR``,
with ``LinearLR`` + ``SequentialLR`` for a warm-up. The schedule is stepped once per epoch (or, with
``step_every: batch``, after every batch, e then counting batches and every length scaled to batches), so
the learning rate of epoch e (counted from 0) is, with W warm-up epochs, s the warm-up start factor and
E = epochs - W:

- warm-up (e < W): lr (s + (1 - s) e / W);
- cosine: min_lr + (lr - min_lr) (1 + cos(pi (e - W) / E)) / 2 (papers 000 and the default);
- poly: lr (1 - (e - W) / E) ^ power (paper 004, power 0.9);
- step: lr factor ^ floor((e - W) / step_epochs) (paper 003, x 0.9 every 20 epochs);
- constant: lr.

Because they are torch's schedulers, ``scheduler.state_dict()`` in the trial's checkpoint restores the
schedule exactly on resume.

References: the settings classes of :mod:`trainables.contract` (``AdamWSettings`` ... ``StepSchedule``) cite
the papers; paper 003: Furtado P. "Testing segmentation popular loss and variations in three multiclass
medical imaging problems." J. Imaging 7(2):16, 2021. doi:10.3390/jimaging7020016; paper 004: Hosseini S. M.
"Pixel-wise modulated Dice loss for medical image segmentation." 2025. arXiv:2506.15744
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import lr_scheduler

from trainables.contract import (
    AdamSettings,
    AdamWSettings,
    ConstantSchedule,
    CosineSchedule,
    PolySchedule,
    SGDSettings,
    StepSchedule,
    TrainingSettings,
)

Params = Iterable[torch.nn.Parameter]


def _adamw(params: Params, settings: AdamWSettings, lr: float, weight_decay: float, fused: bool):
    return torch.optim.AdamW(
        params, lr=lr, weight_decay=weight_decay, betas=settings.betas, eps=settings.eps, fused=fused
    )


def _adam(params: Params, settings: AdamSettings, lr: float, weight_decay: float, fused: bool):
    return torch.optim.Adam(
        params, lr=lr, weight_decay=weight_decay, betas=settings.betas, eps=settings.eps, fused=fused
    )


def _sgd(params: Params, settings: SGDSettings, lr: float, weight_decay: float, fused: bool):
    return torch.optim.SGD(
        params,
        lr=lr,
        momentum=settings.momentum,
        nesterov=settings.nesterov,
        weight_decay=weight_decay,
        fused=fused,
    )


#: optimiser name -> builder(params, settings, lr, weight_decay, fused)
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"adamw": _adamw, "adam": _adam, "sgd": _sgd}


def build_optimizer(params: Params, training: TrainingSettings, *, fused: bool = False) -> torch.optim.Optimizer:
    """Returns the optimiser ``training.optimizer`` names over ``params``, at ``training.lr`` and
    ``training.weight_decay``. ``fused`` (CUDA only): one kernel for all parameters, reading the fp16
    scaler's inf flag on the device instead of syncing on it every step."""
    settings = training.optimizer
    return OPTIMIZERS[settings.name](params, settings, training.lr, training.weight_decay, fused)


def _cosine(optimizer, settings: CosineSchedule, steps: int, per_epoch: int, training: TrainingSettings):
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=training.min_lr)


def _poly(optimizer, settings: PolySchedule, steps: int, per_epoch: int, training: TrainingSettings):
    return lr_scheduler.PolynomialLR(optimizer, total_iters=steps, power=settings.power)


def _step(optimizer, settings: StepSchedule, steps: int, per_epoch: int, training: TrainingSettings):
    return lr_scheduler.StepLR(optimizer, step_size=settings.step_epochs * per_epoch, gamma=settings.factor)


def _constant(optimizer, settings: ConstantSchedule, steps: int, per_epoch: int, training: TrainingSettings):
    return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


#: schedule name -> builder(optimizer, settings, scheduler steps after warm-up, steps per epoch, training settings)
SCHEDULES: dict[str, Callable[..., lr_scheduler.LRScheduler]] = {
    "cosine": _cosine,
    "poly": _poly,
    "step": _step,
    "constant": _constant,
}


def build_scheduler(
    optimizer: torch.optim.Optimizer, training: TrainingSettings, batches_per_epoch: int = 1
) -> lr_scheduler.LRScheduler:
    """Returns the schedule ``training.schedule`` names over ``training.epochs``, preceded by a linear warm-up
    (``LinearLR`` then ``SequentialLR``) when ``warmup_epochs`` > 0.

    With ``step_every: batch`` the caller steps it after every training batch and every length (the
    epochs, the warm-up, a step schedule's ``step_epochs``) is counted in ``batches_per_epoch`` steps;
    with ``step_every: epoch`` once per epoch (``batches_per_epoch`` is then ignored)."""
    settings = training.schedule
    per_epoch = max(int(batches_per_epoch), 1) if settings.step_every == "batch" else 1
    warmup = min(settings.warmup_epochs, training.epochs) * per_epoch
    steps = max(training.epochs * per_epoch - warmup, 1)
    main = SCHEDULES[settings.name](optimizer, settings, steps, per_epoch, training)
    if warmup == 0:
        return main
    ramp = lr_scheduler.LinearLR(
        optimizer, start_factor=settings.warmup_start_factor, end_factor=1.0, total_iters=warmup
    )
    return lr_scheduler.SequentialLR(optimizer, schedulers=[ramp, main], milestones=[warmup])
