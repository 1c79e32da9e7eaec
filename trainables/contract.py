"""The contract between the sweep driver and one trial: the trial's settings and the names of what it writes.

The driver builds a :class:`TrialConfig` from the spec (``sweeper.trial_config``), hands Ray Tune its
:meth:`TrialConfig.to_dict` (Tune configs are dicts), and the trial, the tracker, the leaderboard,
progress and the report read it back with :meth:`TrialConfig.from_dict`. Nothing else knows a trial
setting by its string key. The model is strict: a key it does not declare is an error naming the key
and, when one is close, the declared key it resembles.

Three layers, one declaration each:

- :class:`TrainingSettings`: the spec's ``training`` section (``sweeper.spec.TrainingSpec`` is this
  class), so its defaults are declared here once;
- :class:`TrialSettings`: what every trial of a sweep shares (training settings, the data cache, the
  classes, the input shape, the model weights option, the CPUs per trial);
- :class:`Configuration`: what defines one configuration (``arch``, ``encoder``, ``loss``,
  ``loss_params``, ``roi_ratio``, ``heads``), the unit the search proposes and the leaderboard ranks;
- :class:`TrialConfig`: the shared settings plus one configuration, its ``config_id`` and the
  validation ``fold``.

This module imports neither torch nor Ray: read-only commands import it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: what a trial writes: the prefix of the best-epoch metrics in each reported result (``best.dice``)
BEST_PREFIX = "best."
#: in each checkpoint: the training state to resume from (model, optimiser, scheduler, scaler, epoch)
STATE_FILE = "state.pt"
#: in each checkpoint: the weights of the best epoch so far
BEST_WEIGHTS_FILE = "best_model.pt"
#: in the best checkpoint: the out-of-fold case records (one row per validation image and class)
CASES_FILE = "cases.parquet"

#: the organ classes of UW-Madison GI (the default classes of a spec and of a trial)
GI_CLASSES: tuple[str, ...] = ("large_bowel", "small_bowel", "stomach")

Activation = Literal["sigmoid", "softmax"]
#: multiclass: one network with a channel per class; uniclass: one binary network per class (paper 003)
Heads = Literal["multiclass", "uniclass"]


def unknown_keys_message(what: str, unknown: list[str], known: list[str]) -> str:
    """Returns "unknown <what> 'lrr' (did you mean 'lr'?); known: ..." for keys a model does not declare."""
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown {what} {', '.join(parts)}; known: {', '.join(sorted(known))}"


class TrainingSettings(BaseModel):
    """Optimisation settings shared by every trial (seed 000 defaults); the spec's ``training`` section.

    An unknown key is refused (pydantic's ``extra_forbidden``, which the spec's error report turns
    into "unknown field ... (fields here: ...)")."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(18, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    min_lr: float = Field(1e-6, ge=0, description="floor of the cosine schedule")
    seed: int = 42
    threshold: float = Field(0.5, gt=0, lt=1, description="probability threshold of the metrics")
    amp: bool = Field(True, description="mixed precision; only ever used on CUDA")
    num_workers: int | None = Field(
        None,
        ge=0,
        description="DataLoader worker processes per trial; null: from resources.cpus_per_trial "
        "(on a GPU one per CPU but one, at least one; on CPU none: the training step uses the cores)",
    )
    channels_last: bool = Field(True, description="channels-last tensors and weights; only ever used on CUDA")
    compile: bool = Field(False, description="torch.compile the model (minutes of compiling per trial first)")
    gpu_augmentation: bool = Field(
        False,
        description="flips, affine and warps batched on the training device; the DataLoader workers "
        "then do only intensity jitter (for trials short of CPU cores)",
    )
    select_metric: str = Field("dice", description="validation metric that picks the best epoch (maximised)")
    max_train_batches: int | None = Field(None, ge=1, description="cap batches per epoch (smoke tests)")
    boundary_metrics: bool = Field(
        True, description="nsd, hd95, boundary_f1, gi_score and the object metrics (CPU cost per image)"
    )
    object_min_overlap: float = Field(
        0.5,
        gt=0,
        le=1,
        description="share of an object's pixels the other mask must cover for the object "
        "to count as found (true object) or correct (predicted object)",
    )
    threshold_bins: int = Field(
        20,
        ge=20,
        le=100,
        description="bins of the case records' probability histograms: counts follow "
        "exactly at every threshold k / threshold_bins",
    )
    include_background: bool = Field(False, description="multiclass only: report the background class in metrics")
    loss_include_background: bool = Field(
        True, description="multiclass only: region losses score the background channel (False: paper 003's diceBK)"
    )
    nsd_tolerance_mm: float = Field(2.0, gt=0, description="tolerance of the normalised surface distance")


