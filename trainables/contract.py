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
  ``loss_params``, ``roi_ratio``, ``heads``, searched ``training_params``), the unit the search proposes and
  the leaderboard ranks;
- :class:`TrialConfig`: the shared settings plus one configuration, its ``config_id``, the
  validation ``fold`` and the ``repeat`` (which of ``training.repeats`` seeded runs of the fold).

This module imports neither torch nor Ray: read-only commands import it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

#: what a trial writes: the prefix of the best-epoch metrics in each reported result (``best.dice``)
BEST_PREFIX = "best."
#: in each checkpoint: the training state to resume from (model, optimiser, scheduler, scaler, epoch)
STATE_FILE = "state.pt"
#: in each checkpoint: the weights of the best epoch so far
BEST_WEIGHTS_FILE = "best_model.pt"
#: in the best checkpoint: the out-of-fold case records (one row per validation image and class)
CASES_FILE = "cases.parquet"
#: in each checkpoint, written last: its files and their sizes, its epoch, its fold trial and the result reported
#: with it (:mod:`trainables.checkpoint_files`); a checkpoint is complete when every file listed has its size
MANIFEST_FILE = "manifest.json"
#: set (True) in a result a trial reports again from a checkpoint instead of training (a resumed trial whose
#: newest checkpoint on storage is newer than Tune's snapshot named); consumers log such a result at most once
REPLAYED_KEY = "replayed"

#: the organ classes of UW-Madison GI (the default classes of a spec and of a trial)
GI_CLASSES: tuple[str, ...] = ("large_bowel", "small_bowel", "stomach")

Activation = Literal["sigmoid", "softmax"]
#: multiclass: one network with a channel per class; uniclass: one binary network per class (paper 003)
Heads = Literal["multiclass", "uniclass"]

#: seeds of the repeats of one fold trial lie this far apart (``seed + fold + repeat * REPEAT_SEED_STRIDE``),
#: so no repeat of one fold shares a seed with another fold of the same sweep
REPEAT_SEED_STRIDE = 1000


def unknown_keys_message(what: str, unknown: list[str], known: list[str]) -> str:
    """Returns "unknown <what> 'lrr' (did you mean 'lr'?); known: ..." for keys a model does not declare."""
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown {what} {', '.join(parts)}; known: {', '.join(sorted(known))}"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdamWSettings(_Settings):
    """AdamW: Adam with decoupled weight decay (``training.weight_decay``), paper 000's optimiser (the default).

    Loshchilov I., Hutter F. "Decoupled weight decay regularization." ICLR 2019. arXiv:1711.05101"""

    name: Literal["adamw"] = "adamw"
    betas: tuple[float, float] = Field((0.9, 0.999), description="moment decay rates (beta1, beta2)")
    eps: float = Field(1e-8, gt=0)


class AdamSettings(_Settings):
    """Adam; ``training.weight_decay`` is added to the gradient (an L2 penalty, as torch.optim.Adam does):
    papers 001 (Adam 2e-3) and 004 (Adam, weight decay 1e-4).

    Kingma D. P., Ba J. "Adam: a method for stochastic optimization." ICLR 2015. arXiv:1412.6980"""

    name: Literal["adam"] = "adam"
    betas: tuple[float, float] = Field((0.9, 0.999), description="moment decay rates (beta1, beta2)")
    eps: float = Field(1e-8, gt=0)


class SGDSettings(_Settings):
    """Stochastic gradient descent with (optionally Nesterov) momentum: paper 003 (SGD with momentum).

    Sutskever I., Martens J., Dahl G., Hinton G. "On the importance of initialization and momentum in
    deep learning." ICML 2013 (Nesterov momentum as torch.optim.SGD implements it)."""

    name: Literal["sgd"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0)")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDSettings:
        if self.nesterov and self.momentum == 0:
            raise ValueError("sgd: nesterov needs momentum > 0, e.g. momentum: 0.9")
        return self


def _named(value: Any) -> Any:
    """Lets a spec name an optimiser or schedule by its name alone: ``adam`` means ``{name: adam}``."""
    return {"name": value} if isinstance(value, str) else value


#: ``training.optimizer``: one of the optimisers above, chosen by ``name``
OptimizerSettings = Annotated[
    AdamWSettings | AdamSettings | SGDSettings, Field(discriminator="name"), BeforeValidator(_named)
]


class _ScheduleBase(_Settings):
    step_every: Literal["epoch", "batch"] = Field(
        "epoch",
        description="epoch: the learning rate changes once per epoch; batch: after every training batch "
        "(paper 004's poly per iteration); lengths stay counted in epochs",
    )
    warmup_epochs: int = Field(
        0, ge=0, description="linear warm-up from warmup_start_factor x lr to lr over these first epochs"
    )
    warmup_start_factor: float = Field(0.1, gt=0, le=1, description="share of lr the warm-up starts from")


