"""The driver's side of the trial contract: the settings every fold trial of a sweep shares, from the spec.

:func:`trial_settings` builds a :class:`trainables.contract.TrialSettings` once per sweep; the
:class:`sweeper.search.FoldSearcher` completes it per configuration and fold
(:meth:`TrialSettings.for_fold`) and hands Tune :meth:`TrialConfig.to_dict`. The training settings
are the spec's ``training`` section itself (:class:`sweeper.spec.TrainingSpec` is the contract's
:class:`~trainables.contract.TrainingSettings`), so no default is declared twice. Imports neither
torch nor Ray.
"""

from __future__ import annotations

from pathlib import Path

from sweeper.spec import SweepSpec
from trainables.contract import TrialSettings


def trial_settings(spec: SweepSpec, cache_dir: str | Path) -> TrialSettings:
    """Returns what every fold trial of ``spec`` shares: its training settings, the data cache, the model's
    output classes and activation (softmax with background first under ``label_mode: multiclass``), the
    2.5D input, the encoder weights option and the CPUs each trial gets."""
    data = spec.data
    return TrialSettings(
        **spec.training.shared_settings(),
        cache_dir=str(Path(cache_dir).resolve()),
        classes=tuple(data.channel_classes),
        activation="softmax" if data.label_mode == "multiclass" else "sigmoid",
        context=data.context,
        augmentation=data.augmentation,
        image_size=data.image_size,
        encoder_weights=spec.model.encoder_weights,
        cpus_per_trial=spec.resources.cpus_per_trial,
    )