class TrialSettings(TrainingSettings):
    """What every fold trial of a sweep shares: the training settings and what the driver takes from the
    rest of the spec. The defaults of the data fields equal the spec's (a test holds them together)."""

    #: what a key of this model is called when it is refused
    key_kind: ClassVar[str] = "trial setting"

    cache_dir: str = Field(description="the prepared data cache (index.parquet, per-scan arrays)")
    classes: tuple[str, ...] = Field(GI_CLASSES, description="model output channels; softmax: background first")
    activation: Activation = Field("sigmoid", description="sigmoid: multi-label; softmax: one class per pixel")
    context: int = Field(1, ge=0, description="2.5D: neighbouring slices on each side")
    augmentation: str = "seed000"
    image_size: int = Field(224, ge=16)
    encoder_weights: str | None = None
    cpus_per_trial: float | None = Field(None, description="CPUs Ray gives the trial (sizes the DataLoader)")

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any) -> Any:
        """Names each unknown key and the declared key it resembles (a typo in a key is never dropped)."""
        if isinstance(data, Mapping):
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                raise ValueError(unknown_keys_message(cls.key_kind, unknown, list(cls.model_fields)))
        return data

    @property
    def foreground_classes(self) -> tuple[str, ...]:
        """The classes with index columns (``has_<class>``, ``area_<class>``): all but softmax's background."""
        return self.classes[1:] if self.activation == "softmax" else self.classes

    def for_fold(self, configuration: Configuration, *, config_id: str, fold: int) -> TrialConfig:
        """Returns the settings of one fold trial: these plus the configuration, its id and the fold."""
        return TrialConfig.model_validate(
            {**self.model_dump(), **configuration.model_dump(), "config_id": config_id, "fold": fold}
        )


class Configuration(BaseModel):
    """What defines one configuration: network, loss and its knob values, training-slice ROI ratio."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str = Field(description="segmentation-models-pytorch architecture, e.g. unet")
    encoder: str = Field(description="segmentation-models-pytorch encoder, e.g. resnet34")
    loss: str = Field(description="a registered loss or a weighted sum such as 0.5*focal + 0.5*dice")
    loss_params: dict[str, float] = Field(default_factory=dict, description="flat loss knobs: gamma.small_bowel")
    roi_ratio: float | None = Field(None, description="ROI-present / ROI-absent training slices; None: all")
    heads: Heads = Field("multiclass", description="one network for all classes, or one binary network per class")


class TrialConfig(TrialSettings, Configuration):
    """Everything one fold trial needs; built by the sweep driver, passed through Ray as a dict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config_id: str = Field("", description="the configuration's short stable hash (sweeper.search.config_id)")
    fold: int = Field(ge=0, description="the validation fold; the other folds train")

    @property
    def configuration(self) -> Configuration:
        """Returns the configuration this fold trial trains (without the shared settings)."""
        return Configuration.model_validate({k: getattr(self, k) for k in Configuration.model_fields})

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> TrialConfig:
        """Returns the config a Tune trial was given; raises pydantic's ValidationError (a ValueError) naming
        an unknown key and the known key it resembles, or a missing or ill-typed one."""
        return cls.model_validate(dict(config))

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as plain JSON types, the form Tune passes, stores (params.json) and shows."""
        return self.model_dump(mode="json")