class CosineSchedule(_ScheduleBase):
    """Cosine annealing from ``lr`` to ``training.min_lr`` over the epochs after warm-up (paper 000, the default):
    lr_e = min_lr + (lr - min_lr) (1 + cos(pi e / E)) / 2.

    Loshchilov I., Hutter F. "SGDR: stochastic gradient descent with warm restarts." ICLR 2017. arXiv:1608.03983"""

    name: Literal["cosine"] = "cosine"


class PolySchedule(_ScheduleBase):
    """Polynomial decay to 0 over the epochs after warm-up: lr_e = lr (1 - e / E) ^ power (paper 004, power 0.9).

    Chen L.-C. et al. "DeepLab: semantic image segmentation with deep convolutional nets, atrous
    convolution, and fully connected CRFs." IEEE TPAMI 40(4), 2018. doi:10.1109/TPAMI.2017.2699184"""

    name: Literal["poly"] = "poly"
    power: float = Field(0.9, gt=0)


class StepSchedule(_ScheduleBase):
    """Step decay: lr_e = lr x factor ^ floor(e / step_epochs) (paper 003: x 0.9 every 20 epochs)."""

    name: Literal["step"] = "step"
    step_epochs: int = Field(20, ge=1, description="epochs between two decays")
    factor: float = Field(0.9, gt=0, le=1, description="the learning rate is multiplied by this at each step")


class ConstantSchedule(_ScheduleBase):
    """The learning rate stays ``lr`` (after the optional warm-up)."""

    name: Literal["constant"] = "constant"


#: ``training.schedule``: one of the schedules above, chosen by ``name``; stepped once per epoch or per batch
ScheduleSettings = Annotated[
    CosineSchedule | PolySchedule | StepSchedule | ConstantSchedule,
    Field(discriminator="name"),
    BeforeValidator(_named),
]


class TrainingSettings(BaseModel):
    """Optimisation settings shared by every trial (seed 000 defaults); the spec's ``training`` section.

    An unknown key is refused (pydantic's ``extra_forbidden``, which the spec's error report turns
    into "unknown field ... (fields here: ...)")."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(18, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-4, gt=0, description="peak learning rate (after warm-up)")
    weight_decay: float = Field(1e-2, ge=0)
    min_lr: float = Field(1e-6, ge=0, description="floor of the cosine schedule")
    optimizer: OptimizerSettings = Field(
        default_factory=AdamWSettings, description="adamw (default), adam or sgd, by name or {name: sgd, ...}"
    )
    schedule: ScheduleSettings = Field(
        default_factory=CosineSchedule, description="cosine (default), poly, step or constant; optional warm-up"
    )
    seed: int = 42
    repeats: int = Field(
        1,
        ge=1,
        description="runs of each fold with different seeds (paper 004 averaged 3); repeat r seeds with "
        "seed + fold + 1000 r",
    )
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
    checkpoint_every: int = Field(
        1,
        ge=1,
        description="epochs between a trial's checkpoints (its last epoch always writes one); an interrupted "
        "or retried trial resumes from its newest checkpoint, so it redoes up to checkpoint_every - 1 epochs",
    )
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

    def for_fold(self, configuration: Configuration, *, config_id: str, fold: int, repeat: int = 0) -> TrialConfig:
        """Returns the settings of one fold trial: these, with the configuration's searched training settings
        (``training_params``) in place of the sweep's, plus the configuration, its id, the fold and the repeat."""
        return TrialConfig.model_validate(
            {
                **self.model_dump(),
                **configuration.model_dump(),
                **configuration.training_params,
                "config_id": config_id,
                "fold": fold,
                "repeat": repeat,
            }
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
    training_params: dict[str, Any] = Field(
        default_factory=dict,
        description="the training settings this configuration searched (lr, optimizer), replacing the sweep's; "
        "empty when none is searched",
    )


class TrialConfig(TrialSettings, Configuration):
    """Everything one fold trial needs; built by the sweep driver, passed through Ray as a dict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config_id: str = Field("", description="the configuration's short stable hash (sweeper.search.config_id)")
    fold: int = Field(ge=0, description="the validation fold; the other folds train")
    repeat: int = Field(0, ge=0, description="which of the fold's training.repeats runs this is (its seed)")

    @model_validator(mode="after")
    def _repeat_in_range(self) -> TrialConfig:
        if self.repeat >= self.repeats:
            raise ValueError(f"repeat must be below repeats ({self.repeats}) but got {self.repeat}")
        return self

    @property
    def run_seed(self) -> int:
        """Returns the seed of this run: ``seed + fold`` for the first repeat, ``REPEAT_SEED_STRIDE`` further
        for each next one (weights, batch order, augmentation and the ROI-ratio subset all follow it)."""
        return self.seed + self.fold + self.repeat * REPEAT_SEED_STRIDE

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
